//! The outgoing publish flow: packet ids, the in-flight window, the offline queue, one
//! acknowledgement path for PUBACK / PUBREC / PUBCOMP, topic aliases, the poison-message rule.

use super::*;

/// The acknowledgement that completes an outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FinalAck {
    /// PUBACK, for QoS 1.
    PubAck,
    /// PUBCOMP, for QoS 2.
    PubComp,
}

/// The message blamed for the last closes by the broker (see [`Config::poison_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Suspect {
    token: Token,
    state: OutState,
    closes: u32,
}

impl Connection {
    /// Publishes a message (`pkid` and `dup` are ignored). Returns a token that a later
    /// [`Event::PublishDone`] completes: on PUBACK (QoS 1), PUBCOMP (QoS 2), or once written to
    /// the transmit buffer (QoS 0).
    ///
    /// While disconnected the message is queued, bounded by the queue limits; on overflow the
    /// message is handed back with the error (`QueueFull` under `Reject` and `Backpressure`;
    /// the driver makes a backpressured publish wait for room and try again).
    #[allow(clippy::result_large_err)] // the refused message is handed back by value, on purpose
    pub fn publish(
        &mut self,
        mut publish: Publish,
        now: Instant,
    ) -> Result<Token, (PublishError, Publish)> {
        if matches!(self.state, State::Closed | State::Disconnecting) {
            return Err((PublishError::Closed, publish));
        }
        if let Err(e) = TopicName::new(publish.topic.clone()) {
            return Err((PublishError::Invalid(InvalidMessage::Topic(e)), publish));
        }
        if self.config.protocol == ProtocolVersion::V311 && !publish.properties.is_empty() {
            return Err((
                PublishError::Invalid(InvalidMessage::PropertiesNeedV5),
                publish,
            ));
        }
        if publish.properties.topic_alias.is_some() {
            return Err((
                PublishError::Invalid(InvalidMessage::TopicAliasSet),
                publish,
            ));
        }
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err((
                PublishError::Invalid(InvalidMessage::SubscriptionIdentifierSet),
                publish,
            ));
        }
        publish.pkid = 0;
        publish.dup = false;
        if let Some(err) = self.check_against_broker(&publish) {
            return Err((err, publish));
        }
        let connected = self.is_connected();
        if publish.qos == QoS::AtMostOnce && !connected && !self.config.queue.queue_qos0 {
            return Err((PublishError::NotConnected, publish));
        }
        let q = Queued {
            token: Token(0),
            publish,
            queued_at: now,
        };
        let cost = q.cost();
        if !self.queue.has_room(cost, &self.config.queue) {
            match self.config.queue.overflow {
                Overflow::Backpressure | Overflow::Reject => {
                    return Err((PublishError::QueueFull, q.publish));
                }
                Overflow::DropOldest => {
                    // A message that would not fit even in an empty queue must not evict
                    // anything: it is refused on its own.
                    if !OfflineQueue::default().has_room(cost, &self.config.queue) {
                        return Err((PublishError::QueueFull, q.publish));
                    }
                    while !self.queue.has_room(cost, &self.config.queue) {
                        match self.queue.pop_front() {
                            Some(old) => self.finish_publish(old.token, Err(PublishError::Dropped)),
                            None => return Err((PublishError::QueueFull, q.publish)),
                        }
                    }
                }
            }
        }
        let token = self.token();
        self.store(|| StoreOp::Accepted {
            id: token.0,
            publish: q.publish.clone(),
        });
        self.queue.push_back(Queued { token, ..q });
        self.pump(now);
        Ok(token)
    }

    /// With MQTT 3.1.1 (no Receive Maximum): the broker cut the connection, before
    /// `stable_after`, with more than one message in flight, the way rmqtt refuses a 17th
    /// unreleased QoS 2 message. From the second such cut in a row (one may be the network),
    /// the window becomes half of what was in flight, for the rest of the client's life.
    /// Returns true when it shrank.
    pub(super) fn shrink_inflight_window(&mut self) -> bool {
        if self.config.protocol != ProtocolVersion::V311 {
            return false;
        }
        let sent = u16::try_from(self.inflight.sent_count()).unwrap_or(u16::MAX);
        if sent <= 1 {
            return false;
        }
        self.window_cuts = self.window_cuts.saturating_add(1);
        if self.window_cuts < 2 {
            return false;
        }
        self.inflight_window = (sent.min(self.inflight_window) / 2).max(1);
        true
    }

    /// The oldest in-flight message sent on this link: (sequence, token, stage).
    pub(super) fn oldest_sent(&self) -> Option<(u64, Token, OutState)> {
        let (seq, out) = self.inflight.iter().next()?;
        out.sent.then_some((*seq, out.token, out.state))
    }

    /// The broker closed the connection while `token` was the oldest unacknowledged message:
    /// after [`Config::poison_after`] such closes in a row at the same stage, it is failed.
    pub(super) fn blame(&mut self, seq: u64, token: Token, state: OutState) {
        if self.config.poison_after == 0 {
            return;
        }
        let closes = match self.suspect {
            Some(s) if s.token == token && s.state == state => s.closes.saturating_add(1),
            _ => 1,
        };
        if closes < self.config.poison_after {
            self.suspect = Some(Suspect {
                token,
                state,
                closes,
            });
            return;
        }
        self.suspect = None;
        if let Some(out) = self.inflight.remove(seq) {
            self.pkids.release(out.publish.pkid);
            self.finish_publish(out.token, Err(PublishError::Poison { closes }));
        }
    }

    pub(super) fn check_against_broker(&self, p: &Publish) -> Option<PublishError> {
        let link = self.link.as_ref().filter(|l| l.connected_at.is_some())?;
        if p.qos > link.max_qos {
            return Some(PublishError::QoSNotSupported {
                max: link.max_qos as u8,
            });
        }
        if p.retain && !link.retain_available {
            return Some(PublishError::RetainNotSupported);
        }
        if let Some(max) = link.max_packet_size {
            // Measured before a packet id is assigned: stand one in, or the encoder refuses a
            // QoS 1/2 PUBLISH with id 0 and every such message would look too large.
            let mut probe = p.clone();
            if probe.qos != QoS::AtMostOnce && probe.pkid == 0 {
                probe.pkid = 1;
            }
            let size = Packet::Publish(probe)
                .encoded_len(self.config.protocol)
                .unwrap_or(usize::MAX);
            if size > max as usize {
                return Some(PublishError::PacketTooLarge { size, max });
            }
        }
        None
    }

    /// Sends what may be sent now: pending (un)subscribes, in-flight messages not yet sent on
    /// this connection (DUP=1 / PUBREL), then the queue, all within the broker's Receive Maximum.
    pub(super) fn pump(&mut self, now: Instant) {
        if !self.is_connected() {
            return;
        }
        while let Some(req) = self.requests.pop_front() {
            let Some(req) = self.fit_request(req) else {
                continue;
            };
            let owner = match &req {
                Request::Subscribe { token, .. } => Owner::Subscribe(*token),
                Request::Unsubscribe { token, .. } => Owner::Unsubscribe(*token),
            };
            let Some(pkid) = self.pkids.alloc(owner) else {
                self.requests.push_front(req);
                break;
            };
            let packet = self.request_packet(&req, pkid);
            self.send_packet(&packet, now);
            self.sent_requests.insert(pkid, req);
        }
        if self.requests.is_empty() && self.requests.capacity() > 0 {
            // (Un)subscribes come in bursts (the connect, a resubscribe): give the room back
            // rather than keep it for the life of an idle connection.
            self.requests = VecDeque::new();
        }
        let recv_max = self.link.as_ref().map_or(0, |l| {
            usize::from(l.receive_maximum.min(self.inflight_window))
        });
        // Resend in-flight messages in their original order.
        while self.inflight.sent_count() < recv_max {
            let Some(seq) = self.inflight.first_unsent() else {
                break;
            };
            // This broker may grant less than the one the message was first sent to (Maximum
            // QoS, Retain Available, Maximum Packet Size): a PUBLISH it would refuse fails.
            let refused = match self.inflight.get(seq) {
                Some(out) if out.state != OutState::AwaitPubComp => {
                    self.check_against_broker(&out.publish)
                }
                _ => None,
            };
            if let Some(err) = refused {
                if let Some(out) = self.inflight.remove(seq) {
                    self.pkids.release(out.publish.pkid);
                    self.finish_publish(out.token, Err(err));
                }
                continue;
            }
            let Some(out) = self.inflight.get_mut(seq) else {
                break;
            };
            let packet = match out.state {
                OutState::AwaitPubComp => Packet::PubRel(PubRel::new(out.publish.pkid)),
                _ => {
                    out.publish.dup = true;
                    Packet::Publish(out.publish.clone())
                }
            };
            self.inflight.mark_sent(seq);
            self.send_packet(&packet, now);
        }
        // Then the queue.
        while let Some(front_qos) = self.queue.front().map(|q| q.publish.qos) {
            if front_qos != QoS::AtMostOnce && self.inflight.sent_count() >= recv_max {
                break;
            }
            let Some(mut q) = self.queue.pop_front() else {
                break;
            };
            if q.expired(now) {
                self.finish_publish(q.token, Err(PublishError::Expired));
                continue;
            }
            if let Some(s) = q.publish.properties.message_expiry_interval {
                let waited = now.saturating_duration_since(q.queued_at).as_secs();
                q.publish.properties.message_expiry_interval = Some(
                    s.saturating_sub(u32::try_from(waited).unwrap_or(u32::MAX))
                        .max(1),
                );
            }
            if let Some(err) = self.check_against_broker(&q.publish) {
                self.finish_publish(q.token, Err(err));
                continue;
            }
            if q.publish.qos == QoS::AtMostOnce {
                let wire = self.with_alias(q.publish);
                let ok = self.send_packet(&Packet::Publish(wire), now);
                let result = if ok {
                    Ok(PublishOutcome {
                        reason: ReasonCode::Success,
                    })
                } else {
                    Err(PublishError::Invalid(InvalidMessage::Unencodable))
                };
                self.finish_publish(q.token, result);
                continue;
            }
            let seq_hint = self.inflight.next_seq();
            let Some(pkid) = self.pkids.alloc(Owner::Publish(seq_hint)) else {
                self.queue.push_front(q);
                break;
            };
            q.publish.pkid = pkid;
            let state = if q.publish.qos == QoS::AtLeastOnce {
                OutState::AwaitPubAck
            } else {
                OutState::AwaitPubRec
            };
            let wire = self.with_alias(q.publish.clone());
            if !self.send_packet(&Packet::Publish(wire), now) {
                self.pkids.release(pkid);
                self.finish_publish(
                    q.token,
                    Err(PublishError::Invalid(InvalidMessage::Unencodable)),
                );
                continue;
            }
            let id = q.token.0;
            self.store(|| StoreOp::Outgoing {
                id,
                state: if state == OutState::AwaitPubAck {
                    OutgoingState::AwaitPubAck(pkid)
                } else {
                    OutgoingState::AwaitPubRec(pkid)
                },
            });
            let seq = self.inflight.push(Outgoing {
                token: q.token,
                publish: q.publish,
                state,
                sent: true,
            });
            debug_assert_eq!(seq, seq_hint);
        }
        self.maybe_finish_drain(now);
    }

    pub(super) fn with_alias(&mut self, p: Publish) -> Publish {
        let protocol = self.config.protocol;
        let Some(link) = self.link.as_mut() else {
            return p;
        };
        if link.topic_alias_max == 0 {
            return p;
        }
        // The 3-byte alias property can make a packet longer (it is added to the topic the
        // first time, and outweighs a topic shorter than 3 bytes): never past the broker's
        // Maximum Packet Size, which was checked without it.
        let max = link.max_packet_size;
        let fits = |c: &Publish| match max {
            None => true,
            Some(max) => Packet::Publish(c.clone())
                .encoded_len(protocol)
                .is_ok_and(|n| n <= max as usize),
        };
        if let Some(&alias) = link.out_aliases.get(p.topic.as_str()) {
            let mut c = p.clone();
            c.properties.topic_alias = Some(alias);
            c.topic = ByteStr::new();
            return if fits(&c) { c } else { p };
        }
        if link.next_out_alias < link.topic_alias_max {
            let mut c = p.clone();
            c.properties.topic_alias = Some(link.next_out_alias + 1);
            if fits(&c) {
                link.next_out_alias += 1;
                link.out_aliases
                    .insert(c.topic.clone(), link.next_out_alias);
                return c;
            }
        }
        p
    }

    /// Reports a finished publish, and tells a durable store to forget it.
    pub(super) fn finish_publish(
        &mut self,
        token: Token,
        result: Result<PublishOutcome, PublishError>,
    ) {
        self.store(|| StoreOp::Completed { id: token.0 });
        self.events.push_back(Event::PublishDone { token, result });
    }

    pub(super) fn owner_seq(&self, pkid: u16) -> Option<u64> {
        match self.pkids.owner(pkid) {
            Some(Owner::Publish(seq)) => Some(seq),
            _ => None,
        }
    }

    pub(super) fn complete(
        &mut self,
        seq: u64,
        result: Result<PublishOutcome, PublishError>,
        now: Instant,
    ) {
        if let Some(out) = self.inflight.remove(seq) {
            self.pkids.release(out.publish.pkid);
            self.finish_publish(out.token, result);
        }
        self.pump(now);
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2): the one path that completes an acknowledged
    /// message. A success or failure code completes it; an acknowledgement at the wrong stage is
    /// a protocol error, except a PUBACK for a QoS 2 message (see below).
    pub(super) fn on_final_ack(
        &mut self,
        ack: FinalAck,
        pkid: u16,
        code: ReasonCode,
        now: Instant,
    ) {
        let Some(seq) = self.owner_seq(pkid) else {
            return;
        };
        let Some(state) = self.inflight.get_mut(seq).map(|o| o.state) else {
            return;
        };
        let result = match (ack, state) {
            (FinalAck::PubAck, OutState::AwaitPubAck)
            | (FinalAck::PubComp, OutState::AwaitPubComp) => {
                if code.is_success() {
                    Ok(PublishOutcome { reason: code })
                } else {
                    Err(PublishError::Rejected(code))
                }
            }
            // A broker without QoS 2 that takes the message at QoS 1 (RabbitMQ). Strictly a
            // protocol error, but closing would resend the message on every reconnect and
            // loop for ever: the message is failed back with a reason that says what
            // happened, the packet id is free again, and the connection stays up.
            (FinalAck::PubAck, OutState::AwaitPubRec) if code.is_success() => {
                Err(PublishError::DowngradedToQoS1)
            }
            (FinalAck::PubAck, OutState::AwaitPubRec) => Err(PublishError::Rejected(code)),
            (FinalAck::PubAck, _) => {
                return self.protocol_violation(
                    ReasonCode::ProtocolError,
                    format!("PUBACK after PUBREC for QoS 2 packet id {pkid}"),
                    now,
                )
            }
            (FinalAck::PubComp, _) => {
                return self.protocol_violation(
                    ReasonCode::ProtocolError,
                    format!("PUBCOMP before PUBREC for packet id {pkid}"),
                    now,
                )
            }
        };
        self.complete(seq, result, now);
    }

    pub(super) fn on_pubrec(&mut self, r: PubRec, now: Instant) {
        let Some(seq) = self.owner_seq(r.pkid) else {
            // Unknown id: answer so the broker can finish its side.
            self.send_packet(
                &Packet::PubRel(PubRel {
                    pkid: r.pkid,
                    reason: if self.config.protocol == ProtocolVersion::V5 {
                        ReasonCode::PacketIdentifierNotFound
                    } else {
                        ReasonCode::Success
                    },
                    properties: Props::new(),
                }),
                now,
            );
            return;
        };
        match self.inflight.get_mut(seq) {
            Some(out)
                if out.state == OutState::AwaitPubRec || out.state == OutState::AwaitPubComp =>
            {
                if !r.reason.is_success() {
                    self.complete(seq, Err(PublishError::Rejected(r.reason)), now);
                    return;
                }
                out.state = OutState::AwaitPubComp;
                let id = out.token.0;
                self.store(|| StoreOp::Outgoing {
                    id,
                    state: OutgoingState::AwaitPubComp(r.pkid),
                });
                self.send_packet(&Packet::PubRel(PubRel::new(r.pkid)), now);
            }
            Some(_) => self.protocol_violation(
                ReasonCode::ProtocolError,
                format!("PUBREC for QoS 1 packet id {}", r.pkid),
                now,
            ),
            None => {}
        }
    }
}
