//! Canonical forms of the request attributes a command hash covers.
//!
//! The goal: requests an upstream server would treat as the same command have
//! the same canonical form, and any change to what it executes changes it. Every
//! rule here is documented in `docs/audit.md` ("Canonicalization"); an upstream
//! service re-implements these functions to recompute a hash.

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// `:method` in canonical form: ASCII uppercase (other bytes unchanged).
pub fn canonical_method(method: &str) -> String {
    method.to_ascii_uppercase()
}

/// Splits a request target (`:path`) into its path and its query, dropping a
/// fragment: `/a/b?x=1#f` is `("/a/b", "x=1")`; without `?` the query is empty.
pub fn split_target(target: &str) -> (&str, &str) {
    let path_end = target.find(['?', '#']).unwrap_or(target.len());
    let path = target.get(..path_end).unwrap_or(target);
    let rest = target.get(path_end..).unwrap_or("");
    let query = match rest.strip_prefix('?') {
        Some(q) => q.get(..q.find('#').unwrap_or(q.len())).unwrap_or(q),
        None => "",
    };
    (path, query)
}

/// The canonical path of a request target (`:path`; query and fragment ignored):
///
/// 1. `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded,
///    other escapes get uppercase hex, a `%` not followed by two hex digits
///    becomes `%25`, and bytes that may not appear raw in a path (anything but
///    unreserved, `! $ & ' ( ) * + , ; = : @` and `/`) are percent-encoded;
/// 2. repeated `/` are collapsed, `.` segments removed and `..` segments remove
///    the previous segment (never above the root);
/// 3. the result starts with `/`; it ends with `/` when the input did, or when
///    its last segment was `.` or `..` (as RFC 3986 resolves them).
///
/// The asterisk-form target `*` (`OPTIONS *`) stays `*`.
pub fn canonical_path(target: &str) -> String {
    let (raw, _) = split_target(target);
    if raw == "*" {
        return "*".into();
    }
    let encoded = normalize_path_escapes(raw);
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in encoded.split('/') {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(encoded.len().saturating_add(1));
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    out
}

/// The canonical query of a request target (`:path`; only what follows the
/// first `?`, up to a `#`, is used):
///
/// pairs are split on `&` (empty pairs dropped) and each at its first `=`;
/// each key and value gets one spelling per byte, as path segments do:
/// `%XX` escapes of unreserved characters are decoded, other escapes get
/// upper-case hex, a `%` not followed by two hex digits becomes `%25`, bytes
/// that may not appear raw in a query are percent-encoded, and every other
/// byte is kept **raw**: a raw `+`, `;`, `,`, `=` or `/` stays distinct from
/// its escape (`+` is a space for form decoders and a plus for others, `;`
/// separates pairs for some frameworks), so two spellings an application could
/// read differently never share a canonical form. Pairs are sorted by key
/// bytes only, a stable sort: pairs with the same key keep their relative
/// order, since an application reading the first (or last) one executes a
/// different command when they are swapped (a key without `=` stays distinct
/// from the same key with `=`). Pairs are joined with `&`.
pub fn canonical_query(target: &str) -> String {
    let (_, query) = split_target(target);
    let mut pairs: Vec<(String, Option<String>)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (
                normalize_escapes(k, is_query_literal),
                Some(normalize_escapes(v, is_query_literal)),
            ),
            None => (normalize_escapes(pair, is_query_literal), None),
        })
        .collect();
    pairs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::with_capacity(query.len());
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        if let Some(value) = value {
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

/// RFC 3986 unreserved characters.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes kept raw in a canonical path: unreserved, sub-delims, `:`, `@`, `/`.
fn is_path_literal(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

fn hex_value(b: Option<&u8>) -> Option<u8> {
    match b? {
        b @ b'0'..=b'9' => b.checked_sub(b'0'),
        b @ b'a'..=b'f' => b.checked_sub(b'a' - 10),
        b @ b'A'..=b'F' => b.checked_sub(b'A' - 10),
        _ => None,
    }
}

fn push_escape(b: u8, out: &mut String) {
    out.push('%');
    for nibble in [b >> 4, b & 0x0f] {
        if let Some(&c) = HEX_UPPER.get(usize::from(nibble)) {
            out.push(char::from(c));
        }
    }
}

/// Bytes kept raw in a canonical query component: those of a path but `&`
/// (which separates pairs), plus `?`.
fn is_query_literal(b: u8) -> bool {
    b != b'&' && (is_path_literal(b) || b == b'?')
}

/// Step 1 of [`canonical_path`]: one spelling per byte.
fn normalize_path_escapes(raw: &str) -> String {
    normalize_escapes(raw, is_path_literal)
}

/// One spelling per byte: unreserved escapes decoded, other escapes in upper
/// case, a stray `%` as `%25`, bytes outside `literal` escaped.
fn normalize_escapes(raw: &str, literal: fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        if b == b'%' {
            if let (Some(hi), Some(lo), Some(after)) = (
                hex_value(tail.first()),
                hex_value(tail.get(1)),
                tail.get(2..),
            ) {
                let decoded = hi << 4 | lo;
                if is_unreserved(decoded) {
                    out.push(char::from(decoded));
                } else {
                    push_escape(decoded, &mut out);
                }
                rest = after;
                continue;
            }
            push_escape(b'%', &mut out);
        } else if literal(b) {
            out.push(char::from(b));
        } else {
            push_escape(b, &mut out);
        }
    }
    out
}

/// Parses exactly 64 lower-case hex digits.
pub fn parse_digest_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |b: Option<&u8>| match b? {
            b @ b'0'..=b'9' => b.checked_sub(b'0'),
            b @ b'a'..=b'f' => b.checked_sub(b'a' - 10),
            _ => None,
        };
        *slot = digit(pair.first())? << 4 | digit(pair.get(1))?;
    }
    Some(out)
}
