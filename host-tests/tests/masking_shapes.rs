//! The masking filter on every HTTP shape, in a real Envoy: bodies followed by
//! trailers (chunked HTTP/1.1 and HTTP/2), gRPC, bodies that are not UTF-8,
//! JSON inside JSON strings, query strings, every header, Unicode variants.
//!
//! One Envoy, three listeners:
//!
//! ```text
//! client ─HTTP/1.1─▶ "masking"  (meshguard masking) ─HTTP/1.1─▶ upstream
//! client ─HTTP/1.1─▶ "front" ─HTTP/2─▶ "masking-h2" (meshguard masking) ─HTTP/2─▶ "back" ─HTTP/1.1─▶ upstream
//! ```
//!
//! so the filter sees each exchange once over HTTP/1.1 and once over HTTP/2
//! (trailers become HTTP/2 trailing HEADERS frames). The upstream is a raw
//! HTTP/1.1 server written here: it records exactly what reached it (head,
//! body, trailers) and answers with scripted responses, trailers included.
//! Every HTTP/1 hop enables trailers (`enable_trailers`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshguard_host_tests::envoy::{stats_config, Envoy};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const POLICY: &str = r#"{
  "config_version": "shapes-v1",
  "max_body_bytes": 65536,
  "on_unsupported_content_type": "pass",
  "scan_all_headers": true,
  "rules": [
    {"name": "pii", "json_keys": ["password"], "json_paths": ["/payload/user/ssn"],
     "detectors": ["card", "email", "us_ssn", "iban"]},
    {"name": "auth", "headers": ["authorization", "x-secret"]}
  ]
}"#;

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 message, as read from the wire.

#[derive(Debug, Clone, Default)]
struct Message {
    /// Request line or status line.
    start: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    /// The message ended as its framing says (false: the peer closed early).
    complete: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

async fn read_line(r: &mut BufReader<impl AsyncReadExt + Unpin>) -> Option<String> {
    let mut line = String::new();
    match r.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
    }
}

async fn read_fields(
    r: &mut BufReader<impl AsyncReadExt + Unpin>,
) -> Option<Vec<(String, String)>> {
    let mut fields = Vec::new();
    loop {
        let line = read_line(r).await?;
        if line.is_empty() {
            return Some(fields);
        }
        let (name, value) = line.split_once(':')?;
        fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// Reads one message; `None` when the connection closed before a start line.
/// `head_only`: a response to HEAD or a 204/304 has no body.
async fn read_message(
    r: &mut BufReader<impl AsyncReadExt + Unpin>,
    is_response: bool,
) -> Option<Message> {
    let start = read_line(r).await?;
    let mut msg = Message {
        start,
        ..Message::default()
    };
    let Some(headers) = read_fields(r).await else {
        return Some(msg);
    };
    msg.headers = headers;
    let chunked = msg
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    let length = msg
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok());
    if chunked {
        loop {
            let Some(size_line) = read_line(r).await else {
                return Some(msg);
            };
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or(0);
            if size == 0 {
                let Some(trailers) = read_fields(r).await else {
                    return Some(msg);
                };
                msg.trailers = trailers;
                msg.complete = true;
                return Some(msg);
            }
            let mut chunk = vec![0; size + 2];
            if r.read_exact(&mut chunk).await.is_err() {
                return Some(msg);
            }
            chunk.truncate(size);
            msg.body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = length {
        let mut body = vec![0; len];
        msg.complete = r.read_exact(&mut body).await.is_ok();
        msg.body = body;
    } else if is_response {
        let _ = r.read_to_end(&mut msg.body).await;
        msg.complete = true;
    } else {
        msg.complete = true;
    }
    Some(msg)
}

/// An HTTP/1.1 message on the wire: chunked when it has `chunks`, with
/// `trailers` after the last chunk.
fn encode(
    start: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
    trailers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!("{start}\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (n, v) in trailers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

// ---------------------------------------------------------------------------
// The upstream: records requests, answers with scripted responses.

/// A scripted response, chosen by the request path's last segment.
#[derive(Debug, Clone)]
struct Script {
    headers: Vec<(&'static str, &'static str)>,
    chunks: Vec<Vec<u8>>,
    trailers: Vec<(&'static str, &'static str)>,
}

#[derive(Default)]
struct UpstreamState {
    seen: Vec<Message>,
    scripts: HashMap<String, Script>,
}

struct Upstream {
    addr: SocketAddr,
    state: Arc<Mutex<UpstreamState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(UpstreamState::default()));
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move { serve(stream, state).await });
            }
        });
        Self { addr, state, task }
    }

    fn script(&self, name: &str, script: Script) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(name.into(), script);
    }

    /// The last request that reached the upstream.
    fn last(&self) -> Option<Message> {
        self.state.lock().unwrap().seen.last().cloned()
    }

    fn count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
}

async fn serve(stream: TcpStream, state: Arc<Mutex<UpstreamState>>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    while let Some(request) = read_message(&mut reader, false).await {
        let path = request.start.split(' ').nth(1).unwrap_or("/").to_owned();
        let name = path
            .split('?')
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let script = {
            let mut state = state.lock().unwrap();
            state.seen.push(request);
            state.scripts.get(&name).cloned()
        };
        let bytes = match script {
            Some(s) => {
                let chunks: Vec<&[u8]> = s.chunks.iter().map(Vec::as_slice).collect();
                encode("HTTP/1.1 200 OK", &s.headers, &chunks, &s.trailers)
            }
            None => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
                .to_vec(),
        };
        if write.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Envoy.

fn wasm_filter(policy: &str) -> Value {
    json!({
        "name": "meshguard.masking",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "masking",
                "root_id": "meshguard-masking",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": policy},
                "vm_config": {
                    "vm_id": "masking",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": meshguard_host_tests::wasm_module("meshguard").unwrap()}}
                }
            }
        }
    })
}

fn router() -> Value {
    json!({"name": "envoy.filters.http.router",
           "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

fn listener(name: &str, cluster: &str, filters: Vec<Value>) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                "http_protocol_options": {"enable_trailers": true},
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "10s"}}]}]},
                "http_filters": filters
            }
        }]}]
    })
}

fn cluster(name: &str, port: u16, http2: bool) -> Value {
    let protocol = if http2 {
        json!({"http2_protocol_options": {}})
    } else {
        json!({"http_protocol_options": {"enable_trailers": true}})
    };
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": protocol
        }}
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Rig {
    envoy: Envoy,
    upstream: Upstream,
    /// HTTP/1.1 into the masking listener.
    h1: SocketAddr,
    /// HTTP/1.1 into the front listener, which speaks HTTP/2 to the masking one.
    h2: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    rig_with(POLICY).await
}

async fn rig_with(policy: &str) -> Rig {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Fixed ports for the internal hops (clusters need them up front).
    let (masking_h2, back) = (free_port(), free_port());
    let mut inner = listener("masking-h2", "back", vec![wasm_filter(policy), router()]);
    inner["address"]["socket_address"]["port_value"] = json!(masking_h2);
    let mut back_listener = listener("back", "upstream", vec![router()]);
    back_listener["address"]["socket_address"]["port_value"] = json!(back);
    let bootstrap = json!({
        "stats_config": stats_config(),
        "static_resources": {
            "listeners": [
                listener("masking", "upstream", vec![wasm_filter(policy), router()]),
                listener("front", "masking-h2", vec![router()]),
                inner,
                back_listener,
            ],
            "clusters": [
                cluster("upstream", upstream.addr.port(), false),
                cluster("masking-h2", masking_h2, true),
                cluster("back", back, true),
            ]
        }
    });
    let envoy = Envoy::start("shapes", dir.path(), bootstrap).await.unwrap();
    let h1 = envoy.listener("masking").await.unwrap();
    let h2 = envoy.listener("front").await.unwrap();
    Rig {
        envoy,
        upstream,
        h1,
        h2,
        _dir: dir,
    }
}

/// Sends raw request bytes on a fresh connection and reads the response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Message {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(request).await.unwrap();
    let mut reader = BufReader::new(read);
    tokio::time::timeout(Duration::from_secs(10), read_message(&mut reader, true))
        .await
        .expect("a response within 10 s")
        .unwrap_or_default()
}

/// A chunked request with trailers.
fn request(
    path: &str,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
    trailers: &[(&str, &str)],
) -> Vec<u8> {
    let mut all = vec![("host", "svc"), ("connection", "close")];
    all.extend_from_slice(headers);
    encode(&format!("POST {path} HTTP/1.1"), &all, chunks, trailers)
}

fn get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("GET {path} HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The value of a counter with these labels (0 when not exported yet).
async fn counter(envoy: &Envoy, name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = envoy.prometheus().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

const JSON: (&str, &str) = ("content-type", "application/json");
const TEXT: (&str, &str) = ("content-type", "text/plain");

/// Both protocols, with a label for assertion messages.
fn protocols(rig: &Rig) -> [(&'static str, SocketAddr); 2] {
    [("HTTP/1.1", rig.h1), ("HTTP/2", rig.h2)]
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn request_bodies_followed_by_trailers_are_masked_before_the_upstream_sees_them() {
    let rig = rig().await;
    for (proto, addr) in protocols(&rig) {
        // JSON, split across chunks, then trailers carrying a header-rule secret.
        let resp = exchange(
            addr,
            &request(
                "/api/json",
                &[JSON],
                &[
                    br#"{"user": "ann", "pass"#,
                    br#"word": "hunter2", "mail": "ann@example.com"}"#,
                ],
                &[("x-secret", "s3cr3t"), ("x-checksum", "abc")],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}: {}", resp.text());
        let seen = rig.upstream.last().unwrap();
        assert_eq!(
            seen.json(),
            json!({"user": "ann", "password": "[REDACTED]", "mail": "[REDACTED]"}),
            "{proto}"
        );
        assert_eq!(
            seen.trailer("x-secret"),
            Some("[REDACTED]"),
            "{proto}: {seen:?}"
        );
        assert_eq!(seen.trailer("x-checksum"), Some("abc"), "{proto}");

        // Text.
        let resp = exchange(
            addr,
            &request(
                "/api/text",
                &[TEXT],
                &[b"card 4111 1111 ", b"1111 1111 ok"],
                &[("x-t", "1")],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(
            rig.upstream.last().unwrap().text(),
            "card [REDACTED] ok",
            "{proto}"
        );
    }
    // The second round really crossed the filter as HTTP/2 streams.
    assert!(
        rig.envoy
            .stat("http.masking-h2.downstream_rq_http2_total")
            .await
            .unwrap()
            >= 2
    );
    assert!(
        rig.envoy
            .stat("http.masking.downstream_rq_http1_total")
            .await
            .unwrap()
            >= 2
    );
}

#[tokio::test]
async fn response_bodies_followed_by_trailers_are_masked_before_the_client_sees_them() {
    let rig = rig().await;
    rig.upstream.script(
        "json-trailers",
        Script {
            headers: vec![JSON],
            chunks: vec![
                br#"{"id": 1, "password": "#.to_vec(),
                br#""hunter2", "card": "4111111111111111"}"#.to_vec(),
            ],
            trailers: vec![("x-secret", "s3cr3t"), ("x-done", "yes")],
        },
    );
    rig.upstream.script(
        "text-trailers",
        Script {
            headers: vec![TEXT],
            chunks: vec![b"contact ann@".to_vec(), b"example.com today".to_vec()],
            trailers: vec![("x-done", "ann@example.com")],
        },
    );
    rig.upstream.script(
        "bad-json-trailers",
        Script {
            headers: vec![JSON],
            chunks: vec![br#"{"password": "hunter2""#.to_vec()],
            trailers: vec![("x-done", "yes")],
        },
    );
    for (proto, addr) in protocols(&rig) {
        let resp = exchange(addr, &get("/r/json-trailers", &[])).await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert!(resp.complete, "{proto}: {resp:?}");
        assert_eq!(
            resp.json(),
            json!({"id": 1, "password": "[REDACTED]", "card": "[REDACTED]"}),
            "{proto}"
        );
        assert_eq!(
            resp.trailer("x-secret"),
            Some("[REDACTED]"),
            "{proto}: {resp:?}"
        );
        assert_eq!(resp.trailer("x-done"), Some("yes"), "{proto}");

        let resp = exchange(addr, &get("/r/text-trailers", &[])).await;
        assert_eq!(resp.text(), "contact [REDACTED] today", "{proto}");
        // scan_all_headers: trailer values get the detectors too.
        assert_eq!(resp.trailer("x-done"), Some("[REDACTED]"), "{proto}");

        // Malformed JSON ended by trailers: the stream is reset, nothing leaks.
        let before = counter(
            &rig.envoy,
            "meshguard_masking_bodies_refused_total",
            &[("direction", "response"), ("reason", "malformed_json")],
        )
        .await;
        let resp = exchange(addr, &get("/r/bad-json-trailers", &[])).await;
        assert!(!resp.complete, "{proto}: {resp:?}");
        assert!(!resp.text().contains("hunter2"), "{proto}: {resp:?}");
        let after = counter(
            &rig.envoy,
            "meshguard_masking_bodies_refused_total",
            &[("direction", "response"), ("reason", "malformed_json")],
        )
        .await;
        assert!(after > before, "{proto}: refusal counted");
    }
}

#[tokio::test]
async fn grpc_bodies_are_refused_by_default_before_a_byte_leaves() {
    let rig = rig().await;
    let frame = b"\0\0\0\0\x10ann@example.com.".to_vec();
    rig.upstream.script(
        "grpc",
        Script {
            headers: vec![("content-type", "application/grpc")],
            chunks: vec![frame.clone()],
            trailers: vec![("grpc-status", "0")],
        },
    );
    for (proto, addr) in protocols(&rig) {
        // A gRPC request whose body a rule would mask: refused with 415, not forwarded.
        let before = rig.upstream.count();
        let resp = exchange(
            addr,
            &request(
                "/svc.Users/Get",
                &[("content-type", "application/grpc"), ("te", "trailers")],
                &[&frame],
                &[],
            ),
        )
        .await;
        // Envoy turns the local reply to a gRPC request into a gRPC error
        // (HTTP 200, `grpc-status: 2`, the reply in `grpc-message`).
        assert_eq!(
            resp.header("x-meshguard-deny-reason"),
            Some("grpc"),
            "{proto}: {resp:?}"
        );
        assert_eq!(resp.header("grpc-status"), Some("2"), "{proto}: {resp:?}");
        assert_eq!(
            rig.upstream.count(),
            before,
            "{proto}: nothing reached the upstream"
        );

        // A gRPC response: replaced by a 502 before any byte of it leaves.
        let resp = exchange(addr, &get("/svc/grpc", &[])).await;
        assert_eq!(resp.status(), 502, "{proto}: {resp:?}");
        assert!(!resp.text().contains("ann@"), "{proto}");
    }
    assert!(
        counter(
            &rig.envoy,
            "meshguard_masking_bodies_refused_total",
            &[("reason", "grpc")]
        )
        .await
            >= 4
    );
}

#[tokio::test]
async fn text_that_is_not_utf8_is_refused_and_counted() {
    let rig = rig().await;
    for (proto, addr) in protocols(&rig) {
        let before = rig.upstream.count();
        let resp = exchange(
            addr,
            &request(
                "/api/bytes",
                &[TEXT],
                &[b"mail ann@example.com \xff\xfe"],
                &[],
            ),
        )
        .await;
        assert_eq!(resp.status(), 400, "{proto}: {resp:?}");
        assert_eq!(
            resp.header("x-meshguard-deny-reason"),
            Some("not_utf8"),
            "{proto}"
        );
        assert_eq!(rig.upstream.count(), before, "{proto}");
        // A form value, and a query parameter, that are not UTF-8.
        let resp = exchange(
            addr,
            &request(
                "/api/form",
                &[("content-type", "application/x-www-form-urlencoded")],
                &[b"note=%FFann%40example.com"],
                &[],
            ),
        )
        .await;
        assert_eq!(resp.status(), 400, "{proto}: {resp:?}");
        let resp = exchange(addr, &get("/api/q?note=%FF", &[])).await;
        assert_eq!(resp.status(), 400, "{proto}: {resp:?}");
    }
    assert!(
        counter(
            &rig.envoy,
            "meshguard_masking_bodies_refused_total",
            &[("direction", "request"), ("reason", "not_utf8")]
        )
        .await
            >= 6
    );
}

#[tokio::test]
async fn json_in_json_queries_headers_and_unicode_variants_are_masked_without_false_refusals() {
    let rig = rig().await;
    for (proto, addr) in protocols(&rig) {
        // JSON inside a JSON string: keys and paths inside are masked, the
        // string stays valid JSON.
        let body = json!({"payload": json!({"user": {"ssn": "078-05-1120", "name": "ann"},
                                             "password": "x"}).to_string(), "ok": true,
                          "card_as_number": 4111111111111111u64});
        let resp = exchange(
            addr,
            &request("/api/nested", &[JSON], &[body.to_string().as_bytes()], &[]),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        let seen = rig.upstream.last().unwrap().json();
        assert_eq!(seen["card_as_number"], "[REDACTED]", "{proto}");
        let inner: Value = serde_json::from_str(seen["payload"].as_str().unwrap()).unwrap();
        assert_eq!(
            inner,
            json!({"user": {"ssn": "[REDACTED]", "name": "ann"}, "password": "[REDACTED]"}),
            "{proto}"
        );

        // The query string: names like JSON keys (brackets included), values
        // scanned; the path before `?` is untouched.
        let resp = exchange(
            addr,
            &get(
                "/api/users/ann?user[password]=x&to=ann%40example.com&page=2",
                &[],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        let seen = rig.upstream.last().unwrap();
        assert_eq!(
            seen.start,
            "GET /api/users/ann?user[password]=%5BREDACTED%5D&to=%5BREDACTED%5D&page=2 HTTP/1.1",
            "{proto}"
        );

        // Dotted names and JSON held in a query parameter.
        let resp = exchange(
            addr,
            &get(
                "/api/q?user.password=x&filter=%7B%22password%22%3A%22x%22%7D",
                &[],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(
            rig.upstream.last().unwrap().start,
            "GET /api/q?user.password=%5BREDACTED%5D&filter=%7B%22password%22%3A%22%5BREDACTED%5D%22%7D HTTP/1.1",
            "{proto}"
        );

        // No content type, or a wrong one: text is sniffed and masked;
        // binary passes, counted.
        let resp = exchange(
            addr,
            &request("/api/untyped", &[], &[br#"{"password": "x"}"#], &[]),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(
            rig.upstream.last().unwrap().text(),
            r#"{"password": "[REDACTED]"}"#,
            "{proto}"
        );
        let skipped = counter(
            &rig.envoy,
            "meshguard_masking_bodies_skipped_total",
            &[
                ("direction", "request"),
                ("reason", "unsupported_content_type"),
            ],
        )
        .await;
        let png: &[u8] = b"\x89PNG\r\n\x1a\n\xff\xfe\x00";
        let resp = exchange(
            addr,
            &request("/api/image", &[("content-type", "image/png")], &[png], &[]),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(rig.upstream.last().unwrap().body, png, "{proto}");
        assert_eq!(
            counter(
                &rig.envoy,
                "meshguard_masking_bodies_skipped_total",
                &[
                    ("direction", "request"),
                    ("reason", "unsupported_content_type")
                ],
            )
            .await,
            skipped + 1,
            "{proto}"
        );

        // JSON sent as text/plain still gets its keys masked.
        let resp = exchange(
            addr,
            &request(
                "/api/as-text",
                &[TEXT],
                &[br#"{"password": "x", "n": 1}"#],
                &[],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(
            rig.upstream.last().unwrap().text(),
            r#"{"password": "[REDACTED]", "n": 1}"#,
            "{proto}"
        );

        // Every header value (scan_all_headers), and the named ones.
        let resp = exchange(
            addr,
            &get(
                "/api/h",
                &[
                    ("x-contact", "ann@example.com"),
                    ("authorization", "Basic abc"),
                    ("x-plain", "hello"),
                ],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        let seen = rig.upstream.last().unwrap();
        assert_eq!(seen.header("x-contact"), Some("[REDACTED]"), "{proto}");
        assert_eq!(seen.header("authorization"), Some("[REDACTED]"), "{proto}");
        assert_eq!(seen.header("x-plain"), Some("hello"), "{proto}");

        // Full-width digits, NBSP, tab and Unicode dashes.
        let text = "a ４１１１ １１１１ １１１１ １１１１ b 4111\u{a0}1111\u{a0}1111\u{a0}1111 c 4111\t1111\t1111\t1111 d 078\u{2010}05\u{2010}1120 e";
        let resp = exchange(
            addr,
            &request(
                "/api/unicode",
                &[("content-type", "text/plain; charset=utf-8")],
                &[text.as_bytes()],
                &[],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(
            rig.upstream.last().unwrap().text(),
            "a [REDACTED] b [REDACTED] c [REDACTED] d [REDACTED] e",
            "{proto}"
        );

        // Legitimate traffic is not refused: plain JSON with trailers, an
        // empty body, a body-less GET, a JSON string that merely looks like JSON.
        for (path, headers, chunks, trailers) in [
            (
                "/api/ok",
                vec![JSON],
                vec![&br#"{"a": "{not json"}"#[..]],
                vec![("x-t", "1")],
            ),
            ("/api/empty", vec![JSON], vec![], vec![]),
            (
                "/api/form",
                vec![("content-type", "application/x-www-form-urlencoded")],
                vec![&b"a=1&b=%C3%A9"[..]],
                vec![],
            ),
        ] {
            let resp = exchange(addr, &request(path, &headers, &chunks, &trailers)).await;
            assert_eq!(resp.status(), 200, "{proto} {path}: {resp:?}");
        }
        let resp = exchange(addr, &get("/api/plain?q=hello", &[])).await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(
            rig.upstream.last().unwrap().start,
            "GET /api/plain?q=hello HTTP/1.1",
            "{proto}"
        );
    }
}

#[tokio::test]
async fn settings_that_forward_or_degrade_are_counted() {
    let rig = rig_with(
        r#"{"max_body_bytes": 65536, "on_grpc": "pass_unmasked", "on_not_utf8": "mask_bytes",
            "on_malformed_json": "mask_as_text",
            "rules": [{"name": "pii", "json_keys": ["password"], "detectors": ["email"]}]}"#,
    )
    .await;
    let count = |name: &'static str, reason: &'static str| {
        let envoy = &rig.envoy;
        async move { counter(envoy, name, &[("direction", "request"), ("reason", reason)]).await }
    };
    for (proto, addr) in protocols(&rig) {
        // gRPC under pass_unmasked: forwarded as is, counted as skipped.
        let skipped = count("meshguard_masking_bodies_skipped_total", "grpc").await;
        let frame = b"\0\0\0\0\x10ann@example.com.";
        let resp = exchange(
            addr,
            &request(
                "/svc.Users/Get",
                &[("content-type", "application/grpc"), ("te", "trailers")],
                &[frame],
                &[],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}: {resp:?}");
        assert_eq!(rig.upstream.last().unwrap().body, frame, "{proto}");
        assert_eq!(
            count("meshguard_masking_bodies_skipped_total", "grpc").await,
            skipped + 1,
            "{proto}"
        );

        // Bytes that are not UTF-8: scanned run by run, counted.
        let scanned = count("meshguard_masking_text_fallbacks_total", "not_utf8").await;
        let resp = exchange(
            addr,
            &request(
                "/api/bytes",
                &[TEXT],
                &[b"mail ann@example.com \xff\xfe"],
                &[("x-t", "1")],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(
            rig.upstream.last().unwrap().body,
            b"mail [REDACTED] \xff\xfe",
            "{proto}"
        );
        assert_eq!(
            count("meshguard_masking_text_fallbacks_total", "not_utf8").await,
            scanned + 1,
            "{proto}"
        );

        // Malformed JSON masked as text, counted.
        let fallbacks = count("meshguard_masking_text_fallbacks_total", "malformed_json").await;
        let resp = exchange(
            addr,
            &request(
                "/api/bad",
                &[JSON],
                &[br#"{"note": "ann@example.com""#],
                &[("x-t", "1")],
            ),
        )
        .await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert_eq!(
            rig.upstream.last().unwrap().text(),
            r#"{"note": "[REDACTED]""#,
            "{proto}"
        );
        assert_eq!(
            count("meshguard_masking_text_fallbacks_total", "malformed_json").await,
            fallbacks + 1,
            "{proto}"
        );
    }
}

#[tokio::test]
async fn dry_run_forwards_everything_unchanged_and_counts_what_it_would_refuse() {
    let rig = rig_with(
        r#"{"mode": "dry-run", "rules": [{"name": "pii", "json_keys": ["password"], "detectors": ["email"]}]}"#,
    )
    .await;
    rig.upstream.script(
        "bad",
        Script {
            headers: vec![JSON],
            chunks: vec![br#"{"password": "hunter2""#.to_vec()],
            trailers: vec![("x-done", "1")],
        },
    );
    for (proto, addr) in protocols(&rig) {
        let before = counter(
            &rig.envoy,
            "meshguard_masking_bodies_skipped_total",
            &[("direction", "response"), ("reason", "malformed_json")],
        )
        .await;
        let resp = exchange(addr, &get("/r/bad?password=x", &[])).await;
        assert_eq!(resp.status(), 200, "{proto}");
        assert!(resp.complete, "{proto}");
        assert_eq!(resp.text(), r#"{"password": "hunter2""#, "{proto}");
        assert_eq!(
            rig.upstream.last().unwrap().start,
            "GET /r/bad?password=x HTTP/1.1",
            "{proto}"
        );
        let after = counter(
            &rig.envoy,
            "meshguard_masking_bodies_skipped_total",
            &[("direction", "response"), ("reason", "malformed_json")],
        )
        .await;
        assert_eq!(after, before + 1, "{proto}");
    }
    assert!(
        counter(
            &rig.envoy,
            "meshguard_masking_dry_run_fields_total",
            &[("direction", "request")]
        )
        .await
            >= 2,
        "the query hits are reported"
    );
}

// ---------------------------------------------------------------------------
// The same promises in the Istio-shaped mesh (client sidecar, mTLS, server
// sidecar with the filter), on every protocol combination of the harness.

mod mesh {
    use meshguard_host_tests::http::{Protocol, Request};
    use meshguard_host_tests::mesh::{Filter, Mesh};
    use meshguard_host_tests::upstream::{BodyState, Script};
    use serde_json::json;

    async fn mesh() -> Mesh {
        Mesh::builder()
            .filter(Filter::named("masking", super::POLICY))
            .start()
            .await
            .expect("mesh starts")
    }

    #[tokio::test]
    async fn trailers_never_carry_an_unmasked_body_on_any_protocol_combination() {
        let mesh = mesh().await;
        mesh.upstream().script(
            "json-trailers",
            Script::typed("application/json", "")
                .chunks(vec![
                    br#"{"password": "hunter2", "#.to_vec(),
                    br#""mail": "ann@example.com"}"#.to_vec(),
                ])
                .trailer("x-secret", "s3cr3t"),
        );
        mesh.upstream().script(
            "bad-json-trailers",
            Script::typed("application/json", "")
                .chunks(vec![br#"{"password": "hunter2""#.to_vec()])
                .trailer("x-done", "1"),
        );
        for client in Protocol::ALL {
            for leg in Protocol::ALL {
                for upstream in Protocol::ALL {
                    let what = format!(
                        "client {} leg {} upstream {}",
                        client.short(),
                        leg.short(),
                        upstream.short()
                    );
                    let base = |method: &str, path: &str| {
                        Request::new(method, path)
                            .protocol(client)
                            .leg(leg)
                            .upstream_protocol(upstream)
                            .header("te", "trailers")
                    };
                    // A request body ended by trailers.
                    let resp = mesh
                        .send_as(
                            "frontend",
                            base("POST", "/api/in?user[password]=x")
                                .header("content-type", "application/json")
                                .chunked(vec![
                                    br#"{"password": "#.to_vec(),
                                    br#""hunter2", "n": 4111111111111111}"#.to_vec(),
                                ])
                                .trailer("x-secret", "s3cr3t"),
                        )
                        .await
                        .unwrap();
                    assert_eq!(resp.status, 200, "{what}: {resp:?}");
                    let got = mesh.upstream().take_one().await.unwrap();
                    assert_eq!(got.state, BodyState::Complete, "{what}");
                    assert_eq!(
                        got.json(),
                        json!({"password": "[REDACTED]", "n": "[REDACTED]"}),
                        "{what}"
                    );
                    assert_eq!(got.trailer("x-secret"), Some("[REDACTED]"), "{what}");
                    assert_eq!(
                        got.target, "/api/in?user[password]=%5BREDACTED%5D",
                        "{what}"
                    );

                    // A response body ended by trailers.
                    let resp = mesh
                        .send_as("frontend", base("GET", "/api/out").script("json-trailers"))
                        .await
                        .unwrap();
                    mesh.upstream().take();
                    assert_eq!(resp.status, 200, "{what}: {resp:?}");
                    assert!(!resp.is_reset(), "{what}");
                    assert_eq!(
                        resp.json().unwrap(),
                        json!({"password": "[REDACTED]", "mail": "[REDACTED]"}),
                        "{what}"
                    );
                    assert_eq!(resp.trailer("x-secret"), Some("[REDACTED]"), "{what}");

                    // Malformed JSON ended by trailers: reset, nothing leaks.
                    let resp = mesh
                        .send_as(
                            "frontend",
                            base("GET", "/api/bad").script("bad-json-trailers"),
                        )
                        .await
                        .unwrap();
                    mesh.upstream().take();
                    assert!(resp.is_reset() || resp.status >= 500, "{what}: {resp:?}");
                    assert!(!resp.text().contains("hunter2"), "{what}: {resp:?}");
                }
            }
        }
    }
}
