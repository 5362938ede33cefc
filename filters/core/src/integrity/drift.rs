//! The drift state of one loaded config, fed by intended versions from the
//! environment and the source of truth. Pure: time is passed in by the host.

use super::load::{short, Intended, Loaded, OnDrift};

/// Where the intended version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntendedSource {
    /// `vmConfig.env` (set when the WasmPlugin was rendered).
    Environment,
    /// The live source of truth polled by the filter.
    SourceOfTruth,
}

impl IntendedSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "env",
            Self::SourceOfTruth => "source_of_truth",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftState {
    /// Nothing says what is intended.
    Unknown,
    InSync,
    Drifted,
}

/// A change of drift state, with the line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: DriftState,
    pub to: DriftState,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct DriftMonitor {
    fingerprint: String,
    version: Option<String>,
    on_drift: OnDrift,
    state: DriftState,
    loaded_at_ms: u64,
    last_success_ms: Option<u64>,
    source_reachable: bool,
}

impl DriftMonitor {
    /// Starts monitoring `loaded`, judging it at once against the intended
    /// version from the environment, if any.
    pub fn new(loaded: &Loaded, now_ms: u64) -> (Self, Option<Transition>) {
        let mut monitor = Self {
            fingerprint: loaded.fingerprint.clone(),
            version: loaded.config_version.clone(),
            on_drift: loaded.settings.on_drift,
            state: DriftState::Unknown,
            loaded_at_ms: now_ms,
            last_success_ms: None,
            source_reachable: true,
        };
        let transition = match &loaded.intended_from_env {
            Some(intended) => monitor.observe(intended, IntendedSource::Environment, now_ms),
            None => None,
        };
        (monitor, transition)
    }

    pub fn state(&self) -> DriftState {
        self.state
    }

    /// Traffic other than health paths is refused while this holds.
    pub fn quarantined(&self) -> bool {
        self.on_drift == OnDrift::Quarantine && self.state == DriftState::Drifted
    }

    /// Records an intended version; returns the transition if the state changed.
    pub fn observe(
        &mut self,
        intended: &Intended,
        source: IntendedSource,
        now_ms: u64,
    ) -> Option<Transition> {
        self.last_success_ms = Some(now_ms);
        self.source_reachable = true;
        let to = if intended.matches_active(&self.fingerprint, self.version.as_deref()) {
            DriftState::InSync
        } else {
            DriftState::Drifted
        };
        let from = std::mem::replace(&mut self.state, to);
        if from == to {
            return None;
        }
        let active = format!(
            "active version={} fingerprint={}",
            self.version.as_deref().unwrap_or("unset"),
            short(&self.fingerprint)
        );
        let message = match to {
            DriftState::Drifted => format!(
                "config drift detected ({}): {active}, intended {}; on_drift={}{}",
                source.as_str(),
                intended.describe(),
                self.on_drift.as_str(),
                if self.quarantined() {
                    ", workload quarantined"
                } else {
                    ""
                }
            ),
            DriftState::InSync if from == DriftState::Drifted => format!(
                "config drift cleared ({}): {active} is the intended config{}",
                source.as_str(),
                if self.on_drift == OnDrift::Quarantine {
                    ", quarantine lifted"
                } else {
                    ""
                }
            ),
            DriftState::InSync | DriftState::Unknown => {
                format!("config verified ({}): {active}", source.as_str())
            }
        };
        Some(Transition { from, to, message })
    }

    /// Records a failed check. The drift state is kept (no traffic impact);
    /// returns a line to log when the source just became unreachable.
    pub fn observe_failure(&mut self, reason: &str) -> Option<String> {
        let was_reachable = std::mem::replace(&mut self.source_reachable, false);
        was_reachable.then(|| {
            format!(
                "source of truth unreachable, keeping drift state {:?}: {reason}",
                self.state
            )
        })
    }

    pub fn source_reachable(&self) -> bool {
        self.source_reachable
    }

    /// Seconds since the last successful check (since load when there was none).
    pub fn check_age_seconds(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_success_ms.unwrap_or(self.loaded_at_ms)) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::{load, IntegrityEnv};

    fn loaded(on_drift: &str, env: &IntegrityEnv) -> Loaded {
        let config =
            format!(r#"{{"config_version": "v1", "integrity": {{"on_drift": "{on_drift}"}}}}"#);
        load(config.as_bytes(), env).unwrap()
    }

    fn version(v: &str) -> Intended {
        Intended {
            config_version: Some(v.into()),
            fingerprint: None,
        }
    }

    #[test]
    fn drift_is_detected_and_cleared_with_one_log_line_per_transition() {
        let (mut m, t) = DriftMonitor::new(&loaded("quarantine", &IntegrityEnv::default()), 0);
        assert_eq!(
            (t, m.state(), m.quarantined()),
            (None, DriftState::Unknown, false)
        );

        let t = m
            .observe(&version("v2"), IntendedSource::SourceOfTruth, 1_000)
            .unwrap();
        assert_eq!((t.from, t.to), (DriftState::Unknown, DriftState::Drifted));
        assert!(
            t.message
                .contains("config drift detected (source_of_truth): active version=v1"),
            "{}",
            t.message
        );
        assert!(t.message.contains("workload quarantined"), "{}", t.message);
        assert!(m.quarantined());
        assert_eq!(
            m.observe(&version("v2"), IntendedSource::SourceOfTruth, 2_000),
            None,
            "no repeat logs"
        );

        let t = m
            .observe(&version("v1"), IntendedSource::SourceOfTruth, 3_000)
            .unwrap();
        assert_eq!(t.to, DriftState::InSync);
        assert!(t.message.contains("quarantine lifted"), "{}", t.message);
        assert!(!m.quarantined());
    }

    #[test]
    fn the_environment_is_checked_at_load() {
        let env = IntegrityEnv {
            intended_version: Some("v0".into()),
            ..IntegrityEnv::default()
        };
        let (m, t) = DriftMonitor::new(&loaded("report", &env), 5_000);
        assert_eq!(m.state(), DriftState::Drifted);
        assert!(!m.quarantined(), "report never quarantines");
        assert!(t.unwrap().message.contains("(env)"));
    }

    #[test]
    fn an_unreachable_source_keeps_the_state_and_ages_the_last_check() {
        let (mut m, _) = DriftMonitor::new(&loaded("quarantine", &IntegrityEnv::default()), 0);
        m.observe(&version("v2"), IntendedSource::SourceOfTruth, 10_000);
        assert!(m.observe_failure("timeout").is_some());
        assert!(m.observe_failure("timeout").is_none(), "logged once");
        assert!(
            m.quarantined(),
            "an outage of the source does not lift quarantine"
        );
        assert_eq!(m.check_age_seconds(45_000), 35);
        m.observe(&version("v1"), IntendedSource::SourceOfTruth, 50_000);
        assert!(m.source_reachable());
        assert_eq!(m.check_age_seconds(50_500), 0);
    }
}
