//! The test client: HTTP/1.1 (fresh or keep-alive connections, chunked
//! bodies, request trailers) and HTTP/2 (prior-knowledge h2c, trailers,
//! concurrent streams), with full control over header bytes and the request
//! target. A reset stream is an outcome ([`Response::reset`]), not an error.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Every request is bounded in time: a hang fails the test instead of the suite.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP version on one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Every combination of client, sidecar-to-sidecar leg and upstream protocol,
/// with a label for assertion messages (`client h1 leg h2 upstream h1`).
pub fn every_leg() -> Vec<(Protocol, Protocol, Protocol, String)> {
    let mut all = Vec::new();
    for client in Protocol::ALL {
        for leg in Protocol::ALL {
            for upstream in Protocol::ALL {
                let what = format!(
                    "client {} leg {} upstream {}",
                    client.short(),
                    leg.short(),
                    upstream.short()
                );
                all.push((client, leg, upstream, what));
            }
        }
    }
    all
}

impl Protocol {
    /// Both, for table-driven tests: `for p in Protocol::ALL { ... }`.
    pub const ALL: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

    /// `h1` / `h2`, as used in route names and test messages.
    pub fn short(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
        }
    }
}

/// What a test sends.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target, sent as given (hyper does not normalize it).
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// When set, the body is sent as these chunks (chunked transfer encoding),
    /// with a pause between them so the proxy sees them separately.
    pub chunks: Option<Vec<Vec<u8>>>,
    /// Request trailers (chunked encoding on HTTP/1.1).
    pub trailers: Vec<(String, Vec<u8>)>,
    /// Client to client sidecar (and to the server sidecar for `send_direct`).
    pub protocol: Protocol,
    /// Client sidecar to server sidecar; `None` follows `protocol`.
    pub leg: Option<Protocol>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.into(),
            path: path.into(),
            host: "backend.default.svc".into(),
            headers: Vec::new(),
            body: Vec::new(),
            chunks: None,
            trailers: Vec::new(),
            protocol: Protocol::Http1,
            leg: None,
        }
    }

    pub fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }

    /// Appends a header (repeats are sent as repeats, bytes as given).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the body in chunks, without a content-length.
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Self {
        self.chunks = Some(chunks);
        self
    }

    /// Adds a request trailer (the body is then streamed).
    pub fn trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.trailers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// HTTP/2 (h2c, prior knowledge) to the client sidecar.
    pub fn http2(self) -> Self {
        self.protocol(Protocol::Http2)
    }

    /// Forces the sidecar-to-sidecar protocol.
    pub fn leg(mut self, leg: Protocol) -> Self {
        self.leg = Some(leg);
        self
    }

    /// Answered by the upstream script registered under `name`.
    pub fn script(self, name: &str) -> Self {
        self.header(crate::upstream::SCRIPT_HEADER, name)
    }

    /// Asks the server sidecar to reach the upstream over `protocol`.
    pub fn upstream_protocol(self, protocol: Protocol) -> Self {
        self.header(crate::mesh::UPSTREAM_HEADER, protocol.short())
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    /// 0 when the stream was reset before any response headers.
    pub status: u16,
    /// Every header, repeats kept.
    pub headers: HeaderMap,
    /// The body bytes received (up to a reset, if any).
    pub body: Bytes,
    pub trailers: HeaderMap,
    /// Set when the stream was reset or the connection closed before the
    /// response ended (before or after its headers).
    pub reset: Option<String>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .get_all(name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect()
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_reset(&self) -> bool {
        self.reset.is_some()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {}", self.text()))
    }
}

/// Sends one request on a fresh connection of `request.protocol`.
pub async fn send(addr: SocketAddr, request: &Request) -> anyhow::Result<Response> {
    let mut conn = Connection::open_with(addr, request.protocol).await?;
    conn.send(request).await
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<BoxBody<Bytes, Infallible>>),
    H2(hyper::client::conn::http2::SendRequest<BoxBody<Bytes, Infallible>>),
}

/// One connection, reusable for keep-alive tests. On HTTP/2, [`Connection::stream`]
/// opens further handles for concurrent streams on the same connection.
pub struct Connection {
    sender: Sender,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

impl Connection {
    /// An HTTP/1.1 connection.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::open_with(addr, Protocol::Http1).await
    }

    pub async fn open_with(addr: SocketAddr, protocol: Protocol) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        let io = TokioIo::new(stream);
        let sender = match protocol {
            Protocol::Http1 => {
                let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::H1(sender)
            }
            Protocol::Http2 => {
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::H2(sender)
            }
        };
        Ok(Self { sender })
    }

    /// Another handle on the same HTTP/2 connection (`None` on HTTP/1.1).
    pub fn stream(&self) -> Option<Self> {
        match &self.sender {
            Sender::H2(s) => Some(Self {
                sender: Sender::H2(s.clone()),
            }),
            Sender::H1(_) => None,
        }
    }

    pub async fn send(&mut self, request: &Request) -> anyhow::Result<Response> {
        let h2 = matches!(self.sender, Sender::H2(_));
        let uri = if h2 {
            // HTTP/2 carries the authority as `:authority`, not `host`.
            format!("http://{}{}", request.host, request.path)
        } else {
            request.path.clone()
        };
        let mut builder = hyper::Request::builder()
            .method(request.method.as_str())
            .uri(uri.as_str());
        if !h2 {
            builder = builder.header(hyper::header::HOST, request.host.as_str());
        }
        for (name, value) in &request.headers {
            builder = builder.header(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_bytes(value)?,
            );
        }
        if !request.trailers.is_empty()
            && !request
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("trailer"))
        {
            // hyper's HTTP/1.1 encoder sends only the trailers a `trailer`
            // header declares.
            builder = builder.header("trailer", declared(&request.trailers));
        }
        let streamed = request.chunks.is_some() || !request.trailers.is_empty();
        let body = if streamed {
            let chunks: Vec<Vec<u8>> = request
                .chunks
                .clone()
                .unwrap_or_else(|| vec![request.body.clone()]);
            let mut frames: Vec<Frame<Bytes>> = chunks
                .into_iter()
                .filter(|c| !c.is_empty())
                .map(|c| Frame::data(Bytes::from(c)))
                .collect();
            if !request.trailers.is_empty() {
                let mut map = HeaderMap::new();
                for (name, value) in &request.trailers {
                    map.append(
                        HeaderName::from_bytes(name.as_bytes())?,
                        HeaderValue::from_bytes(value)?,
                    );
                }
                frames.push(Frame::trailers(map));
            }
            let stream = futures_util::stream::unfold(frames.into_iter(), |mut rest| async move {
                let frame = rest.next()?;
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Ok::<_, Infallible>(frame), rest))
            });
            StreamBody::new(stream).boxed()
        } else {
            Full::new(Bytes::from(request.body.clone())).boxed()
        };
        let req = builder.body(body)?;
        let exchange = async {
            let sent = match &mut self.sender {
                Sender::H1(s) => match s.ready().await {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                },
                Sender::H2(s) => match s.ready().await {
                    Ok(()) => s.send_request(req).await,
                    Err(e) => Err(e),
                },
            };
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => return anyhow::Ok(reset_before_headers(&e)),
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let mut body = Vec::new();
            let mut trailers = HeaderMap::new();
            let mut reset = None;
            let mut incoming = resp.into_body();
            while let Some(frame) = incoming.frame().await {
                match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => body.extend_from_slice(&data),
                        Err(frame) => {
                            if let Ok(t) = frame.into_trailers() {
                                trailers.extend(t);
                            }
                        }
                    },
                    Err(e) => {
                        reset = Some(describe(&e));
                        break;
                    }
                }
            }
            anyhow::Ok(Response {
                status,
                headers,
                body: Bytes::from(body),
                trailers,
                reset,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{} {} timed out", request.method, request.path))?
    }
}

/// The `trailer` header value declaring these trailer names.
pub fn declared(trailers: &[(String, Vec<u8>)]) -> String {
    let mut names: Vec<&str> = trailers.iter().map(|(n, _)| n.as_str()).collect();
    names.dedup();
    names.join(", ")
}

fn describe(e: &hyper::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

fn reset_before_headers(e: &hyper::Error) -> Response {
    Response {
        status: 0,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        trailers: HeaderMap::new(),
        reset: Some(describe(e)),
    }
}

/// Sends `head` (a request line and headers, exactly as given, ending in an
/// empty line) and `body` over a fresh HTTP/1.1 connection and returns the
/// raw bytes Envoy sent back until it closed the connection or `REQUEST_TIMEOUT`
/// passed. For targets hyper refuses to build (non-ASCII, spaces) or header
/// bytes it would refuse. Send `connection: close` so Envoy closes.
pub async fn send_raw(addr: SocketAddr, head: &[u8], body: &[u8]) -> anyhow::Result<RawResponse> {
    let mut stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    stream.write_all(head).await?;
    stream.write_all(body).await?;
    let mut out = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, stream.read_to_end(&mut out)).await;
    if read.is_err() && out.is_empty() {
        anyhow::bail!("no answer to a raw request within {REQUEST_TIMEOUT:?}");
    }
    Ok(RawResponse { bytes: out })
}

/// Raw bytes of an HTTP/1.1 answer.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub bytes: Vec<u8>,
}

impl RawResponse {
    /// The status code of the first response line (0 when there is none).
    pub fn status(&self) -> u16 {
        let text = String::from_utf8_lossy(&self.bytes);
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The first value of a header of the first response (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.bytes);
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}
