//! A test audit collector: accepts `POST`ed NDJSON batches (or OTLP JSON
//! batches, one line each) on 127.0.0.1 and keeps every line it received (and, if asked, appends them to a
//! file, as a collector stores them). Stops when dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct Collector {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    /// The path and content-type of every request received.
    requests: Arc<Mutex<Vec<(String, String)>>>,
    task: JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_delay(std::time::Duration::ZERO).await
    }

    /// A collector that also appends every record line to `store` (NDJSON,
    /// what `meshguard audit verify` reads).
    pub async fn start_storing_to(store: &std::path::Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(store)?;
        Self::start_with(std::time::Duration::ZERO, Some(file)).await
    }

    /// A collector that takes `delay` to answer each batch (a slow or
    /// overloaded collector, for back-pressure tests).
    pub async fn start_with_delay(delay: std::time::Duration) -> anyhow::Result<Self> {
        Self::start_with(delay, None).await
    }

    /// A collector on `addr`: one that was down (see [`unused_addr`]) and
    /// comes back.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::serve(
            TcpListener::bind(addr).await?,
            std::time::Duration::ZERO,
            None,
        )
    }

    async fn start_with(
        delay: std::time::Duration,
        store: Option<std::fs::File>,
    ) -> anyhow::Result<Self> {
        Self::serve(TcpListener::bind("127.0.0.1:0").await?, delay, store)
    }

    fn serve(
        listener: TcpListener,
        delay: std::time::Duration,
        store: Option<std::fs::File>,
    ) -> anyhow::Result<Self> {
        let store_file = Arc::new(Mutex::new(store));
        let addr = listener.local_addr()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&lines);
        let seen = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = Arc::clone(&store);
                let store_file = Arc::clone(&store_file);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = Arc::clone(&store);
                        let store_file = Arc::clone(&store_file);
                        let seen = Arc::clone(&seen);
                        async move {
                            let content_type = req
                                .headers()
                                .get(hyper::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            if let Ok(mut seen) = seen.lock() {
                                seen.push((req.uri().path().to_owned(), content_type));
                            }
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            tokio::time::sleep(delay).await;
                            let text = String::from_utf8_lossy(&body).into_owned();
                            if let Ok(mut file) = store_file.lock() {
                                if let Some(file) = file.as_mut() {
                                    let _ = write_lines(file, &text);
                                }
                            }
                            if let Ok(mut lines) = store.lock() {
                                lines.extend(
                                    text.lines().filter(|l| !l.is_empty()).map(String::from),
                                );
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"{}"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            lines,
            requests,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every record line received so far (an OTLP JSON batch is one line).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The path and content-type of every request received so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Appends the non-empty lines of a batch, each ending in a newline.
fn write_lines(file: &mut std::fs::File, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    for line in text.lines().filter(|l| !l.is_empty()) {
        writeln!(file, "{line}")?;
    }
    file.flush()
}

/// A loopback address nothing listens on (bound once, then released), for a
/// collector that is down until [`Collector::start_on`] brings it up.
pub fn unused_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
