//! The masking section on the traffic real services send, in real Envoys:
//! streamed bodies (server-sent events, JSON Lines, json-seq, text lines),
//! multipart uploads and text in other charsets, in both directions, over
//! HTTP/1.1 and HTTP/2 (client and sidecar-to-sidecar leg), each checked on
//! what the other side really received.
//!
//! The streaming tests prove two things with timestamps: the first record
//! reaches the other side before the last one is sent, and a secret split
//! across chunks never crosses in clear. Runs in both deployments
//! (`MESHGUARD_TEST_DEPLOYMENT=combined` merges the sections into one plugin).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshguard_host_tests::http::{Protocol, Request, Response};
use meshguard_host_tests::mesh::{route_for, Build, Filter, Mesh, ROUTE_HEADER};
use meshguard_host_tests::upstream::{Script, SCRIPT_HEADER};
use tokio::net::TcpStream;

const POLICY: &str = r#"{
  "config_version": "streams-v1",
  "max_record_bytes": 4096,
  "on_binary_part": "pass",
  "rules": [
    {"name": "pii", "json_keys": ["password"], "detectors": ["email", "card", "private_key"]}
  ]
}"#;

async fn mesh() -> Mesh {
    Mesh::builder()
        .filter(Filter::named("masking", POLICY))
        .start()
        .await
        .expect("the mesh starts")
}

// ---------------------------------------------------------------------------
// A streaming client: every body frame with the time it arrived.

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn sender(mesh: &Mesh, protocol: Protocol) -> hyper::client::conn::http2::SendRequest<Body> {
    let io = TokioIo::new(TcpStream::connect(mesh.client_addr()).await.unwrap());
    match protocol {
        Protocol::Http2 => {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            sender
        }
        Protocol::Http1 => unreachable!("HTTP/1.1 uses `send_h1`"),
    }
}

/// Sends `request` and returns the response status and its body frames,
/// each with when it arrived (since the request was sent).
async fn timed(
    mesh: &Mesh,
    protocol: Protocol,
    request: hyper::Request<Body>,
) -> (u16, Vec<(Duration, Bytes)>) {
    let start = Instant::now();
    let response = match protocol {
        Protocol::Http2 => {
            let mut s = sender(mesh, protocol).await;
            s.ready().await.unwrap();
            s.send_request(request).await.unwrap()
        }
        Protocol::Http1 => {
            let io = TokioIo::new(TcpStream::connect(mesh.client_addr()).await.unwrap());
            let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            s.ready().await.unwrap();
            s.send_request(request).await.unwrap()
        }
    };
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut frames = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            match frame.map(Frame::into_data) {
                Ok(Ok(data)) => frames.push((start.elapsed(), data)),
                Ok(Err(_)) => {}
                Err(e) => panic!("{protocol:?}: the stream broke: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("the stream ends within 15 s");
    (status, frames)
}

fn request(protocol: Protocol, method: &str, path: &str) -> hyper::http::request::Builder {
    let uri = match protocol {
        Protocol::Http2 => format!("http://svc{path}"),
        Protocol::Http1 => path.to_owned(),
    };
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header(ROUTE_HEADER, route_for("frontend", Some(protocol)));
    if protocol == Protocol::Http1 {
        builder = builder.header("host", "svc");
    }
    builder
}

fn text(frames: &[(Duration, Bytes)]) -> String {
    frames
        .iter()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect()
}

const GAP: Duration = Duration::from_millis(700);

/// Broken by hand: `Streamer::feed` made to cut records only at the end of
/// the stream: nothing left before the end, and the events arrived in one
/// piece with the split address in clear; this failed.
#[tokio::test]
async fn server_sent_events_reach_the_client_one_by_one_masked() {
    let mesh = mesh().await;
    mesh.upstream().script(
        "sse",
        Script::typed("text/event-stream", "")
            .chunks(vec![
                b"data: {\"n\": 1, \"password\": \"hunter2\"}\n\n".to_vec(),
                // An address split across chunks, then the rest of its event.
                b"data: {\"n\": 2, \"text\": \"mail ann@exa".to_vec(),
                b"mple.com\"}\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec(),
            ])
            .chunk_delay(GAP),
    );
    for protocol in Protocol::ALL {
        let req = request(protocol, "GET", "/v1/chat")
            .header(SCRIPT_HEADER, "sse")
            .body(Empty::new().boxed())
            .unwrap();
        let (status, frames) = timed(&mesh, protocol, req).await;
        assert_eq!(status, 200, "{protocol:?}");
        let all = text(&frames);
        assert_eq!(
            all,
            "data: {\"n\": 1, \"password\": \"[REDACTED]\"}\n\n\
             data: {\"n\": 2, \"text\": \"mail [REDACTED]\"}\n\n\
             data: [DONE]\n\n",
            "{protocol:?}"
        );
        let first = frames
            .iter()
            .find(|(_, b)| String::from_utf8_lossy(b).contains("\"n\": 1"))
            .map(|(t, _)| *t)
            .unwrap();
        let last = frames.last().map(|(t, _)| *t).unwrap();
        let arrivals: Vec<Duration> = frames.iter().map(|(t, _)| *t).collect();
        eprintln!("{protocol:?}: event frames arrived at {arrivals:?} (upstream gap {GAP:?})");
        // The upstream sends the last event 3 gaps after the first.
        assert!(
            last.saturating_sub(first) >= GAP * 2,
            "{protocol:?}: the first event arrived at {first:?}, the last at {last:?}: not streamed"
        );
        assert!(
            frames
                .iter()
                .all(|(_, b)| !String::from_utf8_lossy(b).contains("ann@exa")),
            "{protocol:?}: a piece of the split address crossed: {frames:?}"
        );
    }
}

/// Broken by hand: as above (records cut only at the end of the stream): the
/// upstream had no byte of the first line while the client held back its last
/// chunk, and this failed ("the first line never arrived alone").
#[tokio::test]
async fn a_streamed_request_reaches_the_upstream_line_by_line_masked() {
    let mesh = mesh().await;
    for protocol in Protocol::ALL {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
        });
        let req = request(protocol, "POST", "/v1/bulk")
            .header("content-type", "application/x-ndjson")
            .body(StreamBody::new(stream).boxed())
            .unwrap();
        tx.send(Bytes::from_static(
            b"{\"password\": \"one\"}\n{\"mail\": \"ann@exa",
        ))
        .await
        .unwrap();
        let driver = async {
            // The first line arrives, masked, while the rest is not sent yet.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let body = mesh.upstream().last().map(|r| r.text()).unwrap_or_default();
                assert!(
                    !body.contains("ann@exa"),
                    "{protocol:?}: a piece of the split address crossed: {body}"
                );
                if body.contains("{\"password\": \"[REDACTED]\"}\n") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{protocol:?}: the first line never arrived alone: {body:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tx.send(Bytes::from_static(
                b"mple.com\"}\n{\"password\": \"two\"}\n",
            ))
            .await
            .unwrap();
            drop(tx);
        };
        let (response, ()) = tokio::join!(timed(&mesh, protocol, req), driver);
        assert_eq!(response.0, 200, "{protocol:?}");
        let seen = mesh.upstream().take_one().await.unwrap();
        assert_eq!(
            seen.text(),
            "{\"password\": \"[REDACTED]\"}\n{\"mail\": \"[REDACTED]\"}\n{\"password\": \"[REDACTED]\"}\n",
            "{protocol:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Every shape, both directions, both protocols: what the other side received.

struct Shape {
    name: &'static str,
    content_type: &'static str,
    /// The body, sent in these chunks.
    chunks: Vec<Vec<u8>>,
    /// What must arrive.
    want: Vec<u8>,
}

fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn shapes() -> Vec<Shape> {
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----";
    let form = "--Xb\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nann\r\n\
        --Xb\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2\r\n\
        --Xb\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"password\": 1, \"to\": \"ann@example.com\"}\r\n\
        --Xb\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"ann@example.com\"\r\nContent-Type: application/octet-stream\r\n\r\n";
    let mut form_body = form.as_bytes().to_vec();
    form_body.extend_from_slice(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\xff\xfe");
    form_body.extend_from_slice(b"\r\n--Xb--\r\n");
    let form_want = replace_all(
        &form_body,
        b"\r\n\r\nhunter2\r\n",
        b"\r\n\r\n[REDACTED]\r\n",
    );
    let form_want = replace_all(
        &form_want,
        b"{\"password\": 1, \"to\": \"ann@example.com\"}",
        b"{\"password\": \"[REDACTED]\", \"to\": \"[REDACTED]\"}",
    );
    let form_want = replace_all(
        &form_want,
        b"filename=\"ann@example.com\"",
        b"filename=\"[REDACTED]\"",
    );
    let split = |b: &[u8], at: usize| vec![b[..at].to_vec(), b[at..].to_vec()];
    vec![
        Shape {
            name: "server-sent events",
            content_type: "text/event-stream",
            chunks: vec![
                b"event: a\ndata: {\"password\": \"x\"}\n\ndata: mail ann@ex".to_vec(),
                b"ample.com\n\n".to_vec(),
            ],
            want: b"event: a\ndata: {\"password\": \"[REDACTED]\"}\n\ndata: mail [REDACTED]\n\n".to_vec(),
        },
        Shape {
            name: "JSON Lines",
            content_type: "application/x-ndjson",
            chunks: vec![
                b"{\"password\": \"x\"}\n{\"card\": 4.111111111111111E15, \"pass".to_vec(),
                b"word\": [1]}\n".to_vec(),
            ],
            want: b"{\"password\": \"[REDACTED]\"}\n{\"card\": \"[REDACTED]\", \"password\": \"[REDACTED]\"}\n".to_vec(),
        },
        Shape {
            name: "json-seq",
            content_type: "application/json-seq",
            chunks: vec![b"\x1e{\"password\": \"x\"}\n\x1e{\"a\":".to_vec(), b" \"ann@example.com\"}\n".to_vec()],
            want: b"\x1e{\"password\": \"[REDACTED]\"}\n\x1e{\"a\": \"[REDACTED]\"}\n".to_vec(),
        },
        Shape {
            name: "text lines with a private key block",
            content_type: "text/plain",
            chunks: split(format!("log ann@example.com\n{key}\nend 4111 1111 1111 1111\n").as_bytes(), 40),
            want: b"log [REDACTED]\n[REDACTED]\nend [REDACTED]\n".to_vec(),
        },
        Shape {
            name: "multipart/form-data with a binary part",
            content_type: "multipart/form-data; boundary=Xb",
            chunks: split(&form_body, 100),
            want: form_want,
        },
        Shape {
            name: "multipart/mixed",
            content_type: "multipart/mixed; boundary=\"m m\"",
            chunks: vec![b"--m m\r\n\r\nto ann@example.com\r\n--m m\r\nContent-Type: application/json\r\n\r\n{\"password\": 2}\r\n--m m--".to_vec()],
            want: b"--m m\r\n\r\nto [REDACTED]\r\n--m m\r\nContent-Type: application/json\r\n\r\n{\"password\": \"[REDACTED]\"}\r\n--m m--".to_vec(),
        },
        Shape {
            name: "UTF-16 text without a BOM or charset",
            content_type: "text/plain",
            chunks: split(&utf16le("mail ann@example.com now"), 11),
            want: utf16le("mail [REDACTED] now"),
        },
        Shape {
            name: "latin-1 text",
            content_type: "text/plain; charset=ISO-8859-1",
            chunks: vec![b"caf\xe9 ann@example.com".to_vec()],
            want: b"caf\xe9 [REDACTED]".to_vec(),
        },
        Shape {
            name: "JSON sent as text after a UTF-8 BOM",
            content_type: "text/plain",
            chunks: vec![b"\xef\xbb\xbf{\n  \"password\": \"x\"\n}".to_vec()],
            want: b"\xef\xbb\xbf{\n  \"password\": \"[REDACTED]\"\n}".to_vec(),
        },
    ]
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Broken by hand, twice: records cut only at the end of the stream (with
/// `multipart/*` read as `Other`): the first row failed (the address of the
/// second event arrived in clear); the UTF-16 sniff disabled (`text_is_whole`
/// and `charset::decode`): the UTF-16 row failed, the address arrived in
/// clear between its NULs.
#[tokio::test]
async fn every_shape_is_masked_in_both_directions_over_both_protocols() {
    let mesh = mesh().await;
    for (i, shape) in shapes().into_iter().enumerate() {
        let script = format!("shape{i}");
        mesh.upstream().script(
            &script,
            Script::typed(shape.content_type, "").chunks(shape.chunks.clone()),
        );
        for protocol in Protocol::ALL {
            let what = format!("{} over {protocol:?}", shape.name);
            // Request: what the upstream received.
            let resp = mesh
                .send_as(
                    "frontend",
                    Request::new("POST", "/upload")
                        .header("content-type", shape.content_type)
                        .chunked(shape.chunks.clone())
                        .protocol(protocol),
                )
                .await
                .unwrap();
            assert_eq!(resp.status, 200, "{what}: {}", resp.text());
            let seen = mesh.upstream().take_one().await.unwrap();
            assert_eq!(show(&seen.body), show(&shape.want), "{what}: request");
            // Response: what the client received.
            let resp: Response = mesh
                .send_as(
                    "frontend",
                    Request::new("GET", "/download")
                        .script(&script)
                        .protocol(protocol),
                )
                .await
                .unwrap();
            mesh.upstream().take_one().await.unwrap();
            assert_eq!(resp.status, 200, "{what}");
            assert!(resp.reset.is_none(), "{what}: {:?}", resp.reset);
            assert_eq!(show(&resp.body), show(&shape.want), "{what}: response");
        }
    }
}

// ---------------------------------------------------------------------------
// Cookies and header names.

const HEADER_POLICY: &str = r#"{
  "scan_all_headers": true,
  "rules": [{"name": "pii", "json_keys": ["password"], "detectors": ["card", "us_ssn", "email"]}]
}"#;

/// Broken by hand: the name check of `scan_headers` removed (and name rules
/// no longer selecting headers): the upstream received the header named
/// with an SSN; this failed.
#[tokio::test]
async fn cookie_pairs_and_values_in_header_names_are_masked_both_ways() {
    let mesh = Mesh::builder()
        .filter(Filter::named("masking", HEADER_POLICY))
        .start()
        .await
        .expect("the mesh starts");
    mesh.upstream().script(
        "cookies",
        Script::typed("text/plain", "ok")
            .header("set-cookie", "password=s3cret; Path=/; HttpOnly")
            .header("set-cookie", "theme=dark")
            .header("x-card-4111111111111111", "1"),
    );
    for protocol in Protocol::ALL {
        let resp = mesh
            .send_as(
                "frontend",
                Request::new("GET", "/me")
                    .header("cookie", "sid=1; password=hunter2")
                    .header("x-ssn-078-05-1120", "1")
                    .header("x-contact", "ann@example.com")
                    .script("cookies")
                    .protocol(protocol),
            )
            .await
            .unwrap();
        let seen = mesh.upstream().take_one().await.unwrap();
        assert_eq!(
            seen.header("cookie"),
            Some("sid=1; password=[REDACTED]"),
            "{protocol:?}: {seen:?}"
        );
        assert!(
            seen.header("x-ssn-078-05-1120").is_none(),
            "{protocol:?}: {seen:?}"
        );
        assert_eq!(seen.header("x-contact"), Some("[REDACTED]"), "{protocol:?}");
        let cookies: Vec<String> = resp
            .header_all("set-cookie")
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert_eq!(
            cookies,
            ["password=[REDACTED]; Path=/; HttpOnly", "theme=dark"],
            "{protocol:?}"
        );
        assert!(
            resp.header("x-card-4111111111111111").is_none(),
            "{protocol:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Upgrades: a WebSocket through a sidecar whose route masks bodies.

use meshguard_host_tests::envoy::{stats_config, Envoy};
use meshguard_host_tests::mesh::{loopback, router, static_cluster, wasm_filter, Deployment};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upstream that accepts every upgrade (`101`) and echoes the bytes after it.
async fn echo_upgrades() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
                    .await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One Envoy: an HTTP/1.1 and HTTP/2 listener (`allow_connect` for RFC 8441
/// WebSockets) with the masking section and WebSocket upgrades enabled.
async fn upgrade_rig(policy: &str, upstream: std::net::SocketAddr) -> (Envoy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut filters = Vec::new();
    for f in Deployment::current().apply(&[Filter::named("masking", policy)]) {
        filters.push(wasm_filter(&f).unwrap());
    }
    filters.push(router());
    let bootstrap = json!({
        "stats_config": stats_config(),
        "static_resources": {
            "listeners": [{
                "name": "edge",
                "address": loopback(0),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "edge",
                        "codec_type": "AUTO",
                        "upgrade_configs": [{"upgrade_type": "websocket"}],
                        "http2_protocol_options": {"allow_connect": true},
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}]}]},
                        "http_filters": filters
                    }
                }]}]
            }],
            "clusters": [static_cluster("upstream", upstream, None)]
        }
    });
    let envoy = Envoy::start("upgrades", dir.path(), bootstrap)
        .await
        .unwrap();
    (envoy, dir)
}

/// A WebSocket over HTTP/1.1: the status, then what the echo sent back.
async fn websocket_h1(addr: std::net::SocketAddr) -> (u16, Vec<u8>) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: svc\r\nupgrade: websocket\r\nconnection: upgrade\r\n\
              sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              authorization: Bearer abcdefghijklmnop1234\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if socket.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 101 {
        return (status, Vec::new());
    }
    socket
        .write_all(b"\x81\x14mail ann@example.com")
        .await
        .unwrap();
    let mut echoed = vec![0u8; 22];
    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut echoed))
        .await
        .expect("the upgraded stream never stalls")
        .unwrap();
    (status, echoed)
}

/// A WebSocket over HTTP/2 (RFC 8441 extended CONNECT): status and echo.
async fn websocket_h2(addr: std::net::SocketAddr) -> (u16, Vec<u8>) {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method("CONNECT")
        .uri("http://svc/ws")
        .header("sec-websocket-version", "13")
        .header("authorization", "Bearer abcdefghijklmnop1234")
        .body(Empty::<Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, Vec::new());
    }
    let upgraded = hyper::upgrade::on(resp).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"\x81\x14mail ann@example.com").await.unwrap();
    let mut echoed = vec![0u8; 22];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut echoed))
        .await
        .expect("the upgraded stream never stalls")
        .unwrap();
    (status, echoed)
}

/// Broken by hand: the section asked `tunnel` about no headers (so the
/// upgrade's bytes were held as a body): the WebSocket got its 101 and then
/// stalled, its frame never echoed; this failed.
#[tokio::test]
async fn upgrades_on_a_masked_route_are_refused_or_pass_with_header_masking_only() {
    let upstream = echo_upgrades().await;
    let policy = |extra: &str| {
        format!(
            r#"{{{extra} "rules": [{{"name": "pii", "json_keys": ["password"], "detectors": ["email"]}},
                                 {{"name": "auth", "headers": ["authorization"]}}]}}"#
        )
    };
    let (refusing, _dir) = upgrade_rig(&policy(""), upstream).await;
    let addr = refusing.listener("edge").await.unwrap();
    assert_eq!(
        websocket_h1(addr).await.0,
        501,
        "HTTP/1.1: refused by default"
    );
    assert_eq!(
        websocket_h2(addr).await.0,
        501,
        "HTTP/2: refused by default"
    );

    let (passing, _dir2) =
        upgrade_rig(&policy(r#""on_upgrade": "pass_unmasked","#), upstream).await;
    let addr = passing.listener("edge").await.unwrap();
    for (proto, (status, echoed)) in [
        ("HTTP/1.1", websocket_h1(addr).await),
        ("HTTP/2", websocket_h2(addr).await),
    ] {
        assert!(status == 101 || status == 200, "{proto}: {status}");
        // The frames pass as they are (they are not HTTP bodies), both ways.
        assert_eq!(echoed, b"\x81\x14mail ann@example.com", "{proto}");
    }
    let text = passing.prometheus().await.unwrap();
    let skipped: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("meshguard_masking_bodies_skipped_total{")
                && l.contains("reason=\"upgrade\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum();
    assert_eq!(skipped, 2, "each upgrade counted");
}

/// The last record of a stream, when the trailers come before its line end:
/// a chunk that completes no record is handed back to the host, which holds
/// it, so the trailers mask it in the body; when the chunk that released
/// earlier records also carried the start of the last one, that start is in
/// the filter, which Envoy gives no body to add it to at the trailers: the
/// stream is reset (the Wasm build; the native module adds it to the body
/// there and masks it). Never in clear. Both directions, both protocols.
/// Broken by hand: JSON Lines records left unmasked (`mask_json_record`
/// returning "unchanged"): `{"password": 1}` reached the upstream and this
/// failed.
#[tokio::test]
async fn the_last_record_before_trailers_is_masked_or_the_stream_reset() {
    let mesh = mesh().await;
    let masked = "{\"password\": \"[REDACTED]\"}\n{\"password\": \"[REDACTED]\"}";
    // (chunks, whether the last record is held by the host at the trailers)
    let cases: [(Vec<Vec<u8>>, bool); 2] = [
        (
            vec![
                b"{\"password\": 1}\n{\"pass".to_vec(),
                b"word\": 2}".to_vec(),
            ],
            true,
        ),
        (
            vec![b"{\"password\": 1}\n{\"password\": 2}".to_vec()],
            false,
        ),
    ];
    for (i, (chunks, held_by_host)) in cases.into_iter().enumerate() {
        // The native module may add to the body at the trailers (Envoy's
        // dynamic-module host appends to the buffered body there, which a
        // Wasm filter cannot): the record it kept is masked, never reset.
        let held_by_host = held_by_host || Build::current() == Build::Native;
        let script = format!("tail{i}");
        mesh.upstream().script(
            &script,
            Script::typed("application/x-ndjson", "")
                .chunks(chunks.clone())
                .trailer("x-done", "1"),
        );
        for protocol in Protocol::ALL {
            let what = format!("case {i} over {protocol:?}");
            let resp = mesh
                .send_as(
                    "frontend",
                    Request::new("POST", "/tail")
                        .header("content-type", "application/x-ndjson")
                        .chunked(chunks.clone())
                        .trailer("x-sum", "1")
                        .protocol(protocol),
                )
                .await
                .unwrap();
            let seen = mesh.upstream().take_one().await.unwrap();
            assert!(!seen.text().contains(": 2"), "{what}: {seen:?}");
            if held_by_host {
                assert_eq!(seen.text(), masked, "{what}: request");
                assert_eq!(seen.trailer("x-sum"), Some("1"), "{what}");
                assert_eq!(resp.status, 200, "{what}");
            } else {
                assert_eq!(seen.text(), "{\"password\": \"[REDACTED]\"}\n", "{what}");
                assert_ne!(resp.status, 200, "{what}: the request was reset");
            }
            let resp = mesh
                .send_as(
                    "frontend",
                    Request::new("GET", "/tail")
                        .header("te", "trailers")
                        .script(&script)
                        .protocol(protocol),
                )
                .await
                .unwrap();
            mesh.upstream().take_one().await.unwrap();
            assert!(!resp.text().contains(": 2"), "{what}: {}", resp.text());
            if held_by_host {
                assert_eq!(resp.text(), masked, "{what}: response {resp:?}");
                assert!(resp.reset.is_none(), "{what}: {resp:?}");
            } else {
                assert!(resp.reset.is_some(), "{what}: {resp:?}");
            }
        }
    }
}
