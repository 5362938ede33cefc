//! Built-in detectors: hand-written scanners, each linear in the text length
//! (no regex, no backtracking). Every match starts and ends on an ASCII
//! character, so match offsets are always `char` boundaries.
//!
//! The exact definitions are in `docs/masking.md`; the tests at the end of this
//! file are the executable version.

use serde::Deserialize;

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Payment card numbers: 13-19 digits, Luhn-valid.
    Card,
    Email,
    /// US social security numbers written `ddd-dd-dddd`.
    UsSsn,
    /// IBANs with a valid mod-97 checksum.
    Iban,
    /// JSON Web Tokens (three base64url segments, the first two `eyJ...`).
    Jwt,
    /// The token after `Bearer ` (the word itself is kept).
    BearerToken,
    /// AWS access key IDs (`AKIA...` and the other documented prefixes).
    AwsAccessKey,
    /// Whole PEM private key blocks.
    PrivateKey,
}

impl Detector {
    pub const ALL: [Detector; 8] = [
        Self::Card,
        Self::Email,
        Self::UsSsn,
        Self::Iban,
        Self::Jwt,
        Self::BearerToken,
        Self::AwsAccessKey,
        Self::PrivateKey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Email => "email",
            Self::UsSsn => "us_ssn",
            Self::Iban => "iban",
            Self::Jwt => "jwt",
            Self::BearerToken => "bearer_token",
            Self::AwsAccessKey => "aws_access_key",
            Self::PrivateKey => "private_key",
        }
    }

    pub(crate) fn bit(self) -> u8 {
        match self {
            Self::Card => 1,
            Self::Email => 1 << 1,
            Self::UsSsn => 1 << 2,
            Self::Iban => 1 << 3,
            Self::Jwt => 1 << 4,
            Self::BearerToken => 1 << 5,
            Self::AwsAccessKey => 1 << 6,
            Self::PrivateKey => 1 << 7,
        }
    }

    /// The byte ranges this detector matches in `text`, in order.
    pub fn find_all(self, text: &str) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        self.scan(text, &mut |start, end| found.push((start, end)));
        found
    }

    /// Calls `emit(start, end)` for every match, in order of `start`.
    pub(crate) fn scan<F: FnMut(usize, usize)>(self, text: &str, emit: &mut F) {
        match self {
            Self::Card => scan_cards(text, emit),
            Self::Email => scan_emails(text, emit),
            Self::UsSsn => scan_ssns(text, emit),
            Self::Iban => scan_ibans(text, emit),
            Self::Jwt => scan_jwts(text, emit),
            Self::BearerToken => scan_bearer_tokens(text, emit),
            Self::AwsAccessKey => scan_aws_keys(text, emit),
            Self::PrivateKey => scan_private_keys(text, emit),
        }
    }
}

/// Cheap facts about a text, gathered in one pass, that rule detectors out
/// before they scan: most JSON string values cannot hold most kinds of secret.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TextStats {
    len: usize,
    digits: usize,
    at: bool,
    dash: bool,
    dot: bool,
    upper_a: bool,
    b: bool,
    /// Non-ASCII bytes or a tab: the text may hold Unicode variants to fold.
    pub(crate) foldable: bool,
}

impl TextStats {
    pub(crate) fn of(text: &str) -> Self {
        let mut s = Self {
            len: text.len(),
            ..Self::default()
        };
        for &c in text.as_bytes() {
            match c {
                b'0'..=b'9' => s.digits = s.digits.saturating_add(1),
                b'@' => s.at = true,
                b'-' => s.dash = true,
                b'.' => s.dot = true,
                b'A' => s.upper_a = true,
                b'b' | b'B' => s.b = true,
                b'\t' | 0x80.. => s.foldable = true,
                _ => {}
            }
        }
        s
    }
}

impl Detector {
    /// False when `scan` certainly finds nothing in a text with these stats.
    pub(crate) fn may_match(self, s: &TextStats) -> bool {
        match self {
            Self::Card => s.digits >= CARD_MIN_DIGITS,
            Self::Email => s.at && s.len >= 6,
            Self::UsSsn => s.digits >= 9 && s.dash,
            Self::Iban => s.len >= IBAN_MIN && s.digits >= 2,
            Self::Jwt => s.dot && s.len >= 8,
            Self::BearerToken => s.b && s.len >= 7 + BEARER_MIN_TOKEN,
            Self::AwsAccessKey => s.upper_a && s.len >= 20,
            // The shortest block: BEGIN (27 bytes) and END (25) markers, no body.
            Self::PrivateKey => s.dash && s.len >= 52,
        }
    }
}

// ---------------------------------------------------------------------------
// Shared helpers.
//
// Positions are byte offsets into the scanned text, so at most its length
// (itself at most `isize::MAX`): they move forward with `saturating_add`, which
// never saturates here, and a position past the end only makes `get` answer
// `None`.

fn prev_char(text: &str, i: usize) -> Option<char> {
    text.get(..i).and_then(|head| head.chars().next_back())
}

fn next_char(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|tail| tail.chars().next())
}

/// No letter or digit (any script) touches position `i` from the left.
fn alnum_boundary_before(text: &str, i: usize) -> bool {
    !prev_char(text, i).is_some_and(char::is_alphanumeric)
}

/// No letter or digit (any script) touches position `i` from the right.
fn alnum_boundary_after(text: &str, i: usize) -> bool {
    !next_char(text, i).is_some_and(char::is_alphanumeric)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn count_while(b: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> usize {
    b.get(from..)
        .map_or(0, |tail| tail.iter().take_while(|&&c| pred(c)).count())
}

/// Like [`count_while`], but stops counting after `max` (so that a check at
/// every position of a long run stays constant-time).
fn count_up_to(b: &[u8], from: usize, max: usize, pred: impl Fn(u8) -> bool) -> usize {
    b.get(from..).map_or(0, |tail| {
        tail.iter().take(max).take_while(|&&c| pred(c)).count()
    })
}

/// The end of the run of bytes satisfying `pred` that starts at `from`.
fn run_end(b: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> usize {
    from.saturating_add(count_while(b, from, pred))
}

/// The `len` bytes at `from`, if the text has them.
fn bytes_at(b: &[u8], from: usize, len: usize) -> Option<&[u8]> {
    b.get(from..).and_then(|tail| tail.get(..len))
}

/// Position of the next byte satisfying `pred` at or after `from`.
fn next_pos(b: &[u8], from: usize, pred: impl Fn(u8) -> bool) -> Option<usize> {
    b.get(from..)
        .and_then(|tail| tail.iter().position(|&c| pred(c)))
        .and_then(|k| from.checked_add(k))
}

/// The length of a span `(start, end)`, `start <= end`.
fn span_len((start, end): (usize, usize)) -> usize {
    end.saturating_sub(start)
}

// ---------------------------------------------------------------------------
// Payment cards.

const CARD_MIN_DIGITS: usize = 13;
const CARD_MAX_DIGITS: usize = 19;
/// In a card written with separators, every group has at least this many digits.
const CARD_MIN_GROUP: usize = 3;

/// A run is a maximal sequence of digit groups joined by single spaces or
/// dashes. A card is one or more whole consecutive groups of the run, 13-19
/// digits, Luhn-valid, not touching a letter or digit on either side.
fn scan_cards<F: FnMut(usize, usize)>(text: &str, emit: &mut F) {
    let b = text.as_bytes();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while let Some(start) = next_pos(b, i, |c| c.is_ascii_digit()) {
        i = start;
        groups.clear();
        loop {
            let group_start = i;
            i = run_end(b, i, |c| c.is_ascii_digit());
            groups.push((group_start, i));
            match b.get(i..) {
                Some([b' ' | b'-', d, ..]) if d.is_ascii_digit() => i = i.saturating_add(1),
                _ => break,
            }
        }
        let left_ok = alnum_boundary_before(text, start);
        let right_ok = alnum_boundary_after(text, i);
        card_windows(b, &groups, left_ok, right_ok, emit);
    }
}

/// Tries windows of whole groups: the leftmost start, then the longest window
/// from it. O(groups × 19).
fn card_windows<F: FnMut(usize, usize)>(
    b: &[u8],
    groups: &[(usize, usize)],
    left_ok: bool,
    right_ok: bool,
    emit: &mut F,
) {
    let count = groups.len();
    let last = count.saturating_sub(1);
    // Indexes into `groups`: at most `count`.
    let mut s = 0;
    while s < count {
        if s == 0 && !left_ok {
            s = s.saturating_add(1);
            continue;
        }
        let mut digits = 0usize;
        let mut best = None;
        for (e, &group) in groups.iter().enumerate().skip(s) {
            let len = span_len(group);
            digits = digits.saturating_add(len);
            if digits > CARD_MAX_DIGITS {
                break;
            }
            if e > s
                && (len < CARD_MIN_GROUP
                    || groups.get(s).is_some_and(|&g| span_len(g) < CARD_MIN_GROUP))
            {
                // A separated card is made of real groups, not of single digits.
                break;
            }
            let at_run_end = e == last;
            if digits >= CARD_MIN_DIGITS && (!at_run_end || right_ok) {
                if let (Some(first), Some(last)) = (groups.get(s), groups.get(e)) {
                    if luhn(b, first.0, last.1) {
                        best = Some((first.0, last.1, e));
                    }
                }
            }
        }
        match best {
            Some((start, end, e)) => {
                emit(start, end);
                s = e.saturating_add(1);
            }
            None => s = s.saturating_add(1),
        }
    }
}

/// A doubled digit in the Luhn checksum: `2d`, less 9 when over 9.
const LUHN_DOUBLED: [u32; 10] = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9];

/// Luhn checksum over the digits of `b[start..end]` (separators skipped).
fn luhn(b: &[u8], start: usize, end: usize) -> bool {
    let Some(span) = b.get(start..end) else {
        return false;
    };
    let digits = span.iter().filter_map(|&c| char::from(c).to_digit(10));
    let mut sum = 0u32;
    for (k, d) in digits.rev().enumerate() {
        let v = if k % 2 == 1 {
            usize::try_from(d)
                .ok()
                .and_then(|d| LUHN_DOUBLED.get(d))
                .copied()
                .unwrap_or(d)
        } else {
            d
        };
        // At most 19 digits (CARD_MAX_DIGITS) of at most 9: no saturation.
        sum = sum.saturating_add(v);
    }
    sum % 10 == 0
}

// ---------------------------------------------------------------------------
// Email addresses.

const EMAIL_MAX_LOCAL: usize = 64;
/// Enough of a local part to tell it is too long.
const EMAIL_MAX_LOCAL_RUN: usize = EMAIL_MAX_LOCAL + 1;
const EMAIL_MAX_DOMAIN: usize = 253;

fn is_email_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// `local@domain`: local part of 1-64 `[A-Za-z0-9._%+-]` (not starting or
/// ending with a dot, no `..`); domain of at least two dot-separated labels of
/// `[A-Za-z0-9-]` (1-63 characters, no leading or trailing `-`), the last one
/// at least two letters; a trailing dot (end of a sentence) is not included.
fn scan_emails<F: FnMut(usize, usize)>(text: &str, emit: &mut F) {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(at) = next_pos(b, from, |c| c == b'@') {
        let d0 = at.saturating_add(1);
        from = d0;
        // Local part: the run on the left, at most 64 characters (a longer run
        // is not an address), leading dots dropped.
        let before = b.get(..at).unwrap_or_default();
        let run = before
            .iter()
            .rev()
            .take(EMAIL_MAX_LOCAL_RUN)
            .take_while(|&&c| is_email_local(c))
            .count();
        if run > EMAIL_MAX_LOCAL {
            continue;
        }
        let Some(s) = at.checked_sub(run) else {
            continue;
        };
        let s = run_end(b, s, |c| c == b'.').min(at);
        let Some(local) = b.get(s..at) else { continue };
        if local.is_empty() || local.last() == Some(&b'.') || local.windows(2).any(|w| w == b"..") {
            continue;
        }
        // Domain: the run of domain characters, minus trailing dots.
        let e = run_end(b, d0, |c| {
            c.is_ascii_alphanumeric() || c == b'-' || c == b'.'
        });
        from = e.max(from);
        let domain = text.get(d0..e).unwrap_or_default().trim_end_matches('.');
        if valid_domain(domain.as_bytes()) {
            emit(s, d0.saturating_add(domain.len()));
        }
    }
}

fn valid_domain(d: &[u8]) -> bool {
    if d.is_empty() || d.len() > EMAIL_MAX_DOMAIN {
        return false;
    }
    let mut labels = 0usize;
    let mut last: &[u8] = &[];
    for label in d.split(|&c| c == b'.') {
        if label.is_empty()
            || label.len() > 63
            || label.first() == Some(&b'-')
            || label.last() == Some(&b'-')
        {
            return false;
        }
        labels = labels.saturating_add(1);
        last = label;
    }
    labels >= 2 && last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic)
}

// ---------------------------------------------------------------------------
// US social security numbers.

/// `AAA-GG-SSSS`.
const SSN_LEN: usize = 11;

/// `AAA-GG-SSSS` with area not 000, 666 or 9xx, group not 00, serial not 0000;
/// not touching a letter or digit, nor a `-digit` continuation on either side.
fn scan_ssns<F: FnMut(usize, usize)>(text: &str, emit: &mut F) {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(start) = next_pos(b, i, |c| c.is_ascii_digit()) {
        i = run_end(b, start, |c| c.is_ascii_digit());
        let Some((ssn, after)) = b
            .get(start..)
            .and_then(|tail| tail.split_at_checked(SSN_LEN))
        else {
            continue;
        };
        let &[a0, a1, a2, b'-', g0, g1, b'-', s0, s1, s2, s3] = ssn else {
            continue;
        };
        let (area, group, serial) = ([a0, a1, a2], [g0, g1], [s0, s1, s2, s3]);
        let shaped = area
            .iter()
            .chain(&group)
            .chain(&serial)
            .all(u8::is_ascii_digit)
            && !after.first().is_some_and(u8::is_ascii_digit);
        if !shaped {
            continue;
        }
        let end = start.saturating_add(SSN_LEN);
        i = end;
        let dash_digit_before = start
            .checked_sub(2)
            .and_then(|p| b.get(p..start))
            .is_some_and(|w| w.first().is_some_and(u8::is_ascii_digit) && w.get(1) == Some(&b'-'));
        let dash_digit_after = matches!(after, [b'-', d, ..] if d.is_ascii_digit());
        let valid = area != *b"000"
            && area != *b"666"
            && a0 != b'9'
            && group != *b"00"
            && serial != *b"0000";
        if valid
            && !dash_digit_before
            && !dash_digit_after
            && alnum_boundary_before(text, start)
            && alnum_boundary_after(text, end)
        {
            emit(start, end);
        }
    }
}

// ---------------------------------------------------------------------------
// IBANs.

const IBAN_MIN: usize = 15;
const IBAN_MAX: usize = 34;

/// Two letters, two digits, then 11-30 letters or digits (15-34 in all),
/// either compact or in groups of four separated by single spaces (the last
/// group 1-4 characters); mod-97 of the rearranged number is 1. Letters may be
/// lower case. Not touching a letter or digit on either side.
fn scan_ibans<F: FnMut(usize, usize)>(text: &str, emit: &mut F) {
    let b = text.as_bytes();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while let Some(start) = next_pos(b, i, |c| c.is_ascii_alphabetic()) {
        let run = count_while(b, start, |c| c.is_ascii_alphanumeric());
        // Whatever happens, the next candidate starts after this alphanumeric run.
        i = start.saturating_add(run.max(1));
        let shaped = bytes_at(b, start, 4).is_some_and(|h| {
            h.iter().take(2).all(u8::is_ascii_alphabetic)
                && h.iter().skip(2).all(u8::is_ascii_digit)
        });
        if !shaped || !alnum_boundary_before(text, start) {
            continue;
        }
        if (IBAN_MIN..=IBAN_MAX).contains(&run) {
            let end = start.saturating_add(run);
            if alnum_boundary_after(text, end) && mod97_is_one(b, &[(start, end)]) {
                emit(start, end);
            }
            continue;
        }
        if run != 4 {
            continue;
        }
        // Grouped form: "GB82 WEST 1234 5698 7654 32".
        groups.clear();
        let mut e = start.saturating_add(4);
        groups.push((start, e));
        let mut total = 4usize;
        while b.get(e) == Some(&b' ') {
            let group_start = e.saturating_add(1);
            let group_end = run_end(b, group_start, |c| c.is_ascii_alphanumeric());
            let len = span_len((group_start, group_end));
            total = total.saturating_add(len);
            if len == 0 || len > 4 || total > IBAN_MAX {
                break;
            }
            groups.push((group_start, group_end));
            e = group_end;
            if len < 4 {
                break;
            }
        }
        // The longest qualifying prefix of whole groups.
        for k in (1..groups.len()).rev() {
            let Some(prefix) = groups.get(..=k) else {
                continue;
            };
            let len: usize = prefix.iter().copied().map(span_len).sum();
            let Some(&(_, end)) = prefix.last() else {
                continue;
            };
            if (IBAN_MIN..=IBAN_MAX).contains(&len)
                && alnum_boundary_after(text, end)
                && mod97_is_one(b, prefix)
            {
                emit(start, end);
                i = end;
                break;
            }
        }
    }
}

/// ISO 13616 check: the first four characters moved to the end, letters as
/// 10-35, the number mod 97 must be 1.
fn mod97_is_one(b: &[u8], spans: &[(usize, usize)]) -> bool {
    let chars = || {
        spans
            .iter()
            .filter_map(|&(s, e)| b.get(s..e))
            .flat_map(|span| span.iter().copied())
    };
    let mut r: u32 = 0;
    for c in chars().skip(4).chain(chars().take(4)) {
        // A digit is itself, a letter (either case) 10 to 35: two digits.
        let Some(v) = char::from(c).to_digit(36) else {
            return false;
        };
        let shift = if v < 10 { 10 } else { 100 };
        // r < 97 and v < 36: never `None`.
        let Some(next) = r.checked_mul(shift).and_then(|r| r.checked_add(v)) else {
            return false;
        };
        r = next % 97;
    }
    r == 1
}

// ---------------------------------------------------------------------------
// JSON Web Tokens.

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// `eyJ<b64url>.eyJ<b64url>.<b64url>` (the signature may be empty, as in an
/// unsecured token), not preceded by a base64url character or a dot.
fn scan_jwts<F: FnMut(usize, usize)>(text: &str, emit: &mut F) {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(k) = text.get(from..).and_then(|t| t.find("eyJ")) {
        let s = from.saturating_add(k);
        let e1 = run_end(b, s, is_b64url);
        let left_ok = !s
            .checked_sub(1)
            .and_then(|p| b.get(p))
            .is_some_and(|&c| is_b64url(c) || c == b'.');
        from = e1.max(s.saturating_add(3));
        if !left_ok || !b.get(e1..).is_some_and(|t| t.starts_with(b".eyJ")) {
            continue;
        }
        let e2 = run_end(b, e1.saturating_add(1), is_b64url);
        from = e2;
        if b.get(e2) != Some(&b'.') {
            continue;
        }
        let e3 = run_end(b, e2.saturating_add(1), is_b64url);
        emit(s, e3);
        from = e3;
    }
}

// ---------------------------------------------------------------------------
// Bearer tokens.

const BEARER_MIN_TOKEN: usize = 16;

fn is_token68(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// `Bearer` (any case, not preceded by a letter or digit), one or more spaces
/// or tabs, then a token of at least 16 `[A-Za-z0-9-._~+/]` followed by any
/// `=` padding. Only the token (with its padding) is matched.
fn scan_bearer_tokens<F: FnMut(usize, usize)>(text: &str, emit: &mut F) {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(s) = next_pos(b, i, |c| c == b'b' || c == b'B') {
        i = s.saturating_add(1);
        let is_word = bytes_at(b, s, 6).is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"));
        if !is_word || !alnum_boundary_before(text, s) {
            continue;
        }
        let word_end = s.saturating_add(6);
        let t = run_end(b, word_end, |c| c == b' ' || c == b'\t');
        if t == word_end {
            continue;
        }
        let token_end = run_end(b, t, is_token68);
        // Scan on from the token, not past it: what follows a `Bearer` word can
        // hold another (`Bearer Bearer <token>`, `Bearer <x>/Bearer <token>`).
        i = t;
        if span_len((t, token_end)) < BEARER_MIN_TOKEN {
            continue;
        }
        let end = run_end(b, token_end, |c| c == b'=');
        emit(t, end);
    }
}

// ---------------------------------------------------------------------------
// AWS access key IDs.

const AWS_PREFIXES: [&[u8; 4]; 8] = [
    b"AKIA", b"ASIA", b"AGPA", b"AIDA", b"AROA", b"ANPA", b"ANVA", b"AIPA",
];

/// One of the prefixes, then exactly 16 `[A-Z0-9]`; no word character
/// (letter, digit, `_`) on either side.
fn scan_aws_keys<F: FnMut(usize, usize)>(text: &str, emit: &mut F) {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(s) = next_pos(b, i, |c| c == b'A') {
        i = s.saturating_add(1);
        let prefixed =
            bytes_at(b, s, 4).is_some_and(|p| AWS_PREFIXES.iter().any(|q| p == q.as_slice()));
        if !prefixed {
            continue;
        }
        let body = count_up_to(b, s.saturating_add(4), 17, |c| {
            c.is_ascii_uppercase() || c.is_ascii_digit()
        });
        let end = s.saturating_add(20);
        if body == 16
            && !prev_char(text, s).is_some_and(is_word)
            && !next_char(text, end).is_some_and(is_word)
        {
            emit(s, end);
            i = end;
        }
    }
}

// ---------------------------------------------------------------------------
// PEM private keys.

const PEM_MAX_LABEL: usize = 64;
/// Distinct labels kept open while looking for their `END` line.
const PEM_MAX_OPEN: usize = 8;

/// The label of a `-----BEGIN <label>-----` or `-----END <label>-----` marker
/// whose label text starts at `from`: `[A-Z0-9 ]`, at most 64 bytes, ending in
/// `PRIVATE KEY`. Returns the label and the end of the marker.
fn pem_label(text: &str, from: usize) -> Option<(&str, usize)> {
    const DASHES: &str = "-----";
    let rest = text.get(from..)?;
    let len = count_while(rest.as_bytes(), 0, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
    });
    if len > PEM_MAX_LABEL {
        return None;
    }
    let (label, after) = rest.split_at_checked(len)?;
    let end = from.saturating_add(len).saturating_add(DASHES.len());
    (label.ends_with("PRIVATE KEY") && after.starts_with(DASHES)).then_some((label, end))
}

/// A whole block from `-----BEGIN <X>PRIVATE KEY-----` to the next
/// `-----END <X>PRIVATE KEY-----` with the same label. One pass over the
/// markers; an unterminated block is not matched. A block inside another
/// (which ends first) is covered by it: only the outer one is a match, and
/// matches are emitted in order of start, like every detector's.
fn scan_private_keys<F: FnMut(usize, usize)>(text: &str, emit: &mut F) {
    const BEGIN: &str = "-----BEGIN ";
    const END: &str = "-----END ";
    if !text.contains("PRIVATE KEY-----") {
        return;
    }
    // (position, is_begin, label, marker end)
    let mut markers: Vec<(usize, bool, &str, usize)> = Vec::new();
    for (p, _) in text.match_indices(BEGIN) {
        if let Some((label, end)) = pem_label(text, p.saturating_add(BEGIN.len())) {
            markers.push((p, true, label, end));
        }
    }
    for (p, _) in text.match_indices(END) {
        if let Some((label, end)) = pem_label(text, p.saturating_add(END.len())) {
            markers.push((p, false, label, end));
        }
    }
    markers.sort_unstable_by_key(|m| m.0);
    let mut open: Vec<(&str, usize)> = Vec::new();
    // Blocks complete in order of their END marker: an inner block before
    // the block around it.
    let mut blocks: Vec<(usize, usize)> = Vec::new();
    for (pos, is_begin, label, end) in markers {
        if is_begin {
            if open.len() < PEM_MAX_OPEN && !open.iter().any(|o| o.0 == label) {
                open.push((label, pos));
            }
        } else if let Some(k) = open.iter().position(|o| o.0 == label) {
            if let Some(&(_, start)) = open.get(k) {
                blocks.push((start, end));
            }
            // Blocks opened inside this one are covered by it.
            open.truncate(k);
        }
    }
    blocks.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut covered_to = 0;
    for (start, end) in blocks {
        if end > covered_to {
            emit(start, end);
            covered_to = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(d: Detector, text: &str) -> Vec<&str> {
        d.find_all(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }

    /// Each row: detector, text, the exact matches expected.
    fn check(rows: &[(Detector, &str, &[&str])]) {
        for (d, text, want) in rows {
            assert_eq!(&found(*d, text), want, "{} in {text:?}", d.as_str());
        }
    }

    #[test]
    fn cards_are_luhn_valid_runs_of_13_to_19_digits() {
        use Detector::Card;
        check(&[
            (Card, "card 4111111111111111 ok", &["4111111111111111"]),
            (Card, "4111 1111 1111 1111", &["4111 1111 1111 1111"]),
            (Card, "4111-1111-1111-1111.", &["4111-1111-1111-1111"]),
            (Card, "amex 3782 822463 10005", &["3782 822463 10005"]),
            (Card, "(5555555555554444)", &["5555555555554444"]),
            (Card, "13 digits 4222222222222", &["4222222222222"]),
            (
                Card,
                "19 digits 6011000990139424009",
                &["6011000990139424009"],
            ),
            // A longer separated run: the card is found as whole groups within it.
            (Card, "4111 1111 1111 1111 123", &["4111 1111 1111 1111"]),
            (Card, "tel +1 4111 1111 1111 1111", &["4111 1111 1111 1111"]),
            (
                Card,
                "a=4111111111111111&b=5555555555554444",
                &["4111111111111111", "5555555555554444"],
            ),
        ]);
    }

    #[test]
    fn numbers_that_only_look_like_cards_are_not_cards() {
        use Detector::Card;
        check(&[
            // Luhn fails.
            (Card, "4111111111111112", &[]),
            // Part of a longer digit run, or glued to letters.
            (Card, "94111111111111111", &[]),
            (Card, "41111111111111119999", &[]),
            (Card, "x4111111111111111", &[]),
            (Card, "4111111111111111y", &[]),
            (Card, "é4111111111111111", &[]),
            // Too short, double separators, single-digit groups.
            (Card, "411111111111", &[]),
            (Card, "4111  1111  1111  1111", &[]),
            (Card, "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", &[]),
        ]);
    }

    #[test]
    fn emails_are_local_at_domain_with_a_real_tld() {
        use Detector::Email;
        check(&[
            (
                Email,
                "mail john.doe+tag@example.co.uk.",
                &["john.doe+tag@example.co.uk"],
            ),
            (
                Email,
                "<a_b%c-d@sub-domain.example.org>",
                &["a_b%c-d@sub-domain.example.org"],
            ),
            (Email, "x@y.io, z@w.dev", &["x@y.io", "z@w.dev"]),
            (Email, ".lead@example.com", &["lead@example.com"]),
            (Email, "user@localhost", &[]),
            (Email, "user@example.c", &[]),
            (Email, "user@-example.com", &[]),
            (Email, "user@example..com", &[]),
            (Email, "a..b@example.com", &[]),
            (Email, "trail.@example.com", &[]),
            (Email, "@example.com", &[]),
            (Email, "user@", &[]),
            (Email, "user@123.456", &[]),
        ]);
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(found(Email, &long_local).is_empty());
        let max_local = format!("{}@example.com", "a".repeat(64));
        assert_eq!(found(Email, &max_local), [max_local.as_str()]);
    }

    #[test]
    fn us_ssns_follow_the_ssa_rules() {
        use Detector::UsSsn;
        check(&[
            (UsSsn, "ssn 123-45-6789.", &["123-45-6789"]),
            (UsSsn, "\"078-05-1120\"", &["078-05-1120"]),
            (UsSsn, "000-12-3456", &[]),
            (UsSsn, "666-12-3456", &[]),
            (UsSsn, "900-12-3456", &[]),
            (UsSsn, "123-00-4567", &[]),
            (UsSsn, "123-45-0000", &[]),
            (UsSsn, "1234-45-6789", &[]),
            (UsSsn, "123-45-67890", &[]),
            (UsSsn, "a123-45-6789", &[]),
            (UsSsn, "1-123-45-6789", &[]),
            (UsSsn, "123-45-6789-1", &[]),
            (UsSsn, "123456789", &[]),
        ]);
    }

    #[test]
    fn ibans_need_a_valid_checksum() {
        use Detector::Iban;
        check(&[
            (Iban, "GB82WEST12345698765432", &["GB82WEST12345698765432"]),
            (
                Iban,
                "iban: GB82 WEST 1234 5698 7654 32.",
                &["GB82 WEST 1234 5698 7654 32"],
            ),
            (
                Iban,
                "DE89 3704 0044 0532 0130 00 EUR",
                &["DE89 3704 0044 0532 0130 00"],
            ),
            (
                Iban,
                "DE89 3704 0044 0532 0130 00 ABCD",
                &["DE89 3704 0044 0532 0130 00"],
            ),
            (Iban, "de89370400440532013000", &["de89370400440532013000"]),
            (
                Iban,
                "FR1420041010050500013M02606",
                &["FR1420041010050500013M02606"],
            ),
            // Wrong checksum, glued to a word, bad grouping, too short.
            (Iban, "GB83WEST12345698765432", &[]),
            (Iban, "XGB82WEST12345698765432", &[]),
            (Iban, "GB82WEST12345698765432X", &[]),
            (Iban, "GB82 WEST12 3456 9876 5432", &[]),
            (Iban, "GB82  WEST 1234 5698 7654 32", &[]),
            (Iban, "GB82 1234", &[]),
        ]);
    }

    #[test]
    fn jwts_have_two_json_segments_and_a_signature() {
        use Detector::Jwt;
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        check(&[
            (Jwt, &format!("token={jwt}&x=1"), &[jwt]),
            (
                Jwt,
                "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
                &["eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."],
            ),
            (Jwt, "eyJhbGciOiJIUzI1NiJ9.abc.def", &[]),
            (Jwt, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0", &[]),
            (Jwt, &format!("x{jwt}"), &[]),
            (Jwt, "eyJ eyJ.eyJ", &[]),
        ]);
    }

    #[test]
    fn bearer_tokens_mask_only_the_token() {
        use Detector::BearerToken;
        check(&[
            (
                BearerToken,
                "Authorization: Bearer abcdefghijklmnop1234",
                &["abcdefghijklmnop1234"],
            ),
            (
                BearerToken,
                "bearer  a.b-c_d~e+f/g0123456789==;",
                &["a.b-c_d~e+f/g0123456789=="],
            ),
            (
                BearerToken,
                "BEARER\tABCDEFGHIJKLMNOP",
                &["ABCDEFGHIJKLMNOP"],
            ),
            (BearerToken, "Bearer short", &[]),
            (BearerToken, "Bearerabcdefghijklmnop1234", &[]),
            (BearerToken, "xBearer abcdefghijklmnop1234", &[]),
            (BearerToken, "Bearer ", &[]),
        ]);
    }

    #[test]
    fn aws_access_keys_are_word_bounded() {
        use Detector::AwsAccessKey;
        check(&[
            (
                AwsAccessKey,
                "key=AKIAIOSFODNN7EXAMPLE;",
                &["AKIAIOSFODNN7EXAMPLE"],
            ),
            (
                AwsAccessKey,
                "ASIAY34FZKBOKMUTVV7A",
                &["ASIAY34FZKBOKMUTVV7A"],
            ),
            (AwsAccessKey, "AKIAIOSFODNN7EXAMPL", &[]),
            (AwsAccessKey, "AKIAIOSFODNN7EXAMPLEX", &[]),
            (AwsAccessKey, "_AKIAIOSFODNN7EXAMPLE", &[]),
            (AwsAccessKey, "AKIAiosfodnn7example", &[]),
            (AwsAccessKey, "ABCDIOSFODNN7EXAMPLE", &[]),
        ]);
    }

    #[test]
    fn private_keys_are_masked_as_whole_pem_blocks() {
        use Detector::PrivateKey;
        let rsa =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        let pkcs8 = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----";
        check(&[
            (PrivateKey, &format!("key:\n{rsa}\nrest"), &[rsa]),
            (PrivateKey, &format!("{pkcs8} and {rsa}"), &[pkcs8, rsa]),
            (
                PrivateKey,
                "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
                &[],
            ),
            (
                PrivateKey,
                "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
                &[],
            ),
            (
                PrivateKey,
                "-----BEGIN PRIVATE KEY-----\nMIIE truncated",
                &[],
            ),
        ]);
        // An unterminated block before a complete one: the complete one is found.
        let text = format!("-----BEGIN EC PRIVATE KEY-----\nxx\n{pkcs8}");
        assert_eq!(found(PrivateKey, &text), [pkcs8]);
    }

    #[test]
    fn a_block_inside_another_is_covered_by_it_and_matches_stay_in_order() {
        use Detector::PrivateKey;
        // The inner block ends first; it used to be reported first too, out
        // of order and inside the outer match.
        let inner = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----";
        let outer =
            format!("-----BEGIN PRIVATE KEY-----\nxx {inner} yy\n-----END PRIVATE KEY-----");
        let text = format!("a {outer} b {inner}");
        assert_eq!(found(PrivateKey, &text), [outer.as_str(), inner]);
        // Blocks sharing the dashes between them may overlap, still in order.
        let pkcs8 = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----";
        let glued = format!("{pkcs8}BEGIN PRIVATE KEY-----\ny\n-----END PRIVATE KEY-----");
        let spans = PrivateKey.find_all(&glued);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert!(
            spans[0].0 < spans[1].0 && spans[0].1 < spans[1].1,
            "{spans:?}"
        );
    }

    #[test]
    fn the_prefilter_never_hides_a_match() {
        let samples = [
            "4111111111111111",
            "4222222222222",
            "a@b.io",
            "078-05-1120",
            "GB82WEST12345698765432",
            "eyJa.eyJb.",
            "Bearer abcdefghijklmnop",
            "AKIAIOSFODNN7EXAMPLE",
            "-----BEGIN PRIVATE KEY----------END PRIVATE KEY-----",
        ];
        for text in samples {
            let stats = TextStats::of(text);
            let found: Vec<_> = Detector::ALL
                .into_iter()
                .filter(|d| !d.find_all(text).is_empty())
                .collect();
            assert!(!found.is_empty(), "{text} should match something");
            for d in found {
                assert!(
                    d.may_match(&stats),
                    "{} prefiltered out of {text:?}",
                    d.as_str()
                );
            }
        }
    }

    #[test]
    fn scanners_are_linear_on_adversarial_input() {
        let inputs = [
            "@".repeat(200_000),
            "a@".repeat(100_000),
            "1-".repeat(100_000),
            "1 ".repeat(100_000),
            "eyJ.".repeat(50_000),
            "Bearer ".repeat(30_000),
            "AKIA".repeat(50_000),
            "GB82 ".repeat(40_000),
            "-----BEGIN X PRIVATE KEY-----".repeat(10_000),
        ];
        for text in &inputs {
            for d in Detector::ALL {
                let start = std::time::Instant::now();
                let _ = d.find_all(text);
                let took = start.elapsed();
                // Linear scans take milliseconds; quadratic behaviour on 200 kB
                // takes minutes. The wide bound keeps a loaded CI machine green.
                assert!(
                    took < std::time::Duration::from_secs(30),
                    "{} on {:?}...: {took:?}",
                    d.as_str(),
                    &text[..8]
                );
            }
        }
    }
}
