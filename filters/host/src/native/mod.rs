//! The Envoy dynamic-module host: meshguard as a native `cdylib` loaded by
//! `envoy.filters.http.dynamic_modules` (ABI "v0.2.0", Envoy 1.40), running
//! the same [`PluginRoot`] and pipeline as the proxy-wasm module.
//!
//! How proxy-wasm's model maps onto Envoy's dynamic modules:
//!
//! | proxy-wasm | native |
//! | --- | --- |
//! | a root context per plugin and VM (one VM per worker) | one [`PluginRoot`] per filter config, on Envoy's main thread: configured once in `config_new` (a refusal returns NULL: Envoy refuses the config) |
//! | a stream context in the worker's VM | a stream on its worker, running the config's one pipeline (shared by every worker) |
//! | `vmConfig.env` | Envoy's process environment, read on the main thread |
//! | `plugin_root_id` / `plugin_name` | the filter's `filter_name`: `ROOT_ID` or `ROOT_ID:PLUGIN_NAME` |
//! | node metadata `NAMESPACE`, `WORKLOAD_NAME` | `ISTIO_META_<KEY>` (and `POD_NAMESPACE`) in the process environment |
//! | shared data (CAS) | process memory ([`store`]), same semantics |
//! | the root's tick | a module thread committing the config's scheduler ([`ticker`]) |
//! | root callouts | config-level HTTP callouts (main thread) |
//! | a stream waking its root (shared queue) | a config scheduler event |
//! | filter state `wasm.<key>` between plugins | dynamic metadata namespace `meshguard` |
//! | `wasmcustom.<name>` metrics | `meshguard.<name>` (metrics namespace `meshguard`) |
//! | a trap fails the VM | every hook catches panics: the stream is refused (`503`, `meshguard_internal_error`) or reset, Envoy keeps running |
#![allow(unsafe_code)]

pub mod abi;
pub mod handoff;
pub mod host;
pub mod store;
pub mod ticker;

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use meshguard_core::logsafe;
use meshguard_core::metrics::{tagged, PANICS};
use meshguard_core::plugin::Shape;

use crate::host::{Counter, Direction, Metrics, PluginHost, StreamHost};
use crate::reply::{json_reply, Flow};
use crate::root::{PluginRoot, StreamContext, Streams, RETIRE_GRACE};
use crate::sync::Lock;
use abi::{CalloutAnswer, ConfigPtr, EnvoyBuffer, FilterPtr, Header, LogLevel};
use host::{ConfigCore, NativeRoot, NativeStream};

/// The reason a stream gets when the module itself failed (a panic).
pub const INTERNAL_ERROR: &str = "meshguard_internal_error";

// The pipeline is shared by every worker, the root lives in a Sync config.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    const fn sent<T: Send>() {}
    shared::<crate::pipeline::Pipeline>();
    shared::<Streams>();
    shared::<Config>();
    sent::<PluginRoot>();
};

// ---------------------------------------------------------------- process

/// The log backend: Envoy's `dynamic_modules` logger, filtered by its level
/// before any line is formatted.
struct Logger;

static LOGGER: Logger = Logger;

fn level(level: log::Level) -> LogLevel {
    match level {
        log::Level::Trace => LogLevel::Trace,
        log::Level::Debug => LogLevel::Debug,
        log::Level::Info => LogLevel::Info,
        log::Level::Warn => LogLevel::Warn,
        log::Level::Error => LogLevel::Error,
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        abi::log_enabled(level(metadata.level()))
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            abi::log(level(record.level()), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

/// `envoy_dynamic_module_on_program_init`: once per process, on the main
/// thread. Installs the log backend and a panic hook that logs through
/// Envoy (escaped), and names the ABI version this module targets.
pub fn on_program_init() -> *const c_char {
    let init = catch_unwind(|| {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let location = info
                .location()
                .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
            abi::log(
                LogLevel::Error,
                &format!(
                    "meshguard: panicked at {location}: {}",
                    logsafe::escape(&message)
                ),
            );
        }));
        log::info!(
            "meshguard: native module {} loaded, built for the dynamic-module ABI {} (Envoy 1.40)",
            env!("CARGO_PKG_VERSION"),
            abi::ABI_VERSION.to_string_lossy()
        );
        abi::ABI_VERSION.as_ptr()
    });
    // NULL makes Envoy refuse the module.
    init.unwrap_or(std::ptr::null())
}

// ---------------------------------------------------------------- configs

/// One filter config: the root (main thread only) and what its streams run.
#[derive(Debug)]
pub struct Config {
    core: ConfigCore,
    streams: Streams,
    root: Lock<PluginRoot>,
    panics: Counter,
}

/// Config ids for the ticker (never reused).
static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

/// The root id and plugin name a `filter_name` gives: `ROOT_ID` or
/// `ROOT_ID:PLUGIN_NAME` (the plugin name keys the integrity state; it
/// defaults to the root id).
pub fn names(filter_name: &str) -> (String, String) {
    match filter_name.split_once(':') {
        Some((root_id, plugin_name)) => (root_id.to_owned(), plugin_name.to_owned()),
        None => (filter_name.to_owned(), filter_name.to_owned()),
    }
}

/// The plugin config from the filter config's bytes: the JSON itself (a
/// `google.protobuf.StringValue` or `Struct`), or Envoy Gateway's wrapper,
/// an object whose only key `config` holds it (as text or as an object).
pub fn plugin_config(bytes: &[u8]) -> Vec<u8> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(bytes)
    else {
        return bytes.to_vec();
    };
    match (map.len(), map.get("config")) {
        (1, Some(serde_json::Value::String(text))) => text.clone().into_bytes(),
        (1, Some(object @ serde_json::Value::Object(_))) => object.to_string().into_bytes(),
        _ => bytes.to_vec(),
    }
}

/// `envoy_dynamic_module_on_http_filter_config_new` (main thread): loads
/// the plugin config; NULL refuses it.
///
/// # Safety
/// Envoy's arguments to the hook.
pub unsafe fn on_config_new(
    config_envoy: *mut c_void,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let created = catch_unwind(AssertUnwindSafe(|| {
        let envoy = ConfigPtr::from_hook(config_envoy)?;
        // SAFETY: Envoy's buffers for this hook, copied here.
        let (name, bytes) = unsafe { (name.bytes().to_vec(), config.bytes().to_vec()) };
        let (root_id, plugin_name) = names(&String::from_utf8_lossy(&name));
        let id = NEXT_CONFIG.fetch_add(1, Ordering::Relaxed);
        let scheduler = abi::scheduler_new(envoy);
        if scheduler.is_none() {
            log::error!("meshguard: Envoy gave no scheduler: no timer, no collector flush");
        }
        let core = ConfigCore::new(
            envoy,
            id,
            scheduler,
            root_id,
            plugin_name,
            plugin_config(&bytes),
        );
        let mut root = PluginRoot::new(u32::try_from(id).unwrap_or(u32::MAX));
        let (accepted, panics) = {
            let mut host = NativeRoot::new(&core, None);
            let filter = Shape::from_root_id(&core.root_id).filter();
            let panics = host.define_counter(&tagged(PANICS, &[("filter", filter)]));
            (root.configure(&mut host), panics)
        };
        if !accepted {
            release(core);
            return None;
        }
        let streams = root.streams();
        Some(Box::into_raw(Box::new(Config {
            core,
            streams,
            root: Lock::new(root),
            panics,
        })))
    }));
    match created {
        Ok(Some(config)) => config.cast_const().cast(),
        Ok(None) => std::ptr::null(),
        Err(_) => {
            log::error!("meshguard: internal error while loading a configuration; refused");
            std::ptr::null()
        }
    }
}

/// Stops the ticker for a config and deletes its scheduler.
fn release(core: ConfigCore) {
    ticker::cancel(core.id);
    if let Some(scheduler) = core.scheduler {
        // The ticker let go of its copy in `cancel`; a copy still held
        // elsewhere would mean a stream outlived its config: leak it then.
        if let Ok(scheduler) = std::sync::Arc::try_unwrap(scheduler) {
            scheduler.delete();
        }
    }
}

/// The module config behind a hook's pointer.
///
/// # Safety
/// `config` must be a pointer `on_config_new` returned and Envoy has not
/// destroyed yet.
unsafe fn config_ref<'a>(config: *const c_void) -> Option<&'a Config> {
    // SAFETY: the caller's contract.
    unsafe { config.cast::<Config>().as_ref() }
}

/// `envoy_dynamic_module_on_http_filter_config_destroy` (main thread, after
/// the last stream of the config).
///
/// # Safety
/// Envoy's argument: a config `on_config_new` returned, destroyed once.
pub unsafe fn on_config_destroy(config: *const c_void) {
    if config.is_null() {
        return;
    }
    // SAFETY: created by `on_config_new` with `Box::into_raw`, destroyed once.
    let config = unsafe { Box::from_raw(config.cast::<Config>().cast_mut()) };
    let done = catch_unwind(AssertUnwindSafe(|| {
        let Config { core, root, .. } = *config;
        // Envoy destroys a config at once (no "not yet") and cancels its
        // callouts: the audit records its ticks did not deliver go to the
        // plugin's next config (a push), which delivers them.
        let mut host = NativeRoot::new(&core, None);
        let lines = root
            .with(|root| root.hand_over(&mut host))
            .unwrap_or_default();
        if !lines.is_empty() {
            let grace = u64::try_from(RETIRE_GRACE.as_millis()).unwrap_or(u64::MAX);
            let count = lines.len();
            let lost = handoff::leave(
                &core.plugin_name,
                lines,
                host.now_ms().saturating_add(grace),
            );
            log::info!(
                "meshguard: a retired config left {count} audit records for the next config of plugin {}",
                logsafe::quote(&core.plugin_name)
            );
            if lost > 0 {
                log::error!("meshguard audit: {lost} records left by retired configs over the process bound; dropped");
            }
        }
        release(core);
    }));
    if done.is_err() {
        log::error!("meshguard: internal error while retiring a configuration");
    }
}

/// `envoy_dynamic_module_on_http_filter_config_scheduled` (main thread):
/// the root's tick, or a stream's wakeup.
///
/// # Safety
/// Envoy's arguments to the hook.
pub unsafe fn on_config_scheduled(config: *const c_void, event: u64) {
    // SAFETY: Envoy passes a live config to its hooks.
    let Some(config) = (unsafe { config_ref(config) }) else {
        return;
    };
    let run = catch_unwind(AssertUnwindSafe(|| {
        let mut host = NativeRoot::new(&config.core, None);
        config.root.with(|root| {
            if event == ticker::TICK {
                config.core.tick_pending.store(false, Ordering::Release);
                adopt(&config.core, root, &mut host);
                root.tick(&mut host);
            } else {
                let wakeup = event.saturating_sub(ticker::WAKEUP_BASE);
                root.queue_ready(&mut host, u32::try_from(wakeup).unwrap_or(u32::MAX));
            }
        });
    }));
    if run.is_err() {
        config.core_panicked("the root's timer");
    }
}

/// Takes over the audit records retired configs of this plugin left
/// ([`handoff`]); the tick that follows sends them.
fn adopt(core: &ConfigCore, root: &mut PluginRoot, host: &mut NativeRoot<'_>) {
    let (lines, expired) = handoff::take(&core.plugin_name, host.now_ms());
    let name = logsafe::quote(&core.plugin_name);
    if expired > 0 {
        log::error!("meshguard audit: {expired} records left by a retired config of plugin {name} outlived their grace; dropped");
    }
    let count = lines.len();
    if count > 0 && !root.adopt(host, lines) {
        log::error!("meshguard audit: {count} records left by a retired config of plugin {name} dropped: this config has no collector");
    }
}

/// `envoy_dynamic_module_on_http_filter_config_http_callout_done` (main
/// thread): a source-of-truth or collector answer, or its failure.
///
/// # Safety
/// Envoy's arguments to the hook.
#[allow(clippy::too_many_arguments)]
pub unsafe fn on_config_callout_done(
    config: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const Header,
    header_count: usize,
    chunks: *const EnvoyBuffer,
    chunk_count: usize,
) {
    // SAFETY: Envoy passes a live config to its hooks.
    let Some(config) = (unsafe { config_ref(config) }) else {
        return;
    };
    let run = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the hook's own arrays.
        let answer = unsafe { CalloutAnswer::read(headers, header_count, chunks, chunk_count) };
        // Anything but a complete answer (a reset, a timeout, an answer
        // over Envoy's buffer limit) is no answer.
        let header_count = if result == 0 { answer.header_count } else { 0 };
        let body_size = answer.body.len();
        let Ok(token) = u32::try_from(callout_id) else {
            return;
        };
        let mut host = NativeRoot::new(&config.core, Some(answer));
        config
            .root
            .with(|root| root.callout_response(&mut host, token, header_count, body_size));
    }));
    if run.is_err() {
        config.core_panicked("a callout answer");
    }
}

impl Config {
    fn core_panicked(&self, what: &str) {
        NativeRoot::new(&self.core, None).add(self.panics, 1);
        log::error!("meshguard: internal error in {what}; the configuration keeps running");
    }
}

// ---------------------------------------------------------------- streams

/// One stream's module state. Envoy may destroy the stream from inside a
/// call the module makes (a local reply, a reset): the destroy hook then
/// only marks it, and the hook that is still running frees it on its way out.
#[derive(Debug)]
pub struct Filter {
    config: *const Config,
    stream: RefCell<StreamContext>,
    /// A hook panicked: the stream was refused or reset; later hooks pass.
    failed: Cell<bool>,
    /// Hooks of this filter on the stack.
    depth: Cell<u32>,
    /// Envoy destroyed the stream while a hook ran.
    destroyed: Cell<bool>,
}

/// Which hook runs: what a failure answers and which body is received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    Complete,
}

impl Hook {
    fn receiving(self) -> Option<Direction> {
        match self {
            Self::RequestBody => Some(Direction::Request),
            Self::ResponseBody => Some(Direction::Response),
            _ => None,
        }
    }

    /// The status a hook returns for `flow` (headers, body and trailers
    /// statuses share 0 = Continue, 1 = StopIteration / StopIterationAndBuffer).
    fn status(flow: Flow) -> u32 {
        match flow {
            Flow::Continue => 0,
            Flow::Stop => 1,
        }
    }

    /// After a panic: the request is refused with a local reply (Envoy
    /// resets the stream instead when the response already started); a
    /// response is reset. Returns the hook's status.
    fn fail(self, host: &mut NativeStream<'_>) -> u32 {
        match self {
            Self::RequestHeaders | Self::RequestBody | Self::RequestTrailers => {
                let body = format!(r#"{{"error":"{INTERNAL_ERROR}"}}"#);
                json_reply(host, 503, Some(INTERNAL_ERROR), body.as_bytes());
            }
            Self::ResponseHeaders | Self::ResponseBody | Self::ResponseTrailers => {
                host.reset(Direction::Response);
            }
            Self::Complete => return 0,
        }
        // StopIterationNoBuffer for a body, StopIteration otherwise.
        if matches!(self, Self::RequestBody | Self::ResponseBody) {
            3
        } else {
            1
        }
    }
}

/// `envoy_dynamic_module_on_http_filter_new` (worker): a stream of the
/// config. NULL (only on a panic) makes Envoy close the stream.
///
/// # Safety
/// Envoy's arguments to the hook.
pub unsafe fn on_filter_new(config: *const c_void) -> *const c_void {
    let created = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy passes a live config to its hooks.
        let module_config = unsafe { config_ref(config) }?;
        Some(Box::into_raw(Box::new(Filter {
            config: module_config,
            stream: RefCell::new(module_config.streams.start()),
            failed: Cell::new(false),
            depth: Cell::new(0),
            destroyed: Cell::new(false),
        })))
    }));
    match created {
        Ok(Some(filter)) => filter.cast_const().cast(),
        _ => std::ptr::null(),
    }
}

/// Runs one stream hook: panics become the hook's failure answer, a hook
/// re-entered from a call the module made passes (`Continue`), and a
/// stream Envoy destroyed meanwhile is freed on the way out.
///
/// # Safety
/// `filter_envoy` and `filter` must be the hook's own arguments.
pub unsafe fn stream_hook(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    hook: Hook,
    run: impl FnOnce(&mut StreamContext, &mut NativeStream<'_>) -> Flow,
) -> u32 {
    // SAFETY: a filter `on_filter_new` returned and Envoy has not destroyed
    // (a destroy during a hook is deferred until `depth` is back to 0).
    let Some(state) = (unsafe { filter.cast::<Filter>().as_ref() }) else {
        return 0;
    };
    let Some(envoy) = FilterPtr::from_hook(filter_envoy) else {
        return 0;
    };
    // SAFETY: Envoy destroys a config only after its last stream.
    let Some(config) = (unsafe { state.config.as_ref() }) else {
        return 0;
    };
    if state.failed.get() {
        return 0;
    }
    state.depth.set(state.depth.get().saturating_add(1));
    let ran = catch_unwind(AssertUnwindSafe(|| {
        let mut host = NativeStream::new(Some(envoy), &config.core, hook.receiving());
        let mut stream = state.stream.try_borrow_mut().ok()?;
        Some(run(&mut stream, &mut host))
    }));
    let status = match ran {
        Ok(Some(flow)) => Hook::status(flow),
        // Re-entered while the stream's own hook runs: nothing to judge twice.
        Ok(None) => 0,
        Err(_) => {
            state.failed.set(true);
            NativeStream::new(None, &config.core, None).add(config.panics, 1);
            log::error!(
                "meshguard: internal error in the {hook:?} hook; the stream is {}",
                if hook.receiving() == Some(Direction::Response)
                    || matches!(hook, Hook::ResponseHeaders | Hook::ResponseTrailers)
                {
                    "reset"
                } else {
                    "refused (503 meshguard_internal_error)"
                }
            );
            hook.fail(&mut NativeStream::new(Some(envoy), &config.core, None))
        }
    };
    state.depth.set(state.depth.get().saturating_sub(1));
    if state.destroyed.get() && state.depth.get() == 0 {
        // SAFETY: Envoy destroyed the stream during this hook and no other
        // hook of it is on the stack.
        unsafe { free(filter) };
    }
    status
}

/// `envoy_dynamic_module_on_http_filter_stream_complete`: the exchange is
/// complete (the audit record is sealed here, before Envoy's access logs).
///
/// # Safety
/// Envoy's arguments to the hook.
pub unsafe fn on_stream_complete(filter_envoy: *mut c_void, filter: *const c_void) {
    // SAFETY: the hook's own arguments.
    unsafe {
        stream_hook(filter_envoy, filter, Hook::Complete, |stream, host| {
            stream.log(host);
            Flow::Continue
        });
    }
}

/// `envoy_dynamic_module_on_http_filter_destroy`: frees the stream, now or
/// (when Envoy destroys it from inside one of its hooks) when that hook
/// returns.
///
/// # Safety
/// Envoy's argument: a filter `on_filter_new` returned, destroyed once.
pub unsafe fn on_filter_destroy(filter: *const c_void) {
    // SAFETY: a live filter (Envoy destroys it once).
    let Some(state) = (unsafe { filter.cast::<Filter>().as_ref() }) else {
        return;
    };
    if state.depth.get() > 0 {
        state.destroyed.set(true);
        return;
    }
    // SAFETY: no hook of this filter runs.
    unsafe { free(filter) };
}

/// Frees a stream: one that never reached its completion gives its audit
/// outbox room back (counted as dropped).
///
/// # Safety
/// `filter` was returned by `on_filter_new`, is freed once, and no hook of
/// it is running.
unsafe fn free(filter: *const c_void) {
    // SAFETY: the caller's contract.
    let state = unsafe { Box::from_raw(filter.cast::<Filter>().cast_mut()) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the config outlives its streams.
        if let Some(config) = unsafe { state.config.as_ref() } {
            let mut host = NativeStream::new(None, &config.core, None);
            state.stream.borrow_mut().finish(&mut host);
        }
    }));
}

/// Exports the Envoy dynamic-module ABI from the calling cdylib, every hook
/// going to the pipeline: the body of `libmeshguard.so`. The test-only
/// module (filters/faulty) names a function run at the start of the request
/// headers hook, inside its panic guard (`export_envoy_dynamic_module!(path)`).
#[macro_export]
macro_rules! export_envoy_dynamic_module {
    ($($before_request_headers:path)?) => {
        mod envoy_dynamic_module_exports {
            #![allow(unsafe_code)] // the ABI's exports: Envoy calls them by name
            #![allow(clippy::missing_safety_doc)]

            use std::ffi::{c_char, c_void};

            use $crate::native::abi::{EnvoyBuffer, Header};
            use $crate::native::{self as native, Hook};
            use $crate::host::Direction;

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
                native::on_program_init()
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
                config_envoy: *mut c_void,
                name: EnvoyBuffer,
                config: EnvoyBuffer,
            ) -> *const c_void {
                unsafe { native::on_config_new(config_envoy, name, config) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
                config: *const c_void,
            ) {
                unsafe { native::on_config_destroy(config) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
                _config_envoy: *mut c_void,
                config: *const c_void,
                event: u64,
            ) {
                unsafe { native::on_config_scheduled(config, event) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
                _config_envoy: *mut c_void,
                config: *const c_void,
                callout_id: u64,
                result: u32,
                headers: *const Header,
                header_count: usize,
                chunks: *const EnvoyBuffer,
                chunk_count: usize,
            ) {
                unsafe {
                    native::on_config_callout_done(
                        config,
                        callout_id,
                        result,
                        headers,
                        header_count,
                        chunks,
                        chunk_count,
                    )
                }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
                config: *const c_void,
                _filter_envoy: *mut c_void,
            ) -> *const c_void {
                unsafe { native::on_filter_new(config) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
                filter_envoy: *mut c_void,
                filter: *const c_void,
                end_of_stream: bool,
            ) -> u32 {
                unsafe {
                    native::stream_hook(filter_envoy, filter, Hook::RequestHeaders, |s, h| {
                        $($before_request_headers(h);)?
                        s.request_headers(h, end_of_stream)
                    })
                }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
                filter_envoy: *mut c_void,
                filter: *const c_void,
                end_of_stream: bool,
            ) -> u32 {
                unsafe {
                    native::stream_hook(filter_envoy, filter, Hook::RequestBody, |s, h| {
                        let size = h.held_size(Direction::Request);
                        s.body(h, Direction::Request, size, end_of_stream)
                    })
                }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
                filter_envoy: *mut c_void,
                filter: *const c_void,
            ) -> u32 {
                unsafe {
                    native::stream_hook(filter_envoy, filter, Hook::RequestTrailers, |s, h| {
                        s.trailers(h, Direction::Request)
                    })
                }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
                filter_envoy: *mut c_void,
                filter: *const c_void,
                end_of_stream: bool,
            ) -> u32 {
                unsafe {
                    native::stream_hook(filter_envoy, filter, Hook::ResponseHeaders, |s, h| {
                        s.response_headers(h, end_of_stream)
                    })
                }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
                filter_envoy: *mut c_void,
                filter: *const c_void,
                end_of_stream: bool,
            ) -> u32 {
                unsafe {
                    native::stream_hook(filter_envoy, filter, Hook::ResponseBody, |s, h| {
                        let size = h.held_size(Direction::Response);
                        s.body(h, Direction::Response, size, end_of_stream)
                    })
                }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
                filter_envoy: *mut c_void,
                filter: *const c_void,
            ) -> u32 {
                unsafe {
                    native::stream_hook(filter_envoy, filter, Hook::ResponseTrailers, |s, h| {
                        s.trailers(h, Direction::Response)
                    })
                }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
                filter_envoy: *mut c_void,
                filter: *const c_void,
            ) {
                unsafe { native::on_stream_complete(filter_envoy, filter) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(
                filter: *const c_void,
            ) {
                unsafe { native::on_filter_destroy(filter) }
            }

            // Required by Envoy 1.40 whether used or not: meshguard starts no
            // stream callout, schedules nothing per stream and is no
            // terminal filter.
            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
                _filter_envoy: *mut c_void,
                _filter: *const c_void,
                _callout_id: u64,
                _result: u32,
                _headers: *const Header,
                _header_count: usize,
                _chunks: *const EnvoyBuffer,
                _chunk_count: usize,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
                _filter_envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
                _headers: *const Header,
                _header_count: usize,
                _end_of_stream: bool,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
                _filter_envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
                _data: *const EnvoyBuffer,
                _data_count: usize,
                _end_of_stream: bool,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
                _filter_envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
                _trailers: *const Header,
                _trailer_count: usize,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
                _filter_envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
                _filter_envoy: *mut c_void,
                _filter: *const c_void,
                _stream_id: u64,
                _reason: u32,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
                _filter_envoy: *mut c_void,
                _filter: *const c_void,
                _event: u64,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
                _filter_envoy: *mut c_void,
                _filter: *const c_void,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
                _filter_envoy: *mut c_void,
                _filter: *const c_void,
            ) {
            }
        }
    };
}
