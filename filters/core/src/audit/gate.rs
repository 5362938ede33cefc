//! The audit filter's request state machine, over the host's callbacks:
//! headers, body chunks, trailers. The adapter calls the method of each
//! callback and translates the [`Step`] into a host action.
//!
//! - A command that does not read the body is hashed at the headers.
//! - Otherwise the headers are held (they will carry the hash), each body
//!   chunk is hashed as it arrives (only the bytes not yet hashed are read),
//!   and the hash is finished at the end of the stream: the last body chunk,
//!   or the trailers when trailers follow the body (then the body never ends
//!   with `end_of_stream`).
//! - Nothing held is released before the hash is finished ([`Step::Hold`]
//!   until then); what to do with a failed hash is the adapter's
//!   (`fail_closed`: refuse, else forward unaudited).

use super::hash::{CommandHasher, HashError};

/// What the adapter does after a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep holding the request (the hash needs more of the body).
    Hold,
    /// Let the request through: it was stamped already, or there is nothing to do.
    Pass,
    /// The hash is complete: add the audit headers, then let the request through.
    Stamp([u8; 32]),
    /// The hash cannot be computed.
    Failed(HashError),
}

/// Where the request is.
#[derive(Debug, Clone)]
enum State {
    /// Hashing the body; `hashed` bytes of Envoy's buffer were read.
    Body {
        hasher: Box<CommandHasher>,
        hashed: usize,
    },
    /// Finished (stamped or failed).
    Done,
}

/// One request's audit progress.
#[derive(Debug, Clone)]
pub struct RequestGate {
    state: State,
    /// The SHA-256 of the raw body, once hashed (commands that read the body).
    body_sha256: Option<[u8; 32]>,
}

impl RequestGate {
    /// At the request headers: `needs_body` when the command reads the body.
    pub fn start(hasher: CommandHasher, needs_body: bool, end_of_stream: bool) -> (Self, Step) {
        if needs_body && !end_of_stream {
            let state = State::Body {
                hasher: Box::new(hasher),
                hashed: 0,
            };
            let gate = Self {
                state,
                body_sha256: None,
            };
            return (gate, Step::Hold);
        }
        let mut gate = Self {
            state: State::Done,
            body_sha256: None,
        };
        let step = gate.finish(hasher);
        (gate, step)
    }

    /// The SHA-256 of the raw body, after [`Step::Stamp`], for commands that
    /// read the body (when the hasher was asked to keep it).
    pub fn body_sha256(&self) -> Option<[u8; 32]> {
        self.body_sha256
    }

    /// Whether the hash is still waiting for the body.
    pub fn is_holding(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// A body callback: Envoy's buffer holds `buffered` bytes (everything since
    /// the headers, while they are held); `read(start, len)` reads a slice of it.
    pub fn body(
        &mut self,
        buffered: usize,
        end_of_stream: bool,
        read: impl FnOnce(usize, usize) -> Vec<u8>,
    ) -> Step {
        let State::Body { hasher, hashed } = &mut self.state else {
            return Step::Pass;
        };
        if let Some(len) = buffered.checked_sub(*hashed).filter(|&len| len > 0) {
            let chunk = read(*hashed, len);
            *hashed = buffered;
            if let Err(e) = hasher.update_body(&chunk) {
                self.state = State::Done;
                return Step::Failed(e);
            }
        }
        if end_of_stream {
            self.end()
        } else {
            Step::Hold
        }
    }

    /// The request trailers: the body is complete.
    pub fn trailers(&mut self) -> Step {
        self.end()
    }

    fn end(&mut self) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Body { hasher, .. } => self.finish(*hasher),
            State::Done => Step::Pass,
        }
    }

    fn finish(&mut self, hasher: CommandHasher) -> Step {
        match hasher.finish_with_body_digest() {
            Ok((hash, body)) => {
                self.body_sha256 = body;
                Step::Stamp(hash)
            }
            Err(e) => Step::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditPolicy;
    use crate::request::RequestInfo;

    const CONFIG: &str = r#"{"max_body_bytes": 16, "commands": [
        {"name": "json", "paths": ["/json"], "parts": ["method", {"json_pointer": "/a"}]},
        {"name": "raw", "paths": ["/raw"], "parts": ["body"]}]}"#;

    /// Runs one callback sequence; `events` are body chunks (`Some`) and the
    /// trailers (`None`); the last body chunk has end_of_stream unless
    /// trailers follow. Returns each step.
    fn run(path: &str, events: &[Option<&str>]) -> Vec<Step> {
        let policy = AuditPolicy::from_json(CONFIG.as_bytes()).unwrap();
        let request = RequestInfo {
            path,
            method: "POST",
            host: "h",
        };
        let command = policy.command_for(&request);
        let (mut gate, first) = RequestGate::start(
            policy.hasher(command, &request),
            policy.needs_body(command),
            events.is_empty(),
        );
        let mut steps = vec![first];
        let mut buffer = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let step = match event {
                Some(chunk) => {
                    buffer.extend_from_slice(chunk.as_bytes());
                    let last = i + 1 == events.len();
                    let b = buffer.clone();
                    gate.body(buffer.len(), last, |start, len| {
                        b[start..start + len].to_vec()
                    })
                }
                None => gate.trailers(),
            };
            steps.push(step);
        }
        steps
    }

    fn hash_of(path: &str, body: &str) -> Step {
        let policy = AuditPolicy::from_json(CONFIG.as_bytes()).unwrap();
        Step::Stamp(
            policy
                .hash_request("POST", path, "h", body.as_bytes())
                .unwrap(),
        )
    }

    #[test]
    fn a_body_ending_in_trailers_is_hashed_when_the_trailers_arrive() {
        for path in ["/json", "/raw"] {
            let steps = run(path, &[Some("{\"a\":"), Some("1}"), None]);
            assert_eq!(
                steps,
                vec![
                    Step::Hold,
                    Step::Hold,
                    Step::Hold,
                    hash_of(path, "{\"a\":1}")
                ],
                "{path}"
            );
            // The same body without trailers hashes the same.
            let steps = run(path, &[Some("{\"a\":"), Some("1}")]);
            assert_eq!(steps.last(), Some(&hash_of(path, "{\"a\":1}")));
        }
    }

    #[test]
    fn trailers_right_after_the_headers_hash_an_empty_body() {
        let steps = run("/raw", &[None]);
        assert_eq!(steps, vec![Step::Hold, hash_of("/raw", "")]);
        let steps = run("/json", &[None]);
        assert!(matches!(
            steps.last(),
            Some(Step::Failed(HashError::NotJson(_)))
        ));
    }

    #[test]
    fn commands_without_a_body_part_are_stamped_at_the_headers_and_pass_later() {
        let steps = run("/other", &[Some("x"), None]);
        assert!(matches!(steps[0], Step::Stamp(_)));
        assert_eq!(&steps[1..], &[Step::Pass, Step::Pass]);
    }

    #[test]
    fn a_body_over_the_limit_fails_once_and_nothing_is_held_after() {
        let steps = run(
            "/json",
            &[Some("{\"a\": \"0123"), Some("456789abcdef\"}"), None],
        );
        assert_eq!(steps[1], Step::Hold);
        assert_eq!(steps[2], Step::Failed(HashError::TooLarge { limit: 16 }));
        assert_eq!(steps[3], Step::Pass);
    }

    #[test]
    fn bytes_already_hashed_are_not_read_again() {
        let policy = AuditPolicy::from_json(CONFIG.as_bytes()).unwrap();
        let request = RequestInfo {
            path: "/raw",
            method: "POST",
            host: "h",
        };
        let c = policy.command_for(&request);
        let (mut gate, _) = RequestGate::start(policy.hasher(c, &request), true, false);
        assert_eq!(
            gate.body(3, false, |s, l| {
                assert_eq!((s, l), (0, 3));
                b"abc".to_vec()
            }),
            Step::Hold
        );
        // A callback with nothing new reads nothing.
        assert_eq!(gate.body(3, false, |_, _| panic!("read again")), Step::Hold);
        let step = gate.body(5, true, |s, l| {
            assert_eq!((s, l), (3, 2));
            b"de".to_vec()
        });
        assert_eq!(step, hash_of("/raw", "abcde"));
        assert!(!gate.is_holding());
    }
}
