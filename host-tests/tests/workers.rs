//! The guarantees that only a second worker can break, in a server sidecar at
//! Istio's default `--concurrency 2`: every worker VM admits what the main
//! thread accepted and judges with it; a quarantine holds on every worker,
//! including each worker's new VM after a push; each worker VM keeps its own
//! audit chain and delivers it from its own outbox.
//!
//! The native module (`MESHGUARD_TEST_BUILD=native`) has no VM per worker:
//! each filter config is loaded once, on the main thread, and its one
//! pipeline serves every worker; the rows assert the same answers, with
//! the counts of that model ([`loads`], [`serving_chains`]).
//!
//! Envoy hands each connection to one worker, so every row sends on fresh
//! connections until the per-worker listener stats show that both workers
//! accepted some ([`Mesh::send_direct_on_every_worker`]), and checks every
//! answer. Requests go straight to the server sidecar in plaintext (Istio's
//! PERMISSIVE port), so that each one opens a connection of its own.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use meshguard_core::audit::RECORD_PREFIX;
use meshguard_host_tests::collector::Collector;
use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Build, Filter, Mesh, PushOutcome, AUDIT_KEY};
use meshguard_host_tests::meshguard_cli;
use meshguard_host_tests::source::{signed, trust_env, SourceOfTruth, KEY_ID};
use serde_json::Value;

/// Istio's sidecar default.
const WORKERS: u32 = 2;
/// Requests sent at once per round: with 8 fresh connections, the chance
/// that the kernel hands them all to one worker is 1 in 128 per round.
const PER_ROUND: usize = 8;
const SOURCE_CLUSTER: &str = "meshguard-intended";
const COLLECTOR_CLUSTER: &str = "audit-collector";

/// The loads of a config, each logging it: Envoy configures a plugin on
/// the main thread twice (once per filter chain of the inbound listener; 3
/// loads at --concurrency 1, measured) and, in Wasm, once more in each
/// worker's VM; the native module's configs are the main thread's only.
fn loads() -> u64 {
    match Build::current() {
        Build::Wasm => 2 + u64::from(WORKERS),
        Build::Native => 2,
    }
}

/// The audit chains the plaintext requests of a row land in: one per worker
/// VM (Wasm), or the plaintext filter chain's config's one, shared by both
/// workers (native).
fn serving_chains() -> usize {
    match Build::current() {
        Build::Wasm => WORKERS as usize,
        Build::Native => 1,
    }
}

fn metric_name(name: &str, labels: &str) -> String {
    format!("{name}{{{labels}}}")
}

async fn metric(mesh: &Mesh, sample: &str) -> u64 {
    mesh.server.metric(sample).await.unwrap().unwrap_or(0)
}

/// Plaintext is allowed (the rows send straight to the server sidecar);
/// `/admin/*` is denied by a rule, everything else allowed.
fn policy(version: &str) -> String {
    format!(
        r#"{{"config_version": "{version}", "transport": {{"require_mtls": false}},
  "default_action": "allow",
  "rules": [{{"name": "no-admin", "action": "deny", "paths": ["/admin/*"]}}]}}"#
    )
}

/// Broken by hand: `load_config` (filters/host/src/integrity.rs) refusing
/// every load after the main thread's two (a load count kept in shared
/// data), so that only the workers refuse: Envoy runs those workers without
/// the filter (docs/testing.md, "Not covered"), and `/admin/users` got 200.
#[tokio::test]
async fn every_worker_vm_admits_the_signed_config_the_main_thread_accepted_and_judges_with_it() {
    let config = signed("identity", 1, &policy("v1"));
    let filter = Filter::identity(config).trusting_release_key();
    let mesh = Mesh::builder()
        .filter(filter)
        .workers(WORKERS)
        .start()
        .await
        .expect("mesh starts");
    // Exactly the allowed requests reached the upstream.
    mesh.every_worker_passes_items_and_denies_admin(PER_ROUND, Protocol::Http1, "admitted")
        .await;
    // Each worker's VM loaded and accepted it, beside the main thread's two
    // loads (Envoy configures the plugin on the main thread twice: 3 loads
    // at --concurrency 1, measured).
    let accepted = metric_name(
        "meshguard_config_loads_total",
        r#"filter="identity",result="accepted""#,
    );
    assert_eq!(metric(&mesh, &accepted).await, loads());
    let log = mesh.flushed_server_log().await.unwrap();
    assert!(!log.contains("configuration refused"), "{log}");
    assert!(!log.contains("Failed to configure"), "{log}");
}

/// A worker VM that decides differently from the main thread (here: the
/// test-only module revokes the release key in every VM configured after
/// the main thread's two loads, `MESHGUARD_TEST_LATER_VMS_REVOKE`, since the
/// shipped module's workers decide alike) refuses every request with a
/// stable reason and a counter, over HTTP/1.1 and HTTP/2; it never fails
/// `on_configure`, which would leave its worker without the filter.
///
/// Found by this test, then fixed: `configure` (filters/host/src/
/// integrity.rs) installed the refuse-everything state only for a refusal
/// at the admission stage; a refusal at the signature stage (this revoked
/// key) failed `on_configure`, Envoy ran both workers without the filter,
/// and `/api/items` and `/admin/users` got 200 (the first row failed). That
/// code is the break, seen to fail.
#[tokio::test]
async fn a_worker_vm_that_cannot_admit_what_the_main_thread_accepted_refuses_every_request() {
    if meshguard_host_tests::mesh::wasm_only("a worker VM that decides differently from the main thread: the native module admits a config once per process, with no VM per worker") {
        return;
    }
    let config = signed("identity", 1, &policy("v1"));
    let mut filter = Filter::identity(config)
        .trusting_release_key()
        .env("MESHGUARD_TEST_LATER_VMS_REVOKE", &format!("2:{KEY_ID}"));
    filter.module = meshguard_host_tests::faulty_module();
    let mesh = Mesh::builder()
        .filter(filter)
        .workers(WORKERS)
        .start()
        .await
        .expect("mesh starts: the main thread accepted the config");
    let mut refused = 0;
    for protocol in Protocol::ALL {
        let answers = mesh
            .send_direct_on_every_worker(PER_ROUND, |i| {
                let path = if i % 2 == 0 {
                    "/api/items"
                } else {
                    "/admin/users"
                };
                Request::new("GET", &format!("{path}?n={i}")).protocol(protocol)
            })
            .await
            .unwrap();
        for (i, resp) in &answers {
            let row = format!("request {i} over {protocol:?}");
            assert_eq!(resp.status, 503, "{row}: {resp:?}");
            assert_eq!(
                resp.header("x-meshguard-deny-reason"),
                Some("revoked"),
                "{row}: {resp:?}"
            );
            let body = resp.json().unwrap();
            assert_eq!(body["error"], "config_not_admitted", "{row}: {body}");
        }
        refused += answers.len() as u64;
        mesh.assert_nothing_reached_upstream(&format!("{protocol:?}"))
            .await;
    }
    let denied = metric_name(
        "meshguard_config_not_admitted_denied_total",
        r#"reason="revoked",filter="identity""#,
    );
    assert_eq!(metric(&mesh, &denied).await, refused);
    let log = mesh.flushed_server_log().await.unwrap();
    assert_eq!(
        log.matches("cannot admit the configuration this proxy runs")
            .count(),
        WORKERS as usize,
        "{log}"
    );
    assert!(!log.contains("Failed to configure"), "{log}");
}

/// Sends on every worker; every answer must be the quarantine's (health
/// paths excepted), and nothing may reach the upstream.
async fn every_worker_refuses(mesh: &Mesh, what: &str) {
    let answers = mesh
        .send_direct_on_every_worker(PER_ROUND, |i| Request::new("GET", &format!("/api/q{i}")))
        .await
        .unwrap();
    for (i, resp) in answers {
        assert_eq!(resp.status, 503, "{what}: request {i}: {resp:?}");
        assert_eq!(
            resp.header("x-meshguard-deny-reason"),
            Some("config_drift"),
            "{what}: request {i}"
        );
    }
    mesh.assert_nothing_reached_upstream(what).await;
}

/// Broken by hand: `Guard::start` (filters/host/src/integrity.rs) ignoring
/// the drift recorded in shared data (`carried` always false): no VM of the
/// push logged the drift as carried over, and the row failed there (its
/// workers would serve until their own first poll, 10 s later).
#[tokio::test]
async fn a_quarantine_holds_on_every_worker_and_on_each_worker_vm_a_push_creates() {
    // A long poll interval: the VMs a push creates are judged before any of
    // them asked the source of truth.
    const POLL_MS: u64 = 10_000;
    let env = trust_env(SOURCE_CLUSTER, POLL_MS, "quarantine");
    let with_env = |config: &str| {
        let mut f = Filter::identity(config.to_string());
        f.env = env.clone();
        f
    };
    let v1 = signed("identity", 1, &policy("v1"));
    let source = SourceOfTruth::start().unwrap();
    // The pipeline already intends v2: the running v1 has drifted.
    source
        .publish_config("identity", &signed("identity", 2, &policy("v2")))
        .unwrap();
    let mesh = Mesh::builder()
        .filter(with_env(&v1))
        .server_cluster(SOURCE_CLUSTER, source.addr())
        .workers(WORKERS)
        .start()
        .await
        .expect("mesh starts");
    mesh.server
        .wait_for_log("config drift detected (source_of_truth)")
        .await
        .unwrap();
    // Every VM polls on its own timer; the shared state is what makes the
    // first verdict every worker's. Wait until one VM acts on it, then
    // judge both workers.
    let deadline = Instant::now() + Duration::from_millis(2 * POLL_MS);
    loop {
        let resp = mesh
            .send_direct(Request::new("GET", "/api/x"))
            .await
            .unwrap();
        if resp.status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "never quarantined: {resp:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The probes a worker served before the verdict reached it arrived:
    // only what comes after counts.
    mesh.upstream_barrier().await.unwrap();
    mesh.upstream().take();
    // Every VM reads the proxy-wide verdict on its 500 ms refresh
    // (docs/integrity.md): one refresh later, both workers refuse, long
    // before their own first poll could.
    tokio::time::sleep(Duration::from_millis(800)).await;
    every_worker_refuses(&mesh, "after the drift").await;

    // A newer genuine release, not yet intended: every VM the push creates
    // (each worker's, and the main thread's two) starts quarantined from the
    // proxy's shared state, before its own first poll.
    let carried = "config drift carried over";
    let before = mesh.server.log().matches(carried).count();
    let v3 = signed("identity", 3, &policy("v3"));
    let pushed = Instant::now();
    assert_eq!(
        mesh.push_filters(&[with_env(&v3)]).await.unwrap(),
        PushOutcome::Accepted
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while mesh.server.log().matches(carried).count() < before + loads() as usize {
        assert!(
            Instant::now() < deadline,
            "not every new VM carried the drift over:\n{}",
            mesh.server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    every_worker_refuses(&mesh, "the VMs of the push").await;
    assert!(
        pushed.elapsed() < Duration::from_millis(POLL_MS),
        "judged after the new VMs could have polled ({:?}): the row proves nothing",
        pushed.elapsed()
    );
    // The check can fail: publishing v3 releases every worker.
    source.publish_config("identity", &v3).unwrap();
    let deadline = Instant::now() + Duration::from_millis(3 * POLL_MS);
    loop {
        let answers = mesh
            .send_direct_on_every_worker(PER_ROUND, |i| Request::new("GET", &format!("/api/r{i}")))
            .await
            .unwrap();
        if answers.iter().all(|(_, r)| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "never released: {answers:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Broken by hand, each once, in filters/audit/src/lib.rs:
/// - one chain id for every VM (`Chain::new("shared")`): the collector held
///   one chain whose sequence numbers repeat (`[0, 1, 2, 3, 0, 1, 2, 3]`),
///   and the two-chain assertion failed;
/// - the flush wake-up queue registered under one name for every VM
///   (`meshguard-audit-flush`) and the periodic flush off: a worker's full
///   batch woke another VM's root, which had nothing to send: "2 of 8
///   records delivered".
#[tokio::test]
async fn each_worker_vm_keeps_its_own_audit_chain_and_delivers_it_from_its_own_outbox() {
    let collector = Collector::start().await.unwrap();
    let config = format!(
        r#"{{"key_id": "test", "commands": [], "fail_closed": true,
  "collector": {{"cluster": "{COLLECTOR_CLUSTER}", "path": "/v1/records", "timeout_ms": 2000,
                 "batch_size": 2, "max_queue": 1000}}}}"#
    );
    let mesh = Mesh::builder()
        .filter(Filter::audit(config))
        .server_cluster(COLLECTOR_CLUSTER, collector.addr())
        .workers(WORKERS)
        .start()
        .await
        .expect("mesh starts");
    let answers = mesh
        .send_direct_on_every_worker(PER_ROUND, |i| Request::new("GET", &format!("/api/a{i}")))
        .await
        .unwrap();
    let mut ids = HashSet::new();
    for (i, resp) in &answers {
        assert_eq!(resp.status, 200, "request {i}: {resp:?}");
        ids.insert(
            resp.header("x-meshguard-audit-id")
                .unwrap_or_else(|| panic!("request {i}: no audit id: {resp:?}"))
                .to_string(),
        );
    }
    let audited = answers.len();
    // Every record reaches the collector.
    let deadline = Instant::now() + Duration::from_secs(20);
    while collector.lines().len() < audited {
        assert!(
            Instant::now() < deadline,
            "{} of {audited} records delivered:\n{}",
            collector.lines().len(),
            mesh.server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = collector.lines();
    assert_eq!(lines.len(), audited, "each record delivered once");
    // One chain per worker VM (the main thread's VM serves no request),
    // each complete from its first record.
    let mut chains: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut delivered_ids = HashSet::new();
    for line in &lines {
        let record: Value = serde_json::from_str(line).unwrap();
        chains
            .entry(record["chain"].as_str().unwrap().to_string())
            .or_default()
            .push(record["seq"].as_u64().unwrap());
        delivered_ids.insert(record["id"].as_str().unwrap().to_string());
    }
    assert_eq!(delivered_ids, ids, "the records are the answered requests'");
    assert_eq!(chains.len(), serving_chains(), "{chains:?}");
    for (chain, seqs) in &mut chains {
        seqs.sort_unstable();
        let first = seqs[0];
        let want: Vec<u64> = (first..first + seqs.len() as u64).collect();
        assert_eq!(*seqs, want, "chain {chain}: a gap or a repeat");
    }
    let file = mesh.dir().join("workers.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = std::process::Command::new(meshguard_cli())
        .args(["audit", "verify", "--by-seq"])
        .arg(&file)
        .args(["--key", &format!("test={AUDIT_KEY}")])
        .env_remove("MESHGUARD_AUDIT_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("{audited} records, 0 broken")),
        "{stdout}"
    );
    // Each VM logged its own chain's start: each worker's, and the main
    // thread's two (Envoy configures the plugin there twice).
    let log = mesh.server.log();
    let started: HashSet<&str> = log
        .lines()
        .filter_map(|l| l.split("meshguard audit: chain ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    assert_eq!(started.len() as u64, loads(), "{started:?}");
    for chain in chains.keys() {
        assert!(started.contains(chain.as_str()), "{chain} never started");
    }
    assert!(
        !log.lines()
            .any(|l| l.contains(RECORD_PREFIX) && l.contains("dropped")),
        "{log}"
    );
}
