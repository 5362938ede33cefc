//! Config integrity and drift in a real Envoy: intended versions from the
//! environment and from a live source of truth (the CLI's reference server),
//! signatures, quarantine, an unreachable source, and a real Prometheus.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use meshguard_host_tests::http::Request;
use meshguard_host_tests::mesh::{Filter, Mesh, PushOutcome};
use meshguard_host_tests::prometheus::{sample_value, Prometheus};
use meshguard_host_tests::source::SourceOfTruth;

const POLL: Duration = Duration::from_millis(1000);
const SOURCE_CLUSTER: &str = "meshguard-intended";

/// A policy with a version label and an integrity section.
fn config(version: &str, on_drift: &str) -> String {
    format!(
        r#"{{
  "config_version": "{version}",
  "transport": {{"overrides": [{{"name": "probes", "paths": ["/healthz"], "require_mtls": false}}]}},
  "rules": [
    {{"name": "frontend", "action": "allow", "principals": ["cluster.local/ns/default/sa/frontend"]}},
    {{"name": "probes", "action": "allow", "paths": ["/healthz"]}}
  ],
  "integrity": {{
    "on_drift": "{on_drift}",
    "health_paths": ["/healthz"],
    "source_of_truth": {{"cluster": "{SOURCE_CLUSTER}", "path": "/v1/intended/backend/identity",
                         "poll_interval_ms": {}, "timeout_ms": 500}}
  }}
}}"#,
        POLL.as_millis()
    )
}

fn drift_sample() -> &'static str {
    r#"meshguard_config_drift{filter="identity"}"#
}

/// The reference source of truth, serving backend's intended identity config.
fn source_of_truth() -> SourceOfTruth {
    SourceOfTruth::start("backend").unwrap()
}

fn publish(source: &SourceOfTruth, config: &str) {
    source.publish("identity", config).unwrap();
}

async fn mesh_with(filter: Filter, source: Option<SocketAddr>) -> Mesh {
    // Nothing listens on port 9 of loopback: a source that is down.
    let source = source.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9)));
    Mesh::builder()
        .filter(filter)
        .server_cluster(SOURCE_CLUSTER, source)
        .start()
        .await
        .expect("mesh starts")
}

fn with_env(config: String, env: &[(&str, &str)]) -> Filter {
    let mut f = Filter::identity(config);
    f.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    f
}

async fn status(mesh: &Mesh, profile: &str, path: &str) -> (u16, String) {
    let resp = mesh
        .send_as(profile, Request::new("GET", path))
        .await
        .unwrap();
    (resp.status, resp.text())
}

/// Each Envoy worker (and the main thread) runs its own VM that polls the
/// source on its own timer, so the VM serving requests may see a change up to
/// one poll interval after the gauge (last writer wins) shows it.
async fn wait_status(mesh: &Mesh, profile: &str, path: &str, want: u16) -> String {
    let deadline = Instant::now() + 3 * POLL;
    loop {
        let (code, body) = status(mesh, profile, path).await;
        if code == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} as {profile}: still {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_intended_version_from_the_environment_is_checked_at_load() {
    for (intended, drift) in [("v1", 0), ("v0", 1)] {
        let filter = with_env(
            config("v1", "report"),
            &[("MESHGUARD_INTENDED_VERSION", intended)],
        );
        let mesh = mesh_with(filter, None).await;
        assert_eq!(
            mesh.server.metric(drift_sample()).await.unwrap(),
            Some(drift),
            "intended {intended}"
        );
        let info = mesh
            .server
            .metric(r#"meshguard_config_info{filter="identity",version="v1"}"#)
            .await
            .unwrap();
        assert_eq!(info, Some(1));
        if drift == 1 {
            mesh.server
                .wait_for_log("config drift detected (env): active version=v1")
                .await
                .unwrap();
            // Report mode never blocks traffic.
            assert_eq!(status(&mesh, "frontend", "/api").await.0, 200);
        }
    }
}

#[tokio::test]
async fn drift_from_the_source_of_truth_flips_the_metric_within_a_poll_and_back() {
    let source = source_of_truth();
    publish(&source, &config("v1", "report"));
    let mesh = mesh_with(with_env(config("v1", "report"), &[]), Some(source.addr())).await;
    let within = 2 * POLL + Duration::from_secs(1);
    // First poll: in sync (the gauge exists from load at 0; the log proves the check).
    mesh.server
        .wait_for_log("config verified (source_of_truth): active version=v1")
        .await
        .unwrap();

    let started = Instant::now();
    publish(&source, &config("v2", "report"));
    mesh.server
        .wait_for_metric(drift_sample(), within, |v| v == Some(1))
        .await
        .unwrap();
    let flipped_after = started.elapsed();
    mesh.server
        .wait_for_log("config drift detected (source_of_truth): active version=v1")
        .await
        .unwrap();
    assert!(flipped_after <= within, "took {flipped_after:?}");
    assert_eq!(
        status(&mesh, "frontend", "/api").await.0,
        200,
        "report mode keeps serving"
    );

    publish(&source, &config("v1", "report"));
    mesh.server
        .wait_for_metric(drift_sample(), within, |v| v == Some(0))
        .await
        .unwrap();
    mesh.server
        .wait_for_log("config drift cleared (source_of_truth)")
        .await
        .unwrap();
}

#[tokio::test]
async fn quarantine_refuses_all_but_health_paths_until_the_intended_config_matches() {
    let source = source_of_truth();
    publish(&source, &config("v2", "quarantine"));
    let mesh = mesh_with(
        with_env(config("v1", "quarantine"), &[]),
        Some(source.addr()),
    )
    .await;
    let within = 2 * POLL + Duration::from_secs(1);
    let quarantined = r#"meshguard_config_quarantined{filter="identity"}"#;
    mesh.server
        .wait_for_metric(quarantined, within, |v| v == Some(1))
        .await
        .unwrap();

    let body = wait_status(&mesh, "frontend", "/api/orders", 503).await;
    assert!(body.contains(r#""reason":"config_drift""#), "{body}");
    assert_eq!(
        status(&mesh, "plaintext", "/healthz").await.0,
        200,
        "health paths stay up"
    );
    let denied = mesh
        .server
        .metric(r#"meshguard_quarantine_denied_total{filter="identity"}"#)
        .await
        .unwrap();
    assert!(denied.is_some_and(|n| n >= 1), "{denied:?}");

    // Publishing the running version is the explicit approval to rejoin.
    publish(&source, &config("v1", "quarantine"));
    mesh.server
        .wait_for_metric(quarantined, within, |v| v == Some(0))
        .await
        .unwrap();
    wait_status(&mesh, "frontend", "/api/orders", 200).await;
    mesh.server.wait_for_log("quarantine lifted").await.unwrap();
}

#[tokio::test]
async fn report_mode_never_quarantines() {
    let source = source_of_truth();
    publish(&source, &config("v2", "report"));
    let mesh = mesh_with(with_env(config("v1", "report"), &[]), Some(source.addr())).await;
    let within = 2 * POLL + Duration::from_secs(1);
    mesh.server
        .wait_for_metric(drift_sample(), within, |v| v == Some(1))
        .await
        .unwrap();
    assert_eq!(status(&mesh, "frontend", "/api/orders").await.0, 200);
    assert_eq!(
        mesh.server
            .metric(r#"meshguard_config_quarantined{filter="identity"}"#)
            .await
            .unwrap(),
        Some(0)
    );
}

#[tokio::test]
async fn an_unreachable_source_of_truth_does_not_touch_traffic_but_ages_the_check() {
    let mesh = mesh_with(with_env(config("v1", "quarantine"), &[]), None).await;
    let errors = r#"meshguard_intended_source_errors_total{filter="identity"}"#;
    mesh.server
        .wait_for_metric(errors, 3 * POLL, |v| v.is_some_and(|n| n >= 2))
        .await
        .unwrap();
    let age = r#"meshguard_config_check_age_seconds{filter="identity"}"#;
    mesh.server
        .wait_for_metric(age, 4 * POLL, |v| v.is_some_and(|n| n >= 2))
        .await
        .unwrap();
    assert_eq!(status(&mesh, "frontend", "/api").await.0, 200);
    assert_eq!(mesh.server.metric(drift_sample()).await.unwrap(), Some(0));
    mesh.server
        .wait_for_log("source of truth unreachable")
        .await
        .unwrap();
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn trust_env() -> Vec<(&'static str, String)> {
    let public =
        base64::engine::general_purpose::STANDARD.encode(signing_key().verifying_key().to_bytes());
    vec![
        ("MESHGUARD_TRUSTED_KEYS", format!("release={public}")),
        ("MESHGUARD_REQUIRE_SIGNATURE", "true".into()),
    ]
}

fn signed(config: &str) -> String {
    let bytes =
        meshguard_core::integrity::sign_config(config.as_bytes(), "release", &signing_key())
            .unwrap();
    String::from_utf8(bytes).unwrap()
}

fn trusted(config: String) -> Filter {
    let env = trust_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    with_env(config, &env)
}

#[tokio::test]
async fn only_configs_signed_by_a_trusted_key_load_and_every_other_attempt_is_counted() {
    let policy = |v: &str| {
        format!(
            r#"{{"config_version": "{v}", "rules": [{{"name": "frontend", "action": "allow", "principals": ["cluster.local/ns/default/sa/frontend"]}}]}}"#
        )
    };
    let mesh = mesh_with(trusted(signed(&policy("v1"))), None).await;
    assert_eq!(status(&mesh, "frontend", "/api").await.0, 200);
    mesh.server
        .wait_for_log("signature=verified by release")
        .await
        .unwrap();

    let tampered = signed(&policy("v2")).replace("frontend", "unknown");
    let other_key = String::from_utf8(
        meshguard_core::integrity::sign_config(
            policy("v2").as_bytes(),
            "release",
            &SigningKey::from_bytes(&[1; 32]),
        )
        .unwrap(),
    )
    .unwrap();
    let unauthorized = r#"meshguard_config_loads_total{filter="identity",result="unauthorized"}"#;
    for (n, (what, config)) in [
        ("tampered", tampered),
        ("wrong key", other_key),
        ("unsigned", policy("v2")),
    ]
    .into_iter()
    .enumerate()
    {
        let outcome = mesh.push_filters(&[trusted(config)]).await.unwrap();
        assert_eq!(outcome, PushOutcome::Rejected, "{what}");
        let count = mesh.server.metric(unauthorized).await.unwrap().unwrap_or(0);
        assert!(count > n as u64, "{what}: unauthorized count {count}");
        // The config already running keeps serving.
        assert_eq!(status(&mesh, "frontend", "/api").await.0, 200, "{what}");
    }
    mesh.server
        .wait_for_log("unauthorized config: the config is not signed")
        .await
        .unwrap();
    mesh.server
        .wait_for_log("modified after signing?")
        .await
        .unwrap();

    // A properly signed update is accepted.
    let outcome = mesh
        .push_filters(&[trusted(signed(&policy("v3")))])
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Accepted);
    mesh.server
        .wait_for_metric(
            r#"meshguard_config_info{filter="identity",version="v3"}"#,
            Duration::from_secs(10),
            |v| v == Some(1),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_drift_metric() {
    let source = source_of_truth();
    publish(&source, &config("v2", "report"));
    let mesh = mesh_with(with_env(config("v1", "report"), &[]), Some(source.addr())).await;
    let prometheus = Prometheus::start(&[mesh.server.admin_addr()])
        .await
        .unwrap();
    let result = prometheus
        .wait_for(
            r#"meshguard_config_drift{filter="identity"}"#,
            Duration::from_secs(30),
            |r| r.first().and_then(sample_value) == Some(1.0),
        )
        .await
        .unwrap();
    assert_eq!(result.len(), 1, "{result:?}");
    let info = prometheus
        .wait_for(
            r#"meshguard_config_info{version="v1"}"#,
            Duration::from_secs(10),
            |r| !r.is_empty(),
        )
        .await
        .unwrap();
    assert_eq!(info[0]["metric"]["filter"], "identity");
}
