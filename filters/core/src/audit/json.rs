//! The JSON a command hash reads: a strict parser that keeps every number
//! exactly as written, and the canonical form of a value.
//!
//! Why not `serde_json::Value`: it stores numbers as 64-bit integers or floats,
//! so `18446744073709551617` and `18446744073709551618` (or `0.1` and
//! `0.10000000000000001`) would read as the same number, and `1e400` not at
//! all, while an application with big numbers executes them differently. Here a
//! number is canonicalized from its literal text (see [`canonical_number`]).
//!
//! Strictness: one UTF-8 JSON value (RFC 8259) with surrounding whitespace, no
//! duplicate key in any object (compared after unescaping: `"a"` and `"\u0061"`
//! are the same key), no lone surrogate escape, nesting bounded like
//! serde_json's (at most 127 levels).

use std::fmt;

/// Containers deeper than this are refused (serde_json's recursion limit).
const DEPTH_LIMIT: usize = 128;
/// Larger decimal exponents are refused: no application reads them as numbers.
const MAX_EXPONENT: i64 = 1_000_000_000_000_000;

/// A parsed JSON value; object members keep their order of appearance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonValue {
    Null,
    Bool(bool),
    /// A number, already in canonical form.
    Number(String),
    String(String),
    Array(Vec<JsonValue>),
    Object(Vec<(String, JsonValue)>),
}

/// Why a body is not strict JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem} at byte {at}")]
pub struct JsonError {
    pub problem: String,
    pub at: usize,
}

impl JsonValue {
    /// The value at an RFC 6901 pointer (`""` is the whole value). Array indexes
    /// are decimal without leading zeros; `-` addresses nothing.
    pub fn pointer(&self, pointer: &str) -> Option<&JsonValue> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        let mut here = self;
        for token in rest.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            here = match here {
                Self::Object(members) => members.iter().find(|(k, _)| *k == token).map(|m| &m.1)?,
                Self::Array(items) => {
                    let valid = token == "0"
                        || (!token.starts_with('0')
                            && !token.is_empty()
                            && token.bytes().all(|b| b.is_ascii_digit()));
                    if !valid {
                        return None;
                    }
                    items.get(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(here)
    }

    /// The canonical form: object keys sorted by their UTF-8 bytes, no
    /// whitespace, strings with minimal escapes (as serde_json writes them),
    /// numbers as [`canonical_number`] wrote them.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Null => out.extend_from_slice(b"null"),
            Self::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Self::Number(n) => out.extend_from_slice(n.as_bytes()),
            Self::String(s) => write_string(s, out),
            Self::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Self::Object(members) => {
                let mut sorted: Vec<&(String, JsonValue)> = members.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                out.push(b'{');
                for (i, (key, value)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(key, out);
                    out.push(b':');
                    value.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping: `\"`, `\\`, short escapes, `\u00xx` for the
    // other control characters; serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// Parses `bytes` as one strict JSON value.
pub fn parse(bytes: &[u8]) -> Result<JsonValue, JsonError> {
    let text = std::str::from_utf8(bytes).map_err(|e| JsonError {
        problem: "the body is not UTF-8".into(),
        at: e.valid_up_to(),
    })?;
    let mut p = Parser {
        bytes: text.as_bytes(),
        text,
        at: 0,
        depth: DEPTH_LIMIT,
    };
    p.skip_ws();
    let value = p.value()?;
    p.skip_ws();
    if p.at < p.bytes.len() {
        return Err(p.error("trailing characters after the JSON value"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, problem: impl fmt::Display) -> JsonError {
        JsonError {
            problem: problem.to_string(),
            at: self.at,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// The rest of the body from the cursor.
    fn rest(&self) -> &[u8] {
        self.bytes.get(self.at..).unwrap_or_default()
    }

    /// Moves the cursor over `n` bytes already seen: it never passes the end
    /// of `bytes` (at most `isize::MAX`), so the addition never saturates.
    fn advance(&mut self, n: usize) {
        self.at = self.at.saturating_add(n);
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.advance(1);
        }
    }

    fn expect_word(&mut self, word: &str, value: JsonValue) -> Result<JsonValue, JsonError> {
        if self.rest().starts_with(word.as_bytes()) {
            self.advance(word.len());
            Ok(value)
        } else {
            Err(self.error("expected a JSON value"))
        }
    }

    fn value(&mut self) -> Result<JsonValue, JsonError> {
        match self.peek() {
            None => Err(self.error("unexpected end of the body")),
            Some(b'n') => self.expect_word("null", JsonValue::Null),
            Some(b't') => self.expect_word("true", JsonValue::Bool(true)),
            Some(b'f') => self.expect_word("false", JsonValue::Bool(false)),
            Some(b'"') => self.string().map(JsonValue::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.nested(Self::array),
            Some(b'{') => self.nested(Self::object),
            Some(_) => Err(self.error("expected a JSON value")),
        }
    }

    fn nested(
        &mut self,
        parse: fn(&mut Self) -> Result<JsonValue, JsonError>,
    ) -> Result<JsonValue, JsonError> {
        let outer = self.depth;
        self.depth = match outer.checked_sub(1) {
            Some(inner) if inner > 0 => inner,
            _ => return Err(self.error("JSON nested too deeply")),
        };
        let value = parse(self);
        self.depth = outer;
        value
    }

    fn array(&mut self) -> Result<JsonValue, JsonError> {
        self.advance(1); // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.advance(1);
            return Ok(JsonValue::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.advance(1),
                Some(b']') => {
                    self.advance(1);
                    return Ok(JsonValue::Array(items));
                }
                _ => return Err(self.error("expected `,` or `]` in an array")),
            }
        }
    }

    fn object(&mut self) -> Result<JsonValue, JsonError> {
        self.advance(1); // '{'
        let mut members: Vec<(String, JsonValue)> = Vec::new();
        let mut keys = hashbrown::HashSet::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.advance(1);
            return Ok(JsonValue::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key in an object"));
            }
            let key_at = self.at;
            let key = self.string()?;
            if !keys.insert(key.clone()) {
                return Err(JsonError {
                    problem: format!("duplicate object key {key:?}"),
                    at: key_at,
                });
            }
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.error("expected `:` after an object key"));
            }
            self.advance(1);
            self.skip_ws();
            let value = self.value()?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.advance(1),
                Some(b'}') => {
                    self.advance(1);
                    return Ok(JsonValue::Object(members));
                }
                _ => return Err(self.error("expected `,` or `}` in an object")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let digits = self
            .text
            .get(self.at..)
            .and_then(|rest| rest.get(..4))
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        let value =
            u16::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))?;
        self.advance(4);
        Ok(value)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.advance(1); // '"'
        let mut out = String::new();
        loop {
            let start = self.at;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.advance(1);
            }
            out.push_str(self.text.get(start..self.at).unwrap_or_default());
            match self.peek() {
                Some(b'"') => {
                    self.advance(1);
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.advance(1);
                    let escape = self.peek().ok_or_else(|| self.error("unfinished escape"))?;
                    self.advance(1);
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(self.error("invalid escape")),
                    };
                    out.push(c);
                }
                Some(_) => return Err(self.error("control character in a string")),
                None => return Err(self.error("unfinished string")),
            }
        }
    }

    /// After `\u`: one code point, a surrogate pair counting as one. A lone
    /// surrogate is refused (readers replace it differently, or fail).
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.rest().starts_with(b"\\u") {
                    return Err(self.error("lone surrogate in a \\u escape"));
                }
                self.advance(2);
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("lone surrogate in a \\u escape"));
                }
                char::decode_utf16([first, second])
                    .next()
                    .and_then(Result::ok)
            }
            0xDC00..=0xDFFF => return Err(self.error("lone surrogate in a \\u escape")),
            c => char::from_u32(u32::from(c)),
        };
        code.ok_or_else(|| self.error("invalid \\u escape"))
    }

    fn digits(&mut self) -> &str {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.advance(1);
        }
        self.text.get(start..self.at).unwrap_or_default()
    }

    fn number(&mut self) -> Result<JsonValue, JsonError> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.advance(1);
        }
        let int = self.digits().to_owned();
        if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
            return Err(self.error("invalid number"));
        }
        let mut frac = None;
        if self.peek() == Some(b'.') {
            self.advance(1);
            let digits = self.digits().to_owned();
            if digits.is_empty() {
                return Err(self.error("invalid number: no digit after `.`"));
            }
            frac = Some(digits);
        }
        let mut exp = None;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.advance(1);
            let exp_negative = match self.peek() {
                Some(b'-') => {
                    self.advance(1);
                    true
                }
                Some(b'+') => {
                    self.advance(1);
                    false
                }
                _ => false,
            };
            let digits = self.digits().trim_start_matches('0').to_owned();
            if self
                .bytes
                .get(self.at.wrapping_sub(1))
                .is_none_or(|b| !b.is_ascii_digit())
            {
                return Err(self.error("invalid number: no digit in the exponent"));
            }
            let value = if digits.is_empty() {
                0
            } else if digits.len() > 16 {
                i64::MAX
            } else {
                digits.parse::<i64>().unwrap_or(i64::MAX)
            };
            if value > MAX_EXPONENT {
                return Err(self.error("number exponent out of range"));
            }
            // 0 <= value <= MAX_EXPONENT: the negation is exact.
            exp = Some(if exp_negative {
                value.saturating_neg()
            } else {
                value
            });
        }
        Ok(JsonValue::Number(canonical_number(
            negative,
            &int,
            frac.as_deref(),
            exp,
        )))
    }
}

/// The canonical text of a number literal, exact (no rounding to 64 bits):
///
/// - an integer literal (no fraction, no exponent) is written as is: `-0`
///   stays `-0`, distinct from `0` (readers differ: JavaScript keeps the sign,
///   Python's `int` drops it);
/// - any other number is a decimal: its significant digits, trailing zeros
///   dropped, laid out as serde_json lays out floats (`1.0`, `12.5`, `100.0`,
///   `0.001`, `1e+16`, `1.5e-7`), so `1` and `1.0` stay different and
///   `2.50`, `25e-1` and `0.25e1` are the same number; zero is `0.0` or `-0.0`.
pub fn canonical_number(negative: bool, int: &str, frac: Option<&str>, exp: Option<i64>) -> String {
    let sign = if negative { "-" } else { "" };
    if frac.is_none() && exp.is_none() {
        return format!("{sign}{int}");
    }
    let frac = frac.unwrap_or_default();
    // value = 0.digits × 10^point, digits without leading/trailing zeros.
    let all = format!("{int}{frac}");
    let leading = all.bytes().take_while(|&b| b == b'0').count();
    let digits = all.trim_start_matches('0').trim_end_matches('0');
    if digits.is_empty() {
        return format!("{sign}0.0");
    }
    let int_len = i64::try_from(int.len()).unwrap_or(i64::MAX);
    let leading = i64::try_from(leading).unwrap_or(i64::MAX);
    // kk: the value is in [10^(kk-1), 10^kk). Exact for every number the
    // parser reads (lengths of a body, |exp| <= MAX_EXPONENT).
    let kk = int_len
        .saturating_sub(leading)
        .saturating_add(exp.unwrap_or(0));
    let length = i64::try_from(digits.len()).unwrap_or(i64::MAX);
    let mut out = String::from(sign);
    if (0..=16).contains(&kk) && length <= kk {
        // 1234e7 -> 12340000000.0
        out.push_str(digits);
        out.extend(std::iter::repeat_n(
            '0',
            usize::try_from(kk.saturating_sub(length)).unwrap_or(0),
        ));
        out.push_str(".0");
    } else if 0 < kk && kk <= 16 {
        // 1234e-2 -> 12.34
        let split = usize::try_from(kk).unwrap_or(0);
        out.push_str(digits.get(..split).unwrap_or_default());
        out.push('.');
        out.push_str(digits.get(split..).unwrap_or_default());
    } else if -5 < kk && kk <= 0 {
        // 1234e-6 -> 0.001234
        out.push_str("0.");
        out.extend(std::iter::repeat_n(
            '0',
            usize::try_from(kk.unsigned_abs()).unwrap_or(0),
        ));
        out.push_str(digits);
    } else {
        // 1e+30, 1.234e+33, 1.5e-7
        let (first, rest) = digits.split_at_checked(1).unwrap_or((digits, ""));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        if kk >= 1 {
            out.push('+');
        }
        out.push_str(&kk.saturating_sub(1).to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        String::from_utf8(parse(text.as_bytes()).unwrap().canonical()).unwrap()
    }

    #[test]
    fn numbers_that_fit_a_float_are_written_as_serde_json_writes_them() {
        for text in [
            "12.5",
            "1.0",
            "100.0",
            "0.001",
            "0.5",
            "123456.789",
            "1e16",
            "1e-7",
            "1.5e-7",
            "1.5e300",
            "-2.5",
            "1234567890123456.0",
            "0.0001",
            "3.8015374509812167e-272",
            "-8.55776243443869e181",
        ] {
            let f: f64 = text.parse().unwrap();
            let serde = serde_json::to_string(&f).unwrap();
            assert_eq!(canon(text), serde, "{text}");
        }
    }

    #[test]
    fn numbers_are_exact_and_keep_their_json_type() {
        for (text, want) in [
            ("18446744073709551617", "18446744073709551617"),
            ("18446744073709551618", "18446744073709551618"),
            ("-0", "-0"),
            ("0", "0"),
            ("-0.0", "-0.0"),
            ("0e5", "0.0"),
            ("1e400", "1e+400"),
            ("2.50", "2.5"),
            ("25e-1", "2.5"),
            ("0.25E+1", "2.5"),
            ("0.10000000000000001", "0.10000000000000001"),
            ("1e2", "100.0"),
            // A float reads this as 1e23.
            ("9.999999999999999e22", "9.999999999999999e+22"),
            ("1", "1"),
        ] {
            assert_eq!(canon(text), want, "{text}");
        }
    }

    #[test]
    fn strictness_matches_what_readers_agree_on() {
        for bad in [
            "",
            " ",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\":1,\"\\u0061\":2}",
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "\"a\nb\"",
            "1 2",
            "nul",
            "[1",
            "\"\\x\"",
            "1e99999999999999999",
            "\u{feff}1",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse(&[b'"', 0xff, b'"']).is_err());
        assert_eq!(
            canon(" {\"b\" : [true,null], \"a\":\"\\u0041\\ud83d\\ude00\"} "),
            "{\"a\":\"A😀\",\"b\":[true,null]}"
        );
    }

    #[test]
    fn nesting_is_bounded_like_serde_json() {
        for depth in [126, 127, 128, 129] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let ours = parse(text.as_bytes()).is_ok();
            let theirs = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            assert_eq!(ours, theirs, "{depth}");
        }
    }

    #[test]
    fn pointers_address_members_and_indexes() {
        let v = parse(br#"{"a/b": [10, 20], "~": {"x": null}}"#).unwrap();
        assert_eq!(v.pointer("/a~1b/1"), Some(&JsonValue::Number("20".into())));
        assert_eq!(v.pointer("/~0/x"), Some(&JsonValue::Null));
        for missing in ["/a~1b/01", "/a~1b/-", "/a~1b/2", "/nope", "/~0/x/y", "x"] {
            assert_eq!(v.pointer(missing), None, "{missing}");
        }
        assert_eq!(v.pointer(""), Some(&v));
    }
}
