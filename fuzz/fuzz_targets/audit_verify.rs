//! Audit record parsing and chain verification.
//! - Any text: `verify_records` never panics and accounts for every marked
//!   line (a record, a foreign line, or an unreadable one, which fails).
//! - Records sealed from arbitrary request fields verify as one unbroken
//!   chain; dropping a middle record or editing one breaks it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshguard_core::audit::{verify_records, AnyKid, Chain, RecordFields, RECORD_PREFIX};
use meshguard_core::identity::RequestInfo;

fuzz_target!(|data: &[u8]| {
    let key = AnyKid(meshguard_fuzz::AUDIT_KEY);
    let (sel, rest) = meshguard_fuzz::selector(data);
    if sel & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        let report = verify_records(&text, &key);
        // Every line holding the marker is a record, reported as foreign, or
        // reported as unreadable (bare JSON record lines count as records
        // too); an unreadable line fails the check.
        let prefixed = text.lines().filter(|l| l.contains(RECORD_PREFIX)).count();
        assert!(
            report.record_count() + report.foreign.len() + report.unreadable.len() >= prefixed,
            "{report}"
        );
        assert!(report.unreadable.is_empty() || !report.is_ok(), "{report}");
        return;
    }
    let [chain_id, method, path, host, peer, command] = meshguard_fuzz::fields::<6>(rest);
    let mut chain = Chain::new(chain_id.clone());
    let mut lines = Vec::new();
    for seq in 0..3u64 {
        let request = RequestInfo {
            path: &path,
            method: &method,
            host: &host,
        };
        let mut fields = RecordFields::new(
            format!("{chain_id}-{seq}"),
            1_700_000_000_000 + seq,
            &request,
            command.clone(),
            [sel; 32],
        );
        fields.peer = (!peer.is_empty()).then(|| peer.clone());
        fields.status = Some(200);
        let record = chain
            .seal(fields, meshguard_fuzz::AUDIT_KEY, "fuzz")
            .expect("records built from request fields seal");
        lines.push(record.to_line());
    }
    let whole = lines.join("\n");
    let report = verify_records(&whole, &key);
    assert!(
        report.is_ok(),
        "a sealed chain did not verify: {report}\n{whole}"
    );
    assert_eq!(report.record_count(), 3, "{report}\n{whole}");

    let gap = format!("{}\n{}", lines[0], lines[2]);
    assert!(
        !verify_records(&gap, &key).is_ok(),
        "a missing record went unnoticed"
    );

    let edited = whole.replacen("\"status\":200", "\"status\":201", 1);
    assert!(
        !verify_records(&edited, &key).is_ok(),
        "an edited record verified"
    );
});
