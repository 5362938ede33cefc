//! The audit section: a SHA-256 of the command each request executes, bound
//! to the caller's identity and the host time in a signed header toward the
//! upstream, and a tamper-evident record per request (Envoy's log and,
//! optionally, an audit collector). All formats live in `meshguard_core::audit`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use meshguard_core::audit::httpsig::{
    self, SignedRequest, CONTENT_DIGEST, SIGNATURE, SIGNATURE_INPUT,
};
use meshguard_core::audit::outbox::Outcome;
use meshguard_core::audit::{
    audit_id, AuditPolicy, AuditStamp, Chain, CollectorFormat, CommandRef, Outbox, RecordFields,
    Refusal, RequestGate, Reservation, Step,
};
use meshguard_core::canonical::{hex, sha256_hex};
use meshguard_core::logsafe;
use meshguard_core::metrics::{
    tagged, AUDIT_COLLECTOR_FAILURES, AUDIT_HASH_FAILURES, AUDIT_RECORDS, AUDIT_REFUSED,
};
use meshguard_core::plugin::AuditSection;

use crate::host::{CalloutFailure, Counter, Map, Metrics, PluginHost, StreamHost};
use crate::reply::{json_reply, Flow};
use crate::sync::Lock;
use crate::view::View;

/// How often partial batches are sent (full ones go at once) and a failing
/// collector is retried.
pub const FLUSH_PERIOD: Duration = Duration::from_millis(200);
/// The decisions of the other sections copied into each record.
const OTHER_SECTIONS: [&str; 2] = ["identity", "masking"];

#[derive(Debug)]
struct AuditMetrics {
    emitted: Counter,
    delivered: Counter,
    dropped: Counter,
    hash_failures: Counter,
    refused_collector: Counter,
    refused_queue_full: Counter,
    refused_hash: Counter,
    refused_path: Counter,
    /// `[dispatch_failed, no_answer, bad_status]` (see [`CalloutFailure`]).
    collector_failures: [Counter; 3],
}

const COLLECTOR_FAILURES: [CalloutFailure; 3] = [
    CalloutFailure::DispatchFailed,
    CalloutFailure::NoAnswer,
    CalloutFailure::BadStatus,
];

impl AuditMetrics {
    fn collector_failed<M: Metrics + ?Sized>(&self, host: &M, failure: CalloutFailure) {
        let slot = COLLECTOR_FAILURES.iter().position(|f| *f == failure);
        if let Some(counter) = slot.and_then(|i| self.collector_failures.get(i)) {
            host.add(*counter, 1);
        }
    }

    fn count<M: Metrics + ?Sized>(&self, host: &M, outcome: Outcome) {
        host.add(self.delivered, outcome.delivered as u64);
        host.add(self.dropped, outcome.dropped as u64);
        match outcome.health_changed {
            Some(true) => log::info!("meshguard audit: collector reachable again"),
            Some(false) => {
                log::warn!("meshguard audit: collector unavailable; records kept for retry")
            }
            None => {}
        }
    }
}

/// The section's per-VM state (natively: per plugin config, shared by every
/// worker): its chain, outbox and counters.
#[derive(Debug)]
pub struct Audit {
    fingerprint: String,
    /// This VM's chain id (also the prefix of every audit id).
    chain_id: String,
    chain: Lock<Chain>,
    next_request: AtomicU64,
    /// Records waiting for the collector (None without a collector).
    outbox: Option<Lock<Outbox>>,
    /// This VM's wakeup for asking the root to flush now, and whether a
    /// request is already waiting on it.
    wakeup: Option<u32>,
    flush_requested: AtomicBool,
    metrics: AuditMetrics,
}

impl Audit {
    pub fn define<H: PluginHost>(
        host: &H,
        section: &AuditSection,
        fingerprint: &str,
        context_id: u32,
    ) -> Self {
        let policy = &section.policy;
        for warning in policy.warnings() {
            log::warn!(
                "meshguard audit: configuration warning: {}",
                logsafe::defang(warning)
            );
        }
        // Unique per VM and load: VMs of one Envoy can start within the same
        // millisecond with the same root context id, so the host's randomness
        // (std's hash seed, from WASI `random_get`) is mixed in with the time.
        let entropy = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            context_id,
        );
        let now = host.now_ms();
        let chain_id = sha256_hex(format!("{now}/{context_id}/{entropy}/{fingerprint}").as_bytes());
        let chain_id = chain_id.get(..16).unwrap_or(&chain_id).to_string();
        let outbox = policy
            .outbox_limits()
            .zip(policy.outbox_framing())
            .map(|(limits, framing)| Lock::new(Outbox::with_framing(limits, framing)));
        let wakeup = outbox
            .as_ref()
            .and_then(|_| host.register_wakeup(&format!("meshguard-audit-flush-{chain_id}")));
        log::info!(
            "meshguard audit: chain {chain_id} started: commands={} collector={} fail_closed={}",
            policy.command_count(),
            policy
                .collector()
                .map_or("none".into(), |c| logsafe::quote(&c.cluster)),
            policy.fail_closed(),
        );
        let records = |result| host.define_counter(&tagged(AUDIT_RECORDS, &[("result", result)]));
        let refused = |reason| host.define_counter(&tagged(AUDIT_REFUSED, &[("reason", reason)]));
        Self {
            fingerprint: fingerprint.to_owned(),
            chain: Lock::new(Chain::new(chain_id.clone())),
            chain_id,
            next_request: AtomicU64::new(0),
            outbox,
            wakeup,
            flush_requested: AtomicBool::new(false),
            metrics: AuditMetrics {
                emitted: records("emitted"),
                delivered: records("delivered"),
                dropped: records("dropped"),
                hash_failures: host.define_counter(AUDIT_HASH_FAILURES),
                refused_collector: refused("collector_unavailable"),
                refused_queue_full: refused("queue_full"),
                refused_hash: refused("hash_failed"),
                refused_path: refused("path"),
                collector_failures: COLLECTOR_FAILURES.map(|f| {
                    host.define_counter(&tagged(
                        AUDIT_COLLECTOR_FAILURES,
                        &[("reason", f.as_str())],
                    ))
                }),
            },
        }
    }

    /// The timer this section needs (partial batches, retries).
    pub fn tick_period(policy: &AuditPolicy) -> Option<Duration> {
        policy.collector().map(|_| FLUSH_PERIOD)
    }

    /// The root's timer.
    pub fn on_tick<H: PluginHost>(&self, host: &H, policy: &AuditPolicy) {
        // A wake-up that never arrived must not silence later ones.
        self.flush_requested.store(false, Ordering::Relaxed);
        self.flush(host, policy, true);
    }

    /// A stream woke the root; false when the wakeup is not this section's.
    pub fn on_wakeup<H: PluginHost>(&self, host: &H, policy: &AuditPolicy, wakeup: u32) -> bool {
        if Some(wakeup) != self.wakeup {
            return false;
        }
        self.flush_requested.store(false, Ordering::Relaxed);
        self.flush(host, policy, false);
        true
    }

    /// The config retired: sends every record still waiting now. True when
    /// nothing is left to deliver.
    pub fn retire<H: PluginHost>(&self, host: &H, policy: &AuditPolicy) -> bool {
        self.flush(host, policy, true);
        self.drained()
    }

    /// Nothing waiting or in flight.
    pub fn drained(&self) -> bool {
        self.outbox
            .as_ref()
            .is_none_or(|o| o.with(|o| o.is_empty()).unwrap_or(false))
    }

    /// The retired config's grace ran out: what is left is dropped, counted
    /// and logged.
    pub fn abandon<H: PluginHost>(&self, host: &H) {
        let Some(dropped) = self.outbox.as_ref().and_then(|o| o.with(Outbox::abandon)) else {
            return;
        };
        if dropped > 0 {
            host.add(self.metrics.dropped, dropped as u64);
            log::error!(
                "meshguard audit: chain {}: {dropped} records not delivered before the retired config's grace ran out; dropped",
                self.chain_id
            );
        }
    }

    /// The host ends this config at once: the records still waiting, for a
    /// successor of the same plugin to deliver ([`Audit::adopt`]); records
    /// in flight are dropped (counted): their delivery ends with the config.
    pub fn hand_over<H: PluginHost>(&self, host: &H) -> Vec<String> {
        let Some((lines, dropped)) = self.outbox.as_ref().and_then(|o| o.with(Outbox::hand_over))
        else {
            return Vec::new();
        };
        if dropped > 0 {
            host.add(self.metrics.dropped, dropped as u64);
            log::error!(
                "meshguard audit: chain {}: {dropped} records in flight when the config ended; dropped",
                self.chain_id
            );
        }
        lines
    }

    /// Takes over the records a retired config of the same plugin could not
    /// deliver (they keep their own chain); true when this config has a
    /// collector to deliver them to. A full outbox drops the oldest, counted.
    pub fn adopt<H: PluginHost>(&self, host: &H, lines: Vec<String>) -> bool {
        let Some(outbox) = &self.outbox else {
            return false;
        };
        for line in lines {
            match outbox.with(|o| o.push(line, None)) {
                Some(outcome) => self.metrics.count(host, outcome),
                None => host.add(self.metrics.dropped, 1),
            }
        }
        true
    }

    /// From a stream: when a full batch waits, wake the root, which sends it.
    fn request_flush<H: StreamHost>(&self, host: &mut H) {
        let Some(wakeup) = self.wakeup else {
            return;
        };
        let wants = self
            .outbox
            .as_ref()
            .and_then(|o| o.with(|o| o.wants_flush()))
            .unwrap_or(false);
        if wants && !self.flush_requested.swap(true, Ordering::Relaxed) && !host.wake(wakeup) {
            self.flush_requested.store(false, Ordering::Relaxed);
        }
    }

    /// From the root: sends what should be sent.
    fn flush<H: PluginHost>(&self, host: &H, policy: &AuditPolicy, tick: bool) {
        let (Some(outbox), Some(collector)) = (&self.outbox, policy.collector()) else {
            return;
        };
        let timeout = Duration::from_millis(u64::from(collector.timeout_ms));
        let outcome = outbox.with(|outbox| {
            outbox.flush(host.now_ms(), tick, |body| {
                let content_type = match collector.format {
                    CollectorFormat::Ndjson => "application/x-ndjson",
                    CollectorFormat::OtlpJson => "application/json",
                };
                let headers = [
                    (":method", "POST"),
                    (":path", collector.path.as_str()),
                    (":authority", collector.authority.as_str()),
                    ("content-type", content_type),
                ];
                match host.dispatch(&collector.cluster, &headers, Some(body), timeout) {
                    Ok(token) => Some(token),
                    Err(status) => {
                        self.metrics
                            .collector_failed(host, CalloutFailure::DispatchFailed);
                        log::warn!(
                            "meshguard audit: cannot call collector cluster {}: {status}",
                            logsafe::quote(&collector.cluster)
                        );
                        None
                    }
                }
            })
        });
        if let Some(outcome) = outcome {
            self.metrics.count(host, outcome);
        }
    }

    /// The collector answered (or not: a timeout, a reset, a stall
    /// mid-answer all arrive here without headers); false when the callout
    /// was not this section's.
    pub fn on_callout_response<H: PluginHost>(
        &self,
        host: &H,
        policy: &AuditPolicy,
        token: u32,
        num_headers: usize,
    ) -> bool {
        let Some(outbox) = &self.outbox else {
            return false;
        };
        let status = if num_headers == 0 {
            None
        } else {
            host.callout_status()
        };
        let ok = status
            .as_deref()
            .is_some_and(|s| s.len() == 3 && s.starts_with('2'));
        let Some(outcome) = outbox
            .with(|o| o.answered(host.now_ms(), token, ok))
            .flatten()
        else {
            return false;
        };
        if !ok {
            let failure = match status {
                None => CalloutFailure::NoAnswer,
                Some(_) => CalloutFailure::BadStatus,
            };
            self.metrics.collector_failed(host, failure);
            log::warn!(
                "meshguard audit: collector refused or did not answer (status {})",
                logsafe::quote(status.as_deref().unwrap_or("none"))
            );
        }
        self.metrics.count(host, outcome);
        self.flush(host, policy, false);
        true
    }
}

/// Per-request state once the request headers were seen.
#[derive(Debug)]
pub struct InFlight {
    id: String,
    start_ms: u64,
    peer: Option<String>,
    method: String,
    target: String,
    authority: String,
    command: CommandRef,
    gate: RequestGate,
    command_sha256: Option<[u8; 32]>,
    status: Option<u16>,
    /// Room held in the outbox for this request's record (`fail_closed`).
    reservation: Option<Reservation>,
    /// The decision an earlier plugin's identity section published with the
    /// request view.
    published_identity: Option<String>,
    /// What remains of the caller's `Signature-Input` and `Signature` once
    /// the members under meshguard's label are removed (RFC 9421 signing).
    client_members: [Option<String>; 2],
}

impl InFlight {
    /// At the request headers: strips spoofed audit headers, refuses what
    /// cannot be audited under `fail_closed`, and starts the command hash on
    /// the view every section judged (masking's rewrites included).
    pub fn start<H: StreamHost>(
        host: &mut H,
        section: &AuditSection,
        audit: &Audit,
        view: &mut View,
        end_of_stream: bool,
    ) -> Result<(Self, Flow), Flow> {
        let policy = &section.policy;
        // A spoofed audit header must never reach the upstream: every copy
        // is removed (one host call per name present).
        for name in [
            policy.command_header(),
            policy.audit_header(),
            policy.id_header(),
        ] {
            if view.has_header(name) && !host.set_header(Map::RequestHeaders, name, None) {
                return Err(refuse(host, 500, "audit_header_strip_failed"));
            }
        }
        // A caller's members under meshguard's label never reach the
        // upstream, whatever happens next; its other members are kept.
        let mut client_members = [None, None];
        if policy.upstream_signature().rfc9421() {
            for (slot, name) in client_members.iter_mut().zip([SIGNATURE_INPUT, SIGNATURE]) {
                let Some(value) = view.header(name) else {
                    continue;
                };
                *slot = httpsig::without_member(&value, policy.signature_label());
                if !host.set_header(Map::RequestHeaders, name, slot.as_deref()) {
                    return Err(refuse(host, 500, "audit_header_strip_failed"));
                }
            }
        }
        if view.info().is_err() && policy.fail_closed() {
            host.add(audit.metrics.refused_path, 1);
            let code = view.info().err().map_or("invalid_path", |r| r.code());
            return Err(refuse(host, 400, code));
        }
        // Under fail_closed a request starts only with room for its record.
        let reservation = match audit.outbox.as_ref().map(|o| o.with(Outbox::reserve)) {
            Some(Some(reserved)) => reserved,
            _ => Ok(None),
        };
        let reservation = match reservation {
            Ok(r) => r,
            Err(refusal) => {
                let counter = match refusal {
                    Refusal::CollectorUnavailable => audit.metrics.refused_collector,
                    Refusal::QueueFull => audit.metrics.refused_queue_full,
                };
                host.add(counter, 1);
                return Err(refuse(host, 503, refusal.code()));
            }
        };
        let peer = view
            .peer(host, None)
            .identity
            .as_ref()
            .map(|id| id.to_string());
        // Audited as received when the request cannot be read one way (and
        // fail_closed is off): the record and hash use the raw target.
        let request = view.info().unwrap_or_else(|_| view.raw_info());
        let command = policy.command_for(&request);
        let (gate, step) = RequestGate::start(
            policy.hasher(command, &request),
            policy.needs_body(command),
            end_of_stream,
        );
        let seq = audit.next_request.fetch_add(1, Ordering::Relaxed);
        let mut flight = Self {
            id: audit_id(&audit.chain_id, seq),
            start_ms: host.now_ms(),
            peer,
            method: request.method.to_owned(),
            target: request.path.to_owned(),
            authority: request.host.to_owned(),
            command,
            gate,
            command_sha256: None,
            status: None,
            reservation,
            published_identity: view.published_identity().map(str::to_owned),
            client_members,
        };
        let flow = flight.apply(host, section, audit, step);
        Ok((flight, flow))
    }

    /// A body callback: the host holds `buffered` bytes (everything since
    /// the headers, while they are held); only the bytes not hashed yet are
    /// read, so the body is never held twice in the VM.
    pub fn body<H: StreamHost>(
        &mut self,
        host: &mut H,
        section: &AuditSection,
        audit: &Audit,
        buffered: usize,
        end_of_stream: bool,
    ) -> Flow {
        let step = {
            let host = &*host;
            self.gate.body(buffered, end_of_stream, |start, len| {
                host.body(crate::host::Direction::Request, start, len)
            })
        };
        self.apply(host, section, audit, step)
    }

    /// Trailers end a body that never had `end_of_stream`: what the host
    /// holds is hashed, then the headers, still held, are stamped. A caller's
    /// trailers named like the audit headers never reach the upstream beside
    /// the real headers.
    pub fn trailers<H: StreamHost>(
        &mut self,
        host: &mut H,
        section: &AuditSection,
        audit: &Audit,
        buffered: usize,
    ) -> Flow {
        let policy = &section.policy;
        let trailers = host.headers(Map::RequestTrailers).unwrap_or_default();
        for name in [
            policy.command_header(),
            policy.audit_header(),
            policy.id_header(),
        ] {
            let present = trailers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
            if present && !host.set_header(Map::RequestTrailers, name, None) {
                return refuse(host, 500, "audit_header_strip_failed");
            }
        }
        if self.gate.is_holding() && buffered > 0 {
            let step = {
                let host = &*host;
                self.gate.body(buffered, false, |start, len| {
                    host.body(crate::host::Direction::Request, start, len)
                })
            };
            if step != Step::Hold {
                return self.apply(host, section, audit, step);
            }
        }
        let step = self.gate.trailers();
        self.apply(host, section, audit, step)
    }

    /// The caller gets the id and hash (an upstream's own copies are replaced).
    pub fn response_headers<H: StreamHost>(&mut self, host: &mut H, section: &AuditSection) {
        self.status = host
            .header(Map::ResponseHeaders, ":status")
            .and_then(|s| s.parse().ok());
        let policy = &section.policy;
        host.set_header(Map::ResponseHeaders, policy.id_header(), Some(&self.id));
        let hash = self.command_sha256.map(|h| hex(&h));
        host.set_header(
            Map::ResponseHeaders,
            policy.command_header(),
            hash.as_deref(),
        );
    }

    /// Translates the gate's step into the host action.
    fn apply<H: StreamHost>(
        &mut self,
        host: &mut H,
        section: &AuditSection,
        audit: &Audit,
        step: Step,
    ) -> Flow {
        match step {
            Step::Hold => Flow::Stop,
            Step::Pass => Flow::Continue,
            Step::Stamp(hash) => self.stamp(host, section, audit, hash),
            Step::Failed(e) => self.hash_failed(host, section, audit, &e.to_string()),
        }
    }

    /// Signs the request and adds the headers toward the upstream: the
    /// command hash and audit id, then the v1 header and/or the RFC 9421
    /// members (with `content-digest` for a command that read the body).
    fn stamp<H: StreamHost>(
        &mut self,
        host: &mut H,
        section: &AuditSection,
        audit: &Audit,
        hash: [u8; 32],
    ) -> Flow {
        self.command_sha256 = Some(hash);
        let policy = &section.policy;
        let hash_hex = hex(&hash);
        // Set as they are made (no list of copies: this runs on every request).
        let mut all_set =
            host.set_header(
                Map::RequestHeaders,
                policy.command_header(),
                Some(&hash_hex),
            ) & host.set_header(Map::RequestHeaders, policy.id_header(), Some(&self.id));
        if policy.upstream_signature().v1() {
            let stamp = AuditStamp {
                key_id: policy.key_id().to_string(),
                id: self.id.clone(),
                ts_ms: self.start_ms,
                peer: self.peer.clone(),
                config_fingerprint: Some(audit.fingerprint.clone()),
                command_sha256: hash,
            };
            let signed = match section.key.mac_key() {
                Some(key) => stamp.sign_with(key).map_err(|e| e.to_string()),
                None => Err("the v1 header needs an HMAC key".to_owned()),
            };
            match signed {
                Ok(header) => {
                    all_set &=
                        host.set_header(Map::RequestHeaders, policy.audit_header(), Some(&header));
                }
                Err(e) => {
                    self.command_sha256 = None;
                    return self.hash_failed(host, section, audit, &e);
                }
            }
        }
        if policy.upstream_signature().rfc9421() {
            let digest = self
                .gate
                .body_sha256()
                .filter(|_| policy.needs_body(self.command))
                .map(|sha| httpsig::content_digest(&sha));
            let created = self.start_ms / 1000;
            let members = httpsig::sign(
                &SignedRequest {
                    method: &self.method,
                    authority: &self.authority,
                    target: &self.target,
                    command_header: (policy.command_header(), &hash_hex),
                    id_header: (policy.id_header(), &self.id),
                    content_digest: digest.as_deref(),
                },
                &httpsig::Params {
                    created,
                    expires: policy
                        .signature_expires_seconds()
                        .map(|s| created.saturating_add(s)),
                    keyid: policy.key_id(),
                    tag: policy.signature_tag(),
                },
                policy.signature_label(),
                &section.key,
            );
            if let Some(digest) = &digest {
                all_set &= host.set_header(Map::RequestHeaders, CONTENT_DIGEST, Some(digest));
            }
            let [input, signature] = &self.client_members;
            for (name, client, ours) in [
                (SIGNATURE_INPUT, input, members.input),
                (SIGNATURE, signature, members.signature),
            ] {
                let value = match client {
                    Some(client) => format!("{client}, {ours}"),
                    None => ours,
                };
                all_set &= host.set_header(Map::RequestHeaders, name, Some(&value));
            }
        }
        if all_set {
            Flow::Continue
        } else {
            self.command_sha256 = None;
            self.hash_failed(host, section, audit, "the host refused the audit headers")
        }
    }

    /// The request could not be audited: refused under `fail_closed`, else
    /// forwarded without audit headers (the upstream sees it unaudited).
    fn hash_failed<H: StreamHost>(
        &mut self,
        host: &mut H,
        section: &AuditSection,
        audit: &Audit,
        reason: &str,
    ) -> Flow {
        host.add(audit.metrics.hash_failures, 1);
        log::warn!(
            "meshguard audit: command hash failed: {}",
            logsafe::escape(reason)
        );
        if section.policy.fail_closed() {
            host.add(audit.metrics.refused_hash, 1);
            return refuse(host, 400, "audit_hash_failed");
        }
        Flow::Continue
    }

    /// The exchange ended: seals and emits the record. `decisions` are the
    /// outcomes of this plugin's own sections; another plugin's are read from
    /// the filter state it published.
    pub fn finish<H: StreamHost>(
        self,
        host: &mut H,
        section: &AuditSection,
        audit: &Audit,
        decisions: &[(&'static str, Option<String>)],
    ) {
        let policy = &section.policy;
        let request_info = meshguard_core::request::RequestInfo {
            path: &self.target,
            method: &self.method,
            host: &self.authority,
        };
        let mut fields = RecordFields::new(
            self.id.clone(),
            self.start_ms,
            &request_info,
            policy.command_name(self.command),
            self.command_sha256.unwrap_or([0; 32]),
        );
        fields.peer = self.peer;
        fields.status = self.status;
        fields.duration_ms = Some(host.now_ms().saturating_sub(self.start_ms));
        fields.config_fingerprint = Some(audit.fingerprint.clone());
        for other in OTHER_SECTIONS {
            let decision = match decisions.iter().find(|(name, _)| *name == other) {
                Some((_, local)) => local.clone(),
                // Another plugin's identity decision came with the view it
                // published; its masking count is published as it grows.
                None if other == "identity" => self.published_identity.clone(),
                None => host.published(&format!("meshguard_{other}")),
            };
            if let Some(decision) = decision {
                fields.decisions.insert(other.into(), decision.into());
            }
        }
        if self.command_sha256.is_none() {
            fields
                .decisions
                .insert("audit".into(), "hash_failed".into());
        }
        let fields = fields.cap(policy.max_record_path_bytes());
        let sealed = audit
            .chain
            .with(|chain| {
                chain
                    .seal_line(fields, &section.key, policy.key_id())
                    .map_err(|e| e.to_string())
            })
            .unwrap_or_else(|| Err("the chain is busy".into()));
        let (record, line) = match sealed {
            Ok(sealed) => sealed,
            Err(e) => {
                log::error!(
                    "meshguard audit: record for {} not sealed: {}",
                    logsafe::quote(&self.id),
                    logsafe::defang(&e)
                );
                host.add(audit.metrics.dropped, 1);
                release(audit, self.reservation);
                return;
            }
        };
        host.add(audit.metrics.emitted, 1);
        if policy.log_records() {
            // Canonical JSON escapes every control character: one line, and
            // the prefix starts it (request text inside is a JSON string).
            log::info!("{line}");
        }
        if let Some(outbox) = &audit.outbox {
            let json = line
                .strip_prefix(meshguard_core::audit::RECORD_PREFIX)
                .unwrap_or(&line);
            let json = match policy.collector().map(|c| c.format) {
                Some(CollectorFormat::OtlpJson) => {
                    meshguard_core::audit::otlp::log_record(&record, json, host.now_ms())
                }
                _ => json.to_owned(),
            };
            match outbox.with(|o| o.push(json, self.reservation)) {
                Some(outcome) => audit.metrics.count(host, outcome),
                None => host.add(audit.metrics.dropped, 1),
            }
        }
        audit.request_flush(host);
    }

    /// A stream that ends without its log callback leaves no record: its
    /// outbox room is given back (else the outbox would shrink for good) and
    /// it is counted.
    pub fn abandon<M: Metrics + ?Sized>(self, host: &M, audit: &Audit) {
        host.add(audit.metrics.dropped, 1);
        log::warn!(
            "meshguard audit: request {} ended without a record",
            logsafe::quote(&self.id)
        );
        release(audit, self.reservation);
    }
}

fn release(audit: &Audit, reservation: Option<Reservation>) {
    if let (Some(r), Some(outbox)) = (reservation, &audit.outbox) {
        outbox.with(|o| o.release(r));
    }
}

fn refuse<H: StreamHost>(host: &mut H, status: u16, reason: &str) -> Flow {
    let body = format!(r#"{{"error":"{reason}"}}"#);
    json_reply(host, status, Some(reason), body.as_bytes())
}
