//! The reconnect decision: attempts, backoff and its jitter, the slow-down floor, redirects and
//! the server list, dormancy and the fatal stop.

use super::*;

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
                self.attempt = 0;
                self.reset_backoff();
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

    pub(super) fn current_server(&self) -> ServerAddr {
        if let Some(t) = self.redirect_targets.front() {
            return t.clone();
        }
        self.config
            .servers
            .get(self.server_idx % self.config.servers.len().max(1))
            .cloned()
            .unwrap_or_else(ServerAddr::local_default)
    }

    /// Follows a redirect's Server Reference (at most `max_redirects` in a row). Returns false
    /// when it is not followed: none was sent, too many redirects in a row, or it does not
    /// parse (reported); the refusal is then transient against the configured servers.
    pub(super) fn follow_redirect(
        &mut self,
        permanent: bool,
        server_reference: Option<ByteStr>,
        now: Instant,
    ) -> bool {
        let Some(reference) = server_reference.filter(|s| !s.trim().is_empty()) else {
            return false;
        };
        if self.redirects >= self.config.max_redirects {
            return false;
        }
        let from = self.current_server();
        let targets = match ServerAddr::parse_reference(&reference, &from) {
            Ok(t) => t,
            Err(error) => {
                self.emit(
                    now,
                    Lifecycle::BadServerReference {
                        reference: crate::server::redact_reference(&reference),
                        error,
                    },
                );
                return false;
            }
        };
        self.redirects += 1;
        if permanent && self.redirect_targets.is_empty() {
            // The configured server moved: its place in the list goes to the servers the
            // reference named, in order (the list stays bounded).
            let n = self.config.servers.len();
            let idx = self.server_idx % n.max(1);
            let room = MAX_SERVERS.saturating_sub(n.saturating_sub(1)).max(1);
            let new: Vec<ServerAddr> = targets.into_iter().take(room).collect();
            if n == 0 {
                self.config.servers = new;
            } else {
                self.config.servers.splice(idx..=idx, new);
            }
            self.server_idx = idx;
        } else {
            // 0x9C, or a server reached by a temporary redirect moved: try the named servers,
            // then go back to the configured ones.
            self.redirect_targets = targets.into();
        }
        true
    }

    pub(super) fn reset_backoff(&mut self) {
        self.backoff.reset();
        self.backoff_step = 0;
        self.slow_floor = None;
    }

    pub(super) fn begin_attempt(&mut self, now: Instant) {
        self.attempt = self.attempt.saturating_add(1);
        self.set_state(State::Connecting);
        self.timers.stop(Timer::Reconnect);
        self.timers
            .set(Timer::Connect, now + self.config.connect_timeout);
        let server = self.current_server();
        self.emit(
            now,
            Lifecycle::Connecting {
                attempt: self.attempt,
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
                attempt: self.attempt,
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
        if class == ReasonClass::Fatal {
            self.redirect_targets.clear();
            self.redirects = 0;
            self.set_state(State::Failed);
            self.emit(now, Lifecycle::Fatal { reason });
            return;
        }
        if let ReasonClass::Redirect { permanent } = class {
            if self.follow_redirect(permanent, server_reference, now) {
                if self.max_attempts_reached(failed_attempt) {
                    self.go_dormant(now);
                } else {
                    self.begin_attempt(now);
                }
                return;
            }
            // Not followed: back to the configured servers.
            self.redirect_targets.clear();
        }
        // A redirect target that failed makes way for the next one the reference named.
        let on_redirect_target = self.redirect_targets.pop_front().is_some();
        if self.redirect_targets.is_empty() {
            self.redirects = 0;
        }
        if !self.config.auto_reconnect || self.max_attempts_reached(failed_attempt) {
            self.redirect_targets.clear();
            self.go_dormant(now);
            return;
        }
        if next_server && !on_redirect_target && self.config.servers.len() > 1 {
            self.server_idx = (self.server_idx + 1) % self.config.servers.len();
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
        self.set_state(State::Backoff);
        self.timers.set(Timer::Reconnect, now + delay);
        self.emit(
            now,
            Lifecycle::Reconnecting {
                attempt: self.attempt.saturating_add(1),
                delay,
            },
        );
    }

    pub(super) fn max_attempts_reached(&self, failed_attempt: bool) -> bool {
        failed_attempt && self.config.max_attempts.is_some_and(|m| self.attempt >= m)
    }

    pub(super) fn go_dormant(&mut self, now: Instant) {
        self.set_state(State::Dormant);
        self.emit(
            now,
            Lifecycle::Dormant {
                attempts: self.attempt,
            },
        );
    }
}
