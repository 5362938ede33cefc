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
                mesh.assert_nothing_reached_upstream(target).await;
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
    for (script, protocol, body) in masked_responses(&mesh).await {
        assert!(!body.contains("example"), "{script} {protocol:?}: {body}");
        assert!(
            body.contains("mail ") && body.contains(" x"),
            "{script} {protocol:?}: {body}"
        );
    }
}

/// A replacement changes what its neighbours look like to the detectors:
/// `tkt_…` (a pattern) masked used to leave `[REDACTED]123-45-6789` and
/// `[REDACTED]john…@example.com` in clear, where the run before them had
/// hidden the number and the address. The masked text is scanned again.
#[tokio::test]
async fn a_replacement_never_uncovers_a_match_next_to_it() {
    let mesh = Mesh::builder()
        .filter(Filter::named(
            "masking",
            r#"{"rules": [
                {"name": "pii", "detectors": ["email", "us_ssn", "aws_access_key"]},
                {"name": "tickets", "patterns": [{"name": "ticket", "regex": "tkt_[A-Za-z0-9]{24}"}]}
            ]}"#,
        ))
        .start()
        .await
        .expect("mesh starts");
    let text = "a tkt_AAAAAAAAAAAAAAAAAAAAAAAA123-45-6789 b \
                tkt_BBBBBBBBBBBBBBBBBBBBBBBBjohn.doe.with.a.rather.long.local.part.indeed@example.com c \
                mail john@example.com.AKIAIOSFODNN7EXAMPLE d";
    mesh.upstream()
        .script("note", Script::typed("text/plain", text));
    mesh.upstream().script(
        "json",
        Script::typed("application/json", format!(r#"{{"note": "{text}"}}"#)),
    );
    for (script, protocol, body) in masked_responses(&mesh).await {
        for secret in ["6789", "example", "AKIA", "tkt_"] {
            assert!(!body.contains(secret), "{script} {protocol:?}: {body}");
        }
        for kept in ["a ", " b ", " c ", "mail ", " d"] {
            assert!(body.contains(kept), "{script} {protocol:?}: {body}");
        }
    }
}

/// The upstream's `note` (text) and `json` answers to a GET, over each
/// protocol, as the client received them (each a 200).
async fn masked_responses(mesh: &Mesh) -> Vec<(&'static str, Protocol, String)> {
    let mut out = Vec::new();
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
            mesh.upstream().take();
            out.push((script, protocol, body));
        }
    }
    out
}
