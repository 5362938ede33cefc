//! `multipart/*` bodies (`form-data`, `mixed`...), parsed as they flow with
//! bounded state: the parser holds at most one part's headers, or one text
//! part, or the tail of a binary part that could start a delimiter.
//!
//! Per part:
//! - the delimiter line is kept; every header line's value is scanned by
//!   detectors and patterns (`name`, `filename`...);
//! - a part whose field name (`content-disposition: form-data; name=...`) is
//!   selected by `json_keys` or `json_paths` (read like a form field name:
//!   `user[password]`) is masked whole, or removed with its headers;
//! - text parts (no content type, `text/*`, `multipart/*`) are masked as text
//!   (JSON in them with the JSON rules under the field's name), JSON parts
//!   as JSON, form parts as forms, each in the part's charset;
//! - other parts are held up to `max_record_bytes`: one that proves to be
//!   UTF-8 text is masked as text; a binary one (or one with a
//!   `content-transfer-encoding` such as base64) follows `on_binary_part`.

use super::charset::{charset_param, decode, CharsetError};
use super::form::{field_states, mask_form, select_name};
use super::paths::State as PathState;
use super::policy::Plan;
use super::stream::{hit, mask_text_bytes, Fed, StreamError};
use super::text::{mask_bytes, mask_text};
use super::{json, MaskError};

/// Longest boundary (RFC 2046).
const MAX_BOUNDARY: usize = 70;

#[derive(Debug, Clone)]
pub(crate) struct Multipart {
    /// `--` followed by the boundary.
    dash_boundary: Vec<u8>,
    state: Part,
    /// Where the search for the next delimiter resumes.
    scan: usize,
    /// A delimiter was seen (a body without one is not multipart).
    started: bool,
}

#[derive(Debug, Clone)]
enum Part {
    /// Before the first delimiter.
    Preamble,
    /// A delimiter line and the part's headers, not complete yet.
    Headers,
    /// A part held whole until its end, after its (masked) head.
    Held {
        head: Vec<u8>,
        head_changed: bool,
        how: Held,
    },
    /// A binary part forwarded as it comes.
    Passing,
    /// A part removed by a `remove` rule.
    Dropped,
    /// The close delimiter and what follows it.
    Epilogue,
}

#[derive(Debug, Clone)]
enum Held {
    Selected(u16),
    Text(Vec<PathState>, Option<String>),
    Json(Vec<PathState>, Option<String>),
    Form(Option<String>),
    /// Not declared as text: masked as text if it proves to be text.
    Sniff(Vec<PathState>, Option<String>),
}

/// The boundary of a `multipart/*` content type; `None` when it has none or
/// an invalid one.
pub(crate) fn boundary(content_type: Option<&str>) -> Option<String> {
    let value = content_type?.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })?;
    (!value.is_empty()
        && value.len() <= MAX_BOUNDARY
        && value.bytes().all(|c| (0x20..0x7f).contains(&c)))
    .then_some(value)
}

/// What a delimiter search found.
enum Found {
    /// A delimiter starting at `at` (its CR LF included).
    Delimiter { at: usize },
    /// Not yet: more bytes are needed; a delimiter may start at `maybe`
    /// (its line is not complete yet), else in the last bytes.
    NotYet { maybe: Option<usize> },
}

impl Multipart {
    pub(crate) fn new(boundary: &str) -> Self {
        Self {
            dash_boundary: [b"--", boundary.as_bytes()].concat(),
            state: Part::Preamble,
            scan: 0,
            started: false,
        }
    }

    /// Where bytes that cannot start a delimiter end: before an unconfirmed
    /// delimiter, else before the last bytes that could start one
    /// (`CR LF --boundary`).
    fn safe_end(&self, len: usize, start: usize, maybe: Option<usize>) -> usize {
        let tail = len.saturating_sub(self.dash_boundary.len().saturating_add(2));
        maybe.map_or(tail, |at| at.min(tail)).max(start)
    }

    /// The next delimiter in `b` at or after `from` (a delimiter line is
    /// `[CR] LF --boundary` then `--`, or optional blanks and a line end; at
    /// the very start of the body the line break is absent).
    fn find(&self, b: &[u8], start: usize, from: usize, end: bool) -> Result<Found, StreamError> {
        let dash = self.dash_boundary.as_slice();
        let mut pos = from;
        loop {
            let candidate = if pos == 0 && !self.started && b.starts_with(dash) {
                Some((0, 0))
            } else {
                let Some(k) = b.get(pos..).and_then(|t| {
                    t.windows(dash.len().saturating_add(1))
                        .position(|w| w.first() == Some(&b'\n') && w.get(1..) == Some(dash))
                }) else {
                    return Ok(Found::NotYet { maybe: None });
                };
                let nl = pos.saturating_add(k);
                let at = if nl > start && b.get(nl.saturating_sub(1)) == Some(&b'\r') {
                    nl.saturating_sub(1)
                } else {
                    nl
                };
                Some((at, nl.saturating_add(1)))
            };
            let Some((at, dash_at)) = candidate else {
                return Ok(Found::NotYet { maybe: None });
            };
            let after = dash_at.saturating_add(dash.len());
            let rest = b.get(after..).unwrap_or_default();
            if rest.starts_with(b"--") {
                return Ok(Found::Delimiter { at });
            }
            let blanks = rest
                .iter()
                .take_while(|&&c| c == b' ' || c == b'\t')
                .count();
            match rest.get(blanks..) {
                Some([b'\n', ..] | [b'\r', b'\n', ..]) => return Ok(Found::Delimiter { at }),
                Some([] | [b'\r']) | Some([b'-']) if !end => {
                    return Ok(Found::NotYet { maybe: Some(at) })
                }
                _ => pos = dash_at.max(pos.saturating_add(1)),
            }
        }
    }

    /// Parses what `pending` allows, releasing into `fed.out`; keeps the
    /// rest in `pending`.
    pub(crate) fn feed(
        &mut self,
        plan: &Plan<'_>,
        pending: &mut Vec<u8>,
        end: bool,
        max_record: usize,
        hits: &mut [u32],
        fed: &mut Fed,
    ) -> Result<(), StreamError> {
        let mut start = 0usize;
        loop {
            let progressed = self.step(plan, pending, &mut start, end, max_record, hits, fed)?;
            if !progressed {
                break;
            }
        }
        pending.drain(..start.min(pending.len()));
        self.scan = self.scan.saturating_sub(start);
        if end {
            return match self.state {
                Part::Epilogue if pending.is_empty() => Ok(()),
                Part::Preamble if !self.started && pending.iter().all(u8::is_ascii_whitespace) => {
                    fed.out.append(pending);
                    Ok(())
                }
                _ => Err(StreamError::Multipart),
            };
        }
        Ok(())
    }

    /// One step of the parser; false when it needs more bytes.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        plan: &Plan<'_>,
        pending: &mut [u8],
        start: &mut usize,
        end: bool,
        max_record: usize,
        hits: &mut [u32],
        fed: &mut Fed,
    ) -> Result<bool, StreamError> {
        let b: &[u8] = pending;
        let from = self.scan.max(*start);
        let held = b.len().saturating_sub(*start);
        match std::mem::replace(&mut self.state, Part::Preamble) {
            // The preamble is one record, bounded however the body was cut:
            // a delimiter found in the same chunk that carried the preamble
            // past the bound, or the end of the body, refuses it as a
            // chunk boundary before the bound would have.
            Part::Preamble => match self.find(b, *start, from, end)? {
                Found::Delimiter { at, .. } if at.saturating_sub(*start) > max_record => {
                    Err(StreamError::Oversize)
                }
                Found::Delimiter { at, .. } => {
                    // The preamble is ignored by receivers; scanned all the same.
                    emit_text(plan, b.get(*start..at).unwrap_or_default(), hits, fed)?;
                    *start = at;
                    self.started = true;
                    self.state = Part::Headers;
                    Ok(true)
                }
                Found::NotYet { maybe } => {
                    self.state = Part::Preamble;
                    if end {
                        if held > max_record {
                            return Err(StreamError::Oversize);
                        }
                        emit_text(plan, b.get(*start..).unwrap_or_default(), hits, fed)?;
                        *start = b.len();
                        return Ok(false);
                    }
                    // Only what no delimiter can begin in counts: the tail
                    // may be the line break of the next delimiter.
                    self.scan = self.safe_end(b.len(), *start, maybe);
                    if self.scan.saturating_sub(*start) > max_record {
                        return Err(StreamError::Oversize);
                    }
                    Ok(false)
                }
            },
            Part::Headers => self.headers(plan, b, start, end, max_record, hits, fed),
            Part::Held {
                head,
                head_changed,
                how,
            } => match self.find(b, *start, from, end)? {
                Found::Delimiter { at } if at.saturating_sub(*start) <= max_record => {
                    let content = b.get(*start..at).unwrap_or_default();
                    match finish_held(plan, &how, content, hits, fed)? {
                        Some(body) => {
                            fed.changed = true;
                            fed.out.extend_from_slice(&head);
                            fed.out.extend_from_slice(&body);
                        }
                        None => {
                            fed.changed |= head_changed;
                            fed.out.extend_from_slice(&head);
                            fed.out.extend_from_slice(content);
                        }
                    }
                    *start = at;
                    self.state = Part::Headers;
                    Ok(true)
                }
                found => {
                    let maybe = match found {
                        Found::NotYet { maybe } => maybe,
                        Found::Delimiter { at } => Some(at),
                    };
                    self.scan = self.safe_end(b.len(), *start, maybe);
                    // As for the preamble: before the end, a tail that may
                    // begin the next delimiter does not count.
                    let content = if end {
                        held
                    } else {
                        self.scan.saturating_sub(*start)
                    };
                    if content <= max_record {
                        self.state = Part::Held {
                            head,
                            head_changed,
                            how,
                        };
                        return Ok(false);
                    }
                    if !matches!(how, Held::Sniff(..)) {
                        return Err(StreamError::Oversize);
                    }
                    // Too large to sniff: binary.
                    binary(plan, fed)?;
                    fed.changed |= head_changed;
                    fed.out.extend_from_slice(&head);
                    self.state = Part::Passing;
                    Ok(true)
                }
            },
            state @ (Part::Passing | Part::Dropped) => {
                let keep = matches!(state, Part::Passing);
                let (until, next) = match self.find(b, *start, from, end)? {
                    Found::Delimiter { at, .. } => (at, Part::Headers),
                    Found::NotYet { maybe } => {
                        let safe = self.safe_end(b.len(), *start, maybe);
                        if b.len().saturating_sub(safe) > max_record {
                            return Err(StreamError::Oversize);
                        }
                        self.scan = safe;
                        (safe, state)
                    }
                };
                if keep {
                    fed.out
                        .extend_from_slice(b.get(*start..until).unwrap_or_default());
                }
                let progressed = matches!(next, Part::Headers);
                *start = until;
                self.state = next;
                Ok(progressed)
            }
            Part::Epilogue => {
                self.state = Part::Epilogue;
                // Leading whitespace (the usual epilogue: a line end) leaves
                // at once, so that nothing is left to add at the trailers;
                // what follows is one record, bounded at the end as before
                // it, so where the body was cut does not matter.
                let rest = b.get(*start..).unwrap_or_default();
                let blank = rest
                    .iter()
                    .position(|c| !c.is_ascii_whitespace())
                    .unwrap_or(rest.len());
                fed.out
                    .extend_from_slice(rest.get(..blank).unwrap_or_default());
                *start = start.saturating_add(blank);
                let rest = b.get(*start..).unwrap_or_default();
                if rest.len() > max_record {
                    return Err(StreamError::Oversize);
                }
                if end {
                    emit_text(plan, rest, hits, fed)?;
                    *start = b.len();
                }
                Ok(false)
            }
        }
    }

    /// A part's head is not complete yet.
    fn incomplete(
        &mut self,
        block: &[u8],
        end: bool,
        max_record: usize,
    ) -> Result<bool, StreamError> {
        self.state = Part::Headers;
        if end {
            return Err(StreamError::Multipart);
        }
        if block.len() > max_record {
            return Err(StreamError::Oversize);
        }
        Ok(false)
    }

    /// A part's delimiter line and headers: decides how its content goes.
    #[allow(clippy::too_many_arguments)]
    fn headers(
        &mut self,
        plan: &Plan<'_>,
        b: &[u8],
        start: &mut usize,
        end: bool,
        max_record: usize,
        hits: &mut [u32],
        fed: &mut Fed,
    ) -> Result<bool, StreamError> {
        let block = b.get(*start..).unwrap_or_default();
        // The close delimiter: the rest is the epilogue.
        let dash_at = block.iter().position(|&c| c == b'-').unwrap_or(0);
        let after = dash_at.saturating_add(self.dash_boundary.len());
        if block.get(after..).is_some_and(|r| r.starts_with(b"--")) {
            // The close delimiter is structure: it leaves now.
            let close = after.saturating_add(2);
            fed.out
                .extend_from_slice(block.get(..close).unwrap_or_default());
            *start = start.saturating_add(close);
            self.state = Part::Epilogue;
            return Ok(true);
        }
        // The delimiter line, then header lines until the blank one.
        let Some(k) = block
            .get(dash_at..)
            .and_then(|t| t.iter().position(|&c| c == b'\n'))
        else {
            return self.incomplete(block, end, max_record);
        };
        let delimiter_end = dash_at.saturating_add(k).saturating_add(1);
        let mut lines: Vec<(usize, usize)> = Vec::new();
        let mut pos = delimiter_end;
        let mut head_end = None;
        while let Some(k) = block
            .get(pos..)
            .and_then(|t| t.iter().position(|&c| c == b'\n'))
        {
            let line_end = pos.saturating_add(k).saturating_add(1);
            if matches!(block.get(pos..line_end), Some(b"\n" | b"\r\n")) {
                head_end = Some(line_end);
                break;
            }
            lines.push((pos, line_end));
            pos = line_end;
        }
        let Some(head_end) = head_end else {
            return self.incomplete(block, end, max_record);
        };
        // Bounded as while it was incomplete, however the body was cut.
        if head_end > max_record {
            return Err(StreamError::Oversize);
        }
        // Parse, and scan every header value.
        let mut name: Option<String> = None;
        let mut media: Option<String> = None;
        let mut content_type: Option<String> = None;
        let mut encoded = false;
        let mut head = Vec::with_capacity(head_end);
        let mut head_changed = false;
        head.extend_from_slice(block.get(..delimiter_end).unwrap_or_default());
        for &(s, e) in &lines {
            let line = block.get(s..e).unwrap_or_default();
            let text = String::from_utf8_lossy(line);
            if let Some((field, value)) = text.split_once(':') {
                match field.trim().to_ascii_lowercase().as_str() {
                    "content-disposition" => name = param(value, "name"),
                    "content-type" => {
                        content_type = Some(value.trim().to_owned());
                        media = value
                            .split(';')
                            .next()
                            .map(|m| m.trim().to_ascii_lowercase());
                    }
                    "content-transfer-encoding" => {
                        encoded = !matches!(
                            value.trim().to_ascii_lowercase().as_str(),
                            "7bit" | "8bit" | "binary"
                        );
                    }
                    _ => {}
                }
            }
            match scan_header_line(plan, line, hits)? {
                Some(masked) => {
                    head_changed = true;
                    head.extend_from_slice(&masked);
                }
                None => head.extend_from_slice(line),
            }
        }
        head.extend_from_slice(block.get(pos..head_end).unwrap_or_default());
        *start = start.saturating_add(head_end);
        let charset = charset_param(content_type.as_deref());
        let mut states = plan.roots.clone();
        let root = (0, states.len());
        let mut lower = String::new();
        let selected = name
            .as_deref()
            .and_then(|n| select_name(plan, &mut states, root, n, &mut lower));
        let roots = match name.as_deref() {
            Some(n) => field_states(plan, &mut states, root, n),
            None => plan.roots.clone(),
        };
        let how = match (selected, media.as_deref()) {
            (Some(rule), _) => {
                if plan.is_remove(rule) {
                    hit(hits, rule);
                    fed.changed = true;
                    self.state = Part::Dropped;
                    return Ok(true);
                }
                Held::Selected(rule)
            }
            (None, _) if encoded => {
                binary(plan, fed)?;
                fed.changed |= head_changed;
                fed.out.extend_from_slice(&head);
                self.state = Part::Passing;
                return Ok(true);
            }
            (None, None) => Held::Text(roots, charset),
            (None, Some(m)) if m.starts_with("text/") || m.starts_with("multipart/") => {
                Held::Text(roots, charset)
            }
            (None, Some(m)) if m == "application/json" || m.ends_with("+json") => {
                Held::Json(roots, charset)
            }
            (None, Some("application/x-www-form-urlencoded")) => Held::Form(charset),
            (None, Some(_)) => Held::Sniff(roots, charset),
        };
        self.state = Part::Held {
            head,
            head_changed,
            how,
        };
        Ok(true)
    }
}

/// A binary part: counted under `on_binary_part: pass`, else refused.
fn binary(plan: &Plan<'_>, fed: &mut Fed) -> Result<(), StreamError> {
    if plan.passes_binary_parts() {
        fed.binary_parts = fed.binary_parts.saturating_add(1);
        Ok(())
    } else {
        Err(StreamError::BinaryPart)
    }
}

/// Text the receivers ignore (preamble, epilogue): scanned all the same.
fn emit_text(
    plan: &Plan<'_>,
    text: &[u8],
    hits: &mut [u32],
    fed: &mut Fed,
) -> Result<(), StreamError> {
    match mask_text_bytes(plan, text, Vec::new(), hits)? {
        Some(masked) => {
            fed.changed = true;
            fed.out.extend_from_slice(&masked);
        }
        None => fed.out.extend_from_slice(text),
    }
    Ok(())
}

/// A header line with its value scanned by detectors and patterns.
fn scan_header_line(
    plan: &Plan<'_>,
    line: &[u8],
    hits: &mut [u32],
) -> Result<Option<Vec<u8>>, StreamError> {
    if !plan.scans() {
        return Ok(None);
    }
    let Some(colon) = line.iter().position(|&c| c == b':') else {
        return Ok(None);
    };
    let (field, value) = line.split_at(colon.saturating_add(1));
    let masked = match std::str::from_utf8(value) {
        Ok(text) => mask_text(plan, text, &mut Vec::new(), hits).map(String::into_bytes),
        Err(_) if plan.masks_bytes() => mask_bytes(plan, value, &mut Vec::new(), hits),
        Err(_) => return Err(StreamError::Mask(MaskError::NotUtf8)),
    };
    Ok(masked.map(|m| [field, m.as_slice()].concat()))
}

/// A parameter of a header value (`name="x"`, quoted or not, `\"` escapes).
fn param(value: &str, wanted: &str) -> Option<String> {
    let mut rest = value;
    while let Some(semi) = rest.find(';') {
        rest = rest.get(semi.saturating_add(1)..)?;
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (val, tail) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut out = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                out.push(n);
                            }
                        }
                        '"' => {
                            end = i.saturating_add(1);
                            break;
                        }
                        c => out.push(c),
                    }
                }
                (out, quoted.get(end..).unwrap_or(""))
            }
            None => {
                let stop = after.find(';').unwrap_or(after.len());
                (
                    after.get(..stop)?.trim().to_owned(),
                    after.get(stop..).unwrap_or(""),
                )
            }
        };
        if key.trim().eq_ignore_ascii_case(wanted) {
            return Some(val);
        }
        rest = tail;
    }
    None
}

fn charset_error(_: CharsetError) -> StreamError {
    StreamError::Charset
}

/// A held part, whole: its masked content, or `None` to keep it as is.
fn finish_held(
    plan: &Plan<'_>,
    how: &Held,
    content: &[u8],
    hits: &mut [u32],
    fed: &mut Fed,
) -> Result<Option<Vec<u8>>, StreamError> {
    let (roots, charset, as_json) = match how {
        Held::Selected(rule) => {
            hit(hits, *rule);
            let mut masked = String::new();
            plan.write_masked(*rule, &String::from_utf8_lossy(content), &mut masked);
            return Ok(Some(masked.into_bytes()));
        }
        Held::Form(charset) => {
            let decoded = decode(content, charset.as_deref()).map_err(charset_error)?;
            return match mask_form(plan, &decoded.bytes, hits)? {
                Some(masked) => Ok(Some(decoded.encode(&masked).map_err(charset_error)?)),
                None => Ok(None),
            };
        }
        Held::Text(roots, charset) => (roots, charset, false),
        Held::Json(roots, charset) => (roots, charset, true),
        Held::Sniff(roots, charset) => {
            let text = match decode(content, charset.as_deref()) {
                Ok(d) if d.transcoded() => true,
                Ok(_) => std::str::from_utf8(content).is_ok() && !content.contains(&0),
                Err(_) => false,
            };
            if !text {
                binary(plan, fed)?;
                return Ok(None);
            }
            (roots, charset, false)
        }
    };
    let decoded = decode(content, charset.as_deref()).map_err(charset_error)?;
    let masked = if as_json {
        let text = std::str::from_utf8(&decoded.bytes).map_err(|e| {
            StreamError::Mask(MaskError::MalformedJson {
                detail: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            })
        });
        let parsed = match text {
            Ok(text) if text.trim().is_empty() => Ok(None),
            Ok(text) => {
                json::mask_embedded(plan, text, roots.clone(), plan.max_json_depth(), hits)?.ok_or(
                    MaskError::MalformedJson {
                        detail: "a JSON part that is not JSON".into(),
                    },
                )
            }
            Err(_) => Err(MaskError::MalformedJson {
                detail: "a JSON part that is not UTF-8".into(),
            }),
        };
        match parsed {
            Ok(masked) => masked,
            Err(e) if plan.json_falls_back_to_text() => {
                fed.fallback = Some(e);
                mask_text_bytes(plan, &decoded.bytes, Vec::new(), hits)?
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        mask_text_bytes(plan, &decoded.bytes, roots.clone(), hits)?
    };
    match masked {
        Some(m) => Ok(Some(decoded.encode(&m).map_err(charset_error)?)),
        None => Ok(None),
    }
}
