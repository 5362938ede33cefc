//! One plugin's pipeline: the sections its config names, run in one stream
//! context in request order (identity, masking, audit; a response meets
//! audit, then masking, as it would meet separate filters), all judging the
//! one [`View`] of the request. A section that refuses stops the rest. Each
//! section keeps its own metrics, log lines and deny reasons.

use std::sync::Arc;

use meshguard_core::plugin::Plugin;

use crate::host::{Direction, PluginHost, StreamHost};
use crate::integrity::{Enforcement, Guard};
use crate::reply::{reset, Flow};
use crate::sections::audit::{Audit, InFlight};
use crate::sections::identity::Identity;
use crate::sections::masking::{self, Masking};
use crate::view::View;

/// A configured plugin: its compiled sections, their per-VM state, and the
/// integrity enforcement of its config.
#[derive(Debug)]
pub struct Pipeline {
    pub plugin: Plugin,
    identity: Option<Identity>,
    masking: Option<Masking>,
    audit: Option<Audit>,
    enforcement: Enforcement,
    filter: &'static str,
}

impl Pipeline {
    /// Defines each section's metrics and state for `plugin`.
    pub fn start<H: PluginHost>(host: &H, plugin: Plugin, guard: &Guard, context_id: u32) -> Self {
        let identity = plugin.identity.as_ref().map(|p| Identity::define(host, p));
        let masking = plugin.masking.as_ref().map(|p| Masking::define(host, p));
        let audit = plugin
            .audit
            .as_ref()
            .map(|s| Audit::define(host, s, guard.fingerprint(), context_id));
        Self {
            plugin,
            identity,
            masking,
            audit,
            enforcement: guard.enforcement(),
            filter: guard.filter(),
        }
    }

    /// The timer the sections need besides the integrity guard's.
    pub fn tick_period(&self) -> Option<std::time::Duration> {
        self.plugin
            .audit
            .as_ref()
            .and_then(|s| Audit::tick_period(&s.policy))
    }

    pub fn on_tick<H: PluginHost>(&self, host: &H) {
        if let (Some(audit), Some(section)) = (&self.audit, &self.plugin.audit) {
            audit.on_tick(host, &section.policy);
        }
    }

    pub fn on_wakeup<H: PluginHost>(&self, host: &H, wakeup: u32) -> bool {
        match (&self.audit, &self.plugin.audit) {
            (Some(audit), Some(section)) => audit.on_wakeup(host, &section.policy, wakeup),
            _ => false,
        }
    }

    /// The config retired: sends what it still holds. True when nothing is
    /// left to deliver.
    pub fn retire<H: PluginHost>(&self, host: &H) -> bool {
        match (&self.audit, &self.plugin.audit) {
            (Some(audit), Some(section)) => audit.retire(host, &section.policy),
            _ => true,
        }
    }

    /// Nothing is left to deliver.
    pub fn drained(&self) -> bool {
        self.audit.as_ref().is_none_or(Audit::drained)
    }

    /// The host ends this config at once: the audit records still waiting,
    /// for a successor to adopt.
    pub fn hand_over<H: PluginHost>(&self, host: &H) -> Vec<String> {
        self.audit
            .as_ref()
            .map_or_else(Vec::new, |audit| audit.hand_over(host))
    }

    /// Takes over a retired config's undelivered audit records; false when
    /// this config has no collector to deliver them to.
    pub fn adopt<H: PluginHost>(&self, host: &H, lines: Vec<String>) -> bool {
        self.audit
            .as_ref()
            .is_some_and(|audit| audit.adopt(host, lines))
    }

    /// Gives up on what is left to deliver (counted, logged).
    pub fn abandon<H: PluginHost>(&self, host: &H) {
        if let Some(audit) = &self.audit {
            audit.abandon(host);
        }
    }

    /// A callout answered; false when it was none of the sections'.
    pub fn on_callout_response<H: PluginHost>(
        &self,
        host: &H,
        token: u32,
        num_headers: usize,
    ) -> bool {
        match (&self.audit, &self.plugin.audit) {
            (Some(audit), Some(section)) => {
                audit.on_callout_response(host, &section.policy, token, num_headers)
            }
            _ => false,
        }
    }

    pub fn filter(&self) -> &'static str {
        self.filter
    }
}

/// One HTTP stream through the pipeline.
#[derive(Debug)]
pub struct Exchange {
    pipeline: Arc<Pipeline>,
    masking: masking::Exchange,
    audit: Option<InFlight>,
    /// What the identity section decided (audit records it).
    identity_decision: Option<String>,
    /// A section answered the stream itself (or reset it): the rest of the
    /// pipeline stays out of it, as later filters would.
    answered: bool,
    /// Bytes the host holds per direction since the last released chunk
    /// (`[request, response]`).
    held: [usize; 2],
    /// Of those, the bytes at the start of the buffer that masking already
    /// released (masked) and a later section holds: masking never reads
    /// them again (`[request, response]`).
    settled: [usize; 2],
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::Request => 0,
        Direction::Response => 1,
    }
}

impl Exchange {
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        // With audit in this plugin, the other sections' outcomes reach it
        // in process; without, they are published for another plugin's.
        let publish = pipeline.plugin.audit.is_none();
        Self {
            pipeline,
            masking: masking::Exchange::new(publish),
            audit: None,
            identity_decision: None,
            answered: false,
            held: [0, 0],
            settled: [0, 0],
        }
    }

    fn stop(&mut self, flow: Flow) -> Flow {
        if flow == Flow::Stop {
            self.answered = true;
        }
        flow
    }

    pub fn request_headers<H: StreamHost>(&mut self, host: &mut H, end_of_stream: bool) -> Flow {
        let pipeline = Arc::clone(&self.pipeline);
        let plugin = &pipeline.plugin;
        let mut view = View::read(host, plugin.path_normalization);
        if let Err(rejection) = view.adopt_published(host) {
            view.canonical = Err(rejection);
        }
        if let Some(flow) = pipeline.enforcement.enforce(host, || view.match_path()) {
            return self.stop(flow);
        }
        if let (Some(policy), Some(section)) = (&plugin.identity, &pipeline.identity) {
            let decision = &mut self.identity_decision;
            if section.request(host, policy, &mut view, decision) == Flow::Stop {
                return self.stop(Flow::Stop);
            }
        }
        // What every section judges is what the upstream receives.
        if !view.forward(host) {
            log::error!(
                "meshguard {}: the host refused the canonical path or host; resetting",
                pipeline.filter
            );
            return self.stop(reset(host, Direction::Request));
        }
        if let (Some(policy), Some(section)) = (&plugin.masking, &pipeline.masking) {
            let flow =
                self.masking
                    .request_headers(host, policy, section, &mut view, end_of_stream);
            if flow == Flow::Stop {
                return self.stop(flow);
            }
        }
        let flow = match (&plugin.audit, &pipeline.audit) {
            (Some(section), Some(audit)) => {
                match InFlight::start(host, section, audit, &mut view, end_of_stream) {
                    Ok((flight, flow)) => {
                        self.audit = Some(flight);
                        flow
                    }
                    Err(flow) => return self.stop(flow),
                }
            }
            _ => Flow::Continue,
        };
        view.publish(host, self.identity_decision.as_deref());
        flow
    }

    pub fn body<H: StreamHost>(
        &mut self,
        host: &mut H,
        direction: Direction,
        size: usize,
        end_of_stream: bool,
    ) -> Flow {
        if self.answered {
            return Flow::Continue;
        }
        let pipeline = Arc::clone(&self.pipeline);
        let plugin = &pipeline.plugin;
        let mut buffered = size;
        if let (Some(policy), Some(section)) = (&plugin.masking, &pipeline.masking) {
            let settled = self.settled.get(index(direction)).copied().unwrap_or(0);
            let step = self.masking.body(
                host,
                policy,
                section,
                direction,
                size,
                settled,
                end_of_stream,
            );
            if step.refused {
                return self.stop(step.flow);
            }
            if step.flow == Flow::Stop {
                // Masking holds what the host buffers now (a streamed body's
                // incomplete record may have replaced the chunk).
                return self.hold(direction, step.buffered);
            }
            buffered = step.buffered;
        }
        let flow = match (direction, &mut self.audit, &plugin.audit, &pipeline.audit) {
            (Direction::Request, Some(flight), Some(section), Some(audit)) => {
                flight.body(host, section, audit, buffered, end_of_stream)
            }
            _ => Flow::Continue,
        };
        match flow {
            Flow::Stop => {
                // Everything in the buffer has passed masking now.
                if let Some(settled) = self.settled.get_mut(index(direction)) {
                    *settled = buffered;
                }
                self.hold(direction, buffered)
            }
            Flow::Continue => self.release(direction),
        }
    }

    fn hold(&mut self, direction: Direction, buffered: usize) -> Flow {
        if let Some(held) = self.held.get_mut(index(direction)) {
            *held = buffered;
        }
        Flow::Stop
    }

    fn release(&mut self, direction: Direction) -> Flow {
        if let Some(held) = self.held.get_mut(index(direction)) {
            *held = 0;
        }
        if let Some(settled) = self.settled.get_mut(index(direction)) {
            *settled = 0;
        }
        Flow::Continue
    }

    pub fn trailers<H: StreamHost>(&mut self, host: &mut H, direction: Direction) -> Flow {
        if self.answered {
            return Flow::Continue;
        }
        let pipeline = Arc::clone(&self.pipeline);
        let plugin = &pipeline.plugin;
        let mut buffered = self.held.get(index(direction)).copied().unwrap_or(0);
        if let (Some(policy), Some(section)) = (&plugin.masking, &pipeline.masking) {
            if self.masking.holds(direction) {
                let settled = self.settled.get(index(direction)).copied().unwrap_or(0);
                let step = self
                    .masking
                    .trailers(host, policy, section, direction, settled);
                if step.refused || step.flow == Flow::Stop {
                    return self.stop(step.flow);
                }
                buffered = step.buffered;
            }
        }
        let flow = match (direction, &mut self.audit, &plugin.audit, &pipeline.audit) {
            (Direction::Request, Some(flight), Some(section), Some(audit)) => {
                flight.trailers(host, section, audit, buffered)
            }
            _ => Flow::Continue,
        };
        if flow == Flow::Stop {
            return self.stop(flow);
        }
        self.release(direction)
    }

    pub fn response_headers<H: StreamHost>(&mut self, host: &mut H, end_of_stream: bool) -> Flow {
        if self.answered {
            return Flow::Continue;
        }
        let pipeline = Arc::clone(&self.pipeline);
        let plugin = &pipeline.plugin;
        if let (Some(flight), Some(section)) = (&mut self.audit, &plugin.audit) {
            flight.response_headers(host, section);
        }
        if let (Some(policy), Some(section)) = (&plugin.masking, &pipeline.masking) {
            let flow = self
                .masking
                .response_headers(host, policy, section, end_of_stream);
            if flow == Flow::Stop {
                return self.stop(flow);
            }
        }
        Flow::Continue
    }

    /// The exchange is complete: the audit record is sealed and emitted.
    pub fn log<H: StreamHost>(&mut self, host: &mut H) {
        self.masking.log();
        let pipeline = Arc::clone(&self.pipeline);
        if let (Some(flight), Some(section), Some(audit)) =
            (self.audit.take(), &pipeline.plugin.audit, &pipeline.audit)
        {
            let mut decisions = Vec::new();
            if pipeline.plugin.identity.is_some() {
                decisions.push(("identity", self.identity_decision.take()));
            }
            if pipeline.plugin.masking.is_some() {
                decisions.push(("masking", self.masking.decision()));
            }
            flight.finish(host, section, audit, &decisions);
        }
    }

    /// The stream is gone: a request that never reached its log callback
    /// gives its outbox room back and is counted as dropped.
    pub fn finish<H: StreamHost>(&mut self, host: &mut H) {
        if let (Some(flight), Some(audit)) = (self.audit.take(), &self.pipeline.audit) {
            flight.abandon(host, audit);
        }
    }
}
