//! The roots' timers. Envoy gives dynamic-module HTTP filters no timer; it
//! gives each filter config a scheduler whose commit (callable from any
//! thread) runs the config's scheduled hook on the main thread. One module
//! thread commits each config's tick event at the period its root asked
//! for, so `PluginRoot::tick` runs on the main thread as a proxy-wasm
//! root's `on_tick` does. A tick is committed only once the previous one was
//! delivered (a busy main thread never gets a backlog of ticks). A config
//! leaves the ticker before its scheduler is deleted, and commits happen
//! under the ticker's lock, so no commit ever reaches a deleted scheduler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::abi::Scheduler;

/// The event id of a tick (wakeups use `WAKEUP_BASE + id`).
pub const TICK: u64 = 0;
/// Wakeup ids start here.
pub const WAKEUP_BASE: u64 = 1;

/// Longest sleep of the ticker thread when no tick is due.
const IDLE: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Entry {
    config: u64,
    scheduler: Arc<Scheduler>,
    period: Duration,
    due: Instant,
    /// A tick was committed and not yet delivered.
    pending: Arc<AtomicBool>,
}

#[derive(Debug, Default)]
struct Ticker {
    entries: Mutex<Vec<Entry>>,
    changed: Condvar,
    started: OnceLock<bool>,
}

fn ticker() -> &'static Ticker {
    static TICKER: OnceLock<Ticker> = OnceLock::new();
    TICKER.get_or_init(Ticker::default)
}

/// Ticks `config` every `period` through `scheduler`; false when the ticker
/// thread could not be started.
pub fn schedule(
    config: u64,
    scheduler: &Arc<Scheduler>,
    period: Duration,
    pending: &Arc<AtomicBool>,
) -> bool {
    let ticker = ticker();
    let started = *ticker.started.get_or_init(|| {
        std::thread::Builder::new()
            .name("meshguard-tick".into())
            .spawn(run)
            .is_ok()
    });
    if !started {
        return false;
    }
    let mut entries = ticker
        .entries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    entries.retain(|e| e.config != config);
    entries.push(Entry {
        config,
        scheduler: Arc::clone(scheduler),
        period,
        due: Instant::now()
            .checked_add(period)
            .unwrap_or_else(Instant::now),
        pending: Arc::clone(pending),
    });
    ticker.changed.notify_one();
    true
}

/// Stops ticking `config`; no commit for it is in flight once this returns.
pub fn cancel(config: u64) {
    let ticker = ticker();
    let mut entries = ticker
        .entries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    entries.retain(|e| e.config != config);
}

/// The ticker thread: commits due ticks, sleeps until the next one.
fn run() {
    let ticker = ticker();
    let mut entries = ticker
        .entries
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        let mut next = now.checked_add(IDLE).unwrap_or(now);
        for entry in entries.iter_mut() {
            if entry.due <= now {
                if !entry.pending.swap(true, Ordering::AcqRel) {
                    entry.scheduler.commit(TICK);
                }
                entry.due = now.checked_add(entry.period).unwrap_or(now);
            }
            next = next.min(entry.due);
        }
        let wait = next.saturating_duration_since(Instant::now());
        entries = match ticker.changed.wait_timeout(entries, wait) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
}
