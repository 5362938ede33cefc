//! `application/x-www-form-urlencoded` bodies: `name=value` pairs joined by `&`.
//!
//! Field names are matched like top-level JSON member names (`json_keys`, and
//! `json_paths` such as `/password` or `**/password`); values are decoded
//! (`+` and `%XX`) and scanned by detectors and patterns. Only changed pairs are
//! re-encoded; every other byte of the body is kept as it was.

use super::paths::{self, Step};
use super::policy::{count_hit, Plan};
use super::text::mask_text;

/// Masks a form body. `None`: nothing changed.
pub(crate) fn mask_form(plan: &Plan<'_>, body: &[u8], hits: &mut [u32]) -> Option<Vec<u8>> {
    let mut states = plan.roots.clone();
    let root = (0, states.len());
    let mut lower = String::new();
    let mut spans = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut first = true;
    for pair in body.split(|&c| c == b'&') {
        let (raw_name, raw_value) = match pair.iter().position(|&c| c == b'=') {
            Some(i) => (
                pair.get(..i).unwrap_or_default(),
                pair.get(i + 1..).unwrap_or_default(),
            ),
            None => (pair, &[][..]),
        };
        let name = String::from_utf8(form_decode(raw_name)).ok();
        let selected = name.as_deref().and_then(|name| {
            let by_path = if root.1 > 0 {
                let rule = paths::step(plan.paths(), &mut states, root, Step::Member(name));
                states.truncate(root.1);
                rule
            } else {
                None
            };
            by_path.or_else(|| plan.key_rule(name, &mut lower))
        });
        let new_value: Option<Option<String>> = match selected {
            Some(rule) => {
                count_hit(hits, rule);
                if plan.is_remove(rule) {
                    Some(None)
                } else {
                    let value = form_decode(raw_value);
                    let mut masked = String::new();
                    plan.write_masked(rule, &String::from_utf8_lossy(&value), &mut masked);
                    Some(Some(masked))
                }
            }
            None if plan.scans() => {
                let value = form_decode(raw_value);
                std::str::from_utf8(&value)
                    .ok()
                    .and_then(|text| mask_text(plan, text, &mut spans, hits))
                    .map(Some)
            }
            None => None,
        };
        match new_value {
            None => {
                if !first {
                    out.push(b'&');
                }
                out.extend_from_slice(pair);
                first = false;
            }
            Some(None) => changed = true, // removed, with its separator
            Some(Some(masked)) => {
                if !first {
                    out.push(b'&');
                }
                out.extend_from_slice(raw_name);
                out.push(b'=');
                form_encode(&masked, &mut out);
                first = false;
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

/// `+` is a space, `%XX` a byte; a `%` not followed by two hex digits is kept
/// as is (as browsers do).
fn form_decode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        match c {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                raw.get(i + 1).copied().and_then(hex_value),
                raw.get(i + 2).copied().and_then(hex_value),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The WHATWG form serializer: `*-._` and alphanumerics kept, space as `+`,
/// everything else `%XX`.
fn form_encode(value: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in value.as_bytes() {
        match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(c),
            b' ' => out.push(b'+'),
            _ => {
                out.push(b'%');
                out.push(HEX.get(usize::from(c >> 4)).copied().unwrap_or(b'0'));
                out.push(HEX.get(usize::from(c & 0xf)).copied().unwrap_or(b'0'));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_decode_and_encode_as_browsers_do() {
        assert_eq!(form_decode(b"a+b%20c%2Bd%zz%4"), b"a b c+d%zz%4");
        let mut out = Vec::new();
        form_encode("a b+c/é*", &mut out);
        assert_eq!(out, b"a+b%2Bc%2F%C3%A9*");
    }
}
