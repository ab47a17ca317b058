//! Manual acknowledgements (`Config::manual_acks`): the PUBACK / PUBREC of an incoming message
//! goes out only when the application passes its token back, in arrival order; a token of a
//! closed link acknowledges nothing.

mod support;

use steadfast_proto::session::persist::{SessionSnapshot, StoreOp};
use steadfast_proto::{
    AckError, AckToken, Event, Lifecycle, Packet, PubAck, PubComp, PubRec, Publish, QoS, Reason,
    ReasonCode,
};
use support::*;

const V5: steadfast_proto::ProtocolVersion = steadfast_proto::ProtocolVersion::V5;
const V311: steadfast_proto::ProtocolVersion = steadfast_proto::ProtocolVersion::V311;

fn manual(v: steadfast_proto::ProtocolVersion) -> Harness {
    let mut c = config(v);
    c.manual_acks = true;
    Harness::with_backoff(c, no_jitter())
}

fn incoming(pkid: u16, qos: QoS, payload: &str, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        pkid,
        ..message("in/t", qos, payload)
    })
}

/// The messages among `events`, with their tokens.
fn deliveries(events: Vec<Event>) -> Vec<(String, Option<AckToken>)> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { publish, ack } => {
                Some((String::from_utf8_lossy(&publish.payload).into_owned(), ack))
            }
            _ => None,
        })
        .collect()
}

fn one(h: &mut Harness) -> AckToken {
    match deliveries(h.events()).as_slice() {
        [(_, Some(t))] => *t,
        other => panic!("expected one delivery with a token, got {other:?}"),
    }
}

#[test]
fn qos1_is_acknowledged_only_when_the_application_acks() {
    for v in VERSIONS {
        let mut h = manual(v);
        h.connected();
        h.reply(incoming(3, QoS::AtLeastOnce, "a", false));
        let t = one(&mut h);
        assert_eq!(
            h.sent(),
            vec![],
            "{v}: no PUBACK before the application's ack"
        );
        assert_eq!(h.conn.held_for_ack(), 1);
        h.conn.ack(t, h.now).unwrap();
        assert_eq!(h.sent(), vec![Packet::PubAck(PubAck::new(3))]);
        assert_eq!(h.conn.held_for_ack(), 0);
        // A second ack of the same delivery sends nothing.
        h.conn.ack(t, h.now).unwrap();
        assert_eq!(h.sent(), vec![]);
    }
}

#[test]
fn qos0_and_automatic_acks_carry_no_token() {
    let mut h = manual(V5);
    h.connected();
    h.reply(incoming(0, QoS::AtMostOnce, "zero", false));
    assert_eq!(deliveries(h.events()), vec![("zero".into(), None)]);

    let mut auto = Harness::v(V5);
    auto.connected();
    auto.reply(incoming(4, QoS::AtLeastOnce, "one", false));
    assert_eq!(deliveries(auto.events()), vec![("one".into(), None)]);
    assert_eq!(auto.sent(), vec![Packet::PubAck(PubAck::new(4))]);
}

#[test]
fn acknowledgements_leave_in_arrival_order() {
    for v in VERSIONS {
        let mut h = manual(v);
        h.connected();
        h.reply(incoming(1, QoS::AtLeastOnce, "a", false));
        h.reply(incoming(2, QoS::AtLeastOnce, "b", false));
        h.reply(incoming(3, QoS::ExactlyOnce, "c", false));
        let d = deliveries(h.events());
        let tokens: Vec<AckToken> = d.iter().filter_map(|(_, t)| *t).collect();
        assert_eq!(tokens.len(), 3);
        // b before a: held back, since PUBACKs go in the order of the PUBLISHes.
        h.conn.ack(tokens[1], h.now).unwrap();
        assert_eq!(h.sent(), vec![], "{v}");
        // The QoS 2 message has its own order: not held back by the QoS 1 one.
        h.conn.ack(tokens[2], h.now).unwrap();
        assert_eq!(h.sent(), vec![Packet::PubRec(PubRec::new(3))]);
        h.conn.ack(tokens[0], h.now).unwrap();
        assert_eq!(
            h.sent(),
            vec![
                Packet::PubAck(PubAck::new(1)),
                Packet::PubAck(PubAck::new(2))
            ]
        );
    }
}

#[test]
fn qos2_ack_records_the_packet_id_before_the_pubrec() {
    for v in VERSIONS {
        let mut c = config(v);
        c.manual_acks = true;
        c.persistence = true;
        let mut h = Harness::with_backoff(c, no_jitter());
        h.connected();
        h.reply(incoming(9, QoS::ExactlyOnce, "q2", false));
        let events = h.events();
        assert!(
            !events.iter().any(|e| matches!(e, Event::Store(_))),
            "{v}: nothing is recorded before the application acks: {events:?}"
        );
        let t = one_of(events);
        assert_eq!(h.sent(), vec![]);
        assert_eq!(h.conn.incoming_qos2_pending(), 0);
        h.conn.ack(t, h.now).unwrap();
        assert_eq!(
            h.events(),
            vec![Event::Store(StoreOp::IncomingQos2Add(9))],
            "{v}"
        );
        assert_eq!(h.sent(), vec![Packet::PubRec(PubRec::new(9))]);
        // A resend before PUBREL is not delivered again.
        h.reply(incoming(9, QoS::ExactlyOnce, "q2", true));
        assert_eq!(deliveries(h.events()), vec![]);
        assert_eq!(h.sent(), vec![Packet::PubRec(PubRec::new(9))]);
        h.pubrel(9);
        assert_eq!(h.sent(), vec![Packet::PubComp(PubComp::new(9))]);
        assert_eq!(h.conn.incoming_qos2_pending(), 0);
    }
}

fn one_of(events: Vec<Event>) -> AckToken {
    match deliveries(events).as_slice() {
        [(_, Some(t))] => *t,
        other => panic!("expected one delivery with a token, got {other:?}"),
    }
}

/// The broker redelivers an unacknowledged QoS 1 message after a reconnect with the session:
/// the new delivery has its own token, and the late ack of the first one sends nothing.
#[test]
fn a_late_ack_from_a_closed_link_acknowledges_nothing() {
    for v in VERSIONS {
        let mut h = manual(v);
        h.connected();
        h.reply(incoming(7, QoS::AtLeastOnce, "first", false));
        let old = one(&mut h);
        h.drop_and_reconnect(true);
        h.events();
        h.sent();
        assert_eq!(h.conn.held_for_ack(), 0, "{v}: forgotten with the link");
        h.reply(incoming(7, QoS::AtLeastOnce, "first", true));
        let new = one(&mut h);
        assert_ne!(old, new);
        assert_eq!(h.conn.ack(old, h.now), Err(AckError::ConnectionClosed));
        assert_eq!(h.sent(), vec![], "{v}: the stale ack sent nothing");
        h.conn.ack(new, h.now).unwrap();
        assert_eq!(h.sent(), vec![Packet::PubAck(PubAck::new(7))]);
    }
}

/// After a session loss the broker may give the packet id of an unacknowledged message to a
/// different one: a late ack of the first must not acknowledge the second.
#[test]
fn a_late_ack_never_acknowledges_a_message_that_reused_its_packet_id() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let mut h = manual(V5);
        h.connected();
        h.reply(incoming(5, qos, "old", false));
        let old = one(&mut h);
        h.drop_and_reconnect(false);
        h.events();
        h.sent();
        h.reply(incoming(5, qos, "new", false));
        let d = deliveries(h.events());
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "new");
        assert_eq!(h.conn.ack(old, h.now), Err(AckError::ConnectionClosed));
        assert_eq!(h.sent(), vec![]);
        assert_eq!(h.conn.held_for_ack(), 1, "{qos:?}: the new one still waits");
    }
}

#[test]
fn an_ack_while_disconnected_is_refused() {
    let mut h = manual(V5);
    h.connected();
    h.reply(incoming(2, QoS::ExactlyOnce, "x", false));
    let t = one(&mut h);
    h.io_error();
    assert_eq!(h.conn.ack(t, h.now), Err(AckError::ConnectionClosed));
    assert_eq!(
        h.conn.incoming_qos2_pending(),
        0,
        "not recorded as processed"
    );
}

/// QoS 2 across reconnects: an unacknowledged message is delivered again, an acknowledged one
/// whose PUBREL had not come is not (only its PUBREC is repeated, after the earlier ones).
#[test]
fn qos2_redelivery_after_reconnect_respects_the_application_acks() {
    for v in VERSIONS {
        let mut h = manual(v);
        h.connected();
        h.reply(incoming(1, QoS::ExactlyOnce, "unacked", false));
        h.reply(incoming(2, QoS::ExactlyOnce, "acked", false));
        let tokens: Vec<AckToken> = deliveries(h.events())
            .into_iter()
            .filter_map(|(_, t)| t)
            .collect();
        h.conn.ack(tokens[1], h.now).unwrap();
        assert_eq!(h.sent(), vec![], "{v}: PUBREC 2 waits for 1");
        h.drop_and_reconnect(true);
        h.events();
        h.sent();
        h.reply(incoming(1, QoS::ExactlyOnce, "unacked", true));
        h.reply(incoming(2, QoS::ExactlyOnce, "acked", true));
        let d = deliveries(h.events());
        assert_eq!(d.len(), 1, "{v}: {d:?}");
        assert_eq!(d[0].0, "unacked");
        assert_eq!(h.sent(), vec![], "{v}: PUBREC 2 still waits for 1");
        h.conn.ack(d[0].1.unwrap(), h.now).unwrap();
        assert_eq!(
            h.sent(),
            vec![
                Packet::PubRec(PubRec::new(1)),
                Packet::PubRec(PubRec::new(2))
            ]
        );
    }
}

/// After a restart, the store's incoming QoS 2 ids are the messages the application
/// acknowledged: their redelivery is not handed over again, the others are.
#[test]
fn qos2_after_a_restart_delivers_again_only_what_was_not_acknowledged() {
    for v in VERSIONS {
        let mut c = config(v);
        c.manual_acks = true;
        c.persistence = true;
        let mut h = Harness::with_backoff(c, no_jitter());
        h.conn.restore(
            SessionSnapshot {
                client_id: Some("test-client".into()),
                incoming_qos2: vec![11],
                ..Default::default()
            },
            h.now,
        );
        h.start();
        let connect = h.connect(true);
        assert!(
            !connect.clean_start || v == V311,
            "{v}: resumes the session"
        );
        h.events();
        h.sent();
        h.reply(incoming(11, QoS::ExactlyOnce, "processed", true));
        h.reply(incoming(12, QoS::ExactlyOnce, "not processed", true));
        let d = deliveries(h.events());
        assert_eq!(d.len(), 1, "{v}: {d:?}");
        assert_eq!(d[0].0, "not processed");
        assert_eq!(h.sent(), vec![Packet::PubRec(PubRec::new(11))]);
    }
}

#[test]
fn a_resend_of_a_held_message_is_not_delivered_twice() {
    let mut h = manual(V311);
    h.connected();
    h.reply(incoming(4, QoS::AtLeastOnce, "m", false));
    let t = one(&mut h);
    h.reply(incoming(4, QoS::AtLeastOnce, "m", true));
    assert_eq!(deliveries(h.events()), vec![]);
    h.conn.ack(t, h.now).unwrap();
    assert_eq!(h.sent(), vec![Packet::PubAck(PubAck::new(4))]);
}

/// Unacknowledged messages are bounded by `receive_maximum`, with MQTT 3.1.1 too (which cannot
/// tell the broker): one more closes the connection with Receive Maximum exceeded.
#[test]
fn held_messages_are_bounded_by_receive_maximum() {
    for v in VERSIONS {
        let mut c = config(v);
        c.manual_acks = true;
        c.receive_maximum = 2;
        let mut h = Harness::with_backoff(c, no_jitter());
        h.connected();
        h.reply(incoming(1, QoS::AtLeastOnce, "a", false));
        h.reply(incoming(2, QoS::ExactlyOnce, "b", false));
        assert_eq!(deliveries(h.events()).len(), 2);
        h.reply(incoming(3, QoS::AtLeastOnce, "c", false));
        let ev = h.events();
        assert!(
            ev.iter().any(|e| matches!(
                e,
                Event::Lifecycle {
                    event: Lifecycle::ConnectionLost {
                        reason: Reason::ProtocolViolation {
                            code: ReasonCode::ReceiveMaximumExceeded,
                            ..
                        },
                        ..
                    },
                    ..
                }
            )),
            "{v}: {ev:?}"
        );
        assert!(deliveries(ev).is_empty(), "{v}: the third is not delivered");
    }
}

/// A token the connection never gave out is refused.
#[test]
fn a_token_of_another_connection_is_unknown() {
    let mut other = manual(V5);
    other.connected();
    for pkid in 1..=3 {
        other.reply(incoming(pkid, QoS::AtLeastOnce, "x", false));
    }
    let far: Vec<AckToken> = deliveries(other.events())
        .into_iter()
        .filter_map(|(_, t)| t)
        .collect();
    let mut h = manual(V5);
    h.connected();
    assert_eq!(h.conn.ack(far[2], h.now), Err(AckError::Unknown));
}
