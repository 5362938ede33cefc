//! Verifying records read back from a log or a collector's files
//! (`meshguard audit verify FILE`).
//!
//! A line holding [`RECORD_PREFIX`] followed by a JSON object with a `chain`
//! string is a record, and so is a bare JSON record line (a collector's
//! NDJSON); a line holding an OTLP JSON export request (a Collector's file
//! exporter) holds the records of its `meshguard.audit.request` log records,
//! whose attributes must match the sealed body; other lines are ignored, and those holding the prefix
//! without such an object after it are reported as **foreign** (a log line
//! echoing the marker, a torn line) without failing the check: a real record
//! that was damaged leaves a gap in its chain, which does fail it.
//! Records are grouped by chain, and each chain is checked in file order (or
//! in `seq` order, for a collector's file fed by concurrent deliveries): MAC,
//! contiguous `seq`, `prev` linking. Only the first break of each chain is
//! reported: after it, nothing later in that chain can be trusted. A text
//! without any record does not verify.
//!
//! Limit: deleting the newest records of a chain (truncation) leaves a valid,
//! shorter chain; the collector's record counts are the check for that.

use std::fmt;

use hashbrown::HashMap;
use serde::Deserialize;
use serde_json::Value;

use super::keys::{b64url_seal, KeyLookup};
use super::record::{Record, GENESIS_PREV, RECORD_PREFIX, RECORD_VERSION};
use crate::canonical::{sha256_hex, to_canonical_bytes};
use crate::config::StrictObject;

/// What kind of break a chain has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakKind {
    /// The line has the record prefix but is not a valid v1 record.
    Malformed,
    /// A record format this build does not know.
    UnsupportedVersion,
    /// Signed with a key id that is not among the keys given.
    UnknownKeyId,
    /// The MAC does not match: the record was edited (or signed with another key).
    BadMac,
    /// `seq` jumps forward: records between are missing.
    MissingRecords,
    /// `prev` does not match the previous record: it was replaced, or this one forged.
    Modified,
    /// A `seq` seen before in the chain.
    DuplicateSeq,
    /// Records of the chain are not in `seq` order.
    OutOfOrder,
    /// An OTLP attribute differs from the sealed record it was exported with.
    AttributeMismatch,
}

impl BreakKind {
    /// A stable code, for machine-readable output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnknownKeyId => "unknown_kid",
            Self::BadMac => "bad_mac",
            Self::MissingRecords => "missing_records",
            Self::Modified => "modified",
            Self::DuplicateSeq => "duplicate_seq",
            Self::OutOfOrder => "out_of_order",
            Self::AttributeMismatch => "attribute_mismatch",
        }
    }
}

/// The first problem found in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// 1-based line number in the verified text.
    pub line: usize,
    /// The `seq` of the record on that line, when readable.
    pub seq: Option<u64>,
    pub kind: BreakKind,
    pub message: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One chain's verification result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub chain: String,
    /// Records of this chain found in the text.
    pub records: usize,
    /// Records verified before the first break (all of them when there is none).
    pub verified: usize,
    /// `seq` of the chain's first record in the text. Above 0, the chain's
    /// beginning is not in the text (log rotation, or deleted records).
    pub first_seq: Option<u64>,
    /// `seq` of the last verified record.
    pub last_seq: Option<u64>,
    pub first_break: Option<ChainBreak>,
}

impl ChainReport {
    pub fn is_ok(&self) -> bool {
        self.first_break.is_none()
    }
}

/// A line with the record prefix that is not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub line: usize,
    pub message: String,
}

/// The result of [`verify_records`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chains in the order their first record appears.
    pub chains: Vec<ChainReport>,
    /// Lines holding the record prefix that are not records (ignored).
    pub foreign: Vec<LineProblem>,
    /// JSON objects with a repeated key that name no chain: a record edited so
    /// that readers disagree on it (fails the check).
    pub unreadable: Vec<LineProblem>,
}

impl VerifyReport {
    /// There is at least one record, and no chain has a break.
    pub fn is_ok(&self) -> bool {
        !self.chains.is_empty()
            && self.unreadable.is_empty()
            && self.chains.iter().all(ChainReport::is_ok)
    }

    /// Record lines found.
    pub fn record_count(&self) -> usize {
        self.chains.iter().map(|c| c.records).sum::<usize>()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.chains {
            let range = match (c.first_seq, c.last_seq) {
                (Some(a), Some(b)) => format!(" (seq {a}..={b})"),
                _ => String::new(),
            };
            match &c.first_break {
                None => writeln!(f, "chain {:?}: ok, {} records{range}", c.chain, c.records)?,
                Some(b) => writeln!(
                    f,
                    "chain {:?}: BROKEN after {} of {} records{range}: {b}",
                    c.chain, c.verified, c.records
                )?,
            }
        }
        for p in &self.unreadable {
            writeln!(f, "line {}: unreadable: {}", p.line, p.message)?;
        }
        for p in &self.foreign {
            writeln!(f, "line {}: foreign: {}", p.line, p.message)?;
        }
        Ok(())
    }
}

/// What phase 1 learned about one record line.
#[derive(Debug)]
struct Entry {
    line: usize,
    seq: Option<u64>,
    prev: String,
    /// SHA-256 of the record's canonical JSON, `mac` included.
    hash: String,
    /// A problem found in the record alone.
    problem: Option<(BreakKind, String)>,
}

/// Whether `line` is a record written without the log prefix (a collector's
/// NDJSON): a line starting with `{` that is a JSON object with a `chain` or a
/// `mac`, or that is not JSON at all (a torn record, reported foreign). Other
/// JSON objects, such as Envoy's JSON access log lines, are not records.
fn is_bare_record(line: &str) -> bool {
    let line = line.trim();
    if !line.starts_with('{') {
        return false;
    }
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(m)) => m.contains_key("chain") || m.contains_key("mac"),
        Ok(_) => false,
        Err(_) => true,
    }
}

/// How records are ordered for the chain checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// The order of the lines (an Envoy log: one VM writes its chain in order).
    #[default]
    File,
    /// By `seq` within each chain (a collector's file, where concurrent
    /// deliveries may land out of order). Reordering is then not a break;
    /// gaps, duplicates, edits and broken links still are.
    Seq,
}

/// Verifies every record in `text` with `keys` (key id to key bytes), in file order.
pub fn verify_records<K: KeyLookup + ?Sized>(text: &str, keys: &K) -> VerifyReport {
    verify_records_in(text, keys, Order::File)
}

/// [`verify_records`] with the chain order to check.
pub fn verify_records_in<K: KeyLookup + ?Sized>(
    text: &str,
    keys: &K,
    order: Order,
) -> VerifyReport {
    let mut found = Found {
        report: VerifyReport::default(),
        chain_index: HashMap::new(),
        entries: Vec::new(),
    };
    for (line_no, line) in (1usize..).zip(text.lines()) {
        if let Some(exported) = otlp_records(line) {
            for e in exported {
                found.record(line_no, &e.body, Some(&e.attributes), keys);
            }
            continue;
        }
        let json = match line.split_once(RECORD_PREFIX) {
            Some((_, record)) => record.trim_end(),
            None if is_bare_record(line) => line.trim(),
            None => continue,
        };
        found.record(line_no, json, None, keys);
    }
    let Found {
        mut report,
        mut entries,
        ..
    } = found;
    for (chain, list) in report.chains.iter_mut().zip(&mut entries) {
        if order == Order::Seq {
            list.sort_by_key(|e| e.seq.unwrap_or(u64::MAX));
        }
        check_chain(chain, list);
    }
    report
}

/// The records found so far, by chain.
struct Found {
    report: VerifyReport,
    chain_index: HashMap<String, usize>,
    entries: Vec<Vec<Entry>>,
}

impl Found {
    /// One record's JSON text, on line `line_no`, with the OTLP attributes it
    /// was exported with.
    fn record<K: KeyLookup + ?Sized>(
        &mut self,
        line_no: usize,
        json: &str,
        attributes: Option<&[(String, Value)]>,
        keys: &K,
    ) {
        let report = &mut self.report;
        let lenient = serde_json::from_str::<Value>(json);
        // Parsers disagree on which of two equal keys counts (serde_json keeps
        // the last): a record with a repeated key would verify as one record and
        // read as another elsewhere, so it is never foreign and never verifies.
        let strict = serde_json::from_str::<StrictObject>(json).map(|o| Value::Object(o.0));
        let repeated = lenient.as_ref().is_ok_and(Value::is_object) && strict.is_err();
        let Some(chain) = lenient
            .as_ref()
            .ok()
            .and_then(|v| v.get("chain"))
            .and_then(Value::as_str)
        else {
            if let (true, Err(e)) = (repeated, &strict) {
                report.unreadable.push(LineProblem {
                    line: line_no,
                    message: format!("not a JSON record: {e}"),
                });
                return;
            }
            let message = match &lenient {
                Err(e) => format!("not a JSON record: {e}"),
                Ok(_) => {
                    "not a record: no JSON object with a `chain` string follows the marker".into()
                }
            };
            report.foreign.push(LineProblem {
                line: line_no,
                message,
            });
            return;
        };
        let entries = &mut self.entries;
        let index = *self.chain_index.entry(chain.to_owned()).or_insert_with(|| {
            report.chains.push(ChainReport {
                chain: chain.to_owned(),
                records: 0,
                verified: 0,
                first_seq: None,
                last_seq: None,
                first_break: None,
            });
            let index = entries.len();
            entries.push(Vec::new());
            index
        });
        let entry = match &strict {
            Ok(value) => examine(line_no, value, attributes, keys),
            Err(e) => {
                let value = lenient.as_ref().ok();
                Entry {
                    line: line_no,
                    seq: value.and_then(|v| v.get("seq")).and_then(Value::as_u64),
                    prev: String::new(),
                    hash: String::new(),
                    problem: Some((
                        BreakKind::Malformed,
                        format!("the record is not strict JSON: {e}"),
                    )),
                }
            }
        };
        if let Some(list) = entries.get_mut(index) {
            list.push(entry);
        }
    }
}

/// The meshguard records of a line holding an OTLP JSON export request.
fn otlp_records(line: &str) -> Option<Vec<super::otlp::Exported>> {
    let line = line.trim();
    if !line.starts_with('{') || !line.contains("\"resourceLogs\"") {
        return None;
    }
    let value = serde_json::from_str::<Value>(line).ok()?;
    super::otlp::exported_records(&value)
}

/// Phase 1: what a record says about itself (structure, version, MAC).
fn examine<K: KeyLookup + ?Sized>(
    line: usize,
    value: &Value,
    attributes: Option<&[(String, Value)]>,
    keys: &K,
) -> Entry {
    let seq = value.get("seq").and_then(Value::as_u64);
    let mut entry = Entry {
        line,
        seq,
        prev: value
            .get("prev")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        hash: to_canonical_bytes(value)
            .map(|b| sha256_hex(&b))
            .unwrap_or_default(),
        problem: None,
    };
    let at = match seq {
        Some(s) => format!("record seq {s}"),
        None => "record".into(),
    };
    let version = value.get("v");
    if version.is_some_and(|v| v.as_u64() != Some(u64::from(RECORD_VERSION))) {
        entry.problem = Some((
            BreakKind::UnsupportedVersion,
            format!(
                "{at} has format version {}; this build reads v={RECORD_VERSION}",
                version.map(Value::to_string).unwrap_or_default()
            ),
        ));
        return entry;
    }
    let record = match Record::deserialize(value) {
        Ok(r) => r,
        Err(e) => {
            entry.problem = Some((BreakKind::Malformed, format!("{at} is malformed: {e}")));
            return entry;
        }
    };
    let Some(key) = keys.key(&record.kid) else {
        entry.problem = Some((
            BreakKind::UnknownKeyId,
            format!(
                "{at} is signed with key id {:?}, which is not among the keys given",
                record.kid
            ),
        ));
        return entry;
    };
    let mut unsigned = value.clone();
    if let Value::Object(m) = &mut unsigned {
        m.remove("mac");
    }
    let mac_ok = match (to_canonical_bytes(&unsigned), b64url_seal(&record.mac)) {
        (Ok(bytes), Some(seal)) => key.verify(&bytes, &seal),
        _ => false,
    };
    if let (true, Some(attributes)) = (mac_ok, attributes) {
        if let Some((key, exported)) = super::otlp::attribute_mismatch(&record, attributes) {
            entry.problem = Some((
                BreakKind::AttributeMismatch,
                format!(
                    "{at}: the OTLP attribute {key:?} ({exported}) differs from the sealed record (edited after export?)"
                ),
            ));
            return entry;
        }
    }
    if !mac_ok {
        entry.problem = Some((
            BreakKind::BadMac,
            format!(
                "{at}: the {} does not match: the record was modified (or signed with another key named {:?})",
                match key.algorithm() {
                    super::keys::Algorithm::HmacSha256 => "MAC",
                    super::keys::Algorithm::Ed25519 => "Ed25519 signature",
                },
                record.kid
            ),
        ));
    }
    entry
}

/// Phase 2: the chain's links, in file order; stops at the first break.
fn check_chain(report: &mut ChainReport, entries: &[Entry]) {
    // Where each seq first appears, to tell reordering from deletion.
    let mut first_line_of: HashMap<u64, usize> = HashMap::new();
    for e in entries {
        if let Some(seq) = e.seq {
            first_line_of.entry(seq).or_insert(e.line);
        }
    }
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut last: Option<&Entry> = None;
    report.records = entries.len();
    for e in entries {
        let fail = |kind: BreakKind, message: String| ChainBreak {
            line: e.line,
            seq: e.seq,
            kind,
            message,
        };
        let outcome = match (&e.problem, e.seq) {
            (Some((kind, message)), _) => Err(fail(*kind, message.clone())),
            (None, None) => Err(fail(BreakKind::Malformed, "record without a seq".into())),
            (None, Some(seq)) => link(e, seq, last, report.first_seq, &seen, &first_line_of)
                .map_err(|(kind, message)| fail(kind, message)),
        };
        match outcome {
            Ok(seq) => {
                report.verified = report.verified.saturating_add(1);
                report.first_seq.get_or_insert(seq);
                report.last_seq = Some(seq);
                seen.insert(seq, e.line);
                last = Some(e);
            }
            Err(b) => {
                report.first_break = Some(b);
                return;
            }
        }
    }
}

/// Checks that record `e` (with `seq`) follows `last`.
fn link(
    e: &Entry,
    seq: u64,
    last: Option<&Entry>,
    first_seq: Option<u64>,
    seen: &HashMap<u64, usize>,
    first_line_of: &HashMap<u64, usize>,
) -> Result<u64, (BreakKind, String)> {
    let Some(last) = last else {
        if seq == 0 && e.prev != GENESIS_PREV {
            return Err((
                BreakKind::Modified,
                "record seq 0 does not start a chain: its prev is not 64 zeros (modified?)".into(),
            ));
        }
        return Ok(seq);
    };
    let last_seq = last.seq.unwrap_or_default();
    if let Some(line) = seen.get(&seq) {
        return Err((
            BreakKind::DuplicateSeq,
            format!(
                "seq {seq} appears again (first on line {line}): a duplicated or replayed record"
            ),
        ));
    }
    if seq <= last_seq {
        return Err((
            BreakKind::OutOfOrder,
            format!(
                "seq {seq} appears after seq {last_seq} (the chain starts at seq {} here): records reordered or inserted",
                first_seq.unwrap_or_default()
            ),
        ));
    }
    let expected = last_seq.saturating_add(1);
    if let Some(missing) = seq.checked_sub(expected).filter(|&m| m > 0) {
        if let Some(line) = first_line_of.get(&expected).filter(|&&l| l > e.line) {
            return Err((
                BreakKind::OutOfOrder,
                format!("seq {seq} follows {last_seq}, but seq {expected} comes later (line {line}): records reordered"),
            ));
        }
        let noun = if missing == 1 { "record" } else { "records" };
        return Err((
            BreakKind::MissingRecords,
            format!("seq {seq} follows {last_seq}: {missing} {noun} missing (deleted?)"),
        ));
    }
    if e.prev != last.hash {
        return Err((
            BreakKind::Modified,
            format!(
                "record seq {seq} was modified or the previous one was replaced: its prev does not match the hash of seq {last_seq} (line {})",
                last.line
            ),
        ));
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::is_bare_record;

    #[test]
    fn bare_lines_are_records_only_when_they_look_like_records() {
        for (line, want) in [
            (r#"{"chain":"a","seq":0}"#, true),
            (r#"  {"mac":"x"}  "#, true),
            (r#"{"chain":"a""#, true),
            (r#"{"authority":"x","path":"/"}"#, false),
            (r#"[info] meshguard-audit-record: {"chain":"a"}"#, false),
            ("[1]", false),
            ("", false),
        ] {
            assert_eq!(is_bare_record(line), want, "{line:?}");
        }
    }
}
