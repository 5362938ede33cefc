//! The proxy-wasm ABI (0.2.1) host functions meshguard calls, each wrapped so
//! that every status the host may return is an answer, never a trap. The SDK's
//! wrappers panic on any status they did not expect (a callout answer read
//! after a reset, a refused header write, a map that does not exist in this
//! phase), and a trap fails every later request of the VM: the project calls
//! the ABI directly instead, through this module only.
#![allow(unsafe_code)]

use std::ptr::{null, null_mut};

/// `WasmResult::Ok`.
const OK: u32 = 0;
/// `WasmResult::CasMismatch`.
const CAS_MISMATCH: u32 = 8;

/// Host buffers (proxy-wasm `BufferType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Buffer {
    RequestBody = 0,
    ResponseBody = 1,
    CalloutResponseBody = 4,
    PluginConfiguration = 7,
}

/// Host header maps (proxy-wasm `MapType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MapKind {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
    CalloutResponseHeaders = 6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MetricKind {
    Counter = 0,
    Gauge = 1,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_done() -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_register_shared_queue(
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

/// Takes ownership of host-returned bytes: the host allocated them through
/// this module's `proxy_on_memory_allocate` (a boxed slice of exactly
/// `size` bytes).
///
/// # Safety
/// `data` is null or came from `proxy_on_memory_allocate(size)`.
unsafe fn owned(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: per the contract above, a live allocation of exactly `size`
    // bytes, now owned by us.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// Writes a log line; a refused line is lost, never a trap.
pub fn log(level: u32, message: &str) {
    // SAFETY: a live slice and its length, read during the call.
    unsafe { proxy_log(level, message.as_ptr(), message.len()) };
}

/// The host's log level (0 trace ... 5 critical), if it says.
pub fn log_level() -> Option<u32> {
    let mut level = 0u32;
    // SAFETY: the host writes one u32 through a pointer to a live local.
    (unsafe { proxy_get_log_level(&mut level) } == OK).then_some(level)
}

/// Host time in nanoseconds since the Unix epoch.
pub fn now_ns() -> Option<u64> {
    let mut now = 0u64;
    // SAFETY: the host writes one u64 through a pointer to a live local.
    (unsafe { proxy_get_current_time_nanoseconds(&mut now) } == OK).then_some(now)
}

/// The current root context is done (after its `proxy_on_done` said not yet).
pub fn done() -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_done() == OK }
}

pub fn set_tick_period_ms(period: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_set_tick_period_milliseconds(period) == OK }
}

/// `max` bytes of a buffer from `start`; `None` when the host refused.
pub fn buffer(buffer: Buffer, start: usize, max: usize) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: the host writes a pointer and a size through live locals; the
    // memory is ours afterwards (`owned`).
    let status = unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, &mut data, &mut size) };
    // SAFETY: allocated by our allocator with `size` bytes, or null.
    (status == OK).then(|| unsafe { owned(data, size) })
}

/// Replaces `size` bytes at `start` of a buffer with `data`.
pub fn set_buffer(buffer: Buffer, start: usize, size: usize, data: &[u8]) -> bool {
    // SAFETY: a live slice and its length, read during the call.
    unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len()) == OK }
}

/// Every pair of a header map in the host's serialization, in one call.
pub fn header_map_pairs(map: MapKind) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: as in `buffer`.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    // SAFETY: as in `buffer`.
    (status == OK).then(|| unsafe { owned(data, size) })
}

/// One header's value; `None` when absent or refused.
pub fn header_value(map: MapKind, name: &str) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: as in `buffer`; the name is a live slice.
    let status = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    // SAFETY: as in `buffer`.
    (status == OK).then(|| unsafe { owned(data, size) })
}

/// Replaces (or adds) a header.
pub fn replace_header(map: MapKind, name: &str, value: &str) -> bool {
    // SAFETY: live slices with their lengths, read during the call.
    unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        ) == OK
    }
}

/// Adds a field line (a header may then have several).
pub fn add_header(map: MapKind, name: &str, value: &str) -> bool {
    // SAFETY: live slices with their lengths, read during the call.
    unsafe {
        proxy_add_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        ) == OK
    }
}

/// Removes every value of a header.
pub fn remove_header(map: MapKind, name: &str) -> bool {
    // SAFETY: a live slice and its length.
    unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) == OK }
}

/// A property path as the host reads it: every segment followed by NUL.
fn property_path(path: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(path.iter().map(|s| s.len().saturating_add(1)).sum());
    for segment in path {
        bytes.extend_from_slice(segment.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// A property (attribute, filter state, plugin or node fact).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    let key = property_path(path);
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: as in `buffer`; the path is a live slice.
    let status = unsafe { proxy_get_property(key.as_ptr(), key.len(), &mut data, &mut size) };
    // SAFETY: as in `buffer`.
    (status == OK && !data.is_null()).then(|| unsafe { owned(data, size) })
}

/// Sets a one-segment property (the stream's `wasm.<name>` filter state).
pub fn set_property(name: &str, value: &[u8]) -> bool {
    // SAFETY: live slices with their lengths, read during the call.
    unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) == OK }
}

/// A shared-data value and its CAS version.
pub fn shared_data(key: &str) -> Option<(Vec<u8>, u32)> {
    let (mut data, mut size, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: as in `buffer`, plus one u32 through a live local.
    let status =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    // SAFETY: as in `buffer`.
    (status == OK).then(|| (unsafe { owned(data, size) }, cas))
}

/// Sets a shared-data value if its version is still `cas` (0: always).
/// `Err(true)` on a CAS mismatch, `Err(false)` when refused otherwise.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), bool> {
    // SAFETY: live slices with their lengths, read during the call.
    match unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    } {
        OK => Ok(()),
        CAS_MISMATCH => Err(true),
        _ => Err(false),
    }
}

pub fn register_shared_queue(name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: a live slice; one u32 through a live local.
    (unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) } == OK).then_some(id)
}

/// Takes one item of a queue; `None` when empty or refused.
pub fn dequeue_shared_queue(queue: u32) -> Option<Vec<u8>> {
    let (mut data, mut size) = (null_mut(), 0usize);
    // SAFETY: as in `buffer`.
    let status = unsafe { proxy_dequeue_shared_queue(queue, &mut data, &mut size) };
    // SAFETY: as in `buffer`.
    (status == OK).then(|| unsafe { owned(data, size) })
}

pub fn enqueue_shared_queue(queue: u32, value: &[u8]) -> bool {
    // SAFETY: a live slice and its length.
    unsafe { proxy_enqueue_shared_queue(queue, value.as_ptr(), value.len()) == OK }
}

/// Resets a stream (0: request, 1: response).
pub fn close_stream(stream: u32) -> bool {
    // SAFETY: no pointers.
    unsafe { proxy_close_stream(stream) == OK }
}

/// Serializes header pairs as the host reads them.
pub fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = pairs.iter().fold(4usize, |n, (k, v)| {
        n.saturating_add(k.len())
            .saturating_add(v.len())
            .saturating_add(10)
    });
    let mut bytes = Vec::with_capacity(size);
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    bytes.extend_from_slice(&len(pairs.len()));
    for (k, v) in pairs {
        bytes.extend_from_slice(&len(k.len()));
        bytes.extend_from_slice(&len(v.len()));
    }
    for (k, v) in pairs {
        bytes.extend_from_slice(k.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(v.as_bytes());
        bytes.push(0);
    }
    bytes
}

/// Sends a local reply.
pub fn send_local_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool {
    let headers = serialize_pairs(headers);
    // SAFETY: live slices with their lengths, read during the call.
    unsafe {
        proxy_send_local_response(
            u32::from(status),
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        ) == OK
    }
}

/// Starts an HTTP callout; the token, or the host's status.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout_ms: u32,
) -> Result<u32, u32> {
    let headers = serialize_pairs(headers);
    let trailers = serialize_pairs(&[]);
    let body = body.unwrap_or_default();
    let mut token = 0u32;
    // SAFETY: live slices with their lengths; one u32 through a live local.
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body.as_ptr(),
            body.len(),
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    };
    if status == OK {
        Ok(token)
    } else {
        Err(status)
    }
}

pub fn define_metric(kind: MetricKind, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: a live slice; one u32 through a live local.
    (unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) } == OK)
        .then_some(id)
}

pub fn metric(id: u32) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: one u64 through a live local.
    (unsafe { proxy_get_metric(id, &mut value) } == OK).then_some(value)
}

pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers; a refused record loses a sample, never a request.
    unsafe { proxy_record_metric(id, value) };
}

pub fn increment_metric(id: u32, offset: i64) {
    // SAFETY: no pointers; a refused increment loses counts, never a request.
    unsafe { proxy_increment_metric(id, offset) };
}
