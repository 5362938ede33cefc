//! Config integrity and drift on the host side, the same for every filter:
//! loading a config through the core's checks (signature, fingerprint,
//! intended version), exporting the drift metrics, polling the source of
//! truth from the root context's timer, and enforcing quarantine.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use meshguard_core::config::ConfigError;
use meshguard_core::integrity::{
    admit, load, load_results, read_answer, succession, Admission, AnswerContext, AnswerRefusal,
    DriftMonitor, DriftState, IntegrityEnv, IntegritySettings, LoadError, Loaded, NewestSerial,
    OnDrift, Succession, SuccessionRequest, Transition,
};
use meshguard_core::metrics::{self, tagged};
use meshguard_core::path::PathOptions;
use meshguard_core::request::RequestInfo;
use meshguard_core::scope::RequestView;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};

use crate::vm_memory::VmMemory;
use crate::{env_var, now_ms, plugin_configuration, Counter, Gauge};

/// Ticks arriving this much early still count as due.
const TICK_JITTER_MS: u64 = 100;

/// Largest source-of-truth answer read.
const MAX_INTENDED_BYTES: usize = 64 * 1024;

/// Loads this filter's plugin config: integrity checks first, then the
/// filter's own `compile`. Logs and counts the outcome; `None` means refuse
/// (return false from `on_configure`).
pub fn load_config<T>(
    filter: &'static str,
    compile: impl FnOnce(&[u8]) -> Result<T, ConfigError>,
) -> Option<(T, Guard)> {
    // Every result is defined (at 0) on every load, so that a first refusal
    // is an increase Prometheus can see rather than a new series at 1.
    let counters: Vec<(&str, Counter)> = load_results()
        .map(|result| {
            (
                result,
                Counter::define(&tagged(
                    metrics::CONFIG_LOADS,
                    &[("filter", filter), ("result", result)],
                )),
            )
        })
        .collect();
    let count = |result: &str| {
        if let Some((_, counter)) = counters.iter().find(|(r, _)| *r == result) {
            counter.increment();
        }
    };
    let workload = workload();
    let newest = SharedState::newest_serial(filter);
    let loaded = IntegrityEnv::from_vars(env_var)
        .map_err(LoadError::from)
        .and_then(|env| {
            let loaded = load(&plugin_configuration(), &env)?;
            let at = Admission {
                filter,
                workload: workload.as_deref(),
                now_s: now_ms() / 1000,
                newest: newest.as_ref().map(|n| (n.serial, n.fingerprint.as_str())),
            };
            admit(&loaded, &env, &at)?;
            Ok((loaded, env))
        });
    let compiled =
        loaded.and_then(|(loaded, env)| Ok((compile(&loaded.filter_config)?, loaded, env)));
    match compiled {
        Ok((filter_state, loaded, env)) => {
            count("accepted");
            if let Some(release) = &loaded.release {
                SharedState::record_serial(filter, release.serial, &loaded.fingerprint);
            }
            let o = loaded.settings.origin;
            log::info!(
                "meshguard {filter}: configuration accepted: version={} fingerprint={} signature={} serial={} workload={} on_drift={} (from {}) health_paths from {} source_of_truth from {}",
                loaded.config_version.as_deref().map_or_else(|| "unset".into(), meshguard_core::integrity::quoted),
                loaded.fingerprint,
                loaded.signature,
                loaded.release.as_ref().map_or_else(|| "none".into(), |r| r.serial.to_string()),
                workload.as_deref().map_or_else(|| "unknown".into(), meshguard_core::integrity::quoted),
                loaded.settings.on_drift.as_str(),
                o.on_drift.as_str(),
                o.health_paths.as_str(),
                o.source_of_truth.as_str(),
            );
            Some((filter_state, Guard::start(filter, &loaded, env, workload)))
        }
        Err(error) => {
            count(error.result_label());
            log::error!("meshguard {filter}: configuration refused: {error}");
            None
        }
    }
}

/// `NAMESPACE/WORKLOAD_NAME` from the proxy's node metadata (Istio sets both
/// on every sidecar): what the proxy knows about itself, never the config.
fn workload() -> Option<String> {
    let ns = crate::property_string(&["xds", "node", "metadata", "NAMESPACE"])?;
    let name = crate::property_string(&["xds", "node", "metadata", "WORKLOAD_NAME"])?;
    (!ns.is_empty() && !name.is_empty()).then(|| format!("{ns}/{name}"))
}

/// The integrity state kept in Envoy's shared data: it outlives a VM and a
/// config push on the same proxy, so neither resets a drift or rolls the
/// serial back. Keys are per filter (shared data is per `vm_id`).
struct SharedState;

/// Attempts at a compare-and-swap before giving up (another VM raced us).
const CAS_ATTEMPTS: usize = 4;

impl SharedState {
    /// The last trusted verdict on this proxy, whatever config it was about:
    /// what a newly loaded config starts from (a push cannot reset it).
    fn drift_key(filter: &str) -> String {
        format!("meshguard.integrity.{filter}.drift")
    }

    /// The verdict on one config: what every VM running that config enforces.
    /// Per fingerprint, so that an older instance still draining (and judged
    /// drifted) never quarantines the config that replaced it.
    fn config_drift_key(filter: &str, fingerprint: &str) -> String {
        format!("meshguard.integrity.{filter}.drift.{fingerprint}")
    }

    fn serial_key(filter: &str) -> String {
        format!("meshguard.integrity.{filter}.serial")
    }

    fn get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    /// Whether a drift was found on this proxy and not cleared by a trusted check.
    fn drifted(filter: &str) -> Option<bool> {
        match Self::get(&Self::drift_key(filter)).0.as_deref() {
            Some(b"1") => Some(true),
            Some(b"0") => Some(false),
            _ => None,
        }
    }

    fn set_drifted(filter: &str, fingerprint: &str, drifted: bool) {
        let value: &[u8] = if drifted { b"1" } else { b"0" };
        for key in [
            Self::drift_key(filter),
            Self::config_drift_key(filter, fingerprint),
        ] {
            if hostcalls::set_shared_data(&key, Some(value), None).is_err() {
                log::error!(
                    "meshguard {filter}: the host refused shared data; drift state is per VM"
                );
            }
        }
    }

    fn issued_key(filter: &str) -> String {
        format!("meshguard.integrity.{filter}.issued")
    }

    /// `issued` of the newest intended document believed here.
    fn newest_issued(filter: &str) -> Option<u64> {
        let bytes = Self::get(&Self::issued_key(filter)).0?;
        std::str::from_utf8(&bytes).ok()?.parse().ok()
    }

    fn record_issued(filter: &str, issued: u64) {
        let key = Self::issued_key(filter);
        for _ in 0..CAS_ATTEMPTS {
            let (current, cas) = Self::get(&key);
            let newer = current
                .as_deref()
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u64>().ok())
                .is_none_or(|c| issued > c);
            if !newer
                || hostcalls::set_shared_data(&key, Some(issued.to_string().as_bytes()), cas)
                    .is_ok()
            {
                return;
            }
        }
        log::error!("meshguard {filter}: could not record intended document time in shared data");
    }

    /// The newest signed config accepted here.
    fn newest_serial(filter: &str) -> Option<NewestSerial> {
        NewestSerial::decode(&Self::get(&Self::serial_key(filter)).0?)
    }

    fn record_serial(filter: &str, serial: u64, fingerprint: &str) {
        let key = Self::serial_key(filter);
        let value = NewestSerial {
            serial,
            fingerprint: fingerprint.to_owned(),
            accepted_ms: Some(now_ms()),
        }
        .encode();
        for _ in 0..CAS_ATTEMPTS {
            let (current, cas) = Self::get(&key);
            let newer = current
                .as_deref()
                .and_then(NewestSerial::decode)
                .is_none_or(|c| serial > c.serial);
            if !newer {
                return;
            }
            if hostcalls::set_shared_data(&key, Some(value.as_bytes()), cas).is_ok() {
                return;
            }
        }
        log::error!("meshguard {filter}: could not record serial {serial} in shared data");
    }
}

#[derive(Debug)]
struct DriftMetrics {
    drift: Gauge,
    unknown: Gauge,
    quarantined: Gauge,
    info: Gauge,
    check_age: Gauge,
    source_errors: Counter,
    answers_refused: Vec<(AnswerRefusal, Counter)>,
}

/// The integrity state of one loaded config (one root context).
#[derive(Debug)]
pub struct Guard {
    filter: &'static str,
    monitor: DriftMonitor,
    settings: IntegritySettings,
    env: IntegrityEnv,
    workload: Option<String>,
    quarantined: Rc<Cell<bool>>,
    metrics: DriftMetrics,
    quarantine_denied: Counter,
    superseded_denied: Counter,
    superseded_drained: Counter,
    serial: Option<u64>,
    /// The highest downstream connection id this instance served while current.
    served_up_to: Rc<Cell<Option<u64>>>,
    config_version: Option<String>,
    fingerprint: String,
    pending_call: Option<u32>,
    last_poll_ms: u64,
}

impl Guard {
    fn start(
        filter: &'static str,
        loaded: &Loaded,
        env: IntegrityEnv,
        workload: Option<String>,
    ) -> Self {
        let f = [("filter", filter)];
        let version = metrics::version_label(loaded.config_version.as_deref());
        let metrics = DriftMetrics {
            drift: Gauge::define(&tagged(metrics::CONFIG_DRIFT, &f)),
            unknown: Gauge::define(&tagged(metrics::CONFIG_UNKNOWN, &f)),
            quarantined: Gauge::define(&tagged(metrics::CONFIG_QUARANTINED, &f)),
            info: Gauge::define(&tagged(
                metrics::CONFIG_INFO,
                &[("filter", filter), ("version", &version)],
            )),
            check_age: Gauge::define(&tagged(metrics::CONFIG_CHECK_AGE, &f)),
            source_errors: Counter::define(&tagged(metrics::INTENDED_SOURCE_ERRORS, &f)),
            answers_refused: AnswerRefusal::ALL
                .iter()
                .map(|r| {
                    (
                        *r,
                        Counter::define(&tagged(
                            metrics::INTENDED_ANSWERS_REFUSED,
                            &[("filter", filter), ("reason", r.as_str())],
                        )),
                    )
                })
                .collect(),
        };
        let carried = SharedState::drifted(filter).unwrap_or(false);
        let (monitor, transition) = DriftMonitor::new(loaded, now_ms(), carried);
        let guard = Self {
            filter,
            monitor,
            settings: loaded.settings.clone(),
            env,
            workload,
            quarantined: Rc::new(Cell::new(false)),
            metrics,
            quarantine_denied: Counter::define(&tagged(metrics::QUARANTINE_DENIED, &f)),
            superseded_denied: Counter::define(&tagged(metrics::CONFIG_SUPERSEDED_DENIED, &f)),
            superseded_drained: Counter::define(&tagged(metrics::CONFIG_SUPERSEDED_DRAINED, &f)),
            serial: loaded.release.as_ref().map(|r| r.serial),
            served_up_to: Rc::new(Cell::new(None)),
            config_version: loaded.config_version.clone(),
            fingerprint: loaded.fingerprint.clone(),
            pending_call: None,
            last_poll_ms: now_ms(),
        };
        guard.metrics.info.set(1);
        guard.metrics.check_age.set(0);
        guard.apply(transition);
        guard
    }

    /// The timer period this guard needs (the filter sets the root context's
    /// tick to the shortest period any of its parts needs).
    pub fn tick_period(&self) -> Option<Duration> {
        self.settings
            .source_of_truth
            .as_ref()
            .map(|s| Duration::from_millis(s.poll_interval_ms))
    }

    /// The fingerprint of the loaded config (hex SHA-256).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A handle for HTTP contexts to enforce quarantine.
    pub fn quarantine(&self) -> Quarantine {
        Quarantine {
            filter: self.filter,
            drift_key: SharedState::config_drift_key(self.filter, &self.fingerprint),
            quarantined: Rc::clone(&self.quarantined),
            settings: self.settings.clone(),
            denied: self.quarantine_denied,
            serial: self.serial.map(|serial| Superseded {
                serial,
                key: SharedState::serial_key(self.filter),
                denied: self.superseded_denied,
                drained: self.superseded_drained,
                grace_ms: self.env.drain_grace_ms(),
                served_up_to: Rc::clone(&self.served_up_to),
            }),
        }
    }

    fn apply(&self, transition: Option<Transition>) {
        let drifted = self.monitor.state() == DriftState::Drifted;
        self.metrics.drift.set(u64::from(drifted));
        self.metrics
            .unknown
            .set(u64::from(self.monitor.state() == DriftState::Unknown));
        // Only trusted checks move the shared state: a drift to 1, a
        // confirmation to 0; "unknown" leaves it as it was.
        if let Some(t) = &transition {
            match t.to {
                DriftState::Drifted => {
                    SharedState::set_drifted(self.filter, &self.fingerprint, true)
                }
                DriftState::InSync => {
                    SharedState::set_drifted(self.filter, &self.fingerprint, false)
                }
                DriftState::Unknown => {}
            }
        }
        self.quarantined.set(self.monitor.quarantined());
        self.metrics
            .quarantined
            .set(u64::from(self.monitor.quarantined()));
        if let Some(t) = transition {
            match t.to {
                DriftState::Drifted => log::warn!("meshguard {}: {}", self.filter, t.message),
                DriftState::InSync | DriftState::Unknown => {
                    log::info!("meshguard {}: {}", self.filter, t.message)
                }
            }
        }
    }

    /// Call from `RootContext::on_tick`: asks the source of truth again.
    pub fn on_tick(&mut self) {
        let Some(source) = &self.settings.source_of_truth else {
            return; // the tick belongs to another part of the filter
        };
        self.metrics
            .check_age
            .set(self.monitor.check_age_seconds(now_ms()));
        if self.pending_call.is_some() {
            return; // the previous call has not answered or timed out yet
        }
        // The tick may be shorter than the poll interval (another part of the
        // filter needs it); allow a little jitter so a poll is never skipped.
        let now = now_ms();
        if now.saturating_add(TICK_JITTER_MS)
            < self.last_poll_ms.saturating_add(source.poll_interval_ms)
        {
            return;
        }
        self.last_poll_ms = now;
        // One MESHGUARD_SOURCE_OF_TRUTH serves every filter of the proxy.
        let path = source.path.replace("{filter}", self.filter);
        let mut headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", source.authority.as_str()),
            ("x-meshguard-filter", self.filter),
            ("x-meshguard-config-fingerprint", self.fingerprint.as_str()),
        ];
        if let Some(version) = &self.config_version {
            headers.push(("x-meshguard-config-version", version.as_str()));
        }
        match hostcalls::dispatch_http_call(
            &source.cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(source.timeout_ms),
        ) {
            Ok(token) => self.pending_call = Some(token),
            Err(status) => self.failure(&format!(
                "cannot call cluster {:?}: {status:?}",
                source.cluster
            )),
        }
    }

    /// Call from `Context::on_http_call_response` of the root context.
    pub fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize) {
        if self.pending_call != Some(token) {
            return;
        }
        self.pending_call = None;
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .unwrap_or_default();
        if num_headers == 0 || status != b"200" {
            let status = String::from_utf8_lossy(&status).into_owned();
            return self.failure(&format!(
                "no 200 answer (status {status:?}, or timeout/reset)"
            ));
        }
        let body = hostcalls::get_buffer(
            BufferType::HttpCallResponseBody,
            0,
            body_size.min(MAX_INTENDED_BYTES),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let now = now_ms();
        let at = AnswerContext {
            filter: self.filter,
            workload: self.workload.as_deref(),
            now_s: now / 1000,
            newest_issued: SharedState::newest_issued(self.filter),
        };
        match read_answer(&body, &self.env, &at) {
            Ok(answer) => {
                SharedState::record_issued(self.filter, answer.issued);
                let transition = self.monitor.observe(&answer.intended, now);
                self.metrics
                    .check_age
                    .set(self.monitor.check_age_seconds(now));
                self.apply(transition);
            }
            Err(e) => {
                if let Some((_, counter)) = self
                    .metrics
                    .answers_refused
                    .iter()
                    .find(|(r, _)| *r == e.reason)
                {
                    counter.increment();
                }
                if let Some((_, line)) = self.monitor.observe_untrusted(&e.to_string()) {
                    log::warn!("meshguard {}: {line}", self.filter);
                }
                self.apply(None);
            }
        }
    }

    fn failure(&mut self, reason: &str) {
        self.metrics.source_errors.increment();
        if let Some(line) = self.monitor.observe_failure(reason) {
            log::warn!("meshguard {}: {line}", self.filter);
        }
    }

    /// Call from the root context's `on_done`: this config no longer runs.
    pub fn retire(&self) {
        self.metrics.info.set(0);
    }
}

/// Quarantine enforcement for HTTP contexts.
#[derive(Debug, Clone)]
pub struct Quarantine {
    filter: &'static str,
    /// Set for a config signed with a serial.
    serial: Option<Superseded>,
    drift_key: String,
    quarantined: Rc<Cell<bool>>,
    settings: IntegritySettings,
    denied: Counter,
}

/// The serial of this config instance, to refuse traffic once a newer one
/// was accepted on this proxy.
#[derive(Debug, Clone)]
struct Superseded {
    serial: u64,
    key: String,
    denied: Counter,
    drained: Counter,
    grace_ms: u64,
    served_up_to: Rc<Cell<Option<u64>>>,
}

impl Quarantine {
    /// Refuses the request when this config instance was superseded by a
    /// newer signed serial, or while quarantined (health paths excepted, on
    /// the request's canonical view under `paths`, computed only then);
    /// returns the action to stop the chain.
    pub fn enforce(&self, request: &RequestInfo<'_>, paths: &PathOptions) -> Option<Action> {
        self.superseded()
            .or_else(|| self.quarantined(request, paths))
    }

    /// Envoy serves a byte-identical plugin config from the instance it still
    /// holds, without `on_configure`: a replayed older config cannot be
    /// refused at load then, so the stale instance refuses its traffic, except
    /// the connections it served while current, for the drain grace
    /// (`meshguard_core::integrity::succession`).
    fn superseded(&self) -> Option<Action> {
        let s = self.serial.as_ref()?;
        let newest = hostcalls::get_shared_data(&s.key)
            .ok()
            .and_then(|(v, _)| NewestSerial::decode(&v?));
        let connection = crate::property_u64(&["connection", "id"]);
        let request = SuccessionRequest {
            connection,
            served_up_to: s.served_up_to.get(),
            now_ms: now_ms(),
        };
        let newest = match succession(s.serial, newest.as_ref(), request, s.grace_ms) {
            Succession::Current => {
                if connection > s.served_up_to.get() {
                    s.served_up_to.set(connection);
                }
                return None;
            }
            Succession::Draining => {
                s.drained.increment();
                return None;
            }
            Succession::Superseded => newest.map_or(0, |n| n.serial),
        };
        s.denied.increment();
        log::debug!(
            "meshguard {}: refused: this config (serial {}) was superseded by serial {newest}",
            self.filter,
            s.serial
        );
        // A 503 before anything reached the upstream: a retriable refusal
        // (Istio's default retry policy retries 503), and on a listener Envoy
        // drains (Istio starts Envoy with `--drain-strategy immediate`) the
        // answer closes the HTTP/1 connection or sends the HTTP/2 GOAWAY, so
        // the retry reaches the listener that runs the current config. Only
        // if the host refuses the answer is the stream reset.
        let body = format!(
            r#"{{"error":"config_superseded","reason":"config_superseded","filter":"{}"}}"#,
            self.filter
        );
        if !crate::send_json_reply(503, Some("config_superseded"), body.as_bytes()) {
            crate::reset_request();
        }
        Some(Action::Pause)
    }

    fn quarantined(&self, request: &RequestInfo<'_>, paths: &PathOptions) -> Option<Action> {
        if self.settings.on_drift != OnDrift::Quarantine {
            return None;
        }
        // The proxy-wide state (shared data) decides, so every worker VM acts
        // on a drift the moment any VM found it; this VM's own view is the
        // fallback if the host will not answer.
        let quarantined = match hostcalls::get_shared_data(&self.drift_key) {
            Ok((Some(v), _)) => v.as_slice() == b"1",
            Ok((None, _)) | Err(_) => self.quarantined.get(),
        };
        if !quarantined {
            return None;
        }
        let view = RequestView::with(request, paths);
        let path = view.path.split(['?', '#']).next().unwrap_or(&view.path);
        if self.settings.is_health_path(path) {
            return None;
        }
        self.denied.increment();
        // Debug: a quarantined workload refuses every request; the transition
        // was logged at warn once, and the counter carries the volume.
        log::debug!(
            "meshguard {}: quarantined: refused {path:?} until the config matches the intended one",
            self.filter
        );
        let body = format!(
            r#"{{"error":"quarantined","reason":"config_drift","filter":"{}"}}"#,
            self.filter
        );
        if !crate::send_json_reply(
            self.settings.quarantine_status,
            Some("config_drift"),
            body.as_bytes(),
        ) {
            crate::reset_request();
        }
        Some(Action::Pause)
    }
}

/// What a meshguard filter adds to the root context every filter shares
/// (config loading with integrity checks, drift polling, timers, retirement).
pub trait FilterRoot: Sized + 'static {
    /// The filter's name in logs and the `filter` metric label.
    const NAME: &'static str;
    /// The compiled configuration.
    type Compiled;

    /// Compiles the filter's own keys (integrity and signature already split off).
    fn compile(bytes: &[u8]) -> Result<Self::Compiled, ConfigError>;

    /// Builds the filter's state once its config was accepted.
    fn start(context_id: u32, compiled: Self::Compiled, guard: &Guard) -> Self;

    /// The timer this filter needs besides the guard's.
    fn tick_period(&self) -> Option<Duration> {
        None
    }

    fn on_tick(&mut self) {}

    /// A shared queue this filter registered has data (an HTTP context asking
    /// the root to act now: only the root's callouts outlive a request).
    fn on_queue_ready(&mut self, _queue_id: u32) {}

    /// An answer to a callout; false when the callout was not this filter's.
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _num_headers: usize,
        _body_size: usize,
    ) -> bool {
        false
    }

    /// A context for one HTTP stream; `state` is `None` when no configuration
    /// was accepted (the context must then fail closed).
    fn http_context(state: Option<&Self>) -> Box<dyn proxy_wasm::traits::HttpContext>;
}

/// The root context of every meshguard filter.
#[derive(Debug)]
pub struct Root<F> {
    context_id: u32,
    state: Option<F>,
    guard: Option<Guard>,
    memory: Option<VmMemory>,
}

impl<F: FilterRoot> Root<F> {
    /// Registers this root context with the SDK: the body of `proxy_wasm::main!`.
    pub fn register() {
        crate::init_logging();
        proxy_wasm::set_root_context(|context_id| {
            Box::new(Root::<F> {
                context_id,
                state: None,
                guard: None,
                memory: None,
            })
        });
    }
}

impl<F: FilterRoot> proxy_wasm::traits::Context for Root<F> {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let handled = self
            .state
            .as_mut()
            .is_some_and(|s| s.on_http_call_response(token_id, num_headers, body_size));
        if !handled {
            if let Some(guard) = &mut self.guard {
                guard.on_http_call_response(token_id, num_headers, body_size);
            }
        }
    }

    fn on_done(&mut self) -> bool {
        if let Some(guard) = &self.guard {
            guard.retire();
        }
        true
    }
}

impl<F: FilterRoot> proxy_wasm::traits::RootContext for Root<F> {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        crate::follow_host_log_level();
        let Some((compiled, guard)) = load_config(F::NAME, F::compile) else {
            return false;
        };
        let state = F::start(self.context_id, compiled, &guard);
        crate::set_tick(&[guard.tick_period(), state.tick_period()]);
        self.state = Some(state);
        self.guard = Some(guard);
        if self.memory.is_none() {
            self.memory = Some(VmMemory::define(F::NAME));
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(guard) = &mut self.guard {
            guard.on_tick();
        }
        if let Some(state) = &mut self.state {
            state.on_tick();
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Some(state) = &mut self.state {
            state.on_queue_ready(queue_id);
        }
    }

    fn create_http_context(
        &self,
        _context_id: u32,
    ) -> Option<Box<dyn proxy_wasm::traits::HttpContext>> {
        if let Some(memory) = &self.memory {
            memory.observe();
        }
        // Returning None would make the SDK panic: F::http_context fails closed instead.
        Some(F::http_context(self.state.as_ref()))
    }

    fn get_type(&self) -> Option<proxy_wasm::types::ContextType> {
        Some(proxy_wasm::types::ContextType::HttpContext)
    }
}
