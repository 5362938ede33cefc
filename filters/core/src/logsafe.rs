//! Request-controlled text in log lines: escaped so that it can neither split
//! a line nor make a line look like an audit record.
//!
//! Every byte a caller controls (paths, hosts, methods, header values such as
//! `x-request-id`, peer names from XFCC) goes through [`escape`] or [`quote`]
//! before it reaches a log line. The escaped form:
//!
//! - `\` is written `\\` and `"` is written `\"`, so escapes are unambiguous;
//! - control characters (C0, DEL, C1) and the Unicode line and paragraph
//!   separators, which some log readers treat as line ends, become `\n`, `\r`,
//!   `\t` or `\u{XXXX}`;
//! - the audit record marker `meshguard-audit-record:` gets its `:` escaped
//!   (`\u{3a}`), so `meshguard audit verify` never takes the line for a record.

use crate::audit::RECORD_PREFIX;

/// Longest text [`quote`] keeps, in characters; longer text is cut and marked.
pub const MAX_LOGGED_CHARS: usize = 512;

/// `text` with line breaks, control characters, quotes, backslashes and the
/// record marker escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    defuse_marker(out)
}

/// Text meshguard already formatted for a log line (a config error, a rule's
/// description, a drift message), whose quotes are its own and whose quoted
/// parts came from `{:?}`: line breaks and control characters are escaped
/// and the record marker is defused as in [`escape`], quotes and backslashes
/// are left as they are. Config text reaches a log line only through this
/// or [`escape`].
pub fn defang(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    defuse_marker(out)
}

fn defuse_marker(out: String) -> String {
    let marker = RECORD_PREFIX.trim_end_matches(' ');
    if out.contains(marker) {
        let name = marker.trim_end_matches(':');
        return out.replace(marker, &format!("{name}\\u{{3a}}"));
    }
    out
}

/// `"` + [`escape`]d text (at most [`MAX_LOGGED_CHARS`], then `…`) + `"`.
pub fn quote(text: &str) -> String {
    let mut chars = text.char_indices();
    let cut = chars.nth(MAX_LOGGED_CHARS).map(|(i, _)| i);
    match cut {
        Some(end) => format!("\"{}\"…", escape(text.get(..end).unwrap_or(text))),
        None => format!("\"{}\"", escape(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_text_keeps_its_quotes_but_never_splits_or_looks_like_a_record() {
        for (input, want) in [
            (
                r#"rules[0].principals[0]: "spiffe://x" is not valid"#,
                r#"rules[0].principals[0]: "spiffe://x" is not valid"#,
            ),
            (
                "unknown variant `\n meshguard-audit-record: {}`",
                "unknown variant `\\n meshguard-audit-record\\u{3a} {}`",
            ),
            ("a\u{2028}b\u{7}", "a\\u{2028}b\\u{7}"),
        ] {
            assert_eq!(defang(input), want, "{input:?}");
        }
    }

    #[test]
    fn hostile_text_stays_on_one_line_and_never_looks_like_a_record() {
        let forged = "x\nmeshguard-audit-record: {\"chain\":\"c\"}";
        for (input, want) in [
            ("plain-id-42", "plain-id-42"),
            ("a\r\nb", "a\\r\\nb"),
            ("tab\there", "tab\\there"),
            ("q\"uote\\", "q\\\"uote\\\\"),
            (
                "\u{0}\u{1b}[31m\u{7f}\u{85}",
                "\\u{0}\\u{1b}[31m\\u{7f}\\u{85}",
            ),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            ("café ✓", "café ✓"),
            (
                forged,
                "x\\nmeshguard-audit-record\\u{3a} {\\\"chain\\\":\\\"c\\\"}",
            ),
            (
                "meshguard-audit-record:meshguard-audit-record:",
                "meshguard-audit-record\\u{3a}meshguard-audit-record\\u{3a}",
            ),
        ] {
            let got = escape(input);
            assert_eq!(got, want, "{input:?}");
            assert!(!got.contains(RECORD_PREFIX.trim_end()));
            assert!(!got.chars().any(|c| c.is_control()));
        }
    }

    #[test]
    fn escaping_is_unambiguous() {
        // An input that already spells an escape stays distinct from the
        // character it names.
        assert_ne!(escape("\\n"), escape("\n"));
        assert_ne!(
            escape("meshguard-audit-record\\u{3a}"),
            escape("meshguard-audit-record:")
        );
    }

    #[test]
    fn quoting_bounds_the_length() {
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        let long = "é".repeat(MAX_LOGGED_CHARS + 10);
        let q = quote(&long);
        assert!(q.ends_with("\"…"));
        assert_eq!(q.chars().count(), MAX_LOGGED_CHARS + 3);
    }
}
