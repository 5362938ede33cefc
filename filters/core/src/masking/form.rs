//! `application/x-www-form-urlencoded` bodies: `name=value` pairs joined by `&`.
//!
//! Field names are matched like top-level JSON member names (`json_keys`, and
//! `json_paths` such as `/password` or `**/password`); values are decoded
//! (`+` and `%XX`) and scanned by detectors and patterns. Only changed pairs are
//! re-encoded; every other byte of the body is kept as it was.

use super::json::mask_embedded;
use super::paths::{self, State, Step};
use super::policy::{count_hit, Plan};
use super::text::{mask_bytes, mask_text};
use super::MaskError;

/// Most bracket segments of a field name considered (`a[b][c]...`); a longer
/// name is matched as one whole name.
const MAX_NAME_SEGMENTS: usize = 64;

/// Masks a form body (or a query string). `Ok(None)`: nothing changed.
/// `Err(NotUtf8)`: a name or value is not UTF-8 under `on_not_utf8: reject`.
pub(crate) fn mask_form(
    plan: &Plan<'_>,
    body: &[u8],
    hits: &mut [u32],
) -> Result<Option<Vec<u8>>, MaskError> {
    let mut states = plan.roots.clone();
    let root = (0, states.len());
    let mut lower = String::new();
    let mut spans = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut first = true;
    for pair in body.split(|&c| c == b'&') {
        let mut halves = pair.splitn(2, |&c| c == b'=');
        let raw_name = halves.next().unwrap_or_default();
        let raw_value = halves.next().unwrap_or_default();
        let decoded_name = form_decode(raw_name);
        let name = match std::str::from_utf8(&decoded_name) {
            Ok(name) => std::borrow::Cow::Borrowed(name),
            Err(_) if plan.masks_bytes() => String::from_utf8_lossy(&decoded_name),
            Err(_) => return Err(MaskError::NotUtf8),
        };
        let selected = select_name(plan, &mut states, root, &name, &mut lower);
        let new_value: Option<Option<Vec<u8>>> = match selected {
            Some(rule) => {
                count_hit(hits, rule);
                if plan.is_remove(rule) {
                    Some(None)
                } else {
                    let value = form_decode(raw_value);
                    let mut masked = String::new();
                    plan.write_masked(rule, &String::from_utf8_lossy(&value), &mut masked);
                    Some(Some(masked.into_bytes()))
                }
            }
            None => {
                let value = form_decode(raw_value);
                match std::str::from_utf8(&value) {
                    // A JSON value: masked as a document under this field.
                    Ok(text) => match mask_embedded(
                        plan,
                        text,
                        field_states(plan, &mut states, root, &name),
                        plan.max_json_depth(),
                        hits,
                    )? {
                        Some(masked) => masked.map(Some),
                        None if plan.scans() => {
                            mask_text(plan, text, &mut spans, hits).map(|m| Some(m.into_bytes()))
                        }
                        None => None,
                    },
                    Err(_) if !plan.scans() => None,
                    Err(_) if plan.masks_bytes() => {
                        mask_bytes(plan, &value, &mut spans, hits).map(Some)
                    }
                    Err(_) => return Err(MaskError::NotUtf8),
                }
            }
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
    Ok(changed.then_some(out))
}

/// The rule selecting field `name`, matched like a JSON member: `json_paths`
/// first, then `json_keys`. The whole name is tried first (a top-level
/// member); then a structured name (`user[password]`, `user.password`,
/// `a[0][card]`, `tags[]`) as the path of its segments, as PHP, Rails, Spring
/// and many form libraries read it: any segment named by `json_keys`, or a
/// path reaching it, selects the field.
pub(crate) fn select_name(
    plan: &Plan<'_>,
    states: &mut Vec<State>,
    root: (usize, usize),
    name: &str,
    lower: &mut String,
) -> Option<u16> {
    let whole = select_path(plan, states, root, &[name], lower);
    if whole.is_some() {
        return whole;
    }
    match name_segments(name) {
        Some(segments) if segments.len() > 1 => select_path(plan, states, root, &segments, lower),
        _ => None,
    }
}

fn select_path(
    plan: &Plan<'_>,
    states: &mut Vec<State>,
    root: (usize, usize),
    segments: &[&str],
    lower: &mut String,
) -> Option<u16> {
    let mut frame = root;
    let mut selected = None;
    for segment in segments {
        let by_path = if frame.0 < frame.1 {
            let start = states.len();
            let step = if segment.is_empty() {
                Step::Element(usize::MAX) // `[]`: only `*` and `**` match it
            } else {
                Step::Member(segment)
            };
            let rule = paths::step(plan.paths(), states, frame, step);
            frame = (start, states.len());
            rule
        } else {
            None
        };
        selected = by_path.or_else(|| plan.key_rule(segment, lower));
        if selected.is_some() {
            break;
        }
    }
    states.truncate(root.1);
    selected
}

/// The path states of field `name`'s value (for JSON held in it).
pub(crate) fn field_states(
    plan: &Plan<'_>,
    states: &mut Vec<State>,
    root: (usize, usize),
    name: &str,
) -> Vec<State> {
    let whole = [name];
    let segments = name_segments(name);
    let segments: &[&str] = segments.as_deref().unwrap_or(&whole);
    let mut frame = root;
    for segment in segments {
        if frame.0 >= frame.1 {
            break;
        }
        let start = states.len();
        paths::step(plan.paths(), states, frame, Step::Member(segment));
        frame = (start, states.len());
    }
    let child = states
        .get(frame.0..frame.1)
        .map(<[State]>::to_vec)
        .unwrap_or_default();
    states.truncate(root.1);
    child
}

/// `a.b[c][d]` as `["a", "b", "c", "d"]` (dots split only the part before
/// the first `[`); `None` when brackets are unbalanced or there are more than
/// `MAX_NAME_SEGMENTS` segments.
fn name_segments(name: &str) -> Option<Vec<&str>> {
    let open = name.find('[').unwrap_or(name.len());
    let mut segments: Vec<&str> = name.get(..open)?.split('.').collect();
    let mut rest = name.get(open..)?;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let (segment, after) = inner.split_once(']')?;
        segments.push(segment);
        rest = after;
    }
    (segments.len() <= MAX_NAME_SEGMENTS).then_some(segments)
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
    let mut rest = raw;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        match c {
            b'+' => out.push(b' '),
            b'%' => match (
                tail.first().copied().and_then(hex_value),
                tail.get(1).copied().and_then(hex_value),
                tail.get(2..),
            ) {
                (Some(hi), Some(lo), Some(after)) => {
                    out.push(hi << 4 | lo);
                    rest = after;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(c),
        }
    }
    out
}

/// The WHATWG form serializer: `*-._` and alphanumerics kept, space as `+`,
/// everything else `%XX`.
fn form_encode(value: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in value {
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
        form_encode("a b+c/é*".as_bytes(), &mut out);
        assert_eq!(out, b"a+b%2Bc%2F%C3%A9*");
    }

    #[test]
    fn structured_names_split_into_segments() {
        let cases: [(&str, Option<Vec<&str>>); 8] = [
            ("user[password]", Some(vec!["user", "password"])),
            ("a[0][card]", Some(vec!["a", "0", "card"])),
            ("tags[]", Some(vec!["tags", ""])),
            ("user.password", Some(vec!["user", "password"])),
            ("a.b[c.d]", Some(vec!["a", "b", "c.d"])),
            ("plain", Some(vec!["plain"])),
            ("a[b", None),
            ("a[b]c", None),
        ];
        for (name, want) in cases {
            assert_eq!(name_segments(name), want, "{name}");
        }
    }
}
