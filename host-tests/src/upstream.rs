//! The recording upstream: the service behind the server sidecar.
//!
//! It keeps, per request, exactly what reached it (method, raw request target,
//! every header value in order with repeats, body bytes, trailers, protocol)
//! and answers with a [`Script`] that does not depend on the request, so a
//! test can check the upstream side and the client side separately. It speaks
//! HTTP/1.1 and h2c (prior knowledge) on the same port.
//!
//! Which script answers: the one registered under the name in the
//! [`SCRIPT_HEADER`] request header, else the default script, else the legacy
//! echo (a JSON description of the request, see [`echo_json`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::http::Protocol;

/// Names the registered [`Script`] that answers a request.
pub const SCRIPT_HEADER: &str = "x-meshguard-test-script";

/// How far a request's body got when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyState {
    /// Headers arrived; the body is still streaming.
    Streaming,
    /// The body (and trailers, if any) arrived to its end.
    Complete,
    /// The stream was reset or the connection closed before the end.
    Aborted(String),
}

/// One request as it reached the upstream.
#[derive(Clone)]
pub struct Recorded {
    /// Arrival number (from 0), stable while earlier records are taken.
    pub arrival: u64,
    pub protocol: Protocol,
    pub method: String,
    /// The request target exactly as received (`:path` on HTTP/2).
    pub target: String,
    /// `:authority` on HTTP/2, the `Host` header on HTTP/1.1.
    pub authority: String,
    /// Every header in arrival order per name, repeats kept, values as bytes.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
    pub state: BodyState,
}

fn first<'a>(pairs: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn all<'a>(pairs: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    pairs
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// Byte strings shown as escaped text, so failures read well.
fn show(pairs: &[(String, Vec<u8>)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.escape_ascii()))
        .collect()
}

impl std::fmt::Debug for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorded")
            .field("arrival", &self.arrival)
            .field("protocol", &self.protocol)
            .field("method", &self.method)
            .field("target", &self.target)
            .field("authority", &self.authority)
            .field("headers", &show(&self.headers))
            .field("body", &self.body.escape_ascii().to_string())
            .field("trailers", &show(&self.trailers))
            .field("state", &self.state)
            .finish()
    }
}

impl Recorded {
    /// The first value of a header, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        all(&self.headers, name)
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        first(&self.trailers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Script {
    pub status: u16,
    /// Sent in order, repeats kept.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body chunks (chunked encoding on HTTP/1.1 unless a `content-length`
    /// header is scripted).
    pub chunks: Vec<Vec<u8>>,
    /// Pause before each chunk after the first, so the proxy sees them apart.
    pub chunk_delay: Duration,
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Gzip the whole body (sent as one chunk) and add `content-encoding: gzip`.
    pub gzip: bool,
    /// After the chunks (and before any trailers), fail the body: hyper then
    /// resets the HTTP/2 stream or closes the HTTP/1.1 connection.
    pub abort: bool,
}

impl Script {
    /// 200 with no headers and no body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            chunks: Vec::new(),
            chunk_delay: Duration::from_millis(20),
            trailers: Vec::new(),
            gzip: false,
            abort: false,
        }
    }

    /// 200 with `body` as `application/json`.
    pub fn json(body: &Value) -> Self {
        Self::new(200)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    /// 200 with `body` and the given content type.
    pub fn typed(content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new(200)
            .header("content-type", content_type)
            .body(body)
    }

    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// The whole body as one chunk.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.chunks = vec![body.into()];
        self
    }

    pub fn chunks(mut self, chunks: Vec<Vec<u8>>) -> Self {
        self.chunks = chunks;
        self
    }

    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    /// Adds a trailer. On HTTP/1.1, hyper sends trailers only when the request
    /// carried `te: trailers` (RFC 9110 §6.5.1), so send that header too.
    pub fn trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.trailers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    pub fn gzip(mut self) -> Self {
        self.gzip = true;
        self
    }

    /// Ends the answer with a reset after the chunks (after `chunk_delay`).
    pub fn abort(mut self) -> Self {
        self.abort = true;
        self
    }
}

#[derive(Debug, Default)]
struct State {
    requests: Vec<Recorded>,
    /// The next arrival number.
    arrivals: u64,
    scripts: HashMap<String, Script>,
    default: Option<Script>,
}

/// The recording upstream on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

/// How long [`Upstream::settled`] waits for streaming bodies to end.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

impl Upstream {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(serve(state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Registers `script` under `name` (select it with [`SCRIPT_HEADER`]).
    pub fn script(&self, name: &str, script: Script) {
        self.lock().scripts.insert(name.into(), script);
    }

    /// The script for requests that name none (instead of the echo).
    pub fn set_default(&self, script: Option<Script>) {
        self.lock().default = script;
    }

    /// A snapshot of every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Removes and returns every request recorded so far.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.lock().requests)
    }

    /// Removes and returns every request whose body no longer streams (a
    /// consumer that judges arrivals in batches while more arrive).
    pub fn take_settled(&self) -> Vec<Recorded> {
        let mut state = self.lock();
        let (settled, streaming) = std::mem::take(&mut state.requests)
            .into_iter()
            .partition(|r| r.state != BodyState::Streaming);
        state.requests = streaming;
        settled
    }

    /// Removes and returns the requests whose target starts with `prefix`.
    pub fn remove_target_prefix(&self, prefix: &str) -> Vec<Recorded> {
        let mut state = self.lock();
        let (matching, rest) = std::mem::take(&mut state.requests)
            .into_iter()
            .partition(|r| r.target.starts_with(prefix));
        state.requests = rest;
        matching
    }

    pub fn last(&self) -> Option<Recorded> {
        self.lock().requests.last().cloned()
    }

    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }

    /// Waits until no recorded body is still streaming, then returns a
    /// snapshot (the client may see its answer before the upstream sees the
    /// end of a reset stream).
    pub async fn settled(&self) -> anyhow::Result<Vec<Recorded>> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let snapshot = self.requests();
            if snapshot.iter().all(|r| r.state != BodyState::Streaming) {
                return Ok(snapshot);
            }
            if Instant::now() > deadline {
                bail!("a request body is still streaming after {SETTLE_TIMEOUT:?}: {snapshot:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for streaming bodies to end, removes every recorded request and
    /// fails unless there was exactly one.
    pub async fn take_one(&self) -> anyhow::Result<Recorded> {
        self.settled().await?;
        let mut taken = self.take();
        match taken.len() {
            1 => taken.pop().context("one request"),
            n => bail!("expected exactly one request at the upstream, got {n}: {taken:#?}"),
        }
    }

    /// For a request refused once its body was buffered: its headers may have
    /// left already (a WasmPlugin cannot hold request headers while it reads
    /// the body), but not one body byte, and the stream never completed.
    /// Waits for streams to end, removes the records, fails otherwise.
    pub async fn assert_no_body_arrived(&self, what: &str) {
        let got = match self.settled().await {
            Ok(_) => self.take(),
            Err(e) => panic!("{what}: {e}"),
        };
        assert!(got.len() <= 1, "{what}: {got:#?}");
        for rec in &got {
            assert!(
                rec.body.is_empty() && matches!(rec.state, BodyState::Aborted(_)),
                "{what}: only the headers of a refused request may reach the upstream, \
                 then a reset: {rec:#?}"
            );
        }
    }

    /// Fails if any request reached the upstream (use after the client got
    /// its answer: a forwarded request reaches the upstream before that).
    pub fn assert_nothing_arrived(&self, what: &str) {
        let got = self.requests();
        assert!(
            got.is_empty(),
            "{what}: nothing may reach the upstream, but {} request(s) did: {got:#?}",
            got.len()
        );
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn pairs(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect()
}

async fn serve(state: Arc<Mutex<State>>, req: hyper::Request<hyper::body::Incoming>) -> Answer {
    let protocol = if req.version() == hyper::Version::HTTP_2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().to_string(), |pq| pq.as_str().to_string());
    let authority = match req.uri().authority() {
        Some(authority) => authority.as_str().to_owned(),
        None => req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    // Found again by arrival number: a test may take earlier records while
    // this body streams (an index into the list would then point elsewhere).
    let arrival = {
        let mut s = lock(&state);
        let arrival = s.arrivals;
        s.arrivals += 1;
        s.requests.push(Recorded {
            arrival,
            protocol,
            method: req.method().to_string(),
            target,
            authority,
            headers: pairs(req.headers()),
            body: Vec::new(),
            trailers: Vec::new(),
            state: BodyState::Streaming,
        });
        arrival
    };
    let script_name = req
        .headers()
        .get(SCRIPT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = req.into_body();
    let mut outcome = BodyState::Complete;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let mut s = lock(&state);
                let Some(rec) = s.requests.iter_mut().find(|r| r.arrival == arrival) else {
                    break;
                };
                match frame.into_data() {
                    Ok(data) => rec.body.extend_from_slice(&data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            rec.trailers.extend(pairs(&trailers));
                        }
                    }
                }
            }
            Err(e) => {
                outcome = BodyState::Aborted(e.to_string());
                break;
            }
        }
    }
    let recorded = {
        let mut s = lock(&state);
        match s.requests.iter_mut().find(|r| r.arrival == arrival) {
            Some(rec) => {
                rec.state = outcome;
                Some(rec.clone())
            }
            None => None,
        }
    };
    let script = {
        let s = lock(&state);
        script_name
            .and_then(|name| s.scripts.get(&name).cloned())
            .or_else(|| s.default.clone())
    };
    match (script, recorded) {
        (Some(script), _) => respond(&script),
        (None, Some(rec)) => respond(&echo_json(&rec)),
        (None, None) => respond(&Script::new(500)),
    }
}

/// The legacy echo: a JSON description of the request (`method`, `path`,
/// `headers` as the LAST value per name, lossy UTF-8 `body`), shaped by the
/// `x-echo-response`, `x-echo-content-type` and `x-echo-gzip`
/// (`always` / `if-accepted`) request headers. New assertions should read
/// the recording instead.
pub fn echo_json(rec: &Recorded) -> Script {
    let mut headers = Map::new();
    for (name, value) in &rec.headers {
        headers.insert(
            name.clone(),
            Value::String(String::from_utf8_lossy(value).into_owned()),
        );
    }
    let last = |name: &str| {
        rec.headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let content_type = last("x-echo-content-type").unwrap_or_else(|| "application/json".into());
    let payload = match last("x-echo-response") {
        Some(custom) => custom.into_bytes(),
        None => json!({"method": rec.method, "path": rec.target, "headers": headers, "body": rec.text()})
            .to_string()
            .into_bytes(),
    };
    let accepts_gzip = last("accept-encoding").is_some_and(|a| a.contains("gzip"));
    let gzip = match last("x-echo-gzip").as_deref() {
        Some("always") => true,
        Some("if-accepted") => accepts_gzip,
        _ => false,
    };
    let script = Script::typed(&content_type, payload);
    if gzip {
        script.gzip()
    } else {
        script
    }
}

/// The error a [`Script::abort`] body ends with.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted abort")
    }
}

impl std::error::Error for Aborted {}

type Answer = hyper::Response<BoxBody<Bytes, Aborted>>;

fn respond(script: &Script) -> Answer {
    let mut chunks: Vec<Bytes> = script.chunks.iter().cloned().map(Bytes::from).collect();
    if script.gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = std::io::Write::write_all(&mut encoder, &script.chunks.concat());
        chunks = vec![Bytes::from(encoder.finish().unwrap_or_default())];
    }
    let mut frames: Vec<Result<Frame<Bytes>, Aborted>> =
        chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
    if script.abort {
        frames.push(Err(Aborted));
    } else if !script.trailers.is_empty() {
        frames.push(Ok(Frame::trailers(header_map(&script.trailers))));
    }
    let delay = script.chunk_delay;
    let stream = futures_util::stream::unfold(
        (frames.into_iter(), true),
        move |(mut rest, first)| async move {
            let frame = rest.next()?;
            if !first {
                tokio::time::sleep(delay).await;
            }
            Some((frame, (rest, false)))
        },
    );
    let mut response = hyper::Response::new(StreamBody::new(stream).boxed());
    *response.status_mut() =
        hyper::StatusCode::from_u16(script.status).unwrap_or(hyper::StatusCode::OK);
    let headers = response.headers_mut();
    for (name, value) in &script.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    if !script.trailers.is_empty()
        && !script
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("trailer"))
    {
        // hyper's HTTP/1.1 encoder sends only declared trailers.
        if let Ok(v) = HeaderValue::from_str(&crate::http::declared(&script.trailers)) {
            headers.insert(hyper::header::TRAILER, v);
        }
    }
    if script.gzip {
        headers.insert(
            hyper::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    response
}

fn header_map(pairs: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            map.append(n, v);
        }
    }
    map
}
