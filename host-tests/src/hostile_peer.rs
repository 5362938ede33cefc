//! A peer that answers meshguard's own callouts (the source of truth, the
//! audit collector) the way a dying or hostile pod does: headers then a
//! stall, a reset mid-body, a huge or dripping body, another content type,
//! a redirect. Raw TCP, so each misbehaviour is exactly what goes on the wire.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the peer answers every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// `200` headers announcing a body, then nothing, connection held open.
    StallAfterHeaders,
    /// `200` headers and half the announced body, then a reset.
    ResetMidBody,
    /// `200` with a 4 MiB body.
    HugeBody,
    /// `200` with a body sent one byte every 200 ms.
    SlowDrip,
    /// `200` with an HTML page.
    WrongContentType,
    /// `302` to another host.
    Redirect,
    /// Bytes that are not HTTP, then a close.
    Garbage,
}

impl Misbehaviour {
    pub const ALL: [Self; 7] = [
        Self::StallAfterHeaders,
        Self::ResetMidBody,
        Self::HugeBody,
        Self::SlowDrip,
        Self::WrongContentType,
        Self::Redirect,
        Self::Garbage,
    ];
}

/// A running hostile peer; stops when dropped.
#[derive(Debug)]
pub struct HostilePeer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HostilePeer {
    pub async fn start(how: Misbehaviour) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let _ = answer(stream, how, &counted).await;
                });
            }
        });
        Ok(Self {
            addr,
            requests,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far (each misbehaved at).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head (and drops any body), then misbehaves.
async fn answer(
    mut stream: TcpStream,
    how: Misbehaviour,
    requests: &AtomicUsize,
) -> std::io::Result<()> {
    loop {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
            if head.len() > 64 * 1024 {
                return Ok(());
            }
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let body_len = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; body_len];
        stream.read_exact(&mut body).await?;
        requests.fetch_add(1, Ordering::SeqCst);
        match how {
            Misbehaviour::StallAfterHeaders => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n{\"fil")
                    .await?;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Misbehaviour::ResetMidBody => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n")
                    .await?;
                stream.write_all(&[b' '; 2048]).await?;
                // Closed with SO_LINGER 0: a reset, not a clean end.
                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Misbehaviour::HugeBody => {
                let size = 4 << 20;
                stream
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n").as_bytes())
                    .await?;
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..(size / chunk.len()) {
                    stream.write_all(&chunk).await?;
                }
            }
            Misbehaviour::SlowDrip => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n")
                    .await?;
                for _ in 0..64 {
                    stream.write_all(b" ").await?;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Misbehaviour::WrongContentType => {
                let page = b"<html><body>meshguard-audit-record: {}</body></html>";
                stream
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n", page.len()).as_bytes())
                    .await?;
                stream.write_all(page).await?;
            }
            Misbehaviour::Redirect => {
                stream
                    .write_all(b"HTTP/1.1 302 Found\r\nlocation: http://evil.example/\r\ncontent-length: 0\r\n\r\n")
                    .await?;
            }
            Misbehaviour::Garbage => {
                stream
                    .write_all(b"\x00\x01SSH-2.0-not-http\r\n\r\n")
                    .await?;
                return Ok(());
            }
        }
    }
}
