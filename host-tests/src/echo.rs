//! The former echo server, now the recording [`Upstream`]: with no script it
//! still answers with a JSON description of the request (see
//! [`crate::upstream::echo_json`]), so older call sites keep working.

pub use crate::upstream::Upstream as EchoServer;
