//! Masking throughput, native: `cargo bench -p meshguard-core --bench masking`.
//!
//! A ~1 MB JSON document (pages of records, some with emails, cards and SSNs)
//! and a ~1 MB text body (log lines), masked with a typical rule set. Each case
//! runs for about 1.5 s and prints MB/s. std only (no bench framework).

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use meshguard_core::masking::{BodyKind, Detector, Direction, MaskingPolicy, Selection};
use meshguard_core::request::RequestInfo;

const TARGET: usize = 1024 * 1024;
const RUN_FOR: Duration = Duration::from_millis(1500);
const HASH_KEY: &[u8] = b"bench-only-hash-key-0123456789";

const POLICY: &str = r#"{
  "config_version": "bench",
  "rules": [
    {"name": "credentials", "json_keys": ["password", "secret", "api_key", "access_token"], "strategy": "remove"},
    {"name": "cards", "json_paths": ["/data/pages/*/records/*/card"], "strategy": "partial"},
    {"name": "ssn", "json_paths": ["**/ssn"], "strategy": "hash"},
    {"name": "auth-headers", "headers": ["authorization", "cookie"]},
    {"name": "free-text", "detectors": ["card", "email", "us_ssn", "iban", "jwt", "bearer_token", "aws_access_key", "private_key"]}
  ]
}"#;

const POLICY_WITH_PATTERN: &str = r#"{
  "rules": [
    {"name": "free-text", "detectors": ["card", "email", "us_ssn"]},
    {"name": "orders", "patterns": [{"name": "order-id", "regex": "ORD-[0-9]{8}"}]}
  ]
}"#;

fn json_body() -> String {
    let mut pages = Vec::new();
    let mut size = 0;
    let mut i = 0usize;
    while size < TARGET {
        let mut records = Vec::new();
        for _ in 0..20 {
            i += 1;
            let email = if i % 3 == 0 {
                format!(r#","email":"user{i}@example.com""#)
            } else {
                String::new()
            };
            let card = if i % 4 == 0 {
                r#","card":"4111 1111 1111 1111""#
            } else {
                ""
            };
            let ssn = if i % 5 == 0 {
                r#","ssn":"078-05-1120""#
            } else {
                ""
            };
            let note = if i % 7 == 0 {
                format!("call back about order ORD-{i:08}, card 5555555555554444 or mail support{i}@example.org")
            } else {
                format!(
                    "customer since {} with {} orders; prefers email contact",
                    2000 + i % 24,
                    i % 97
                )
            };
            records.push(format!(
                r#"{{"id":{i},"name":"Customer {i}","active":{},"balance":{}.{:02}{email}{card}{ssn},"password":"pw-{i}","address":{{"street":"{} Main Street","city":"Springfield","zip":"{:05}"}},"tags":["retail","tier-{}"],"history":[{{"at":"2024-01-{:02}T10:00:00Z","amount":{}}},{{"at":"2024-02-{:02}T11:30:00Z","amount":{}}}],"notes":"{note}"}}"#,
                i % 2 == 0,
                i * 13 % 10_000,
                i % 100,
                i % 900 + 1,
                i * 7 % 100_000,
                i % 3,
                i % 28 + 1,
                i % 500,
                i % 28 + 1,
                i % 700,
            ));
        }
        let page = format!(
            r#"{{"page":{},"records":[{}]}}"#,
            pages.len(),
            records.join(",")
        );
        size += page.len() + 1;
        pages.push(page);
    }
    format!(
        r#"{{"data":{{"pages":[{}]}},"total":{i}}}"#,
        pages.join(",")
    )
}

fn text_body() -> String {
    let mut out = String::with_capacity(TARGET + 256);
    let mut i = 0usize;
    while out.len() < TARGET {
        i += 1;
        let line = match i % 10 {
            0 => format!("2024-06-01T10:{:02}:00Z INFO payment accepted card=4111-1111-1111-1111 amount={}\n", i % 60, i % 1000),
            3 => format!("2024-06-01T10:{:02}:01Z INFO login user=user{i}@example.com from 10.0.{}.{}\n", i % 60, i % 256, i % 200),
            5 => format!("2024-06-01T10:{:02}:02Z DEBUG upstream Authorization: Bearer abcdefghijklmnop{i:08} ok\n", i % 60),
            7 => format!("2024-06-01T10:{:02}:03Z WARN ssn lookup 078-05-1120 for request {i}\n", i % 60),
            _ => format!("2024-06-01T10:{:02}:04Z INFO GET /api/v1/orders/{i} 200 {} ms bytes={}\n", i % 60, i % 300, i * 31 % 100_000),
        };
        out.push_str(&line);
    }
    out
}

fn run(
    label: &str,
    policy: &MaskingPolicy,
    selection: &Selection,
    kind: BodyKind,
    body: &[u8],
) -> Result<(), Box<dyn Error>> {
    // Warm up and report what one pass does.
    let first = policy.mask_body(selection, kind, body)?;
    let hits: u32 = first.hits.iter().map(|h| h.count).sum();
    let out_len = first.body.as_ref().map_or(body.len(), Vec::len);
    let start = Instant::now();
    let mut iterations = 0u32;
    while start.elapsed() < RUN_FOR {
        let masked = policy.mask_body(selection, black_box(kind), black_box(body))?;
        black_box(masked);
        iterations += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mb = body.len() as f64 * f64::from(iterations) / (1024.0 * 1024.0);
    println!(
        "{label:<44} {:>8.1} MB/s  ({iterations} x {} bytes in {elapsed:.2} s; {hits} values masked; output {} bytes; {:.2} ms per body)",
        mb / elapsed,
        body.len(),
        out_len,
        elapsed * 1000.0 / f64::from(iterations),
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let policy = MaskingPolicy::from_json(POLICY.as_bytes(), Some(HASH_KEY))?;
    let request = RequestInfo {
        path: "/api/v1/customers",
        method: "GET",
        host: "shop.internal",
    };
    let selection = policy.select(Direction::Response, None, &request);
    let json = json_body();
    let text = text_body();

    run(
        "json ~1 MB, typical rules (masked)",
        &policy,
        &selection,
        BodyKind::Json,
        json.as_bytes(),
    )?;
    run(
        "text ~1 MB, typical rules (masked)",
        &policy,
        &selection,
        BodyKind::Text,
        text.as_bytes(),
    )?;

    // Detectors only, on a document they do not match: validate and scan, no copy.
    let clean = json
        .replace('@', " at ")
        .replace("4111 1111", "4111 x 1111")
        .replace("5555555555554444", "5555 x 4444")
        .replace("078-05-1120", "078 05 1120");
    let detectors_only = MaskingPolicy::from_json(
        br#"{"rules": [{"name": "d", "detectors": ["card", "email", "us_ssn", "iban", "jwt", "bearer_token", "aws_access_key", "private_key"]}]}"#,
        None,
    )?;
    let all = detectors_only.select(Direction::Response, None, &request);
    run(
        "json ~1 MB, detectors only, nothing to mask",
        &detectors_only,
        &all,
        BodyKind::Json,
        clean.as_bytes(),
    )?;

    // Each detector alone over the text body (scan only, no replacement).
    for detector in Detector::ALL {
        let start = Instant::now();
        let mut iterations = 0u32;
        let mut found = 0;
        while start.elapsed() < RUN_FOR / 5 {
            found = black_box(detector.find_all(black_box(&text))).len();
            iterations += 1;
        }
        let mb = text.len() as f64 * f64::from(iterations) / (1024.0 * 1024.0);
        println!(
            "  detector {:<15} on the text body      {:>8.1} MB/s  ({found} matches)",
            detector.as_str(),
            mb / start.elapsed().as_secs_f64()
        );
    }

    let with_pattern = MaskingPolicy::from_json(POLICY_WITH_PATTERN.as_bytes(), None)?;
    let all = with_pattern.select(Direction::Response, None, &request);
    run(
        "text ~1 MB, 3 detectors + 1 user regex",
        &with_pattern,
        &all,
        BodyKind::Text,
        text.as_bytes(),
    )?;
    Ok(())
}
