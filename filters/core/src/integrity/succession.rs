//! What a config instance does with a request once a newer signed serial was
//! accepted on the same proxy.
//!
//! Envoy keeps an older config instance alive while a replaced listener drains
//! its connections, and serves a byte-identical replay of that config from it
//! without asking the filter. So a superseded instance refuses new traffic
//! (anti-rollback), but the keep-alive connections it served while it was
//! current may finish draining under it for a bounded grace: each of their
//! requests is judged by the old or the new policy, never by neither, and a
//! config push fails no request. A replay never gets the grace: its
//! connections are newer than any the instance served while current.

/// The newest signed serial accepted on this proxy, as shared data keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewestSerial {
    pub serial: u64,
    pub fingerprint: String,
    /// Host time (ms) when it was accepted; absent in a value an older
    /// module wrote (no grace then).
    pub accepted_ms: Option<u64>,
}

impl NewestSerial {
    /// `serial fingerprint [accepted_ms]`.
    pub fn encode(&self) -> String {
        match self.accepted_ms {
            Some(at) => format!("{} {} {at}", self.serial, self.fingerprint),
            None => format!("{} {}", self.serial, self.fingerprint),
        }
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        let serial = parts.next()?.parse().ok()?;
        let fingerprint = parts.next()?.to_owned();
        let accepted_ms = match parts.next() {
            Some(at) => Some(at.parse().ok()?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            serial,
            fingerprint,
            accepted_ms,
        })
    }
}

/// The verdict on one request for a config instance signed with a serial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Succession {
    /// No newer serial was accepted: this instance is the current config.
    Current,
    /// A newer serial was accepted, but the request comes over a connection
    /// this instance served while current, within the grace: it is judged by
    /// this (the previous) config.
    Draining,
    /// Refused: a newer serial was accepted and the request is not a drain.
    Superseded,
}

/// What this instance knows about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Envoy's downstream connection id (ids only grow, proxy-wide), when the
    /// host said.
    pub connection: Option<u64>,
    /// The highest connection id this instance served while it was current.
    pub served_up_to: Option<u64>,
    pub now_ms: u64,
}

/// Judges a request for an instance signed with `own` serial.
pub fn succession(
    own: u64,
    newest: Option<&NewestSerial>,
    request: Request,
    grace_ms: u64,
) -> Succession {
    let Some(newest) = newest.filter(|n| n.serial > own) else {
        return Succession::Current;
    };
    let within_grace = newest
        .accepted_ms
        .is_some_and(|at| request.now_ms < at.saturating_add(grace_ms));
    let served_connection = match (request.connection, request.served_up_to) {
        (Some(connection), Some(up_to)) => connection <= up_to,
        _ => false,
    };
    if within_grace && served_connection {
        Succession::Draining
    } else {
        Succession::Superseded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "ab";

    fn newest(serial: u64, accepted_ms: Option<u64>) -> NewestSerial {
        NewestSerial {
            serial,
            fingerprint: FP.into(),
            accepted_ms,
        }
    }

    #[test]
    fn the_shared_value_round_trips_and_reads_what_older_modules_wrote() {
        let with_time = newest(7, Some(1_000));
        assert_eq!(with_time.encode(), "7 ab 1000");
        assert_eq!(NewestSerial::decode(b"7 ab 1000"), Some(with_time));
        assert_eq!(NewestSerial::decode(b"7 ab"), Some(newest(7, None)));
        for bad in [&b""[..], b"7", b"x ab", b"7 ab x", b"7 ab 1 2", b"\xff ab"] {
            assert_eq!(NewestSerial::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn each_request_is_judged_current_draining_or_superseded() {
        let grace = 45_000;
        let at = |connection, served_up_to, now_ms| Request {
            connection,
            served_up_to,
            now_ms,
        };
        let cases = [
            // (what, newest, request, verdict)
            (
                "no newer serial",
                None,
                at(Some(9), None, 0),
                Succession::Current,
            ),
            (
                "the same serial",
                Some(newest(5, Some(0))),
                at(Some(9), None, 0),
                Succession::Current,
            ),
            (
                "an older serial",
                Some(newest(4, Some(0))),
                at(Some(9), None, 0),
                Succession::Current,
            ),
            (
                "a connection served while current, within the grace",
                Some(newest(6, Some(1_000))),
                at(Some(9), Some(9), 1_000 + grace - 1),
                Succession::Draining,
            ),
            (
                "an older connection served while current",
                Some(newest(6, Some(1_000))),
                at(Some(3), Some(9), 2_000),
                Succession::Draining,
            ),
            (
                "the grace is over",
                Some(newest(6, Some(1_000))),
                at(Some(9), Some(9), 1_000 + grace),
                Succession::Superseded,
            ),
            (
                "a connection newer than any served while current (a replay's)",
                Some(newest(6, Some(1_000))),
                at(Some(10), Some(9), 2_000),
                Succession::Superseded,
            ),
            (
                "no connection served while current",
                Some(newest(6, Some(1_000))),
                at(Some(1), None, 2_000),
                Succession::Superseded,
            ),
            (
                "the host did not say which connection",
                Some(newest(6, Some(1_000))),
                at(None, Some(9), 2_000),
                Succession::Superseded,
            ),
            (
                "no acceptance time (written by an older module)",
                Some(newest(6, None)),
                at(Some(9), Some(9), 2_000),
                Succession::Superseded,
            ),
        ];
        for (what, newest, request, want) in cases {
            assert_eq!(
                succession(5, newest.as_ref(), request, grace),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn no_grace_refuses_every_request_once_superseded() {
        let request = Request {
            connection: Some(1),
            served_up_to: Some(9),
            now_ms: 1_000,
        };
        assert_eq!(
            succession(5, Some(&newest(6, Some(1_000))), request, 0),
            Succession::Superseded
        );
    }

    #[test]
    fn an_acceptance_time_near_the_end_of_time_does_not_overflow() {
        let request = Request {
            connection: Some(1),
            served_up_to: Some(9),
            now_ms: u64::MAX - 1,
        };
        assert_eq!(
            succession(5, Some(&newest(6, Some(u64::MAX - 2))), request, u64::MAX),
            Succession::Draining
        );
    }
}
