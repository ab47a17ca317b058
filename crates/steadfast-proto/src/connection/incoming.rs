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
        match p.qos {
            QoS::AtMostOnce => self.events.push_back(Event::Message(p)),
            QoS::AtLeastOnce => {
                let pkid = p.pkid;
                self.events.push_back(Event::Message(p));
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
                    self.events.push_back(Event::Message(p));
                }
                self.send_packet(&Packet::PubRec(PubRec::new(pkid)), now);
            }
        }
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
