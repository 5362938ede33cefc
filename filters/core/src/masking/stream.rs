//! Streamed bodies, masked record by record as they flow: server-sent events
//! (an event ends at a blank line), JSON Lines (a JSON text per line),
//! `application/json-seq` (RS-prefixed JSON texts), line-delimited text, and
//! multipart bodies ([`super::multipart`]).
//!
//! A record is released as soon as it is complete and masked. Only the
//! incomplete record is held, bounded by `max_record_bytes`: never the whole
//! stream. A secret split across chunks is in one record, so it is masked
//! whole. In line-delimited text a PEM or PGP private key block (whose lines
//! belong together) is one record, from its `BEGIN` line to its `END` line.

use super::multipart::Multipart;
use super::policy::{count_hit, Plan};
use super::text::mask_text;
use super::{json, MaskError};

/// How a stream is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `text/event-stream`.
    Events,
    /// NDJSON / JSON Lines.
    JsonLines,
    /// `application/json-seq` (RFC 7464).
    JsonSeq,
    /// `text/*`: a record per line.
    Lines,
}

/// Why a stream cannot be masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamError {
    /// A record (or a part held to be masked) is larger than `max_record_bytes`.
    Oversize,
    /// A record could not be masked: malformed JSON, text that is not UTF-8.
    Mask(MaskError),
    /// A multipart body that does not follow its own framing.
    Multipart,
    /// A binary part under `on_binary_part: reject`.
    BinaryPart,
    /// A part's charset cannot be read or written back.
    Charset,
}

impl From<MaskError> for StreamError {
    fn from(e: MaskError) -> Self {
        Self::Mask(e)
    }
}

/// What one feed produced: the bytes to release, in order.
#[derive(Debug, Default)]
pub(crate) struct Fed {
    pub(crate) out: Vec<u8>,
    /// Something was masked or dropped (else `out` is the records as received).
    pub(crate) changed: bool,
    /// Binary parts forwarded unmasked under `on_binary_part: pass`.
    pub(crate) binary_parts: u32,
    /// A record was masked as text under `on_malformed_json: mask_as_text`.
    pub(crate) fallback: Option<MaskError>,
}

/// The cutter and its held, incomplete record.
#[derive(Debug, Clone)]
pub(crate) struct Streamer {
    kind: Kind,
    /// Received bytes not released yet.
    pending: Vec<u8>,
    /// Where the search for the current record's end resumes.
    scan: usize,
    max_record: usize,
}

#[derive(Debug, Clone)]
enum Kind {
    Records(Framing, Cut),
    Multipart(Box<Multipart>),
}

/// The state of the search for a record's end.
#[derive(Debug, Clone, Copy, Default)]
struct Cut {
    /// Lines: inside a PEM/PGP private key block.
    armored: bool,
    /// Events: where the current line starts.
    line_start: usize,
    /// json-seq: a small JSON tokenizer, enough to see where a text ends.
    depth: usize,
    in_string: bool,
    escaped: bool,
    seen_value: bool,
}

const RS: u8 = 0x1e;

impl Streamer {
    pub(crate) fn records(framing: Framing, max_record: usize) -> Self {
        Self {
            kind: Kind::Records(framing, Cut::default()),
            pending: Vec::new(),
            scan: 0,
            max_record,
        }
    }

    pub(crate) fn multipart(parser: Multipart, max_record: usize) -> Self {
        Self {
            kind: Kind::Multipart(Box::new(parser)),
            pending: Vec::new(),
            scan: 0,
            max_record,
        }
    }

    /// The received bytes still held (released unmasked when a setting
    /// forwards the rest of the stream).
    pub(crate) fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Adds received bytes and masks every record they complete; at `end`
    /// the last, unterminated record too.
    pub(crate) fn feed(
        &mut self,
        plan: &Plan<'_>,
        input: &[u8],
        end: bool,
        hits: &mut [u32],
    ) -> Result<Fed, StreamError> {
        self.pending.extend_from_slice(input);
        let mut fed = Fed::default();
        let max_record = self.max_record;
        match &mut self.kind {
            Kind::Multipart(parser) => {
                parser.feed(plan, &mut self.pending, end, max_record, hits, &mut fed)?;
            }
            Kind::Records(framing, cut) => {
                let framing = *framing;
                let mut start = 0;
                while let Some(record_end) = next_end(framing, cut, &self.pending, start, self.scan)
                {
                    let record = self.pending.get(start..record_end).unwrap_or_default();
                    if record.len() > max_record {
                        return Err(StreamError::Oversize);
                    }
                    mask_record(plan, framing, record, hits, &mut fed)?;
                    start = record_end;
                    self.scan = record_end;
                    *cut = Cut::default();
                    cut.line_start = record_end;
                }
                self.scan = self.pending.len();
                if end && start < self.pending.len() {
                    let record = self.pending.get(start..).unwrap_or_default();
                    if record.len() > max_record {
                        return Err(StreamError::Oversize);
                    }
                    mask_record(plan, framing, record, hits, &mut fed)?;
                    start = self.pending.len();
                }
                self.pending.drain(..start);
                self.scan = self.scan.saturating_sub(start);
                cut.line_start = cut.line_start.saturating_sub(start);
                if self.pending.len() > max_record {
                    return Err(StreamError::Oversize);
                }
            }
        }
        Ok(fed)
    }
}

/// The end (exclusive) of the record starting at `start`, searching from
/// `scan`; `None` while it is incomplete.
fn next_end(framing: Framing, cut: &mut Cut, b: &[u8], start: usize, scan: usize) -> Option<usize> {
    let from = scan.max(start);
    match framing {
        Framing::JsonLines => newline_after(b, from),
        Framing::Lines => {
            let mut pos = from;
            loop {
                let (line, nl) = next_line(cut, b, start, pos)?;
                pos = nl;
                if !cut.armored && opens_armor(line) {
                    cut.armored = true;
                } else if cut.armored && closes_armor(line) {
                    cut.armored = false;
                    return Some(nl);
                } else if !cut.armored {
                    return Some(nl);
                }
            }
        }
        Framing::Events => {
            let mut pos = from;
            loop {
                let (line, nl) = next_line(cut, b, start, pos)?;
                pos = nl;
                if matches!(line, b"\n" | b"\r\n") {
                    return Some(nl);
                }
            }
        }
        Framing::JsonSeq => {
            for (i, &c) in b.iter().enumerate().skip(from) {
                if c == RS && i > start {
                    return Some(i);
                }
                if cut.in_string {
                    match (cut.escaped, c) {
                        (true, _) => cut.escaped = false,
                        (false, b'\\') => cut.escaped = true,
                        (false, b'"') => cut.in_string = false,
                        _ => {}
                    }
                    continue;
                }
                match c {
                    b'"' => {
                        cut.in_string = true;
                        cut.seen_value = true;
                    }
                    b'{' | b'[' => {
                        cut.depth = cut.depth.saturating_add(1);
                        cut.seen_value = true;
                    }
                    b'}' | b']' => cut.depth = cut.depth.saturating_sub(1),
                    b'\n' if cut.depth == 0 && cut.seen_value => return i.checked_add(1),
                    b' ' | b'\t' | b'\r' | b'\n' | RS => {}
                    _ => cut.seen_value = true,
                }
            }
            None
        }
    }
}

/// The next whole line of the record starting at `start` (its line end
/// searched from `pos`), and the offset past it; the cut moves past it.
fn next_line<'b>(
    cut: &mut Cut,
    b: &'b [u8],
    start: usize,
    pos: usize,
) -> Option<(&'b [u8], usize)> {
    let nl = newline_after(b, pos)?;
    let line = b.get(cut.line_start.max(start)..nl).unwrap_or_default();
    cut.line_start = nl;
    Some((line, nl))
}

/// The offset just past the next `\n` at or after `from`.
fn newline_after(b: &[u8], from: usize) -> Option<usize> {
    let k = b.get(from..)?.iter().position(|&c| c == b'\n')?;
    from.checked_add(k)?.checked_add(1)
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// A `-----BEGIN … PRIVATE KEY…-----` line (PEM or PGP armor, any case).
fn opens_armor(line: &[u8]) -> bool {
    contains_ignore_case(line, b"-----BEGIN ") && contains_ignore_case(line, b"PRIVATE KEY")
}

fn closes_armor(line: &[u8]) -> bool {
    contains_ignore_case(line, b"-----END ")
}

/// Splits a record into its content and its line terminator.
fn split_terminator(record: &[u8]) -> (&[u8], &[u8]) {
    let cut = if record.ends_with(b"\r\n") {
        2
    } else {
        usize::from(record.ends_with(b"\n"))
    };
    record.split_at(record.len().saturating_sub(cut))
}

/// Masks one record into `fed.out`.
fn mask_record(
    plan: &Plan<'_>,
    framing: Framing,
    record: &[u8],
    hits: &mut [u32],
    fed: &mut Fed,
) -> Result<(), StreamError> {
    let masked = match framing {
        Framing::Lines => {
            let (content, terminator) = split_terminator(record);
            mask_text_bytes(plan, content, plan.roots.clone(), hits)?
                .map(|m| [m.as_slice(), terminator].concat())
        }
        Framing::JsonLines => {
            let (content, terminator) = split_terminator(record);
            mask_json_record(plan, content, hits, fed)?.map(|m| [m.as_slice(), terminator].concat())
        }
        Framing::JsonSeq => {
            let lead = record.iter().take_while(|&&c| c == RS).count();
            let (head, rest) = record.split_at(lead);
            let (content, terminator) = split_terminator(rest);
            mask_json_record(plan, content, hits, fed)?
                .map(|m| [head, m.as_slice(), terminator].concat())
        }
        Framing::Events => mask_events(plan, record, hits)?,
    };
    match masked {
        Some(bytes) => {
            fed.changed = true;
            fed.out.extend_from_slice(&bytes);
        }
        None => fed.out.extend_from_slice(record),
    }
    Ok(())
}

/// A JSON record (an NDJSON line, a json-seq text): JSON rules, or text
/// under `on_malformed_json: mask_as_text`. Blank records are kept.
fn mask_json_record(
    plan: &Plan<'_>,
    content: &[u8],
    hits: &mut [u32],
    fed: &mut Fed,
) -> Result<Option<Vec<u8>>, StreamError> {
    if content.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut inner = vec![0u32; hits.len()];
    match json::mask_json(plan, content, plan.max_json_depth(), &mut inner) {
        Ok(masked) => {
            add_hits(hits, &inner);
            Ok(masked)
        }
        Err(e @ (MaskError::MalformedJson { .. } | MaskError::TooDeep { .. }))
            if plan.json_falls_back_to_text() =>
        {
            fed.fallback = Some(e);
            Ok(mask_text_bytes(plan, content, Vec::new(), hits)?)
        }
        Err(e) => Err(e.into()),
    }
}

fn add_hits(total: &mut [u32], add: &[u32]) {
    for (t, a) in total.iter_mut().zip(add) {
        *t = t.saturating_add(*a);
    }
}

/// A piece of text (a line, an event's data, a text part): JSON in it gets
/// the JSON rules (its root at `roots`), anything else the detectors and
/// patterns. Text that is not UTF-8 follows `on_not_utf8`.
pub(crate) fn mask_text_bytes(
    plan: &Plan<'_>,
    bytes: &[u8],
    roots: Vec<super::paths::State>,
    hits: &mut [u32],
) -> Result<Option<Vec<u8>>, MaskError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => match json::mask_embedded(plan, text, roots, plan.max_json_depth(), hits)? {
            Some(masked) => Ok(masked),
            None if plan.scans() => {
                Ok(mask_text(plan, text, &mut Vec::new(), hits).map(String::into_bytes))
            }
            None => Ok(None),
        },
        Err(_) if plan.masks_bytes() => {
            Ok(super::text::mask_bytes(plan, bytes, &mut Vec::new(), hits))
        }
        Err(_) => Err(MaskError::NotUtf8),
    }
}

/// Every event of a record (one, unless the stream ended in the middle of
/// a blank-line-less run): nothing after the first blank line is left
/// unscanned.
fn mask_events(
    plan: &Plan<'_>,
    record: &[u8],
    hits: &mut [u32],
) -> Result<Option<Vec<u8>>, StreamError> {
    let mut out = Vec::with_capacity(record.len());
    let mut changed = false;
    let mut rest = record;
    while !rest.is_empty() {
        let end = event_end(rest);
        let (event, after) = rest.split_at(end);
        match mask_event(plan, event, hits)? {
            Some(masked) => {
                changed = true;
                out.extend_from_slice(&masked);
            }
            None => out.extend_from_slice(event),
        }
        rest = after;
    }
    Ok(changed.then_some(out))
}

/// The end of the first event of `b`: just past its blank line, or `b`'s end.
fn event_end(b: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(nl) = newline_after(b, pos) {
        if matches!(b.get(pos..nl), Some(b"\n" | b"\r\n")) {
            return nl;
        }
        pos = nl;
    }
    b.len()
}

/// One server-sent event: its `data` lines joined (as the client joins
/// them) and masked as text, JSON in it with the JSON rules; every other
/// line (`event`, `id`, comments) scanned as text. `None`: unchanged.
fn mask_event(
    plan: &Plan<'_>,
    event: &[u8],
    hits: &mut [u32],
) -> Result<Option<Vec<u8>>, StreamError> {
    let mut data: Vec<u8> = Vec::new();
    let mut data_lines = 0usize;
    let mut first_data: Option<usize> = None;
    let mut others: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut changed = false;
    let mut terminator: &[u8] = b"\n";
    let mut index = 0usize;
    for line in event.split_inclusive(|&c| c == b'\n') {
        let (content, end) = split_terminator(line);
        if content.is_empty() {
            break; // the blank line that ends the event
        }
        if content.starts_with(b"data:") || content == b"data" {
            let value = content.get(5..).unwrap_or_default();
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if data_lines > 0 {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
            data_lines = data_lines.saturating_add(1);
            if first_data.is_none() {
                first_data = Some(index);
                terminator = end;
            }
        } else {
            let masked = mask_text_bytes(plan, content, Vec::new(), hits)?;
            changed |= masked.is_some();
            let mut kept = masked.unwrap_or_else(|| content.to_vec());
            kept.extend_from_slice(end);
            others.push((index, kept));
        }
        index = index.saturating_add(1);
    }
    let masked_data = if data_lines > 0 {
        mask_text_bytes(plan, &data, plan.roots.clone(), hits)?
    } else {
        None
    };
    if masked_data.is_none() && !changed {
        return Ok(None);
    }
    let data = masked_data.unwrap_or(data);
    let mut out = Vec::with_capacity(event.len());
    let mut written_data = false;
    for (at, line) in &others {
        if !written_data && first_data.is_some_and(|d| d < *at) {
            write_data(&mut out, &data, terminator);
            written_data = true;
        }
        out.extend_from_slice(line);
    }
    if !written_data && first_data.is_some() {
        write_data(&mut out, &data, terminator);
    }
    // The blank line, as received.
    let body_len: usize = event
        .split_inclusive(|&c| c == b'\n')
        .take(index)
        .map(<[u8]>::len)
        .sum();
    out.extend_from_slice(event.get(body_len..).unwrap_or_default());
    Ok(Some(out))
}

/// `data` as `data: ` lines (one per line of the masked text).
fn write_data(out: &mut Vec<u8>, data: &[u8], terminator: &[u8]) {
    for piece in data.split(|&c| c == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(piece);
        out.extend_from_slice(terminator);
    }
}

/// Counts a value selected as a whole (a multipart field by name).
pub(crate) fn hit(hits: &mut [u32], rule: u16) {
    count_hit(hits, rule);
}
