//! The one reading of a request: every section of the pipeline judges the
//! same view, derived once by meshguard itself from what the host reports.
//!
//! - the request headers, read in one host call;
//! - the canonical request target (path and query) and authority, or why
//!   they are unusable ([`PathRejection`]): a value that cannot be read one
//!   way is refused by each section, never treated as absent;
//! - the downstream transport (mTLS, TLS version, the peer's identity) and,
//!   once a section needs it, the caller ([`Peer`]): an mTLS peer's identity
//!   is usable only when this proxy's own XFCC element establishes that its
//!   certificate has exactly one URI SAN.
//!
//! What is forwarded is what was judged: the canonical target and authority
//! replace the received ones before the request leaves ([`View::forward`]).
//! Separate meshguard plugins in one chain share the view through filter
//! state ([`PUBLISHED`]): a later plugin refuses a target it reads otherwise
//! than an earlier one judged it, and takes the caller the identity section
//! resolved.

use meshguard_core::identity::{resolve_peer, Peer, Transport};
use meshguard_core::path::{self, PathNormalization, PathOptions, PathRejection};
use meshguard_core::request::{canonical_authority, RequestInfo};
use meshguard_core::spiffe::SpiffeId;

use crate::host::{Attribute, Map, StreamHost};

/// The filter-state key (`wasm.meshguard_request`) under which a plugin
/// publishes the target it judged and, when it has an identity section, the
/// caller it resolved and its decision:
/// `v1 TAB target TAB caller TAB identity-decision` (`-` for no caller, `~`
/// for a field the plugin has no section for).
pub const PUBLISHED: &str = "meshguard_request";

/// The request as every section judges it.
#[derive(Debug)]
pub struct View {
    headers: Vec<(String, String)>,
    pub method: String,
    /// `:path` as received.
    pub raw_path: String,
    /// `:authority` as received.
    pub raw_authority: String,
    /// The canonical target (path and query) and authority, or why the
    /// request cannot be read one way.
    pub canonical: Result<(String, String), PathRejection>,
    /// The target and authority differ from the received ones.
    rewrite: (bool, bool),
    pub transport: Transport,
    normalization: PathNormalization,
    peer: Option<Peer>,
    /// The caller an earlier plugin's identity section resolved.
    published_peer: Option<Option<SpiffeId>>,
    /// The decision an earlier plugin's identity section published.
    published_identity: Option<String>,
}

impl View {
    /// Reads the request once: headers, target, authority, transport.
    pub fn read<H: StreamHost>(host: &H, normalization: PathNormalization) -> Self {
        let headers = host.headers(Map::RequestHeaders).unwrap_or_default();
        let first = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let method = first(":method");
        let raw_path = first(":path");
        let raw_authority = first(":authority");
        let options = PathOptions {
            normalization,
            case_insensitive: false,
        };
        let mut rewrite = (false, false);
        let canonical = path::canonicalize(&raw_path, &options).and_then(|target| {
            let authority = canonical_authority(&raw_authority)?;
            rewrite = (target.is_some(), authority.is_some());
            Ok((
                target.unwrap_or_else(|| raw_path.clone()),
                authority.unwrap_or_else(|| raw_authority.clone()),
            ))
        });
        Self {
            transport: peer_transport(host),
            headers,
            method,
            raw_path,
            raw_authority,
            canonical,
            rewrite,
            normalization,
            peer: None,
            published_peer: None,
            published_identity: None,
        }
    }

    /// The request as rules match it: canonical, or the rejection.
    pub fn info(&self) -> Result<RequestInfo<'_>, PathRejection> {
        match &self.canonical {
            Ok((path, host)) => Ok(RequestInfo {
                path,
                method: &self.method,
                host,
            }),
            Err(rejection) => Err(*rejection),
        }
    }

    /// The request as received (logs, and sections that forward a request
    /// they could not read, by configuration).
    pub fn raw_info(&self) -> RequestInfo<'_> {
        RequestInfo {
            path: &self.raw_path,
            method: &self.method,
            host: &self.raw_authority,
        }
    }

    /// The canonical path as rules match it (query and `;` parameters
    /// removed: health paths), when readable.
    pub fn match_path(&self) -> Option<std::borrow::Cow<'_, str>> {
        let (target, _) = self.canonical.as_ref().ok()?;
        Some(path::match_path(target, self.normalization))
    }

    /// A request header's value; repeats joined with `,` as HTTP defines for
    /// list-valued fields (so a second copy is never silently ignored).
    pub fn header(&self, name: &str) -> Option<String> {
        let mut found: Option<String> = None;
        for (key, value) in &self.headers {
            if key.eq_ignore_ascii_case(name) {
                match found.as_mut() {
                    Some(joined) => {
                        joined.push(',');
                        joined.push_str(value);
                    }
                    None => found = Some(value.clone()),
                }
            }
        }
        found
    }

    /// Whether the request carries `name` (any case).
    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// The headers as read.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Replaces the target after a section rewrote it (masking masks the
    /// query): later sections judge and record what will be forwarded.
    pub fn set_target(&mut self, target: String) {
        if let Ok((path, _)) = &mut self.canonical {
            *path = target;
        }
        if let Some((_, value)) = self.headers.iter_mut().find(|(n, _)| n == ":path") {
            if let Ok((path, _)) = &self.canonical {
                value.clone_from(path);
            }
        }
    }

    /// Sends the canonical target and authority upstream when they differ
    /// from what was received; false if the host refused.
    pub fn forward<H: StreamHost>(&self, host: &mut H) -> bool {
        let Ok((path, authority)) = &self.canonical else {
            return true;
        };
        (!self.rewrite.0 || host.set_header(Map::RequestHeaders, ":path", Some(path)))
            && (!self.rewrite.1
                || host.set_header(Map::RequestHeaders, ":authority", Some(authority)))
    }

    /// The caller, resolved once: with the identity section's trusted
    /// gateways when it has one, else the certificate's identity (or the one
    /// an earlier plugin's identity section resolved).
    pub fn peer<H: StreamHost>(
        &mut self,
        host: &H,
        trusted_gateway: Option<&dyn Fn(&SpiffeId) -> bool>,
    ) -> &Peer {
        if self.peer.is_none() {
            let published = match (trusted_gateway, &self.published_peer) {
                (None, Some(caller)) => Some(Peer {
                    transport: self.transport.clone(),
                    identity: caller.clone(),
                    source: meshguard_core::identity::IdentitySource::Certificate,
                    unusable: None,
                }),
                _ => None,
            };
            let peer = published.unwrap_or_else(|| {
                let header = self.header("x-forwarded-client-cert");
                let read_xfcc = || {
                    let local = host
                        .attribute(Attribute::LocalUriSan)
                        .map(|v| String::from_utf8_lossy(&v).into_owned());
                    (header, local)
                };
                match trusted_gateway {
                    Some(trusted) => resolve_peer(self.transport.clone(), read_xfcc, trusted),
                    None => resolve_peer(self.transport.clone(), read_xfcc, |_| false),
                }
            });
            self.peer = Some(peer);
        }
        self.peer
            .get_or_insert_with(|| Peer::from_certificate(Transport::Plaintext))
    }

    /// Reads what an earlier meshguard plugin of the chain published: its
    /// judged target must be this view's (else the plugins read one path
    /// two ways: `Err`), and its identity section's caller is taken.
    pub fn adopt_published<H: StreamHost>(&mut self, host: &H) -> Result<(), PathRejection> {
        let Some(published) = host.published(PUBLISHED) else {
            return Ok(());
        };
        let mut parts = published.split('\t');
        let (Some("v1"), Some(target), Some(caller), Some(identity)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PathRejection::Disagreement);
        };
        match &self.canonical {
            Ok((path, _)) if path == target => {}
            Ok(_) => return Err(PathRejection::Disagreement),
            Err(rejection) => return Err(*rejection),
        }
        if caller != "~" {
            self.published_peer = Some(SpiffeId::parse_uri(caller).ok());
        }
        if identity != "~" {
            self.published_identity = Some(identity.to_owned());
        }
        Ok(())
    }

    /// The identity decision an earlier plugin published (audit records it).
    pub fn published_identity(&self) -> Option<&str> {
        self.published_identity.as_deref()
    }

    /// Publishes this view for later meshguard plugins of the chain, in one
    /// host call: the caller and the decision when an identity section
    /// resolved and judged them (`~` otherwise).
    pub fn publish<H: StreamHost>(&self, host: &mut H, identity_decision: Option<&str>) {
        let with_caller = identity_decision.is_some();
        let Ok((target, _)) = &self.canonical else {
            return;
        };
        let caller = match (&self.peer, with_caller) {
            (Some(peer), true) => peer
                .identity
                .as_ref()
                .map_or_else(|| "-".to_owned(), |id| id.as_str().to_owned()),
            _ => "~".to_owned(),
        };
        let decision = identity_decision.unwrap_or("~");
        if !host.publish(PUBLISHED, &format!("v1\t{target}\t{caller}\t{decision}")) {
            log::debug!("meshguard: the host refused to publish the request view");
        }
    }
}

/// The filter-state key in which Istio's waypoints carry the HBONE peer's
/// URI SAN to the inner listener's HTTP filters.
pub const WAYPOINT_PEER_PRINCIPAL: &str = "io.istio.peer_principal";

/// The downstream connection's security from Envoy's attributes; on a
/// connection without any TLS, an ambient waypoint's inner listener is
/// recognised by the peer principal Istio put in filter state.
pub fn peer_transport<H: StreamHost>(host: &H) -> Transport {
    let text = |a| {
        host.attribute(a)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let mtls = match host.attribute(Attribute::ConnectionMtls).as_deref() {
        Some([0]) => Some(false),
        Some([1]) => Some(true),
        _ => None,
    };
    let version = text(Attribute::TlsVersion);
    if mtls == Some(true) {
        let san = text(Attribute::PeerUriSan);
        return Transport::from_host(mtls, version.as_deref(), san.as_deref());
    }
    if version.as_deref().is_none_or(str::is_empty) {
        if let Some(principal) = text(Attribute::WaypointPeerPrincipal) {
            return Transport::hbone(&principal);
        }
    }
    Transport::from_host(mtls, version.as_deref(), None)
}
