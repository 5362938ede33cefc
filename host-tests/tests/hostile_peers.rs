//! meshguard's own callouts meet peers that misbehave as a dying or hostile
//! pod does (filters' answers read after a reset, a stall past the timeout,
//! a huge or dripping body, HTML, a redirect, bytes that are not HTTP). Each
//! failure is counted by reason; no VM traps; traffic is never touched.
//!
//! The source of truth is polled by every VM's root context and the
//! collector is called by the audit section's root: before meshguard read
//! every host answer through its own total ABI calls, a source that stalled
//! after its headers trapped the VM in `proxy_on_http_call_response` (break
//! used: reading the callout's `:status` before checking `num_headers`
//! through the SDK's panicking wrapper; then every row below failed with a
//! VM crash and 503s).

use std::time::{Duration, Instant};

use meshguard_host_tests::envoy::vm_crashes;
use meshguard_host_tests::hostile_peer::{HostilePeer, Misbehaviour};
use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Deployment, Filter, Mesh};

const ALLOW: &str = r#"{"default_action": "allow", "transport": {"require_mtls": false}}"#;

/// The counter(s) a misbehaviour must raise: one of these `(metric, labels)`.
fn source_expectation(how: Misbehaviour) -> &'static [(&'static str, &'static str)] {
    use Misbehaviour::*;
    match how {
        // Envoy gives up on the answer: no headers reach the module.
        StallAfterHeaders | ResetMidBody | SlowDrip => {
            &[("meshguard_intended_source_errors_total", "no_answer")]
        }
        // Envoy answers a protocol error itself (a local 503) or gives up.
        Garbage => &[
            ("meshguard_intended_source_errors_total", "bad_status"),
            ("meshguard_intended_source_errors_total", "no_answer"),
        ],
        // Envoy's async client may refuse to buffer it (no answer) or hand
        // it over (meshguard refuses to read past 64 KiB).
        HugeBody => &[
            ("meshguard_intended_source_errors_total", "too_large"),
            ("meshguard_intended_source_errors_total", "no_answer"),
        ],
        Redirect => &[("meshguard_intended_source_errors_total", "bad_status")],
        WrongContentType => &[("meshguard_intended_answers_refused_total", "unreadable")],
    }
}

/// The collector's reasons a misbehaviour counts under, and whether a 2xx
/// answer (delivery, whatever its body) is an acceptable outcome.
fn collector_expectation(how: Misbehaviour) -> (&'static [&'static str], bool) {
    use Misbehaviour::*;
    match how {
        StallAfterHeaders | ResetMidBody | SlowDrip => (&["no_answer"], false),
        Garbage => (&["bad_status", "no_answer"], false),
        // Envoy buffers the whole answer within the timeout, or gives up.
        HugeBody => (&["no_answer"], true),
        // A 2xx is a delivery: only the redirect is refused by status.
        WrongContentType => (&[], true),
        Redirect => (&["bad_status"], false),
    }
}

/// The sum of a counter's samples whose labels include `labels` (any order).
async fn counter(mesh: &Mesh, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = mesh.server.prometheus().await.unwrap();
    text.lines()
        .filter_map(|line| {
            let (sample, value) = line.rsplit_once(' ')?;
            let rest = sample.strip_prefix(name)?.strip_prefix('{')?;
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// Sends requests over both protocols until `done` says the callouts
/// failed enough; every request must reach the upstream.
async fn traffic_until(mesh: &Mesh, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        for protocol in Protocol::ALL {
            let resp = mesh
                .send_as(
                    "frontend",
                    Request::new("GET", &format!("/r/{n}")).protocol(protocol),
                )
                .await
                .unwrap();
            assert_eq!(
                resp.status,
                200,
                "{what}: traffic was touched: {}",
                resp.text()
            );
            mesh.upstream().take_one().await.unwrap();
            n += 1;
        }
        if done().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the failures were never counted:\n{}",
            mesh.server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn no_vm_crashed(mesh: &Mesh, what: &str) {
    let log = mesh.flushed_server_log().await.unwrap();
    let crashes = vm_crashes(&log);
    assert!(
        crashes.is_empty(),
        "{what}: a VM trapped:\n{}",
        crashes.join("\n")
    );
}

#[tokio::test]
async fn a_source_of_truth_that_misbehaves_is_counted_and_never_touches_traffic() {
    let source = r#"{"cluster": "meshguard-intended", "path": "/v1/intended/{filter}", "poll_interval_ms": 1000, "timeout_ms": 800}"#;
    let plugin = Filter::identity(ALLOW).env("MESHGUARD_SOURCE_OF_TRUTH", source);
    let filter = Deployment::current().label_of(&plugin);
    for how in Misbehaviour::ALL {
        let what = format!("source of truth: {how:?}");
        let peer = HostilePeer::start(how).await.unwrap();
        let mesh = Mesh::builder()
            .filter(plugin.clone())
            .server_cluster("meshguard-intended", peer.addr())
            .start()
            .await
            .unwrap();
        let expected = source_expectation(how);
        traffic_until(&mesh, &what, async || {
            let mut failed = 0;
            for (metric, reason) in expected {
                failed += counter(
                    &mesh,
                    metric,
                    &[("filter", filter.as_str()), ("reason", reason)],
                )
                .await;
            }
            // Two attempts each failed (the first may still be in flight).
            failed >= 2 && peer.requests() >= 2
        })
        .await;
        no_vm_crashed(&mesh, &what).await;
    }
}

#[tokio::test]
async fn an_audit_collector_that_misbehaves_is_counted_and_never_touches_traffic() {
    let audit = r#"{"key_id": "k", "commands": [],
                    "collector": {"cluster": "audit-collector", "path": "/v1/records", "timeout_ms": 600}}"#;
    for how in Misbehaviour::ALL {
        let what = format!("collector: {how:?}");
        let peer = HostilePeer::start(how).await.unwrap();
        let mesh = Mesh::builder()
            .filter(Filter::identity(ALLOW))
            .filter(Filter::audit(audit))
            .server_cluster("audit-collector", peer.addr())
            .start()
            .await
            .unwrap();
        let (reasons, delivery_allowed) = collector_expectation(how);
        traffic_until(&mesh, &what, async || {
            let mut failed = 0;
            for reason in reasons {
                failed += counter(
                    &mesh,
                    "meshguard_audit_collector_failures_total",
                    &[("reason", reason)],
                )
                .await;
            }
            let delivered = counter(
                &mesh,
                "meshguard_audit_records_total",
                &[("result", "delivered")],
            )
            .await;
            let attempts = peer.requests();
            attempts >= 2 && (failed >= 2 || (delivery_allowed && delivered > 0))
        })
        .await;
        no_vm_crashed(&mesh, &what).await;
    }
}
