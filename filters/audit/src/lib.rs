//! meshguard audit filter: a SHA-256 of the command each request executes,
//! bound to the caller's identity and the host time in a signed header toward
//! the upstream, and a tamper-evident record per request (Envoy log and,
//! optionally, an audit collector). All formats live in `meshguard_core::audit`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use meshguard_core::audit::{
    audit_id, decode_key, AuditPolicy, AuditStamp, Chain, CommandHasher, CommandRef, RecordFields,
};
use meshguard_core::canonical::sha256_hex;
use meshguard_core::config::ConfigError;
use meshguard_core::metrics::{tagged, AUDIT_HASH_FAILURES, AUDIT_RECORDS, AUDIT_REFUSED};
use meshguard_host::integrity::{FilterRoot, Guard, Quarantine, Root};
use meshguard_host::{self as host, Counter};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, MapType};

const FILTER: &str = "audit";
/// How often queued records are sent to the collector.
const FLUSH_PERIOD: Duration = Duration::from_millis(500);
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
    refused_hash: Counter,
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
            refused_hash: refused("hash_failed"),
        }
    }
}

/// One record waiting for the collector.
#[derive(Debug)]
struct Queued {
    line: String,
    attempts: u32,
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
    /// False after a failed delivery, until one succeeds (`fail_closed` gates on it).
    collector_healthy: Cell<bool>,
    queue: RefCell<VecDeque<Queued>>,
    metrics: Metrics,
    quarantine: Quarantine,
}

/// The audit filter's root state.
#[derive(Debug)]
struct Audit {
    shared: Rc<Shared>,
    /// The collector call in flight: its token and how many records it carries.
    in_flight: Option<(u32, usize)>,
}

impl FilterRoot for Audit {
    const NAME: &'static str = FILTER;
    type Compiled = (AuditPolicy, Vec<u8>);

    fn compile(bytes: &[u8]) -> Result<Self::Compiled, ConfigError> {
        compile(bytes)
    }

    fn start(context_id: u32, (policy, key): Self::Compiled, guard: &Guard) -> Self {
        for warning in policy.warnings() {
            log::warn!("meshguard audit: configuration warning: {warning}");
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
        log::info!(
            "meshguard audit: chain {chain_id} started: commands={} collector={} fail_closed={}",
            policy.command_count(),
            policy.collector().map_or("none", |c| c.cluster.as_str()),
            policy.fail_closed(),
        );
        Self {
            shared: Rc::new(Shared {
                fingerprint: guard.fingerprint().to_string(),
                quarantine: guard.quarantine(),
                chain: RefCell::new(Chain::new(chain_id.clone())),
                chain_id,
                next_request: Cell::new(0),
                collector_healthy: Cell::new(true),
                queue: RefCell::new(VecDeque::new()),
                metrics: Metrics::define(),
                policy,
                key,
            }),
            in_flight: None,
        }
    }

    fn tick_period(&self) -> Option<Duration> {
        self.shared.policy.collector().map(|_| FLUSH_PERIOD)
    }

    fn on_tick(&mut self) {
        if self.in_flight.is_none() {
            self.in_flight = send_batch(&self.shared);
        }
    }

    fn on_http_call_response(&mut self, token: u32, num_headers: usize, _body_size: usize) -> bool {
        match self.in_flight {
            Some((in_flight, count)) if in_flight == token => {
                self.in_flight = None;
                delivery_finished(&self.shared, count, num_headers);
                true
            }
            _ => false,
        }
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
    let at = format!("env {}", policy.key_env());
    let text = host::env_var(policy.key_env()).unwrap_or_default();
    let key = decode_key(&text).map_err(|e| {
        ConfigError::invalid(at, format!("{e} (set it in the WasmPlugin's vmConfig.env)"))
    })?;
    Ok((policy, key))
}

/// Sends up to `batch_size` queued records as NDJSON; returns the call in flight.
fn send_batch(shared: &Shared) -> Option<(u32, usize)> {
    let collector = shared.policy.collector()?;
    let queue = shared.queue.try_borrow().ok()?;
    let count = queue.len().min(collector.batch_size);
    // While the collector is down and nothing is queued, probe it with an
    // empty batch so that fail_closed can reopen.
    if count == 0 && shared.collector_healthy.get() {
        return None;
    }
    let mut body = String::new();
    for q in queue.iter().take(count) {
        body.push_str(&q.line);
        body.push('\n');
    }
    drop(queue);
    let headers = vec![
        (":method", "POST"),
        (":path", collector.path.as_str()),
        (":authority", collector.authority.as_str()),
        ("content-type", "application/x-ndjson"),
    ];
    let timeout = Duration::from_millis(u64::from(collector.timeout_ms));
    match hostcalls::dispatch_http_call(
        &collector.cluster,
        headers,
        Some(body.as_bytes()),
        vec![],
        timeout,
    ) {
        Ok(token) => Some((token, count)),
        Err(status) => {
            log::warn!(
                "meshguard audit: cannot call collector cluster {:?}: {status:?}",
                collector.cluster
            );
            delivery_failed(shared, count);
            None
        }
    }
}

fn delivery_finished(shared: &Shared, count: usize, num_headers: usize) {
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .unwrap_or_default();
    let ok = num_headers > 0 && status.first() == Some(&b'2') && status.len() == 3;
    if !ok {
        let status = String::from_utf8_lossy(&status).into_owned();
        log::warn!("meshguard audit: collector refused or did not answer (status {status:?}); records kept for retry");
        return delivery_failed(shared, count);
    }
    if !shared.collector_healthy.replace(true) {
        log::info!("meshguard audit: collector reachable again");
    }
    if let Ok(mut queue) = shared.queue.try_borrow_mut() {
        let delivered = count.min(queue.len());
        queue.drain(..delivered);
        shared.metrics.delivered.add(delivered as u64);
    }
}

fn delivery_failed(shared: &Shared, count: usize) {
    if shared.collector_healthy.replace(false) {
        log::warn!("meshguard audit: collector unavailable");
    }
    let max_retries = shared.policy.collector().map_or(0, |c| c.max_retries);
    let Ok(mut queue) = shared.queue.try_borrow_mut() else {
        return;
    };
    let mut kept = VecDeque::with_capacity(queue.len());
    for (i, mut q) in queue.drain(..).enumerate() {
        if i < count {
            q.attempts = q.attempts.saturating_add(1);
            if q.attempts > max_retries {
                shared.metrics.dropped.increment();
                continue;
            }
        }
        kept.push_back(q);
    }
    *queue = kept;
}

/// Per-request state once the request headers were seen.
#[derive(Debug)]
struct InFlight {
    id: String,
    start_ms: u64,
    peer: Option<String>,
    line: host::RequestLine,
    command: CommandRef,
    hasher: Option<CommandHasher>,
    hashed_bytes: usize,
    command_sha256: Option<[u8; 32]>,
    status: Option<u16>,
}

struct AuditHttp {
    shared: Option<Rc<Shared>>,
    request: Option<InFlight>,
}

impl Context for AuditHttp {}

impl HttpContext for AuditHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            log::error!("meshguard audit: no accepted configuration; refusing the request");
            return refuse(503, "meshguard_not_configured");
        };
        let policy = &shared.policy;
        // A spoofed audit header must never reach the upstream.
        for name in [
            policy.command_header(),
            policy.audit_header(),
            policy.id_header(),
        ] {
            if !host::set_request_header(name, None) {
                return refuse(500, "audit_header_strip_failed");
            }
        }
        let line = host::RequestLine::read();
        if let Some(action) = shared.quarantine.enforce(&line.path) {
            return action;
        }
        if policy.fail_closed() && !shared.collector_healthy.get() {
            shared.metrics.refused_collector.increment();
            return refuse(503, "audit_collector_unavailable");
        }
        let peer = host::peer_transport()
            .certificate_identity()
            .map(|id| id.to_string());
        let request = line.info();
        let command = policy.command_for(&request);
        let hasher = policy.hasher(command, &request);
        let seq = shared.next_request.get();
        shared.next_request.set(seq.wrapping_add(1));
        self.request = Some(InFlight {
            id: audit_id(&shared.chain_id, seq),
            start_ms: host::now_ms(),
            peer,
            hasher: Some(hasher),
            line,
            command,
            hashed_bytes: 0,
            command_sha256: None,
            status: None,
        });
        if policy.needs_body(command) && !end_of_stream {
            // Hold the headers: they carry the hash, which needs the body.
            return Action::Pause;
        }
        self.finish_hash(&shared)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(shared), Some(request)) = (self.shared.clone(), self.request.as_mut()) else {
            return Action::Continue;
        };
        if request.command_sha256.is_some() || !shared.policy.needs_body(request.command) {
            return Action::Continue;
        }
        // Envoy buffers the body while we pause; read only what is new, so the
        // body is never held twice in the VM.
        if body_size > request.hashed_bytes {
            let new = body_size - request.hashed_bytes;
            let chunk =
                hostcalls::get_buffer(BufferType::HttpRequestBody, request.hashed_bytes, new)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
            request.hashed_bytes = body_size;
            if let Some(hasher) = request.hasher.as_mut() {
                if let Err(e) = hasher.update_body(&chunk) {
                    return self.hash_failed(&shared, &e.to_string());
                }
            }
        }
        if !end_of_stream {
            return Action::Pause;
        }
        self.finish_hash(&shared)
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
    }
}

impl AuditHttp {
    /// Completes the hash, signs the stamp and adds the headers toward the upstream.
    fn finish_hash(&mut self, shared: &Shared) -> Action {
        let Some(request) = self.request.as_mut() else {
            return Action::Continue;
        };
        let Some(hasher) = request.hasher.take() else {
            return Action::Continue;
        };
        let hash = match hasher.finish() {
            Ok(hash) => hash,
            Err(e) => return self.hash_failed(shared, &e.to_string()),
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
                    self.hash_failed(shared, "the host refused the audit headers")
                }
            }
            Err(e) => self.hash_failed(shared, &e.to_string()),
        }
    }

    /// The request could not be audited: refused under `fail_closed`, else
    /// forwarded without audit headers (the upstream sees it unaudited).
    fn hash_failed(&mut self, shared: &Shared, reason: &str) -> Action {
        shared.metrics.hash_failures.increment();
        log::warn!("meshguard audit: command hash failed: {reason}");
        if let Some(request) = self.request.as_mut() {
            request.hasher = None;
        }
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
    let Ok(mut chain) = shared.chain.try_borrow_mut() else {
        shared.metrics.dropped.increment();
        return;
    };
    let record = match chain.seal(fields, &shared.key, policy.key_id()) {
        Ok(record) => record,
        Err(e) => {
            log::error!("meshguard audit: record for {} not sealed: {e}", request.id);
            shared.metrics.dropped.increment();
            return;
        }
    };
    drop(chain);
    shared.metrics.emitted.increment();
    let line = record.to_line();
    if policy.log_records() {
        log::info!("{line}");
    }
    if let Some(collector) = policy.collector() {
        let json = line
            .strip_prefix(meshguard_core::audit::RECORD_PREFIX)
            .unwrap_or(&line)
            .to_string();
        if let Ok(mut queue) = shared.queue.try_borrow_mut() {
            while queue.len() >= collector.max_queue {
                queue.pop_front();
                shared.metrics.dropped.increment();
            }
            queue.push_back(Queued {
                line: json,
                attempts: 0,
            });
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
