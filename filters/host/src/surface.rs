//! What an HTTP filter does to one stream, as a trait: [`Envoy`] makes the
//! host calls; [`Fake`] (feature `fake`) records them, so that an adapter's
//! callback sequence (headers, body chunks, trailers, end of stream) is
//! unit-tested natively. The real-Envoy tests remain the proof; this checks
//! the adapter's translation of decisions into host calls.

use proxy_wasm::types::{BufferType, MapType};

use crate::Counter;

/// The host calls an adapter makes on the current stream.
pub trait Surface {
    /// Every entry of a header map (headers or trailers), values decoded lossily.
    fn entries(&self, map: MapType) -> Vec<(String, String)>;
    /// Sets (`Some`) or removes (`None`) an entry; false if the host refused.
    fn set_entry(&mut self, map: MapType, name: &str, value: Option<&str>) -> bool;
    /// Up to `max` bytes of what a body buffer holds now.
    fn body(&self, buffer: BufferType, max: usize) -> Vec<u8>;
    /// Replaces the first `size` bytes of a body buffer; false if refused.
    fn replace_body(&mut self, buffer: BufferType, size: usize, data: &[u8]) -> bool;
    /// A JSON local reply with `x-meshguard-deny-reason`; false if refused.
    fn json_reply(&mut self, status: u16, reason: &str, body: &[u8]) -> bool;
    /// Resets the request (`false`) or the response (`true`) stream.
    fn reset(&mut self, response: bool);
    /// Publishes a decision in the filter state for the other filters.
    fn publish_decision(&mut self, filter: &str, decision: &str);
    /// Adds `n` to a counter.
    fn add(&mut self, counter: Counter, n: u64);
}

/// The real host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Envoy;

impl Surface for Envoy {
    fn entries(&self, map: MapType) -> Vec<(String, String)> {
        crate::map_entries(map)
    }

    fn set_entry(&mut self, map: MapType, name: &str, value: Option<&str>) -> bool {
        crate::set_map_entry(map, name, value)
    }

    fn body(&self, buffer: BufferType, max: usize) -> Vec<u8> {
        crate::body(buffer, 0, max)
    }

    fn replace_body(&mut self, buffer: BufferType, size: usize, data: &[u8]) -> bool {
        crate::replace_body(buffer, size, data)
    }

    fn json_reply(&mut self, status: u16, reason: &str, body: &[u8]) -> bool {
        crate::send_json_reply(status, Some(reason), body)
    }

    fn reset(&mut self, response: bool) {
        if response {
            crate::reset_response();
        } else {
            crate::reset_request();
        }
    }

    fn publish_decision(&mut self, filter: &str, decision: &str) {
        crate::publish_decision(filter, decision);
    }

    fn add(&mut self, counter: Counter, n: u64) {
        counter.add(n);
    }
}

#[cfg(feature = "fake")]
pub use fake::Fake;

#[cfg(feature = "fake")]
mod fake {
    use std::collections::HashMap;

    use proxy_wasm::types::{BufferType, MapType};

    use super::Surface;
    use crate::Counter;

    /// A recording host for native tests: maps and bodies are plain data the
    /// test fills and inspects; replies, resets and decisions are recorded.
    #[derive(Debug, Default)]
    pub struct Fake {
        pub maps: HashMap<MapType, Vec<(String, String)>>,
        pub bodies: HashMap<BufferType, Vec<u8>>,
        /// (status, reason) of each local reply.
        pub replies: Vec<(u16, String)>,
        /// `true` for a response reset, `false` for a request reset.
        pub resets: Vec<bool>,
        pub decisions: Vec<String>,
        /// The sum of every counter addition (counters the fake never
        /// defined cannot be told apart).
        pub counted: u64,
        /// The host refuses body replacements (to test the fallback).
        pub refuse_bodies: bool,
    }

    impl Fake {
        /// The first value of `name` in `map`.
        pub fn entry(&self, map: MapType, name: &str) -> Option<&str> {
            self.maps
                .get(&map)?
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// Appends a body chunk, as the host buffers one.
        pub fn push_body(&mut self, buffer: BufferType, data: &[u8]) {
            self.bodies
                .entry(buffer)
                .or_default()
                .extend_from_slice(data);
        }

        /// Takes what the host would release of a body.
        pub fn take_body(&mut self, buffer: BufferType) -> Vec<u8> {
            self.bodies.remove(&buffer).unwrap_or_default()
        }
    }

    impl Surface for Fake {
        fn entries(&self, map: MapType) -> Vec<(String, String)> {
            self.maps.get(&map).cloned().unwrap_or_default()
        }

        fn set_entry(&mut self, map: MapType, name: &str, value: Option<&str>) -> bool {
            let entries = self.maps.entry(map).or_default();
            let at = entries
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(name));
            entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if let Some(value) = value {
                let at = at.unwrap_or(entries.len()).min(entries.len());
                entries.insert(at, (name.to_owned(), value.to_owned()));
            }
            true
        }

        fn body(&self, buffer: BufferType, max: usize) -> Vec<u8> {
            let held = self
                .bodies
                .get(&buffer)
                .map(Vec::as_slice)
                .unwrap_or_default();
            held.get(..max.min(held.len())).unwrap_or_default().to_vec()
        }

        fn replace_body(&mut self, buffer: BufferType, size: usize, data: &[u8]) -> bool {
            if self.refuse_bodies {
                return false;
            }
            let held = self.bodies.entry(buffer).or_default();
            let size = size.min(held.len());
            held.splice(..size, data.iter().copied());
            true
        }

        fn json_reply(&mut self, status: u16, reason: &str, _body: &[u8]) -> bool {
            self.replies.push((status, reason.to_owned()));
            true
        }

        fn reset(&mut self, response: bool) {
            self.resets.push(response);
        }

        fn publish_decision(&mut self, _filter: &str, decision: &str) {
            self.decisions.push(decision.to_owned());
        }

        fn add(&mut self, _counter: Counter, n: u64) {
            self.counted = self.counted.saturating_add(n);
        }
    }
}
