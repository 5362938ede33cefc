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

/// The `By` and first `URI` of one XFCC element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Element {
    by: Option<String>,
    uri: Option<String>,
}

/// Returns the caller identity vouched for by `gateway` (the direct peer), or
/// `None` when the header carries no valid element appended by it.
/// `local` is this proxy's own URI SAN, used to skip the element it appended.
pub fn identity_from_gateway(
    header: &str,
    gateway: &SpiffeId,
    local: Option<&str>,
) -> Option<SpiffeId> {
    let elements = parse(header)?;
    let mut from_end = elements.iter().rev();
    let mut candidate = from_end.next()?;
    let appended_locally = |e: &Element| {
        local.is_some_and(|l| e.by.as_deref() == Some(l))
            && e.uri.as_deref() == Some(gateway.as_str())
    };
    if appended_locally(candidate) {
        candidate = from_end.next()?;
    }
    if candidate.by.as_deref() != Some(gateway.as_str()) {
        return None;
    }
    SpiffeId::parse_uri(candidate.uri.as_deref()?).ok()
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
    } else if k.eq_ignore_ascii_case("URI") && element.uri.is_none() {
        element.uri = Some(v);
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
        identity_from_gateway(header, &gateway(), Some(LOCAL)).map(|id| id.to_string())
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
