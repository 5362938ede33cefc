//! Host calls whose SDK wrapper panics on a status the host may legitimately
//! return. `hostcalls::set_property` panics on anything but `Ok`, while Envoy
//! answers `NotFound` outside a stream and `BadArgument` for a read-only value.
#![allow(unsafe_code)]

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
}

/// `proxy_set_property` for a one-segment path; true when the host said Ok (0).
pub(crate) fn set_property(name: &str, value: &[u8]) -> bool {
    // SAFETY: both pointers come from live slices whose lengths are passed
    // with them; the host only reads them during the call.
    let status =
        unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    status == 0
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
}

/// Replaces (or adds) a header; false when the host refused (e.g. the map is
/// not available in this phase), where the SDK wrapper would panic.
pub(crate) fn replace_header(map: u32, name: &str, value: &str) -> bool {
    // SAFETY: as above, live slices with their lengths, read during the call.
    let status = unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    };
    status == 0
}

/// Removes a header; false when the host refused.
pub(crate) fn remove_header(map: u32, name: &str) -> bool {
    // SAFETY: as above.
    let status = unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) };
    status == 0
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
}

/// Replaces `size` bytes at `start` of a buffer with `data`; false if refused.
pub(crate) fn set_buffer(buffer_type: u32, start: usize, size: usize, data: &[u8]) -> bool {
    // SAFETY: as above.
    let status =
        unsafe { proxy_set_buffer_bytes(buffer_type, start, size, data.as_ptr(), data.len()) };
    status == 0
}

/// Resets a stream (0: request, 1: response); false if refused.
pub(crate) fn close_stream(stream_type: u32) -> bool {
    // SAFETY: no pointers are passed.
    let status = unsafe { proxy_close_stream(stream_type) };
    status == 0
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
}

/// The host's log level for this VM (0 trace ... 5 critical), if it says.
pub(crate) fn log_level() -> Option<u32> {
    let mut level: u32 = 0;
    // SAFETY: the host writes one u32 through a pointer to a live local.
    let status = unsafe { proxy_get_log_level(&mut level) };
    (status == 0).then_some(level)
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
}

/// Every pair of a header map in the host's serialization, in one call;
/// `None` when the host refused (the SDK wrapper would panic).
pub(crate) fn header_map_pairs(map_type: u32) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to memory it allocated through this
    // module's `proxy_on_memory_allocate` (a Vec of exactly `size` bytes,
    // as the SDK allocates) and its size; ownership passes to us.
    let status = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    if status != 0 {
        return None;
    }
    if data.is_null() {
        return Some(Vec::new());
    }
    // SAFETY: see above: allocated by the SDK's allocator with capacity `size`.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}
