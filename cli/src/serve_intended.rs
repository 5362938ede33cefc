//! A reference source of truth for config drift: a tiny HTTP/1.1 server that
//! serves the signed intended-state documents `meshguard publish` writes.
//!
//! `GET /v1/intended/<namespace>/<workload>/<filter>` answers the bytes of
//! `DIR/<namespace>/<workload>/<filter>.json`, re-read on every request. The
//! server adds no trust: the sidecar believes a document only when it is
//! signed by a trusted key, bound to it and unexpired (see docs/integrity.md),
//! so any static web server can serve the same directory.
//!
//! Deliberately small: `std::net` only, one thread per connection,
//! `Connection: close`, bounded request heads and read time. One log line per
//! request, to standard error or to a file ([`Log`]).

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;

/// Path prefix of the one route.
pub const ROUTE_PREFIX: &str = "/v1/intended/";
/// Largest request line plus headers.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time allowed to receive the request head (in total, not per read).
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long, and how much, unread request input is drained before closing.
const DRAIN_TIME: Duration = Duration::from_millis(500);
const MAX_DRAIN_BYTES: usize = 64 * 1024;
/// Largest document served (the sidecar reads at most 64 KiB).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;
/// Longest request target echoed into the log.
const MAX_LOGGED_TARGET: usize = 256;
/// Connections handled at once; more are answered 503 at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Where the server writes its log lines: one per request, and its errors.
#[derive(Debug, Clone)]
pub enum Log {
    /// Standard error (`meshguard serve-intended`).
    Stderr,
    /// Appended to a file (a program that keeps its terminal for itself, such
    /// as `make demo`).
    File(Arc<Mutex<File>>),
}

impl Log {
    /// Appends to `path`, creating it.
    pub fn to_file(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::File(Arc::new(Mutex::new(file))))
    }

    fn line(&self, text: &str) {
        match self {
            Self::Stderr => eprintln!("meshguard serve-intended: {text}"),
            Self::File(file) => {
                if let Ok(mut file) = file.lock() {
                    // A log that cannot be written must not stop the answers.
                    let _ = writeln!(file, "meshguard serve-intended: {text}");
                }
            }
        }
    }
}

/// Accepts connections on `listener` forever, one thread per connection,
/// logging to standard error. Errors accepting one connection are logged and
/// do not stop the loop.
pub fn serve(listener: TcpListener, dir: PathBuf) -> io::Result<()> {
    serve_with_log(listener, dir, &Log::Stderr)
}

/// [`serve`], logging to `log`.
pub fn serve_with_log(listener: TcpListener, dir: PathBuf, log: &Log) -> io::Result<()> {
    // Fails early on a listener that is not usable.
    listener.local_addr()?;
    let dir = Arc::new(dir);
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                log.line(&format!("accept failed: {e}"));
                // Typically out of file descriptors: let connections finish.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            let response = Response::error(Status::Unavailable, "too many connections");
            finish(stream, peer, None, &response, false, log);
            continue;
        }
        let slot = Slot(Arc::clone(&active));
        let dir = Arc::clone(&dir);
        let conn_log = log.clone();
        let spawned = thread::Builder::new()
            .name("meshguard-intended-conn".into())
            .spawn(move || {
                let _slot = slot;
                handle(stream, peer, &dir, &conn_log);
            });
        if let Err(e) = spawned {
            // The closure (and with it the connection and its slot) was dropped.
            log.line(&format!("cannot start a connection thread: {e}"));
        }
    }
    Ok(())
}

/// Runs [`serve`] on a new thread (for tests: bind `127.0.0.1:0` and read the
/// port from the listener before handing it over).
pub fn spawn(listener: TcpListener, dir: PathBuf) -> JoinHandle<()> {
    spawn_with_log(listener, dir, Log::Stderr)
}

/// [`spawn`], logging to `log`.
pub fn spawn_with_log(listener: TcpListener, dir: PathBuf, log: Log) -> JoinHandle<()> {
    thread::spawn(move || {
        if let Err(e) = serve_with_log(listener, dir, &log) {
            log.line(&format!("stopped: {e}"));
        }
    })
}

/// Frees a connection slot when the connection's thread ends (even by panic).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    HeadTooLarge,
    Internal,
    Unavailable,
    VersionNotSupported,
}

impl Status {
    fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::HeadTooLarge => 431,
            Self::Internal => 500,
            Self::Unavailable => 503,
            Self::VersionNotSupported => 505,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::BadRequest => "Bad Request",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::RequestTimeout => "Request Timeout",
            Self::HeadTooLarge => "Request Header Fields Too Large",
            Self::Internal => "Internal Server Error",
            Self::Unavailable => "Service Unavailable",
            Self::VersionNotSupported => "HTTP Version Not Supported",
        }
    }

    /// The `error` field of an error body.
    fn error_name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::HeadTooLarge => "request_head_too_large",
            Self::Internal => "intended_config_unusable",
            Self::Unavailable => "unavailable",
            Self::VersionNotSupported => "http_version_not_supported",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

#[derive(Debug)]
struct Response {
    status: Status,
    body: Vec<u8>,
    /// What the log line says about the outcome.
    note: String,
}

impl Response {
    fn error(status: Status, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let body = json!({"error": status.error_name(), "reason": reason}).to_string();
        Self {
            status,
            body: body.into_bytes(),
            note: reason,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             cache-control: no-store\r\nconnection: close\r\n",
            self.status.code(),
            self.status.reason(),
            self.body.len()
        );
        if self.status == Status::MethodNotAllowed {
            head.push_str("allow: GET\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// The parts of a request the log line shows.
#[derive(Debug, Default)]
struct RequestSummary {
    method: String,
    target: String,
    filter_header: Option<String>,
    version_header: Option<String>,
}

fn handle(mut stream: TcpStream, peer: Option<SocketAddr>, dir: &Path, log: &Log) {
    let (summary, response) = match read_head(&mut stream) {
        Ok(head) => match parse_head(&head) {
            Ok(summary) => {
                let response = respond(&summary, dir);
                (Some(summary), response)
            }
            Err(response) => (None, response),
        },
        Err(response) => (None, response),
    };
    finish(stream, peer, summary.as_ref(), &response, true, log);
}

/// Writes `response`, closes the connection (draining what the client still
/// sends when `drain`) and logs one line.
fn finish(
    mut stream: TcpStream,
    peer: Option<SocketAddr>,
    summary: Option<&RequestSummary>,
    response: &Response,
    drain: bool,
    log: &Log,
) {
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let written = stream
        .write_all(&response.to_bytes())
        .and_then(|()| stream.flush());
    let _ = stream.shutdown(Shutdown::Write);
    if drain {
        // Closing with unread input (say, a POST body) would reset the
        // connection and could destroy the response before the client reads it.
        let _ = stream.set_read_timeout(Some(DRAIN_TIME));
        let mut sink = [0u8; 4096];
        let mut left = MAX_DRAIN_BYTES;
        while left > 0 {
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }
    let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
    let request = summary.map_or_else(
        || "-".to_string(),
        |s| {
            let target: String = s.target.chars().take(MAX_LOGGED_TARGET).collect();
            let mut line = format!("{:?}", format!("{} {target}", s.method));
            if let Some(f) = &s.filter_header {
                line.push_str(&format!(" x-meshguard-filter={f:?}"));
            }
            if let Some(v) = &s.version_header {
                line.push_str(&format!(" x-meshguard-config-version={v:?}"));
            }
            line
        },
    );
    let write_note = match written {
        Ok(()) => String::new(),
        Err(e) => format!(" (response not delivered: {e})"),
    };
    log.line(&format!(
        "{peer} {request} -> {} {}{write_note}",
        response.status, response.note
    ));
}

/// Reads up to the end of the request head (`\r\n\r\n`), within
/// [`MAX_HEAD_BYTES`] and [`READ_TIMEOUT`].
fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, Response> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Response::error(
                Status::RequestTimeout,
                "request head not received in time",
            ));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| Response::error(Status::Internal, format!("socket: {e}")))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(Response::error(
                    Status::BadRequest,
                    "connection closed before the end of the request head",
                ))
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Response::error(
                    Status::RequestTimeout,
                    "request head not received in time",
                ))
            }
            Err(e) => return Err(Response::error(Status::BadRequest, format!("read: {e}"))),
        };
        let start = head.len().saturating_sub(3);
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = find_end_of_head(head.get(start..).unwrap_or_default()) {
            head.truncate(start + end);
            if head.len() > MAX_HEAD_BYTES {
                break;
            }
            return Ok(head);
        }
        if head.len() > MAX_HEAD_BYTES {
            break;
        }
    }
    Err(Response::error(
        Status::HeadTooLarge,
        format!("request line and headers exceed {MAX_HEAD_BYTES} bytes"),
    ))
}

/// The length of the head up to and including the blank line, if complete.
fn find_end_of_head(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

fn parse_head(head: &[u8]) -> Result<RequestSummary, Response> {
    let text = std::str::from_utf8(head)
        .map_err(|_| Response::error(Status::BadRequest, "request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::error(
            Status::BadRequest,
            "malformed request line",
        ));
    };
    if method.is_empty() || target.is_empty() {
        return Err(Response::error(
            Status::BadRequest,
            "malformed request line",
        ));
    }
    if !version.starts_with("HTTP/1.") {
        return Err(Response::error(
            Status::VersionNotSupported,
            "only HTTP/1.x is served",
        ));
    }
    let mut summary = RequestSummary {
        method: method.to_string(),
        target: target.to_string(),
        ..RequestSummary::default()
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Response::error(Status::BadRequest, "malformed header line"));
        };
        let value = value.trim().to_string();
        if name.eq_ignore_ascii_case("x-meshguard-filter") {
            summary.filter_header = Some(value);
        } else if name.eq_ignore_ascii_case("x-meshguard-config-version") {
            summary.version_header = Some(value);
        }
    }
    Ok(summary)
}

/// A workload or filter name: `[A-Za-z0-9._-]+`, and not `.` or `..`.
fn is_name(segment: &str) -> bool {
    !segment.is_empty()
        && segment.bytes().any(|b| b != b'.')
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn respond(request: &RequestSummary, dir: &Path) -> Response {
    // The query string plays no part.
    let path = request
        .target
        .split_once('?')
        .map_or(request.target.as_str(), |(p, _)| p);
    let Some(rest) = path.strip_prefix(ROUTE_PREFIX) else {
        return Response::error(
            Status::NotFound,
            format!("no such resource; ask for {ROUTE_PREFIX}<namespace>/<workload>/<filter>"),
        );
    };
    if request.method != "GET" {
        return Response::error(
            Status::MethodNotAllowed,
            format!("{} is not allowed; use GET", request.method),
        );
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let [namespace, workload, filter] = segments.as_slice() else {
        return Response::error(
            Status::BadRequest,
            format!("expected {ROUTE_PREFIX}<namespace>/<workload>/<filter>"),
        );
    };
    if ![namespace, workload, filter].iter().all(|s| is_name(s)) {
        return Response::error(
            Status::BadRequest,
            "namespace, workload and filter must match [A-Za-z0-9._-]+ (and not be `.` or `..`)",
        );
    }
    let relative = format!("{namespace}/{workload}/{filter}.json");
    match document(
        &dir.join(namespace)
            .join(workload)
            .join(format!("{filter}.json")),
    ) {
        Ok(body) => Response {
            note: format!("{relative}: {} bytes", body.len()),
            status: Status::Ok,
            body,
        },
        Err(Unusable::Missing) => Response::error(
            Status::NotFound,
            format!("no intended document at {relative}"),
        ),
        Err(Unusable::Bad(reason)) => {
            Response::error(Status::Internal, format!("{relative}: {reason}"))
        }
    }
}

enum Unusable {
    Missing,
    Bad(String),
}

/// The bytes of one published document, served as they are: the sidecar
/// checks the signature, not this server.
fn document(path: &Path) -> Result<Vec<u8>, Unusable> {
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_DOCUMENT_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    File::open(path)
        .and_then(|file| file.take(limit).read_to_end(&mut bytes))
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Unusable::Missing,
            _ => Unusable::Bad(format!("cannot read: {e}")),
        })?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(Unusable::Bad(format!(
            "larger than {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for (segment, ok) in [
            ("orders", true),
            ("orders-v2.prod_1", true),
            ("..x", true),
            ("", false),
            (".", false),
            ("..", false),
            ("...", false),
            ("a b", false),
            ("a%2f", false),
            ("a\\b", false),
            ("é", false),
        ] {
            assert_eq!(is_name(segment), ok, "{segment:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(find_end_of_head(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(find_end_of_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn request_heads_are_parsed_strictly() {
        let ok = parse_head(
            b"GET /v1/intended/a/b HTTP/1.1\r\nX-Meshguard-Filter: identity\r\nx-meshguard-config-version: v1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(ok.method, "GET");
        assert_eq!(ok.target, "/v1/intended/a/b");
        assert_eq!(ok.filter_header.as_deref(), Some("identity"));
        assert_eq!(ok.version_header.as_deref(), Some("v1"));
        for (head, status) in [
            (&b"GET /\r\n\r\n"[..], Status::BadRequest),
            (b"GET  / HTTP/1.1\r\n\r\n", Status::BadRequest),
            (b"GET / HTTP/2\r\n\r\n", Status::VersionNotSupported),
            (b"GET / HTTP/1.1\r\nnocolon\r\n\r\n", Status::BadRequest),
            (b"GET / HTTP/1.1\r\n\xff: x\r\n\r\n", Status::BadRequest),
        ] {
            assert_eq!(parse_head(head).unwrap_err().status, status, "{head:?}");
        }
    }
}
