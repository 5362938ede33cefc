//! The native module's own rows, in every run (the build is forced to
//! native here, whatever `MESHGUARD_TEST_BUILD` says): it loads in the
//! project's Envoy 1.40 with its ABI version matched, judges requests,
//! exports its metrics under Envoy's `meshguard` namespace with the same
//! tags, reads its trust settings from Envoy's process environment, and a
//! panic in a hook is answered (never an Envoy crash). Everything the
//! sections do is proved by the other suites run with
//! `MESHGUARD_TEST_BUILD=native` (the parity matrix, docs/testing.md).

use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Build, Deployment, Filter, Mesh};

const POLICY: &str = r#"{
  "config_version": "native-1",
  "default_action": "deny",
  "transport": {"require_mtls": true},
  "rules": [
    {"name": "frontend-api", "action": "allow",
     "principals": ["cluster.local/ns/default/sa/frontend"], "paths": ["/api/*"]}
  ]
}"#;

async fn mesh(filter: Filter) -> Mesh {
    Mesh::builder()
        .build(Build::Native)
        .filter(filter)
        .start()
        .await
        .unwrap()
}

async fn raw_prometheus(mesh: &Mesh) -> String {
    mesh.server
        .admin_get("/stats/prometheus")
        .await
        .unwrap()
        .text()
}

/// Broken by hand once: `on_program_init` returned "v0.1.0" (Envoy then
/// logs the version as deprecated instead of matched).
#[tokio::test]
async fn the_module_loads_in_envoy_1_40_with_its_abi_version_matched_and_judges_requests() {
    let mesh = mesh(Filter::identity(POLICY)).await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let allowed = mesh
            .send_as("frontend", Request::new("GET", "/api/a").protocol(protocol))
            .await
            .unwrap();
        assert_eq!(allowed.status, 200, "{protocol:?}: {allowed:?}");
        mesh.upstream().take_one().await.unwrap();
        let denied = mesh
            .send_as(
                "plaintext",
                Request::new("GET", "/api/a").protocol(protocol),
            )
            .await
            .unwrap();
        assert_eq!(denied.status, 403, "{protocol:?}: {denied:?}");
        assert_eq!(
            denied.header("x-meshguard-deny-reason"),
            Some("mtls_required")
        );
        mesh.assert_nothing_reached_upstream("denied").await;
    }
    let log = mesh.flushed_server_log().await.unwrap();
    assert!(
        log.contains("Dynamic module ABI version v0.2.0 matched"),
        "{log}"
    );
    assert!(log.contains("meshguard: native module"), "{log}");
    assert!(!log.contains("deprecated"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Broken by hand once: `metric_name` kept the `meshguard_` prefix (the
/// samples became `envoy_meshguard_meshguard_...`).
#[tokio::test]
async fn metrics_are_in_envoys_meshguard_namespace_with_the_same_tags() {
    let filter = Filter::identity(POLICY);
    // `identity`, or `meshguard` when the run deploys the combined plugin.
    let label = Deployment::current().label_of(&filter);
    let mesh = mesh(filter).await;
    let resp = mesh
        .send_as("frontend", Request::new("GET", "/api/a"))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let text = raw_prometheus(&mesh).await;
    for sample in [
        r#"envoy_meshguard_identity_requests_total{decision="allowed",reason="allowed_by_rule"} 1"#
            .to_owned(),
        format!(r#"envoy_meshguard_panics_total{{filter="{label}"}} 0"#),
        format!(r#"envoy_meshguard_config_info{{filter="{label}",version="native-1"}} 1"#),
    ] {
        assert!(text.lines().any(|l| l == sample), "{sample} in:\n{text}");
    }
    assert!(
        !text.contains("meshguard_vm_memory_bytes"),
        "no VM, no VM memory gauge"
    );
}

/// Broken by hand once: `NativeRoot::env` answered `None` (the unsigned
/// config was then accepted).
#[tokio::test]
async fn trust_settings_come_from_envoys_process_environment() {
    let log = Mesh::builder()
        .build(Build::Native)
        .filter(Filter::identity(POLICY).env("MESHGUARD_REQUIRE_SIGNATURE", "true"))
        .start_refused()
        .await
        .unwrap();
    assert!(log.contains("configuration refused"), "{log}");
    assert!(log.contains("signature"), "{log}");
}

/// Broken by hand once: `stream_hook` ran the pipeline without
/// `catch_unwind` (the panic then aborted Envoy: no answer, no next request).
#[tokio::test]
async fn a_panic_in_a_hook_is_answered_503_and_envoy_keeps_serving() {
    let mut filter = Filter::identity(POLICY);
    filter.module = meshguard_host_tests::faulty_native_module();
    let mesh = mesh(filter).await;
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let crashed = mesh
            .send_as(
                "frontend",
                Request::new("GET", "/api/a")
                    .protocol(protocol)
                    .header("x-meshguard-fault", "panic"),
            )
            .await
            .unwrap();
        assert_eq!(crashed.status, 503, "{protocol:?}: {crashed:?}");
        assert_eq!(
            crashed.header("x-meshguard-deny-reason"),
            Some("meshguard_internal_error")
        );
        mesh.assert_nothing_reached_upstream("after a panic").await;
        let next = mesh
            .send_as("frontend", Request::new("GET", "/api/b").protocol(protocol))
            .await
            .unwrap();
        assert_eq!(next.status, 200, "{protocol:?}: {next:?}");
        mesh.upstream().take_one().await.unwrap();
    }
    let text = raw_prometheus(&mesh).await;
    let sample = r#"envoy_meshguard_panics_total{filter="identity"} 2"#;
    assert!(text.lines().any(|l| l == sample), "{sample} in:\n{text}");
    let log = mesh.flushed_server_log().await.unwrap();
    assert!(
        log.contains("meshguard: panicked at")
            && log.contains("the panic the request asked for")
            && log.contains("internal error in the RequestHeaders hook"),
        "{log}"
    );
}

/// examples/native/envoy.yaml, as a user runs it: the file itself in the
/// project's Envoy 1.40 (only its listener and admin ports and its backend
/// replaced), the audit key in Envoy's process environment. It loads, lets
/// the API through, denies the rest, masks a password before the backend
/// and stamps the audited write.
///
/// Broken by hand once: the example's masking rule named `passwd` instead
/// of `password`: `hunter2` reached the backend and this failed.
#[tokio::test]
async fn the_standalone_envoy_example_loads_and_judges_requests() {
    use base64::Engine as _;
    use meshguard_host_tests::envoy::Envoy;
    use meshguard_host_tests::manifests::yaml_to_json;
    use meshguard_host_tests::mesh::{loopback, static_cluster};
    use meshguard_host_tests::upstream::Upstream;

    let root = meshguard_host_tests::repo_root();
    let module = meshguard_host_tests::native_module().unwrap();
    let backend = Upstream::start().await.unwrap();
    let mut bootstrap = yaml_to_json(&root.join("examples/native/envoy.yaml"))
        .unwrap()
        .remove(0);
    let statics = &mut bootstrap["static_resources"];
    statics["listeners"][0]["address"] = loopback(0);
    statics["clusters"][0] = static_cluster("backend", backend.addr(), None);
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let env = [
        (
            "ENVOY_DYNAMIC_MODULES_SEARCH_PATH".to_owned(),
            module.parent().unwrap().display().to_string(),
        ),
        ("MESHGUARD_AUDIT_KEY".to_owned(), key),
    ];
    let dir = tempfile::tempdir().unwrap();
    let envoy = Envoy::start_with_env("example", dir.path(), bootstrap, 1, &env)
        .await
        .unwrap();
    let addr = envoy.listener("ingress").await.unwrap();
    let send = |request: Request| async move {
        meshguard_host_tests::http::send(addr, &request)
            .await
            .unwrap()
    };

    assert_eq!(send(Request::new("GET", "/api/orders")).await.status, 200);
    backend.take_one().await.unwrap();
    let denied = send(Request::new("GET", "/admin")).await;
    assert_eq!(denied.status, 403, "{denied:?}");
    let write = send(
        Request::new("POST", "/api/orders")
            .header("content-type", "application/json")
            .body(r#"{"item": 1, "password": "hunter2"}"#),
    )
    .await;
    assert_eq!(write.status, 200, "{write:?}");
    let seen = backend.take_one().await.unwrap();
    assert!(!seen.text().contains("hunter2"), "{}", seen.text());
    assert!(seen.text().contains("[REDACTED]"), "{}", seen.text());
    assert!(seen.header("x-meshguard-audit").is_some(), "{seen:?}");
    assert!(
        backend.take().is_empty(),
        "the denied request reached nothing"
    );
    let log = envoy.log();
    assert!(
        log.contains("Dynamic module ABI version v0.2.0 matched"),
        "{log}"
    );
}
