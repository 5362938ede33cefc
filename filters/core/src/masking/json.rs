//! JSON bodies: one validating pass over the bytes that masks as it goes.
//!
//! The document is not turned into a tree and serialized back: a proxy must not
//! reorder keys, drop duplicate keys, reformat numbers (a `serde_json::Value`
//! round trip turns `12345678901234567890123` into a float) or change
//! whitespace in data it does not mask. Instead the walker validates the input
//! strictly (RFC 8259, UTF-8, no lone surrogates) and records edits, which
//! are spliced into a copy of the input only once the first edit happens;
//! an unchanged body is never copied.
//!
//! Recursion is bounded by `max_json_depth` (at most 128), checked before each
//! container is entered, so a deeply nested body fails with `TooDeep` instead of
//! overflowing the stack.

use std::borrow::Cow;

use super::paths::{self, State, Step};
use super::policy::{count_hit, Plan};
use super::text::{mask_text, Span};
use super::MaskError;

/// Most levels of JSON held in JSON strings that are parsed (`{"payload":
/// "{\"ssn\": ...}"}` is one level). A string still looking like JSON past
/// this is refused as too deep rather than scanned as plain text, so that
/// nesting cannot hide keys.
pub(crate) const MAX_EMBEDDED_LEVELS: usize = 4;

/// Masks a JSON body. `Ok(None)`: nothing changed (or the body is empty).
pub(crate) fn mask_json(
    plan: &Plan<'_>,
    body: &[u8],
    max_depth: usize,
    hits: &mut [u32],
) -> Result<Option<Vec<u8>>, MaskError> {
    let src = std::str::from_utf8(body).map_err(|e| MaskError::MalformedJson {
        detail: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
    })?;
    walk(plan, src, plan.roots.clone(), max_depth, 0, hits)
}

/// JSON found where text was expected (a text body, a form field, a query
/// parameter): masked as a document whose root has the path `roots`.
/// `Ok(None)`: the text is not JSON (the caller scans it as text);
/// `Ok(Some(None))`: JSON with nothing to mask. Hits count only when it parses.
pub(crate) fn mask_embedded(
    plan: &Plan<'_>,
    text: &str,
    roots: Vec<State>,
    max_depth: usize,
    hits: &mut [u32],
) -> Result<Option<Option<Vec<u8>>>, MaskError> {
    if !looks_like_json(text) {
        return Ok(None);
    }
    let mut inner_hits = vec![0u32; hits.len()];
    match walk(plan, text, roots, max_depth, 1, &mut inner_hits) {
        Ok(masked) => {
            for (total, add) in hits.iter_mut().zip(inner_hits) {
                *total = total.saturating_add(add);
            }
            Ok(Some(masked))
        }
        Err(e @ MaskError::TooDeep { .. }) if is_json(text) => Err(e),
        Err(_) => Ok(None),
    }
}

/// Whether `text` is JSON, for a document refused as too deep: only real
/// JSON is refused, text that merely opens many brackets is scanned as
/// text. A document past serde_json's own nesting limit counts as JSON.
fn is_json(text: &str) -> bool {
    match serde_json::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => true,
        Err(e) => e.to_string().starts_with("recursion limit exceeded"),
    }
}

/// Most digits a number written with an exponent is expanded to.
const MAX_EXPANDED_DIGITS: usize = 40;

/// The integer a JSON number with a fraction or an exponent denotes, as
/// decimal digits (sign kept); `None` for a plain integer, a number that is
/// not an integer, or one over [`MAX_EXPANDED_DIGITS`] digits.
fn integer_digits(raw: &str) -> Option<String> {
    if !raw.contains(['.', 'e', 'E']) {
        return None;
    }
    let (sign, unsigned) = match raw.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", raw),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = [int, frac].concat();
    // The decimal point sits after `int.len() + exponent` digits.
    let point = i64::try_from(int.len()).ok()?.checked_add(exponent)?;
    let len = i64::try_from(digits.len()).ok()?;
    if point < 1 || point > i64::try_from(MAX_EXPANDED_DIGITS).ok()? {
        return None;
    }
    let point = usize::try_from(point).ok()?;
    let (whole, rest) = if point >= digits.len() {
        let zeros = point.checked_sub(usize::try_from(len).ok()?)?;
        (format!("{digits}{}", "0".repeat(zeros)), String::new())
    } else {
        (
            digits.get(..point)?.to_owned(),
            digits.get(point..)?.to_owned(),
        )
    };
    if rest.bytes().any(|c| c != b'0') {
        return None; // not an integer
    }
    let whole = whole.trim_start_matches('0');
    (!whole.is_empty()).then(|| format!("{sign}{whole}"))
}

/// An object or an array, as far as its first character tells.
fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with(['{', '['])
}

fn walk(
    plan: &Plan<'_>,
    src: &str,
    roots: Vec<State>,
    max_depth: usize,
    embedded: usize,
    hits: &mut [u32],
) -> Result<Option<Vec<u8>>, MaskError> {
    let mut walker = Walker {
        src,
        b: src.as_bytes(),
        pos: 0,
        max_depth,
        embedded,
        plan,
        hits,
        out: None,
        copied: 0,
        states: roots,
        lower: String::new(),
        spans: Vec::new(),
        scan: plan.scans(),
    };
    walker.document()?;
    Ok(walker.finish())
}

/// A range of `Walker::states`: the path states active at one value.
type Frame = (usize, usize);

/// A string token: its opening quote, the byte after its closing quote, and
/// whether it contains escapes.
#[derive(Debug, Clone, Copy)]
struct StrTok {
    start: usize,
    end: usize,
    escaped: bool,
}

struct Walker<'a, 'p, 'h> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    max_depth: usize,
    /// Levels of JSON-in-a-string above this document.
    embedded: usize,
    plan: &'p Plan<'p>,
    hits: &'h mut [u32],
    /// The output, created at the first edit.
    out: Option<Vec<u8>>,
    /// Input bytes before this offset are already in `out`.
    copied: usize,
    /// Path states of every open level (frames index into it).
    states: Vec<State>,
    lower: String,
    spans: Vec<Span>,
    /// Detectors or patterns run over string values.
    scan: bool,
}

impl<'a> Walker<'a, '_, '_> {
    fn document(&mut self) -> Result<(), MaskError> {
        if self.src.starts_with('\u{feff}') {
            self.pos = 3;
        }
        self.ws();
        if self.pos >= self.b.len() {
            return Ok(()); // an empty body has nothing to mask
        }
        let root = (0, self.states.len());
        self.value(0, Some(root))?;
        self.ws();
        if self.pos < self.b.len() {
            return Err(self.malformed("trailing characters after the JSON value"));
        }
        Ok(())
    }

    fn finish(self) -> Option<Vec<u8>> {
        let mut out = self.out?;
        out.extend_from_slice(self.b.get(self.copied..).unwrap_or_default());
        Some(out)
    }

    // -- edits ---------------------------------------------------------------

    /// Replaces input bytes `start..end` with `with`. Edits arrive in input order.
    fn edit(&mut self, start: usize, end: usize, with: &[u8]) {
        if start < self.copied || end < start {
            return; // edits arrive in order by construction; never splice backwards
        }
        let b = self.b;
        let out = self
            .out
            .get_or_insert_with(|| Vec::with_capacity(b.len().saturating_add(256)));
        out.extend_from_slice(b.get(self.copied..start).unwrap_or_default());
        out.extend_from_slice(with);
        self.copied = end;
    }

    /// Replaces a value selected by path or key (`start..end`) by its masked form.
    fn replace_selected(&mut self, rule: u16, start: usize, end: usize) {
        let raw = self.src.get(start..end).unwrap_or("");
        let text: Cow<'_, str> = if raw.starts_with('"') {
            string_content(raw)
        } else {
            Cow::Owned(minify(raw))
        };
        let mut masked = String::new();
        self.plan.write_masked(rule, &text, &mut masked);
        self.edit(start, end, &json_string(&masked));
    }

    /// A string value not selected as a whole: JSON held in it is masked as
    /// a document continuing at this position (paths, keys, detectors);
    /// anything else is scanned by detectors and patterns.
    fn string_value(&mut self, tok: StrTok, frame: Frame, depth: usize) -> Result<(), MaskError> {
        let raw = self.src.get(tok.start..tok.end).unwrap_or("");
        let text = if tok.escaped {
            string_content(raw)
        } else {
            Cow::Borrowed(raw.get(1..raw.len().saturating_sub(1)).unwrap_or(""))
        };
        if looks_like_json(&text) && self.embedded >= MAX_EMBEDDED_LEVELS {
            if is_json(&text) {
                return Err(MaskError::TooDeep {
                    max: self.max_depth,
                });
            }
        } else if looks_like_json(&text) {
            let roots = self
                .states
                .get(frame.0..frame.1)
                .map(<[State]>::to_vec)
                .unwrap_or_default();
            // Counted only if it parses: a string that merely starts like JSON
            // is text, and its partial hits must not be counted twice.
            let mut inner_hits = vec![0u32; self.hits.len()];
            let inner = walk(
                self.plan,
                &text,
                roots,
                self.max_depth.saturating_sub(depth),
                self.embedded.saturating_add(1),
                &mut inner_hits,
            );
            match inner {
                Ok(masked) => {
                    for (total, add) in self.hits.iter_mut().zip(inner_hits) {
                        *total = total.saturating_add(add);
                    }
                    if let Some(masked) = masked {
                        let masked = String::from_utf8_lossy(&masked).into_owned();
                        self.edit(tok.start, tok.end, &json_string(&masked));
                    }
                    return Ok(());
                }
                Err(e @ MaskError::TooDeep { .. }) if is_json(&text) => return Err(e),
                Err(_) => {} // not JSON: plain text
            }
        }
        if !self.scan {
            return Ok(());
        }
        if let Some(masked) = mask_text(self.plan, &text, &mut self.spans, self.hits) {
            self.edit(tok.start, tok.end, &json_string(&masked));
        }
        Ok(())
    }

    /// Detectors and patterns over a number literal (a card number stored as
    /// a JSON number): a number with a match becomes a string, masked.
    ///
    /// A number written with a fraction or an exponent is checked as the
    /// digits it denotes: `4.111111111111111E15` (how a Java `double`
    /// prints a card number) is `4111111111111111`.
    fn scan_number(&mut self, start: usize) {
        let raw = self.src.get(start..self.pos).unwrap_or("");
        let masked = match integer_digits(raw) {
            Some(digits) => mask_text(self.plan, &digits, &mut self.spans, self.hits),
            None => mask_text(self.plan, raw, &mut self.spans, self.hits),
        };
        if let Some(masked) = masked {
            self.edit(start, self.pos, &json_string(&masked));
        }
    }

    // -- grammar -------------------------------------------------------------

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// The input from the cursor on.
    fn rest(&self) -> &[u8] {
        self.b.get(self.pos..).unwrap_or_default()
    }

    /// Moves the cursor over `n` bytes already seen: it never passes the end
    /// of the input (at most `isize::MAX`), so the addition never saturates.
    fn advance(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n);
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.advance(1);
        }
    }

    fn malformed(&self, what: &str) -> MaskError {
        MaskError::MalformedJson {
            detail: format!("{what} at byte {}", self.pos),
        }
    }

    fn expected(&self, what: &str) -> MaskError {
        if self.pos >= self.b.len() {
            MaskError::MalformedJson {
                detail: format!("unexpected end of input, expected {what}"),
            }
        } else {
            self.malformed(&format!("expected {what}"))
        }
    }

    /// One value. `frame` is `None` when the value is only validated (it is
    /// inside a value already selected as a whole), else the path states at it.
    fn value(&mut self, depth: usize, frame: Option<Frame>) -> Result<(), MaskError> {
        match self.peek() {
            // Levels: at most `max_depth` + 1.
            Some(b'{') => self.object(depth.saturating_add(1), frame),
            Some(b'[') => self.array(depth.saturating_add(1), frame),
            Some(b'"') => {
                let tok = self.string()?;
                if let Some(frame) = frame {
                    self.string_value(tok, frame, depth)?;
                }
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.number()?;
                if frame.is_some() && self.scan {
                    self.scan_number(start);
                }
                Ok(())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => Err(self.expected("a JSON value")),
        }
    }

    fn object(&mut self, depth: usize, frame: Option<Frame>) -> Result<(), MaskError> {
        if depth > self.max_depth {
            return Err(MaskError::TooDeep {
                max: self.max_depth,
            });
        }
        self.advance(1);
        self.ws();
        if self.peek() == Some(b'}') {
            self.advance(1);
            return Ok(());
        }
        // Removal of members keeps the commas right: a member removed after a
        // kept one takes the comma before it; one removed before any kept member
        // takes the comma after it (known only once that comma is read).
        let mut kept_any = false;
        let mut pending_removal: Option<(usize, usize)> = None;
        let mut last_comma = 0;
        loop {
            let member_start = self.pos;
            if self.peek() != Some(b'"') {
                return Err(self.expected("a string (object key)"));
            }
            let key = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.expected("`:` after an object key"));
            }
            self.advance(1);
            self.ws();
            let value_start = self.pos;
            match frame {
                None => self.value(depth, None)?,
                Some(frame) => {
                    let child_start = self.states.len();
                    match self.select_member(frame, key) {
                        Some(rule) => {
                            self.states.truncate(child_start);
                            self.value(depth, None)?;
                            let end = self.pos;
                            count_hit(self.hits, rule);
                            if !self.plan.is_remove(rule) {
                                self.replace_selected(rule, value_start, end);
                                kept_any = true;
                            } else if kept_any {
                                self.edit(last_comma, end, b"");
                            } else {
                                pending_removal = Some((member_start, end));
                            }
                        }
                        None => {
                            let child = (child_start, self.states.len());
                            self.value(depth, Some(child))?;
                            self.states.truncate(child_start);
                            kept_any = true;
                        }
                    }
                }
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    if let Some((start, _)) = pending_removal.take() {
                        self.edit(start, self.pos.saturating_add(1), b"");
                    }
                    last_comma = self.pos;
                    self.advance(1);
                    self.ws();
                }
                Some(b'}') => {
                    if let Some((start, end)) = pending_removal.take() {
                        self.edit(start, end, b"");
                    }
                    self.advance(1);
                    return Ok(());
                }
                _ => return Err(self.expected("`,` or `}`")),
            }
        }
    }

    /// Pushes the states of member `key`'s value and says which rule, if any,
    /// selects that value: `json_paths` first, then `json_keys`.
    fn select_member(&mut self, frame: Frame, key: StrTok) -> Option<u16> {
        if frame.0 == frame.1 && !self.plan.keys {
            return None;
        }
        let src: &'a str = self.src;
        let raw = src.get(key.start..key.end).unwrap_or("");
        let name: Cow<'a, str> = if key.escaped {
            string_content(raw)
        } else {
            Cow::Borrowed(raw.get(1..raw.len().saturating_sub(1)).unwrap_or(""))
        };
        let by_path = if frame.0 < frame.1 {
            paths::step(
                self.plan.paths(),
                &mut self.states,
                frame,
                Step::Member(&name),
            )
        } else {
            None
        };
        by_path.or_else(|| self.plan.key_rule(&name, &mut self.lower))
    }

    fn array(&mut self, depth: usize, frame: Option<Frame>) -> Result<(), MaskError> {
        if depth > self.max_depth {
            return Err(MaskError::TooDeep {
                max: self.max_depth,
            });
        }
        self.advance(1);
        self.ws();
        if self.peek() == Some(b']') {
            self.advance(1);
            return Ok(());
        }
        let mut index = 0usize;
        loop {
            let value_start = self.pos;
            match frame {
                None => self.value(depth, None)?,
                Some(frame) => {
                    let child_start = self.states.len();
                    let selected = if frame.0 < frame.1 {
                        paths::step(
                            self.plan.paths(),
                            &mut self.states,
                            frame,
                            Step::Element(index),
                        )
                    } else {
                        None
                    };
                    match selected {
                        Some(rule) => {
                            self.states.truncate(child_start);
                            self.value(depth, None)?;
                            let end = self.pos;
                            count_hit(self.hits, rule);
                            if self.plan.is_remove(rule) {
                                // Elements are nulled, not removed, so the indices
                                // of the other elements do not shift.
                                self.edit(value_start, end, b"null");
                            } else {
                                self.replace_selected(rule, value_start, end);
                            }
                        }
                        None => {
                            let child = (child_start, self.states.len());
                            self.value(depth, Some(child))?;
                            self.states.truncate(child_start);
                        }
                    }
                }
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.advance(1);
                    self.ws();
                    index = index.saturating_add(1);
                }
                Some(b']') => {
                    self.advance(1);
                    return Ok(());
                }
                _ => return Err(self.expected("`,` or `]`")),
            }
        }
    }

    /// Validates a string token (RFC 8259: escapes, no raw control characters,
    /// surrogate pairs complete). UTF-8 was checked for the whole body.
    fn string(&mut self) -> Result<StrTok, MaskError> {
        let start = self.pos;
        self.advance(1);
        let mut escaped = false;
        loop {
            let next = self.b.get(self.pos..).and_then(|rest| {
                rest.iter()
                    .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            });
            let Some(k) = next else {
                self.pos = self.b.len();
                return Err(self.expected("`\"` to close a string"));
            };
            self.advance(k);
            match self.peek() {
                Some(b'"') => {
                    self.advance(1);
                    return Ok(StrTok {
                        start,
                        end: self.pos,
                        escaped,
                    });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.advance(1);
                    self.escape()?;
                }
                _ => return Err(self.malformed("control character in a string")),
            }
        }
    }

    /// One escape, `pos` just after the backslash.
    fn escape(&mut self) -> Result<(), MaskError> {
        match self.peek() {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.advance(1);
                Ok(())
            }
            Some(b'u') => {
                let unit = self.hex4(self.pos.saturating_add(1))?;
                self.advance(5);
                if (0xDC00..0xE000).contains(&unit) {
                    return Err(self.malformed("lone low surrogate escape"));
                }
                if (0xD800..0xDC00).contains(&unit) {
                    if !self.rest().starts_with(b"\\u") {
                        return Err(self.malformed("lone high surrogate escape"));
                    }
                    let low = self.hex4(self.pos.saturating_add(2))?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.malformed("lone high surrogate escape"));
                    }
                    self.advance(6);
                }
                Ok(())
            }
            _ => Err(self.malformed("invalid escape in a string")),
        }
    }

    fn hex4(&self, at: usize) -> Result<u32, MaskError> {
        self.b
            .get(at..)
            .and_then(|rest| rest.get(..4))
            .and_then(parse_hex4)
            .ok_or_else(|| self.malformed("invalid \\u escape"))
    }

    fn number(&mut self) -> Result<(), MaskError> {
        if self.peek() == Some(b'-') {
            self.advance(1);
        }
        match self.peek() {
            Some(b'0') => self.advance(1),
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.expected("a digit")),
        }
        if self.peek() == Some(b'.') {
            self.advance(1);
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.expected("a digit after `.`"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.advance(1);
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.advance(1);
            }
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                return Err(self.expected("a digit in an exponent"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.advance(1);
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), MaskError> {
        if self.rest().starts_with(word) {
            self.advance(word.len());
            Ok(())
        } else {
            Err(self.expected("a JSON value"))
        }
    }
}

fn parse_hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &c| {
        let v = char::from(c).to_digit(16)?;
        acc.checked_mul(16)?.checked_add(v)
    })
}

/// The decoded content of a validated string token (quotes included in `raw`).
fn string_content(raw: &str) -> Cow<'_, str> {
    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some((before, esc)) = rest.split_once('\\') {
        out.push_str(before);
        let mut chars = esc.chars();
        let consumed = match chars.next() {
            Some('"') => {
                out.push('"');
                1
            }
            Some('\\') => {
                out.push('\\');
                1
            }
            Some('/') => {
                out.push('/');
                1
            }
            Some('b') => {
                out.push('\u{8}');
                1
            }
            Some('f') => {
                out.push('\u{c}');
                1
            }
            Some('n') => {
                out.push('\n');
                1
            }
            Some('r') => {
                out.push('\r');
                1
            }
            Some('t') => {
                out.push('\t');
                1
            }
            Some('u') => {
                let unit = esc.get(1..5).and_then(|h| parse_hex4(h.as_bytes()));
                let low = esc
                    .get(5..7)
                    .filter(|s| *s == "\\u")
                    .and_then(|_| esc.get(7..11))
                    .and_then(|h| parse_hex4(h.as_bytes()));
                match (unit, low) {
                    (Some(hi @ 0xD800..=0xDBFF), Some(lo @ 0xDC00..=0xDFFF)) => {
                        out.push(surrogate_pair(hi, lo).unwrap_or('\u{fffd}'));
                        11
                    }
                    (Some(u), _) => {
                        out.push(char::from_u32(u).unwrap_or('\u{fffd}'));
                        5
                    }
                    (None, _) => {
                        out.push('\u{fffd}');
                        1
                    }
                }
            }
            _ => 0,
        };
        rest = esc.get(consumed..).unwrap_or("");
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character a UTF-16 surrogate pair encodes.
fn surrogate_pair(high: u32, low: u32) -> Option<char> {
    let units = [u16::try_from(high).ok()?, u16::try_from(low).ok()?];
    char::decode_utf16(units).next()?.ok()
}

/// A validated JSON value's text without insignificant whitespace.
fn minify(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> Vec<u8> {
    let mut json = Vec::new();
    write_json_string(&mut json, s);
    json
}

/// Writes `s` as a JSON string literal (escaping `"`, `\` and control characters).
pub(crate) fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len().saturating_add(2));
    out.push(b'"');
    for &c in s.as_bytes() {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX.get(usize::from(c >> 4)).copied().unwrap_or(b'0'));
                out.push(HEX.get(usize::from(c & 0xf)).copied().unwrap_or(b'0'));
            }
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_content_decodes_every_escape() {
        let cases = [
            (r#""plain""#, "plain"),
            (r#""a\"b\\c\/d""#, "a\"b\\c/d"),
            (r#""\b\f\n\r\t""#, "\u{8}\u{c}\n\r\t"),
            (r#""\u00e9\u20AC""#, "é€"),
            (r#""\ud83d\ude00!""#, "😀!"),
        ];
        for (raw, want) in cases {
            assert_eq!(string_content(raw), want, "{raw}");
        }
    }

    #[test]
    fn json_strings_round_trip_through_serde() {
        for s in [
            "plain",
            "quote \" back \\ nl \n tab \t",
            "\u{1}\u{1f}",
            "é😀",
        ] {
            let mut out = Vec::new();
            write_json_string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn minify_drops_whitespace_outside_strings_only() {
        assert_eq!(
            minify("{ \"a b\" : [ 1 , \"x \\\" y\" ] }"),
            "{\"a b\":[1,\"x \\\" y\"]}"
        );
    }
}
