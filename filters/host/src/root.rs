//! The host-independent glue between a host's callbacks and the pipeline:
//! one [`PluginRoot`] per plugin config (Envoy's root context), the
//! [`Streams`] it starts, and one [`StreamContext`] per HTTP stream.

use std::sync::Arc;
use std::time::Duration;

use crate::host::{Direction, PluginHost, StreamHost};
use crate::integrity::{self, Configured, Guard, Instance, Refusing};
use crate::pipeline::{Exchange, Pipeline};
use crate::reply::{json_reply, Flow};
use crate::vm_memory::VmMemory;

/// What a root context runs.
#[derive(Debug)]
enum State {
    /// No config was accepted: every stream is refused.
    Unconfigured,
    Active(Arc<Pipeline>, Box<Guard>),
    /// A config this proxy admitted that this VM could not: every stream is
    /// refused with a stable reason.
    Refusing(Refusing),
}

/// How long a retired config keeps delivering the audit records it still
/// holds (a push replaced it, or the plugin was removed) before it drops
/// them, counted as `dropped`.
pub const RETIRE_GRACE: Duration = Duration::from_secs(30);

/// A plugin config's root context.
#[derive(Debug)]
pub struct PluginRoot {
    context_id: u32,
    state: State,
    memory: Option<VmMemory>,
    /// Retired with records still to deliver: until when it keeps trying.
    retiring_until_ms: Option<u64>,
}

impl PluginRoot {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            state: State::Unconfigured,
            memory: None,
            retiring_until_ms: None,
        }
    }

    /// Loads the plugin config; false refuses it (Envoy NACKs).
    pub fn configure<H: PluginHost>(&mut self, host: &mut H) -> bool {
        let instance = Instance::read(&*host);
        let filter = instance.filter;
        let accepted = match integrity::configure(&*host, &instance) {
            Configured::Accepted(plugin, guard) => {
                let pipeline = Pipeline::start(&*host, *plugin, &guard, self.context_id);
                let tick = pipeline
                    .tick_period()
                    .map_or(guard.tick_period(), |p| p.min(guard.tick_period()));
                if !host.set_tick(tick) {
                    log::error!("meshguard {filter}: the host refused a timer of {tick:?}");
                }
                self.state = State::Active(Arc::new(pipeline), guard);
                true
            }
            Configured::RefuseEverything(refusing) => {
                self.state = State::Refusing(refusing);
                true
            }
            Configured::Refused => false,
        };
        if accepted && self.memory.is_none() {
            self.memory = VmMemory::define(&*host, filter);
        }
        accepted
    }

    pub fn tick<H: PluginHost>(&mut self, host: &mut H) {
        if let State::Active(pipeline, guard) = &mut self.state {
            // A retired config only delivers what it holds.
            if self.retiring_until_ms.is_none() {
                guard.on_tick(&*host);
            }
            pipeline.on_tick(&*host);
        }
        self.finish_retiring(host);
    }

    pub fn queue_ready<H: PluginHost>(&mut self, host: &mut H, wakeup: u32) {
        if let State::Active(pipeline, _) = &self.state {
            pipeline.on_wakeup(&*host, wakeup);
        }
    }

    pub fn callout_response<H: PluginHost>(
        &mut self,
        host: &mut H,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        if let State::Active(pipeline, guard) = &mut self.state {
            if !pipeline.on_callout_response(&*host, token, num_headers) {
                guard.on_callout_response(&*host, token, num_headers, body_size);
            }
        }
        self.finish_retiring(host);
    }

    /// This config no longer runs (the host retires it once no stream uses
    /// it). True when it is done; false while it still delivers audit
    /// records, for at most [`RETIRE_GRACE`]: it then tells the host itself
    /// ([`PluginHost::done`]).
    pub fn done<H: PluginHost>(&mut self, host: &mut H) -> bool {
        let State::Active(pipeline, guard) = &self.state else {
            return true;
        };
        guard.retire(&*host);
        if pipeline.retire(&*host) {
            return true;
        }
        log::info!("meshguard: a retired config delivers the audit records it still holds");
        let grace = u64::try_from(RETIRE_GRACE.as_millis()).unwrap_or(u64::MAX);
        self.retiring_until_ms = Some(host.now_ms().saturating_add(grace));
        false
    }

    /// The host ends this config now and cannot wait for it (an Envoy
    /// dynamic module's config is destroyed when its last stream is gone,
    /// and Envoy cancels the config's callouts with it): returns the audit
    /// records still waiting, for the plugin's next config to deliver
    /// ([`PluginRoot::adopt`]); records in flight are dropped, counted.
    pub fn hand_over<H: PluginHost>(&mut self, host: &mut H) -> Vec<String> {
        let State::Active(pipeline, guard) = &self.state else {
            return Vec::new();
        };
        guard.retire(&*host);
        self.retiring_until_ms = None;
        pipeline.hand_over(&*host)
    }

    /// Delivers audit records a retired config of this plugin handed over;
    /// false (nothing taken) when this config has no collector.
    pub fn adopt<H: PluginHost>(&mut self, host: &mut H, lines: Vec<String>) -> bool {
        match &self.state {
            State::Active(pipeline, _) => pipeline.adopt(&*host, lines),
            State::Unconfigured | State::Refusing(_) => false,
        }
    }

    /// A retiring root whose records are delivered (or whose grace ran out)
    /// is done.
    fn finish_retiring<H: PluginHost>(&mut self, host: &mut H) {
        let (Some(until), State::Active(pipeline, _)) = (self.retiring_until_ms, &self.state)
        else {
            return;
        };
        if !pipeline.drained() {
            if host.now_ms() < until {
                return;
            }
            pipeline.abandon(&*host);
        }
        self.retiring_until_ms = None;
        if !host.done() {
            log::warn!("meshguard: the host did not take a retired config's done");
        }
    }

    /// A new HTTP stream of this plugin.
    pub fn stream<H: PluginHost>(&self, host: &H) -> StreamContext {
        if let Some(memory) = &self.memory {
            memory.observe(host);
        }
        self.streams().start()
    }

    /// What this root's streams run, for a host that starts streams away
    /// from the root (the native module: on every worker thread).
    pub fn streams(&self) -> Streams {
        match &self.state {
            State::Unconfigured => Streams::Unconfigured,
            State::Active(pipeline, _) => Streams::Active(Arc::clone(pipeline)),
            State::Refusing(refusing) => Streams::Refusing(refusing.clone()),
        }
    }
}

/// What a configured root's streams run: shared by every thread that
/// starts one.
#[derive(Debug, Clone)]
pub enum Streams {
    Unconfigured,
    Active(Arc<Pipeline>),
    Refusing(Refusing),
}

impl Streams {
    /// A new HTTP stream.
    pub fn start(&self) -> StreamContext {
        match self {
            Self::Unconfigured => StreamContext::unconfigured(),
            Self::Active(pipeline) => {
                StreamContext::Active(Box::new(Exchange::new(Arc::clone(pipeline))))
            }
            Self::Refusing(refusing) => StreamContext::Refusing(refusing.clone()),
        }
    }
}

/// One HTTP stream's context.
#[derive(Debug)]
pub enum StreamContext {
    Active(Box<Exchange>),
    /// The plugin has no config it can run: the request is refused.
    Unconfigured,
    Refusing(Refusing),
}

impl StreamContext {
    pub fn unconfigured() -> Self {
        Self::Unconfigured
    }

    pub fn request_headers<H: StreamHost>(&mut self, host: &mut H, end_of_stream: bool) -> Flow {
        match self {
            Self::Active(exchange) => exchange.request_headers(host, end_of_stream),
            Self::Unconfigured => {
                log::error!("meshguard: no accepted configuration; refusing the request");
                json_reply(
                    host,
                    503,
                    Some("meshguard_not_configured"),
                    br#"{"error":"meshguard_not_configured"}"#,
                )
            }
            Self::Refusing(refusing) => refusing.refuse(host),
        }
    }

    pub fn body<H: StreamHost>(
        &mut self,
        host: &mut H,
        direction: Direction,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        match self {
            Self::Active(exchange) => exchange.body(host, direction, size, end_of_stream),
            Self::Unconfigured | Self::Refusing(_) => Flow::Continue,
        }
    }

    pub fn trailers<H: StreamHost>(&mut self, host: &mut H, direction: Direction) -> Flow {
        match self {
            Self::Active(exchange) => exchange.trailers(host, direction),
            Self::Unconfigured | Self::Refusing(_) => Flow::Continue,
        }
    }

    pub fn response_headers<H: StreamHost>(&mut self, host: &mut H, end_of_stream: bool) -> Flow {
        match self {
            Self::Active(exchange) => exchange.response_headers(host, end_of_stream),
            Self::Unconfigured | Self::Refusing(_) => Flow::Continue,
        }
    }

    pub fn log<H: StreamHost>(&mut self, host: &mut H) {
        if let Self::Active(exchange) = self {
            exchange.log(host);
        }
    }

    pub fn finish<H: StreamHost>(&mut self, host: &mut H) {
        if let Self::Active(exchange) = self {
            exchange.finish(host);
        }
    }
}
