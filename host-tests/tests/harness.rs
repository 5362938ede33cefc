//! The harness proves itself: with no meshguard filter in the chain, what the
//! client sends is what the recording upstream sees, on every protocol
//! combination, and what the upstream scripts is what the client receives.
//! If these fail, no other real-Envoy test can be trusted.

use meshguard_host_tests::http::{every_leg, Protocol, Request};
use meshguard_host_tests::mesh::Mesh;
use meshguard_host_tests::upstream::{BodyState, Script};

async fn bare_mesh() -> Mesh {
    Mesh::builder().start().await.expect("mesh starts")
}

#[tokio::test]
async fn every_protocol_combination_delivers_headers_repeats_body_and_trailers() {
    let mesh = bare_mesh().await;
    mesh.upstream().script(
        "answer",
        Script::typed("text/plain", "")
            .chunks(vec![b"one ".to_vec(), b"two".to_vec()])
            .header("x-answer", "a")
            .header("x-answer", "b")
            .trailer("x-answer-trailer", "done"),
    );
    for (client, leg, upstream, what) in every_leg() {
        let request = Request::new("POST", "/a/b?x=1&x=2")
            .protocol(client)
            .leg(leg)
            .upstream_protocol(upstream)
            .script("answer")
            .header("te", "trailers")
            .header("x-dup", "first")
            .header("x-dup", "second")
            .header("x-bytes", b"caf\xe9")
            .chunked(vec![b"hello ".to_vec(), b"world".to_vec()])
            .trailer("x-req-trailer", "t1");
        let resp = mesh.send_as("frontend", request).await.unwrap();
        assert_eq!(resp.status, 200, "{what}: {resp:?}");
        assert_eq!(resp.text(), "one two", "{what}");
        assert_eq!(
            resp.header_all("x-answer"),
            [&b"a"[..], &b"b"[..]],
            "{what}"
        );
        let got = mesh.upstream().take_one().await.unwrap();
        assert_eq!(
            resp.trailer("x-answer-trailer"),
            Some("done"),
            "{what}: {resp:?} {got:?}"
        );
        assert!(!resp.is_reset(), "{what}");

        assert_eq!(got.protocol, upstream, "{what}");
        assert_eq!(got.method, "POST", "{what}");
        assert_eq!(got.target, "/a/b?x=1&x=2", "{what}");
        assert_eq!(
            got.header_all("x-dup"),
            [&b"first"[..], &b"second"[..]],
            "{what}"
        );
        assert_eq!(got.header_all("x-bytes"), [&b"caf\xe9"[..]], "{what}");
        assert_eq!(got.body, b"hello world", "{what}");
        assert_eq!(got.trailer("x-req-trailer"), Some("t1"), "{what}");
        assert_eq!(got.state, BodyState::Complete, "{what}");
        assert!(
            got.header("x-meshguard-test-upstream").is_none(),
            "{what}: routing headers are removed"
        );
    }
}

#[tokio::test]
async fn odd_path_spellings_reach_the_upstream_as_envoy_forwards_them() {
    use meshguard_host_tests::mesh::PathNormalization;
    let raw = "//a/./b/%2e%2e/%2F;x?q=%2e";
    // Envoy with no normalization forwards the target untouched; Istio's BASE
    // resolves dot segments (after decoding unreserved %2e) but keeps `//`,
    // `%2F` and `;`.
    let cases = [
        (PathNormalization::None, raw),
        (PathNormalization::Base, "//a/%2F;x?q=%2e"),
    ];
    for (paths, want) in cases {
        let mesh = Mesh::builder()
            .path_normalization(paths)
            .start()
            .await
            .unwrap();
        for client in Protocol::ALL {
            let resp = mesh
                .send_as("frontend", Request::new("GET", raw).protocol(client))
                .await
                .unwrap();
            assert_eq!(resp.status, 200, "{paths:?} {client:?}: {resp:?}");
            let got = mesh.upstream().take_one().await.unwrap();
            assert_eq!(got.target, want, "{paths:?} {client:?}");
        }
    }
}

#[tokio::test]
async fn a_response_reset_after_its_headers_is_an_outcome_not_an_error() {
    let mesh = bare_mesh().await;
    // The upstream resets the stream mid-body.
    mesh.upstream()
        .script("short", Script::typed("text/plain", "partial").abort());
    for client in Protocol::ALL {
        let resp = mesh
            .send_as(
                "frontend",
                Request::new("GET", "/").protocol(client).script("short"),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{client:?}: {resp:?}");
        assert!(resp.is_reset(), "{client:?}: {resp:?}");
    }
}

#[tokio::test]
async fn nothing_arrived_is_observable() {
    let mesh = bare_mesh().await;
    mesh.assert_nothing_reached_upstream("a fresh mesh").await;
    mesh.send_as("frontend", Request::new("GET", "/x"))
        .await
        .unwrap();
    assert_eq!(mesh.upstream().count(), 1);
    let legacy = mesh.upstream().last().unwrap();
    assert_eq!(legacy.target, "/x");
}

#[tokio::test]
async fn istios_append_forward_drops_xfcc_from_a_caller_without_a_certificate() {
    let mesh = bare_mesh().await;
    let forged = "By=spiffe://cluster.local/ns/istio-system/sa/ingress;URI=spiffe://x/y";
    for protocol in Protocol::ALL {
        let request = Request::new("GET", "/")
            .protocol(protocol)
            .header("x-forwarded-client-cert", forged);
        mesh.send_direct(request.clone()).await.unwrap();
        let got = mesh.upstream().take_one().await.unwrap();
        assert!(
            got.header_all("x-forwarded-client-cert").is_empty(),
            "{got:?}"
        );
        // Over mTLS it is kept and the peer's element appended.
        mesh.send_as("frontend", request).await.unwrap();
        let got = mesh.upstream().take_one().await.unwrap();
        let xfcc = got.header("x-forwarded-client-cert").unwrap_or_default();
        assert!(xfcc.starts_with(forged), "{xfcc}");
        assert!(
            xfcc.ends_with("URI=spiffe://cluster.local/ns/default/sa/frontend"),
            "{xfcc}"
        );
    }
}

#[tokio::test]
async fn concurrent_http2_streams_get_their_own_scripted_answers() {
    use meshguard_host_tests::http::Connection;
    use meshguard_host_tests::mesh::ROUTE_HEADER;
    let mesh = bare_mesh().await;
    let conn = Connection::open_with(mesh.client_addr(), Protocol::Http2)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let name = format!("s{i}");
        mesh.upstream().script(
            &name,
            Script::typed("text/plain", "")
                .chunks(vec![format!("answer {i} ").into_bytes(), b"end".to_vec()]),
        );
        let mut stream = conn.stream().unwrap();
        let request = Request::new("POST", &format!("/c/{i}"))
            .http2()
            .header(ROUTE_HEADER, "frontend")
            .script(&name)
            .body(format!("request {i}"));
        tasks.push(tokio::spawn(async move { stream.send(&request).await }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let resp = task.await.unwrap().unwrap();
        assert_eq!(resp.text(), format!("answer {i} end"));
    }
    let got = mesh.upstream().settled().await.unwrap();
    assert_eq!(got.len(), 6);
    for rec in got {
        let i = rec.target.trim_start_matches("/c/");
        assert_eq!(rec.text(), format!("request {i}"));
        assert_eq!(
            rec.header("x-meshguard-test-script"),
            Some(format!("s{i}").as_str())
        );
    }
}

#[tokio::test]
async fn raw_requests_carry_bytes_hyper_would_refuse() {
    use meshguard_host_tests::http::send_raw;
    use meshguard_host_tests::mesh::ROUTE_HEADER;
    let mesh = bare_mesh().await;
    // A target written byte for byte reaches the upstream as Istio's BASE
    // normalization leaves it (`%7e` is unreserved: decoded)...
    let ok = format!(
        "GET /raw/%7e?q=a%20b HTTP/1.1\r\nhost: x\r\n{ROUTE_HEADER}: frontend\r\nconnection: close\r\n\r\n"
    );
    let resp = send_raw(mesh.client_addr(), ok.as_bytes(), b"")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text());
    assert_eq!(
        mesh.upstream().take_one().await.unwrap().target,
        "/raw/~?q=a%20b"
    );
    // ...and a raw non-ASCII byte in it is Envoy's to judge: refused here.
    let mut bytes = b"GET /raw/\xff HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_vec();
    bytes.extend_from_slice(format!("{ROUTE_HEADER}: frontend\r\n\r\n").as_bytes());
    let resp = send_raw(mesh.client_addr(), &bytes, b"").await.unwrap();
    assert_eq!(resp.status(), 400, "{}", resp.text());
    mesh.assert_nothing_reached_upstream("a raw 0xff byte in the target")
        .await;
}
