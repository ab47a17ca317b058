//! The reconnect decision: attempts, backoff and its jitter, the slow-down floor, redirects and
//! the server list, dormancy and the fatal stop.
//!
//! [`Reconnect`] owns every field of that decision and takes no packets: given a failure and
//! its class it says what comes next ([`Next`]): connect now (a redirect), back off for a
//! delay, go dormant, or fail. The connection applies the verdict (state, timer, events).

use super::*;

/// What comes after a failed attempt or a lost connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Connect again at once (a redirect was followed).
    Connect,
    /// Wait this long, then connect.
    Backoff(Duration),
    /// Stop trying until woken (`max_attempts` reached or automatic reconnect off).
    Dormant,
    /// Stop for good: the reason is fatal.
    Fail,
}

/// A failure, as the reconnect decision sees it.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    /// What the reason means (after the application's hook).
    pub(super) class: ReasonClass,
    /// The broker's Server Reference, for a redirect.
    pub(super) server_reference: Option<ByteStr>,
    /// Counts against `max_attempts`: a failed connect, or a connection lost before
    /// `stable_after`.
    pub(super) failed_attempt: bool,
    /// Move on to the next configured server.
    pub(super) next_server: bool,
}

/// The decision, and a Server Reference that could not be followed because it does not parse
/// (redacted, for the `BadServerReference` event).
#[derive(Debug)]
pub(super) struct Verdict {
    pub(super) next: Next,
    pub(super) bad_reference: Option<(String, crate::ServerAddrError)>,
}

/// The reconnect policy's state: attempts, backoff, jitter, slow-down floor, redirects and the
/// server list.
pub(super) struct Reconnect {
    backoff: Box<dyn BackoffPolicy>,
    rng: Xoshiro256,
    /// Attempts since the connection last proved stable (or since a wake).
    attempt: u32,
    /// Failures since the backoff was last reset: the policy's `attempt` argument.
    backoff_step: u32,
    /// The slow-down floor raised by 0x89 / 0x97 / 0x9F and takeovers.
    slow_floor: Option<Duration>,
    /// Redirects followed in a row.
    redirects: u32,
    /// Servers a temporary redirect named, tried in order before the configured ones.
    redirect_targets: VecDeque<ServerAddr>,
    /// The configured servers; a permanent redirect replaces the one that moved.
    servers: Vec<ServerAddr>,
    server_idx: usize,
    max_redirects: u32,
    max_attempts: Option<u32>,
    auto_reconnect: bool,
}

impl core::fmt::Debug for Reconnect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reconnect")
            .field("attempt", &self.attempt)
            .field("backoff_step", &self.backoff_step)
            .field("slow_floor", &self.slow_floor)
            .field("redirects", &self.redirects)
            .finish_non_exhaustive()
    }
}

impl Reconnect {
    pub(super) fn new(config: &Config, backoff: Box<dyn BackoffPolicy>) -> Self {
        Reconnect {
            backoff,
            rng: Xoshiro256::seed_from_u64(config.rng_seed),
            attempt: 0,
            backoff_step: 0,
            slow_floor: None,
            redirects: 0,
            redirect_targets: VecDeque::new(),
            servers: config.servers.clone(),
            server_idx: 0,
            max_redirects: config.max_redirects,
            max_attempts: config.max_attempts,
            auto_reconnect: config.auto_reconnect,
        }
    }

    /// Attempts since the connection last proved stable.
    pub(super) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The server the next attempt goes to: a redirect target first, else the configured one.
    pub(super) fn current_server(&self) -> ServerAddr {
        if let Some(t) = self.redirect_targets.front() {
            return t.clone();
        }
        self.servers
            .get(self.server_idx % self.servers.len().max(1))
            .cloned()
            .unwrap_or_else(ServerAddr::local_default)
    }

    /// An attempt starts: its number and server.
    pub(super) fn begin(&mut self) -> (u32, ServerAddr) {
        self.attempt = self.attempt.saturating_add(1);
        (self.attempt, self.current_server())
    }

    /// A CONNACK accepted the attempt: redirects are done with.
    pub(super) fn connected(&mut self) {
        self.redirects = 0;
        self.redirect_targets.clear();
    }

    /// The connection proved stable (`stable_after`), or the application woke the client: the
    /// next failure starts a new count of attempts, and backoff starts from its minimum.
    pub(super) fn reset(&mut self) {
        self.backoff.reset();
        self.backoff_step = 0;
        self.slow_floor = None;
        self.attempt = 0;
    }

    /// Decides what follows a failure.
    pub(super) fn decide(&mut self, failure: Failure) -> Verdict {
        let mut verdict = Verdict {
            next: Next::Fail,
            bad_reference: None,
        };
        let Failure {
            class,
            server_reference,
            failed_attempt,
            next_server,
        } = failure;
        if class == ReasonClass::Fatal {
            self.redirect_targets.clear();
            self.redirects = 0;
            return verdict;
        }
        if let ReasonClass::Redirect { permanent } = class {
            match self.follow_redirect(permanent, server_reference) {
                Ok(true) => {
                    verdict.next = if self.max_attempts_reached(failed_attempt) {
                        Next::Dormant
                    } else {
                        Next::Connect
                    };
                    return verdict;
                }
                Ok(false) => {}
                Err(bad) => verdict.bad_reference = Some(bad),
            }
            // Not followed: back to the configured servers.
            self.redirect_targets.clear();
        }
        // A redirect target that failed makes way for the next one the reference named.
        let on_redirect_target = self.redirect_targets.pop_front().is_some();
        if self.redirect_targets.is_empty() {
            self.redirects = 0;
        }
        if !self.auto_reconnect || self.max_attempts_reached(failed_attempt) {
            self.redirect_targets.clear();
            verdict.next = Next::Dormant;
            return verdict;
        }
        if next_server && !on_redirect_target && self.servers.len() > 1 {
            self.server_idx = (self.server_idx + 1) % self.servers.len();
        }
        self.backoff_step = self.backoff_step.saturating_add(1);
        let max = self.backoff.max_delay();
        let mut delay = self.backoff.next_delay(self.backoff_step, &mut self.rng);
        if matches!(class, ReasonClass::SlowDown | ReasonClass::Takeover) {
            let floor = match self.slow_floor {
                Some(f) => (f * 2).min(max),
                None => max / 4,
            };
            self.slow_floor = Some(floor);
        }
        if let Some(floor) = self.slow_floor {
            delay = delay.max(floor);
        }
        verdict.next = Next::Backoff(delay);
        verdict
    }

    fn max_attempts_reached(&self, failed_attempt: bool) -> bool {
        failed_attempt && self.max_attempts.is_some_and(|m| self.attempt >= m)
    }

    /// Follows a redirect's Server Reference (at most `max_redirects` in a row). `Ok(false)`
    /// when it is not followed (none was sent, or too many redirects in a row), `Err` with the
    /// redacted reference when it does not parse; the refusal is then transient against the
    /// configured servers.
    fn follow_redirect(
        &mut self,
        permanent: bool,
        server_reference: Option<ByteStr>,
    ) -> Result<bool, (String, crate::ServerAddrError)> {
        let Some(reference) = server_reference.filter(|s| !s.trim().is_empty()) else {
            return Ok(false);
        };
        if self.redirects >= self.max_redirects {
            return Ok(false);
        }
        let from = self.current_server();
        let targets = ServerAddr::parse_reference(&reference, &from)
            .map_err(|error| (crate::server::redact_reference(&reference), error))?;
        self.redirects += 1;
        if permanent && self.redirect_targets.is_empty() {
            // The configured server moved: its place in the list goes to the servers the
            // reference named, in order (the list stays bounded).
            let n = self.servers.len();
            let idx = self.server_idx % n.max(1);
            let room = MAX_SERVERS.saturating_sub(n.saturating_sub(1)).max(1);
            let new: Vec<ServerAddr> = targets.into_iter().take(room).collect();
            if n == 0 {
                self.servers = new;
            } else {
                self.servers.splice(idx..=idx, new);
            }
            self.server_idx = idx;
        } else {
            // 0x9C, or a server reached by a temporary redirect moved: try the named servers,
            // then go back to the configured ones.
            self.redirect_targets = targets.into();
        }
        Ok(true)
    }
}

impl Connection {
    /// Skips the current backoff delay, or wakes a dormant or failed client: the attempt count
    /// and backoff reset and an attempt starts at once. Does nothing while connecting or connected.
    pub fn reconnect_now(&mut self, now: Instant) {
        match self.state {
            State::Backoff => {
                self.timers.stop(Timer::Reconnect);
                self.begin_attempt(now);
            }
            State::Dormant | State::Failed => {
                self.reconnect.reset();
                self.begin_attempt(now);
            }
            State::Idle => self.start(now),
            _ => {}
        }
    }

    /// Same as [`Connection::reconnect_now`]: wakes a dormant client.
    pub fn wake(&mut self, now: Instant) {
        self.reconnect_now(now);
    }

    pub(super) fn begin_attempt(&mut self, now: Instant) {
        let (attempt, server) = self.reconnect.begin();
        self.set_state(State::Connecting);
        self.timers.stop(Timer::Reconnect);
        self.timers
            .set(Timer::Connect, now + self.config.connect_timeout);
        self.emit(
            now,
            Lifecycle::Connecting {
                attempt,
                server: server.clone(),
            },
        );
        self.actions.push_back(Action::Connect { server });
    }

    pub(super) fn attempt_failed(&mut self, reason: Reason, now: Instant) {
        if !matches!(reason, Reason::ClosedBeforeConnack { .. }) {
            self.closed_before_connack = 0;
        }
        let server_reference = self.link.as_ref().and_then(|l| l.server_reference.clone());
        self.close_link();
        self.emit(
            now,
            Lifecycle::ConnectFailed {
                attempt: self.reconnect.attempt(),
                reason: reason.clone(),
            },
        );
        if self.state == State::Disconnecting || self.disconnect.is_some() {
            self.finish_disconnect(now);
            return;
        }
        self.after_failure(reason, server_reference, true, true, now);
    }

    pub(super) fn connection_lost(&mut self, reason: Reason, now: Instant) {
        let server_reference = self.link.as_ref().and_then(|l| l.server_reference.clone());
        let uptime = self
            .link
            .as_ref()
            .and_then(|l| l.connected_at)
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        // Lost before `stable_after`: a failed attempt (flapping counts), unless we closed it.
        let flapping =
            self.timers.get(Timer::StableAfter).is_some() && reason.initiator() != Initiator::Local;
        let by_broker = reason.initiator() == Initiator::Remote;
        // Repeated 3.1.1 cuts with several in flight are blamed on the window; otherwise the oldest
        // unacknowledged message is the suspect.
        let window_cut = by_broker && flapping && self.shrink_inflight_window();
        let oldest = (by_broker && !window_cut)
            .then(|| self.oldest_sent())
            .flatten();
        self.reauthentication_failed(&reason);
        self.close_link();
        self.emit(
            now,
            Lifecycle::ConnectionLost {
                reason: reason.clone(),
                uptime,
            },
        );
        if self.state == State::Disconnecting {
            self.finish_disconnect(now);
            return;
        }
        if let Some((seq, token, state)) = oldest {
            self.blame(seq, token, state);
        }
        self.after_failure(reason, server_reference, flapping, false, now);
    }

    pub(super) fn classify_reason(&mut self, reason: &Reason) -> ReasonClass {
        let class = match reason {
            Reason::Transport(TransportError::TlsFatal(_)) | Reason::Authentication(_) => {
                ReasonClass::Fatal
            }
            Reason::Refused { code, .. } | Reason::ServerDisconnect { code, .. } => classify(*code),
            // A server that never accepted this client's MQTT 5 CONNECT and closes it every
            // time most likely does not speak MQTT 5: stop rather than loop. A broker that is
            // restarting was connected before, so it is retried (the policy hook can decide
            // otherwise, e.g. for a load balancer whose backends are all down).
            Reason::ClosedBeforeConnack {
                protocol: ProtocolVersion::V5,
                consecutive,
            } if *consecutive >= CLOSED_BEFORE_CONNACK_FATAL && !self.connected_once => {
                ReasonClass::Fatal
            }
            _ => ReasonClass::Transient,
        };
        match self.hook.as_mut() {
            Some(hook) => hook(reason, class),
            None => class,
        }
    }

    /// Classifies the failure and applies the reconnect decision: state, timer, events.
    /// `failed_attempt`: counts against `max_attempts` (a failed connect, or a connection lost
    /// before `stable_after`); `next_server`: move on to the next configured server.
    pub(super) fn after_failure(
        &mut self,
        reason: Reason,
        server_reference: Option<ByteStr>,
        failed_attempt: bool,
        next_server: bool,
        now: Instant,
    ) {
        let mut class = self.classify_reason(&reason);
        let credential_refusal = matches!(
            reason.reason_code(),
            Some(ReasonCode::BadUserNameOrPassword | ReasonCode::NotAuthorized)
        );
        if class == ReasonClass::Fatal
            && credential_refusal
            && self.credentials.is_some()
            && !self.credentials_retried
        {
            // Retry once with freshly provided credentials before giving up.
            self.credentials_retried = true;
            class = ReasonClass::Transient;
        }
        let verdict = self.reconnect.decide(Failure {
            class,
            server_reference,
            failed_attempt,
            next_server,
        });
        if let Some((reference, error)) = verdict.bad_reference {
            self.emit(now, Lifecycle::BadServerReference { reference, error });
        }
        match verdict.next {
            Next::Fail => {
                self.set_state(State::Failed);
                self.emit(now, Lifecycle::Fatal { reason });
            }
            Next::Connect => self.begin_attempt(now),
            Next::Dormant => self.go_dormant(now),
            Next::Backoff(delay) => {
                self.set_state(State::Backoff);
                self.timers.set(Timer::Reconnect, now + delay);
                self.emit(
                    now,
                    Lifecycle::Reconnecting {
                        attempt: self.reconnect.attempt().saturating_add(1),
                        delay,
                    },
                );
            }
        }
    }

    pub(super) fn go_dormant(&mut self, now: Instant) {
        self.set_state(State::Dormant);
        self.emit(
            now,
            Lifecycle::Dormant {
                attempts: self.reconnect.attempt(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    //! The decision alone: no packets, no transport, no clock.
    use super::*;
    use crate::backoff::Constant;

    fn server(url: &str) -> ServerAddr {
        ServerAddr::parse_url(url).expect("valid test URL")
    }

    fn reconnect(max_attempts: Option<u32>, servers: &[&str]) -> Reconnect {
        let config = Config {
            servers: servers.iter().map(|s| server(s)).collect(),
            max_attempts,
            ..Config::default()
        };
        Reconnect::new(&config, Box::new(crate::backoff::default_policy()))
    }

    fn failure(class: ReasonClass) -> Failure {
        Failure {
            class,
            server_reference: None,
            failed_attempt: true,
            next_server: true,
        }
    }

    #[test]
    fn transient_failures_back_off_within_the_policy_bounds_until_max_attempts() {
        let mut r = reconnect(Some(3), &["mqtt://a:1883"]);
        for attempt in 1..=2 {
            assert_eq!(r.begin().0, attempt);
            match r.decide(failure(ReasonClass::Transient)).next {
                Next::Backoff(d) => {
                    assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(60))
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
        }
        r.begin();
        assert_eq!(
            r.decide(failure(ReasonClass::Transient)).next,
            Next::Dormant
        );
        // A wake starts a new count.
        r.reset();
        assert_eq!(r.begin().0, 1);
    }

    #[test]
    fn a_fatal_class_fails_and_a_loss_after_stability_does_not_count_as_an_attempt() {
        let mut r = reconnect(Some(1), &["mqtt://a:1883"]);
        r.begin();
        let lost = Failure {
            failed_attempt: false,
            ..failure(ReasonClass::Transient)
        };
        assert!(matches!(r.decide(lost).next, Next::Backoff(_)));
        assert_eq!(r.decide(failure(ReasonClass::Fatal)).next, Next::Fail);
    }

    #[test]
    fn slow_down_raises_a_floor_of_a_quarter_of_max_that_doubles() {
        let config = Config::default();
        let policy = Constant::new(Duration::from_secs(1));
        let max = policy.max_delay();
        let mut r = Reconnect::new(&config, Box::new(policy));
        r.begin();
        let first = r.decide(failure(ReasonClass::SlowDown)).next;
        assert_eq!(first, Next::Backoff(Duration::from_secs(1).max(max / 4)));
        let second = r.decide(failure(ReasonClass::SlowDown)).next;
        assert_eq!(second, Next::Backoff(Duration::from_secs(1).max(max / 2)));
        // The floor holds for a transient failure after it, until the connection is stable.
        assert_eq!(
            r.decide(failure(ReasonClass::Transient)).next,
            Next::Backoff(Duration::from_secs(1).max(max / 2))
        );
        r.reset();
        assert_eq!(
            r.decide(failure(ReasonClass::Transient)).next,
            Next::Backoff(Duration::from_secs(1))
        );
    }

    #[test]
    fn failures_move_through_the_server_list() {
        let mut r = reconnect(None, &["mqtt://a:1883", "mqtt://b:1883"]);
        assert_eq!(r.begin().1.host(), "a");
        r.decide(failure(ReasonClass::Transient));
        assert_eq!(r.begin().1.host(), "b");
        r.decide(failure(ReasonClass::Transient));
        assert_eq!(r.begin().1.host(), "a");
    }

    #[test]
    fn redirects_connect_at_once_and_a_permanent_one_replaces_the_server() {
        let mut r = reconnect(None, &["mqtt://a:1883", "mqtt://b:1883"]);
        r.begin();
        let moved = Failure {
            server_reference: Some(ByteStr::from("c:1884")),
            ..failure(ReasonClass::Redirect { permanent: true })
        };
        assert_eq!(r.decide(moved).next, Next::Connect);
        let (_, now) = r.begin();
        assert_eq!((now.host(), now.port()), ("c", 1884));
        r.connected();
        // A temporary redirect is tried once, then the configured list resumes.
        let temporary = Failure {
            server_reference: Some(ByteStr::from("d:1885")),
            ..failure(ReasonClass::Redirect { permanent: false })
        };
        assert_eq!(r.decide(temporary).next, Next::Connect);
        assert_eq!(r.begin().1.host(), "d");
        assert!(matches!(
            r.decide(failure(ReasonClass::Transient)).next,
            Next::Backoff(_)
        ));
        assert_eq!(r.current_server().host(), "c");
    }

    #[test]
    fn a_reference_that_does_not_parse_is_reported_and_the_refusal_backs_off() {
        let mut r = reconnect(None, &["mqtt://a:1883"]);
        r.begin();
        let bad = Failure {
            server_reference: Some(ByteStr::from("mqtt://user:hunter2@[::1")),
            ..failure(ReasonClass::Redirect { permanent: false })
        };
        let verdict = r.decide(bad);
        assert!(matches!(verdict.next, Next::Backoff(_)));
        let (reference, _) = verdict.bad_reference.expect("reported");
        assert!(!reference.contains("hunter2"), "{reference}");
        assert_eq!(r.current_server().host(), "a");
    }

    #[test]
    fn too_many_redirects_in_a_row_are_not_followed() {
        let config = Config {
            max_redirects: 2,
            ..Config::default()
        };
        let mut r = Reconnect::new(&config, Box::new(crate::backoff::default_policy()));
        let hop = |n: u16| Failure {
            server_reference: Some(ByteStr::from(format!("h{n}:1883"))),
            ..failure(ReasonClass::Redirect { permanent: false })
        };
        r.begin();
        assert_eq!(r.decide(hop(1)).next, Next::Connect);
        r.begin();
        assert_eq!(r.decide(hop(2)).next, Next::Connect);
        r.begin();
        assert!(matches!(r.decide(hop(3)).next, Next::Backoff(_)));
    }
}
