//! The upstream service: answers every request with a JSON description of
//! what reached it (method, path, headers, body), so tests can see exactly
//! what the sidecar forwarded.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An echo server on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service =
                        service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                            Ok::<_, Infallible>(echo(req).await)
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(req: hyper::Request<hyper::body::Incoming>) -> hyper::Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().to_string();
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        headers.insert(
            name.to_string(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    let body = match req.into_body().collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(e) => format!("<body error: {e}>"),
    };
    // `x-echo-response`: answer with this body instead of the echo (JSON
    // describing the request); `x-echo-content-type` sets its content type;
    // `x-echo-gzip: if-accepted` gzips it when the request accepts gzip,
    // `x-echo-gzip: always` regardless.
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let content_type = header("x-echo-content-type").unwrap_or_else(|| "application/json".into());
    let mut payload = match header("x-echo-response") {
        Some(custom) => custom.into_bytes(),
        None => json!({"method": method, "path": path, "headers": headers, "body": body})
            .to_string()
            .into_bytes(),
    };
    let accepts_gzip = header("accept-encoding").is_some_and(|a| a.contains("gzip"));
    let gzip = match header("x-echo-gzip").as_deref() {
        Some("always") => true,
        Some("if-accepted") => accepts_gzip,
        _ => false,
    };
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = std::io::Write::write_all(&mut encoder, &payload);
        payload = encoder.finish().unwrap_or_default();
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from(payload)));
    if let Ok(v) = hyper::header::HeaderValue::from_str(&content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    if gzip {
        response.headers_mut().insert(
            hyper::header::CONTENT_ENCODING,
            hyper::header::HeaderValue::from_static("gzip"),
        );
    }
    response
}
