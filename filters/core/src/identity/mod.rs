//! Peer identity and mTLS policy: who may call, over what transport, on which routes.

pub mod config;
pub mod decision;
pub mod facts;
mod index;
pub mod policy;
pub mod response;
pub mod xfcc;

pub use config::{DetailLevel, Mode};
pub use decision::{DecidedBy, Decision, Reason, Verdict};
pub use facts::{IdentitySource, Peer, RequestInfo, TlsVersion, Transport, UnusableIdentity};
pub use policy::{resolve_peer, IdentityPolicy, Judgement};

#[cfg(test)]
mod tests;
