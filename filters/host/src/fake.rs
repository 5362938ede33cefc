//! A recording host for native tests: maps, bodies, attributes, the store and
//! the environment are plain data the test fills and inspects; replies,
//! resets, callouts and counter additions are recorded. The real-Envoy tests
//! remain the proof; this checks the pipeline's translation of decisions into
//! host calls, callback by callback.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use crate::host::{
    Attribute, Counter, Direction, Gauge, Map, Metrics, PluginHost, StoreError, StreamHost,
};

/// A recorded callout: cluster, headers, body.
pub type Callout = (String, Vec<(String, String)>, Vec<u8>);

#[derive(Debug, Default)]
pub struct Fake {
    pub maps: HashMap<Map, Vec<(String, String)>>,
    pub bodies: HashMap<Direction, Vec<u8>>,
    /// What a test recorded as released downstream or upstream, in order.
    pub released: Vec<(Direction, Vec<u8>)>,
    pub attributes: HashMap<Attribute, Vec<u8>>,
    pub published: HashMap<String, String>,
    /// (status, reason header) of each local reply.
    pub replies: Vec<(u16, Option<String>)>,
    /// Each reset's direction.
    pub resets: Vec<Direction>,
    /// Counter id → sum added; gauge id → value.
    pub counters: RefCell<HashMap<u32, u64>>,
    pub gauges: RefCell<HashMap<u32, u64>>,
    /// Metric names by id (defined in order).
    pub metric_names: RefCell<Vec<String>>,
    /// The host refuses body replacements (to test the fallback).
    pub refuse_bodies: bool,
    pub config: Vec<u8>,
    pub env: HashMap<String, String>,
    pub properties: HashMap<String, String>,
    pub store: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    pub now_ms: u64,
    /// (cluster, headers, body) of each callout.
    pub callouts: RefCell<Vec<Callout>>,
    /// The answer a callout callback reads: status and body.
    pub callout_answer: Option<(String, Vec<u8>)>,
    pub wakeups: Vec<u32>,
    /// How often a root said it is done ([`PluginHost::done`]).
    pub done_calls: std::cell::Cell<u32>,
}

impl Fake {
    /// The first value of `name` in `map`.
    pub fn entry(&self, map: Map, name: &str) -> Option<&str> {
        self.maps
            .get(&map)?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Appends a body chunk, as the host buffers one.
    pub fn push_body(&mut self, direction: Direction, data: &[u8]) {
        self.bodies
            .entry(direction)
            .or_default()
            .extend_from_slice(data);
    }

    /// Takes what the host would release of a body.
    pub fn take_body(&mut self, direction: Direction) -> Vec<u8> {
        self.bodies.remove(&direction).unwrap_or_default()
    }

    /// The sum added to the counter named `name` (its full tagged name).
    pub fn counter(&self, name: &str) -> u64 {
        let names = self.metric_names.borrow();
        let ids: Vec<u32> = names
            .iter()
            .enumerate()
            .filter(|(_, n)| *n == name)
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        let counters = self.counters.borrow();
        ids.iter().filter_map(|id| counters.get(id)).sum()
    }

    /// The value of the gauge named `name` (its full tagged name).
    pub fn gauge(&self, name: &str) -> Option<u64> {
        let names = self.metric_names.borrow();
        let id = names.iter().rposition(|n| n == name)?;
        let id = u32::try_from(id).ok()?;
        Some(self.gauges.borrow().get(&id).copied().unwrap_or(0))
    }

    /// Every counter addition, summed.
    pub fn counted(&self) -> u64 {
        self.counters.borrow().values().sum()
    }

    fn define(&self, name: &str) -> u32 {
        let mut names = self.metric_names.borrow_mut();
        names.push(name.to_owned());
        u32::try_from(names.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }
}

impl Metrics for Fake {
    fn add(&self, counter: Counter, n: u64) {
        if let Some(id) = counter.0 {
            let mut counters = self.counters.borrow_mut();
            let sum = counters.entry(id).or_default();
            *sum = sum.saturating_add(n);
        }
    }

    fn set(&self, gauge: Gauge, value: u64) {
        if let Some(id) = gauge.0 {
            self.gauges.borrow_mut().insert(id, value);
        }
    }
}

impl StreamHost for Fake {
    fn headers(&self, map: Map) -> Option<Vec<(String, String)>> {
        Some(self.maps.get(&map).cloned().unwrap_or_default())
    }

    fn header(&self, map: Map, name: &str) -> Option<String> {
        self.entry(map, name).map(str::to_owned)
    }

    fn set_header(&mut self, map: Map, name: &str, value: Option<&str>) -> bool {
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

    fn add_header(&mut self, map: Map, name: &str, value: &str) -> bool {
        self.maps
            .entry(map)
            .or_default()
            .push((name.to_owned(), value.to_owned()));
        true
    }

    fn body(&self, direction: Direction, start: usize, len: usize) -> Vec<u8> {
        let held = self
            .bodies
            .get(&direction)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let end = start.saturating_add(len).min(held.len());
        held.get(start.min(end)..end).unwrap_or_default().to_vec()
    }

    fn replace_body(&mut self, direction: Direction, size: usize, data: &[u8]) -> bool {
        if self.refuse_bodies {
            return false;
        }
        let held = self.bodies.entry(direction).or_default();
        let size = size.min(held.len());
        held.splice(..size, data.iter().copied());
        true
    }

    fn reply(&mut self, status: u16, headers: &[(&str, &str)], _body: &[u8]) -> bool {
        let reason = headers
            .iter()
            .find(|(n, _)| *n == "x-meshguard-deny-reason")
            .map(|(_, v)| (*v).to_owned());
        self.replies.push((status, reason));
        true
    }

    fn reset(&mut self, direction: Direction) {
        self.resets.push(direction);
    }

    fn attribute(&self, attribute: Attribute) -> Option<Vec<u8>> {
        self.attributes.get(&attribute).cloned()
    }

    fn publish(&mut self, key: &str, value: &str) -> bool {
        self.published.insert(key.to_owned(), value.to_owned());
        true
    }

    fn published(&self, key: &str) -> Option<String> {
        self.published.get(key).cloned()
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn wake(&mut self, wakeup: u32) -> bool {
        self.wakeups.push(wakeup);
        true
    }
}

impl PluginHost for Fake {
    fn configuration(&self) -> Vec<u8> {
        self.config.clone()
    }

    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    fn property(&self, path: &[&str]) -> Option<String> {
        self.properties.get(&path.join(".")).cloned()
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn define_counter(&self, name: &str) -> Counter {
        Counter(Some(self.define(name)))
    }

    fn define_gauge(&self, name: &str) -> Gauge {
        Gauge(Some(self.define(name)))
    }

    fn gauge_value(&self, gauge: Gauge) -> Option<u64> {
        Some(self.gauges.borrow().get(&gauge.0?).copied().unwrap_or(0))
    }

    fn store_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.store.borrow().get(key).cloned()
    }

    fn store_set(&self, key: &str, value: &[u8], version: Option<u32>) -> Result<(), StoreError> {
        let mut store = self.store.borrow_mut();
        let current = store.get(key).map_or(0, |(_, v)| *v);
        if version.is_some_and(|v| v != current) {
            return Err(StoreError::Raced);
        }
        store.insert(key.to_owned(), (value.to_vec(), current.saturating_add(1)));
        Ok(())
    }

    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        _timeout: Duration,
    ) -> Result<u32, String> {
        let mut callouts = self.callouts.borrow_mut();
        callouts.push((
            cluster.to_owned(),
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body.unwrap_or_default().to_vec(),
        ));
        u32::try_from(callouts.len()).map_err(|e| e.to_string())
    }

    fn callout_status(&self) -> Option<String> {
        self.callout_answer.as_ref().map(|(s, _)| s.clone())
    }

    fn callout_body(&self, size: usize, max: usize) -> Vec<u8> {
        self.callout_answer
            .as_ref()
            .map(|(_, b)| b.iter().copied().take(size.min(max)).collect())
            .unwrap_or_default()
    }

    fn set_tick(&self, _period: Duration) -> bool {
        true
    }

    fn done(&self) -> bool {
        self.done_calls.set(self.done_calls.get().saturating_add(1));
        true
    }

    fn register_wakeup(&self, _name: &str) -> Option<u32> {
        Some(1)
    }
}
