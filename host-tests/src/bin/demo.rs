//! `make demo`: two real Envoy sidecars with the meshguard identity filter,
//! a series of calls from different identities and transports, and the
//! metrics the server sidecar exports.

use meshguard_host_tests::http::Request;
use meshguard_host_tests::mesh::{default_profiles, Filter, Mesh};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let policy_file = meshguard_host_tests::repo_root().join("examples/identity/demo.json");
    let policy = std::fs::read_to_string(&policy_file)?;
    println!("meshguard demo: client sidecar --mTLS--> server sidecar (meshguard identity filter) --> echo");
    println!("policy: {}\n", policy_file.display());
    let mesh = Mesh::builder()
        .filter(Filter::identity(policy))
        .start()
        .await?;

    let identity_of = |route: &str| {
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
    println!("{:<62} {:<22} result", "caller", "request");
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
            "{:<62} {:<22} {result}",
            identity_of(route),
            format!("{method} {path}")
        );
    }

    println!("\nserver sidecar /stats/prometheus (meshguard_*):");
    for line in mesh.server.prometheus().await?.lines() {
        if line.starts_with("meshguard_") && !line.ends_with(" 0") {
            println!("  {line}");
        }
    }
    println!("\nserver sidecar log (denials):");
    for line in mesh.server.log().lines() {
        if let Some(i) = line.find("meshguard identity: denied") {
            println!("  {}", &line[i..]);
        }
    }
    Ok(())
}
