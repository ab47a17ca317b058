//! The incoming publish flow: delivery, topic aliases from the broker, and QoS 2 exactly once
//! (PUBREC, then PUBREL / PUBCOMP).

use super::*;

impl Connection {
    pub(super) fn on_publish(&mut self, mut p: Publish, now: Instant) {
        if let Some(alias) = p.properties.topic_alias {
            let max = self.config.topic_alias_maximum;
            if self.config.protocol != ProtocolVersion::V5 || alias == 0 || alias > max {
                self.protocol_violation(
                    ReasonCode::TopicAliasInvalid,
                    format!("topic alias {alias} outside 1..={max}"),
                    now,
                );
                return;
            }
            let Some(link) = self.link.as_mut() else {
                return;
            };
            if p.topic.is_empty() {
                match link.in_aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        self.protocol_violation(
                            ReasonCode::ProtocolError,
                            format!("topic alias {alias} used before it was set"),
                            now,
                        );
                        return;
                    }
                }
            } else {
                link.in_aliases.insert(alias, p.topic.clone());
            }
        } else if p.topic.is_empty() {
            self.protocol_violation(
                ReasonCode::ProtocolError,
                "PUBLISH with an empty topic and no alias".into(),
                now,
            );
            return;
        }
        if self.config.manual_acks && p.qos != QoS::AtMostOnce {
            self.hold_for_application(p, now);
            return;
        }
        match p.qos {
            QoS::AtMostOnce => self.events.push_back(Event::Message {
                publish: p,
                ack: None,
            }),
            QoS::AtLeastOnce => {
                let pkid = p.pkid;
                self.events.push_back(Event::Message {
                    publish: p,
                    ack: None,
                });
                self.send_packet(&Packet::PubAck(PubAck::new(pkid)), now);
            }
            QoS::ExactlyOnce => {
                let pkid = p.pkid;
                if !self.incoming_qos2.contains(&pkid) {
                    // Only MQTT 5 tells the broker our Receive Maximum (at least 1 is sent).
                    let recv_max = self.config.receive_maximum.max(1);
                    if self.config.protocol == ProtocolVersion::V5
                        && self.incoming_qos2.len() >= usize::from(recv_max)
                    {
                        self.protocol_violation(
                            ReasonCode::ReceiveMaximumExceeded,
                            format!("more than {recv_max} QoS 2 messages awaiting PUBREL"),
                            now,
                        );
                        return;
                    }
                    self.incoming_qos2.insert(pkid);
                    self.store(|| StoreOp::IncomingQos2Add(pkid));
                    self.events.push_back(Event::Message {
                        publish: p,
                        ack: None,
                    });
                }
                self.send_packet(&Packet::PubRec(PubRec::new(pkid)), now);
            }
        }
    }

    /// A QoS 1 or 2 message with manual acknowledgements: delivered with a token, and not
    /// acknowledged to the broker until the application passes the token back.
    fn hold_for_application(&mut self, p: Publish, now: Instant) {
        let pkid = p.pkid;
        if self.held.holds(pkid) {
            // A resend of a message the application holds (a 3.1.1 broker may resend on the
            // same connection): its acknowledgement answers this copy too.
            return;
        }
        if p.qos == QoS::ExactlyOnce && self.incoming_qos2.contains(&pkid) {
            // Acknowledged by the application already (perhaps before a restart): PUBREC
            // again, never a second delivery; after the PUBRECs of earlier messages.
            self.held.hold_acked(pkid);
            self.release_acks(now);
            return;
        }
        // What the broker has in flight to us: held QoS 1 messages, QoS 2 ones not yet
        // acknowledged, and QoS 2 ones awaiting PUBREL (acknowledged ones among them).
        let recv_max = self.config.receive_maximum.max(1);
        if self.held.awaiting_application() + self.incoming_qos2.len() >= usize::from(recv_max) {
            self.protocol_violation(
                ReasonCode::ReceiveMaximumExceeded,
                format!(
                    "more than {recv_max} QoS 1 and 2 messages awaiting acknowledgement (manual acks)"
                ),
                now,
            );
            return;
        }
        let token = self.held.hold(pkid, p.qos);
        self.events.push_back(Event::Message {
            publish: p,
            ack: Some(token),
        });
    }

    /// The application acknowledges an incoming message it was given with
    /// [`Config::manual_acks`]: its PUBACK (QoS 1) or PUBREC (QoS 2) goes out, after those of
    /// earlier messages of the same QoS (MQTT requires them in arrival order; an earlier
    /// message not acknowledged yet holds this one back). For QoS 2 the packet id is recorded
    /// at once (a [`StoreOp::IncomingQos2Add`] with persistence): from here on the message is
    /// never delivered again, even after a restart.
    ///
    /// A second acknowledgement of the same delivery does nothing. A token of a link that has
    /// closed fails with [`AckError::ConnectionClosed`]: nothing is sent (the broker, if it
    /// kept the session, delivers the message again with a new token).
    pub fn ack(&mut self, token: AckToken, now: Instant) -> Result<(), AckError> {
        if self.link.is_none() {
            // No link: every token is of a closed one (or not ours).
            return match self.held.ack(token) {
                Err(AckError::Unknown) => Err(AckError::Unknown),
                _ => Err(AckError::ConnectionClosed),
            };
        }
        if let Some((QoS::ExactlyOnce, pkid)) = self.held.ack(token)? {
            if self.incoming_qos2.insert(pkid) {
                self.store(|| StoreOp::IncomingQos2Add(pkid));
            }
        }
        self.release_acks(now);
        Ok(())
    }

    /// Sends the acknowledgements whose earlier ones have all gone out.
    fn release_acks(&mut self, now: Instant) {
        while let Some((qos, pkid)) = self.held.release() {
            let packet = match qos {
                QoS::ExactlyOnce => Packet::PubRec(PubRec::new(pkid)),
                _ => Packet::PubAck(PubAck::new(pkid)),
            };
            self.send_packet(&packet, now);
        }
    }

    /// Incoming messages delivered with [`Config::manual_acks`] whose acknowledgement has not
    /// gone out yet (not acknowledged by the application, or waiting for an earlier one).
    pub fn held_for_ack(&self) -> usize {
        self.held.len()
    }

    pub(super) fn on_pubrel(&mut self, r: PubRel, now: Instant) {
        if self.incoming_qos2.remove(&r.pkid) {
            self.store(|| StoreOp::IncomingQos2Remove(r.pkid));
        }
        let mut comp = PubComp::new(r.pkid);
        if !r.reason.is_success() && self.config.protocol == ProtocolVersion::V5 {
            comp.reason = ReasonCode::PacketIdentifierNotFound;
        }
        self.send_packet(&Packet::PubComp(comp), now);
    }
}
