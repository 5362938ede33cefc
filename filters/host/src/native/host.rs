//! [`StreamHost`] and [`PluginHost`] over the dynamic-module ABI: the same
//! answers the proxy-wasm host gives, from Envoy's native calls.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::host::{
    Attribute, Counter, Direction, Gauge, Map, Metrics, PluginHost, StoreError, StreamHost,
};
use crate::view::WAYPOINT_PEER_PRINCIPAL;

use super::abi::{
    self, AttributeId, Body, CalloutAnswer, ConfigPtr, FilterPtr, HeaderMap, Scheduler,
};
use super::{store, ticker};

/// The metric namespace of every meshguard metric (the config's
/// `metrics_namespace`): `meshguard.<name>` in `/stats`,
/// `envoy_meshguard_<name>` in Prometheus.
pub const METRICS_NAMESPACE: &str = "meshguard";

/// Where a stream publishes what later meshguard filters of its chain read:
/// dynamic metadata, which the stream can overwrite (a later filter
/// republishes the view it judged) and a client cannot set.
const PUBLISHED_NAMESPACE: &str = "meshguard";

/// A config's part every host call needs: its Envoy pointer, its
/// scheduler, its names and bytes. Shared by the root (main thread) and
/// every stream (workers).
#[derive(Debug)]
pub struct ConfigCore {
    pub envoy: ConfigPtr,
    /// Unique in the process, for the ticker.
    pub id: u64,
    pub scheduler: Option<Arc<Scheduler>>,
    pub tick_pending: Arc<AtomicBool>,
    /// The plugin's root id and name (from the filter's `filter_name`).
    pub root_id: String,
    pub plugin_name: String,
    /// The plugin config.
    pub configuration: Vec<u8>,
    next_wakeup: AtomicU32,
}

impl ConfigCore {
    pub fn new(
        envoy: ConfigPtr,
        id: u64,
        scheduler: Option<Scheduler>,
        root_id: String,
        plugin_name: String,
        configuration: Vec<u8>,
    ) -> Self {
        Self {
            envoy,
            id,
            scheduler: scheduler.map(Arc::new),
            tick_pending: Arc::new(AtomicBool::new(false)),
            root_id,
            plugin_name,
            configuration,
            next_wakeup: AtomicU32::new(0),
        }
    }
}

/// The name a meshguard metric has natively: the namespace replaces the
/// `meshguard_` prefix (`meshguard_audit_records_total.result=.=emitted;.;`
/// becomes `meshguard.audit_records_total.result=.=emitted;.;`). Tags stay
/// embedded as the Wasm build writes them, so the same `stats_tags` (Istio:
/// `extraStatTags`) turn them into labels.
pub fn metric_name(tagged: &str) -> &str {
    tagged.strip_prefix("meshguard_").unwrap_or(tagged)
}

fn add(config: ConfigPtr, counter: Counter, n: u64) {
    if let (Some(id), true) = (counter.0.and_then(|id| usize::try_from(id).ok()), n > 0) {
        abi::increment_counter(config, id, n);
    }
}

fn set(config: ConfigPtr, gauge: Gauge, value: u64) {
    if let Some(id) = gauge.0.and_then(|id| usize::try_from(id).ok()) {
        abi::set_gauge(config, id, value);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn header_map(map: Map) -> HeaderMap {
    match map {
        Map::RequestHeaders => HeaderMap::RequestHeaders,
        Map::RequestTrailers => HeaderMap::RequestTrailers,
        Map::ResponseHeaders => HeaderMap::ResponseHeaders,
        Map::ResponseTrailers => HeaderMap::ResponseTrailers,
    }
}

/// The buffered and received bodies of a direction.
fn bodies(direction: Direction) -> (Body, Body) {
    match direction {
        Direction::Request => (Body::BufferedRequest, Body::ReceivedRequest),
        Direction::Response => (Body::BufferedResponse, Body::ReceivedResponse),
    }
}

/// One stream, during one hook.
#[derive(Debug)]
pub struct NativeStream<'a> {
    /// `None` once Envoy destroyed the stream: every call answers nothing.
    filter: Option<FilterPtr>,
    config: &'a ConfigCore,
    /// The direction whose body hook is running: its received data exists.
    receiving: Option<Direction>,
}

impl<'a> NativeStream<'a> {
    pub fn new(
        filter: Option<FilterPtr>,
        config: &'a ConfigCore,
        receiving: Option<Direction>,
    ) -> Self {
        Self {
            filter,
            config,
            receiving,
        }
    }

    /// What the host holds of a direction's body: (buffered, received)
    /// sizes. The received data is what a body hook was called with; when
    /// an earlier filter buffered and released it, Envoy reports it as both,
    /// and it is counted once.
    fn held(&self, filter: FilterPtr, direction: Direction) -> (usize, usize) {
        let (buffered, received) = bodies(direction);
        if self.receiving != Some(direction) {
            return (abi::body_size(filter, buffered), 0);
        }
        let request = direction == Direction::Request;
        let received_size = abi::body_size(filter, received);
        if abi::received_is_buffered(filter, request) {
            return (0, received_size);
        }
        (abi::body_size(filter, buffered), received_size)
    }

    /// Bytes the host holds of a direction's body (for a body hook).
    pub fn held_size(&self, direction: Direction) -> usize {
        self.filter.map_or(0, |filter| {
            let (buffered, received) = self.held(filter, direction);
            buffered.saturating_add(received)
        })
    }

    /// Sends the response details Envoy's access log shows for a reply.
    fn details(headers: &[(&str, &str)]) -> String {
        let reason = headers
            .iter()
            .find(|(k, _)| *k == "x-meshguard-deny-reason")
            .map_or("local_reply", |(_, v)| *v);
        format!("meshguard_{reason}")
    }
}

impl Metrics for NativeStream<'_> {
    fn add(&self, counter: Counter, n: u64) {
        add(self.config.envoy, counter, n);
    }

    fn set(&self, gauge: Gauge, value: u64) {
        set(self.config.envoy, gauge, value);
    }
}

impl StreamHost for NativeStream<'_> {
    fn headers(&self, map: Map) -> Option<Vec<(String, String)>> {
        abi::headers(self.filter?, header_map(map))
    }

    fn header(&self, map: Map, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        abi::header(self.filter?, header_map(map), &name)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    fn set_header(&mut self, map: Map, name: &str, value: Option<&str>) -> bool {
        let Some(filter) = self.filter else {
            return false;
        };
        let name = name.to_ascii_lowercase();
        abi::set_header(filter, header_map(map), &name, value)
    }

    fn add_header(&mut self, map: Map, name: &str, value: &str) -> bool {
        let Some(filter) = self.filter else {
            return false;
        };
        let name = name.to_ascii_lowercase();
        abi::add_header(filter, header_map(map), &name, value)
    }

    fn body(&self, direction: Direction, start: usize, len: usize) -> Vec<u8> {
        let Some(filter) = self.filter else {
            return Vec::new();
        };
        let (buffered_size, received_size) = self.held(filter, direction);
        let total = buffered_size.saturating_add(received_size);
        let mut out = Vec::with_capacity(len.min(total.saturating_sub(start)));
        let (buffered, received) = bodies(direction);
        let mut from = start;
        if buffered_size > 0 {
            let size = abi::read_body(filter, buffered, from, len, &mut out);
            from = from.saturating_sub(size);
        }
        if received_size > 0 && out.len() < len {
            abi::read_body(filter, received, from, len, &mut out);
        }
        out
    }

    fn replace_body(&mut self, direction: Direction, size: usize, data: &[u8]) -> bool {
        let Some(filter) = self.filter else {
            return false;
        };
        let (buffered_size, received_size) = self.held(filter, direction);
        let total = buffered_size.saturating_add(received_size);
        // What follows the replaced bytes is kept after the new ones.
        let kept = if size < total {
            self.body(direction, size, total.saturating_sub(size))
        } else {
            Vec::new()
        };
        let (buffered, received) = bodies(direction);
        let mut done = true;
        if buffered_size > 0 {
            done &= abi::drain_body(filter, buffered, buffered_size);
        }
        // New bytes go where the rest of the stream will follow them: the
        // received data inside a body hook, else the buffered body.
        let target = if self.receiving == Some(direction) {
            if received_size > 0 {
                done &= abi::drain_body(filter, received, received_size);
            }
            received
        } else {
            buffered
        };
        done &= data.is_empty() || abi::append_body(filter, target, data);
        done &= kept.is_empty() || abi::append_body(filter, target, &kept);
        done
    }

    fn reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
        let Some(filter) = self.filter else {
            return false;
        };
        // The ABI hands Envoy a gRPC status of 0 (OK) for every local reply:
        // a refused gRPC call would read as a success. Envoy keeps a
        // `grpc-status` the reply already carries, so it is set here as
        // Envoy (and the Wasm build) derives it from the HTTP status.
        let grpc = abi::header(filter, HeaderMap::RequestHeaders, "content-type")
            .is_some_and(|t| t.starts_with(b"application/grpc"));
        let code = grpc_status(status).to_string();
        let mut all = headers.to_vec();
        if grpc
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("grpc-status"))
        {
            all.push(("grpc-status", &code));
        }
        abi::send_response(filter, status, &all, body, &Self::details(headers));
        true
    }

    fn reset(&mut self, _direction: Direction) {
        if let Some(filter) = self.filter {
            abi::reset_stream(filter, "meshguard_reset");
        }
    }

    fn attribute(&self, attribute: Attribute) -> Option<Vec<u8>> {
        let filter = self.filter?;
        match attribute {
            Attribute::ConnectionMtls => abi::attribute_bool(filter, AttributeId::ConnectionMtls)
                .map(|mtls| vec![u8::from(mtls)]),
            Attribute::TlsVersion => {
                abi::attribute_string(filter, AttributeId::ConnectionTlsVersion)
            }
            Attribute::PeerUriSan => {
                abi::attribute_string(filter, AttributeId::ConnectionUriSanPeerCertificate)
            }
            Attribute::LocalUriSan => {
                abi::attribute_string(filter, AttributeId::ConnectionUriSanLocalCertificate)
            }
            Attribute::ConnectionId => abi::attribute_int(filter, AttributeId::ConnectionId)
                .map(|id| id.to_le_bytes().to_vec()),
            Attribute::WaypointPeerPrincipal => abi::filter_state(filter, WAYPOINT_PEER_PRINCIPAL),
            Attribute::FilterChainName => {
                abi::attribute_string(filter, AttributeId::XdsFilterChainName)
            }
        }
    }

    fn publish(&mut self, key: &str, value: &str) -> bool {
        let Some(filter) = self.filter else {
            return false;
        };
        abi::set_metadata(filter, PUBLISHED_NAMESPACE, key, value);
        true
    }

    fn published(&self, key: &str) -> Option<String> {
        abi::metadata(self.filter?, PUBLISHED_NAMESPACE, key)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn wake(&mut self, wakeup: u32) -> bool {
        match &self.config.scheduler {
            Some(scheduler) => {
                scheduler.commit(ticker::WAKEUP_BASE.saturating_add(u64::from(wakeup)));
                true
            }
            None => false,
        }
    }
}

/// A config's root, during one config hook (main thread).
#[derive(Debug)]
pub struct NativeRoot<'a> {
    config: &'a ConfigCore,
    /// Inside the callout hook: the answer.
    answer: Option<CalloutAnswer>,
}

impl<'a> NativeRoot<'a> {
    pub fn new(config: &'a ConfigCore, answer: Option<CalloutAnswer>) -> Self {
        Self { config, answer }
    }
}

/// A node metadata value: Istio turns every `ISTIO_META_<KEY>` variable of
/// the proxy's environment into node metadata `<KEY>` (and the pod's
/// namespace is `POD_NAMESPACE`); the native module reads them from Envoy's
/// process environment.
fn node_metadata(key: &str) -> Option<String> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    from_env(&format!("ISTIO_META_{key}")).or_else(|| {
        (key == "NAMESPACE")
            .then(|| from_env("POD_NAMESPACE"))
            .flatten()
    })
}

impl Metrics for NativeRoot<'_> {
    fn add(&self, counter: Counter, n: u64) {
        add(self.config.envoy, counter, n);
    }

    fn set(&self, gauge: Gauge, value: u64) {
        set(self.config.envoy, gauge, value);
    }
}

impl PluginHost for NativeRoot<'_> {
    fn configuration(&self) -> Vec<u8> {
        self.config.configuration.clone()
    }

    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn property(&self, path: &[&str]) -> Option<String> {
        match path {
            ["plugin_root_id"] => Some(self.config.root_id.clone()),
            ["plugin_name"] => Some(self.config.plugin_name.clone()),
            ["xds", "node", "metadata", key] => node_metadata(key),
            _ => None,
        }
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn define_counter(&self, name: &str) -> Counter {
        Counter(define(self.config.envoy, false, name))
    }

    fn define_gauge(&self, name: &str) -> Gauge {
        Gauge(define(self.config.envoy, true, name))
    }

    fn gauge_value(&self, _gauge: Gauge) -> Option<u64> {
        // The ABI cannot read a gauge back; only the Wasm VM-memory gauge
        // (not defined natively) needs it.
        None
    }

    fn store_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        store::get(key).filter(|(value, _)| !value.is_empty())
    }

    fn store_set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
        store::set(key, value, version)
    }

    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let id = abi::config_callout(self.config.envoy, cluster, headers, body, timeout_ms)
            .map_err(|result| format!("callout refused ({})", callout_refusal(result)))?;
        u32::try_from(id).map_err(|_| "callout ids exhausted".to_owned())
    }

    fn callout_status(&self) -> Option<String> {
        self.answer.as_ref()?.status.clone()
    }

    fn callout_body(&self, size: usize, max: usize) -> Vec<u8> {
        let Some(answer) = &self.answer else {
            return Vec::new();
        };
        let n = size.min(max).min(answer.body.len());
        answer.body.get(..n).unwrap_or_default().to_vec()
    }

    fn set_tick(&self, period: Duration) -> bool {
        match &self.config.scheduler {
            Some(scheduler) => {
                ticker::schedule(self.config.id, scheduler, period, &self.config.tick_pending)
            }
            None => false,
        }
    }

    fn done(&self) -> bool {
        // Envoy's config destroy hook does not wait for a module: the root
        // retires at once there (`PluginRoot::hand_over`) and never
        // answers "not yet", so there is nothing to tell Envoy later.
        true
    }

    fn register_wakeup(&self, _name: &str) -> Option<u32> {
        // A config's wakeups reach only its own root: ids are per config.
        self.config.scheduler.as_ref()?;
        Some(self.config.next_wakeup.fetch_add(1, Ordering::Relaxed))
    }
}

fn define(config: ConfigPtr, gauge: bool, name: &str) -> Option<u32> {
    let id =
        abi::define_metric(config, gauge, metric_name(name)).and_then(|id| u32::try_from(id).ok());
    if id.is_none() {
        log::warn!(
            "meshguard: could not define metric {}",
            meshguard_core::logsafe::quote(name)
        );
    }
    id
}

/// The gRPC status of a local reply with HTTP `status`, as Envoy maps it
/// (`Grpc::Utility::httpToGrpcStatus`, after gRPC's HTTP mapping).
fn grpc_status(status: u16) -> u8 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// `envoy_dynamic_module_type_http_callout_init_result`, named.
fn callout_refusal(result: u32) -> &'static str {
    match result {
        1 => "missing required headers",
        2 => "cluster not found",
        3 => "duplicate callout id",
        4 => "cannot create request",
        _ => "unknown result",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_replies_to_grpc_calls_carry_envoys_grpc_status_for_their_http_status() {
        for (http, grpc) in [(400, 13), (401, 16), (403, 7), (404, 12), (413, 2)] {
            assert_eq!(grpc_status(http), grpc, "{http}");
        }
        for unavailable in [429, 502, 503, 504] {
            assert_eq!(grpc_status(unavailable), 14, "{unavailable}");
        }
    }

    #[test]
    fn native_metric_names_drop_the_prefix_the_namespace_replaces() {
        for (tagged, native) in [
            (
                "meshguard_audit_records_total.result=.=emitted;.;",
                "audit_records_total.result=.=emitted;.;",
            ),
            ("meshguard_config_drift", "config_drift"),
            ("other", "other"),
        ] {
            assert_eq!(metric_name(tagged), native, "{tagged}");
        }
    }
}
