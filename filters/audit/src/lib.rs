//! meshguard audit filter: a SHA-256 of the command each request executes,
//! bound to the caller's identity and the host time in a signed header toward
//! the upstream, and a tamper-evident record per request (Envoy log and,
//! optionally, an audit collector). All formats live in `meshguard_core::audit`.

// Release wasm builds wrap silently on integer overflow, and a panic kills the
// VM: outside tests, every arithmetic operation is checked, saturating or
// explicitly wrapping (docs/fuzzing.md, "Arithmetic").
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use meshguard_core::audit::{
    audit_id, AuditPolicy, AuditStamp, Chain, CommandRef, Outbox, RecordFields, Refusal,
    RequestGate, Reservation, Step,
};
use meshguard_core::canonical::sha256_hex;
use meshguard_core::config::ConfigError;
use meshguard_core::logsafe;
use meshguard_core::metrics::{tagged, AUDIT_HASH_FAILURES, AUDIT_RECORDS, AUDIT_REFUSED};
use meshguard_host::integrity::{FilterRoot, Guard, Quarantine, Root};
use meshguard_host::{self as host, Counter};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

const FILTER: &str = "audit";
/// How often partial batches are sent (full ones go at once) and a failing
/// collector is retried.
const FLUSH_PERIOD: Duration = Duration::from_millis(200);
/// The decisions of other meshguard filters copied into each record.
const OTHER_FILTERS: [&str; 2] = ["identity", "masking"];

proxy_wasm::main! {{
    Root::<Audit>::register();
}}

#[derive(Debug)]
struct Metrics {
    emitted: Counter,
    delivered: Counter,
    dropped: Counter,
    hash_failures: Counter,
    refused_collector: Counter,
    refused_queue_full: Counter,
    refused_hash: Counter,
    refused_path: Counter,
}

impl Metrics {
    fn define() -> Self {
        let records = |result| Counter::define(&tagged(AUDIT_RECORDS, &[("result", result)]));
        let refused = |reason| Counter::define(&tagged(AUDIT_REFUSED, &[("reason", reason)]));
        Self {
            emitted: records("emitted"),
            delivered: records("delivered"),
            dropped: records("dropped"),
            hash_failures: Counter::define(AUDIT_HASH_FAILURES),
            refused_collector: refused("collector_unavailable"),
            refused_queue_full: refused("queue_full"),
            refused_hash: refused("hash_failed"),
            refused_path: refused("path"),
        }
    }

    fn count(&self, outcome: meshguard_core::audit::outbox::Outcome) {
        self.delivered.add(outcome.delivered as u64);
        self.dropped.add(outcome.dropped as u64);
        match outcome.health_changed {
            Some(true) => log::info!("meshguard audit: collector reachable again"),
            Some(false) => {
                log::warn!("meshguard audit: collector unavailable; records kept for retry")
            }
            None => {}
        }
    }
}

/// Everything a configured root context shares with its HTTP contexts.
#[derive(Debug)]
struct Shared {
    policy: AuditPolicy,
    key: Vec<u8>,
    fingerprint: String,
    /// This VM's chain id (also the prefix of every audit id).
    chain_id: String,
    chain: RefCell<Chain>,
    next_request: Cell<u64>,
    /// Records waiting for the collector (None without a collector).
    outbox: Option<RefCell<Outbox>>,
    /// This VM's queue for asking the root to flush now, and whether a request
    /// is already waiting in it.
    flush_queue: Option<u32>,
    flush_requested: Cell<bool>,
    metrics: Metrics,
    quarantine: Quarantine,
}

impl Shared {
    /// From an HTTP context: when a full batch waits, wake the root, which
    /// sends it (a callout started here would die with the request).
    fn request_flush(&self) {
        let Some(queue) = self.flush_queue else {
            return;
        };
        let wants = self
            .outbox
            .as_ref()
            .and_then(|o| o.try_borrow().ok())
            .is_some_and(|o| o.wants_flush());
        if wants
            && !self.flush_requested.replace(true)
            && hostcalls::enqueue_shared_queue(queue, Some(b"f")).is_err()
        {
            self.flush_requested.set(false);
        }
    }

    /// From the root: sends what should be sent.
    fn flush(&self, tick: bool) {
        let (Some(outbox), Some(collector)) = (&self.outbox, self.policy.collector()) else {
            return;
        };
        let Ok(mut outbox) = outbox.try_borrow_mut() else {
            return;
        };
        let timeout = Duration::from_millis(u64::from(collector.timeout_ms));
        let outcome = outbox.flush(host::now_ms(), tick, |body| {
            let headers = vec![
                (":method", "POST"),
                (":path", collector.path.as_str()),
                (":authority", collector.authority.as_str()),
                ("content-type", "application/x-ndjson"),
            ];
            match hostcalls::dispatch_http_call(
                &collector.cluster,
                headers,
                Some(body),
                vec![],
                timeout,
            ) {
                Ok(token) => Some(token),
                Err(status) => {
                    log::warn!(
                        "meshguard audit: cannot call collector cluster {}: {status:?}",
                        logsafe::quote(&collector.cluster)
                    );
                    None
                }
            }
        });
        self.metrics.count(outcome);
    }
}

/// The audit filter's root state.
#[derive(Debug)]
struct Audit {
    shared: Rc<Shared>,
}

impl FilterRoot for Audit {
    const NAME: &'static str = FILTER;
    type Compiled = (AuditPolicy, Vec<u8>);

    fn compile(bytes: &[u8]) -> Result<Self::Compiled, ConfigError> {
        compile(bytes)
    }

    fn start(context_id: u32, (policy, key): Self::Compiled, guard: &Guard) -> Self {
        for warning in policy.warnings() {
            log::warn!(
                "meshguard audit: configuration warning: {}",
                logsafe::escape(warning)
            );
        }
        // Unique per VM and load: VMs of one Envoy can start within the same
        // millisecond with the same root context id, so WASI randomness (std's
        // hash seed, from the host's `random_get`) is mixed in with the time.
        let entropy = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            context_id,
        );
        let now = host::now_ms();
        let chain_id =
            sha256_hex(format!("{now}/{context_id}/{entropy}/{}", guard.fingerprint()).as_bytes());
        let chain_id = chain_id.get(..16).unwrap_or(&chain_id).to_string();
        let outbox = policy.outbox_limits().map(|l| RefCell::new(Outbox::new(l)));
        // One queue per VM (queues are shared by every VM with the same vm_id).
        let flush_queue = outbox.as_ref().and_then(|_| {
            hostcalls::register_shared_queue(&format!("meshguard-audit-flush-{chain_id}")).ok()
        });
        log::info!(
            "meshguard audit: chain {chain_id} started: commands={} collector={} fail_closed={}",
            policy.command_count(),
            policy
                .collector()
                .map_or("none".into(), |c| logsafe::quote(&c.cluster)),
            policy.fail_closed(),
        );
        Self {
            shared: Rc::new(Shared {
                fingerprint: guard.fingerprint().to_string(),
                quarantine: guard.quarantine(),
                chain: RefCell::new(Chain::new(chain_id.clone())),
                chain_id,
                next_request: Cell::new(0),
                outbox,
                flush_queue,
                flush_requested: Cell::new(false),
                metrics: Metrics::define(),
                policy,
                key,
            }),
        }
    }

    fn tick_period(&self) -> Option<Duration> {
        self.shared.policy.collector().map(|_| FLUSH_PERIOD)
    }

    fn on_tick(&mut self) {
        // A wake-up that never arrived must not silence later ones.
        self.shared.flush_requested.set(false);
        self.shared.flush(true);
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if Some(queue_id) != self.shared.flush_queue {
            return;
        }
        while let Ok(Some(_)) = hostcalls::dequeue_shared_queue(queue_id) {}
        self.shared.flush_requested.set(false);
        self.shared.flush(false);
    }

    fn on_http_call_response(&mut self, token: u32, num_headers: usize, _body_size: usize) -> bool {
        let Some(outbox) = &self.shared.outbox else {
            return false;
        };
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .unwrap_or_default();
        let ok = num_headers > 0 && status.first() == Some(&b'2') && status.len() == 3;
        let Some(outcome) = outbox
            .try_borrow_mut()
            .ok()
            .and_then(|mut o| o.answered(host::now_ms(), token, ok))
        else {
            return false;
        };
        if !ok {
            log::warn!(
                "meshguard audit: collector refused or did not answer (status {})",
                logsafe::quote(&String::from_utf8_lossy(&status))
            );
        }
        self.shared.metrics.count(outcome);
        self.shared.flush(false);
        true
    }

    fn http_context(state: Option<&Self>) -> Box<dyn HttpContext> {
        Box::new(AuditHttp {
            shared: state.map(|s| Rc::clone(&s.shared)),
            request: None,
        })
    }
}

/// The policy and its HMAC key, read from the env var the policy names.
fn compile(bytes: &[u8]) -> Result<(AuditPolicy, Vec<u8>), ConfigError> {
    let policy = AuditPolicy::from_json(bytes)?;
    let key = policy.hmac_key_from_env(host::env_var)?;
    Ok((policy, key))
}

/// Per-request state once the request headers were seen.
#[derive(Debug)]
struct InFlight {
    id: String,
    start_ms: u64,
    peer: Option<String>,
    line: host::RequestLine,
    command: CommandRef,
    gate: RequestGate,
    command_sha256: Option<[u8; 32]>,
    status: Option<u16>,
    /// Room held in the outbox for this request's record (`fail_closed`).
    reservation: Option<Reservation>,
}

struct AuditHttp {
    shared: Option<Rc<Shared>>,
    request: Option<InFlight>,
}

impl Context for AuditHttp {}

impl Drop for AuditHttp {
    /// A stream that ends without its log callback leaves no record: give its
    /// outbox room back (else the outbox would shrink for good) and count it.
    fn drop(&mut self) {
        let (Some(shared), Some(request)) = (self.shared.as_ref(), self.request.take()) else {
            return;
        };
        shared.metrics.dropped.increment();
        log::warn!(
            "meshguard audit: request {} ended without a record",
            logsafe::quote(&request.id)
        );
        if let (Some(r), Some(outbox)) = (request.reservation, &shared.outbox) {
            if let Ok(mut o) = outbox.try_borrow_mut() {
                o.release(r);
            }
        }
    }
}

impl HttpContext for AuditHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            log::error!("meshguard audit: no accepted configuration; refusing the request");
            return refuse(503, "meshguard_not_configured");
        };
        let policy = &shared.policy;
        let head = host::RequestHead::read();
        // A spoofed audit header must never reach the upstream: every copy is
        // removed (one host call per name present, or per name when the
        // header map could not be read).
        for name in [
            policy.command_header(),
            policy.audit_header(),
            policy.id_header(),
        ] {
            if head.contains(name) != Some(false) && !host::set_request_header(name, None) {
                return refuse(500, "audit_header_strip_failed");
            }
        }
        // One canonical path for the command, the record and the upstream.
        let mut line = host::RequestLine::from_head(&head);
        match line.canonicalize(policy.path_options()) {
            Ok(true) if !line.forward_path() => return refuse(500, "path_rewrite_failed"),
            Ok(_) => {}
            Err(rejection) if policy.fail_closed() => {
                shared.metrics.refused_path.increment();
                return refuse(400, rejection.code());
            }
            // Audited as received: the record and hash use the raw path.
            Err(_) => {}
        }
        if let Some(action) = shared
            .quarantine
            .enforce(&line.info(), policy.path_options())
        {
            return action;
        }
        // Under fail_closed a request starts only with room for its record.
        let reservation = match shared.outbox.as_ref().map(|o| o.try_borrow_mut()) {
            Some(Ok(mut outbox)) => outbox.reserve(),
            _ => Ok(None),
        };
        let reservation = match reservation {
            Ok(r) => r,
            Err(refusal) => {
                match refusal {
                    Refusal::CollectorUnavailable => shared.metrics.refused_collector.increment(),
                    Refusal::QueueFull => shared.metrics.refused_queue_full.increment(),
                }
                return refuse(503, refusal.code());
            }
        };
        let peer = host::peer_transport()
            .certificate_identity()
            .map(|id| id.to_string());
        let request = line.info();
        let command = policy.command_for(&request);
        let (gate, step) = RequestGate::start(
            policy.hasher(command, &request),
            policy.needs_body(command),
            end_of_stream,
        );
        let seq = shared.next_request.get();
        shared.next_request.set(seq.wrapping_add(1));
        self.request = Some(InFlight {
            id: audit_id(&shared.chain_id, seq),
            start_ms: host::now_ms(),
            peer,
            line,
            command,
            gate,
            command_sha256: None,
            status: None,
            reservation,
        });
        self.apply(&shared, step)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(shared), Some(request)) = (self.shared.clone(), self.request.as_mut()) else {
            return Action::Continue;
        };
        // Envoy buffers the body while the headers are held; only the new bytes
        // are read, so the body is never held twice in the VM.
        let step = request.gate.body(body_size, end_of_stream, |start, len| {
            host::body(BufferType::HttpRequestBody, start, len)
        });
        self.apply(&shared, step)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        let (Some(shared), Some(request)) = (self.shared.clone(), self.request.as_mut()) else {
            return Action::Continue;
        };
        // Trailers end a body that never had end_of_stream: finish the hash
        // now, and stamp the headers, which are still held.
        let step = request.gate.trailers();
        self.apply(&shared, step)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let (Some(shared), Some(request)) = (self.shared.as_ref(), self.request.as_mut()) else {
            return Action::Continue;
        };
        request.status = host::response_header(":status").and_then(|s| s.parse().ok());
        let policy = &shared.policy;
        // The caller gets the id and hash (an upstream's own copies are replaced).
        host::set_response_header(policy.id_header(), Some(&request.id));
        let hash = request
            .command_sha256
            .map(|h| meshguard_core::canonical::hex(&h));
        host::set_response_header(policy.command_header(), hash.as_deref());
        Action::Continue
    }

    fn on_log(&mut self) {
        let (Some(shared), Some(request)) = (self.shared.as_ref(), self.request.take()) else {
            return;
        };
        write_record(shared, request);
        shared.request_flush();
    }
}

impl AuditHttp {
    /// Translates the gate's step into the host action.
    fn apply(&mut self, shared: &Shared, step: Step) -> Action {
        match step {
            Step::Hold => Action::Pause,
            Step::Pass => Action::Continue,
            Step::Stamp(hash) => self.stamp(shared, hash),
            Step::Failed(e) => self.hash_failed(shared, &e.to_string()),
        }
    }

    /// Signs the stamp and adds the headers toward the upstream.
    fn stamp(&mut self, shared: &Shared, hash: [u8; 32]) -> Action {
        let Some(request) = self.request.as_mut() else {
            return Action::Continue;
        };
        request.command_sha256 = Some(hash);
        let policy = &shared.policy;
        let stamp = AuditStamp {
            key_id: policy.key_id().to_string(),
            id: request.id.clone(),
            ts_ms: request.start_ms,
            peer: request.peer.clone(),
            config_fingerprint: Some(shared.fingerprint.clone()),
            command_sha256: hash,
        };
        match stamp.sign(&shared.key) {
            Ok(header) => {
                let hex = meshguard_core::canonical::hex(&hash);
                let all_set = host::set_request_header(policy.command_header(), Some(&hex))
                    & host::set_request_header(policy.audit_header(), Some(&header))
                    & host::set_request_header(policy.id_header(), Some(&request.id));
                if all_set {
                    Action::Continue
                } else {
                    request.command_sha256 = None;
                    self.hash_failed(shared, "the host refused the audit headers")
                }
            }
            Err(e) => {
                request.command_sha256 = None;
                self.hash_failed(shared, &e.to_string())
            }
        }
    }

    /// The request could not be audited: refused under `fail_closed`, else
    /// forwarded without audit headers (the upstream sees it unaudited).
    fn hash_failed(&mut self, shared: &Shared, reason: &str) -> Action {
        shared.metrics.hash_failures.increment();
        log::warn!(
            "meshguard audit: command hash failed: {}",
            logsafe::escape(reason)
        );
        if shared.policy.fail_closed() {
            shared.metrics.refused_hash.increment();
            return refuse(400, "audit_hash_failed");
        }
        Action::Continue
    }
}

fn write_record(shared: &Shared, request: InFlight) {
    let request_info = request.line.info();
    let policy = &shared.policy;
    let mut fields = RecordFields::new(
        request.id.clone(),
        request.start_ms,
        &request_info,
        policy.command_name(request.command),
        request.command_sha256.unwrap_or([0; 32]),
    );
    fields.peer = request.peer;
    fields.status = request.status;
    fields.duration_ms = Some(host::now_ms().saturating_sub(request.start_ms));
    fields.config_fingerprint = Some(shared.fingerprint.clone());
    for filter in OTHER_FILTERS {
        if let Some(decision) = host::read_decision(filter) {
            fields.decisions.insert(filter.into(), decision.into());
        }
    }
    if request.command_sha256.is_none() {
        fields.decisions.insert(FILTER.into(), "hash_failed".into());
    }
    let fields = fields.cap(policy.max_record_path_bytes());
    let sealed = match shared.chain.try_borrow_mut() {
        Ok(mut chain) => chain
            .seal(fields, &shared.key, policy.key_id())
            .map_err(|e| e.to_string()),
        Err(_) => Err("the chain is busy".into()),
    };
    let record = match sealed {
        Ok(record) => record,
        Err(e) => {
            log::error!(
                "meshguard audit: record for {} not sealed: {}",
                logsafe::quote(&request.id),
                logsafe::escape(&e)
            );
            shared.metrics.dropped.increment();
            if let (Some(r), Some(outbox)) = (request.reservation, &shared.outbox) {
                if let Ok(mut o) = outbox.try_borrow_mut() {
                    o.release(r);
                }
            }
            return;
        }
    };
    shared.metrics.emitted.increment();
    let line = record.to_line();
    if policy.log_records() {
        // Canonical JSON escapes every control character: one line, and the
        // prefix starts it (request text inside is a JSON string).
        log::info!("{line}");
    }
    if let Some(outbox) = &shared.outbox {
        let json = line
            .strip_prefix(meshguard_core::audit::RECORD_PREFIX)
            .unwrap_or(&line)
            .to_string();
        match outbox.try_borrow_mut() {
            Ok(mut o) => {
                let outcome = o.push(json, request.reservation);
                shared.metrics.count(outcome);
            }
            Err(_) => shared.metrics.dropped.increment(),
        }
    }
}

fn refuse(status: u16, reason: &str) -> Action {
    let body = format!(r#"{{"error":"{reason}"}}"#);
    if !host::send_json_reply(status, Some(reason), body.as_bytes()) {
        host::reset_request();
    }
    Action::Pause
}
