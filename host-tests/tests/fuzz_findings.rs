//! What `make fuzz` found (docs/fuzzing.md, "Findings"), proven fixed in the
//! real Envoy over HTTP/1.1 and HTTP/2.

use meshguard_host_tests::http::{Protocol, Request};
use meshguard_host_tests::mesh::{Filter, Mesh, PathNormalization};
use meshguard_host_tests::upstream::{Script, SCRIPT_HEADER};

const DENY_ADMIN: &str = r#"{
  "default_action": "allow",
  "rules": [{"name": "no-admin", "action": "deny", "paths": ["/admin", "/admin/*"]}]
}"#;

/// `%25%32%65` is `%2e` once decoded and `.` twice: an upstream that decodes
/// twice resolves `/x/%25%32%65%25%32%65/admin/users` to `/admin/users`.
#[tokio::test]
async fn double_escapes_with_escaped_hex_digits_are_refused_as_ambiguous() {
    for sidecar in [PathNormalization::None, PathNormalization::Base] {
        let mesh = Mesh::builder()
            .filter(Filter::identity(DENY_ADMIN))
            .path_normalization(sidecar)
            .start()
            .await
            .expect("mesh starts");
        for target in [
            "/x/%25%32%65%25%32%65/admin/users",
            "/x/%25%32e%25%32e/admin/users",
            "/%25%36%31dmin/users",
        ] {
            for protocol in Protocol::ALL {
                let resp = mesh
                    .send_as("frontend", Request::new("GET", target).protocol(protocol))
                    .await
                    .expect("response");
                assert_eq!(
                    resp.status, 403,
                    "{target} {sidecar:?} {protocol:?}: {resp:?}"
                );
                assert_eq!(
                    resp.header("x-meshguard-deny-reason"),
                    Some("ambiguous_path"),
                    "{target} {sidecar:?} {protocol:?}"
                );
                mesh.upstream().assert_nothing_arrived(target);
            }
        }
    }
}

/// Two e-mail matches that overlap (`a.b@example.Ab` and
/// `example.Ab@example.com`): the tail of the second used to pass in clear.
#[tokio::test]
async fn overlapping_matches_are_masked_whole() {
    let mesh = Mesh::builder()
        .filter(Filter::named(
            "masking",
            r#"{"rules": [{"name": "emails", "detectors": ["email"]}]}"#,
        ))
        .start()
        .await
        .expect("mesh starts");
    mesh.upstream().script(
        "note",
        Script::typed("text/plain", "mail a.b@example.Ab@example.com x"),
    );
    mesh.upstream().script(
        "json",
        Script::typed(
            "application/json",
            r#"{"note": "mail a.b@example.Ab@example.com x"}"#,
        ),
    );
    for script in ["note", "json"] {
        for protocol in Protocol::ALL {
            let resp = mesh
                .send_as(
                    "frontend",
                    Request::new("GET", "/n")
                        .protocol(protocol)
                        .header(SCRIPT_HEADER, script),
                )
                .await
                .expect("response");
            let body = resp.text();
            assert_eq!(resp.status, 200, "{script} {protocol:?}: {body}");
            assert!(!body.contains("example"), "{script} {protocol:?}: {body}");
            assert!(
                body.contains("mail ") && body.contains(" x"),
                "{script} {protocol:?}: {body}"
            );
            mesh.upstream().take();
        }
    }
}
