//! Identity policy cost per request, native: `cargo bench -p meshguard-core --bench identity`.
//!
//! The same request evaluated against policies of 10 and of 10,000 rules (one
//! rule per workload identity, plus a few shared deny rules), interleaved so
//! that machine noise hits both alike. Rules are indexed at compile time, so
//! the 10,000-rule policy should cost about the same per request; the ratio is
//! printed. std only (no bench framework).

use std::hint::black_box;
use std::time::{Duration, Instant};

use meshguard_core::identity::{IdentityPolicy, Peer, RequestInfo, Transport};

const ROUNDS: usize = 5;
const RUN_FOR: Duration = Duration::from_millis(400);

fn policy(rules: usize) -> IdentityPolicy {
    let mut list: Vec<String> = (0..rules)
        .map(|i| {
            format!(
                r#"{{"name": "svc-{i}", "action": "allow", "principals": ["cluster.local/ns/ns-{i}/sa/svc-{i}"],
                    "paths": ["/api/v1/svc-{i}/*"], "methods": ["GET", "POST"]}}"#
            )
        })
        .collect();
    list.push(r#"{"name": "no-deletes", "action": "deny", "methods": ["DELETE"]}"#.into());
    list.push(
        r#"{"name": "admin", "action": "deny", "paths": ["/admin/*"], "not_namespaces": ["ops"]}"#
            .into(),
    );
    let config = format!(
        r#"{{"transport": {{"min_tls_version": "TLSv1.2"}}, "rules": [{}]}}"#,
        list.join(",")
    );
    match IdentityPolicy::from_json(config.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench policy refused: {e}");
            std::process::exit(1);
        }
    }
}

/// Nanoseconds per evaluation (including the SPIFFE parsing the filter does).
fn measure(policy: &IdentityPolicy, caller: &str, path: &str) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < RUN_FOR {
        for _ in 0..1000 {
            let peer = Peer::from_certificate(Transport::from_host(
                Some(true),
                Some("TLSv1.3"),
                Some(caller),
            ));
            let request = RequestInfo {
                path,
                method: "GET",
                host: "svc.cluster.local",
            };
            black_box(policy.evaluate(black_box(&peer), black_box(&request)));
        }
        n += 1000;
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let small = policy(10);
    let large = policy(10_000);
    let cases = [
        (
            "allowed (own rule)",
            "spiffe://cluster.local/ns/ns-7/sa/svc-7",
            "/api/v1/svc-7/items?x=1",
        ),
        (
            "denied (no rule)",
            "spiffe://cluster.local/ns/other/sa/x",
            "/api/v1/svc-7/items",
        ),
    ];
    println!("identity policy evaluation, ns/request (best of {ROUNDS} interleaved rounds)");
    println!(
        "{:<22} {:>10} {:>12} {:>7}",
        "case", "10 rules", "10000 rules", "ratio"
    );
    for (name, caller, path) in cases {
        let (mut best_small, mut best_large) = (f64::MAX, f64::MAX);
        for _ in 0..ROUNDS {
            best_small = best_small.min(measure(&small, caller, path));
            best_large = best_large.min(measure(&large, caller, path));
        }
        println!(
            "{name:<22} {best_small:>10.0} {best_large:>12.0} {:>7.2}",
            best_large / best_small
        );
    }
}
