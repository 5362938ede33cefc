//! Detector recall and false positives on public third-party PII test data
//! (`tests/recall/corpus.jsonl`, built by `scripts/recall-corpus.py`, which
//! records each sample's source and licence).
//!
//! - **recall**: the share of labelled values whose every letter and digit
//!   lies inside a match of their detector;
//! - **false positives**: the share of samples without a value of that
//!   detector's kind in which it still matches something.
//!
//! Targets: recall ≥ 95 % and false positives ≤ 2 % for every detector,
//! misses by design ([`EXPLAINED`]) aside (the Presidio phone sentences are
//! reported, not held to it: see docs/masking.md). `RECALL_MISSES=1` prints
//! every miss and false positive.
//! Broken by hand: the phone detector's context words ignored: the national
//! formats were missed and the assertion failed (phone recall 70.1 %).

use meshguard_core::masking::Detector;
use serde_json::Value;

const CORPUS: &str = include_str!("recall/corpus.jsonl");

/// (row label, corpus detector name, detector, held to the targets)
const ROWS: [(&str, &str, &str, bool); 10] = [
    ("card", "card", "card", true),
    ("email", "email", "email", true),
    ("us_ssn", "us_ssn", "us_ssn", true),
    ("iban", "iban", "iban", true),
    ("phone", "phone", "phone", true),
    (
        "phone (Presidio sentences)",
        "phone_presidio",
        "phone",
        false,
    ),
    ("ipv4", "ipv4", "ipv4", true),
    ("ipv6", "ipv6", "ipv6", true),
    ("private_key", "private_key", "private_key", true),
    ("aws_secret_key", "aws_secret_key", "aws_secret_key", true),
];

/// Misses by design, each explained in docs/masking.md (Detectors): they
/// count as misses in the table; the targets hold for the rest.
const EXPLAINED: [(&str, &str); 5] = [
    // `/` and `=` (and the other RFC 5322 specials) usually separate an
    // address from what is before it in text: the address is found from the
    // character after them (`shipping@example.tld` is masked).
    ("email", "user+mailbox/department=shipping@example.tld"),
    ("email", "!#$%&'*+-/=?^_`.{|}~@example.tld"),
    ("email", "`@example.com"),
    // A local part made of one full-width `＠`.
    ("email", "＠@fullwidth.at"),
    // Faker's Maestro prefix 0604 is no issued card range.
    ("card", "060426070011"),
];

#[cfg(test)]
struct Sample {
    text: String,
    entities: Vec<(String, String)>,
}

#[cfg(test)]
fn corpus() -> Vec<Sample> {
    CORPUS
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            Sample {
                text: v["text"].as_str().unwrap().to_owned(),
                entities: v["entities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        (
                            e["detector"].as_str().unwrap().to_owned(),
                            e["value"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Every letter and digit of `text[start..end]` is inside a match.
#[cfg(test)]
fn covered(text: &str, start: usize, end: usize, matches: &[(usize, usize)]) -> bool {
    text[start..end]
        .char_indices()
        .filter(|(_, c)| c.is_alphanumeric())
        .all(|(i, _)| {
            let at = start + i;
            matches.iter().any(|&(s, e)| s <= at && at < e)
        })
}

#[test]
fn detectors_find_the_third_party_corpus_and_little_else() {
    let samples = corpus();
    let verbose = std::env::var_os("RECALL_MISSES").is_some();
    let mut table = String::from(
        "| Detector | Values | Found | Recall | Samples without | False positives | Rate |\n|---|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for (label, kind, name, held) in ROWS {
        let detector: Detector = serde_json::from_value(Value::String(name.into())).unwrap();
        let (mut values, mut found, mut negatives, mut false_positives) = (0, 0, 0, 0);
        let mut explained = 0;
        for sample in &samples {
            let matches = detector.find_all(&sample.text);
            // Values of this detector's kind (any corpus name it answers to).
            let mine: Vec<&str> = sample
                .entities
                .iter()
                .filter(|(k, _)| ROWS.iter().any(|r| r.1 == k && r.2 == name))
                .map(|(_, v)| v.as_str())
                .collect();
            let labelled: Vec<&str> = sample
                .entities
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, v)| v.as_str())
                .collect();
            for value in &labelled {
                values += 1;
                let start = sample.text.find(value).unwrap();
                if covered(&sample.text, start, start + value.len(), &matches) {
                    found += 1;
                } else {
                    if EXPLAINED.contains(&(name, value)) {
                        explained += 1;
                    }
                    if verbose {
                        eprintln!("MISS {label}: {value:?} in {:?}", sample.text);
                    }
                }
            }
            // IPv4 inside an IPv6 address (`::ffff:192.0.2.1`) is an address too.
            fn family(k: &str) -> &str {
                if k == "ipv4" || k == "ipv6" {
                    "ip"
                } else {
                    k
                }
            }
            let same_family = sample.entities.iter().any(|(k, _)| {
                family(k) == family(kind) || ROWS.iter().any(|r| r.1 == k && r.2 == name)
            });
            if mine.is_empty() && !same_family {
                negatives += 1;
                if !matches.is_empty() {
                    false_positives += 1;
                    if verbose {
                        let hits: Vec<&str> =
                            matches.iter().map(|&(s, e)| &sample.text[s..e]).collect();
                        eprintln!("FALSE POSITIVE {label}: {hits:?} in {:?}", sample.text);
                    }
                }
            }
        }
        let recall = f64::from(found) / f64::from(values.max(1)) * 100.0;
        let rate = f64::from(false_positives) / f64::from(negatives.max(1)) * 100.0;
        table.push_str(&format!(
            "| `{label}` | {values} | {found} | {recall:.1} % | {negatives} | {false_positives} | {rate:.2} % |\n"
        ));
        let unexplained_recall = f64::from(found + explained) / f64::from(values.max(1)) * 100.0;
        if held && (unexplained_recall < 95.0 || rate > 2.0) {
            failures.push(format!(
                "{label}: recall {recall:.1} %, false positives {rate:.2} %"
            ));
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "below target: {failures:?}\n{table}");
}
