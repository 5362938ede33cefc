//! Detectors and patterns over one piece of text (a text body, a JSON string
//! value, a form value): find, merge overlaps, replace.

use super::detect::TextStats;
use super::fold::fold;
use super::policy::{count_hit, Plan};

/// One match: a byte range of the text and the rule it is masked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: usize,
    end: usize,
    rule: u16,
}

/// Passes over a text at most (see [`mask_text`]).
const MAX_PASSES: usize = 4;

/// Masks every detector and pattern match of the plan in `text`. Overlapping
/// matches are merged: the earliest start wins, then the longest, then the
/// earliest rule. Returns `None` (and copies nothing) when there is no match.
/// `spans` is scratch space reused between calls.
///
/// Detectors judge a match by what surrounds it (an address is at most 64
/// characters before its `@`, a number must not touch a letter), so a
/// replacement can turn its neighbour into a match: `tkt_…` masked leaves
/// `[REDACTED]john@example.com` where the run before `@` was too long to be an
/// address (found by fuzzing). So the masked text is scanned again, and what
/// matches outside the replacements is masked too, until nothing does (at
/// most [`MAX_PASSES`] passes; each masks more of the text). Matches inside a
/// replacement (a hash that happens to spell a key, a pattern that matches
/// the redaction token) are not masked again.
pub(crate) fn mask_text(
    plan: &Plan<'_>,
    text: &str,
    spans: &mut Vec<Span>,
    hits: &mut [u32],
) -> Option<String> {
    let mut masked: Option<Masked> = None;
    for _ in 0..MAX_PASSES {
        let (input, replaced) = match &masked {
            Some(m) => (m.text.as_str(), m.replaced.as_slice()),
            None => (text, &[][..]),
        };
        find_spans(plan, input, spans);
        outside(spans, replaced);
        if spans.is_empty() {
            break;
        }
        sort_spans(spans);
        masked = Some(replace(plan, input, spans, replaced, hits));
    }
    masked.map(|m| m.text)
}

/// A masked text and the byte ranges the masker wrote into it, in order.
struct Masked {
    text: String,
    replaced: Vec<(usize, usize)>,
}

/// Every detector and pattern match of the plan in `text`, into `spans`.
fn find_spans(plan: &Plan<'_>, text: &str, spans: &mut Vec<Span>) {
    spans.clear();
    if !plan.detectors.is_empty() {
        let stats = TextStats::of(text);
        for &(detector, rule) in &plan.detectors {
            if detector.may_match(&stats) {
                detector.scan(text, &mut |start, end| {
                    spans.push(Span { start, end, rule })
                });
            }
        }
        // Unicode digits, spaces and dashes must not hide a match: scan the
        // folded text too, masking the original characters it came from.
        if let Some(folded) = stats.foldable.then(|| fold(text)).flatten() {
            let stats = TextStats::of(&folded.text);
            for &(detector, rule) in &plan.detectors {
                if detector.may_match(&stats) {
                    detector.scan(&folded.text, &mut |start, end| {
                        if let Some((start, end)) = folded.original(start, end) {
                            spans.push(Span { start, end, rule });
                        }
                    });
                }
            }
        }
    }
    for &(rule, re) in &plan.patterns {
        for m in re.find_iter(text) {
            if !m.is_empty() {
                spans.push(Span {
                    start: m.start(),
                    end: m.end(),
                    rule,
                });
            }
        }
    }
}

/// Keeps only the parts of `spans` outside `replaced` (sorted, disjoint):
/// a match that runs into a replacement is masked up to it.
fn outside(spans: &mut Vec<Span>, replaced: &[(usize, usize)]) {
    if replaced.is_empty() {
        return;
    }
    let mut kept = Vec::with_capacity(spans.len());
    for span in spans.iter() {
        let mut start = span.start;
        // The replacements that end after this span starts, in order.
        let first = replaced.partition_point(|&(_, end)| end <= span.start);
        for &(r_start, r_end) in replaced.get(first..).unwrap_or_default() {
            if r_start >= span.end {
                break;
            }
            if r_start > start {
                kept.push(Span {
                    start,
                    end: r_start,
                    rule: span.rule,
                });
            }
            start = start.max(r_end);
        }
        if start < span.end {
            kept.push(Span { start, ..*span });
        }
    }
    *spans = kept;
}

/// Sorts matches by start, then longest first, then rule: the order in which
/// [`replace`] merges overlaps.
fn sort_spans(spans: &mut [Span]) {
    spans.sort_unstable_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.rule.cmp(&b.rule))
    });
}

/// Writes `input` with `spans` (sorted, outside `replaced`) masked; the
/// earlier replacements move with the text around them.
fn replace(
    plan: &Plan<'_>,
    input: &str,
    spans: &[Span],
    replaced: &[(usize, usize)],
    hits: &mut [u32],
) -> Masked {
    let mut out = String::with_capacity(input.len());
    let mut written = Vec::with_capacity(replaced.len().saturating_add(spans.len()));
    let mut earlier = replaced.iter().peekable();
    // Copies input[from..to] and moves the earlier replacements inside it.
    let mut copy = |out: &mut String, written: &mut Vec<(usize, usize)>, from: usize, to: usize| {
        let at = out.len();
        out.push_str(input.get(from..to).unwrap_or_default());
        while let Some(&&(r_start, r_end)) = earlier.peek() {
            if r_start >= to {
                break;
            }
            written.push((
                r_start.saturating_sub(from).saturating_add(at),
                r_end.saturating_sub(from).saturating_add(at),
            ));
            earlier.next();
        }
    };
    let mut cursor = 0;
    for span in spans {
        if span.end <= cursor {
            continue; // inside a match already masked
        }
        // A match that overlaps the previous one masks the part past it:
        // skipping it would leave its tail in clear (found by fuzzing).
        let start = span.start.max(cursor);
        let Some(matched) = input.get(start..span.end) else {
            continue; // not on char boundaries: cannot happen, never slice there
        };
        copy(&mut out, &mut written, cursor, start);
        let at = out.len();
        plan.write_masked(span.rule, matched, &mut out);
        written.push((at, out.len()));
        count_hit(hits, span.rule);
        cursor = span.end;
    }
    copy(&mut out, &mut written, cursor, input.len());
    Masked {
        text: out,
        replaced: written,
    }
}

/// Masks bytes that are not all UTF-8: each maximal valid UTF-8 run is masked
/// as text; invalid bytes are kept as they are (`on_not_utf8: mask_bytes`).
/// `None` when nothing matched.
pub(crate) fn mask_bytes(
    plan: &Plan<'_>,
    bytes: &[u8],
    spans: &mut Vec<Span>,
    hits: &mut [u32],
) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut pos = 0;
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        if let Some(masked) = mask_text(plan, valid, spans, hits) {
            let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
            out.extend_from_slice(bytes.get(copied..pos).unwrap_or_default());
            out.extend_from_slice(masked.as_bytes());
            copied = pos.saturating_add(valid.len());
        }
        // Offsets into `bytes`: at most `bytes.len()`.
        pos = pos
            .saturating_add(valid.len())
            .saturating_add(chunk.invalid().len());
    }
    let mut out = out?;
    out.extend_from_slice(bytes.get(copied..).unwrap_or_default());
    Some(out)
}
