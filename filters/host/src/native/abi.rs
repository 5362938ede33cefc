//! The Envoy dynamic-module ABI ("v0.2.0", Envoy 1.40) as far as meshguard
//! uses it: the callbacks Envoy exports, declared by hand from the ABI's
//! documented C signatures (Envoy's Rust SDK is not published), each behind
//! a safe wrapper that copies what Envoy lends and answers every failure
//! with a value. Nothing else in the module calls into Envoy.
//!
//! Envoy-owned buffers are valid only until the hook returns or a setter
//! touches the same map or body: every wrapper copies them before it
//! returns. A filter or config pointer is only ever built from the pointer
//! Envoy passed to the running hook (see `native/mod.rs`), and lives no
//! longer than the object Envoy passed it for.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::{null, null_mut};

/// The ABI version this module is built against: Envoy 1.40's. Envoy
/// compares it with its own and only warns on a mismatch; what makes an
/// incompatible Envoy refuse the module is the link: the library is bound
/// at load (`BIND_NOW`, checked by scripts/build-native.sh), so a callback
/// below that the running Envoy lacks fails `dlopen` with its name.
pub const ABI_VERSION: &std::ffi::CStr = c"v0.2.0";

/// An Envoy-owned buffer (`envoy_dynamic_module_type_envoy_buffer`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const u8,
    len: usize,
}

impl EnvoyBuffer {
    const EMPTY: Self = Self {
        ptr: null(),
        len: 0,
    };

    /// The bytes, for as long as Envoy keeps them (the current hook).
    ///
    /// # Safety
    /// `self` must have been filled by Envoy during the running hook, with
    /// no setter called since.
    pub unsafe fn bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: Envoy hands out `len` readable bytes at `ptr`, valid
            // for the hook (the caller's contract).
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// A module-owned buffer (`envoy_dynamic_module_type_module_buffer`): Envoy
/// copies it during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ModuleBuffer {
    ptr: *const u8,
    len: usize,
}

impl ModuleBuffer {
    const NULL: Self = Self {
        ptr: null(),
        len: 0,
    };

    fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }
}

/// A header as a key and a value (`envoy_dynamic_module_type_module_http_header`
/// and `..._envoy_http_header`, one layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Header {
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
}

impl Header {
    const EMPTY: Self = Self {
        key: null(),
        key_len: 0,
        value: null(),
        value_len: 0,
    };

    fn of(key: &str, value: &str) -> Self {
        Self {
            key: key.as_ptr(),
            key_len: key.len(),
            value: value.as_ptr(),
            value_len: value.len(),
        }
    }

    /// The key and value, lossily decoded.
    ///
    /// # Safety
    /// `self` must have been filled by Envoy during the running hook.
    pub unsafe fn pair(&self) -> (String, String) {
        // SAFETY: the caller's contract (Envoy-owned, valid for the hook).
        let (key, value) = unsafe {
            (
                EnvoyBuffer {
                    ptr: self.key,
                    len: self.key_len,
                }
                .bytes(),
                EnvoyBuffer {
                    ptr: self.value,
                    len: self.value_len,
                }
                .bytes(),
            )
        };
        (
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        )
    }
}

/// `envoy_dynamic_module_type_http_header_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum HeaderMap {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
}

/// `envoy_dynamic_module_type_http_body_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Body {
    ReceivedRequest = 0,
    BufferedRequest = 1,
    ReceivedResponse = 2,
    BufferedResponse = 3,
}

/// `envoy_dynamic_module_type_log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

/// `envoy_dynamic_module_type_attribute_id`, the ones meshguard reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AttributeId {
    ConnectionId = 28,
    ConnectionMtls = 29,
    ConnectionTlsVersion = 31,
    ConnectionUriSanLocalCertificate = 36,
    ConnectionUriSanPeerCertificate = 37,
    XdsFilterChainName = 66,
}

/// `envoy_dynamic_module_type_http_callout_init_result::Success`.
const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_metrics_result::Success`.
const METRICS_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_metadata_source::Dynamic`.
const METADATA_DYNAMIC: u32 = 0;
/// `envoy_dynamic_module_type_http_filter_stream_reset_reason::LocalReset`.
const RESET_LOCAL: u32 = 0;

/// `envoy_dynamic_module_type_http_filter_envoy_ptr`: the stream's filter.
#[derive(Debug, Clone, Copy)]
pub struct FilterPtr(*mut c_void);

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr`: a filter config.
#[derive(Debug, Clone, Copy)]
pub struct ConfigPtr(*mut c_void);

// SAFETY: a config pointer is what Envoy hands every worker's filters; the
// calls made through it from other threads (metric updates, scheduler
// commits) are the ABI's thread-safe ones (see their wrappers).
unsafe impl Send for ConfigPtr {}
// SAFETY: as above.
unsafe impl Sync for ConfigPtr {}

/// A config scheduler (`envoy_dynamic_module_type_http_filter_config_scheduler_module_ptr`):
/// committing it from any thread runs the config's scheduled hook on Envoy's
/// main thread.
#[derive(Debug)]
pub struct Scheduler(*mut c_void);

// SAFETY: the ABI documents `..._config_scheduler_commit` as callable from
// any thread; the pointer is deleted only by the config that owns it.
unsafe impl Send for Scheduler {}
// SAFETY: as above.
unsafe impl Sync for Scheduler {}

impl FilterPtr {
    /// The pointer Envoy passed to the running hook.
    pub fn from_hook(ptr: *mut c_void) -> Option<Self> {
        (!ptr.is_null()).then_some(Self(ptr))
    }
}

impl ConfigPtr {
    /// The pointer Envoy passed to `config_new` (or a config hook).
    pub fn from_hook(ptr: *mut c_void) -> Option<Self> {
        (!ptr.is_null()).then_some(Self(ptr))
    }
}

extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;

    fn envoy_dynamic_module_callback_http_get_header(
        filter: *mut c_void,
        map: u32,
        key: ModuleBuffer,
        out: *mut EnvoyBuffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: *mut c_void, map: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: *mut c_void,
        map: u32,
        out: *mut Header,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: *mut c_void,
        map: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter: *mut c_void,
        map: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_get_body_size(filter: *mut c_void, body: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: *mut c_void,
        body: u32,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: *mut c_void,
        body: u32,
        out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_append_body(
        filter: *mut c_void,
        body: u32,
        data: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_drain_body(
        filter: *mut c_void,
        body: u32,
        n: usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        filter: *mut c_void,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_received_buffered_response_body(
        filter: *mut c_void,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_send_response(
        filter: *mut c_void,
        status: u32,
        headers: *mut Header,
        headers_len: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_filter_reset_stream(
        filter: *mut c_void,
        reason: u32,
        details: ModuleBuffer,
    );

    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: *mut c_void,
        id: u32,
        out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter: *mut c_void,
        id: u32,
        out: *mut u64,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_bool(
        filter: *mut c_void,
        id: u32,
        out: *mut bool,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: *mut c_void,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter: *mut c_void,
        source: u32,
        namespace: ModuleBuffer,
        key: ModuleBuffer,
        out: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter: *mut c_void,
        key: ModuleBuffer,
        out: *mut EnvoyBuffer,
    ) -> bool;

    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: *mut c_void,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_len: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: *mut c_void,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_len: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: *mut c_void,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;

    fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: *mut c_void,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut Header,
        headers_len: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;

    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: *mut c_void,
    ) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);
}

// ---------------------------------------------------------------- logging

/// Whether Envoy's `dynamic_modules` logger would print `level` (thread-safe).
pub fn log_enabled(level: LogLevel) -> bool {
    // SAFETY: no pointer argument; callable from any thread.
    unsafe { envoy_dynamic_module_callback_log_enabled(level as u32) }
}

/// A line in Envoy's `dynamic_modules` logger (thread-safe; Envoy copies it).
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the buffer is valid for the call; Envoy copies it.
    unsafe { envoy_dynamic_module_callback_log(level as u32, ModuleBuffer::of(message.as_bytes())) }
}

// ---------------------------------------------------------------- headers

/// Every entry of a header map (keys as Envoy stores them: lowercase);
/// `None` when the map does not exist (yet).
pub fn headers(filter: FilterPtr, map: HeaderMap) -> Option<Vec<(String, String)>> {
    // SAFETY: `filter` is the running hook's; the map is read into a
    // module-owned array of the size Envoy reported, then copied.
    unsafe {
        let size = envoy_dynamic_module_callback_http_get_headers_size(filter.0, map as u32);
        let mut entries = vec![Header::EMPTY; size];
        if !envoy_dynamic_module_callback_http_get_headers(
            filter.0,
            map as u32,
            entries.as_mut_ptr(),
        ) {
            return None;
        }
        Some(entries.iter().map(|h| h.pair()).collect())
    }
}

/// The first value of `name` (lowercase) in a header map.
pub fn header(filter: FilterPtr, map: HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut out = EnvoyBuffer::EMPTY;
    // SAFETY: `filter` is the running hook's; `out` is copied before return.
    unsafe {
        envoy_dynamic_module_callback_http_get_header(
            filter.0,
            map as u32,
            ModuleBuffer::of(name.as_bytes()),
            &mut out,
            0,
            null_mut(),
        )
        .then(|| out.bytes().to_vec())
    }
}

/// Replaces every value of `name` with `value`, or removes the header.
pub fn set_header(filter: FilterPtr, map: HeaderMap, name: &str, value: Option<&str>) -> bool {
    let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
    // SAFETY: `filter` is the running hook's; Envoy copies both buffers.
    unsafe {
        envoy_dynamic_module_callback_http_set_header(
            filter.0,
            map as u32,
            ModuleBuffer::of(name.as_bytes()),
            value,
        )
    }
}

/// Adds one more field line `name: value`, keeping the existing ones.
pub fn add_header(filter: FilterPtr, map: HeaderMap, name: &str, value: &str) -> bool {
    // SAFETY: `filter` is the running hook's; Envoy copies both buffers.
    unsafe {
        envoy_dynamic_module_callback_http_add_header(
            filter.0,
            map as u32,
            ModuleBuffer::of(name.as_bytes()),
            ModuleBuffer::of(value.as_bytes()),
        )
    }
}

// ---------------------------------------------------------------- bodies

/// Bytes in a body buffer (0 when it does not exist).
pub fn body_size(filter: FilterPtr, body: Body) -> usize {
    // SAFETY: `filter` is the running hook's.
    unsafe { envoy_dynamic_module_callback_http_get_body_size(filter.0, body as u32) }
}

/// Appends to `out` the bytes of a body buffer from offset `start`, until
/// `out` holds `limit` bytes; returns the buffer's size (so the caller can
/// go on into the next buffer from `start - size`).
pub fn read_body(
    filter: FilterPtr,
    body: Body,
    start: usize,
    limit: usize,
    out: &mut Vec<u8>,
) -> usize {
    let mut offset = 0usize;
    // SAFETY: `filter` is the running hook's; the chunk array has the size
    // Envoy reported and every chunk is copied before return.
    unsafe {
        let count = envoy_dynamic_module_callback_http_get_body_chunks_size(filter.0, body as u32);
        if count == 0 {
            return 0;
        }
        let mut chunks = vec![EnvoyBuffer::EMPTY; count];
        if !envoy_dynamic_module_callback_http_get_body_chunks(
            filter.0,
            body as u32,
            chunks.as_mut_ptr(),
        ) {
            return 0;
        }
        for chunk in &chunks {
            let bytes = chunk.bytes();
            let end = offset.saturating_add(bytes.len());
            if out.len() < limit && end > start {
                let from = start.saturating_sub(offset);
                let wanted = limit.saturating_sub(out.len());
                let tail = bytes.get(from..).unwrap_or_default();
                out.extend_from_slice(tail.get(..wanted.min(tail.len())).unwrap_or_default());
            }
            offset = end;
        }
    }
    offset
}

/// Removes `n` bytes from the front of a body buffer.
pub fn drain_body(filter: FilterPtr, body: Body, n: usize) -> bool {
    // SAFETY: `filter` is the running hook's.
    unsafe { envoy_dynamic_module_callback_http_drain_body(filter.0, body as u32, n) }
}

/// Appends bytes to a body buffer (Envoy copies them).
pub fn append_body(filter: FilterPtr, body: Body, data: &[u8]) -> bool {
    // SAFETY: `filter` is the running hook's; Envoy copies `data`.
    unsafe {
        envoy_dynamic_module_callback_http_append_body(
            filter.0,
            body as u32,
            ModuleBuffer::of(data),
        )
    }
}

/// Whether the received body is one an earlier filter buffered and now
/// released (then it is also what Envoy reports as buffered).
pub fn received_is_buffered(filter: FilterPtr, request: bool) -> bool {
    // SAFETY: `filter` is the running hook's.
    unsafe {
        if request {
            envoy_dynamic_module_callback_http_received_buffered_request_body(filter.0)
        } else {
            envoy_dynamic_module_callback_http_received_buffered_response_body(filter.0)
        }
    }
}

// ---------------------------------------------------------------- stream

/// A local reply (Envoy's `sendLocalReply`); `details` is the response
/// code details access logs show.
pub fn send_response(
    filter: FilterPtr,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    details: &str,
) {
    let mut headers: Vec<Header> = headers.iter().map(|(k, v)| Header::of(k, v)).collect();
    // SAFETY: `filter` is the running hook's; Envoy copies every buffer.
    unsafe {
        envoy_dynamic_module_callback_http_send_response(
            filter.0,
            u32::from(status),
            headers.as_mut_ptr(),
            headers.len(),
            ModuleBuffer::of(body),
            ModuleBuffer::of(details.as_bytes()),
        );
    }
}

/// Resets the stream.
pub fn reset_stream(filter: FilterPtr, details: &str) {
    // SAFETY: `filter` is the running hook's; Envoy copies `details`.
    unsafe {
        envoy_dynamic_module_callback_http_filter_reset_stream(
            filter.0,
            RESET_LOCAL,
            ModuleBuffer::of(details.as_bytes()),
        );
    }
}

/// A string attribute.
pub fn attribute_string(filter: FilterPtr, id: AttributeId) -> Option<Vec<u8>> {
    let mut out = EnvoyBuffer::EMPTY;
    // SAFETY: `filter` is the running hook's; `out` is copied before return.
    unsafe {
        envoy_dynamic_module_callback_http_filter_get_attribute_string(
            filter.0, id as u32, &mut out,
        )
        .then(|| out.bytes().to_vec())
    }
}

/// An integer attribute.
pub fn attribute_int(filter: FilterPtr, id: AttributeId) -> Option<u64> {
    let mut out = 0u64;
    // SAFETY: `filter` is the running hook's; `out` is a local.
    unsafe {
        envoy_dynamic_module_callback_http_filter_get_attribute_int(filter.0, id as u32, &mut out)
            .then_some(out)
    }
}

/// A boolean attribute.
pub fn attribute_bool(filter: FilterPtr, id: AttributeId) -> Option<bool> {
    let mut out = false;
    // SAFETY: `filter` is the running hook's; `out` is a local.
    unsafe {
        envoy_dynamic_module_callback_http_filter_get_attribute_bool(filter.0, id as u32, &mut out)
            .then_some(out)
    }
}

/// Sets a string in the stream's dynamic metadata (overwrites).
pub fn set_metadata(filter: FilterPtr, namespace: &str, key: &str, value: &str) {
    // SAFETY: `filter` is the running hook's; Envoy copies every buffer.
    unsafe {
        envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
            filter.0,
            ModuleBuffer::of(namespace.as_bytes()),
            ModuleBuffer::of(key.as_bytes()),
            ModuleBuffer::of(value.as_bytes()),
        );
    }
}

/// A string of the stream's dynamic metadata.
pub fn metadata(filter: FilterPtr, namespace: &str, key: &str) -> Option<Vec<u8>> {
    let mut out = EnvoyBuffer::EMPTY;
    // SAFETY: `filter` is the running hook's; `out` is copied before return.
    unsafe {
        envoy_dynamic_module_callback_http_get_metadata_string(
            filter.0,
            METADATA_DYNAMIC,
            ModuleBuffer::of(namespace.as_bytes()),
            ModuleBuffer::of(key.as_bytes()),
            &mut out,
        )
        .then(|| out.bytes().to_vec())
    }
}

/// A value of the stream's filter state, as bytes.
pub fn filter_state(filter: FilterPtr, key: &str) -> Option<Vec<u8>> {
    let mut out = EnvoyBuffer::EMPTY;
    // SAFETY: `filter` is the running hook's; `out` is copied before return.
    unsafe {
        envoy_dynamic_module_callback_http_get_filter_state_bytes(
            filter.0,
            ModuleBuffer::of(key.as_bytes()),
            &mut out,
        )
        .then(|| out.bytes().to_vec())
    }
}

// ---------------------------------------------------------------- metrics

/// A counter or gauge without labels (only in `config_new`: Envoy freezes
/// metric creation when it returns).
pub fn define_metric(config: ConfigPtr, gauge: bool, name: &str) -> Option<usize> {
    let mut id = 0usize;
    let name = ModuleBuffer::of(name.as_bytes());
    // SAFETY: `config` is the config being created; no labels.
    let result = unsafe {
        if gauge {
            envoy_dynamic_module_callback_http_filter_config_define_gauge(
                config.0,
                name,
                null_mut(),
                0,
                &mut id,
            )
        } else {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                config.0,
                name,
                null_mut(),
                0,
                &mut id,
            )
        }
    };
    (result == METRICS_SUCCESS).then_some(id)
}

/// Adds to a counter without labels. Thread-safe: Envoy looks the counter up
/// in the config's frozen table and adds atomically.
pub fn increment_counter(config: ConfigPtr, id: usize, value: u64) -> bool {
    // SAFETY: `config` outlives every stream and root using it; no labels.
    unsafe {
        envoy_dynamic_module_callback_http_filter_config_increment_counter(
            config.0,
            id,
            null_mut(),
            0,
            value,
        ) == METRICS_SUCCESS
    }
}

/// Sets a gauge without labels. Thread-safe as [`increment_counter`].
pub fn set_gauge(config: ConfigPtr, id: usize, value: u64) -> bool {
    // SAFETY: as `increment_counter`.
    unsafe {
        envoy_dynamic_module_callback_http_filter_config_set_gauge(
            config.0,
            id,
            null_mut(),
            0,
            value,
        ) == METRICS_SUCCESS
    }
}

// ---------------------------------------------------------------- callouts

/// Starts an HTTP callout from the config (main thread only); its answer
/// comes to the config's callout hook on the main thread.
pub fn config_callout(
    config: ConfigPtr,
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout_ms: u64,
) -> Result<u64, u32> {
    let mut headers: Vec<Header> = headers.iter().map(|(k, v)| Header::of(k, v)).collect();
    let mut id = 0u64;
    // SAFETY: `config` is alive and this runs on the main thread; Envoy
    // copies every buffer.
    let result = unsafe {
        envoy_dynamic_module_callback_http_filter_config_http_callout(
            config.0,
            &mut id,
            ModuleBuffer::of(cluster.as_bytes()),
            headers.as_mut_ptr(),
            headers.len(),
            body.map_or(ModuleBuffer::NULL, ModuleBuffer::of),
            timeout_ms,
        )
    };
    if result == CALLOUT_INIT_SUCCESS {
        Ok(id)
    } else {
        Err(result)
    }
}

// ---------------------------------------------------------------- scheduler

/// A scheduler for the config (main thread, in `config_new`).
pub fn scheduler_new(config: ConfigPtr) -> Option<Scheduler> {
    // SAFETY: `config` is the config being created.
    let ptr = unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config.0) };
    (!ptr.is_null()).then_some(Scheduler(ptr))
}

impl Scheduler {
    /// Runs the config's scheduled hook with `event` on the main thread
    /// (callable from any thread).
    pub fn commit(&self, event: u64) {
        // SAFETY: the scheduler is alive until `delete`, which takes it by
        // value from its owner after every committer has let go.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event) }
    }

    /// Frees the scheduler (main thread, when its config goes).
    pub fn delete(self) {
        // SAFETY: created by `scheduler_new`, deleted once (by value).
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
    }
}

// ---------------------------------------------------------------- responses

/// A callout answer as Envoy lends it to the callout hook.
#[derive(Debug)]
pub struct CalloutAnswer {
    /// `:status`, when the answer has headers.
    pub status: Option<String>,
    pub header_count: usize,
    pub body: Vec<u8>,
}

impl CalloutAnswer {
    /// Copies the answer out of the hook's arguments.
    ///
    /// # Safety
    /// The pointers and lengths must be the callout hook's own arguments
    /// (NULL allowed).
    pub unsafe fn read(
        headers: *const Header,
        header_count: usize,
        chunks: *const EnvoyBuffer,
        chunk_count: usize,
    ) -> Self {
        let mut answer = Self {
            status: None,
            header_count: 0,
            body: Vec::new(),
        };
        if !headers.is_null() {
            // SAFETY: Envoy's array of `header_count` headers, valid for the hook.
            let headers = unsafe { std::slice::from_raw_parts(headers, header_count) };
            answer.header_count = header_count;
            answer.status = headers
                .iter()
                // SAFETY: filled by Envoy for this hook.
                .map(|h| unsafe { h.pair() })
                .find(|(k, _)| k == ":status")
                .map(|(_, v)| v);
        }
        if !chunks.is_null() {
            // SAFETY: Envoy's array of `chunk_count` buffers, valid for the hook.
            let chunks = unsafe { std::slice::from_raw_parts(chunks, chunk_count) };
            for chunk in chunks {
                // SAFETY: filled by Envoy for this hook.
                answer.body.extend_from_slice(unsafe { chunk.bytes() });
            }
        }
        answer
    }
}
