//! `x-forwarded-client-cert` (XFCC), read only as far as it can be trusted.
//!
//! Everything in the header is attacker-controlled except the element appended
//! by a proxy whose own identity we verified. So the caller's identity is taken
//! from exactly one element: the last one whose `By` is the direct mTLS peer
//! (a configured trusted gateway), after skipping the element our own Envoy
//! appended about that peer (Istio's sidecars use APPEND_FORWARD).

use crate::spiffe::SpiffeId;

/// Longer headers are not parsed at all: bounds per-request work.
pub const MAX_XFCC_BYTES: usize = 16 * 1024;
/// More elements than this are not parsed at all.
pub const MAX_XFCC_ELEMENTS: usize = 32;

/// Most `URI` values kept per element; more make the element unusable anyway.
const MAX_URIS_PER_ELEMENT: usize = 4;

/// The `By` and the `URI`s of one XFCC element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Element {
    by: Option<String>,
    uris: Vec<String>,
    /// More `URI` values than [`MAX_URIS_PER_ELEMENT`] were seen.
    too_many_uris: bool,
}

impl Element {
    /// The single SPIFFE ID this element names. An X509-SVID carries exactly
    /// one URI SAN: an element with several names no usable identity.
    fn identity(&self) -> Result<SpiffeId, GatewayIdentityError> {
        match self.uris.as_slice() {
            [] => Err(GatewayIdentityError::NoUri),
            [uri] if !self.too_many_uris => {
                SpiffeId::parse_uri(uri).map_err(|_| GatewayIdentityError::NotSpiffe)
            }
            _ => Err(GatewayIdentityError::SeveralUris),
        }
    }
}

/// Why a trusted gateway's XFCC named no usable caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GatewayIdentityError {
    #[error("the request carries no x-forwarded-client-cert header")]
    Missing,
    #[error("the x-forwarded-client-cert header is malformed or over the size limits")]
    Unreadable,
    #[error("no x-forwarded-client-cert element was appended by the gateway")]
    NoElement,
    #[error("the gateway's element carries no URI")]
    NoUri,
    #[error("the gateway's element carries several URIs (an X509-SVID has exactly one)")]
    SeveralUris,
    #[error("the gateway's element names a URI that is not a SPIFFE ID")]
    NotSpiffe,
}

/// Returns the caller identity vouched for by `gateway` (the direct peer).
/// `local` is this proxy's own URI SAN, used to skip the element it appended.
pub fn identity_from_gateway(
    header: Option<&str>,
    gateway: &SpiffeId,
    local: Option<&str>,
) -> Result<SpiffeId, GatewayIdentityError> {
    let header = header.ok_or(GatewayIdentityError::Missing)?;
    let elements = parse(header).ok_or(GatewayIdentityError::Unreadable)?;
    let mut from_end = elements.iter().rev();
    let mut candidate = from_end.next().ok_or(GatewayIdentityError::NoElement)?;
    if appended_locally(candidate, local, gateway.as_str()) {
        candidate = from_end.next().ok_or(GatewayIdentityError::NoElement)?;
    }
    if candidate.by.as_deref() != Some(gateway.as_str()) {
        return Err(GatewayIdentityError::NoElement);
    }
    candidate.identity()
}

/// What this proxy's own XFCC element says about the number of URI SANs in
/// the direct peer's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerUris {
    /// The element names exactly the peer's (first) URI SAN.
    One,
    /// The element names several: no usable SPIFFE identity.
    Several,
    /// The proxy wrote no element this filter can read (no header, no local
    /// URI SAN, an unreadable header, a last element that is not this proxy's
    /// about this peer): the count cannot be established.
    Unknown,
}

/// Reads the element this proxy appended about its direct peer (Istio's
/// sidecars append one with every URI SAN of the peer certificate: the host
/// reports only the first). `peer` is that first URI SAN; `local` this
/// proxy's own. An X509-SVID has exactly one URI SAN, and an identity is
/// usable only when the proxy establishes that: whatever a caller put in the
/// header, only the last element, written by this proxy about this peer,
/// counts.
pub fn peer_certificate_uris(header: Option<&str>, peer: &str, local: Option<&str>) -> PeerUris {
    let (Some(header), Some(local)) = (header, local) else {
        return PeerUris::Unknown;
    };
    let Some(elements) = parse(header) else {
        return PeerUris::Unknown;
    };
    match elements.last() {
        Some(e)
            if e.by.as_deref() == Some(local)
                && e.uris.first().map(String::as_str) == Some(peer) =>
        {
            if e.uris.len() > 1 || e.too_many_uris {
                PeerUris::Several
            } else {
                PeerUris::One
            }
        }
        _ => PeerUris::Unknown,
    }
}

/// Whether the header's last element was written by the proxy whose URI SAN
/// is `local` (`By=<local>`): `meshguard explain` appends that element itself
/// only when the header given to it does not end with one.
pub fn ends_with_element_by(header: &str, local: &str) -> bool {
    parse(header).is_some_and(|elements| {
        elements
            .last()
            .is_some_and(|e| e.by.as_deref() == Some(local))
    })
}

fn appended_locally(e: &Element, local: Option<&str>, peer: &str) -> bool {
    local.is_some_and(|l| e.by.as_deref() == Some(l))
        && e.uris.first().map(String::as_str) == Some(peer)
}

/// Splits the header into elements (`,`), pairs (`;`) and `key=value`, honouring
/// double-quoted values with backslash escapes. `None` when malformed or over
/// the bounds: a header we cannot read exactly is not trusted at all.
fn parse(header: &str) -> Option<Vec<Element>> {
    if header.len() > MAX_XFCC_BYTES {
        return None;
    }
    let mut elements = Vec::new();
    let mut current = Element::default();
    let mut key = String::new();
    let mut value = String::new();
    let mut in_value = false;
    let mut quoted = false;
    let mut chars = header.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => value.push(chars.next()?),
            '"' if in_value && value.is_empty() && !quoted => quoted = true,
            '"' if quoted => quoted = false,
            _ if quoted => value.push(c),
            '=' if !in_value => in_value = true,
            ';' | ',' => {
                finish_pair(&mut current, &mut key, &mut value, in_value)?;
                in_value = false;
                if c == ',' {
                    elements.push(std::mem::take(&mut current));
                    if elements.len() > MAX_XFCC_ELEMENTS {
                        return None;
                    }
                }
            }
            _ if in_value => value.push(c),
            _ => key.push(c),
        }
    }
    if quoted {
        return None;
    }
    finish_pair(&mut current, &mut key, &mut value, in_value)?;
    elements.push(current);
    (elements.len() <= MAX_XFCC_ELEMENTS).then_some(elements)
}

fn finish_pair(
    element: &mut Element,
    key: &mut String,
    value: &mut String,
    had_value: bool,
) -> Option<()> {
    let k = std::mem::take(key);
    let v = std::mem::take(value);
    let k = k.trim();
    if k.is_empty() && !had_value {
        return Some(()); // tolerate empty pairs such as a trailing `;`
    }
    if !had_value {
        return None;
    }
    if k.eq_ignore_ascii_case("By") {
        if element.by.is_some() {
            return None; // two `By` in one element: ambiguous, trust nothing
        }
        element.by = Some(v);
    } else if k.eq_ignore_ascii_case("URI") {
        if element.uris.len() < MAX_URIS_PER_ELEMENT {
            element.uris.push(v);
        } else {
            element.too_many_uris = true;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "spiffe://cluster.local/ns/istio-system/sa/ingress";
    const LOCAL: &str = "spiffe://cluster.local/ns/default/sa/backend";
    const CALLER: &str = "spiffe://cluster.local/ns/default/sa/frontend";

    fn gateway() -> SpiffeId {
        SpiffeId::parse_uri(GATEWAY).unwrap()
    }

    fn resolve(header: &str) -> Option<String> {
        identity_from_gateway(Some(header), &gateway(), Some(LOCAL))
            .ok()
            .map(|id| id.to_string())
    }

    fn why(header: Option<&str>) -> Option<GatewayIdentityError> {
        identity_from_gateway(header, &gateway(), Some(LOCAL)).err()
    }

    #[test]
    fn every_unusable_gateway_header_says_why() {
        let local = format!("By={LOCAL};URI={GATEWAY}");
        let cases = [
            (None, GatewayIdentityError::Missing),
            (Some(String::new()), GatewayIdentityError::NoElement),
            (
                Some(format!("By=\"{GATEWAY}")),
                GatewayIdentityError::Unreadable,
            ),
            (Some(local.clone()), GatewayIdentityError::NoElement),
            (
                Some(format!("By={GATEWAY};Hash=x,{local}")),
                GatewayIdentityError::NoUri,
            ),
            (
                Some(format!(
                    "By={GATEWAY};URI={CALLER};URI=spiffe://cluster.local/ns/a/sa/b"
                )),
                GatewayIdentityError::SeveralUris,
            ),
            (
                Some(format!("By={GATEWAY};URI=https://x")),
                GatewayIdentityError::NotSpiffe,
            ),
            (
                Some(format!("By=spiffe://evil/x;URI={CALLER}")),
                GatewayIdentityError::NoElement,
            ),
        ];
        for (header, want) in cases {
            assert_eq!(why(header.as_deref()), Some(want), "{header:?}");
        }
    }

    #[test]
    fn only_our_own_last_element_establishes_how_many_uris_the_peer_certificate_has() {
        use PeerUris::*;
        let two = format!("By={LOCAL};URI={CALLER};URI=spiffe://cluster.local/ns/a/sa/b");
        let one = format!("By={LOCAL};URI={CALLER}");
        let forged_other_peer = format!("By={LOCAL};URI=spiffe://x/y;URI=spiffe://x/z");
        let junk = "x,".repeat(MAX_XFCC_ELEMENTS) + &one;
        let cases = [
            (Some(two.clone()), Some(LOCAL), Several),
            (Some(one.clone()), Some(LOCAL), One),
            (
                Some(format!("By=spiffe://a/b;URI=spiffe://x/y,{one}")),
                Some(LOCAL),
                One,
            ),
            // A caller's own elements before ours change nothing; after ours
            // they cannot be (the proxy appends last), so ours is not last.
            (Some(forged_other_peer), Some(LOCAL), Unknown),
            (Some(two.clone()), None, Unknown),
            (None, Some(LOCAL), Unknown),
            (Some(format!("{two},{one}")), Some(LOCAL), One),
            (Some(format!("{one},{two}")), Some(LOCAL), Several),
            (Some(format!("{one},By=x;URI=y")), Some(LOCAL), Unknown),
            // What a caller can force: the header cannot be read at all.
            (
                Some(format!("By=\"unterminated;{one}")),
                Some(LOCAL),
                Unknown,
            ),
            (Some(format!("By=a;By=b;URI=c,{one}")), Some(LOCAL), Unknown),
            (Some(junk), Some(LOCAL), Unknown),
            (
                Some("a".repeat(MAX_XFCC_BYTES) + "," + &one),
                Some(LOCAL),
                Unknown,
            ),
            // Envoy's own element for a local certificate with two URI SANs.
            (
                Some(format!(
                    "By={LOCAL};By=spiffe://cluster.local/ns/default/sa/other;URI={CALLER}"
                )),
                Some(LOCAL),
                Unknown,
            ),
        ];
        for (header, local, want) in cases {
            assert_eq!(
                peer_certificate_uris(header.as_deref(), CALLER, local),
                want,
                "{header:?}"
            );
        }
    }

    #[test]
    fn the_gateways_element_names_the_caller() {
        let gw = format!("By={GATEWAY};Hash=abc;URI={CALLER}");
        let local = format!("By={LOCAL};Hash=def;URI={GATEWAY}");
        let cases = [
            // Only the gateway's element.
            (gw.clone(), Some(CALLER)),
            // Our own Envoy appended an element about the gateway after it.
            (format!("{gw},{local}"), Some(CALLER)),
            // Quoted values, subject with separators.
            (
                format!("By=\"{GATEWAY}\";Subject=\"CN=a,O=b;c\";URI=\"{CALLER}\""),
                Some(CALLER),
            ),
        ];
        for (header, want) in cases {
            assert_eq!(resolve(&header).as_deref(), want, "{header}");
        }
    }

    #[test]
    fn elements_not_appended_by_the_gateway_are_ignored() {
        let forged = format!("By={GATEWAY};URI=spiffe://cluster.local/ns/default/sa/admin");
        let other = format!("By=spiffe://evil/x;URI={CALLER}");
        let cases = [
            // A client-forged element before a genuine one without URI.
            format!("{forged},By={GATEWAY};Hash=x"),
            // The last element was not appended by the gateway.
            format!("{forged},{other}"),
            other.clone(),
            // No By at all.
            format!("URI={CALLER}"),
            // Two By in one element.
            format!("By={GATEWAY};By={GATEWAY};URI={CALLER}"),
            // Malformed: unterminated quote, key without value.
            format!("By=\"{GATEWAY};URI={CALLER}"),
            format!("By;URI={CALLER}"),
            // A URI that is not a SPIFFE ID.
            format!("By={GATEWAY};URI=https://example.com"),
            String::new(),
        ];
        for header in cases {
            assert_eq!(resolve(&header), None, "{header}");
        }
    }

    #[test]
    fn oversized_headers_are_not_trusted() {
        let element = format!("By={GATEWAY};URI={CALLER}");
        let at_limit = vec![element.as_str(); MAX_XFCC_ELEMENTS].join(",");
        assert_eq!(resolve(&at_limit).as_deref(), Some(CALLER));
        let over = vec![element.as_str(); MAX_XFCC_ELEMENTS + 1].join(",");
        assert_eq!(resolve(&over), None);
        let long = format!("{element};Subject={}", "x".repeat(MAX_XFCC_BYTES));
        assert_eq!(resolve(&long), None);
    }
}
