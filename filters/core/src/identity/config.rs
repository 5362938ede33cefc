//! The identity filter's plugin JSON, exactly as users write it.
//!
//! Unknown keys are refused (a typo must not silently widen a policy); every
//! field is documented in `docs/identity.md` and `docs/schema/identity.schema.json`.

use serde::Deserialize;

pub use crate::config::Mode;
use crate::path::PathNormalization;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Free-form version label of this policy (reported, never interpreted here).
    #[serde(default)]
    pub config_version: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    /// How request paths are canonicalized before rules see them.
    #[serde(default, deserialize_with = "crate::config::present")]
    pub path_normalization: Option<PathNormalization>,
    /// Paths and path patterns compare ASCII case-insensitively.
    #[serde(default)]
    pub path_case_insensitive: bool,
    /// What happens to a request no rule matches. Deny unless said otherwise.
    #[serde(default = "default_action")]
    pub default_action: Action,
    #[serde(default)]
    pub transport: TransportConfig,
    #[serde(default)]
    pub identity: IdentitySourceConfig,
    #[serde(default)]
    pub deny_response: DenyResponseConfig,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// A candidate policy evaluated on live traffic beside this one and never
    /// enforced (Envoy RBAC's shadow rules): its decisions are counted and
    /// logged where they differ. Its own `mode`, `deny_response` and `shadow`
    /// do not apply.
    #[serde(default)]
    pub shadow: Option<Box<IdentityConfig>>,
}

fn default_action() -> Action {
    Action::Deny
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum TlsVersionConfig {
    #[serde(rename = "TLSv1.0", alias = "TLSv1")]
    Tls10,
    #[serde(rename = "TLSv1.1")]
    Tls11,
    #[serde(rename = "TLSv1.2")]
    Tls12,
    #[serde(rename = "TLSv1.3")]
    Tls13,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// Refuse plaintext and TLS without a client certificate. Default: true.
    #[serde(default = "yes")]
    pub require_mtls: bool,
    #[serde(default)]
    pub min_tls_version: Option<TlsVersionConfig>,
    /// Per-route exceptions; the first whose scope matches the request applies.
    #[serde(default)]
    pub overrides: Vec<TransportOverrideConfig>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            require_mtls: true,
            min_tls_version: None,
            overrides: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportOverrideConfig {
    pub name: String,
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Replaces `transport.require_mtls` for matching requests when given.
    #[serde(default)]
    pub require_mtls: Option<bool>,
    /// Replaces `transport.min_tls_version` for matching requests when given;
    /// `null` is not a way to remove it (omit the key instead).
    #[serde(default)]
    pub min_tls_version: Option<TlsVersionConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySourceConfig {
    /// Direct mTLS peers whose appended XFCC element names the real caller.
    #[serde(default)]
    pub trusted_gateways: Vec<String>,
    /// A presented identity that cannot be used (a certificate without a
    /// single SPIFFE ID, a trusted gateway whose XFCC names no usable caller).
    #[serde(default)]
    pub on_unusable_identity: UnusableIdentityAction,
}

/// What an unusable identity leads to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnusableIdentityAction {
    /// Refused (`peer_identity_unusable`, `gateway_identity_unusable`).
    #[default]
    Deny,
    /// The caller is judged as anonymous: no principal, namespace or trust
    /// domain rule matches it, and `not_*` rules do not exclude it.
    TreatAsAnonymous,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyResponseConfig {
    #[serde(default = "forbidden")]
    pub status: u16,
    #[serde(default)]
    pub detail: DetailLevel,
}

impl Default for DenyResponseConfig {
    fn default() -> Self {
        Self {
            status: forbidden(),
            detail: DetailLevel::default(),
        }
    }
}

fn forbidden() -> u16 {
    403
}

/// How much a deny response tells the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetailLevel {
    /// Only that access was denied, and the request id.
    Minimal,
    /// Adds the stable reason code.
    #[default]
    Reason,
    /// Adds the rule name and the peer identity the filter saw.
    Verbose,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub action: Action,
    #[serde(default)]
    pub principals: Option<Vec<String>>,
    #[serde(default)]
    pub not_principals: Option<Vec<String>>,
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub not_namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub trust_domains: Option<Vec<String>>,
    #[serde(default)]
    pub not_trust_domains: Option<Vec<String>>,
    // Scope fields, as in every rule type: serde's `flatten` does not work with `deny_unknown_fields`.
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub not_paths: Option<Vec<String>>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub not_methods: Option<Vec<String>>,
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    #[serde(default)]
    pub not_hosts: Option<Vec<String>>,
}
