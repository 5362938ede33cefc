use std::collections::HashMap;

use serde_json::{json, Value};

use super::{KEY, OTHER_KEY};
use crate::audit::record::GENESIS_PREV;
use crate::audit::{
    audit_id, verify_records, verify_records_in, BreakKind, Chain, Order, Record, RecordError,
    RecordFields, RECORD_PREFIX,
};
use crate::canonical::{sha256_hex, to_canonical_bytes};
use crate::request::RequestInfo;

const ENVOY_PREFIX: &str =
    "[2024-06-10 12:00:00.000][27][info][wasm] [source/extensions/common/wasm/context.cc:1195] wasm log meshguard-audit root vm: ";

fn keys() -> HashMap<String, Vec<u8>> {
    HashMap::from([
        ("k1".to_string(), KEY.to_vec()),
        ("k2".to_string(), OTHER_KEY.to_vec()),
    ])
}

fn fields(chain: &str, i: u64) -> RecordFields {
    let path = format!("/v1//items/./{i}?token=secret");
    let request = RequestInfo {
        path: &path,
        method: "post",
        host: "API.example.com:8443",
    };
    let mut f = RecordFields::new(
        audit_id(chain, i),
        1_718_000_000_000 + i,
        &request,
        "default",
        [u8::try_from(i % 256).unwrap(); 32],
    );
    f.peer = (i % 3 != 0).then(|| "spiffe://cluster.local/ns/shop/sa/frontend".into());
    f.status = Some(200 + u16::try_from(i % 5).unwrap());
    f.duration_ms = (i % 2 == 0).then_some(i);
    f.decisions.insert("identity".into(), json!("allowed"));
    f.config_fingerprint = Some("c0ffee".into());
    f
}

fn records(chain: &str, n: u64) -> Vec<Record> {
    let mut c = Chain::new(chain);
    (0..n)
        .map(|i| c.seal(fields(chain, i), KEY, "k1").unwrap())
        .collect()
}

fn log(records: &[Record]) -> String {
    let mut out = String::from("[2024-06-10 11:59:59.000][1][info][main] starting\n");
    for r in records {
        out.push_str(ENVOY_PREFIX);
        out.push_str(&r.to_line());
        out.push('\n');
        out.push_str("[2024-06-10 12:00:00.001][27][debug][http] unrelated line\n");
    }
    out
}

/// Line number of the `i`-th record in `log(records)`.
fn line_of(i: usize) -> usize {
    2 + 2 * i
}

/// The `i`-th record line edited through its JSON.
fn edit_line(
    text: &str,
    i: usize,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let line = &mut lines[line_of(i) - 1];
    let start = line.find(RECORD_PREFIX).unwrap() + RECORD_PREFIX.len();
    let mut value: Value = serde_json::from_str(&line[start..]).unwrap();
    edit(value.as_object_mut().unwrap());
    *line = format!("{}{}", &line[..start], value);
    lines.join("\n")
}

#[test]
fn records_are_sealed_into_a_linked_chain() {
    let rs = records("vm-a", 3);
    assert_eq!(rs[0].seq, 0);
    assert_eq!(rs[0].prev, GENESIS_PREV);
    for pair in rs.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].prev, pair[0].chain_hash().unwrap());
        // prev is the SHA-256 of the previous line's JSON text, as written.
        let line = pair[0].to_line();
        assert_eq!(
            pair[1].prev,
            sha256_hex(line.strip_prefix(RECORD_PREFIX).unwrap().as_bytes())
        );
    }
    let r = &rs[1];
    assert_eq!(r.v, 1);
    assert_eq!(r.chain, "vm-a");
    assert_eq!(r.id, "vm-a-1");
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/items/1", "canonical path, no query");
    assert_eq!(r.host, "api.example.com:8443");
    assert_eq!(r.command_sha256, "01".repeat(32));
    assert_eq!(r.kid, "k1");
    assert_eq!(r.mac.len(), 43);
}

#[test]
fn a_record_line_is_the_prefix_and_canonical_json() {
    let r = &records("vm-a", 1)[0];
    let line = r.to_line();
    let json = line.strip_prefix("meshguard-audit-record: ").unwrap();
    let value: Value = serde_json::from_str(json).unwrap();
    assert_eq!(to_canonical_bytes(&value).unwrap(), json.as_bytes());
    assert_eq!(
        value,
        serde_json::to_value(r).unwrap(),
        "Serialize matches the line"
    );
    assert_eq!(&serde_json::from_str::<Record>(json).unwrap(), r);
    assert!(!json.contains('\n'));
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "chain",
            "command",
            "command_sha256",
            "config_fingerprint",
            "decisions",
            "duration_ms",
            "host",
            "id",
            "kid",
            "mac",
            "method",
            "path",
            "peer",
            "prev",
            "seq",
            "status",
            "ts_ms",
            "v"
        ]
    );
}

#[test]
fn records_holding_floats_verify() {
    // The verifier re-reads each line: a float read one ULP off changed the
    // canonical form, so an untouched record failed its MAC (and the next its prev).
    let mut chain = Chain::new("vm-f");
    let rs: Vec<Record> = [
        0.459_999_999_999_999_96,
        0.430_000_000_000_000_05,
        3.801_537_450_981_216_7e-272,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, x)| {
        let mut f = fields("vm-f", i as u64);
        f.decisions.insert("score".into(), json!(x));
        chain.seal(f, KEY, "k1").unwrap()
    })
    .collect();
    let report = verify_records(&log(&rs), &keys());
    assert!(report.is_ok(), "{report}");
}

#[test]
fn a_chain_of_1000_records_verifies() {
    let rs = records("vm-a", 1000);
    let report = verify_records(&log(&rs), &keys());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.record_count(), 1000);
    assert_eq!(report.chains.len(), 1);
    let c = &report.chains[0];
    assert_eq!(
        (c.chain.as_str(), c.records, c.verified),
        ("vm-a", 1000, 1000)
    );
    assert_eq!((c.first_seq, c.last_seq), (Some(0), Some(999)));
    assert_eq!(
        report.to_string(),
        "chain \"vm-a\": ok, 1000 records (seq 0..=999)\n"
    );
}

#[test]
fn editing_any_field_of_a_record_breaks_the_chain_at_that_record() {
    let rs = records("vm-a", 10);
    let text = log(&rs);
    let target = 5;
    let field_names: Vec<String> = rs[target]
        .to_value(true)
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(field_names.len(), 18);
    for name in field_names {
        let edited = edit_line(&text, target, |m| {
            let v = m.get_mut(&name).unwrap();
            *v = match v.take() {
                Value::String(_) if name == "mac" => {
                    // A well-formed MAC, of another record.
                    Value::String(records("vm-b", 1)[0].mac.clone())
                }
                Value::String(s) => Value::String(format!("{s}x")),
                Value::Number(n) => Value::from(n.as_u64().unwrap() + 1),
                Value::Null => Value::from(1),
                Value::Object(mut o) => {
                    o.insert("identity".into(), json!("denied"));
                    Value::Object(o)
                }
                other => panic!("unexpected {other}"),
            };
        });
        let report = verify_records(&edited, &keys());
        assert!(!report.is_ok(), "editing {name}");
        if name == "chain" {
            // The record moved to another chain: a hole in the first, a bad MAC in the second.
            let a = &report.chains[0];
            let b = a.first_break.as_ref().unwrap();
            assert_eq!(
                (b.kind, b.line, b.seq),
                (BreakKind::MissingRecords, line_of(target + 1), Some(6))
            );
            let moved = report.chains[1].first_break.as_ref().unwrap();
            assert_eq!(
                (moved.kind, moved.line),
                (BreakKind::BadMac, line_of(target))
            );
            continue;
        }
        let c = &report.chains[0];
        let b = c.first_break.as_ref().unwrap();
        assert_eq!(b.line, line_of(target), "editing {name}: {b}");
        let want = match name.as_str() {
            "v" => BreakKind::UnsupportedVersion,
            "kid" => BreakKind::UnknownKeyId,
            _ => BreakKind::BadMac,
        };
        assert_eq!(b.kind, want, "editing {name}: {b}");
        assert_eq!(c.verified, target, "editing {name}");
    }
}

#[test]
fn a_re_signed_edit_is_caught_by_the_next_record() {
    // Someone holding the key rewrites record 5 with a valid MAC: record 6's
    // prev no longer matches.
    let mut rs = records("vm-a", 10);
    let mut forged = rs[5].clone();
    forged.path = "/v1/innocent".into();
    let unsigned = forged.canonical_bytes(false).unwrap();
    forged.mac =
        crate::audit::keys::b64url(&crate::audit::keys::MacKey::new(KEY).unwrap().tag(&unsigned));
    rs[5] = forged;
    let report = verify_records(&log(&rs), &keys());
    let b = report.chains[0].first_break.as_ref().unwrap();
    assert_eq!(
        (b.kind, b.line, b.seq),
        (BreakKind::Modified, line_of(6), Some(6))
    );
    assert_eq!(
        b.message,
        format!(
            "record seq 6 was modified or the previous one was replaced: its prev does not match the hash of seq 5 (line {})",
            line_of(5)
        )
    );
    assert_eq!(report.chains[0].verified, 6);
}

#[test]
fn deleted_reordered_and_duplicated_records_break_the_chain() {
    let rs = records("vm-a", 10);
    let without = |skip: &[usize]| -> Vec<Record> {
        rs.iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i))
            .map(|(_, r)| r.clone())
            .collect()
    };
    let mut swapped = rs.clone();
    swapped.swap(3, 4);
    let mut duplicated = rs.clone();
    duplicated.insert(5, rs[3].clone());
    let mut moved_back = rs.clone();
    moved_back.push(rs[0].clone());
    let mut forged_genesis = records("vm-a", 1);
    forged_genesis[0].prev = "1".repeat(64);
    let unsigned = forged_genesis[0].canonical_bytes(false).unwrap();
    forged_genesis[0].mac =
        crate::audit::keys::b64url(&crate::audit::keys::MacKey::new(KEY).unwrap().tag(&unsigned));
    // (records, break line index, kind, message)
    let cases: Vec<(Vec<Record>, usize, BreakKind, &str)> = vec![
        (
            without(&[4]),
            4,
            BreakKind::MissingRecords,
            "seq 5 follows 3: 1 record missing (deleted?)",
        ),
        (
            without(&[2, 3, 4]),
            2,
            BreakKind::MissingRecords,
            "seq 5 follows 1: 3 records missing (deleted?)",
        ),
        (
            swapped,
            3,
            BreakKind::OutOfOrder,
            "seq 4 follows 2, but seq 3 comes later (line 10): records reordered",
        ),
        (
            duplicated,
            5,
            BreakKind::DuplicateSeq,
            "seq 3 appears again (first on line 8): a duplicated or replayed record",
        ),
        (
            moved_back,
            10,
            BreakKind::DuplicateSeq,
            "seq 0 appears again (first on line 2): a duplicated or replayed record",
        ),
        (
            forged_genesis,
            0,
            BreakKind::Modified,
            "record seq 0 does not start a chain: its prev is not 64 zeros (modified?)",
        ),
    ];
    for (list, at, kind, message) in cases {
        let report = verify_records(&log(&list), &keys());
        let b = report.chains[0].first_break.clone().unwrap();
        assert_eq!(
            (b.line, b.kind, b.message.as_str()),
            (line_of(at), kind, message)
        );
        assert_eq!(report.chains[0].verified, at);
        assert!(!report.is_ok());
    }
}

#[test]
fn records_older_than_the_first_seen_are_out_of_order() {
    let rs = records("vm-a", 6);
    let list = vec![rs[3].clone(), rs[4].clone(), rs[1].clone()];
    let report = verify_records(&log(&list), &keys());
    let b = report.chains[0].first_break.clone().unwrap();
    assert_eq!(b.kind, BreakKind::OutOfOrder);
    assert_eq!(
        b.message,
        "seq 1 appears after seq 4 (the chain starts at seq 3 here): records reordered or inserted"
    );
}

#[test]
fn interleaved_chains_verify_independently() {
    let a = records("vm-a", 50);
    let b = records("vm-b", 30);
    let mut mixed = Vec::new();
    for i in 0..50 {
        mixed.push(a[i].clone());
        if i < 30 {
            mixed.push(b[i].clone());
        }
    }
    let report = verify_records(&log(&mixed), &keys());
    assert!(report.is_ok(), "{report}");
    let summary: Vec<(&str, usize)> = report
        .chains
        .iter()
        .map(|c| (c.chain.as_str(), c.verified))
        .collect();
    assert_eq!(summary, [("vm-a", 50), ("vm-b", 30)]);

    // A hole in one chain leaves the other intact.
    mixed.retain(|r| !(r.chain == "vm-b" && r.seq == 10));
    let report = verify_records(&log(&mixed), &keys());
    assert!(report.chains[0].is_ok());
    let broken = report.chains[1].first_break.as_ref().unwrap();
    assert_eq!(broken.kind, BreakKind::MissingRecords);
    assert_eq!(broken.seq, Some(11));
}

#[test]
fn an_unknown_key_id_is_a_break_and_rotated_keys_verify() {
    let mut c = Chain::new("vm-a");
    let mut rs = Vec::new();
    for i in 0..4 {
        rs.push(c.seal(fields("vm-a", i), KEY, "k1").unwrap());
    }
    for i in 4..8 {
        rs.push(c.seal(fields("vm-a", i), OTHER_KEY, "k2").unwrap());
    }
    let text = log(&rs);
    assert!(verify_records(&text, &keys()).is_ok());
    let only_k1 = HashMap::from([("k1".to_string(), KEY.to_vec())]);
    let report = verify_records(&text, &only_k1);
    let b = report.chains[0].first_break.clone().unwrap();
    assert_eq!(
        (b.kind, b.line, b.seq),
        (BreakKind::UnknownKeyId, line_of(4), Some(4))
    );
    assert_eq!(
        b.message,
        "record seq 4 is signed with key id \"k2\", which is not among the keys given"
    );
    // The right kid with the wrong key bytes is a bad MAC.
    let swapped = HashMap::from([
        ("k1".to_string(), OTHER_KEY.to_vec()),
        ("k2".to_string(), KEY.to_vec()),
    ]);
    let b = verify_records(&text, &swapped).chains[0]
        .first_break
        .clone()
        .unwrap();
    assert_eq!((b.kind, b.line), (BreakKind::BadMac, line_of(0)));
}

#[test]
fn truncation_and_a_missing_beginning_are_not_breaks() {
    // Documented limits: the chain alone cannot tell that its newest records
    // were deleted, and a log that starts mid-chain verifies from there.
    let rs = records("vm-a", 20);
    let report = verify_records(&log(&rs[..12]), &keys());
    assert!(report.is_ok());
    let report = verify_records(&log(&rs[7..]), &keys());
    assert!(report.is_ok());
    assert_eq!(report.chains[0].first_seq, Some(7));
}

#[test]
fn foreign_lines_holding_the_marker_are_reported_without_failing() {
    let rs = records("vm-a", 3);
    let mut text = log(&rs);
    text.push_str("x meshguard-audit-record: {not json\n");
    text.push_str("meshguard-audit-record: {\"seq\": 1}\n");
    text.push_str("meshguard-audit-record: [1]\n");
    text.push_str("path=\"/meshguard-audit-record: {\\\"chain\\\":\\\"vm-a\\\"}\" id=1\n");
    let report = verify_records(&text, &keys());
    assert!(report.is_ok(), "{report}");
    let lines: Vec<usize> = report.foreign.iter().map(|p| p.line).collect();
    assert_eq!(lines, [8, 9, 10, 11]);
    assert!(report.foreign[0]
        .message
        .starts_with("not a JSON record: key must be a string"));
    assert_eq!(
        report.foreign[1].message,
        "not a record: no JSON object with a `chain` string follows the marker"
    );
    assert_eq!(report.record_count(), 3);
    // Still not ok: nothing but foreign lines, or a damaged record in the
    // middle of a chain (its gap breaks the chain).
    let only_foreign = text.lines().skip(7).collect::<Vec<_>>().join("\n");
    let report = verify_records(&only_foreign, &keys());
    assert!(!report.is_ok());
    assert_eq!(report.foreign.len(), 4);
    let torn = text.replacen(&rs[1].to_line()[40..], "", 1);
    let report = verify_records(&torn, &keys());
    assert_eq!(report.foreign.len(), 5, "{report}");
    assert_eq!(
        report.chains[0].first_break.as_ref().unwrap().kind,
        BreakKind::MissingRecords
    );
    assert!(!verify_records("", &keys()).is_ok());
}

#[test]
fn a_record_line_with_a_repeated_key_breaks_its_chain() {
    // serde_json keeps the last of two equal keys, other parsers the first: a
    // line with `"status":599` added before the signed status used to verify,
    // while a first-wins reader saw 599.
    let rs = records("vm-a", 2);
    let text = log(&rs);
    let forged = text.replacen("{\"chain\"", "{\"status\":599,\"chain\"", 1);
    assert_ne!(forged, text);
    let report = verify_records(&forged, &keys());
    assert!(!report.is_ok(), "{report}");
    let b = report.chains[0].first_break.as_ref().unwrap();
    assert_eq!((b.line, b.kind), (line_of(0), BreakKind::Malformed));
    assert!(
        b.message
            .starts_with("the record is not strict JSON: duplicate key \"status\""),
        "{}",
        b.message
    );
    // The same key in a nested object is refused as well.
    let nested = text.replacen("{\"identity\"", "{\"identity\":\"denied\",\"identity\"", 1);
    assert_ne!(nested, text);
    assert!(!verify_records(&nested, &keys()).is_ok());
}

#[test]
fn a_collector_file_out_of_order_verifies_by_seq() {
    let rs = records("vm-a", 6);
    let mut lines: Vec<String> = rs.iter().map(Record::to_line).collect();
    lines.swap(1, 4);
    let text = lines.join("\n");
    assert_eq!(
        verify_records(&text, &keys()).chains[0]
            .first_break
            .as_ref()
            .unwrap()
            .kind,
        BreakKind::OutOfOrder
    );
    assert!(verify_records_in(&text, &keys(), Order::Seq).is_ok());
    // A gap or a duplicate is still a break in seq order.
    lines.remove(2);
    let gap = lines.join("\n");
    let report = verify_records_in(&gap, &keys(), Order::Seq);
    assert_eq!(
        report.chains[0].first_break.as_ref().unwrap().kind,
        BreakKind::MissingRecords
    );
    lines.push(lines[0].clone());
    let report = verify_records_in(&lines.join("\n"), &keys(), Order::Seq);
    assert!(!report.is_ok());
}

#[test]
fn unknown_fields_and_versions_are_breaks() {
    let rs = records("vm-a", 3);
    let text = log(&rs);
    let extra = edit_line(&text, 1, |m| {
        m.insert("note".into(), json!("added"));
    });
    let b = verify_records(&extra, &keys()).chains[0]
        .first_break
        .clone()
        .unwrap();
    assert_eq!(b.kind, BreakKind::Malformed);
    assert!(
        b.message
            .starts_with("record seq 1 is malformed: unknown field `note`"),
        "{}",
        b.message
    );
    let missing = edit_line(&text, 1, |m| {
        m.remove("peer");
    });
    let b = verify_records(&missing, &keys()).chains[0]
        .first_break
        .clone()
        .unwrap();
    assert_eq!(
        b.kind,
        BreakKind::BadMac,
        "a removed null field changes the MAC input"
    );
    let v2 = edit_line(&text, 2, |m| {
        m.insert("v".into(), json!(2));
    });
    let b = verify_records(&v2, &keys()).chains[0]
        .first_break
        .clone()
        .unwrap();
    assert_eq!(
        (b.kind, b.message.as_str()),
        (
            BreakKind::UnsupportedVersion,
            "record seq 2 has format version 2; this build reads v=1"
        )
    );
}

#[test]
fn reformatting_a_line_does_not_break_it() {
    let rs = records("vm-a", 3);
    let text = log(&rs);
    let pretty = edit_line(&text, 1, |_| {}); // re-serialized by serde_json: same canonical form
    assert!(verify_records(&pretty, &keys()).is_ok());
    let spaced = text
        .replacen("{\"chain\"", "{ \"chain\" ", 1)
        .replace("\n", "\r\n");
    assert!(verify_records(&spaced, &keys()).is_ok());
}

#[test]
fn a_record_that_cannot_be_sealed_leaves_the_chain_unchanged() {
    let mut c = Chain::new("vm-a");
    c.seal(fields("vm-a", 0), KEY, "k1").unwrap();
    let before = c.clone();
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let mut f = fields("vm-a", 1);
    f.decisions.insert("deep".into(), deep);
    assert_eq!(c.seal(f, KEY, "k1"), Err(RecordError::TooDeep));
    assert_eq!(c, before);
    assert_eq!(c.next_seq(), 1);
    assert_eq!(c.seal(fields("vm-a", 1), KEY, "k1").unwrap().seq, 1);
}

#[test]
fn bare_records_of_a_collector_file_verify_like_log_lines() {
    let rs = records("vm-a", 4);
    let ndjson: String = rs
        .iter()
        .map(|r| {
            format!(
                "{}\n",
                String::from_utf8(r.canonical_bytes(true).unwrap()).unwrap()
            )
        })
        .collect();
    let report = verify_records(&ndjson, &keys());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.record_count(), 4);
    // JSON lines that are not records (an access log) are ignored; a torn
    // record is foreign.
    let mixed =
        format!("{{\"path\":\"/x\",\"code\":200}}\n{ndjson}{{\"chain\":\"vm-a\",\"seq\":4,\n");
    let report = verify_records(&mixed, &keys());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.foreign.len(), 1);
}

#[test]
fn a_record_whose_chain_is_repeated_never_verifies_nor_passes_as_foreign() {
    let rs = records("vm-a", 3);
    let text = log(&rs);
    // The repeated `chain` last: serde_json reads a number, so the line names
    // no chain, yet it is a record edited so that readers disagree.
    let last = rs[2].to_line();
    let forged = text.replacen(
        &last,
        &format!("{},\"chain\":5}}", &last[..last.len() - 1]),
        1,
    );
    let report = verify_records(&forged, &keys());
    assert!(!report.is_ok(), "{report}");
    assert_eq!(report.unreadable.len(), 1);
    assert!(report.foreign.is_empty());
}

#[test]
fn the_record_writer_gives_the_canonical_form_of_the_record() {
    use crate::canonical::to_canonical_bytes;
    let mut c = Chain::new("vm-a");
    let hostile = [
        "",
        "\"",
        "\\",
        "\u{0}\u{1f}\u{7f}",
        "é✓😀",
        "</script>",
        "a\nb",
    ];
    for (i, text) in hostile.iter().enumerate() {
        let mut f = fields("vm-a", i as u64);
        f.path = format!("/{text}");
        f.host = (*text).to_owned();
        f.method = (*text).to_owned();
        f.peer = (i % 2 == 0).then(|| (*text).to_owned());
        f.status = (i % 3 == 0).then_some(200);
        f.duration_ms = (i % 2 == 1).then_some(crate::canonical::MAX_SAFE_INTEGER);
        f.config_fingerprint = (i % 2 == 1).then(|| (*text).to_owned());
        f.decisions.insert((*text).to_owned(), Value::from(*text));
        f.decisions
            .insert("identity".into(), Value::from("allowed:x"));
        // A number RFC 8785 cannot write exactly is refused, the chain unchanged.
        let mut too_long = f.clone();
        too_long.duration_ms = Some(crate::canonical::MAX_SAFE_INTEGER + 1);
        assert_eq!(
            c.seal(too_long, KEY, "k1"),
            Err(RecordError::OutOfRange("duration_ms"))
        );
        let record = c.seal(f, KEY, "k1").unwrap();
        for with_mac in [false, true] {
            assert_eq!(
                record.canonical_bytes(with_mac).unwrap(),
                to_canonical_bytes(&record.to_value(with_mac)).unwrap(),
                "{text:?}"
            );
        }
    }
}
