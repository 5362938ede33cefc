//! What a pipeline callback tells the host, and local replies.

use crate::host::{Direction, StreamHost};

/// Whether the host goes on with the stream or holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Hold what the host has (headers, body): more is needed, or the
    /// stream was answered locally or reset.
    Stop,
}

/// Sends a JSON local reply, with `x-meshguard-deny-reason` when `reason` is
/// given, and stops the chain. When the host refuses the reply the request is
/// reset, so that it never reaches the upstream.
pub fn json_reply<H: StreamHost>(
    host: &mut H,
    status: u16,
    reason: Option<&str>,
    body: &[u8],
) -> Flow {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(reason) = reason {
        headers.push(("x-meshguard-deny-reason", reason));
    }
    if !host.reply(status, &headers, body) {
        host.reset(Direction::Request);
    }
    Flow::Stop
}

/// Resets a direction and stops the chain.
pub fn reset<H: StreamHost>(host: &mut H, direction: Direction) -> Flow {
    host.reset(direction);
    Flow::Stop
}
