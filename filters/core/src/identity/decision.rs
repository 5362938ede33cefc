//! The outcome of evaluating a request: a verdict and a stable reason code.

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// Why the verdict was reached. The codes are a stable API: they appear in deny
/// bodies, logs and metric labels, and their number is fixed (bounded cardinality).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    AllowedByRule,
    DefaultAllow,
    MtlsRequired,
    TlsVersionTooLow,
    DeniedByRule,
    NoMatchingRule,
    InvalidPath,
    AmbiguousPath,
    InvalidHost,
    PeerIdentityUnusable,
    GatewayIdentityUnusable,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::AllowedByRule,
        Reason::DefaultAllow,
        Reason::MtlsRequired,
        Reason::TlsVersionTooLow,
        Reason::DeniedByRule,
        Reason::NoMatchingRule,
        Reason::InvalidPath,
        Reason::AmbiguousPath,
        Reason::InvalidHost,
        Reason::PeerIdentityUnusable,
        Reason::GatewayIdentityUnusable,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Self::AllowedByRule => "allowed_by_rule",
            Self::DefaultAllow => "default_allow",
            Self::MtlsRequired => "mtls_required",
            Self::TlsVersionTooLow => "tls_version_too_low",
            Self::DeniedByRule => "denied_by_rule",
            Self::NoMatchingRule => "no_matching_rule",
            Self::InvalidPath => "invalid_path",
            Self::AmbiguousPath => "ambiguous_path",
            Self::InvalidHost => "invalid_host",
            Self::PeerIdentityUnusable => "peer_identity_unusable",
            Self::GatewayIdentityUnusable => "gateway_identity_unusable",
        }
    }

    pub fn verdict(self) -> Verdict {
        match self {
            Self::AllowedByRule | Self::DefaultAllow => Verdict::Allow,
            Self::MtlsRequired
            | Self::TlsVersionTooLow
            | Self::DeniedByRule
            | Self::NoMatchingRule
            | Self::InvalidPath
            | Self::AmbiguousPath
            | Self::InvalidHost
            | Self::PeerIdentityUnusable
            | Self::GatewayIdentityUnusable => Verdict::Deny,
        }
    }

    /// One sentence for logs and verbose deny bodies.
    pub fn describe(self) -> &'static str {
        match self {
            Self::AllowedByRule => "an allow rule matched",
            Self::DefaultAllow => "no rule matched and the default action is allow",
            Self::MtlsRequired => "mutual TLS is required and the connection is not mTLS",
            Self::TlsVersionTooLow => "the connection's TLS version is below the required minimum",
            Self::DeniedByRule => "a deny rule matched",
            Self::NoMatchingRule => "no allow rule matched and the default action is deny",
            Self::InvalidPath => "the request path is malformed",
            Self::AmbiguousPath => {
                "the request path is spelled so that upstream servers could resolve it differently"
            }
            Self::InvalidHost => "the request's host is malformed or ambiguous",
            Self::PeerIdentityUnusable => {
                "the proxy cannot establish that the client certificate carries exactly one valid SPIFFE ID"
            }
            Self::GatewayIdentityUnusable => {
                "the trusted gateway's x-forwarded-client-cert names no usable caller"
            }
        }
    }
}

/// Which part of the policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// `rules[i]`.
    Rule(usize),
    /// `transport.overrides[i]`.
    TransportOverride(usize),
    /// The top-level `transport` requirement.
    Transport,
    /// `default_action`.
    Default,
    /// The request path or host, before any rule (`path_normalization`).
    Path,
    /// The caller's identity could not be established (`identity.on_unusable_identity`).
    IdentitySource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    pub decided_by: DecidedBy,
}

impl Decision {
    pub fn verdict(&self) -> Verdict {
        self.reason.verdict()
    }

    pub fn is_deny(&self) -> bool {
        self.verdict() == Verdict::Deny
    }
}
