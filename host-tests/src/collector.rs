//! A test audit collector: accepts `POST`ed NDJSON batches on 127.0.0.1 and
//! keeps every record line it received. Stops when dropped.

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
    task: JoinHandle<()>,
}

impl Collector {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_delay(std::time::Duration::ZERO).await
    }

    /// A collector that takes `delay` to answer each batch (a slow or
    /// overloaded collector, for back-pressure tests).
    pub async fn start_with_delay(delay: std::time::Duration) -> anyhow::Result<Self> {
        Self::serve(TcpListener::bind("127.0.0.1:0").await?, delay)
    }

    /// A collector on `addr`: one that was down (see [`unused_addr`]) and
    /// comes back.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::serve(TcpListener::bind(addr).await?, std::time::Duration::ZERO)
    }

    fn serve(listener: TcpListener, delay: std::time::Duration) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&lines);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let store = Arc::clone(&store);
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            tokio::time::sleep(delay).await;
                            let text = String::from_utf8_lossy(&body).into_owned();
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
        Ok(Self { addr, lines, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every record line received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
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
