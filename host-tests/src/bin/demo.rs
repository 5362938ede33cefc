//! `make demo`: two real Envoy sidecars running all meshguard filters
//! (identity → masking → audit), an audit collector and the reference source
//! of truth. Shows allowed and denied calls, a masked response, an audited
//! call verified with `meshguard audit verify`, and a config drift detected and
//! cleared, with the metrics the server sidecar exports.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use meshguard_host_tests::collector::Collector;
use meshguard_host_tests::http::Request;
use meshguard_host_tests::mesh::{default_profiles, Filter, Mesh, AUDIT_KEY};
use meshguard_host_tests::source::{release_key, signed, trusted_key_entry, SourceOfTruth, KEY_ID};

const SOURCE_CLUSTER: &str = "meshguard-intended";
const COLLECTOR_CLUSTER: &str = "audit-collector";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = meshguard_host_tests::repo_root();
    let read =
        |path: &str| std::fs::read_to_string(root.join(path)).with_context(|| path.to_string());
    let identity = read("examples/identity/demo.json")?;
    let masking = read("examples/demo/masking.json")?;
    let audit = read("examples/demo/audit.json")?;

    // The identity config is signed by the release key the sidecar trusts
    // (proxy-level env); the source of truth serves a signed document naming
    // it as the intended config of default/backend.
    let identity_unsigned = identity;
    let identity = signed("identity", 1, &identity_unsigned);
    let truth = SourceOfTruth::start()?;
    truth.publish_config("identity", &identity)?;
    let collector = Collector::start().await?;

    println!("meshguard demo");
    println!("  client sidecar --mTLS (SPIFFE certs)--> server sidecar [identity -> masking -> audit] --> echo");
    println!("  configs: examples/identity/demo.json, examples/demo/masking.json, examples/demo/audit.json\n");
    let mesh = Mesh::builder()
        .filter(Filter::identity(identity.clone()).env(
            "MESHGUARD_TRUSTED_KEYS",
            &trusted_key_entry(KEY_ID, &release_key()),
        ))
        .filter(Filter::named("masking", masking))
        .filter(Filter::audit(audit).env("MESHGUARD_AUDIT_KEY", AUDIT_KEY))
        .server_cluster(SOURCE_CLUSTER, truth.addr())
        .server_cluster(COLLECTOR_CLUSTER, collector.addr())
        .start()
        .await?;

    section("1. Identity and mTLS policy");
    let caller_of = |route: &str| {
        default_profiles()
            .into_iter()
            .find(|p| p.route == route)
            .map(|p| match p.identity {
                Some(id) if p.max_tls == "TLSv1_2" => format!("{id} (TLS 1.2)"),
                Some(id) => id.to_string(),
                None => "plaintext, no certificate".to_string(),
            })
            .unwrap_or_default()
    };
    let calls = [
        ("frontend", "GET", "/api/orders"),
        ("frontend", "POST", "/api/orders/42"),
        ("frontend", "DELETE", "/api/orders/42"),
        ("unknown", "GET", "/api/orders"),
        ("plaintext", "GET", "/api/orders"),
        ("plaintext", "GET", "/healthz"),
        ("frontend-tls12", "GET", "/admin/users"),
        ("frontend", "GET", "/admin/users"),
        ("batch", "POST", "/batch/nightly/run"),
    ];
    println!("{:<58} {:<26} result", "caller", "request");
    for (route, method, path) in calls {
        let resp = mesh.send_as(route, Request::new(method, path)).await?;
        let result = match resp.status {
            200 => "200 allowed".to_string(),
            status => format!(
                "{status} denied: {}",
                resp.header("x-meshguard-deny-reason").unwrap_or("?")
            ),
        };
        println!(
            "{:<58} {:<26} {result}",
            caller_of(route),
            format!("{method} {path}")
        );
    }

    section("2. Masking: the caller never sees the raw values");
    let upstream_answer = r#"{"order": 42, "card_number": "4111111111111111", "email": "ann@example.com", "note": "ssn 078-05-1120"}"#;
    for route in ["frontend", "auditor"] {
        let request = Request::new("GET", "/api/orders/42")
            .header("x-echo-response", upstream_answer)
            .header("x-echo-content-type", "application/json");
        let resp = mesh.send_as(route, request).await?;
        println!("upstream sent: {upstream_answer}");
        println!("{:<9} got: {}\n", route, resp.text());
    }

    section("3. Command-hash audit");
    let query = r#"{"sql": "SELECT * FROM orders WHERE id = 42"}"#;
    let resp = mesh
        .send_as(
            "frontend",
            Request::new("POST", "/api/query")
                .header("content-type", "application/json")
                .body(query),
        )
        .await?;
    let echoed = resp.json()?;
    println!("request body:         {query}");
    println!(
        "upstream received:    x-meshguard-command-sha256: {}",
        echoed["headers"]["x-meshguard-command-sha256"]
    );
    println!(
        "                      x-meshguard-audit: {}",
        echoed["headers"]["x-meshguard-audit"]
    );
    println!(
        "caller received:      x-meshguard-audit-id: {}",
        resp.header("x-meshguard-audit-id").unwrap_or("-")
    );
    let records = wait_for(|| {
        let lines: Vec<String> = mesh
            .server
            .log()
            .lines()
            .filter_map(|l| {
                l.find("meshguard-audit-record: ")
                    .map(|i| l[i..].to_string())
            })
            .collect();
        lines
            .iter()
            .any(|l| l.contains(r#""command":"sql""#))
            .then_some(lines)
    })
    .await
    .context("audit records in the log")?;
    let record_file = mesh.dir().join("audit-records.log");
    std::fs::write(&record_file, records.join("\n"))?;
    println!("\n$ meshguard audit verify audit-records.log --key demo=<key>");
    let meshguard = root.join("target/debug/meshguard");
    let out = std::process::Command::new(&meshguard)
        .args(["audit", "verify"])
        .arg(&record_file)
        .args(["--key", &format!("demo={AUDIT_KEY}")])
        .output()
        .with_context(|| format!("running {} (make demo builds it)", meshguard.display()))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let delivered =
        wait_for(|| (collector.lines().len() >= records.len()).then_some(collector.lines().len()))
            .await;
    println!("the collector received {} records", delivered.unwrap_or(0));

    section("4. Config drift: intended vs running");
    let drift = r#"meshguard_config_drift{filter="identity"}"#;
    println!(
        "the source of truth intends the running config: drift = {:?}",
        mesh.server.metric(drift).await?
    );
    truth.publish_config(
        "identity",
        &signed(
            "identity",
            2,
            &identity_unsigned.replace("\"demo-1\"", "\"demo-2\""),
        ),
    )?;
    println!("publishing intended version demo-2 (the sidecar still runs demo-1)...");
    mesh.server
        .wait_for_metric(drift, Duration::from_secs(5), |v| v == Some(1))
        .await?;
    mesh.server.wait_for_log("config drift detected").await?;
    println!(
        "  drift = 1    log: {}",
        last_line(&mesh, "config drift detected")
    );
    truth.publish_config("identity", &identity)?;
    println!("publishing demo-1 again...");
    mesh.server
        .wait_for_metric(drift, Duration::from_secs(5), |v| v == Some(0))
        .await?;
    mesh.server.wait_for_log("config drift cleared").await?;
    println!(
        "  drift = 0    log: {}",
        last_line(&mesh, "config drift cleared")
    );

    section("Server sidecar /stats/prometheus (meshguard_*, non-zero)");
    for line in mesh.server.prometheus().await?.lines() {
        if line.starts_with("meshguard_") && !line.ends_with(" 0") {
            println!("  {line}");
        }
    }
    Ok(())
}

fn section(title: &str) {
    println!("\n=== {title} ===\n");
}

fn last_line(mesh: &Mesh, needle: &str) -> String {
    mesh.server
        .log()
        .lines()
        .rev()
        .find_map(|l| l.find(needle).map(|i| l[i..].to_string()))
        .unwrap_or_default()
}

async fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
