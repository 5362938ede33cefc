//! What the host tells us about a connection and a request, in typed form.
//!
//! The adapter reads Envoy attributes; everything it could not read is "absent",
//! and absence always means *less* trust: no identity, no TLS.

pub use crate::request::RequestInfo;
use crate::spiffe::SpiffeId;

use super::xfcc::GatewayIdentityError;

/// A negotiated TLS version as Envoy reports it (`connection.tls_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlsVersion {
    /// A version string this build does not know: it satisfies no floor.
    Unknown,
    Tls10,
    Tls11,
    Tls12,
    Tls13,
}

impl TlsVersion {
    pub fn from_host(text: &str) -> Self {
        match text {
            "TLSv1" | "TLSv1.0" => Self::Tls10,
            "TLSv1.1" => Self::Tls11,
            "TLSv1.2" => Self::Tls12,
            "TLSv1.3" => Self::Tls13,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Tls10 => "TLSv1.0",
            Self::Tls11 => "TLSv1.1",
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }
}

/// The security of the downstream connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Plaintext,
    /// TLS, but the peer presented no client certificate.
    Tls {
        version: TlsVersion,
    },
    /// TLS with a verified client certificate. `identity` is its first URI SAN
    /// when that is a valid SPIFFE ID, and `None` otherwise.
    Mtls {
        version: TlsVersion,
        identity: Option<SpiffeId>,
    },
    /// An ambient waypoint's inner listener: the caller reached the waypoint
    /// through an HBONE tunnel (HTTP/2 CONNECT over mTLS, TLS 1.3) that the
    /// waypoint's own Envoy terminated, and Istio put the tunnel peer's
    /// certificate URI SAN in filter state (`io.istio.peer_principal`). A
    /// client cannot set filter state: it is what the proxy itself verified.
    Hbone {
        identity: Option<SpiffeId>,
    },
}

impl Transport {
    /// Builds the transport from Envoy's `connection.mtls`, `connection.tls_version`
    /// and `connection.uri_san_peer_certificate` attributes.
    pub fn from_host(mtls: Option<bool>, tls_version: Option<&str>, uri_san: Option<&str>) -> Self {
        let version = tls_version.filter(|v| !v.is_empty());
        match (mtls, version) {
            (Some(true), v) => Self::Mtls {
                version: v.map_or(TlsVersion::Unknown, TlsVersion::from_host),
                identity: uri_san.and_then(|s| SpiffeId::parse_uri(s).ok()),
            },
            (_, Some(v)) => Self::Tls {
                version: TlsVersion::from_host(v),
            },
            (_, None) => Self::Plaintext,
        }
    }

    /// The waypoint transport from the tunnel peer's URI SAN(s) as Istio's
    /// `%DOWNSTREAM_PEER_URI_SAN%` writes them (several are comma-separated,
    /// which is no valid SPIFFE ID: an unusable identity).
    pub fn hbone(peer_principal: &str) -> Self {
        Self::Hbone {
            identity: SpiffeId::parse_uri(peer_principal).ok(),
        }
    }

    /// Mutual TLS with the direct peer (an HBONE tunnel is always mTLS).
    pub fn is_mtls(&self) -> bool {
        matches!(self, Self::Mtls { .. } | Self::Hbone { .. })
    }

    /// The negotiated version; HBONE tunnels run TLS 1.3.
    pub fn tls_version(&self) -> Option<TlsVersion> {
        match self {
            Self::Plaintext => None,
            Self::Tls { version } | Self::Mtls { version, .. } => Some(*version),
            Self::Hbone { .. } => Some(TlsVersion::Tls13),
        }
    }

    /// The identity proven by the peer's client certificate (on a waypoint,
    /// the HBONE tunnel's).
    pub fn certificate_identity(&self) -> Option<&SpiffeId> {
        match self {
            Self::Mtls { identity, .. } | Self::Hbone { identity } => identity.as_ref(),
            Self::Plaintext | Self::Tls { .. } => None,
        }
    }

    /// `plaintext`, `tls`, `mtls` or `hbone`, for logs and `meshguard explain`.
    pub fn security(&self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Tls { .. } => "tls",
            Self::Mtls { .. } => "mtls",
            Self::Hbone { .. } => "hbone",
        }
    }
}

/// Where the identity the policy judged came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// The direct peer's certificate.
    Certificate,
    /// The XFCC element appended by this trusted gateway (the direct peer).
    Gateway(SpiffeId),
}

/// An identity was presented but cannot be used: the policy refuses the
/// request (`identity.on_unusable_identity: deny`, the default) or, by
/// explicit choice, treats the caller as anonymous. Never silently anonymous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnusableIdentity {
    /// The client certificate has no URI SAN, one that is not a SPIFFE ID, or
    /// several URI SANs (an X509-SVID has exactly one).
    PeerCertificate,
    /// The direct peer is a trusted gateway, but its XFCC names no usable caller.
    Gateway(GatewayIdentityError),
}

/// The caller as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub transport: Transport,
    pub identity: Option<SpiffeId>,
    pub source: IdentitySource,
    /// Set when an identity was presented but is unusable (then `identity` is None).
    pub unusable: Option<UnusableIdentity>,
}

impl Peer {
    /// The identity proven by the certificate, with no gateway involved.
    pub fn from_certificate(transport: Transport) -> Self {
        let identity = transport.certificate_identity().cloned();
        let unusable = (transport.is_mtls() && identity.is_none())
            .then_some(UnusableIdentity::PeerCertificate);
        Self {
            transport,
            identity,
            source: IdentitySource::Certificate,
            unusable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_follows_the_host_attributes() {
        let id = "spiffe://cluster.local/ns/default/sa/frontend";
        let cases = [
            (None, None, None, Transport::Plaintext),
            (Some(false), None, None, Transport::Plaintext),
            (Some(false), Some(""), None, Transport::Plaintext),
            (
                Some(false),
                Some("TLSv1.3"),
                None,
                Transport::Tls {
                    version: TlsVersion::Tls13,
                },
            ),
            (
                Some(true),
                Some("TLSv1.2"),
                Some(id),
                Transport::Mtls {
                    version: TlsVersion::Tls12,
                    identity: SpiffeId::parse_uri(id).ok(),
                },
            ),
            (
                Some(true),
                None,
                Some("not a spiffe id"),
                Transport::Mtls {
                    version: TlsVersion::Unknown,
                    identity: None,
                },
            ),
        ];
        for (mtls, version, san, want) in cases {
            assert_eq!(Transport::from_host(mtls, version, san), want);
        }
    }
}
