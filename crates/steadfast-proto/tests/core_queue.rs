//! Spec "Offline publishing": bounds, overflow policies, QoS 0 queueing, drain order and the
//! broker's Receive Maximum.

mod support;

use steadfast_proto::session::offline::{Overflow, QueueLimits};
use steadfast_proto::{
    Lifecycle, Packet, Properties, ProtocolVersion, PublishError, QoS, ReasonCode, State,
};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn harness(version: ProtocolVersion, limits: QueueLimits) -> Harness {
    let mut c = config(version);
    c.queue = limits;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    h
}

fn limits(max_messages: usize, max_bytes: usize, overflow: Overflow) -> QueueLimits {
    QueueLimits {
        max_messages,
        max_bytes,
        overflow,
        queue_qos0: true,
    }
}

fn texts(p: &[steadfast_proto::Publish]) -> Vec<String> {
    p.iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect()
}

fn payloads(packets: &[Packet]) -> Vec<String> {
    texts(&publishes(packets))
}

#[test]
fn defaults() {
    let l = QueueLimits::default();
    assert_eq!(l.max_messages, 10_000);
    assert_eq!(l.max_bytes, 64 << 20);
    assert_eq!(l.overflow, Overflow::Backpressure);
    assert!(l.queue_qos0);
}

#[test]
fn backpressure_bounds_by_count_and_loses_nothing() {
    for v in VERSIONS {
        let mut h = harness(v, limits(3, 1 << 20, Overflow::Backpressure));
        for i in 0..3 {
            h.publish("t", QoS::AtLeastOnce, &format!("m{i}"));
        }
        assert!(!h.conn.queue_has_room(1));
        let msg = message("t", QoS::AtLeastOnce, "m3");
        let (err, back) = h.conn.publish(msg.clone(), h.now).unwrap_err();
        assert_eq!(err, PublishError::QueueFull);
        assert_eq!(back, msg, "the message is handed back to wait for room");
        assert_eq!(h.conn.queued_len(), 3);
        assert!(h.publish_done().is_empty(), "nothing dropped");
        h.connect(false);
        assert_eq!(payloads(&h.sent()), ["m0", "m1", "m2"], "{v}");
        // Room again: the waiting publish goes through.
        assert!(h.conn.queue_has_room(2));
        h.conn.publish(back, h.now).unwrap();
        assert_eq!(payloads(&h.sent()), ["m3"]);
    }
}

#[test]
fn bounds_by_bytes() {
    // Cost is topic + payload: "t" + "1234" = 5 bytes.
    let mut h = harness(V5, limits(100, 10, Overflow::Reject));
    h.publish("t", QoS::AtMostOnce, "123");
    h.publish("t", QoS::AtMostOnce, "123");
    assert!(!h.conn.queue_has_room(5));
    assert!(h.conn.queue_has_room(2));
    let (err, back) = h
        .conn
        .publish(message("t", QoS::AtMostOnce, "1234"), h.now)
        .unwrap_err();
    assert_eq!(err, PublishError::QueueFull);
    assert_eq!(&back.payload[..], b"1234");
    // A smaller one still fits, exactly.
    assert!(h
        .conn
        .publish(message("t", QoS::AtMostOnce, "1"), h.now)
        .is_ok());
    assert_eq!(h.conn.queued_len(), 3);
    assert!(!h.conn.queue_has_room(1));
}

#[test]
fn drop_oldest_evicts_and_reports() {
    for v in VERSIONS {
        let mut h = harness(v, limits(3, 1 << 20, Overflow::DropOldest));
        let toks: Vec<_> = (0..5)
            .map(|i| h.publish("t", QoS::AtLeastOnce, &format!("m{i}")))
            .collect();
        assert_eq!(
            h.publish_done(),
            vec![
                (toks[0], Err(PublishError::Dropped)),
                (toks[1], Err(PublishError::Dropped))
            ],
            "{v}"
        );
        assert_eq!(h.conn.queued_len(), 3);
        h.connect(false);
        assert_eq!(payloads(&h.sent()), ["m2", "m3", "m4"]);
    }
}

#[test]
fn drop_oldest_by_bytes_evicts_as_many_as_needed() {
    let mut h = harness(V5, limits(100, 12, Overflow::DropOldest));
    let a = h.publish("t", QoS::AtMostOnce, "aaaa"); // 5
    let b = h.publish("t", QoS::AtMostOnce, "bbbb"); // 10
    let _c = h.publish("t", QoS::AtMostOnce, "cccccccccc"); // 11: evicts a and b
    assert_eq!(
        h.publish_done(),
        vec![
            (a, Err(PublishError::Dropped)),
            (b, Err(PublishError::Dropped))
        ]
    );
}

#[test]
fn drop_oldest_never_evicts_for_a_message_that_cannot_fit() {
    let mut h = harness(V5, limits(100, 10, Overflow::DropOldest));
    h.publish("t", QoS::AtMostOnce, "aaaa");
    let big = message(
        "t",
        QoS::AtMostOnce,
        "this payload is larger than the whole queue",
    );
    let (err, back) = h.conn.publish(big.clone(), h.now).unwrap_err();
    assert_eq!(err, PublishError::QueueFull);
    assert_eq!(back, big);
    assert!(
        h.publish_done().is_empty(),
        "nothing was evicted for a message that can never fit"
    );
    assert_eq!(h.conn.queued_len(), 1);
}

#[test]
fn reject_hands_the_message_back() {
    let mut h = harness(V5, limits(1, 1 << 20, Overflow::Reject));
    h.publish("t", QoS::AtLeastOnce, "kept");
    let msg = message("t", QoS::ExactlyOnce, "refused");
    let (err, back) = h.conn.publish(msg.clone(), h.now).unwrap_err();
    assert_eq!(err, PublishError::QueueFull);
    assert_eq!(back, msg);
    assert!(h.publish_done().is_empty());
    h.connect(false);
    assert_eq!(payloads(&h.sent()), ["kept"]);
}

#[test]
fn qos0_queueing_on_and_off() {
    for v in VERSIONS {
        let mut h = harness(v, QueueLimits::default());
        let tok = h.publish("t", QoS::AtMostOnce, "q0");
        assert!(h.publish_done().is_empty(), "not written yet");
        h.connect(false);
        assert_eq!(payloads(&h.sent()), ["q0"]);
        assert!(
            h.publish_done().iter().any(|(t, r)| *t == tok && r.is_ok()),
            "QoS 0 completes once written"
        );

        let mut h = harness(
            v,
            QueueLimits {
                queue_qos0: false,
                ..QueueLimits::default()
            },
        );
        let msg = message("t", QoS::AtMostOnce, "q0");
        let (err, back) = h.conn.publish(msg.clone(), h.now).unwrap_err();
        assert_eq!(err, PublishError::NotConnected);
        assert_eq!(back, msg);
        // QoS 1 is still queued.
        h.publish("t", QoS::AtLeastOnce, "q1");
        h.connect(false);
        assert_eq!(payloads(&h.sent()), ["q1"]);
        // Connected, QoS 0 goes straight out.
        h.publish("t", QoS::AtMostOnce, "now");
        assert_eq!(payloads(&h.sent()), ["now"]);
    }
}

#[test]
fn drained_in_order_after_the_resend_of_in_flight_messages() {
    for v in VERSIONS {
        let mut h = harness(v, QueueLimits::default());
        h.connect(false);
        h.sent();
        h.publish("t", QoS::AtLeastOnce, "inflight");
        let id = publishes(&h.sent())[0].pkid;
        h.io_error();
        for i in 0..3 {
            h.publish(
                "t",
                [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i],
                &format!("q{i}"),
            );
        }
        assert!(h.sent().is_empty());
        h.advance_to_next_timeout();
        h.connect(true);
        let sent = h.sent();
        assert_eq!(payloads(&sent), ["inflight", "q0", "q1", "q2"], "{v}");
        let p = publishes(&sent);
        assert!(p[0].dup && p[0].pkid == id);
        assert!(p[1..].iter().all(|p| !p.dup));
    }
}

#[test]
fn drained_after_the_resubscription() {
    for v in VERSIONS {
        let mut h = harness(v, QueueLimits::default());
        h.connect(false);
        h.subscribe("s/#", QoS::AtMostOnce);
        let pkid = match h.sent().as_slice() {
            [Packet::Subscribe(s)] => s.pkid,
            other => panic!("{other:?}"),
        };
        h.suback(pkid, vec![ReasonCode::Success]);
        h.publish("t", QoS::AtLeastOnce, "inflight");
        h.sent();
        h.io_error();
        h.publish("t", QoS::AtLeastOnce, "queued");
        h.advance_to_next_timeout();
        h.connect(false);
        let sent = h.sent();
        assert!(matches!(sent[0], Packet::Subscribe(_)), "{v}: {sent:?}");
        assert_eq!(payloads(&sent[1..]), ["inflight", "queued"]);
    }
}

#[test]
fn drained_within_the_receive_maximum() {
    let mut h = harness(V5, QueueLimits::default());
    let toks: Vec<_> = (0..10)
        .map(|i| h.publish("t", QoS::AtLeastOnce, &format!("m{i}")))
        .collect();
    h.connect_with(
        false,
        Properties {
            receive_maximum: Some(2),
            ..Properties::default()
        },
    );
    assert_eq!(h.conn.peer_receive_maximum(), Some(2));
    let p = publishes(&h.sent());
    assert_eq!(texts(&p), ["m0", "m1"]);
    assert_eq!(h.conn.inflight_sent(), 2);
    assert_eq!(h.conn.queued_len(), 8);
    // QoS 0 messages behind them wait their turn too (order is kept).
    h.publish("t", QoS::AtMostOnce, "q0");
    assert!(h.sent().is_empty());
    h.puback(p[0].pkid);
    let next = publishes(&h.sent());
    assert_eq!(texts(&next), ["m2"]);
    h.puback(p[1].pkid);
    h.puback(next[0].pkid);
    let next = publishes(&h.sent());
    assert_eq!(next.len(), 2);
    assert!(h.conn.inflight_sent() <= 2);
    // Ack everything as it comes.
    let mut out = vec![];
    let mut pending = next;
    while !pending.is_empty() {
        for p in &pending {
            out.push(String::from_utf8(p.payload.to_vec()).unwrap());
            if p.qos != QoS::AtMostOnce {
                h.puback(p.pkid);
            }
        }
        assert!(h.conn.inflight_sent() <= 2);
        pending = publishes(&h.sent());
    }
    assert_eq!(out, ["m3", "m4", "m5", "m6", "m7", "m8", "m9", "q0"]);
    let done = h.publish_done();
    assert_eq!(done.len(), 11);
    assert!(toks
        .iter()
        .all(|t| done.iter().any(|(d, r)| d == t && r.is_ok())));
}

#[test]
fn resend_also_respects_the_receive_maximum() {
    let mut h = harness(V5, QueueLimits::default());
    h.connect(false);
    for i in 0..5 {
        h.publish("t", QoS::ExactlyOnce, &format!("m{i}"));
    }
    let ids: Vec<u16> = publishes(&h.sent()).iter().map(|p| p.pkid).collect();
    h.io_error();
    h.advance_to_next_timeout();
    h.connect_with(
        true,
        Properties {
            receive_maximum: Some(3),
            ..Properties::default()
        },
    );
    let p = publishes(&h.sent());
    assert_eq!(p.iter().map(|p| p.pkid).collect::<Vec<_>>(), ids[..3]);
    h.pubrec(ids[0]);
    assert_eq!(
        h.sent(),
        vec![Packet::PubRel(steadfast_proto::PubRel::new(ids[0]))]
    );
    h.pubcomp(ids[0]);
    let p = publishes(&h.sent());
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].pkid, p[0].dup), (ids[3], true));
}

#[test]
fn v311_has_no_receive_maximum() {
    let mut h = harness(ProtocolVersion::V311, QueueLimits::default());
    for i in 0..10 {
        h.publish("t", QoS::AtLeastOnce, &format!("m{i}"));
    }
    h.connect(false);
    assert_eq!(publishes(&h.sent()).len(), 10);
}

#[test]
fn publish_while_dormant_or_failed_is_queued() {
    let mut c = config(V5);
    c.max_attempts = Some(1);
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    h.expect_connect_action();
    h.io_error();
    assert_eq!(h.conn.state(), State::Dormant);
    h.publish("t", QoS::AtLeastOnce, "later");
    assert_eq!(h.conn.queued_len(), 1);
    h.conn.wake(h.now);
    h.connect(false);
    assert_eq!(payloads(&h.sent()), ["later"]);
    assert!(h
        .lifecycle()
        .iter()
        .any(|e| matches!(e, Lifecycle::Connected { attempt: 1, .. })));
}
