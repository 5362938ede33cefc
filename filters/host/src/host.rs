//! The host boundary as two traits: what the pipeline asks of the proxy for
//! one HTTP stream ([`StreamHost`]) and for the plugin as a whole
//! ([`PluginHost`]: its config, environment, metrics, the integrity store,
//! callouts and timers). Each host (proxy-wasm today) implements them thinly;
//! the pipeline's callback logic exists once, over these traits.
//!
//! Every method is total: a host failure is an answer (`None`, `false`,
//! `Err`), never a panic, and the pipeline treats an absent value as less
//! trust (an unreadable peer has no identity; an unreadable path is refused).

use std::time::Duration;

/// A header map of the current stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Map {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
}

/// One direction of an exchange.
pub use meshguard_core::masking::Direction;

impl Map {
    pub fn headers(direction: Direction) -> Self {
        match direction {
            Direction::Request => Self::RequestHeaders,
            Direction::Response => Self::ResponseHeaders,
        }
    }

    pub fn trailers(direction: Direction) -> Self {
        match direction {
            Direction::Request => Self::RequestTrailers,
            Direction::Response => Self::ResponseTrailers,
        }
    }
}

/// Facts about the downstream connection and the stream's place in the
/// proxy, each read only when a section needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    /// One byte, 1 when the peer presented a verified client certificate.
    ConnectionMtls,
    /// `TLSv1.2`, `TLSv1.3`... (empty or absent without TLS).
    TlsVersion,
    /// The peer certificate's first URI SAN.
    PeerUriSan,
    /// This proxy's own certificate's first URI SAN.
    LocalUriSan,
    /// The downstream connection id (8 bytes, little endian).
    ConnectionId,
    /// The HBONE peer's URI SAN(s) an Istio waypoint puts in filter state.
    WaypointPeerPrincipal,
    /// The name of the listener filter chain serving the stream (on an Istio
    /// waypoint, `inbound-vip|PORT|PROTOCOL|SERVICE_HOST`).
    FilterChainName,
}

/// Metrics, from any context.
pub trait Metrics {
    /// Adds `n` to a counter (a counter the host never defined: no-op).
    fn add(&self, counter: Counter, n: u64);
    /// Sets a gauge.
    fn set(&self, gauge: Gauge, value: u64);
}

/// A counter the host defined (or a no-op handle).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter(pub Option<u32>);

/// A gauge the host defined (or a no-op handle).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauge(pub Option<u32>);

/// What the pipeline does to one HTTP stream.
pub trait StreamHost: Metrics {
    /// Every entry of a header map, values decoded lossily (obs-text becomes
    /// U+FFFD); `None` when the host gave no map.
    fn headers(&self, map: Map) -> Option<Vec<(String, String)>>;
    /// One entry of a header map (the first, when repeated), decoded lossily.
    fn header(&self, map: Map, name: &str) -> Option<String>;
    /// Sets (`Some`) or removes (`None`) every entry named `name`; false if
    /// the host refused.
    fn set_header(&mut self, map: Map, name: &str, value: Option<&str>) -> bool;
    /// Adds one more field line `name: value` (for `set-cookie`, whose values
    /// cannot be joined); false if the host refused.
    fn add_header(&mut self, map: Map, name: &str, value: &str) -> bool;
    /// `len` bytes of the direction's body buffer from `start` (what the host
    /// holds now: since the last released chunk).
    fn body(&self, direction: Direction, start: usize, len: usize) -> Vec<u8>;
    /// Replaces the first `size` bytes of the direction's body buffer with
    /// `data`; false if the host refused.
    fn replace_body(&mut self, direction: Direction, size: usize, data: &[u8]) -> bool;
    /// A local reply; false if the host refused it (the caller then resets).
    fn reply(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> bool;
    /// Resets the stream (a response whose headers left can only be reset).
    fn reset(&mut self, direction: Direction);
    /// A connection or stream attribute, raw.
    fn attribute(&self, attribute: Attribute) -> Option<Vec<u8>>;
    /// Publishes a value in the stream's filter state, where the other
    /// meshguard plugins of the chain read it (a client cannot set it).
    fn publish(&mut self, key: &str, value: &str) -> bool;
    /// A value another meshguard plugin published for this stream.
    fn published(&self, key: &str) -> Option<String>;
    /// Host time, milliseconds since the Unix epoch (0 when it will not say).
    fn now_ms(&self) -> u64;
    /// Asks the plugin's root to run now ([`PluginHost::register_wakeup`]):
    /// only the root's callouts outlive a request.
    fn wake(&mut self, wakeup: u32) -> bool;
}

/// Why the integrity store refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Another VM wrote since the value was read (compare-and-swap).
    Raced,
    /// The host refused.
    Refused,
}

/// Plugin-wide host access (the root context).
pub trait PluginHost: Metrics {
    /// The plugin config (Istio `pluginConfig`), raw.
    fn configuration(&self) -> Vec<u8>;
    /// A proxy environment variable (vmConfig.env).
    fn env(&self, name: &str) -> Option<String>;
    /// A plugin or node property (`plugin_name`, `plugin_root_id`,
    /// `xds.node.metadata.NAMESPACE`...), as text.
    fn property(&self, path: &[&str]) -> Option<String>;
    /// Host time, milliseconds since the Unix epoch (0 when it will not say).
    fn now_ms(&self) -> u64;
    fn define_counter(&self, name: &str) -> Counter;
    fn define_gauge(&self, name: &str) -> Gauge;
    /// Reads a gauge (for raise-only gauges).
    fn gauge_value(&self, gauge: Gauge) -> Option<u64>;
    /// A value of the proxy-wide integrity store and its version.
    fn store_get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes a value if its version is still `version` (`None`: always).
    fn store_set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError>;
    /// Starts an HTTP callout; its answer comes to the root's callout
    /// callback with the returned token.
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String>;
    /// Inside the callout callback: the answer's `:status` (None without headers).
    fn callout_status(&self) -> Option<String>;
    /// Inside the callout callback: up to `max` bytes of the answer's body.
    fn callout_body(&self, size: usize, max: usize) -> Vec<u8>;
    /// Asks for the root's timer every `period`.
    fn set_tick(&self, period: Duration) -> bool;
    /// From a root callback: this root, which answered "not yet" when the
    /// host retired it ([`crate::root::PluginRoot::done`]), is done now.
    fn done(&self) -> bool;
    /// A channel streams use to wake this root ([`StreamHost::wake`]); the
    /// root's wakeup callback receives its id. Unique per VM and `name`.
    fn register_wakeup(&self, name: &str) -> Option<u32>;
}

/// Why an HTTP callout (source of truth, audit collector) failed: the
/// `reason` label of the callout failure counters. A failure is counted,
/// logged once per change, and never touches traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutFailure {
    /// The host refused to start the call (unknown cluster...).
    DispatchFailed,
    /// No answer: a timeout, a reset, a peer that stalled after its headers
    /// or died mid-body (the host reports no headers then).
    NoAnswer,
    /// An answer whose status is not the one expected (redirects included).
    BadStatus,
    /// An answer larger than the caller reads.
    TooLarge,
}

impl CalloutFailure {
    pub const ALL: [Self; 4] = [
        Self::DispatchFailed,
        Self::NoAnswer,
        Self::BadStatus,
        Self::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DispatchFailed => "dispatch_failed",
            Self::NoAnswer => "no_answer",
            Self::BadStatus => "bad_status",
            Self::TooLarge => "too_large",
        }
    }
}
