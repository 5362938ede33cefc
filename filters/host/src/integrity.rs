//! Config integrity and drift for one plugin instance, over [`PluginHost`]:
//! loading a config through the core's checks (signature, scope, release
//! order), keeping the proxy-wide state in the host's store, polling the
//! source of truth, and enforcing quarantine and supersession per request
//! from a state the root refreshes on its timer (no store read per request).
//!
//! # A check never disappears
//! Envoy configures a config first on its main thread (a refusal there is a
//! NACK: the previous config keeps running) and then once in every worker VM,
//! and again in every VM it creates later. A worker VM that refused a config
//! the main thread accepted would run its streams without the filter. So a
//! config is judged on time and release order once, when it is first
//! admitted on this proxy, and the admission is recorded in the store per
//! plugin instance and fingerprint. Every later VM loading that config skips
//! those two checks; if a newer serial was accepted since, the instance is
//! superseded and refuses its requests with a stable reason
//! (`config_superseded`). Every other check depends only on the config and
//! the proxy's environment, so every VM decides it alike. Should a VM still
//! refuse a config this proxy admitted, it installs a refuse-everything state
//! (`meshguard_config_not_admitted_denied_total{reason}`) instead of failing
//! `on_configure`.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use meshguard_core::integrity::{
    admit, load, load_results, quoted, read_answer, succession, Admission, AnswerContext,
    AnswerRefusal, DriftMonitor, DriftState, IntegrityEnv, IntegritySettings, LoadError, Loaded,
    NewestSerial, OnDrift, Release, Succession, SuccessionRequest, Transition,
};
use meshguard_core::logsafe;
use meshguard_core::metrics::{self, tagged};
use meshguard_core::plugin::{Plugin, Secrets, Section, Shape};

use crate::host::{Attribute, CalloutFailure, Counter, Gauge, PluginHost, StoreError, StreamHost};
use crate::reply::{json_reply, Flow};
use crate::sync::Shared;

/// Ticks arriving this much early still count as due.
const TICK_JITTER_MS: u64 = 100;

/// How often the root refreshes the proxy-wide integrity state its streams
/// enforce (a drift found by another VM, a newer serial): streams read a
/// cached copy, never the store.
pub const REFRESH_PERIOD: Duration = Duration::from_millis(500);

/// The newest serial this VM knows per plugin instance: (serial, accepted
/// at). Every root of a VM (one per loaded config of an instance) shares one
/// cell, so a push accepted on this VM supersedes the older config at its
/// next request, not at its next refresh; another VM's push arrives with the
/// refresh. The native module configures every root on Envoy's main thread:
/// there the thread's cells are the process's, which all workers read.
type NewestCell = Arc<Shared<Option<(u64, Option<u64>)>>>;

/// Plugin instances a VM tracks; past it an instance gets an unshared cell
/// (refresh only).
const MAX_INSTANCES_PER_VM: usize = 64;

thread_local! {
    static VM_NEWEST: RefCell<Vec<(String, NewestCell)>> = const { RefCell::new(Vec::new()) };
}

fn vm_newest(instance_key: &str) -> NewestCell {
    VM_NEWEST.with_borrow_mut(|cells| {
        if let Some((_, cell)) = cells.iter().find(|(key, _)| key == instance_key) {
            return cell.clone();
        }
        let cell = NewestCell::default();
        if cells.len() < MAX_INSTANCES_PER_VM {
            cells.push((instance_key.to_owned(), cell.clone()));
        }
        cell
    })
}

/// Largest source-of-truth answer read.
const MAX_INTENDED_BYTES: usize = 64 * 1024;

/// Attempts at a compare-and-swap before giving up (another VM raced us).
const CAS_ATTEMPTS: usize = 4;

/// One plugin instance on this proxy: its name in logs and metrics, and
/// where its state lives in the store. Keyed by the plugin's own identity
/// (Envoy's `plugin_name`, which Istio sets to the resource's
/// `NAMESPACE.NAME`, and its root id), never by the filter kind: two
/// policies on one waypoint never share a serial or a drift verdict.
#[derive(Debug, Clone)]
pub struct Instance {
    pub filter: &'static str,
    pub shape: Shape,
    key: String,
    /// `NAMESPACE/WORKLOAD_NAME` from the proxy's node metadata.
    pub workload: Option<String>,
}

impl Instance {
    /// Reads the plugin's identity and the proxy's workload from the host.
    pub fn read<H: PluginHost>(host: &H) -> Self {
        let root_id = host.property(&["plugin_root_id"]).unwrap_or_default();
        let name = host.property(&["plugin_name"]).unwrap_or_default();
        let shape = Shape::from_root_id(&root_id);
        let ns = host.property(&["xds", "node", "metadata", "NAMESPACE"]);
        let workload_name = host.property(&["xds", "node", "metadata", "WORKLOAD_NAME"]);
        let workload = match (ns, workload_name) {
            (Some(ns), Some(n)) if !ns.is_empty() && !n.is_empty() => Some(format!("{ns}/{n}")),
            _ => None,
        };
        Self::new(shape, &name, &root_id, workload)
    }

    pub fn new(shape: Shape, plugin_name: &str, root_id: &str, workload: Option<String>) -> Self {
        // Store keys carry no separator a name could forge: both parts are
        // hex-encoded when they hold anything but [A-Za-z0-9._-].
        let part = |text: &str| {
            if text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                text.to_owned()
            } else {
                format!("x{}", meshguard_core::canonical::hex(text.as_bytes()))
            }
        };
        Self {
            filter: shape.filter(),
            shape,
            key: format!(
                "meshguard.integrity.{}.{}",
                part(plugin_name),
                part(root_id)
            ),
            workload,
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{}.{what}", self.key)
    }

    /// The last trusted verdict on this instance, whatever config it was
    /// about: what a newly loaded config starts from.
    fn drift_key(&self) -> String {
        self.key("drift")
    }

    /// The verdict on one config: what every VM running it enforces.
    fn config_drift_key(&self, fingerprint: &str) -> String {
        self.key(&format!("drift.{fingerprint}"))
    }

    fn serial_key(&self) -> String {
        self.key("serial")
    }

    fn issued_key(&self) -> String {
        self.key("issued")
    }

    fn admitted_key(&self, fingerprint: &str) -> String {
        self.key(&format!("admitted.{fingerprint}"))
    }
}

/// What a VM does with the plugin config Envoy handed it.
#[derive(Debug)]
pub enum Configured {
    /// The config runs.
    Accepted(Box<Plugin>, Box<Guard>),
    /// Refused on this proxy's first admission of it (or for a reason every
    /// VM shares): `on_configure` answers false, Envoy NACKs.
    Refused,
    /// A config this proxy admitted that this VM cannot run: it refuses
    /// every request with this reason instead of vanishing.
    RefuseEverything(Refusing),
}

/// A VM that refuses every request: what a check does when it cannot run.
#[derive(Debug, Clone)]
pub struct Refusing {
    pub filter: &'static str,
    pub reason: &'static str,
    denied: Counter,
}

impl Refusing {
    pub fn refuse<H: StreamHost>(&self, host: &mut H) -> Flow {
        host.add(self.denied, 1);
        log::debug!(
            "meshguard {}: refused: this VM could not admit the config this proxy runs ({})",
            self.filter,
            self.reason
        );
        let body = format!(
            r#"{{"error":"config_not_admitted","reason":"{}","filter":"{}"}}"#,
            self.reason, self.filter
        );
        json_reply(host, 503, Some(self.reason), body.as_bytes())
    }
}

/// Loads the plugin config: the environment, signature, scope and release
/// order (integrity), then the plugin's sections. Logs and counts the outcome.
pub fn configure<H: PluginHost>(host: &H, instance: &Instance) -> Configured {
    let filter = instance.filter;
    // Every result is defined (at 0) on every load, so that a first refusal
    // is an increase Prometheus can see rather than a new series at 1.
    let counters: Vec<(&str, Counter)> = load_results()
        .map(|result| {
            let name = tagged(
                metrics::CONFIG_LOADS,
                &[("filter", filter), ("result", result)],
            );
            (result, host.define_counter(&name))
        })
        .collect();
    let count = |result: &str| {
        if let Some((_, counter)) = counters.iter().find(|(r, _)| *r == result) {
            host.add(*counter, 1);
        }
    };
    let env_var = |name: &str| host.env(name);
    let configuration = host.configuration();
    let store = Store { host, instance };
    // Whether this proxy admitted these very bytes before (the fingerprint
    // load computes): then any refusal in this VM, whatever its stage,
    // refuses traffic instead of failing `on_configure`, which would leave
    // this worker without the filter.
    let admitted_here = meshguard_core::integrity::fingerprint(&configuration)
        .is_ok_and(|fingerprint| store.admitted(&fingerprint));
    let refuse = |label: &'static str, error_text: String| {
        count(label);
        if admitted_here {
            log::error!(
                "meshguard {filter}: this VM cannot admit the configuration this proxy runs ({error_text}); refusing every request"
            );
            let denied = host.define_counter(&tagged(
                metrics::CONFIG_NOT_ADMITTED_DENIED,
                &[("filter", filter), ("reason", label)],
            ));
            return Configured::RefuseEverything(Refusing {
                filter,
                reason: label,
                denied,
            });
        }
        log::error!("meshguard {filter}: configuration refused: {error_text}");
        Configured::Refused
    };
    let loaded = IntegrityEnv::from_vars(env_var)
        .map_err(LoadError::from)
        .and_then(|env| Ok((load(&configuration, &env)?, env)));
    let (loaded, env) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return refuse(error.result_label(), logsafe::defang(&error.to_string())),
    };
    let plugin = match Plugin::compile(
        &loaded.filter_config,
        instance.shape,
        &env_var,
        Secrets::REQUIRE,
    ) {
        Ok(plugin) => plugin,
        Err(error) => return refuse("refused", logsafe::defang(&error.to_string())),
    };
    let newest = store.newest_serial();
    let at = Admission {
        filter,
        workload: instance.workload.as_deref(),
        now_s: host.now_ms() / 1000,
        newest: newest.as_ref().map(|n| (n.serial, n.fingerprint.as_str())),
        admitted_here,
    };
    if let Err(error) = admit(&loaded, &env, &at) {
        return refuse(error.result_label(), logsafe::defang(&error.to_string()));
    }
    count("accepted");
    store.record_admitted(&loaded.fingerprint);
    if let Some(release) = &loaded.release {
        store.record_serial(release.serial, &loaded.fingerprint);
    }
    let o = loaded.settings.origin;
    let sections: Vec<String> = plugin
        .section_fingerprints
        .iter()
        .map(|(s, fp)| format!("{}={}", s.as_str(), meshguard_core::integrity::short(fp)))
        .collect();
    log::info!(
        "meshguard {filter}: configuration accepted: version={} fingerprint={} sections={} signature={} serial={} workload={} on_drift={} (from {}) health_paths from {} source_of_truth from {} path_normalization={}",
        loaded.config_version.as_deref().map_or_else(|| "unset".into(), quoted),
        loaded.fingerprint,
        sections.join(","),
        logsafe::defang(&loaded.signature.to_string()),
        loaded.release.as_ref().map_or_else(|| "none".into(), |r| r.serial.to_string()),
        instance.workload.as_deref().map_or_else(|| "unknown".into(), quoted),
        loaded.settings.on_drift.as_str(),
        o.on_drift.as_str(),
        o.health_paths.as_str(),
        o.source_of_truth.as_str(),
        plugin.path_normalization.as_str(),
    );
    let guard = Guard::start(
        host,
        instance.clone(),
        &loaded,
        env,
        &plugin.section_fingerprints,
    );
    Configured::Accepted(Box::new(plugin), Box::new(guard))
}

/// The instance's state in the host's proxy-wide store: it outlives a VM and
/// a config push on the same proxy, so neither resets a drift or rolls the
/// serial back.
struct Store<'a, H> {
    host: &'a H,
    instance: &'a Instance,
}

impl<H: PluginHost> Store<'_, H> {
    fn read(&self, key: &str) -> Option<Vec<u8>> {
        self.host.store_get(key).map(|(v, _)| v)
    }

    fn write(&self, key: &str, value: &[u8]) {
        if self.host.store_set(key, value, None).is_err() {
            log::error!(
                "meshguard {}: the host refused its store; integrity state is per VM",
                self.instance.filter
            );
        }
    }

    /// Whether a drift was found and not cleared by a trusted check.
    fn drifted(&self) -> Option<bool> {
        flag(self.read(&self.instance.drift_key()).as_deref())
    }

    fn set_drifted(&self, fingerprint: &str, drifted: bool) {
        let value: &[u8] = if drifted { b"1" } else { b"0" };
        self.write(&self.instance.drift_key(), value);
        self.write(&self.instance.config_drift_key(fingerprint), value);
    }

    fn admitted(&self, fingerprint: &str) -> bool {
        self.read(&self.instance.admitted_key(fingerprint))
            .is_some_and(|v| v == b"1")
    }

    fn record_admitted(&self, fingerprint: &str) {
        let key = self.instance.admitted_key(fingerprint);
        if self.read(&key).is_none() {
            self.write(&key, b"1");
        }
    }

    fn newest_serial(&self) -> Option<NewestSerial> {
        NewestSerial::decode(&self.read(&self.instance.serial_key())?)
    }

    fn newest_issued(&self) -> Option<u64> {
        std::str::from_utf8(&self.read(&self.instance.issued_key())?)
            .ok()?
            .parse()
            .ok()
    }

    /// Raises a stored number-like value with a compare-and-swap.
    fn raise(&self, key: &str, value: &[u8], newer: impl Fn(&[u8]) -> bool) -> bool {
        for _ in 0..CAS_ATTEMPTS {
            let (current, version) = match self.host.store_get(key) {
                Some((v, version)) => (Some(v), Some(version)),
                None => (None, None),
            };
            if !current.as_deref().is_none_or(&newer) {
                return true;
            }
            match self.host.store_set(key, value, version) {
                Ok(()) => return true,
                Err(StoreError::Raced) => continue,
                Err(StoreError::Refused) => return false,
            }
        }
        false
    }

    fn record_issued(&self, issued: u64) {
        let older = |current: &[u8]| {
            std::str::from_utf8(current)
                .ok()
                .and_then(|c| c.parse::<u64>().ok())
                .is_none_or(|c| issued > c)
        };
        if !self.raise(
            &self.instance.issued_key(),
            issued.to_string().as_bytes(),
            older,
        ) {
            log::error!(
                "meshguard {}: could not record the intended document's time",
                self.instance.filter
            );
        }
    }

    fn record_serial(&self, serial: u64, fingerprint: &str) {
        let value = NewestSerial {
            serial,
            fingerprint: fingerprint.to_owned(),
            accepted_ms: Some(self.host.now_ms()),
        }
        .encode();
        let older =
            |current: &[u8]| NewestSerial::decode(current).is_none_or(|c| serial > c.serial);
        if !self.raise(&self.instance.serial_key(), value.as_bytes(), older) {
            log::error!(
                "meshguard {}: could not record serial {serial}",
                self.instance.filter
            );
        }
    }
}

/// Seconds since a document was issued; both are Unix milliseconds.
fn document_age_seconds(now_ms: u64, issued_ms: u64) -> u64 {
    now_ms.saturating_sub(issued_ms) / 1000
}

fn flag(value: Option<&[u8]>) -> Option<bool> {
    match value {
        Some(b"1") => Some(true),
        Some(b"0") => Some(false),
        _ => None,
    }
}

#[derive(Debug)]
struct DriftMetrics {
    drift: Gauge,
    unknown: Gauge,
    quarantined: Gauge,
    info: Gauge,
    check_age: Gauge,
    document_age: Gauge,
    /// A combined plugin's sections: (section, running fingerprint, gauge).
    section_drift: Vec<(Section, String, Gauge)>,
    source_errors: [Counter; CalloutFailure::ALL.len()],
    answers_refused: Vec<(AnswerRefusal, Counter)>,
}

/// What streams enforce, refreshed by the root on its timer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cached {
    /// The proxy-wide verdict on this config (another VM may have found it).
    quarantined: bool,
}

/// The integrity state of one loaded config (one root context).
#[derive(Debug)]
pub struct Guard {
    instance: Instance,
    monitor: DriftMonitor,
    settings: IntegritySettings,
    env: IntegrityEnv,
    metrics: DriftMetrics,
    enforcement: Enforcement,
    config_version: Option<String>,
    fingerprint: String,
    pending_call: Option<u32>,
    /// `None` until the first poll, which the first tick makes.
    last_poll_ms: Option<u64>,
    /// `issued` of the newest intended document this VM believed.
    believed_issued: Option<u64>,
    /// The sections the last believed document said differ (logged when
    /// this changes, not on every poll).
    differing_sections: Vec<Section>,
}

impl Guard {
    fn start<H: PluginHost>(
        host: &H,
        instance: Instance,
        loaded: &Loaded,
        env: IntegrityEnv,
        sections: &[(Section, String)],
    ) -> Self {
        let filter = instance.filter;
        let f = [("filter", filter)];
        let version = metrics::version_label(loaded.config_version.as_deref());
        let gauge = |name: &str| host.define_gauge(&tagged(name, &f));
        let counter = |name: &str| host.define_counter(&tagged(name, &f));
        let metrics = DriftMetrics {
            drift: gauge(metrics::CONFIG_DRIFT),
            unknown: gauge(metrics::CONFIG_UNKNOWN),
            quarantined: gauge(metrics::CONFIG_QUARANTINED),
            info: host.define_gauge(&tagged(
                metrics::CONFIG_INFO,
                &[("filter", filter), ("version", &version)],
            )),
            check_age: gauge(metrics::CONFIG_CHECK_AGE),
            document_age: gauge(metrics::INTENDED_DOCUMENT_AGE),
            section_drift: match instance.shape {
                Shape::Combined => sections
                    .iter()
                    .map(|(section, fp)| {
                        let gauge = host.define_gauge(&tagged(
                            metrics::CONFIG_SECTION_DRIFT,
                            &[("filter", filter), ("section", section.as_str())],
                        ));
                        (*section, fp.clone(), gauge)
                    })
                    .collect(),
                Shape::Single(_) => Vec::new(),
            },
            source_errors: CalloutFailure::ALL.map(|r| {
                host.define_counter(&tagged(
                    metrics::INTENDED_SOURCE_ERRORS,
                    &[("filter", filter), ("reason", r.as_str())],
                ))
            }),
            answers_refused: AnswerRefusal::ALL
                .iter()
                .map(|r| {
                    let name = tagged(
                        metrics::INTENDED_ANSWERS_REFUSED,
                        &[("filter", filter), ("reason", r.as_str())],
                    );
                    (*r, host.define_counter(&name))
                })
                .collect(),
        };
        let store = Store {
            host,
            instance: &instance,
        };
        let carried = store.drifted().unwrap_or(false);
        let believed_issued = store.newest_issued();
        let now = host.now_ms();
        let (monitor, transition) = DriftMonitor::new(loaded, now, carried);
        let enforcement = Enforcement {
            filter,
            on_drift: loaded.settings.on_drift,
            settings: Arc::new(loaded.settings.clone()),
            quarantine_status: loaded.settings.quarantine_status,
            cached: Arc::new(Shared::new(Cached::default())),
            quarantine_denied: counter(metrics::QUARANTINE_DENIED),
            release: loaded.release.as_ref().map(|release| ReleaseScope {
                release: Arc::new(release.clone()),
                newest: vm_newest(&instance.serial_key()),
                served_up_to: Arc::new(Shared::new(None)),
                grace_ms: env.drain_grace_ms(),
                denied: counter(metrics::CONFIG_SUPERSEDED_DENIED),
                drained: counter(metrics::CONFIG_SUPERSEDED_DRAINED),
                out_of_scope: counter(metrics::CONFIG_OUT_OF_SCOPE_DENIED),
            }),
        };
        let guard = Self {
            instance,
            monitor,
            settings: loaded.settings.clone(),
            env,
            metrics,
            enforcement,
            config_version: loaded.config_version.clone(),
            fingerprint: loaded.fingerprint.clone(),
            pending_call: None,
            last_poll_ms: None,
            believed_issued,
            differing_sections: Vec::new(),
        };
        host.set(guard.metrics.info, 1);
        host.set(guard.metrics.check_age, 0);
        guard.apply(host, transition);
        guard.refresh(host);
        guard
    }

    /// The root's timer: the shortest of the state refresh and the source of
    /// truth's poll interval.
    pub fn tick_period(&self) -> Duration {
        self.settings
            .source_of_truth
            .as_ref()
            .map_or(REFRESH_PERIOD, |s| {
                REFRESH_PERIOD.min(Duration::from_millis(s.poll_interval_ms))
            })
    }

    /// The fingerprint of the loaded config (hex SHA-256).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn filter(&self) -> &'static str {
        self.instance.filter
    }

    /// A handle for HTTP streams to enforce quarantine and supersession.
    pub fn enforcement(&self) -> Enforcement {
        self.enforcement.clone()
    }

    fn apply<H: PluginHost>(&self, host: &H, transition: Option<Transition>) {
        let state = self.monitor.state();
        host.set(self.metrics.drift, u64::from(state == DriftState::Drifted));
        host.set(
            self.metrics.unknown,
            u64::from(state == DriftState::Unknown),
        );
        // Only trusted checks move the shared state: a drift to 1, a
        // confirmation to 0; "unknown" leaves it as it was.
        if let Some(t) = &transition {
            let store = Store {
                host,
                instance: &self.instance,
            };
            match t.to {
                DriftState::Drifted => store.set_drifted(&self.fingerprint, true),
                DriftState::InSync => store.set_drifted(&self.fingerprint, false),
                DriftState::Unknown => {}
            }
        }
        host.set(
            self.metrics.quarantined,
            u64::from(self.monitor.quarantined()),
        );
        let mut cached = self.enforcement.cached.get();
        cached.quarantined = self.monitor.quarantined();
        self.enforcement.cached.set(cached);
        if let Some(t) = transition {
            let line = logsafe::defang(&t.message);
            match t.to {
                DriftState::Drifted => log::warn!("meshguard {}: {line}", self.instance.filter),
                DriftState::InSync | DriftState::Unknown => {
                    log::info!("meshguard {}: {line}", self.instance.filter)
                }
            }
        }
    }

    /// Reads the proxy-wide state streams enforce (two store reads per tick,
    /// none per request).
    fn refresh<H: PluginHost>(&self, host: &H) {
        let store = Store {
            host,
            instance: &self.instance,
        };
        let quarantined = self.settings.on_drift == OnDrift::Quarantine
            && flag(
                store
                    .read(&self.instance.config_drift_key(&self.fingerprint))
                    .as_deref(),
            )
            .unwrap_or_else(|| self.monitor.quarantined());
        if let Some(scope) = &self.enforcement.release {
            if let Some(newest) = store.newest_serial() {
                scope.newest.update(|known| match known {
                    Some((serial, _)) if serial >= newest.serial => known,
                    _ => Some((newest.serial, newest.accepted_ms)),
                });
            }
        }
        self.enforcement.cached.set(Cached { quarantined });
    }

    /// The root's timer: refreshes the enforced state and asks the source of
    /// truth when its poll is due (the first tick after a load polls at once).
    pub fn on_tick<H: PluginHost>(&mut self, host: &H) {
        self.refresh(host);
        let now = host.now_ms();
        host.set(self.metrics.check_age, self.monitor.check_age_seconds(now));
        if let Some(issued) = self.believed_issued {
            host.set(self.metrics.document_age, document_age_seconds(now, issued));
        }
        let Some(source) = &self.settings.source_of_truth else {
            return;
        };
        if self.pending_call.is_some() {
            return; // the previous call has not answered or timed out yet
        }
        if let Some(last) = self.last_poll_ms {
            if now.saturating_add(TICK_JITTER_MS) < last.saturating_add(source.poll_interval_ms) {
                return;
            }
        }
        self.last_poll_ms = Some(now);
        // One MESHGUARD_SOURCE_OF_TRUTH serves every plugin of the proxy.
        let path = source.path.replace("{filter}", self.instance.filter);
        let mut headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", source.authority.as_str()),
            ("x-meshguard-filter", self.instance.filter),
            ("x-meshguard-config-fingerprint", self.fingerprint.as_str()),
        ];
        if let Some(version) = &self.config_version {
            headers.push(("x-meshguard-config-version", version.as_str()));
        }
        match host.dispatch(
            &source.cluster,
            &headers,
            None,
            Duration::from_millis(source.timeout_ms),
        ) {
            Ok(token) => self.pending_call = Some(token),
            Err(status) => {
                let reason = format!("cannot call cluster {}: {status}", quoted(&source.cluster));
                self.failure(host, CalloutFailure::DispatchFailed, &reason);
            }
        }
    }

    /// A callout answered; false when it was not this guard's. Whatever the
    /// source did (no headers, a reset or a stall mid-body, a huge or
    /// malformed body, a redirect), the answer is read through total host
    /// calls and judged: a failure is counted, never a trap, and never
    /// touches traffic.
    pub fn on_callout_response<H: PluginHost>(
        &mut self,
        host: &H,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) -> bool {
        if self.pending_call != Some(token) {
            return false;
        }
        self.pending_call = None;
        let status = if num_headers == 0 {
            None
        } else {
            host.callout_status()
        };
        match status.as_deref() {
            Some("200") => {}
            None => {
                self.failure(
                    host,
                    CalloutFailure::NoAnswer,
                    "no answer (timeout or reset)",
                );
                return true;
            }
            Some(other) => {
                let reason = format!("status {}, not 200", quoted(other));
                self.failure(host, CalloutFailure::BadStatus, &reason);
                return true;
            }
        }
        if body_size > MAX_INTENDED_BYTES {
            self.failure(
                host,
                CalloutFailure::TooLarge,
                &format!("the answer is {body_size} bytes, over {MAX_INTENDED_BYTES}"),
            );
            return true;
        }
        let body = host.callout_body(body_size, MAX_INTENDED_BYTES);
        let now = host.now_ms();
        let store = Store {
            host,
            instance: &self.instance,
        };
        let at = AnswerContext {
            filter: self.instance.filter,
            workload: self.instance.workload.as_deref(),
            now_s: now / 1000,
            newest_issued: store.newest_issued(),
        };
        match read_answer(&body, &self.env, &at) {
            Ok(answer) => {
                store.record_issued(answer.issued);
                self.believed_issued = Some(
                    self.believed_issued
                        .map_or(answer.issued, |b| b.max(answer.issued)),
                );
                self.judge_sections(host, answer.sections.as_ref());
                let transition = self.monitor.observe(&answer.intended, now);
                host.set(self.metrics.check_age, self.monitor.check_age_seconds(now));
                host.set(
                    self.metrics.document_age,
                    document_age_seconds(now, answer.issued),
                );
                self.apply(host, transition);
            }
            Err(e) => {
                if let Some((_, counter)) = self
                    .metrics
                    .answers_refused
                    .iter()
                    .find(|(r, _)| *r == e.reason)
                {
                    host.add(*counter, 1);
                }
                if let Some((_, line)) = self.monitor.observe_untrusted(&e.to_string()) {
                    log::warn!(
                        "meshguard {}: {}",
                        self.instance.filter,
                        logsafe::defang(&line)
                    );
                }
                self.apply(host, None);
            }
        }
        true
    }

    /// Which sections differ from the ones a believed document names (a
    /// combined plugin; informational, the whole fingerprint decides drift).
    fn judge_sections<H: PluginHost>(
        &mut self,
        host: &H,
        intended: Option<&std::collections::BTreeMap<String, String>>,
    ) {
        let mut differing = Vec::new();
        for (section, running, gauge) in &self.metrics.section_drift {
            let differs = intended.is_some_and(|intended| {
                intended
                    .get(section.as_str())
                    .is_none_or(|fp| fp != running)
            });
            host.set(*gauge, u64::from(differs));
            if differs {
                differing.push(*section);
            }
        }
        if differing != self.differing_sections {
            let names: Vec<&str> = differing.iter().map(|s| s.as_str()).collect();
            log::info!(
                "meshguard {}: sections differing from the intended config: {}",
                self.instance.filter,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(",")
                }
            );
            self.differing_sections = differing;
        }
    }

    fn failure<H: PluginHost>(&mut self, host: &H, kind: CalloutFailure, reason: &str) {
        let slot = CalloutFailure::ALL.iter().position(|k| *k == kind);
        if let Some(counter) = slot.and_then(|i| self.metrics.source_errors.get(i)) {
            host.add(*counter, 1);
        }
        if let Some(line) = self.monitor.observe_failure(reason) {
            log::warn!(
                "meshguard {}: {}",
                self.instance.filter,
                logsafe::defang(&line)
            );
        }
    }

    /// The root is done: this config no longer runs.
    pub fn retire<H: PluginHost>(&self, host: &H) {
        host.set(self.metrics.info, 0);
    }
}

/// Quarantine, supersession and the release's Service scope, for streams.
#[derive(Debug, Clone)]
pub struct Enforcement {
    filter: &'static str,
    on_drift: OnDrift,
    settings: Arc<IntegritySettings>,
    quarantine_status: u16,
    cached: Arc<Shared<Cached>>,
    quarantine_denied: Counter,
    /// Set for a config signed with a release.
    release: Option<ReleaseScope>,
}

#[derive(Debug, Clone)]
struct ReleaseScope {
    release: Arc<Release>,
    /// The newest serial this VM knows for the instance (shared by its roots).
    newest: NewestCell,
    /// The highest downstream connection id this instance served while current.
    served_up_to: Arc<Shared<Option<u64>>>,
    grace_ms: u64,
    denied: Counter,
    drained: Counter,
    out_of_scope: Counter,
}

impl Enforcement {
    /// Refuses the request when this config instance is out of its release's
    /// Service scope, was superseded by a newer signed serial, or while
    /// quarantined (health paths excepted, matched on `path()`, the request's
    /// canonical path as rules match it, read only then; `None` when the
    /// request has none).
    pub fn enforce<'v, H: StreamHost>(
        &self,
        host: &mut H,
        path: impl FnOnce() -> Option<std::borrow::Cow<'v, str>>,
    ) -> Option<Flow> {
        self.out_of_scope(host)
            .or_else(|| self.superseded(host))
            .or_else(|| self.quarantined(host, path().as_deref()))
    }

    fn out_of_scope<H: StreamHost>(&self, host: &mut H) -> Option<Flow> {
        let scope = self.release.as_ref()?;
        scope.release.services.as_ref()?;
        let chain = host
            .attribute(Attribute::FilterChainName)
            .map(|c| String::from_utf8_lossy(&c).into_owned());
        if scope.release.covers_chain(chain.as_deref()) {
            return None;
        }
        host.add(scope.out_of_scope, 1);
        log::debug!(
            "meshguard {}: refused: the filter chain {} is not a Service this release is for",
            self.filter,
            quoted(chain.as_deref().unwrap_or("unknown"))
        );
        let body = format!(
            r#"{{"error":"config_out_of_scope","reason":"config_out_of_scope","filter":"{}"}}"#,
            self.filter
        );
        Some(json_reply(
            host,
            503,
            Some("config_out_of_scope"),
            body.as_bytes(),
        ))
    }

    /// Envoy serves a byte-identical plugin config from the instance it still
    /// holds, without `on_configure`, and a VM it creates later loads a
    /// config admitted before: a superseded instance refuses its traffic,
    /// except the connections it served while current, for the drain grace
    /// (`meshguard_core::integrity::succession`).
    fn superseded<H: StreamHost>(&self, host: &mut H) -> Option<Flow> {
        let scope = self.release.as_ref()?;
        let superseded_by = scope
            .newest
            .get()
            .filter(|(newest, _)| *newest > scope.release.serial);
        let connection = || {
            host.attribute(Attribute::ConnectionId)
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map(u64::from_le_bytes)
        };
        let Some((newest, accepted_ms)) = superseded_by else {
            // Current: remember the connections served (one attribute read
            // per request, only for signed releases).
            let connection = connection();
            scope.served_up_to.update(|served| served.max(connection));
            return None;
        };
        let newest_serial = NewestSerial {
            serial: newest,
            fingerprint: String::new(),
            accepted_ms,
        };
        let request = SuccessionRequest {
            connection: connection(),
            served_up_to: scope.served_up_to.get(),
            now_ms: host.now_ms(),
        };
        match succession(
            scope.release.serial,
            Some(&newest_serial),
            request,
            scope.grace_ms,
        ) {
            Succession::Current => None,
            Succession::Draining => {
                host.add(scope.drained, 1);
                None
            }
            Succession::Superseded => {
                host.add(scope.denied, 1);
                log::debug!(
                    "meshguard {}: refused: this config (serial {}) was superseded by serial {newest}",
                    self.filter,
                    scope.release.serial
                );
                // A 503 before anything reached the upstream: retriable
                // (Istio's default retry policy retries 503), and on a
                // draining listener the answer closes the HTTP/1 connection
                // or sends the HTTP/2 GOAWAY, so the retry reaches the
                // listener that runs the current config.
                let body = format!(
                    r#"{{"error":"config_superseded","reason":"config_superseded","filter":"{}"}}"#,
                    self.filter
                );
                Some(json_reply(
                    host,
                    503,
                    Some("config_superseded"),
                    body.as_bytes(),
                ))
            }
        }
    }

    fn quarantined<H: StreamHost>(&self, host: &mut H, path: Option<&str>) -> Option<Flow> {
        if self.on_drift != OnDrift::Quarantine || !self.cached.get().quarantined {
            return None;
        }
        if path.is_some_and(|p| self.settings.is_health_path(p)) {
            return None;
        }
        host.add(self.quarantine_denied, 1);
        // Debug: a quarantined workload refuses every request; the transition
        // was logged at warn once, and the counter carries the volume.
        log::debug!(
            "meshguard {}: quarantined: refused {} until the config matches the intended one",
            self.filter,
            quoted(path.unwrap_or("(unreadable path)"))
        );
        let body = format!(
            r#"{{"error":"quarantined","reason":"config_drift","filter":"{}"}}"#,
            self.filter
        );
        Some(json_reply(
            host,
            self.quarantine_status,
            Some("config_drift"),
            body.as_bytes(),
        ))
    }
}
