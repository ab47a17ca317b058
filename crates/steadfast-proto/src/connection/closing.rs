//! Closing: the graceful disconnect and its drain, closing a link, protocol violations, and the
//! final state.

use super::*;

impl Connection {
    /// Stops reconnecting and closes gracefully: in-flight and queued messages get up to
    /// `drain_timeout` to finish, then DISCONNECT is sent and [`Lifecycle::Disconnected`] emitted.
    pub fn disconnect(&mut self, options: DisconnectOptions, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Disconnecting => {
                self.disconnect = Some(options);
            }
            State::Connected => {
                self.disconnect = Some(options);
                self.set_state(State::Disconnecting);
                self.timers.stop(Timer::Reconnect);
                self.timers
                    .set(Timer::Drain, now + self.config.drain_timeout);
                self.pump(now);
                self.maybe_finish_drain(now);
            }
            _ => {
                self.disconnect = Some(options);
                // Also while the transport is still being opened: the driver must drop it.
                if self.link.is_some() || self.state == State::Connecting {
                    self.link = None;
                    self.actions.push_back(Action::Close);
                }
                self.finish_disconnect(now);
            }
        }
    }

    pub(super) fn close_link(&mut self) -> Option<Link> {
        self.timers.stop(Timer::PingResp);
        self.timers.stop(Timer::Connect);
        self.timers.stop(Timer::StableAfter);
        self.rx.clear();
        // Deliveries not acknowledged yet: a broker that kept the session sends them again.
        self.held.new_link();
        let link = self.link.take();
        self.actions.push_back(Action::Close);
        // Requests sent on this link get no answer now: send them again on the next one.
        let mut sent: Vec<(u16, Request)> = self.sent_requests.drain().collect();
        sent.sort_by_key(|(_, r)| std::cmp::Reverse(r.token()));
        for (pkid, req) in sent {
            self.pkids.release(pkid);
            self.requests.push_front(req);
        }
        self.pkids
            .release_where(|o| matches!(o, Owner::Resubscribe));
        // A restore left unanswered is made again after the next connect without a session.
        self.resubscribing = None;
        self.inflight.mark_all_unsent();
        link
    }

    pub(super) fn protocol_violation(&mut self, code: ReasonCode, detail: String, now: Instant) {
        if self.config.protocol == ProtocolVersion::V5 && self.link.is_some() {
            let d = Disconnect {
                reason: code,
                properties: Props::new(),
            };
            self.send_packet(&Packet::Disconnect(d), now);
        }
        let reason = Reason::ProtocolViolation { code, detail };
        if self.link.as_ref().is_some_and(|l| l.connected_at.is_some()) {
            self.connection_lost(reason, now);
        } else {
            self.attempt_failed(reason, now);
        }
    }

    pub(super) fn maybe_finish_drain(&mut self, now: Instant) {
        if self.state == State::Disconnecting && self.inflight.is_empty() && self.queue.is_empty() {
            self.finish_disconnect(now);
        }
    }

    pub(super) fn finish_disconnect(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        let opts = self.disconnect.take().unwrap_or_default();
        if self.is_connected() {
            let mut properties = Properties::default();
            let reason = if self.config.protocol == ProtocolVersion::V5 {
                properties.session_expiry_interval = opts.session_expiry_interval;
                opts.reason
            } else {
                ReasonCode::Success
            };
            self.send_packet(
                &Packet::Disconnect(Disconnect {
                    reason,
                    properties: properties.into(),
                }),
                now,
            );
        }
        self.reauthentication_failed(&Reason::Local);
        if self.link.take().is_some() {
            self.actions.push_back(Action::Close);
        }
        self.timers.stop_all();
        self.set_state(State::Closed);
        for out in self.inflight.drain() {
            self.events.push_back(Event::PublishDone {
                token: out.token,
                result: Err(PublishError::Closed),
            });
        }
        while let Some(q) = self.queue.pop_front() {
            self.events.push_back(Event::PublishDone {
                token: q.token,
                result: Err(PublishError::Closed),
            });
        }
        let mut reqs: Vec<Request> = self.requests.drain(..).collect();
        reqs.extend(self.sent_requests.drain().map(|(_, r)| r));
        for r in reqs {
            match r {
                Request::Subscribe { token, .. } => {
                    self.request_done(true, token, Err(CommandError::Closed))
                }
                Request::Unsubscribe { token, .. } => {
                    self.request_done(false, token, Err(CommandError::Closed))
                }
            }
        }
        self.pkids = PkidPool::default();
        self.emit(now, Lifecycle::Disconnected);
    }
}
