//! Command-hash auditing: which command a request executes, a signed header
//! telling the upstream what was audited, and tamper-evident records.
//!
//! Pure engine, no proxy-wasm: time, ids and keys are passed in by the adapter.
//! The pieces, in request order:
//!
//! 1. [`AuditPolicy::from_json`] compiles the plugin config once;
//! 2. per request, [`AuditPolicy::command_for`] picks the command and
//!    [`AuditPolicy::hasher`] hashes its parts ([`CommandHasher`] takes the body
//!    chunk by chunk);
//! 3. [`AuditStamp::sign`] writes the signed header sent upstream;
//! 4. at the end of the request, [`Chain::seal`] turns [`RecordFields`] into the
//!    next [`Record`] of the VM's chain, written with [`Record::to_line`];
//! 5. offline, [`verify_records`] checks a log or a collector's files and
//!    [`verify_header`] checks a header.
//!
//! Every format is specified in `docs/audit.md`.

pub mod canon;
pub mod config;
pub mod gate;
pub mod hash;
pub mod httpsig;
pub mod json;
pub mod keys;
pub mod otlp;
pub mod outbox;
pub mod policy;
pub mod record;
pub mod stamp;
pub mod verify;

pub use config::{AuditConfig, CollectorFormat, UpstreamSignature};
pub use gate::{RequestGate, Step};
pub use hash::{CommandHasher, HashError, Part};
pub use keys::{
    decode_key, parse_private_key, parse_public_key, Algorithm, AnyKid, KeyError, KeyLookup,
    Keyring, MacKey, Seal, SealKey, VerifyKey,
};
pub use outbox::{Outbox, OutboxLimits, Refusal, Reservation};
pub use policy::{AuditPolicy, Collector, CommandRef};
pub use record::{Chain, Record, RecordError, RecordFields, RECORD_PREFIX, TRUNCATED};
pub use stamp::{
    audit_id, sanitize_token, verify_header, verify_header_with_keys, AuditStamp, StampError,
    VerifyError,
};
pub use verify::{
    verify_records, verify_records_in, BreakKind, ChainBreak, ChainReport, LineProblem, Order,
    VerifyReport,
};

#[cfg(test)]
mod tests;
