//! Robustness ("smoke fuzz") tests of every entry point of `meshguard-core`.
//!
//! A panic inside the wasm VM is an outage, so each public function that sees
//! configuration or request data is fed thousands of generated inputs: random
//! bytes, random text, structured mutations of known-good inputs (flipped and
//! inserted bytes, wildcards, escapes, quotes, NUL, non-UTF-8, long runs, deep
//! nesting) and boundary sizes. The tests assert that nothing panics (debug
//! builds also trap arithmetic overflow), that results are `Ok`/`Err` where
//! that is obvious, and a few cheap invariants (masked JSON is JSON, canonical
//! forms are idempotent, a mutated MAC never verifies...).
//!
//! Everything is deterministic: each case has its own seed, derived from the
//! test name and the case number, for a xorshift64* generator. A failing case
//! prints its seed and the last input it noted; rerun only that case with
//! `ROBUSTNESS_SEED=0x... cargo test -p meshguard-core --test robustness NAME`.
//!
//! Deep-nesting cases (100,000 levels) run on threads with a 256 KiB stack
//! (512 KiB for config parsing, see `configs_nested_far_too_deeply_...`): a
//! recursion that is not bounded overflows it and aborts the test binary,
//! naming the thread.

// Test code: a failed expectation is reported by panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap};
use std::panic::{self, AssertUnwindSafe};

use base64::Engine as _;
use meshguard_core::audit::canon::{
    canonical_method, canonical_path, canonical_query, split_target,
};
use meshguard_core::audit::hash::parse_strict_json;
use meshguard_core::audit::stamp::{parse_header, MAX_HEADER_LEN};
use meshguard_core::audit::{
    decode_key, verify_header, verify_records, AuditPolicy, AuditStamp, Chain, HashError, Record,
    RecordError, RecordFields, RECORD_PREFIX,
};
use meshguard_core::canonical::{to_canonical_bytes, CanonicalError, MAX_DEPTH};
use meshguard_core::config::{parse_json, ConfigError, StrictObject, MAX_CONFIG_BYTES};
use meshguard_core::identity::response::deny_body;
use meshguard_core::identity::xfcc::{identity_from_gateway, MAX_XFCC_BYTES, MAX_XFCC_ELEMENTS};
use meshguard_core::identity::{
    DecidedBy, IdentityPolicy, IdentitySource, Peer, Reason, RequestInfo, Transport,
};
use meshguard_core::integrity::{
    fingerprint, load, read_answer, Answer, AnswerContext, IntegrityEnv, LoadError,
    SignatureStatus, TRUSTED_KEYS_ENV,
};
use meshguard_core::masking::{
    body_kind, BodyKind, Detector, Direction, HeaderEdit, MaskError, MaskingPolicy,
};
use meshguard_core::path::{escape_non_ascii, match_path, PathNormalization};
use meshguard_core::pattern::{
    GlobSegment, PathPattern, PatternError, StringPattern, MAX_PATTERN_LEN,
};
use meshguard_core::spiffe::{check_prefix, normalize_principal_text, SpiffeId, MAX_SPIFFE_ID_LEN};
use serde_json::{json, Value};

// ===========================================================================
// Deterministic randomness and the case runner.

/// xorshift64*: tiny, fast, good enough to drive a fuzzer, and reproducible.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // One splitmix64 step, so that nearby seeds give unrelated streams and
        // seed 0 does not give the all-zero state xorshift never leaves.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn piece<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// A length skewed towards small values, sometimes up to `max`.
    fn len(&mut self, max: usize) -> usize {
        match self.below(10) {
            0..=5 => self.below(max.min(16) + 1),
            6..=8 => self.below(max.min(256) + 1),
            _ => self.below(max + 1),
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// Printable ASCII with a sprinkle of whitespace and control characters.
    fn ascii(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| match self.below(20) {
                0 => char::from(self.below(0x20) as u8),
                1 => ' ',
                _ => char::from(self.range(0x21, 0x7e) as u8),
            })
            .collect()
    }

    /// Text built from `pieces`, with random characters (any plane) mixed in.
    fn text(&mut self, max_pieces: usize, pieces: &[&str]) -> String {
        let mut s = String::new();
        for _ in 0..self.below(max_pieces + 1) {
            if self.chance(1, 5) {
                s.push(self.char());
            } else {
                s.push_str(self.piece(pieces));
            }
        }
        s
    }

    /// Any char, biased towards ASCII and towards awkward ones.
    fn char(&mut self) -> char {
        match self.below(8) {
            0..=3 => char::from(self.below(0x80) as u8),
            4 => *self.pick(&[
                'é',
                'ß',
                'İ',
                'ẞ',
                'Ω',
                '€',
                '\u{feff}',
                '\u{2028}',
                '😀',
                '\u{10ffff}',
            ]),
            5 => char::from_u32(self.range(0x80, 0x7ff) as u32).unwrap_or('?'),
            6 => char::from_u32(self.range(0x800, 0xffff) as u32).unwrap_or('\u{fffd}'),
            _ => char::from_u32(self.range(0x1_0000, 0x10_ffff) as u32).unwrap_or('\u{fffd}'),
        }
    }
}

/// FNV-1a, to derive a per-test base seed from the test's name.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One generated case: its generator, and the input it says it is testing.
struct Case {
    rng: Rng,
    input: Vec<u8>,
}

impl Case {
    /// Remembers the input under test, to print it if the case fails.
    fn note(&mut self, input: impl AsRef<[u8]>) {
        self.input.clear();
        self.input.extend_from_slice(input.as_ref());
    }
}

fn shown(bytes: &[u8]) -> String {
    const HEAD: usize = 600;
    const TAIL: usize = 120;
    if bytes.len() <= HEAD + TAIL {
        bytes.escape_ascii().to_string()
    } else {
        format!(
            "{} [... {} bytes ...] {}",
            bytes[..HEAD].escape_ascii(),
            bytes.len() - HEAD - TAIL,
            bytes[bytes.len() - TAIL..].escape_ascii()
        )
    }
}

/// Runs `cases` seeded cases of `f` (or only `ROBUSTNESS_SEED`'s when set); a
/// failing case is reported with its seed and the last input it noted.
fn run_cases(name: &str, cases: u64, mut f: impl FnMut(&mut Case)) {
    let only = std::env::var("ROBUSTNESS_SEED").ok().map(|s| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        }
        .expect("ROBUSTNESS_SEED is a decimal or 0x-hex u64")
    });
    let base = fnv1a(name);
    let seeds: Vec<u64> = match only {
        Some(seed) => vec![seed],
        None => (0..cases)
            .map(|i| base ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect(),
    };
    for seed in seeds {
        let mut case = Case {
            rng: Rng::new(seed),
            input: Vec::new(),
        };
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(&mut case)));
        if let Err(payload) = outcome {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "{name}: case with seed {seed:#018x} failed (rerun: ROBUSTNESS_SEED={seed:#x} \
                 cargo test -p meshguard-core --test robustness {name})\n\
                 last input noted ({} bytes): {}\n{message}",
                case.input.len(),
                shown(&case.input),
            );
        }
    }
}

/// Runs `f` on a thread with a `kib` KiB stack: recursion that is not bounded
/// (a few hundred bytes per level at least) overflows it long before the
/// 100,000 levels these tests nest, and aborts the binary naming the thread.
/// On wasm32-wasip1 (no threads, `make wasm-unit`) `f` runs on the module's
/// own stack, the one the filters have.
#[cfg(target_family = "wasm")]
fn on_small_stack<T: Send + 'static>(
    _name: &str,
    _kib: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    f()
}

#[cfg(not(target_family = "wasm"))]
fn on_small_stack<T: Send + 'static>(
    name: &str,
    kib: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::Builder::new()
        .name(format!("small-stack {name}"))
        .stack_size(kib * 1024)
        .spawn(f)
        .expect("spawn a thread")
        .join()
        .unwrap_or_else(|e| panic::resume_unwind(e))
}

// ===========================================================================
// Mutations of known-good inputs.

/// Fragments inserted by mutations: wildcards, escapes, separators, quotes,
/// NUL, invalid and partial UTF-8, surrogate escapes, JSON syntax, secrets.
const TOKENS: &[&[u8]] = &[
    b"*",
    b"**",
    b"/**/",
    b"%",
    b"%2e",
    b"%2E%2e",
    b"%2F",
    b"%00",
    b"%zz",
    b"%f",
    b"..",
    b"/../",
    b"/./",
    b"//",
    b"\"",
    b"\\",
    b"\\\"",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00",
    b"\\ud83d\\ude00",
    b"\\u12",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xf0\x9f\x98\x80",
    b"\xef\xbb\xbf",
    "é".as_bytes(),
    "İ".as_bytes(),
    b"{",
    b"}",
    b"[",
    b"]",
    b"{\"a\":",
    b",",
    b":",
    b";",
    b"=",
    b"&",
    b"+",
    b"?",
    b"#",
    b"~",
    b"~0",
    b"~1",
    b"~2",
    b"-",
    b"@",
    b" ",
    b"\t",
    b"\r\n",
    b"\n",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0.1e-400",
    b"spiffe://",
    b"By=",
    b"URI=",
    b"Bearer ",
    b"eyJ",
    b"4111111111111111",
    b"-----BEGIN PRIVATE KEY-----",
    b"-----END PRIVATE KEY-----",
    b"AKIA",
    b"v=1;",
    b"sig=",
];

/// Applies one to four random edits to `input`; an input grown more than
/// 8000 bytes past `max_len` is cut back to `max_len`.
fn mutate(rng: &mut Rng, input: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.range(1, 4) {
        let at = rng.below(out.len() + 1);
        match rng.below(11) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next_u64() as u8;
            }
            2 | 3 => {
                let token = rng.pick(TOKENS);
                out.splice(at..at, token.iter().copied());
            }
            4 if !out.is_empty() => {
                let end = (at + rng.range(1, 16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            5 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + rng.range(1, 64)).min(out.len());
                let piece = out[start..end].to_vec();
                let to = rng.below(out.len() + 1);
                for _ in 0..rng.range(1, 3) {
                    out.splice(to..to, piece.iter().copied());
                }
            }
            6 => {
                let unit: Vec<u8> = if rng.chance(1, 2) {
                    rng.pick(TOKENS).to_vec()
                } else {
                    vec![rng.next_u64() as u8]
                };
                let count = rng.range(2, (4000 / unit.len().max(1)).max(2));
                let run: Vec<u8> = unit
                    .iter()
                    .copied()
                    .cycle()
                    .take(unit.len() * count)
                    .collect();
                out.splice(at..at, run);
            }
            7 => out.truncate(at),
            8 => {
                let depth = rng.range(1, 40);
                let (open, close): (&[u8], &[u8]) = if rng.chance(1, 2) {
                    (b"[", b"]")
                } else {
                    (b"{\"k\":", b"}")
                };
                let mut wrapped = open.repeat(depth);
                wrapped.extend_from_slice(&out);
                wrapped.extend_from_slice(&close.repeat(depth));
                out = wrapped;
            }
            9 if !out.is_empty() => {
                // Swap two bytes: reorders separators and quotes.
                let (i, j) = (rng.below(out.len()), rng.below(out.len()));
                out.swap(i, j);
            }
            _ => {
                let token = rng.pick(TOKENS);
                out.splice(at..at, token.iter().copied());
            }
        }
        if out.len() > max_len + 8000 {
            out.truncate(max_len);
        }
    }
    out
}

/// An input for a byte-taking entry point: a mutation of one of `seeds`
/// (most of the time), random bytes, random ASCII, or a seed unchanged.
fn bytes_input(rng: &mut Rng, seeds: &[&[u8]], max_len: usize) -> Vec<u8> {
    match rng.below(10) {
        0 => {
            let len = rng.len(max_len);
            rng.bytes(len)
        }
        1 => {
            let len = rng.len(max_len);
            rng.ascii(len).into_bytes()
        }
        2 => rng.pick(seeds).to_vec(),
        _ => {
            let seed = rng.pick(seeds).to_vec();
            let once = mutate(rng, &seed, max_len);
            if rng.chance(1, 3) {
                mutate(rng, &once, max_len)
            } else {
                once
            }
        }
    }
}

/// The same for a `&str` entry point: invalid UTF-8 becomes U+FFFD.
fn text_input(rng: &mut Rng, seeds: &[&str], max_len: usize) -> String {
    let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_bytes()).collect();
    let bytes = if rng.chance(1, 8) {
        let len = rng.len(max_len / 4);
        (0..len)
            .map(|_| rng.char())
            .collect::<String>()
            .into_bytes()
    } else {
        bytes_input(rng, &seeds, max_len)
    };
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Nested openers, optionally closed: `[[[...]]]`, `{"a":{"a":...}}`, mixes.
fn deep_json(depth: usize, shape: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(depth * 6);
    match shape % 4 {
        0 => out.extend(std::iter::repeat_n(b'[', depth)),
        1 => {
            for _ in 0..depth {
                out.extend_from_slice(b"{\"a\":");
            }
        }
        2 => {
            for i in 0..depth {
                out.extend_from_slice(if i % 2 == 0 { b"[" } else { b"{\"a\":" });
            }
        }
        _ => {
            out.extend(std::iter::repeat_n(b'[', depth));
            out.push(b'1');
            out.extend(std::iter::repeat_n(b']', depth));
        }
    }
    out
}

// ===========================================================================
// Random JSON documents (valid unless mutated afterwards).

const JSON_KEYS: &[&str] = &[
    "a",
    "b",
    "password",
    "new_password",
    "ssn",
    "users",
    "items",
    "token",
    "data",
    "secret",
    "API_KEY",
    "Secret",
    "card_number",
    "pässwort",
    "İd",
    "a/b",
    "c~d",
    "0",
    "1",
    "customer",
    "query",
    "variables",
    "",
    "é",
    "k",
];

/// Pieces of string values: detector bait, escapes, awkward characters.
const TEXT_PIECES: &[&str] = &[
    "4111111111111111",
    "4111 1111 1111 1111",
    "3782 822463 10005",
    "john.doe@example.com",
    "a@b.io",
    "078-05-1120",
    "123-45-6789",
    "GB82 WEST 1234 5698 7654 32",
    "GB82WEST12345698765432",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27",
    "Bearer abcdefghijklmnop1234",
    "AKIAIOSFODNN7EXAMPLE",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\n",
    "-----END PRIVATE KEY-----",
    "-----BEGIN EC PRIVATE KEY-----",
    "-----END EC PRIVATE KEY-----",
    "tkt_ABCDabcd1234",
    "éé",
    "😀",
    "\"",
    "\\",
    "\n",
    "\u{0}",
    "\u{1f}",
    "\u{7f}",
    "\u{2028}",
    "İ",
    "ß",
    " ",
    "@",
    "1-",
    "eyJ.",
    "x",
    "/",
    "%",
    "=",
    "&",
    "+",
];

/// Appends `s` as a JSON string literal, escaping some characters that need
/// no escape (as `\uXXXX`, surrogate pairs included, or `\/`).
fn json_string(rng: &mut Rng, s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' if rng.chance(1, 2) => out.push_str("\\n"),
            '/' if rng.chance(1, 3) => out.push_str("\\/"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if rng.chance(1, 12) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    if rng.chance(1, 2) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    } else {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_ws(rng: &mut Rng, out: &mut String) {
    if rng.chance(1, 4) {
        out.push_str(rng.piece(&[" ", "\n", "\t", "\r\n  ", "  "]));
    }
}

/// Appends a random valid JSON value (duplicate keys possible).
fn json_value(rng: &mut Rng, depth: usize, out: &mut String) {
    let kind = if depth >= 7 {
        rng.below(5)
    } else {
        rng.below(9)
    };
    match kind {
        0 => out.push_str(rng.piece(&["null", "true", "false"])),
        1 => out.push_str(rng.piece(&[
            "0",
            "-0",
            "1",
            "-1",
            "42",
            "12345678901234567890123",
            "1.5",
            "-2.5e-3",
            "1E+2",
            "0.1",
            "1e308",
            "4111111111111111",
        ])),
        2..=4 => {
            let text = rng.text(4, TEXT_PIECES);
            json_string(rng, &text, out);
        }
        5 | 6 => {
            out.push('{');
            json_ws(rng, out);
            for i in 0..rng.below(5) {
                if i > 0 {
                    out.push(',');
                    json_ws(rng, out);
                }
                let key = (*rng.pick(JSON_KEYS)).to_owned();
                json_string(rng, &key, out);
                json_ws(rng, out);
                out.push(':');
                json_ws(rng, out);
                json_value(rng, depth + 1, out);
                json_ws(rng, out);
            }
            out.push('}');
        }
        _ => {
            out.push('[');
            json_ws(rng, out);
            for i in 0..rng.below(5) {
                if i > 0 {
                    out.push(',');
                    json_ws(rng, out);
                }
                json_value(rng, depth + 1, out);
                json_ws(rng, out);
            }
            out.push(']');
        }
    }
}

fn json_document(rng: &mut Rng) -> String {
    let mut out = String::new();
    json_ws(rng, &mut out);
    json_value(rng, 0, &mut out);
    json_ws(rng, &mut out);
    out
}

/// A JSON body: usually a generated document, often mutated, sometimes junk.
fn json_body(rng: &mut Rng) -> Vec<u8> {
    let doc = json_document(rng);
    match rng.below(10) {
        0..=4 => doc.into_bytes(),
        5..=8 => mutate(rng, doc.as_bytes(), 16 * 1024),
        _ => {
            let len = rng.len(512);
            rng.bytes(len)
        }
    }
}

/// Deepest container nesting of a valid JSON text (a scalar is 0), counted
/// on the text: a parsed `Value` keeps one of repeated keys only.
fn text_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &c in json {
        match (in_string, c) {
            (true, _) if escaped => escaped = false,
            (true, b'\\') => escaped = true,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A random `serde_json::Value` (finite numbers only).
fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth >= 6 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(1, 2)),
        2 => match rng.below(4) {
            0 => json!(rng.next_u64()),
            1 => json!(rng.next_u64() as i64),
            2 => json!(rng.below(1000) as i64 - 500),
            _ => {
                let f = f64::from_bits(rng.next_u64());
                if f.is_finite() {
                    json!(f)
                } else {
                    json!(rng.below(1000) as f64 / 8.0)
                }
            }
        },
        3 | 4 => Value::String(rng.text(4, TEXT_PIECES)),
        5 => Value::Array(
            (0..rng.below(5))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(5))
                .map(|_| {
                    let key = if rng.chance(1, 3) {
                        (0..rng.below(4)).map(|_| rng.char()).collect()
                    } else {
                        (*rng.pick(JSON_KEYS)).to_owned()
                    };
                    (key, random_value(rng, depth + 1))
                })
                .collect(),
        ),
    }
}

/// A `Value` nested `depth` arrays deep, taken apart without recursion (the
/// recursive `Drop` of a very deep value would itself overflow the stack).
fn nested_value(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

fn dismantle(mut v: Value) {
    loop {
        v = match v {
            Value::Array(mut items) => match items.pop() {
                Some(inner) => inner,
                None => return,
            },
            _ => return,
        };
    }
}

// ===========================================================================
// Shared fixtures.

const GATEWAY: &str = "spiffe://cluster.local/ns/istio-system/sa/ingress";
const LOCAL: &str = "spiffe://cluster.local/ns/default/sa/backend";

const IDENTITIES: &[&str] = &[
    "spiffe://cluster.local/ns/shop/sa/frontend",
    "spiffe://cluster.local/ns/shop/sa/admin",
    "spiffe://cluster.local/ns/ops/sa/admin",
    "spiffe://cluster.local/ns/jobs/sa/runner",
    "spiffe://cluster.local/ns/ops-1/sa/x",
    "spiffe://partner.example.com/ns/x/sa/y",
    "spiffe://td/workload",
    "spiffe://a.b",
    GATEWAY,
    LOCAL,
];

const REQUEST_PATHS: &[&str] = &[
    "/api/x",
    "/api",
    "/api/",
    "/api/public/items?id=1",
    "/admin/panel?x=1#frag",
    "/admin",
    "/healthz",
    "/img/a.png",
    "/users/42/orders",
    "/users//orders",
    "/users/42/43/orders",
    "/batch/a/b",
    "/x/y/admin",
    "/a",
    "/a/b/c",
    "/é/ü",
    "/",
    "",
    "*",
    "//api/x",
    "/admin/../api",
    "/v1//items/./9?token=secret&b=2&a=1",
    "/graphql",
    "/api/orders/7?z=%41&a=+b",
    "/files/report.pdf",
    "?",
    "#",
];

const METHODS: &[&str] = &[
    "GET", "get", "POST", "PoSt", "PUT", "DELETE", "PATCH", "", "BREW",
];

const HOSTS: &[&str] = &[
    "api.example.com",
    "API.EXAMPLE.COM:8443",
    "api.example.com:",
    "api.internal",
    "orders.shop.svc.cluster.local",
    "[::1]:80",
    "[::1",
    "]:80",
    "other",
    "",
    ":",
    "ÄPI.example.com",
];

/// A request: usually from the tables above, sometimes mutated.
fn request_parts(rng: &mut Rng) -> (String, String, String) {
    let path = if rng.chance(1, 3) {
        text_input(rng, REQUEST_PATHS, 256)
    } else {
        (*rng.pick(REQUEST_PATHS)).to_owned()
    };
    let method = if rng.chance(1, 8) {
        text_input(rng, METHODS, 16)
    } else {
        (*rng.pick(METHODS)).to_owned()
    };
    let host = if rng.chance(1, 6) {
        text_input(rng, HOSTS, 64)
    } else {
        (*rng.pick(HOSTS)).to_owned()
    };
    (path, method, host)
}

fn random_transport(rng: &mut Rng) -> Transport {
    let mtls = *rng.pick(&[None, Some(false), Some(true), Some(true), Some(true)]);
    let version = *rng.pick(&[
        None,
        Some(""),
        Some("TLSv1"),
        Some("TLSv1.2"),
        Some("TLSv1.3"),
        Some("SSLv3"),
    ]);
    let san = if rng.chance(1, 6) {
        Some(text_input(rng, IDENTITIES, 128))
    } else {
        rng.pick(IDENTITIES).to_string().into()
    };
    Transport::from_host(mtls, version, san.as_deref())
}

// ===========================================================================
// Patterns, SPIFFE IDs, requests.

const PATTERN_SEEDS: &[&str] = &[
    "*",
    "**",
    "/healthz",
    "/api/*",
    "*.png",
    "/users/*/orders",
    "/static/**/*.js",
    "/**/admin",
    "/a/**",
    "/v*/items/*",
    "/a/x**/b",
    "api/*",
    "front*",
    "*end",
    "a*b",
    "/é/*",
    "/**/a*a*a*a*b/**/c",
    "",
];

#[test]
fn string_patterns_of_any_text_parse_and_match_without_panicking() {
    run_cases("string_patterns", 4000, |case| {
        let text = text_input(&mut case.rng, PATTERN_SEEDS, 2 * MAX_PATTERN_LEN);
        case.note(&text);
        let Ok(pattern) = StringPattern::parse(&text) else {
            return;
        };
        assert!(!text.is_empty() && text.len() <= MAX_PATTERN_LEN);
        let mut values: Vec<String> = (0..4)
            .map(|_| text_input(&mut case.rng, PATTERN_SEEDS, 256))
            .collect();
        values.push(text.trim_matches('*').to_owned());
        values.push(text.to_ascii_uppercase());
        for value in &values {
            let exact = pattern.matches(value);
            // Case-insensitive matching accepts at least what exact matching does.
            assert!(
                !exact || pattern.matches_ignore_case(value),
                "{pattern:?} vs {value:?}"
            );
        }
        // The literal of a pattern matches it (for `*x`, `x*` and `x` alike).
        assert!(pattern.matches(text.trim_matches('*')), "{pattern:?}");
        let lowered = pattern.map_literal(str::to_ascii_lowercase);
        let _ = lowered.matches_ignore_case(&text);
    });
}

/// A path that `segments` (a parsed glob) certainly matches.
fn path_matching_glob(rng: &mut Rng, segments: &[GlobSegment]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for segment in segments {
        match segment {
            GlobSegment::AnySegments => {
                for _ in 0..rng.below(3) {
                    parts.push(rng.text(2, &["a", "é", "*", "", "x.y"]).replace('/', ""));
                }
            }
            GlobSegment::Pattern(g) => {
                let mut s = String::new();
                for c in g.chars() {
                    if c == '*' {
                        for _ in 0..rng.below(3) {
                            s.push_str(rng.piece(&["a", "*", "é", ".", ""]));
                        }
                    } else {
                        s.push(c);
                    }
                }
                parts.push(s);
            }
        }
    }
    format!("/{}", parts.join("/"))
}

#[test]
fn path_patterns_of_any_text_parse_and_match_without_panicking() {
    run_cases("path_patterns", 4000, |case| {
        let text = text_input(&mut case.rng, PATTERN_SEEDS, 2 * MAX_PATTERN_LEN);
        case.note(&text);
        let parsed = PathPattern::parse(&text);
        if text.is_empty() {
            assert_eq!(parsed, Err(PatternError::Empty));
        } else if text.len() > MAX_PATTERN_LEN {
            assert_eq!(parsed, Err(PatternError::TooLong));
        }
        let Ok(pattern) = parsed else { return };
        for _ in 0..4 {
            let path = text_input(&mut case.rng, REQUEST_PATHS, 512);
            let _ = pattern.matches(&path);
        }
        match &pattern {
            PathPattern::Glob(segments) => {
                for _ in 0..3 {
                    let path = path_matching_glob(&mut case.rng, segments);
                    assert!(pattern.matches(&path), "{text:?} should match {path:?}");
                }
            }
            PathPattern::Simple(StringPattern::Exact(s)) => {
                assert_eq!(pattern.as_exact(), Some(&**s));
                assert!(pattern.matches(s));
            }
            PathPattern::Simple(_) => {}
        }
    });
}

#[test]
fn pattern_lengths_at_the_limit_are_accepted_and_beyond_it_refused() {
    for (len, ok) in [
        (1, true),
        (MAX_PATTERN_LEN, true),
        (MAX_PATTERN_LEN + 1, false),
    ] {
        let exact = format!("/{}", "a".repeat(len - 1));
        assert_eq!(PathPattern::parse(&exact).is_ok(), ok, "{len}");
        assert_eq!(StringPattern::parse(&exact).is_ok(), ok, "{len}");
    }
    for (len, ok) in [(MAX_PATTERN_LEN, true), (MAX_PATTERN_LEN + 1, false)] {
        let glob = format!("/*{}", "a".repeat(len - 2));
        let parsed = PathPattern::parse(&glob);
        assert_eq!(parsed.is_ok(), ok, "{len}");
        assert!(matches!(
            parsed,
            Ok(PathPattern::Glob(_)) | Err(PatternError::TooLong)
        ));
    }
    assert_eq!(StringPattern::parse(""), Err(PatternError::Empty));
    assert_eq!(PathPattern::parse(""), Err(PatternError::Empty));
}

#[test]
fn adversarial_globs_against_long_paths_terminate() {
    let patterns = [
        "/**/a*a*a*a*a*b/**/c",
        "/**/**/**/**/x",
        "/*/*/*/*/*/*/*/*/*/*/**/z",
        "/a*/**/*a/**/a*a/**/b",
    ];
    let paths = [
        format!("/{}", ["aaaaaaaaaaaaaaaaaaaaaaaa"; 150].join("/")),
        format!("/{}", "a/".repeat(1000)),
        format!("/{}", "a".repeat(20_000)),
        "/".repeat(5000),
    ];
    for p in patterns {
        let pattern = PathPattern::parse(p).unwrap();
        for path in &paths {
            assert!(!pattern.matches(path), "{p}");
        }
    }
}

const SPIFFE_SEEDS: &[&str] = &[
    "spiffe://cluster.local/ns/default/sa/frontend",
    "cluster.local/ns/default/sa/frontend",
    "spiffe://example.org",
    "spiffe://example.org/workload",
    "spiffe://td/ns/a/",
    "spiffe://td/ns//sa/b",
    "spiffe://td/ns/../sa",
    "spiffe://Cluster.local/ns/a",
    "spiffe://td:8080/ns/a",
    "spiffe://",
    "spiffe:///ns/a",
    "http://cluster.local/ns/a",
    "*",
    "spiffe://cluster.local/ns/shop/*",
    "spiffe://clu",
];

#[test]
fn spiffe_ids_of_any_text_parse_without_panicking() {
    run_cases("spiffe_ids", 5000, |case| {
        let text = text_input(&mut case.rng, SPIFFE_SEEDS, 3 * MAX_SPIFFE_ID_LEN);
        case.note(&text);
        let _ = check_prefix(&text);
        if let Ok(id) = SpiffeId::parse_uri(&text) {
            assert_eq!(id.as_str(), text);
            assert!(text.len() <= MAX_SPIFFE_ID_LEN);
            assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), text);
            assert_eq!(SpiffeId::parse_uri(&id.to_string()).as_ref(), Ok(&id));
            assert!(check_prefix(&text).is_ok(), "a whole ID is a valid prefix");
            if let (Some(ns), Some(sa)) = (id.namespace(), id.service_account()) {
                assert!(text.ends_with(&format!("/ns/{ns}/sa/{sa}")));
            }
            let _ = format!("{id:?}");
        }
        if let Ok(id) = SpiffeId::parse_config(&text) {
            assert_eq!(id.as_str(), normalize_principal_text(&text));
            assert_eq!(SpiffeId::parse_uri(id.as_str()).as_ref(), Ok(&id));
        }
    });
}

#[test]
fn spiffe_id_lengths_at_the_limits_are_accepted_and_beyond_them_refused() {
    let id_of_len = |len: usize| format!("spiffe://td/{}", "x".repeat(len - "spiffe://td/".len()));
    assert!(SpiffeId::parse_uri(&id_of_len(MAX_SPIFFE_ID_LEN)).is_ok());
    assert!(SpiffeId::parse_uri(&id_of_len(MAX_SPIFFE_ID_LEN + 1)).is_err());
    let td = |len: usize| format!("spiffe://{}/x", "t".repeat(len));
    assert!(SpiffeId::parse_uri(&td(255)).is_ok());
    assert!(SpiffeId::parse_uri(&td(256)).is_err());
    assert!(SpiffeId::parse_uri(&td(0)).is_err());
}

#[test]
fn request_paths_and_hosts_of_any_shape_are_trimmed_without_panicking() {
    run_cases("request_info", 5000, |case| {
        let (path, method, host) = request_parts(&mut case.rng);
        case.note(format!("{path}\n{host}"));
        let request = RequestInfo {
            path: &path,
            method: &method,
            host: &host,
        };
        let p = request.path_without_query();
        assert!(path.starts_with(p) && !p.contains(['?', '#']), "{p:?}");
        let h = request.host_without_port();
        assert!(host.starts_with(h), "{h:?}");
        // Trimming is idempotent.
        let again = RequestInfo {
            path: p,
            method: &method,
            host: h,
        };
        assert_eq!(again.path_without_query(), p);
    });
}

// ===========================================================================
// Identity.

const IDENTITY_CONFIG: &str = r#"{
  "config_version": "strict-v1",
  "mode": "enforce",
  "default_action": "deny",
  "transport": {
    "require_mtls": true,
    "min_tls_version": "TLSv1.2",
    "overrides": [
      {"name": "kubelet-probes", "paths": ["/healthz"], "methods": ["GET"], "require_mtls": false}
    ]
  },
  "identity": {"trusted_gateways": ["cluster.local/ns/istio-system/sa/ingress"]},
  "deny_response": {"status": 403, "detail": "verbose"},
  "rules": [
    {"name": "probes", "action": "allow", "paths": ["/healthz"], "methods": ["GET"]},
    {"name": "frontend", "action": "allow", "principals": ["cluster.local/ns/shop/sa/frontend"],
     "paths": ["/api/*"], "methods": ["GET", "POST"]},
    {"name": "batch", "action": "allow", "namespaces": ["jobs"], "paths": ["/batch/**"],
     "methods": ["POST"], "hosts": ["orders.shop.svc.cluster.local"]},
    {"name": "partners", "action": "allow", "trust_domains": ["partner.example.com"],
     "paths": ["/api/public/*"], "methods": ["GET"]},
    {"name": "ops-admin", "action": "allow", "namespaces": ["ops", "ops-*"], "paths": ["/admin/*"]},
    {"name": "admin-only-from-ops", "action": "deny", "paths": ["/admin/*"], "not_namespaces": ["ops"]},
    {"name": "no-deletes", "action": "deny", "methods": ["DELETE"], "not_trust_domains": ["cluster.local"]},
    {"name": "suffix", "action": "allow", "principals": ["*/sa/admin", "spiffe://cluster.local/ns/shop/*"],
     "not_principals": ["cluster.local/ns/shop/sa/admin"], "paths": ["*.png", "/users/*/orders"],
     "hosts": ["*.example.com", "API.*"], "not_hosts": ["admin.example.com"]}
  ]
}"#;

const IDENTITY_SEEDS: &[&[u8]] = &[
    IDENTITY_CONFIG.as_bytes(),
    br#"{"default_action": "allow", "transport": {"require_mtls": false}}"#,
    br#"{"rules": [{"name": "a", "action": "allow", "principals": ["*"]}]}"#,
    br#"{"deny_response": {"status": 599, "detail": "minimal"}, "rules": []}"#,
    b"{}",
];

/// Evaluates a few random requests against `policy` and checks the outcome is coherent.
fn exercise_identity_policy(rng: &mut Rng, policy: &IdentityPolicy) {
    for _ in 0..4 {
        let (path, method, host) = request_parts(rng);
        let request = RequestInfo {
            path: &path,
            method: &method,
            host: &host,
        };
        let header = xfcc_header(rng).0;
        let local = rng.chance(1, 2).then(|| LOCAL.to_owned());
        let peer = policy.resolve_peer(random_transport(rng), || (Some(header), local));
        let decision = policy.evaluate(&peer, &request);
        match decision.decided_by {
            DecidedBy::Rule(i) => assert!(i < policy.rule_count()),
            DecidedBy::TransportOverride(_) | DecidedBy::Transport => assert!(matches!(
                decision.reason,
                Reason::MtlsRequired | Reason::TlsVersionTooLow
            )),
            DecidedBy::Default => assert!(matches!(
                decision.reason,
                Reason::DefaultAllow | Reason::NoMatchingRule
            )),
            DecidedBy::IdentitySource => assert!(matches!(
                decision.reason,
                Reason::PeerIdentityUnusable | Reason::GatewayIdentityUnusable
            )),
            DecidedBy::Path => assert!(matches!(
                decision.reason,
                Reason::InvalidPath | Reason::AmbiguousPath
            )),
        }
        let _ = policy.describe(decision.decided_by);
        let _ = policy.rule_name(decision.decided_by);
        let request_id = rng
            .chance(1, 2)
            .then(|| text_input(rng, &["req-1", "\"\\\u{0}"], 64));
        let body = deny_body(policy, &decision, &peer, request_id.as_deref());
        let body: Value = serde_json::from_slice(&body).expect("a deny body is JSON");
        assert_eq!(body["error"], "access_denied");
        if let IdentitySource::Gateway(gateway) = &peer.source {
            assert!(policy.is_trusted_gateway(gateway));
        }
    }
}

#[test]
fn identity_policies_from_mutated_json_never_panic() {
    let mut compiled = 0;
    run_cases("identity_policy_json", 2500, |case| {
        let bytes = bytes_input(&mut case.rng, IDENTITY_SEEDS, 8 * 1024);
        case.note(&bytes);
        match IdentityPolicy::from_json(&bytes) {
            Ok(policy) => {
                compiled += 1;
                exercise_identity_policy(&mut case.rng, &policy);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
    assert!(compiled > 100, "only {compiled} mutated configs compiled");
}

/// One generated XFCC element: its `By` values, `URI` values and other pairs.
#[derive(Debug, Clone)]
struct XfccElement {
    by: Vec<String>,
    uri: Vec<String>,
}

fn xfcc_value(rng: &mut Rng, value: &str, out: &mut String) {
    let needs_quotes = value.contains([',', ';', '=', '"', '\\']) || value.is_empty();
    if needs_quotes || rng.chance(1, 4) {
        out.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' || rng.chance(1, 20) {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// A well-formed XFCC header and the identity the spec says it yields.
fn xfcc_header(rng: &mut Rng) -> (String, Option<String>) {
    let uris = [
        IDENTITIES[0],
        IDENTITIES[2],
        GATEWAY,
        "https://example.com",
        "spiffe://Bad/x",
        "spiffe://td/ns/a,b",
    ];
    let bys = [
        GATEWAY,
        GATEWAY,
        LOCAL,
        "spiffe://evil/x",
        "spiffe://cluster.local/ns/a;b/sa/c",
    ];
    let mut elements: Vec<XfccElement> = (0..rng.range(1, 4))
        .map(|_| XfccElement {
            by: (0..*rng.pick(&[0, 1, 1, 1, 2]))
                .map(|_| (*rng.pick(&bys)).to_owned())
                .collect(),
            uri: (0..*rng.pick(&[0, 1, 1, 2]))
                .map(|_| (*rng.pick(&uris)).to_owned())
                .collect(),
        })
        .collect();
    if rng.chance(1, 3) {
        // Our own Envoy's element about the gateway, appended last.
        elements.push(XfccElement {
            by: vec![LOCAL.into()],
            uri: vec![GATEWAY.into()],
        });
    }
    if rng.chance(1, 10) {
        let extra = elements[0].clone();
        while elements.len() <= MAX_XFCC_ELEMENTS {
            elements.push(extra.clone());
        }
    }
    let mut header = String::new();
    for (i, e) in elements.iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for b in &e.by {
            pairs.push((*rng.pick(&["By", "by", " BY "]), b.clone()));
        }
        pairs.push(("Hash", "c0ffee".into()));
        for u in &e.uri {
            pairs.push((*rng.pick(&["URI", "uri", "Uri"]), u.clone()));
        }
        pairs.push(("Subject", "CN=a,O=b;c".into()));
        // Pair order within an element does not matter except among URIs.
        if rng.chance(1, 2) {
            pairs.rotate_left(1);
        }
        for (k, (key, value)) in pairs.iter().enumerate() {
            if k > 0 {
                header.push(';');
            }
            header.push_str(key);
            header.push('=');
            xfcc_value(rng, value, &mut header);
        }
    }
    // What `identity_from_gateway(header, GATEWAY, Some(LOCAL))` must return.
    let expected = (|| {
        if elements.len() > MAX_XFCC_ELEMENTS || elements.iter().any(|e| e.by.len() > 1) {
            return None;
        }
        let mut from_end = elements.iter().rev();
        let mut candidate = from_end.next()?;
        if candidate.by.first().map(String::as_str) == Some(LOCAL)
            && candidate.uri.first().map(String::as_str) == Some(GATEWAY)
        {
            candidate = from_end.next()?;
        }
        if candidate.by.first().map(String::as_str) != Some(GATEWAY) {
            return None;
        }
        // An X509-SVID names exactly one URI: an element with several is unusable.
        let [uri] = candidate.uri.as_slice() else {
            return None;
        };
        SpiffeId::parse_uri(uri).ok().map(|id| id.to_string())
    })();
    (header, expected)
}

#[test]
fn xfcc_headers_of_any_shape_never_panic() {
    let gateway = SpiffeId::parse_uri(GATEWAY).unwrap();
    let seeds: Vec<String> = (0..16).map(|i| xfcc_header(&mut Rng::new(i)).0).collect();
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    run_cases("xfcc", 6000, |case| {
        let (header, expected) = xfcc_header(&mut case.rng);
        case.note(&header);
        if header.len() <= MAX_XFCC_BYTES {
            let got = identity_from_gateway(Some(&header), &gateway, Some(LOCAL))
                .ok()
                .map(|id| id.to_string());
            assert_eq!(got, expected, "well-formed header");
        }
        let mutated = text_input(&mut case.rng, &seeds, 2 * MAX_XFCC_BYTES);
        case.note(&mutated);
        for local in [None, Some(LOCAL), Some("")] {
            if let Ok(id) = identity_from_gateway(Some(&mutated), &gateway, local) {
                assert!(mutated.len() <= MAX_XFCC_BYTES);
                assert!(SpiffeId::parse_uri(id.as_str()).is_ok());
            }
        }
    });
}

#[test]
fn xfcc_headers_at_the_size_limit_are_read_and_beyond_it_ignored() {
    let gateway = SpiffeId::parse_uri(GATEWAY).unwrap();
    let element = format!("By={GATEWAY};URI={}", IDENTITIES[0]);
    for (len, readable) in [(MAX_XFCC_BYTES, true), (MAX_XFCC_BYTES + 1, false)] {
        let padding = len - element.len() - ";Subject=".len();
        let header = format!("{element};Subject={}", "x".repeat(padding));
        assert_eq!(header.len(), len);
        let got = identity_from_gateway(Some(&header), &gateway, None);
        assert_eq!(got.is_ok(), readable, "{len}");
    }
    // A header of only separators, quotes or backslashes.
    for unit in [",", ";", "=", "\"", "\\", "\"\\", "By=", "é"] {
        let header = unit.repeat(MAX_XFCC_BYTES / unit.len());
        assert!(identity_from_gateway(Some(&header), &gateway, Some(LOCAL)).is_err());
    }
}

// --- identity evaluation against a reference -------------------------------

const PRINCIPALS: &[&str] = &[
    "*",
    "cluster.local/ns/shop/sa/frontend",
    "spiffe://cluster.local/ns/shop/sa/*",
    "cluster.local/ns/ops/*",
    "*/sa/admin",
    "*admin",
    "spiffe://partner.example.com/*",
    "spiffe://td/workload",
    "spiffe://a.b",
    "spiffe://cl*",
];
const NAMESPACES: &[&str] = &["shop", "ops", "jobs", "*", "sh*", "*s", "ops-*", "o*"];
const TRUST_DOMAINS: &[&str] = &[
    "cluster.local",
    "partner.example.com",
    "*.local",
    "*",
    "clu*",
    "td",
];
const PATHS: &[&str] = &[
    "/api/*",
    "/admin/*",
    "/healthz",
    "*.png",
    "/users/*/orders",
    "/batch/**",
    "/**/admin",
    "/a/**",
    "*",
    "/é/*",
    "/api",
    "/a",
    "/",
    "*/orders",
];
const RULE_METHODS: &[&str] = &["GET", "POST", "delete", "PUT"];
const RULE_HOSTS: &[&str] = &[
    "api.example.com",
    "*.example.com",
    "API.*",
    "*",
    "other",
    "*.internal",
];

/// The lists of one generated rule, by field name.
type GenRule = (bool, BTreeMap<&'static str, Vec<&'static str>>);

fn gen_rule(rng: &mut Rng) -> GenRule {
    let fields: [(&str, &[&str]); 6] = [
        ("principals", PRINCIPALS),
        ("namespaces", NAMESPACES),
        ("trust_domains", TRUST_DOMAINS),
        ("paths", PATHS),
        ("methods", RULE_METHODS),
        ("hosts", RULE_HOSTS),
    ];
    let mut lists = BTreeMap::new();
    for (field, vocab) in fields {
        for name in [field, not_name(field)] {
            if rng.chance(1, 4) {
                let list: Vec<&str> = (0..rng.range(1, 3)).map(|_| *rng.pick(vocab)).collect();
                lists.insert(name, list);
            }
        }
    }
    (rng.chance(1, 2), lists)
}

fn not_name(field: &str) -> &'static str {
    match field {
        "principals" => "not_principals",
        "namespaces" => "not_namespaces",
        "trust_domains" => "not_trust_domains",
        "paths" => "not_paths",
        "methods" => "not_methods",
        _ => "not_hosts",
    }
}

/// `Condition::check` as documented: an absent value never satisfies a list
/// of accepted values and is never excluded.
fn condition<V: Copy>(
    rule: &BTreeMap<&str, Vec<&str>>,
    field: &str,
    value: Option<V>,
    matches: impl Fn(&str, V) -> bool,
) -> bool {
    let any_of = rule.get(field);
    let none_of = rule.get(not_name(field));
    match value {
        None => any_of.is_none(),
        Some(v) => {
            any_of.is_none_or(|l| l.iter().any(|p| matches(p, v)))
                && !none_of.is_some_and(|l| l.iter().any(|p| matches(p, v)))
        }
    }
}

fn reference_rule_matches(
    rule: &BTreeMap<&str, Vec<&str>>,
    peer: &Peer,
    request: &RequestInfo<'_>,
) -> bool {
    let id = peer.identity.as_ref();
    let string = |p: &str, v: &str| StringPattern::parse(p).unwrap().matches(v);
    condition(rule, "principals", id.map(SpiffeId::as_str), |p, v| {
        StringPattern::parse(&normalize_principal_text(p))
            .unwrap()
            .matches(v)
    }) && condition(rule, "namespaces", id.and_then(SpiffeId::namespace), string)
        && condition(
            rule,
            "trust_domains",
            id.map(SpiffeId::trust_domain),
            string,
        )
        && condition(
            rule,
            "paths",
            Some(&*match_path(request.path, PathNormalization::default())),
            |p, v| {
                PathPattern::parse(&escape_non_ascii(p, PathNormalization::default()))
                    .unwrap()
                    .matches(v)
            },
        )
        && condition(rule, "methods", Some(request.method), |p, v| {
            p.eq_ignore_ascii_case(v)
        })
        && condition(rule, "hosts", Some(request.host_without_port()), |p, v| {
            StringPattern::parse(&p.to_ascii_lowercase())
                .unwrap()
                .matches_ignore_case(v)
        })
}

#[test]
fn identity_decisions_match_a_reference_evaluator_without_the_index() {
    let mut compiled = 0;
    run_cases("identity_reference", 1500, |case| {
        let rng = &mut case.rng;
        let rules: Vec<GenRule> = (0..rng.range(1, 12)).map(|_| gen_rule(rng)).collect();
        let default_allow = rng.chance(1, 2);
        let require_mtls = rng.chance(1, 3);
        let config = json!({
            "default_action": if default_allow { "allow" } else { "deny" },
            "transport": {"require_mtls": require_mtls},
            "rules": rules.iter().enumerate().map(|(i, (allow, lists))| {
                let action = if *allow { "allow" } else { "deny" };
                let mut rule = json!({"name": format!("r{i}"), "action": action});
                for (field, list) in lists {
                    rule[*field] = json!(list);
                }
                rule
            }).collect::<Vec<_>>(),
        })
        .to_string();
        case.note(&config);
        // Contradictions (an entry both required and excluded, twin rules
        // with opposite actions) are refused; those cases stop here.
        let Ok(policy) = IdentityPolicy::from_json(config.as_bytes()) else {
            return;
        };
        compiled += 1;
        for _ in 0..12 {
            let (path, method, host) = request_parts(&mut case.rng);
            // The filter hands `evaluate` the canonical path, where every
            // non-ASCII character is escaped, as in every pattern.
            let path = escape_non_ascii(&path, PathNormalization::default()).into_owned();
            let request = RequestInfo {
                path: &path,
                method: &method,
                host: &host,
            };
            let peer = Peer::from_certificate(random_transport(&mut case.rng));
            let matching: Vec<usize> = (0..rules.len())
                .filter(|&i| reference_rule_matches(&rules[i].1, &peer, &request))
                .collect();
            let first_deny = matching.iter().copied().find(|&i| !rules[i].0);
            let first_allow = matching.iter().copied().find(|&i| rules[i].0);
            let want = if require_mtls && !peer.transport.is_mtls() {
                (Reason::MtlsRequired, DecidedBy::Transport)
            } else if peer.unusable.is_some() {
                (Reason::PeerIdentityUnusable, DecidedBy::IdentitySource)
            } else if let Some(i) = first_deny {
                (Reason::DeniedByRule, DecidedBy::Rule(i))
            } else if let Some(i) = first_allow {
                (Reason::AllowedByRule, DecidedBy::Rule(i))
            } else if default_allow {
                (Reason::DefaultAllow, DecidedBy::Default)
            } else {
                (Reason::NoMatchingRule, DecidedBy::Default)
            };
            let got = policy.evaluate(&peer, &request);
            assert_eq!(
                (got.reason, got.decided_by),
                want,
                "request {path:?} {method:?} {host:?} from {:?}",
                peer.identity
            );
        }
    });
    assert!(
        compiled > 500,
        "only {compiled} generated policies compiled"
    );
}

// ===========================================================================
// Masking.

const MASKING_CONFIG: &str = r#"{
  "config_version": "pii-2024-06-01.1",
  "max_body_bytes": 1048576,
  "max_json_depth": 64,
  "on_malformed_json": "mask_as_text",
  "rules": [
    {"name": "credentials", "json_paths": ["**/password", "**/new_password"],
     "json_keys": ["api_key", "client_secret"], "strategy": "remove"},
    {"name": "ssn", "json_paths": ["/users/*/ssn", "/customer/ssn"], "strategy": "hash"},
    {"name": "cards", "directions": ["response"], "json_keys": ["card_number", "pan"],
     "detectors": ["card"], "strategy": "partial", "keep_last": 4},
    {"name": "pii", "directions": ["response"], "not_paths": ["/healthz", "/metrics"],
     "detectors": ["email", "us_ssn", "iban"],
     "except_principals": ["cluster.local/ns/compliance/sa/auditor"]},
    {"name": "secrets", "detectors": ["jwt", "bearer_token", "aws_access_key", "private_key"],
     "patterns": [{"name": "ticket", "regex": "tkt_[A-Za-z0-9]{24}"}]},
    {"name": "auth", "directions": ["request"], "paths": ["/partner/*"],
     "headers": ["authorization", "x-api-key"], "strategy": "redact", "redact_token": "[X]"}
  ]
}"#;

const HASH_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A policy whose every rule applies to every request, one strategy per rule.
fn fuzz_masking_policy(strategies: [&str; 5], max_depth: u64) -> MaskingPolicy {
    let strategy = |i: usize| {
        let s = strategies[i];
        match s {
            "partial" => json!({"strategy": "partial", "keep_last": i}),
            "redact" => json!({"strategy": "redact", "redact_token": "[\"\\x\u{1f600}]"}),
            _ => json!({"strategy": s}),
        }
    };
    let mut rules = vec![
        json!({"name": "paths", "json_paths": [
            "/a/b", "**/password", "/items/*/ssn", "/0", "/*/1/**/token", "/a~1b/c~0d", "/users/**",
            "**/data/*", "/é"]}),
        json!({"name": "keys", "json_keys": ["secret", "API_KEY", "pässwort", "İd", "card_number"]}),
        json!({"name": "detectors", "detectors": [
            "card", "email", "us_ssn", "iban", "jwt", "bearer_token", "aws_access_key", "private_key"]}),
        json!({"name": "patterns", "patterns": [
            {"name": "ticket", "regex": "tkt_[A-Za-z0-9]{4,}"},
            {"name": "accents", "regex": "é+|ß"},
            {"name": "any-digit-run", "regex": "[0-9]{3}"}]}),
        json!({"name": "headers", "headers": ["authorization", "cookie", "x-api-key"]}),
    ];
    for (i, rule) in rules.iter_mut().enumerate() {
        for (k, v) in strategy(i).as_object().unwrap() {
            rule[k] = v.clone();
        }
    }
    let config = json!({"max_json_depth": max_depth, "rules": rules}).to_string();
    MaskingPolicy::from_json(config.as_bytes(), Some(HASH_KEY)).expect("the fuzz policy compiles")
}

fn fuzz_masking_policies() -> Vec<MaskingPolicy> {
    vec![
        fuzz_masking_policy(["redact", "partial", "hash", "remove", "redact"], 64),
        fuzz_masking_policy(["remove", "remove", "remove", "remove", "remove"], 128),
        fuzz_masking_policy(["partial", "hash", "partial", "redact", "partial"], 128),
        fuzz_masking_policy(["hash", "redact", "remove", "partial", "hash"], 3),
    ]
}

fn select_all(policy: &MaskingPolicy) -> meshguard_core::masking::Selection {
    let request = RequestInfo {
        path: "/any",
        method: "POST",
        host: "svc",
    };
    let selection = policy.select(Direction::Request, None, &request);
    assert_eq!(selection.rules().count(), policy.rule_count());
    selection
}

#[test]
fn masking_policies_from_mutated_json_never_panic() {
    let mut compiled = 0;
    let seeds: &[&[u8]] = &[
        MASKING_CONFIG.as_bytes(),
        br#"{"rules": [{"name": "k", "json_keys": ["a"], "strategy": "hash"}], "hash_key_env": "K"}"#,
        br#"{"rules": [{"name": "p", "patterns": [{"name": "x", "regex": "a+"}]}]}"#,
    ];
    run_cases("masking_policy_json", 2000, |case| {
        let bytes = bytes_input(&mut case.rng, seeds, 8 * 1024);
        case.note(&bytes);
        let key_len = *case.rng.pick(&[0, 15, 16, 64]);
        let key = vec![b'k'; key_len];
        let with_key = MaskingPolicy::from_json(&bytes, (key_len > 0).then_some(&key[..]));
        // Whatever variable the config names holds the key (an empty one is unset).
        let with_env = MaskingPolicy::from_json_with_env(&bytes, |_| Some("k".repeat(key_len)));
        assert_eq!(
            with_key.as_ref().err().map(ToString::to_string),
            with_env.as_ref().err().map(ToString::to_string)
        );
        match with_key {
            Ok(policy) => {
                compiled += 1;
                let (path, method, host) = request_parts(&mut case.rng);
                let request = RequestInfo {
                    path: &path,
                    method: &method,
                    host: &host,
                };
                let caller = SpiffeId::parse_uri(IDENTITIES[case.rng.below(IDENTITIES.len())]).ok();
                for direction in [Direction::Request, Direction::Response] {
                    let selection = policy.select(direction, caller.as_ref(), &request);
                    let body = json_body(&mut case.rng);
                    for kind in [
                        BodyKind::Json,
                        BodyKind::Text,
                        BodyKind::Form,
                        BodyKind::Other,
                    ] {
                        let _ = policy.mask_body(&selection, kind, &body);
                    }
                    let _ = policy.mask_headers(&selection, &random_headers(&mut case.rng));
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
    assert!(compiled > 100, "only {compiled} mutated configs compiled");
}

#[test]
fn json_bodies_of_any_shape_are_masked_to_valid_json() {
    let policies = fuzz_masking_policies();
    let selections: Vec<_> = policies.iter().map(select_all).collect();
    let mut masked = 0;
    run_cases("mask_json", 5000, |case| {
        let body = json_body(&mut case.rng);
        case.note(&body);
        let k = case.rng.below(policies.len());
        let (policy, selection) = (&policies[k], &selections[k]);
        let result = policy.mask_body(selection, BodyKind::Json, &body);
        // Whatever serde_json accepts (no BOM, no lone surrogate), the walker
        // accepts too, unless it is nested deeper than the policy allows.
        if serde_json::from_slice::<Value>(&body).is_ok() {
            let too_deep = text_depth(&body) > policy.max_json_depth();
            match &result {
                Ok(_) => assert!(!too_deep, "accepted a body nested too deeply"),
                Err(MaskError::TooDeep { .. }) => assert!(too_deep, "TooDeep for a shallow body"),
                Err(e) => panic!("refused JSON that serde_json accepts: {e}"),
            }
        }
        match result {
            Ok(m) => {
                if let Some(out) = &m.body {
                    masked += 1;
                    assert!(!m.hits.is_empty(), "a changed body with no hits");
                    let out_text = std::str::from_utf8(out).expect("masked JSON is UTF-8");
                    let out_json = out_text.strip_prefix('\u{feff}').unwrap_or(out_text);
                    if serde_json::from_slice::<Value>(&body).is_ok() {
                        serde_json::from_str::<Value>(out_json).unwrap_or_else(|e| {
                            panic!("masked JSON does not parse: {e}: {out_text}")
                        });
                    }
                    // The output is valid for the walker itself.
                    policy
                        .mask_body(selection, BodyKind::Json, out)
                        .unwrap_or_else(|e| panic!("masked output refused: {e}: {out_text}"));
                }
                for hit in &m.hits {
                    assert!(hit.rule < policy.rule_count() && hit.count > 0);
                }
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                let _ = e.as_code();
            }
        }
    });
    assert!(masked > 1000, "only {masked} bodies were changed");
}

#[test]
fn text_and_form_bodies_of_any_shape_are_masked_without_panicking() {
    let policies = fuzz_masking_policies();
    let selections: Vec<_> = policies.iter().map(select_all).collect();
    let form_seeds: &[&[u8]] = &[
        b"password=hunter2&user=a%40b.io&card=4111+1111+1111+1111",
        b"a=1&&b&=c&%zz=%4&secret=x%2By&API_KEY=%E2%82%AC",
        b"p%C3%A4sswort=1&pa%73sword=2&items=tkt_ABCDabcd1234",
    ];
    run_cases("mask_text_form", 4000, |case| {
        let k = case.rng.below(policies.len());
        let (policy, selection) = (&policies[k], &selections[k]);
        let text = if case.rng.chance(1, 2) {
            case.rng.text(12, TEXT_PIECES).into_bytes()
        } else {
            bytes_input(&mut case.rng, form_seeds, 8 * 1024)
        };
        case.note(&text);
        match policy.mask_body(selection, BodyKind::Text, &text) {
            Ok(m) => {
                // UTF-8, or NUL-interleaved text read as UTF-16.
                assert!(std::str::from_utf8(&text).is_ok() || text.contains(&0));
                if m.body.is_some() {
                    assert!(!m.hits.is_empty());
                }
            }
            // Bytes that are not UTF-8, or NUL-interleaved bytes that are
            // not UTF-16 either (never scanned as UTF-8).
            Err(MaskError::Charset) => assert!(text.contains(&0)),
            Err(e) => {
                assert_eq!(e, MaskError::NotUtf8);
                assert!(std::str::from_utf8(&text).is_err());
            }
        }
        // Only a name or value that is not UTF-8 fails a form (on_not_utf8: reject).
        let m = match policy.mask_body(selection, BodyKind::Form, &text) {
            Ok(m) => m,
            Err(MaskError::Charset) => {
                assert!(text.contains(&0));
                return;
            }
            Err(e) => {
                assert_eq!(e, MaskError::NotUtf8);
                return;
            }
        };
        if let Some(out) = &m.body {
            assert!(!m.hits.is_empty());
            // Pairs are kept or re-encoded, never merged: no new `&`.
            assert!(
                out.iter().filter(|&&c| c == b'&').count()
                    <= text.iter().filter(|&&c| c == b'&').count()
            );
        }
        let other = policy.mask_body(selection, BodyKind::Other, &text).unwrap();
        assert_eq!(other.body, None);
    });
}

fn random_headers(rng: &mut Rng) -> Vec<(String, String)> {
    let names = [
        "authorization",
        "Authorization",
        "COOKIE",
        "cookie",
        "x-api-key",
        "X-Api-Key",
        "content-type",
        "",
        "authorizatioN ",
        "ä",
    ];
    (0..rng.below(8))
        .map(|_| {
            let name = if rng.chance(1, 8) {
                text_input(rng, &names, 32)
            } else {
                (*rng.pick(&names)).to_owned()
            };
            let value = rng.text(3, TEXT_PIECES);
            (name, value)
        })
        .collect()
}

#[test]
fn header_lists_of_any_shape_are_masked_without_panicking() {
    let policies = fuzz_masking_policies();
    let selections: Vec<_> = policies.iter().map(select_all).collect();
    let masked_names = ["authorization", "cookie", "x-api-key"];
    run_cases("mask_headers", 4000, |case| {
        let headers = random_headers(&mut case.rng);
        case.note(format!("{headers:?}"));
        let k = case.rng.below(policies.len());
        let edits = policies[k].mask_headers(&selections[k], &headers);
        let mut seen = Vec::new();
        for edit in &edits.edits {
            let name = edit.name();
            assert!(masked_names.contains(&name), "{name:?}");
            assert!(!seen.contains(&name), "two edits for {name:?}");
            seen.push(name);
            if let HeaderEdit::Replace { value, .. } = edit {
                let _ = value.len();
            }
            let _ = format!("{edit:?}");
        }
        let want: u32 = headers
            .iter()
            .filter(|(n, _)| masked_names.contains(&n.to_ascii_lowercase().as_str()))
            .count() as u32;
        let got: u32 = edits.hits.iter().map(|h| h.count).sum();
        assert_eq!(got, want);
    });
}

#[test]
fn content_types_of_any_shape_have_a_body_kind() {
    let seeds = [
        "application/json",
        "application/problem+json; charset=utf-8",
        "TEXT/plain",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        " / ",
        "a/é+json",
        "+json",
    ];
    run_cases("body_kind", 5000, |case| {
        let text = text_input(&mut case.rng, &seeds, 256);
        case.note(&text);
        let kind = body_kind(Some(&text));
        if kind != BodyKind::Other {
            assert!(text.contains('/'));
        }
        let _ = kind.as_str();
    });
    assert_eq!(body_kind(None), BodyKind::Other);
}

#[test]
fn detectors_report_ordered_in_bounds_spans_on_any_text() {
    run_cases("detectors", 3000, |case| {
        let text = if case.rng.chance(1, 2) {
            case.rng.text(16, TEXT_PIECES)
        } else {
            let seeds: Vec<&str> = TEXT_PIECES.to_vec();
            text_input(&mut case.rng, &seeds, 8 * 1024)
        };
        case.note(&text);
        for detector in Detector::ALL {
            let spans = detector.find_all(&text);
            let mut last_start = 0;
            for &(start, end) in &spans {
                assert!(
                    start < end && end <= text.len(),
                    "{}: {start}..{end}",
                    detector.as_str()
                );
                assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
                assert!(
                    start >= last_start,
                    "{} spans out of order: {spans:?}",
                    detector.as_str()
                );
                last_start = start;
            }
        }
    });
}

#[test]
fn json_nested_far_beyond_the_limit_is_refused_without_recursing() {
    on_small_stack("mask_json deep", 256, || {
        let policies = fuzz_masking_policies();
        for policy in &policies {
            let selection = select_all(policy);
            for shape in 0..4 {
                for depth in [
                    policy.max_json_depth(),
                    policy.max_json_depth() + 1,
                    5_000,
                    100_000,
                ] {
                    let body = deep_json(depth, shape);
                    let result = policy.mask_body(&selection, BodyKind::Json, &body);
                    if depth > policy.max_json_depth() {
                        assert_eq!(
                            result,
                            Err(MaskError::TooDeep {
                                max: policy.max_json_depth()
                            }),
                            "depth {depth} shape {shape}"
                        );
                    } else if shape == 3 {
                        assert!(result.is_ok(), "depth {depth}: {result:?}");
                    }
                }
            }
        }
    });
}

// ===========================================================================
// Audit.

const AUDIT_CONFIG: &str = r#"{
  "config_version": "audit-body-2024-06-01.1",
  "key_id": "2024-06",
  "max_body_bytes": 262144,
  "commands": [
    {"name": "graphql", "paths": ["/graphql"], "methods": ["POST"],
     "parts": ["method", "path", {"json_pointer": "/query"}, {"json_pointer": "/variables"}]},
    {"name": "order-writes", "paths": ["/api/orders", "/api/orders/*"], "methods": ["POST", "PUT", "PATCH"],
     "parts": ["method", "path", "query", {"json_pointer": ""}]},
    {"name": "uploads", "paths": ["/files/*"], "methods": ["PUT"], "parts": ["method", "path", "body"]},
    {"name": "mixed", "paths": ["/api/*"], "parts": ["body", "query", {"json_pointer": "/a~1b/0"}, "method"]},
    {"name": "admin", "paths": ["/admin/**"], "parts": ["method", "path", "query"]}
  ],
  "log_records": true,
  "collector": {"cluster": "outbound|8080||audit-collector", "path": "/v1/audit-records"},
  "fail_closed": false
}"#;

#[test]
fn audit_policies_from_mutated_json_never_panic() {
    let mut compiled = 0;
    let seeds: &[&[u8]] = &[
        AUDIT_CONFIG.as_bytes(),
        b"{}",
        br#"{"commands": [{"name": "x", "parts": [{"json_pointer": "/a/~0/~1"}, "body"]}], "log_records": false}"#,
    ];
    run_cases("audit_policy_json", 2500, |case| {
        let bytes = bytes_input(&mut case.rng, seeds, 8 * 1024);
        case.note(&bytes);
        match AuditPolicy::from_json(&bytes) {
            Ok(policy) => {
                compiled += 1;
                let (path, method, host) = request_parts(&mut case.rng);
                let body = json_body(&mut case.rng);
                let _ = policy.hash_request(&method, &path, &host, &body);
                let request = RequestInfo {
                    path: &path,
                    method: &method,
                    host: &host,
                };
                let command = policy.command_for(&request);
                assert!(command.index().is_none_or(|i| i < policy.command_count()));
                let _ = policy.command_name(command);
                let _ = policy.warnings();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
    assert!(compiled > 100, "only {compiled} mutated configs compiled");
}

/// `hasher` fed `body` in random chunks, as the filter does.
fn chunked_hash(
    rng: &mut Rng,
    policy: &AuditPolicy,
    command: meshguard_core::audit::CommandRef,
    request: &RequestInfo<'_>,
    body: &[u8],
) -> Result<[u8; 32], HashError> {
    let mut hasher = policy.hasher(command, request);
    if policy.needs_body(command) {
        let mut rest = body;
        loop {
            let n = match rng.below(4) {
                0 => 0,
                1 => 1,
                2 => rng.below(16),
                _ => rng.below(rest.len() + 1),
            }
            .min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            if let Err(e) = hasher.update_body(chunk) {
                // Later calls and `finish` report the same error.
                assert_eq!(hasher.update_body(b"").unwrap_err(), e);
                return hasher.finish();
            }
            rest = tail;
            if rest.is_empty() && rng.chance(3, 4) {
                break;
            }
        }
    }
    hasher.finish()
}

#[test]
fn command_hashes_do_not_depend_on_how_the_body_is_chunked() {
    let big = AuditPolicy::from_json(AUDIT_CONFIG.as_bytes()).unwrap();
    let small_config = AUDIT_CONFIG.replace("262144", "64");
    let small = AuditPolicy::from_json(small_config.as_bytes()).unwrap();
    run_cases("audit_chunking", 2500, |case| {
        let policy = if case.rng.chance(1, 2) { &big } else { &small };
        let (path, method, host) = request_parts(&mut case.rng);
        let path = if case.rng.chance(1, 2) {
            (*case.rng.pick(&[
                "/graphql",
                "/api/orders",
                "/api/orders/7?b=2&a=1",
                "/files/x",
                "/api/x?q",
                "/admin/../api/orders",
                "//api/./orders/%37",
            ]))
            .to_owned()
        } else {
            path
        };
        let method = if case.rng.chance(1, 2) {
            (*case.rng.pick(&["POST", "put", "PATCH"])).to_owned()
        } else {
            method
        };
        let request = RequestInfo {
            path: &path,
            method: &method,
            host: &host,
        };
        let body = json_body(&mut case.rng);
        case.note(&body);
        let command = policy.command_for(&request);
        assert!(!policy.streams_body(command) || policy.needs_body(command));
        let whole = policy.command_hash(command, &request, &body);
        let chunked = chunked_hash(&mut case.rng, policy, command, &request, &body);
        assert_eq!(chunked, whole, "command {}", policy.command_name(command));
        assert_eq!(policy.hash_request(&method, &path, &host, &body), whole);
        let parts = policy.command_parts(command);
        let has_pointer = parts
            .iter()
            .any(|p| matches!(p, meshguard_core::audit::Part::JsonPointer(_)));
        match &whole {
            Err(HashError::TooLarge { limit }) => {
                assert!(has_pointer && body.len() > *limit);
            }
            Err(HashError::NotJson(_)) => {
                assert!(has_pointer && parse_strict_json(&body).is_err());
            }
            Ok(_) => {
                if has_pointer {
                    assert!(body.len() <= policy.max_body_bytes());
                }
            }
        }
    });
}

#[test]
fn bodies_at_the_buffer_limit_are_hashed_and_beyond_it_refused() {
    let config = AUDIT_CONFIG.replace("262144", "64");
    let policy = AuditPolicy::from_json(config.as_bytes()).unwrap();
    let request = RequestInfo {
        path: "/api/orders",
        method: "POST",
        host: "h",
    };
    let command = policy.command_for(&request);
    assert_eq!(policy.command_name(command), "order-writes");
    for len in [0, 1, 63, 64, 65, 1000] {
        let body = if len >= 2 {
            format!("[{}]", " ".repeat(len - 2))
        } else {
            " ".repeat(len)
        };
        let result = policy.command_hash(command, &request, body.as_bytes());
        match len {
            0 | 1 => assert!(matches!(result, Err(HashError::NotJson(_))), "{len}"),
            65.. => assert_eq!(result, Err(HashError::TooLarge { limit: 64 }), "{len}"),
            _ => assert!(result.is_ok(), "{len}: {result:?}"),
        }
    }
}

#[test]
fn deeply_nested_json_bodies_are_refused_without_recursing() {
    on_small_stack("audit deep", 256, || {
        let policy = AuditPolicy::from_json(AUDIT_CONFIG.as_bytes()).unwrap();
        for shape in 0..4 {
            for depth in [127, 128, 129, 5_000, 100_000] {
                let body = deep_json(depth, shape);
                let result = policy.hash_request("POST", "/api/orders", "h", &body);
                if shape == 3 && depth < 128 {
                    assert!(result.is_ok(), "{depth}: {result:?}");
                } else {
                    assert!(result.is_err(), "{depth} {shape}");
                }
                assert!(parse_strict_json(&body).is_ok() == result.is_ok());
            }
        }
    });
}

#[test]
fn canonical_paths_and_queries_of_any_target_are_idempotent() {
    let seeds = [
        "/a/b?x=1#f",
        "/v1//items/./9/../%7e%41%2f%2F%zz%?b=2&a=1&a&=&a=%41+%2B",
        "*",
        "/%2e%2E/./..//",
        "?&&=&==",
        "/é/ü?é=ü",
        "/a%00b/%C3%A9",
    ];
    run_cases("canonical_target", 6000, |case| {
        let target = text_input(&mut case.rng, &seeds, 2048);
        case.note(&target);
        let (path, query) = split_target(&target);
        assert!(target.starts_with(path));
        assert!(!path.contains(['?', '#']) && !query.contains('#'));
        let canonical = canonical_path(&target);
        assert!(canonical.is_ascii(), "{canonical}");
        if canonical != "*" {
            assert!(canonical.starts_with('/'), "{canonical}");
            assert!(!canonical.contains("//"), "{canonical}");
            assert!(
                !canonical.split('/').any(|s| s == "." || s == ".."),
                "{canonical}"
            );
        }
        assert_eq!(canonical_path(&canonical), canonical);
        let cq = canonical_query(&target);
        assert!(cq.is_ascii());
        assert_eq!(canonical_query(&format!("?{cq}")), cq);
        assert_eq!(
            canonical_method(&canonical_method(&target)),
            canonical_method(&target)
        );
    });
}

fn random_stamp(rng: &mut Rng) -> AuditStamp {
    let token = |rng: &mut Rng, max: usize| {
        let mut s: String = (0..rng.range(1, max))
            .map(|_| char::from(rng.range(0x21, 0x7e) as u8))
            .filter(|c| !matches!(c, ';' | '=' | ','))
            .collect();
        if s.is_empty() || s == "-" {
            s.push('x');
        }
        s
    };
    let mut digest = [0u8; 32];
    for b in &mut digest {
        *b = rng.next_u64() as u8;
    }
    let longest_kid = "k".repeat(64);
    AuditStamp {
        key_id: (*rng.pick(&["default", "2024-06", "k.1_a-b", &longest_kid])).to_owned(),
        id: token(rng, 80),
        ts_ms: if rng.chance(1, 4) {
            u64::MAX
        } else {
            rng.next_u64() >> rng.below(64)
        },
        peer: rng.chance(1, 2).then(|| token(rng, 100)),
        config_fingerprint: rng.chance(1, 2).then(|| token(rng, 64)),
        command_sha256: digest,
    }
}

#[test]
fn audit_headers_of_any_shape_verify_only_as_signed() {
    const KEY: &[u8] = b"meshguard-example-key-0123456789";
    run_cases("audit_header", 5000, |case| {
        let stamp = random_stamp(&mut case.rng);
        let header = stamp
            .sign(KEY)
            .expect("a random stamp of valid tokens signs");
        case.note(&header);
        assert_eq!(verify_header(&header, KEY).as_ref(), Ok(&stamp));
        assert!(verify_header(&header, b"another key").is_err());
        let mutated = text_input(&mut case.rng, &[header.as_str()], 2 * MAX_HEADER_LEN);
        case.note(&mutated);
        match verify_header(&mutated, KEY) {
            // Only surrounding spaces and tabs may differ from what was signed.
            Ok(got) => {
                assert_eq!(got, stamp);
                assert_eq!(mutated.trim_matches([' ', '\t']), header);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let _ = parse_header(&mutated);
    });
    for len in [MAX_HEADER_LEN, MAX_HEADER_LEN + 1] {
        let value = format!("v=1;{}", "x".repeat(len - 4));
        assert!(verify_header(&value, KEY).is_err());
    }
}

#[test]
fn audit_keys_of_any_text_decode_without_panicking() {
    let seeds = [
        "bWVzaGd1YXJkLWV4YW1wbGUta2V5LTAxMjM0NTY3ODk=",
        "bWVzaGd1YXJkLWV4YW1wbGUta2V5LTAxMjM0NTY3ODk",
        "  bWVz-_d1YXJkLWV4YW1wbGUta2V5LTAxMjM0NTY3ODk=\n",
        "",
    ];
    run_cases("decode_key", 3000, |case| {
        let text = text_input(&mut case.rng, &seeds, 4096);
        case.note(&text);
        if let Ok(key) = decode_key(&text) {
            assert!((32..=1024).contains(&key.len()));
        }
    });
    let engine = base64::engine::general_purpose::STANDARD;
    for (len, ok) in [
        (0, false),
        (1, false),
        (31, false),
        (32, true),
        (1024, true),
        (1025, false),
    ] {
        let text = engine.encode(vec![0xa5; len]);
        assert_eq!(decode_key(&text).is_ok(), ok, "{len} bytes");
    }
}

fn record_fields(rng: &mut Rng, i: u64) -> RecordFields {
    let path = format!("/v1//items/./{i}?token=secret");
    let request = RequestInfo {
        path: &path,
        method: "post",
        host: "API.example.com:8443",
    };
    let mut f = RecordFields::new(
        format!("c-{i}"),
        1_718_000_000_000 + i,
        &request,
        "default",
        [7; 32],
    );
    f.peer = rng.chance(1, 2).then(|| IDENTITIES[0].into());
    f.status = Some(200);
    f.duration_ms = rng.chance(1, 2).then_some(i);
    f.decisions.insert("identity".into(), json!("allowed"));
    if rng.chance(1, 3) {
        f.decisions
            .insert("nested".into(), json!({"é": ["\"\\\u{0}", null, 1]}));
    }
    f.config_fingerprint = rng.chance(1, 2).then(|| "c0ffee".into());
    f
}

/// A log of two interleaved chains of sealed records, with noise lines.
fn record_log(rng: &mut Rng, key: &[u8]) -> (String, Vec<Record>) {
    let mut chains = [Chain::new("vm-a"), Chain::new("vm-b")];
    let mut records = Vec::new();
    let mut log = String::from("[info] starting\n");
    for i in 0..rng.range(1, 6) as u64 {
        let chain = &mut chains[rng.below(2)];
        let record = chain.seal(record_fields(rng, i), key, "k1").unwrap();
        log.push_str("[info][wasm] ");
        log.push_str(&record.to_line());
        log.push_str(if rng.chance(1, 4) { "\r\n" } else { "\n" });
        if rng.chance(1, 3) {
            log.push_str("[debug] unrelated\n");
        }
        records.push(record);
    }
    (log, records)
}

#[test]
fn record_logs_of_any_shape_verify_only_when_unmodified() {
    const KEY: &[u8] = b"meshguard-example-key-0123456789";
    let keys = HashMap::from([("k1".to_string(), KEY.to_vec())]);
    run_cases("verify_records", 1200, |case| {
        let (log, records) = record_log(&mut case.rng, KEY);
        case.note(&log);
        let report = verify_records(&log, &keys);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.record_count(), records.len());

        // A changed MAC never verifies.
        let victim = &records[case.rng.below(records.len())];
        let original = victim.mac.as_bytes();
        let mac = loop {
            let candidate = mutate(&mut case.rng, original, 64);
            if candidate != original {
                break candidate;
            }
        };
        let mac = String::from_utf8_lossy(&mac).into_owned();
        let mut json_mac = String::new();
        json_string(&mut case.rng, &mac, &mut json_mac);
        let tampered = log.replacen(
            &format!("\"mac\":\"{}\"", victim.mac),
            &format!("\"mac\":{json_mac}"),
            1,
        );
        case.note(&tampered);
        if mac != victim.mac {
            assert!(
                !verify_records(&tampered, &keys).is_ok(),
                "a changed MAC verified"
            );
        }

        // A repeated key, before or after the signed one, never verifies
        // (parsers disagree on which of the two counts).
        let starts: Vec<usize> = log.match_indices(RECORD_PREFIX).map(|(i, _)| i).collect();
        let at = starts[case.rng.below(starts.len())] + RECORD_PREFIX.len() + 1;
        let key = case
            .rng
            .piece(&["status", "chain", "seq", "mac", "kid", "decisions", "v"]);
        let decoy = case.rng.piece(&["null", "599", "\"x\"", "{}"]);
        let member = format!("\"{key}\":{decoy}");
        let forged = if case.rng.chance(1, 2) {
            format!("{}{member},{}", &log[..at], &log[at..])
        } else {
            let end = at + log[at..].find('\n').unwrap();
            let close = log[..end].rfind('}').unwrap();
            format!("{},{member}{}", &log[..close], &log[close..])
        };
        case.note(&forged);
        assert!(
            !verify_records(&forged, &keys).is_ok(),
            "a repeated {key:?} verified"
        );

        // Any edit of the text: whatever verifies is what was sealed.
        let mutated = text_input(&mut case.rng, &[log.as_str()], 64 * 1024);
        case.note(&mutated);
        let report = verify_records(&mutated, &keys);
        let _ = report.to_string();
        if report.is_ok() {
            // Foreign lines (the marker without a record after it) are not
            // records: they are reported, never verified.
            let foreign: Vec<usize> = report.foreign.iter().map(|p| p.line).collect();
            for (n, line) in mutated.lines().enumerate() {
                if foreign.contains(&(n + 1)) {
                    continue;
                }
                let json = match line.find(RECORD_PREFIX) {
                    Some(start) => line[start + RECORD_PREFIX.len()..].trim_end(),
                    None => line.trim(),
                };
                let Ok(value) = serde_json::from_str::<Value>(json) else {
                    continue;
                };
                if !value.get("chain").is_some_and(Value::is_string) {
                    continue;
                }
                let original = records
                    .iter()
                    .find(|r| r.chain == value["chain"] && Some(r.seq) == value["seq"].as_u64())
                    .expect("a verified record was sealed");
                assert_eq!(value, original.to_value(true), "a modified record verified");
            }
        }
    });
}

#[test]
fn records_with_decisions_nested_too_deeply_are_refused_not_overflowed() {
    on_small_stack("records deep", 256, || {
        const KEY: &[u8] = b"meshguard-example-key-0123456789";
        let request = RequestInfo {
            path: "/",
            method: "GET",
            host: "h",
        };
        for depth in [
            100,
            MAX_DEPTH - 2,
            MAX_DEPTH - 1,
            MAX_DEPTH,
            MAX_DEPTH + 1,
            MAX_DEPTH + 10,
        ] {
            let mut chain = Chain::new("deep");
            let mut fields = RecordFields::new("id", 0, &request, "default", [0; 32]);
            fields.decisions.insert("d".into(), nested_value(depth));
            let result = chain.seal(fields, KEY, "k1");
            // The record itself adds two levels (the record, `decisions`).
            if depth + 2 > MAX_DEPTH {
                assert_eq!(
                    result.as_ref().err(),
                    Some(&RecordError::TooDeep),
                    "{depth}"
                );
                assert_eq!(
                    chain.next_seq(),
                    0,
                    "a failed seal leaves the chain as it was"
                );
            } else {
                let record = result.unwrap();
                // serde_json, which reads records back, stops at 128 levels.
                if depth + 2 < 128 {
                    let report =
                        verify_records(&record.to_line(), &meshguard_core::audit::AnyKid(KEY));
                    assert!(report.is_ok(), "{depth}: {report}");
                }
            }
        }
        // Record lines nested far too deeply are unreadable, not fatal.
        for shape in 0..4 {
            let mut line = RECORD_PREFIX.as_bytes().to_vec();
            line.extend(deep_json(100_000, shape));
            let text = String::from_utf8(line).unwrap();
            let report = verify_records(&text, &meshguard_core::audit::AnyKid(KEY));
            assert!(!report.is_ok());
        }
    });
}

/// `limit` entries compile, `limit + 1` are refused: one row per bounded list or name.
#[test]
fn lists_and_names_at_their_limit_compile_and_one_more_is_refused() {
    use meshguard_core::audit::policy::{MAX_COMMANDS, MAX_PARTS};
    use meshguard_core::config::MAX_NAME_LEN;
    use meshguard_core::masking::{
        MAX_HEADERS, MAX_JSON_KEYS, MAX_JSON_PATHS, MAX_PATTERNS, MAX_RULES,
    };
    use meshguard_core::scope::MAX_LIST_ENTRIES;

    type Compile = Box<dyn Fn(usize) -> Result<(), ConfigError>>;
    let masking = |rules: Value| {
        MaskingPolicy::from_json(
            json!({ "rules": rules }).to_string().as_bytes(),
            Some(HASH_KEY),
        )
        .map(drop)
    };
    let masking_rule = move |key: &'static str, list: fn(usize) -> Value| -> Compile {
        Box::new(move |n| masking(json!([{"name": "r", key: list(n)}])))
    };
    let audit = |config: Value| AuditPolicy::from_json(config.to_string().as_bytes()).map(drop);
    let identity =
        |config: Value| IdentityPolicy::from_json(config.to_string().as_bytes()).map(drop);
    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }
    let rows: Vec<(&str, usize, Compile)> = vec![
        (
            "masking rules",
            MAX_RULES,
            Box::new(move |n| {
                masking(
                    (0..n)
                        .map(|i| json!({"name": format!("r{i}"), "json_keys": ["k"]}))
                        .collect(),
                )
            }),
        ),
        (
            "masking json_paths",
            MAX_JSON_PATHS,
            masking_rule("json_paths", |n| json!(names("/p", n))),
        ),
        (
            "masking json_keys",
            MAX_JSON_KEYS,
            masking_rule("json_keys", |n| json!(names("k", n))),
        ),
        (
            "masking patterns",
            MAX_PATTERNS,
            masking_rule("patterns", |n| {
                (0..n)
                    .map(|i| json!({"name": format!("p{i}"), "regex": format!("tok{i}x")}))
                    .collect()
            }),
        ),
        (
            "masking headers",
            MAX_HEADERS,
            masking_rule("headers", |n| json!(names("x-h", n))),
        ),
        (
            "masking rule name",
            MAX_NAME_LEN,
            Box::new(move |n| masking(json!([{"name": "n".repeat(n), "json_keys": ["k"]}]))),
        ),
        (
            "audit commands",
            MAX_COMMANDS,
            Box::new(move |n| {
                let commands: Vec<Value> = (0..n)
                    .map(|i| {
                        let (name, path) = (format!("c{i}"), format!("/c{i}"));
                        json!({"name": name, "paths": [path], "parts": ["method"]})
                    })
                    .collect();
                audit(json!({ "commands": commands }))
            }),
        ),
        (
            "audit parts",
            MAX_PARTS,
            Box::new(move |n| {
                let parts: Vec<Value> = (0..n)
                    .map(|i| json!({"json_pointer": format!("/p{i}")}))
                    .collect();
                audit(json!({"commands": [{"name": "c", "parts": parts}]}))
            }),
        ),
        (
            "identity scope list",
            MAX_LIST_ENTRIES,
            Box::new(move |n| {
                identity(
                    json!({"rules": [{"name": "r", "action": "allow", "paths": names("/p", n)}]}),
                )
            }),
        ),
        (
            "identity trusted gateways",
            MAX_LIST_ENTRIES,
            Box::new(move |n| {
                identity(
                    json!({"identity": {"trusted_gateways": names("cluster.local/ns/gw/sa/g", n)}}),
                )
            }),
        ),
        (
            "config_version",
            MAX_NAME_LEN,
            Box::new(move |n| identity(json!({ "config_version": "v".repeat(n) }))),
        ),
    ];
    for (what, limit, compile) in rows {
        if let Err(e) = compile(limit) {
            panic!("{what}: {limit} should compile: {e}");
        }
        assert!(
            compile(limit + 1).is_err(),
            "{what}: {} should be refused",
            limit + 1
        );
    }
}

// ===========================================================================
// Integrity, canonical JSON, config parsing.

const INTEGRITY_CONFIG: &str = r#"{
  "config_version": "v1",
  "rules": [{"name": "a", "action": "allow", "paths": ["/x"]}],
  "integrity": {
    "on_drift": "quarantine",
    "health_paths": ["/healthz", "/ready*", "/**/live"],
    "quarantine_status": 503,
    "source_of_truth": {"cluster": "intended", "path": "/v1/intended", "poll_interval_ms": 10000, "timeout_ms": 2000}
  }
}"#;

fn signing_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42; 32])
}

#[test]
fn integrity_loads_of_mutated_configs_never_panic() {
    let env_none = IntegrityEnv::default();
    let env_signed = IntegrityEnv {
        trusted_keys: vec![("release".into(), signing_key().verifying_key())],
        require_signature: true,
        ..IntegrityEnv::default()
    };
    let env_intended = IntegrityEnv {
        intended_version: Some("v1".into()),
        on_drift: Some(meshguard_core::integrity::OnDrift::Reject),
        ..IntegrityEnv::default()
    };
    let release = meshguard_core::integrity::Release {
        filter: "identity".into(),
        workloads: vec!["*".into()],
        serial: 1,
        not_before: None,
        not_after: None,
        services: None,
    };
    let signed = meshguard_core::integrity::sign_release(
        INTEGRITY_CONFIG.as_bytes(),
        &release,
        "release",
        &signing_key(),
    )
    .unwrap();
    let signed_fingerprint = fingerprint(&signed).unwrap();
    let seeds: &[&[u8]] = &[INTEGRITY_CONFIG.as_bytes(), &signed, b"{}"];
    run_cases("integrity_load", 2500, |case| {
        let bytes = bytes_input(&mut case.rng, seeds, 8 * 1024);
        case.note(&bytes);
        let fp = fingerprint(&bytes);
        for env in [&env_none, &env_signed, &env_intended] {
            match load(&bytes, env) {
                Ok(loaded) => {
                    assert_eq!(Ok(&loaded.fingerprint), fp.as_ref());
                    let _ = loaded.settings.is_health_path("/ready/x");
                    serde_json::from_slice::<Value>(&loaded.filter_config)
                        .expect("the filter config is JSON");
                    if env.require_signature {
                        // A signed config loads only as the very config that was signed.
                        assert!(matches!(loaded.signature, SignatureStatus::Verified { .. }));
                        assert_eq!(loaded.fingerprint, signed_fingerprint);
                    }
                }
                Err(e) => {
                    let _ = (e.to_string(), e.result_label());
                    if matches!(e, LoadError::Invalid(_)) && env.require_signature {
                        assert!(fp.is_err() || load(&bytes, &env_none).is_err());
                    }
                }
            }
        }
    });
}

#[test]
fn intended_versions_and_environments_of_any_text_never_panic() {
    let public =
        base64::engine::general_purpose::STANDARD.encode(signing_key().verifying_key().to_bytes());
    let key_seeds = [
        format!("release={public}, backup={public}"),
        "r=!!".into(),
        "r=AAAA".into(),
        ",,=".into(),
    ];
    let key_seeds: Vec<&str> = key_seeds.iter().map(String::as_str).collect();
    let response_seeds: &[&[u8]] = &[
        br#"{"config_version": "v3"}"#,
        br#"{"fingerprint": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}"#,
        br#"{"config_version": null, "fingerprint": null}"#,
        b"<html>",
    ];
    run_cases("intended_and_env", 3000, |case| {
        let body = bytes_input(&mut case.rng, response_seeds, 4096);
        case.note(&body);
        let trusting = IntegrityEnv {
            trusted_keys: vec![("release".into(), signing_key().verifying_key())],
            ..IntegrityEnv::default()
        };
        let at = AnswerContext {
            filter: "identity",
            workload: Some("default/backend"),
            now_s: 0,
            newest_issued: None,
        };
        match read_answer(&body, &trusting, &at) {
            Ok(Answer { intended, .. }) => {
                assert!(intended.fingerprint.is_some());
                let _ = intended.describe();
                let _ = intended.matches_active("ab", Some("v3"), true);
            }
            Err(e) => {
                let _ = (e.to_string(), e.reason.as_str());
            }
        }
        let vars: HashMap<&str, String> = [
            (TRUSTED_KEYS_ENV, text_input(&mut case.rng, &key_seeds, 512)),
            (
                "MESHGUARD_REQUIRE_SIGNATURE",
                text_input(&mut case.rng, &["true", "false", " "], 16),
            ),
            (
                "MESHGUARD_INTENDED_VERSION",
                text_input(&mut case.rng, &["v1"], 64),
            ),
            (
                "MESHGUARD_INTENDED_FINGERPRINT",
                text_input(
                    &mut case.rng,
                    &["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
                    128,
                ),
            ),
            (
                "MESHGUARD_ON_DRIFT",
                text_input(&mut case.rng, &["report", "quarantine", "reject"], 16),
            ),
        ]
        .into_iter()
        .filter(|_| case.rng.chance(2, 3))
        .collect();
        case.note(format!("{vars:?}"));
        match IntegrityEnv::from_vars(|name| vars.get(name).cloned()) {
            Ok(env) => assert!(!env.require_signature || !env.trusted_keys.is_empty()),
            Err(e) => assert!(e.to_string().starts_with("env MESHGUARD_")),
        }
    });
}

#[test]
fn canonical_json_of_any_value_reparses_to_the_same_bytes() {
    run_cases("canonical_json", 4000, |case| {
        let value = random_value(&mut case.rng, 0);
        let bytes = to_canonical_bytes(&value).expect("shallow values canonicalize");
        case.note(&bytes);
        let reparsed: Value = serde_json::from_slice(&bytes).expect("canonical JSON parses");
        assert_eq!(
            to_canonical_bytes(&reparsed).unwrap(),
            bytes,
            "not idempotent"
        );
        assert!(!bytes.contains(&b'\n'));
    });
}

#[test]
fn canonical_json_nested_beyond_the_limit_is_refused_without_recursing() {
    on_small_stack("canonical deep", 256, || {
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 5_000, 100_000] {
            let value = nested_value(depth);
            let result = to_canonical_bytes(&value);
            if depth > MAX_DEPTH {
                assert_eq!(result, Err(CanonicalError::TooDeep), "{depth}");
            } else {
                assert_eq!(result.unwrap().len(), 2 * depth + 1, "{depth}");
            }
            dismantle(value);
        }
    });
}

#[test]
fn configs_of_any_bytes_parse_or_fail_with_a_message() {
    let seeds: &[&[u8]] = &[
        IDENTITY_CONFIG.as_bytes(),
        br#"{"a": {"b": [1, {"c": 2}]}, "d": 1.5}"#,
        br#"{"a": 1, "a": 2}"#,
        b"  ",
        b"[]",
    ];
    run_cases("parse_json", 4000, |case| {
        let bytes = bytes_input(&mut case.rng, seeds, 8 * 1024);
        case.note(&bytes);
        let strict = parse_json::<StrictObject>(&bytes);
        let loose = parse_json::<Value>(&bytes);
        if let Ok(StrictObject(map)) = &strict {
            // A strict parse is a loose parse without repeated keys.
            assert_eq!(loose.as_ref().ok(), Some(&Value::Object(map.clone())));
        }
        for e in [strict.err(), loose.err()].into_iter().flatten() {
            let message = e.to_string();
            assert!(!message.is_empty());
            if let ConfigError::Malformed { at, .. } = &e {
                assert!(!at.is_empty());
            }
        }
    });
}

#[test]
fn configs_at_the_size_limit_are_parsed_and_beyond_it_refused() {
    for (len, ok) in [(MAX_CONFIG_BYTES, true), (MAX_CONFIG_BYTES + 1, false)] {
        let mut bytes = vec![b' '; len];
        bytes[0] = b'{';
        bytes[len - 1] = b'}';
        let result = parse_json::<StrictObject>(&bytes);
        assert_eq!(result.is_ok(), ok, "{len}");
        if !ok {
            assert_eq!(
                result.unwrap_err(),
                ConfigError::TooLarge {
                    size: len,
                    max: MAX_CONFIG_BYTES
                }
            );
        }
    }
    for bytes in [&b""[..], b" ", b"\n\t\r "] {
        assert_eq!(parse_json::<StrictObject>(bytes), Err(ConfigError::Empty));
    }
}

#[test]
fn configs_nested_far_too_deeply_are_refused_without_recursing() {
    // serde_json stops at 128 levels, but in a debug build each level of
    // `parse_json` (serde_path_to_error over serde_json) takes about 3 KiB of
    // stack: the bounded 127 levels need ~400 KiB here (far less in release).
    on_small_stack("configs deep", 512, || {
        for shape in 0..4 {
            for depth in [126, 127, 128, 5_000, 100_000] {
                let mut bytes = b"{\"x\":".to_vec();
                bytes.extend(deep_json(depth, shape));
                bytes.push(b'}');
                let _ = parse_json::<StrictObject>(&bytes);
                let _ = parse_json::<Value>(&bytes);
                let _ = IdentityPolicy::from_json(&bytes);
                let _ = MaskingPolicy::from_json(&bytes, Some(HASH_KEY));
                let _ = AuditPolicy::from_json(&bytes);
                let _ = load(&bytes, &IntegrityEnv::default());
                let _ = fingerprint(&bytes);
                let at = AnswerContext {
                    filter: "identity",
                    workload: None,
                    now_s: 0,
                    newest_issued: None,
                };
                let _ = read_answer(&bytes, &IntegrityEnv::default(), &at);
                if depth >= 128 {
                    assert!(parse_json::<StrictObject>(&bytes).is_err(), "{depth}");
                    assert!(load(&bytes, &IntegrityEnv::default()).is_err(), "{depth}");
                }
            }
        }
    });
}
