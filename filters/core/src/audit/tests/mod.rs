//! The audit engine's behaviour, table-driven: each row reads as "this input,
//! this canonical form / hash / verdict".

mod canonicalization;
mod chain;
mod config;
mod doc_example;
mod hashing;
mod stamp;
mod standards;

use super::*;
use crate::request::RequestInfo;

/// A 32-byte test key.
pub(super) const KEY: &[u8] = b"meshguard-example-key-0123456789";
pub(super) const OTHER_KEY: &[u8] = b"another-key-of-32-bytes-00000000";

pub(super) fn policy(json: &str) -> AuditPolicy {
    AuditPolicy::from_json(json.as_bytes()).unwrap()
}

pub(super) fn request<'a>(method: &'a str, path: &'a str) -> RequestInfo<'a> {
    RequestInfo {
        path,
        method,
        host: "api.example.com",
    }
}
