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

/// Masks every detector and pattern match of the plan in `text`. Overlapping
/// matches are merged: the earliest start wins, then the longest, then the
/// earliest rule. Returns `None` (and copies nothing) when there is no match.
/// `spans` is scratch space reused between calls.
pub(crate) fn mask_text(
    plan: &Plan<'_>,
    text: &str,
    spans: &mut Vec<Span>,
    hits: &mut [u32],
) -> Option<String> {
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
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable_by(|a, b| {
        a.start
            .cmp(&b.start)
            .then(b.end.cmp(&a.end))
            .then(a.rule.cmp(&b.rule))
    });
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for span in spans.iter() {
        if span.end <= cursor {
            continue; // inside a match already masked
        }
        // A match that overlaps the previous one masks the part past it:
        // skipping it would leave its tail in clear (found by fuzzing).
        let start = span.start.max(cursor);
        let (Some(before), Some(matched)) = (text.get(cursor..start), text.get(start..span.end))
        else {
            continue; // not on char boundaries: cannot happen, never slice there
        };
        out.push_str(before);
        plan.write_masked(span.rule, matched, &mut out);
        count_hit(hits, span.rule);
        cursor = span.end;
    }
    if cursor == 0 && out.is_empty() {
        return None;
    }
    out.push_str(text.get(cursor..).unwrap_or(""));
    Some(out)
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
