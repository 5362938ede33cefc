//! Config integrity and drift on the host side, the same for every filter:
//! loading a config through the core's checks (signature, fingerprint,
//! intended version), exporting the drift metrics, polling the source of
//! truth from the root context's timer, and enforcing quarantine.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use meshguard_core::config::ConfigError;
use meshguard_core::integrity::{
    load, DriftMonitor, DriftState, IntegrityEnv, IntegritySettings, Intended, IntendedSource,
    LoadError, Loaded, Transition,
};
use meshguard_core::metrics::{self, tagged};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};

use crate::{env_var, now_ms, plugin_configuration, Counter, Gauge};

/// The `result` label values of `meshguard_config_loads_total`.
const LOAD_RESULTS: [&str; 4] = ["accepted", "refused", "unauthorized", "drift_rejected"];

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
    let counters = LOAD_RESULTS.map(|result| {
        (
            result,
            Counter::define(&tagged(
                metrics::CONFIG_LOADS,
                &[("filter", filter), ("result", result)],
            )),
        )
    });
    let count = |result: &str| {
        if let Some((_, counter)) = counters.iter().find(|(r, _)| *r == result) {
            counter.increment();
        }
    };
    let loaded = IntegrityEnv::from_vars(env_var)
        .map_err(LoadError::from)
        .and_then(|env| load(&plugin_configuration(), &env));
    let compiled = loaded.and_then(|loaded| Ok((compile(&loaded.filter_config)?, loaded)));
    match compiled {
        Ok((filter_state, loaded)) => {
            count("accepted");
            log::info!(
                "meshguard {filter}: configuration accepted: version={} fingerprint={} signature={} on_drift={}",
                loaded.config_version.as_deref().unwrap_or("unset"),
                loaded.fingerprint,
                loaded.signature,
                loaded.settings.on_drift.as_str(),
            );
            Some((filter_state, Guard::start(filter, &loaded)))
        }
        Err(error) => {
            count(error.result_label());
            log::error!("meshguard {filter}: configuration refused: {error}");
            None
        }
    }
}

#[derive(Debug)]
struct DriftMetrics {
    drift: Gauge,
    quarantined: Gauge,
    info: Gauge,
    check_age: Gauge,
    source_errors: Counter,
}

/// The integrity state of one loaded config (one root context).
#[derive(Debug)]
pub struct Guard {
    filter: &'static str,
    monitor: DriftMonitor,
    settings: IntegritySettings,
    quarantined: Rc<Cell<bool>>,
    metrics: DriftMetrics,
    quarantine_denied: Counter,
    config_version: Option<String>,
    fingerprint: String,
    pending_call: Option<u32>,
    last_poll_ms: u64,
}

impl Guard {
    fn start(filter: &'static str, loaded: &Loaded) -> Self {
        let f = [("filter", filter)];
        let version = metrics::version_label(loaded.config_version.as_deref());
        let metrics = DriftMetrics {
            drift: Gauge::define(&tagged(metrics::CONFIG_DRIFT, &f)),
            quarantined: Gauge::define(&tagged(metrics::CONFIG_QUARANTINED, &f)),
            info: Gauge::define(&tagged(
                metrics::CONFIG_INFO,
                &[("filter", filter), ("version", &version)],
            )),
            check_age: Gauge::define(&tagged(metrics::CONFIG_CHECK_AGE, &f)),
            source_errors: Counter::define(&tagged(metrics::INTENDED_SOURCE_ERRORS, &f)),
        };
        let (monitor, transition) = DriftMonitor::new(loaded, now_ms());
        let guard = Self {
            filter,
            monitor,
            settings: loaded.settings.clone(),
            quarantined: Rc::new(Cell::new(false)),
            metrics,
            quarantine_denied: Counter::define(&tagged(metrics::QUARANTINE_DENIED, &f)),
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
            quarantined: Rc::clone(&self.quarantined),
            settings: self.settings.clone(),
            denied: self.quarantine_denied,
        }
    }

    fn apply(&self, transition: Option<Transition>) {
        let drifted = self.monitor.state() == DriftState::Drifted;
        self.metrics.drift.set(u64::from(drifted));
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
        let mut headers = vec![
            (":method", "GET"),
            (":path", source.path.as_str()),
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
        match Intended::from_response(&body) {
            Ok(intended) => {
                let now = now_ms();
                let transition =
                    self.monitor
                        .observe(&intended, IntendedSource::SourceOfTruth, now);
                self.metrics
                    .check_age
                    .set(self.monitor.check_age_seconds(now));
                self.apply(transition);
            }
            Err(e) => self.failure(&format!("unreadable answer: {e}")),
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
    quarantined: Rc<Cell<bool>>,
    settings: IntegritySettings,
    denied: Counter,
}

impl Quarantine {
    /// While quarantined, answers every request but a health path with the
    /// quarantine status and returns the action to stop the chain.
    pub fn enforce(&self, path: &str) -> Option<Action> {
        if !self.quarantined.get() {
            return None;
        }
        let path = path.split(['?', '#']).next().unwrap_or(path);
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
        // Returning None would make the SDK panic: F::http_context fails closed instead.
        Some(F::http_context(self.state.as_ref()))
    }

    fn get_type(&self) -> Option<proxy_wasm::types::ContextType> {
        Some(proxy_wasm::types::ContextType::HttpContext)
    }
}
