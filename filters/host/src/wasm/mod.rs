//! The proxy-wasm host: the ABI's exported callbacks, dispatched to the
//! pipeline, and [`StreamHost`] / [`PluginHost`] over the ABI's host
//! functions ([`abi`]).
//!
//! meshguard exports the ABI itself rather than through the SDK's
//! dispatcher: the SDK traps on a callout token it does not know and on any
//! host status its wrappers did not expect, and a trap fails every later
//! request of the VM. Here every callback is total: an unknown context or
//! token is ignored, a host refusal is an answer.
#![allow(unsafe_code)]

pub mod abi;

use hashbrown::HashMap;
use std::cell::RefCell;
use std::time::Duration;

use meshguard_core::request::parse_header_map;

use crate::host::{
    Attribute, Counter, Direction, Gauge, Map, Metrics, PluginHost, StoreError, StreamHost,
};
use crate::reply::Flow;
use crate::root::{PluginRoot, StreamContext};
use abi::{Buffer, MapKind, MetricKind};

/// The proxy-wasm host for the current callback (the host knows which
/// context is current).
#[derive(Debug, Clone, Copy, Default)]
pub struct Wasm;

fn map_kind(map: Map) -> MapKind {
    match map {
        Map::RequestHeaders => MapKind::RequestHeaders,
        Map::RequestTrailers => MapKind::RequestTrailers,
        Map::ResponseHeaders => MapKind::ResponseHeaders,
        Map::ResponseTrailers => MapKind::ResponseTrailers,
    }
}

fn body_buffer(direction: Direction) -> Buffer {
    match direction {
        Direction::Request => Buffer::RequestBody,
        Direction::Response => Buffer::ResponseBody,
    }
}

/// Every pair of a header map, decoded lossily.
fn pairs(map: MapKind) -> Option<Vec<(String, String)>> {
    let serialized = abi::header_map_pairs(map)?;
    let pairs = parse_header_map(&serialized)?;
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect(),
    )
}

fn now_ms() -> u64 {
    abi::now_ns().map_or(0, |ns| ns / 1_000_000)
}

impl Metrics for Wasm {
    fn add(&self, counter: Counter, n: u64) {
        if let (Some(id), Ok(n)) = (counter.0, i64::try_from(n)) {
            if n > 0 {
                abi::increment_metric(id, n);
            }
        }
    }

    fn set(&self, gauge: Gauge, value: u64) {
        if let Some(id) = gauge.0 {
            abi::record_metric(id, value);
        }
    }
}

impl StreamHost for Wasm {
    fn headers(&self, map: Map) -> Option<Vec<(String, String)>> {
        pairs(map_kind(map))
    }

    fn header(&self, map: Map, name: &str) -> Option<String> {
        abi::header_value(map_kind(map), name).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    fn set_header(&mut self, map: Map, name: &str, value: Option<&str>) -> bool {
        match value {
            Some(v) => abi::replace_header(map_kind(map), name, v),
            None => abi::remove_header(map_kind(map), name),
        }
    }

    fn add_header(&mut self, map: Map, name: &str, value: &str) -> bool {
        abi::add_header(map_kind(map), name, value)
    }

    fn body(&self, direction: Direction, start: usize, len: usize) -> Vec<u8> {
        abi::buffer(body_buffer(direction), start, len).unwrap_or_default()
    }

    fn replace_body(&mut self, direction: Direction, size: usize, data: &[u8]) -> bool {
        abi::set_buffer(body_buffer(direction), 0, size, data)
    }

    fn reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
        abi::send_local_response(status, headers, body)
    }

    fn reset(&mut self, direction: Direction) {
        let stream = match direction {
            Direction::Request => 0,
            Direction::Response => 1,
        };
        if !abi::close_stream(stream) {
            log::error!("meshguard: the host refused to reset a stream");
        }
    }

    fn attribute(&self, attribute: Attribute) -> Option<Vec<u8>> {
        let path: &[&str] = match attribute {
            Attribute::ConnectionMtls => &["connection", "mtls"],
            Attribute::TlsVersion => &["connection", "tls_version"],
            Attribute::PeerUriSan => &["connection", "uri_san_peer_certificate"],
            Attribute::LocalUriSan => &["connection", "uri_san_local_certificate"],
            Attribute::ConnectionId => &["connection", "id"],
            Attribute::WaypointPeerPrincipal => {
                &["filter_state", crate::view::WAYPOINT_PEER_PRINCIPAL]
            }
            Attribute::FilterChainName => &["xds", "filter_chain_name"],
        };
        abi::property(path)
    }

    fn publish(&mut self, key: &str, value: &str) -> bool {
        abi::set_property(key, value.as_bytes())
    }

    fn published(&self, key: &str) -> Option<String> {
        abi::property(&[key]).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn wake(&mut self, wakeup: u32) -> bool {
        abi::enqueue_shared_queue(wakeup, b"w")
    }
}

impl PluginHost for Wasm {
    fn configuration(&self) -> Vec<u8> {
        abi::buffer(Buffer::PluginConfiguration, 0, usize::MAX).unwrap_or_default()
    }

    fn env(&self, name: &str) -> Option<String> {
        // Envoy hands vmConfig.env to the VM through WASI.
        std::env::var(name).ok()
    }

    fn property(&self, path: &[&str]) -> Option<String> {
        abi::property(path).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn define_counter(&self, name: &str) -> Counter {
        define(MetricKind::Counter, name).map_or(Counter(None), |id| Counter(Some(id)))
    }

    fn define_gauge(&self, name: &str) -> Gauge {
        define(MetricKind::Gauge, name).map_or(Gauge(None), |id| Gauge(Some(id)))
    }

    fn gauge_value(&self, gauge: Gauge) -> Option<u64> {
        abi::metric(gauge.0?)
    }

    fn store_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        abi::shared_data(key).filter(|(value, _)| !value.is_empty())
    }

    fn store_set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
        abi::set_shared_data(key, value, version.unwrap_or(0)).map_err(|raced| {
            if raced {
                StoreError::Raced
            } else {
                StoreError::Refused
            }
        })
    }

    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        let timeout = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        abi::http_call(cluster, headers, body, timeout).map_err(|status| format!("status {status}"))
    }

    fn callout_status(&self) -> Option<String> {
        abi::header_value(MapKind::CalloutResponseHeaders, ":status")
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    fn callout_body(&self, size: usize, max: usize) -> Vec<u8> {
        abi::buffer(Buffer::CalloutResponseBody, 0, size.min(max)).unwrap_or_default()
    }

    fn set_tick(&self, period: Duration) -> bool {
        abi::set_tick_period_ms(u32::try_from(period.as_millis()).unwrap_or(u32::MAX))
    }

    fn done(&self) -> bool {
        abi::done()
    }

    fn register_wakeup(&self, name: &str) -> Option<u32> {
        // Shared queues are shared by every VM with the same vm_id: the name
        // carries the VM's chain id, so each VM wakes only itself.
        abi::register_shared_queue(name)
    }
}

fn define(kind: MetricKind, name: &str) -> Option<u32> {
    let id = abi::define_metric(kind, name);
    if id.is_none() {
        log::warn!(
            "meshguard: could not define metric {}",
            meshguard_core::logsafe::quote(name)
        );
    }
    id
}

/// The log backend: Envoy's `wasm` logger, at the host's level.
struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

/// Follows the host's own log level, so a line Envoy would drop is never
/// formatted nor crosses the host boundary. Called on every configuration: a
/// level changed through Envoy's admin applies from the next one on.
fn follow_host_log_level() {
    let filter = match abi::log_level() {
        Some(0) => log::LevelFilter::Trace,
        Some(1) => log::LevelFilter::Debug,
        Some(2) | None => log::LevelFilter::Info,
        Some(3) => log::LevelFilter::Warn,
        Some(4) => log::LevelFilter::Error,
        Some(_) => log::LevelFilter::Off,
    };
    log::set_max_level(filter);
}

/// Every context of this VM. A VM is single-threaded: the registry is per
/// thread, and each callback takes its context out while it runs, so a
/// callback the host might make from inside a host call finds nothing
/// rather than a context already borrowed.
#[derive(Default)]
struct Contexts {
    roots: HashMap<u32, PluginRoot>,
    /// Each HTTP stream and its root context id.
    streams: HashMap<u32, (u32, StreamContext)>,
}

thread_local! {
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

fn with_root<T>(id: u32, f: impl FnOnce(&mut PluginRoot) -> T) -> Option<T> {
    let mut root = CONTEXTS.with(|c| c.try_borrow_mut().ok()?.roots.remove(&id))?;
    let out = f(&mut root);
    CONTEXTS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.roots.insert(id, root);
        }
    });
    Some(out)
}

fn with_stream<T>(id: u32, f: impl FnOnce(&mut StreamContext) -> T) -> Option<T> {
    let (root, mut stream) = CONTEXTS.with(|c| c.try_borrow_mut().ok()?.streams.remove(&id))?;
    let out = f(&mut stream);
    CONTEXTS.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            c.streams.insert(id, (root, stream));
        }
    });
    Some(out)
}

fn action(flow: Option<Flow>) -> u32 {
    match flow {
        Some(Flow::Stop) => 1,
        // An unknown context (never created, already gone) has nothing to hold.
        Some(Flow::Continue) | None => 0,
    }
}

/// Installs the log backend (once per VM).
fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// The WASI reactor's entry point: runs static constructors, then installs
/// the log backend.
pub fn initialize() {
    extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: called once by the host before any other export, as WASI
    // reactors require.
    unsafe { __wasm_call_ctors() };
    init();
}

/// The host allocates the memory it hands back to us through this (a boxed
/// slice of exactly `size` bytes, which `abi::owned` takes back).
pub fn on_memory_allocate(size: usize) -> *mut u8 {
    let mut block: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: the capacity is `size`; the host writes every byte before the
    // module reads any (it hands back exactly the bytes it filled).
    unsafe { block.set_len(size) };
    Box::into_raw(block.into_boxed_slice()).cast::<u8>()
}

pub fn on_context_create(context_id: u32, parent_id: u32) {
    CONTEXTS.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return;
        };
        if parent_id == 0 {
            c.roots.insert(context_id, PluginRoot::new(context_id));
            return;
        }
        let stream = c.roots.get(&parent_id).map(|root| root.stream(&Wasm));
        // A stream whose root is unknown gets the unconfigured stream: it
        // refuses its request rather than passing it unchecked.
        let stream = stream.unwrap_or_else(StreamContext::unconfigured);
        c.streams.insert(context_id, (parent_id, stream));
    });
}

pub fn on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> bool {
    true
}

pub fn on_configure(context_id: u32, _size: usize) -> bool {
    follow_host_log_level();
    with_root(context_id, |root| root.configure(&mut Wasm)).unwrap_or(false)
}

pub fn on_tick(context_id: u32) {
    with_root(context_id, |root| root.tick(&mut Wasm));
}

pub fn on_queue_ready(context_id: u32, queue_id: u32) {
    with_root(context_id, |root| {
        while abi::dequeue_shared_queue(queue_id).is_some() {}
        root.queue_ready(&mut Wasm, queue_id);
    });
}

pub fn on_http_call_response(
    context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    with_root(context_id, |root| {
        root.callout_response(&mut Wasm, token, num_headers, body_size)
    });
}

pub fn on_request_headers(context_id: u32, _n: usize, end: bool) -> u32 {
    action(with_stream(context_id, |s| {
        s.request_headers(&mut Wasm, end)
    }))
}

pub fn on_request_body(context_id: u32, size: usize, end: bool) -> u32 {
    action(with_stream(context_id, |s| {
        s.body(&mut Wasm, Direction::Request, size, end)
    }))
}

pub fn on_request_trailers(context_id: u32, _n: usize) -> u32 {
    action(with_stream(context_id, |s| {
        s.trailers(&mut Wasm, Direction::Request)
    }))
}

pub fn on_response_headers(context_id: u32, _n: usize, end: bool) -> u32 {
    action(with_stream(context_id, |s| {
        s.response_headers(&mut Wasm, end)
    }))
}

pub fn on_response_body(context_id: u32, size: usize, end: bool) -> u32 {
    action(with_stream(context_id, |s| {
        s.body(&mut Wasm, Direction::Response, size, end)
    }))
}

pub fn on_response_trailers(context_id: u32, _n: usize) -> u32 {
    action(with_stream(context_id, |s| {
        s.trailers(&mut Wasm, Direction::Response)
    }))
}

pub fn on_log(context_id: u32) {
    with_stream(context_id, |s| s.log(&mut Wasm));
}

pub fn on_done(context_id: u32) -> bool {
    // A root with audit records still to deliver answers "not yet" and calls
    // `proxy_done` once they are delivered (or given up); a stream is done.
    with_root(context_id, |root| root.done(&mut Wasm)).unwrap_or(true)
}

pub fn on_delete(context_id: u32) {
    let removed = CONTEXTS.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let stream = c.streams.remove(&context_id).map(|(_, s)| s);
        let root = c.roots.remove(&context_id);
        Some((stream, root))
    });
    // Dropped outside the registry's borrow: a stream's drop may count and log.
    if let Some((Some(mut stream), _)) = removed {
        stream.finish(&mut Wasm);
    }
}

/// Exports the proxy-wasm ABI (0.2.1) from the calling cdylib, every
/// callback going to the pipeline: the body of the meshguard module.
#[macro_export]
macro_rules! export_proxy_wasm {
    () => {
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn _initialize() {
            $crate::wasm::initialize()
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_abi_version_0_2_1() {}
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
            $crate::wasm::on_memory_allocate(size)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_context_create(context_id: u32, parent_id: u32) {
            $crate::wasm::on_context_create(context_id, parent_id)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_vm_start(context_id: u32, size: usize) -> bool {
            $crate::wasm::on_vm_start(context_id, size)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_configure(context_id: u32, size: usize) -> bool {
            $crate::wasm::on_configure(context_id, size)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_tick(context_id: u32) {
            $crate::wasm::on_tick(context_id)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_queue_ready(context_id: u32, queue_id: u32) {
            $crate::wasm::on_queue_ready(context_id, queue_id)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_http_call_response(
            context_id: u32,
            token: u32,
            headers: usize,
            body: usize,
            trailers: usize,
        ) {
            $crate::wasm::on_http_call_response(context_id, token, headers, body, trailers)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_request_headers(context_id: u32, n: usize, end: bool) -> u32 {
            $crate::wasm::on_request_headers(context_id, n, end)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_request_body(context_id: u32, size: usize, end: bool) -> u32 {
            $crate::wasm::on_request_body(context_id, size, end)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_request_trailers(context_id: u32, n: usize) -> u32 {
            $crate::wasm::on_request_trailers(context_id, n)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_response_headers(context_id: u32, n: usize, end: bool) -> u32 {
            $crate::wasm::on_response_headers(context_id, n, end)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_response_body(context_id: u32, size: usize, end: bool) -> u32 {
            $crate::wasm::on_response_body(context_id, size, end)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_response_trailers(context_id: u32, n: usize) -> u32 {
            $crate::wasm::on_response_trailers(context_id, n)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_log(context_id: u32) {
            $crate::wasm::on_log(context_id)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_done(context_id: u32) -> bool {
            $crate::wasm::on_done(context_id)
        }
        #[allow(unsafe_code)] // the ABI's exports: the host calls them by name
        #[no_mangle]
        pub extern "C" fn proxy_on_delete(context_id: u32) {
            $crate::wasm::on_delete(context_id)
        }
    };
}
