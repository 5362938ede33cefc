//! The drift state of one loaded config, fed by intended versions from the
//! environment and the source of truth. Pure: time is passed in by the host.

use super::load::{quoted, short, Intended, Loaded, OnDrift};

/// Where the intended version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntendedSource {
    /// The VM environment (`MESHGUARD_INTENDED_*`, set when the sidecar was rendered).
    Environment,
    /// A signed answer of the source of truth.
    SourceOfTruth,
    /// A drift found earlier on this proxy (kept in Envoy's shared data).
    Carried,
}

impl IntendedSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "env",
            Self::SourceOfTruth => "source_of_truth",
            Self::Carried => "carried over",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftState {
    /// Nothing trusted says what is intended.
    Unknown,
    InSync,
    Drifted,
}

impl DriftState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::InSync => "in_sync",
            Self::Drifted => "drifted",
        }
    }
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
    /// The version label counts only when the config is signed by a trusted key.
    label_trusted: bool,
    on_drift: OnDrift,
    state: DriftState,
    /// What the environment says of this config (`None`: it names nothing).
    env_verdict: Option<bool>,
    loaded_at_ms: u64,
    last_success_ms: Option<u64>,
    source_reachable: bool,
    /// The last reason an answer was not believed (logged when it changes).
    last_refusal: Option<String>,
}

impl DriftMonitor {
    /// Starts monitoring `loaded`. The environment's intended version judges
    /// it at once. `carried_drift` is a drift an earlier config or VM on this
    /// proxy found: a push or a reload does not clear it; only the source of
    /// truth does (or, with no source, the environment naming this config).
    pub fn new(loaded: &Loaded, now_ms: u64, carried_drift: bool) -> (Self, Option<Transition>) {
        let env_verdict = loaded.intended_from_env.as_ref().map(|i| i.matches(loaded));
        let has_source = loaded.settings.source_of_truth.is_some();
        let mut monitor = Self {
            fingerprint: loaded.fingerprint.clone(),
            version: loaded.config_version.clone(),
            label_trusted: loaded.label_trusted(),
            on_drift: loaded.settings.on_drift,
            state: DriftState::Unknown,
            env_verdict,
            loaded_at_ms: now_ms,
            last_success_ms: None,
            source_reachable: true,
            last_refusal: None,
        };
        let env_intended = loaded.intended_from_env.as_ref();
        let transition = match (env_verdict, env_intended) {
            (Some(false), Some(intended)) => {
                monitor.judge(false, intended, IntendedSource::Environment)
            }
            _ if carried_drift && (has_source || env_verdict.is_none()) => {
                let carried = Intended {
                    config_version: None,
                    fingerprint: None,
                };
                monitor.judge(false, &carried, IntendedSource::Carried)
            }
            (Some(true), Some(intended)) => {
                monitor.judge(true, intended, IntendedSource::Environment)
            }
            _ => None,
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

    /// Records a believed answer of the source of truth; returns the
    /// transition if the state changed. The source can never declare in sync
    /// a config the environment says has drifted.
    pub fn observe(&mut self, intended: &Intended, now_ms: u64) -> Option<Transition> {
        self.last_success_ms = Some(now_ms);
        self.source_reachable = true;
        self.last_refusal = None;
        let in_sync = intended.matches_active(
            &self.fingerprint,
            self.version.as_deref(),
            self.label_trusted,
        ) && self.env_verdict != Some(false);
        self.judge(in_sync, intended, IntendedSource::SourceOfTruth)
    }

    fn judge(
        &mut self,
        in_sync: bool,
        intended: &Intended,
        source: IntendedSource,
    ) -> Option<Transition> {
        let to = if in_sync {
            DriftState::InSync
        } else {
            DriftState::Drifted
        };
        let from = std::mem::replace(&mut self.state, to);
        if from == to {
            return None;
        }
        let active = format!(
            "active version={} fingerprint={} signed={}",
            self.version
                .as_deref()
                .map_or_else(|| "unset".into(), quoted),
            short(&self.fingerprint),
            self.label_trusted
        );
        let message = match to {
            DriftState::Drifted if source == IntendedSource::Carried => format!(
                "config drift carried over (an earlier check on this proxy found drift): {active}; on_drift={}{}; only the source of truth clears it",
                self.on_drift.as_str(),
                if self.quarantined() {
                    ", workload quarantined"
                } else {
                    ""
                }
            ),
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

    /// Records an answer that was not believed (unsigned, forged, expired,
    /// mis-bound). It never produces in-sync: an in-sync state becomes
    /// unknown, a drift stays. Returns the line to log (when the reason or
    /// the state changes, never once per poll).
    pub fn observe_untrusted(&mut self, reason: &str) -> Option<(DriftState, String)> {
        let first = self.last_refusal.as_deref() != Some(reason);
        if first {
            self.last_refusal = Some(reason.to_owned());
        }
        self.source_reachable = true;
        let changed = self.state == DriftState::InSync;
        if changed {
            self.state = DriftState::Unknown;
        }
        (first || changed).then(|| {
            (
                self.state,
                format!(
                    "source of truth answer not believed, drift state {}: {reason}",
                    self.state.as_str()
                ),
            )
        })
    }

    /// Records a failed check. The drift state is kept (no traffic impact);
    /// returns a line to log when the source just became unreachable.
    pub fn observe_failure(&mut self, reason: &str) -> Option<String> {
        let was_reachable = std::mem::replace(&mut self.source_reachable, false);
        was_reachable.then(|| {
            format!(
                "source of truth unreachable, keeping drift state {}: {reason}",
                self.state.as_str()
            )
        })
    }

    pub fn source_reachable(&self) -> bool {
        self.source_reachable
    }

    /// Seconds since the last believed check (since load when there was none).
    pub fn check_age_seconds(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_success_ms.unwrap_or(self.loaded_at_ms)) / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::{load, IntegrityEnv};

    fn loaded(on_drift: &str, env: &IntegrityEnv) -> Loaded {
        if env.asks_for_integrity() {
            // Only the environment (or a signature) may set on_drift then.
            let on_drift = match on_drift {
                "quarantine" => OnDrift::Quarantine,
                "reject" => OnDrift::Reject,
                _ => OnDrift::Report,
            };
            let env = IntegrityEnv {
                on_drift: Some(on_drift),
                ..env.clone()
            };
            return load(br#"{"config_version": "v1"}"#, &env).unwrap();
        }
        let config =
            format!(r#"{{"config_version": "v1", "integrity": {{"on_drift": "{on_drift}"}}}}"#);
        load(config.as_bytes(), env).unwrap()
    }

    fn fingerprint(f: &str) -> Intended {
        Intended {
            config_version: None,
            fingerprint: Some(f.into()),
        }
    }

    fn other() -> Intended {
        fingerprint(&"0".repeat(64))
    }

    #[test]
    fn drift_is_detected_and_cleared_with_one_log_line_per_transition() {
        let l = loaded("quarantine", &IntegrityEnv::default());
        let (mut m, t) = DriftMonitor::new(&l, 0, false);
        assert_eq!(
            (t, m.state(), m.quarantined()),
            (None, DriftState::Unknown, false)
        );
        let t = m.observe(&other(), 1_000).unwrap();
        assert_eq!((t.from, t.to), (DriftState::Unknown, DriftState::Drifted));
        assert!(
            t.message
                .contains("config drift detected (source_of_truth): active version=\"v1\""),
            "{}",
            t.message
        );
        assert!(t.message.contains("workload quarantined"), "{}", t.message);
        assert!(m.quarantined());
        assert_eq!(m.observe(&other(), 2_000), None, "no repeat logs");
        let t = m.observe(&fingerprint(&l.fingerprint), 3_000).unwrap();
        assert_eq!(t.to, DriftState::InSync);
        assert!(t.message.contains("quarantine lifted"), "{}", t.message);
        assert!(!m.quarantined());
    }

    #[test]
    fn a_version_label_counts_only_when_signed() {
        let env = IntegrityEnv {
            intended_version: Some("v1".into()),
            ..IntegrityEnv::default()
        };
        let (m, t) = DriftMonitor::new(&loaded("report", &env), 0, false);
        assert_eq!(
            m.state(),
            DriftState::Drifted,
            "an unsigned label is a claim"
        );
        assert!(t.unwrap().message.contains("(env)"));
        let (mut m, _) = DriftMonitor::new(&loaded("report", &IntegrityEnv::default()), 0, false);
        let label = Intended {
            config_version: Some("v1".into()),
            fingerprint: None,
        };
        m.observe(&label, 1_000);
        assert_eq!(m.state(), DriftState::Drifted);
    }

    #[test]
    fn the_source_cannot_clear_what_the_environment_says_has_drifted() {
        let env = IntegrityEnv {
            intended_fingerprint: Some("1".repeat(64)),
            ..IntegrityEnv::default()
        };
        let l = loaded("quarantine", &env);
        let (mut m, _) = DriftMonitor::new(&l, 0, false);
        assert!(m.quarantined());
        assert_eq!(m.observe(&fingerprint(&l.fingerprint), 1_000), None);
        assert!(m.quarantined(), "the environment wins over the source");
    }

    #[test]
    fn a_carried_drift_survives_a_reload_until_the_source_clears_it() {
        let env = IntegrityEnv::default();
        let l = loaded("quarantine", &env);
        let (mut m, t) = DriftMonitor::new(&l, 0, true);
        assert!(m.quarantined());
        assert!(t.unwrap().message.contains("carried over"));
        // Refused answers never clear it.
        assert!(m.observe_untrusted("unsigned").is_some());
        assert!(m.observe_untrusted("unsigned").is_none(), "no repeat logs");
        assert!(m.quarantined());
        m.observe(&fingerprint(&l.fingerprint), 1_000);
        assert!(!m.quarantined());
        // An answer not believed turns in-sync into unknown, never the reverse.
        let (state, line) = m.observe_untrusted("bad_signature").unwrap();
        assert_eq!(state, DriftState::Unknown);
        assert!(line.contains("not believed"), "{line}");
    }

    #[test]
    fn an_environment_naming_the_config_clears_a_carried_drift_only_without_a_source() {
        let l = load(br#"{"config_version": "v1"}"#, &IntegrityEnv::default()).unwrap();
        let env = IntegrityEnv {
            intended_fingerprint: Some(l.fingerprint.clone()),
            on_drift: Some(OnDrift::Quarantine),
            ..IntegrityEnv::default()
        };
        let l = load(br#"{"config_version": "v1"}"#, &env).unwrap();
        assert_eq!(DriftMonitor::new(&l, 0, true).0.state(), DriftState::InSync);
        let with_source = IntegrityEnv {
            source_of_truth: Some(r#"{"cluster": "c", "path": "/p"}"#.into()),
            ..env
        };
        let l = load(br#"{"config_version": "v1"}"#, &with_source).unwrap();
        assert!(DriftMonitor::new(&l, 0, true).0.quarantined());
    }

    #[test]
    fn an_unreachable_source_keeps_the_state_and_ages_the_last_check() {
        let (mut m, _) =
            DriftMonitor::new(&loaded("quarantine", &IntegrityEnv::default()), 0, false);
        m.observe(&other(), 10_000);
        assert!(m.observe_failure("timeout").is_some());
        assert!(m.observe_failure("timeout").is_none(), "logged once");
        assert!(
            m.quarantined(),
            "an outage of the source does not lift quarantine"
        );
        assert_eq!(m.check_age_seconds(45_000), 35);
        m.observe(&other(), 50_000);
        assert!(m.source_reachable());
        assert_eq!(m.check_age_seconds(50_500), 0);
    }
}
