//! A minimal HTTP/1.1 client over hyper: one connection per request unless a
//! test asks for keep-alive, and full control over header bytes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use std::convert::Infallible;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Every request is bounded in time: a hang fails the test instead of the suite.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What a test sends.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub host: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// When set, the body is sent as these chunks (chunked transfer encoding),
    /// with a pause between them so the proxy sees them separately.
    pub chunks: Option<Vec<Vec<u8>>>,
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
        }
    }

    pub fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }

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
}

/// What came back.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {}", self.text()))
    }
}

/// Sends one request on a fresh connection.
pub async fn send(addr: SocketAddr, request: &Request) -> anyhow::Result<Response> {
    let mut conn = Connection::open(addr).await?;
    conn.send(request).await
}

/// One HTTP/1.1 connection, reusable for keep-alive tests.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<BoxBody<Bytes, Infallible>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender })
    }

    pub async fn send(&mut self, request: &Request) -> anyhow::Result<Response> {
        let mut builder = hyper::Request::builder()
            .method(request.method.as_str())
            .uri(request.path.as_str())
            .header(hyper::header::HOST, request.host.as_str());
        for (name, value) in &request.headers {
            builder = builder.header(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_bytes(value)?,
            );
        }
        let body = match &request.chunks {
            None => Full::new(Bytes::from(request.body.clone())).boxed(),
            Some(chunks) => {
                let chunks: Vec<Bytes> = chunks.iter().cloned().map(Bytes::from).collect();
                let stream =
                    futures_util::stream::unfold(chunks.into_iter(), |mut rest| async move {
                        let chunk = rest.next()?;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some((Ok::<_, Infallible>(Frame::data(chunk)), rest))
                    });
                StreamBody::new(stream).boxed()
            }
        };
        let req = builder.body(body)?;
        let exchange = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Response {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .with_context(|| format!("{} {} timed out", request.method, request.path))?
    }
}
