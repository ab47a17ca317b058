//! Spec "Offline publishing" (the in-flight window, 3.1.1's bounded default) and "Poison
//! messages": a message the broker answers by closing the connection is given up.

mod support;

use steadfast_proto::{
    Config, Lifecycle, Packet, Properties, ProtocolVersion, PubRel, Publish, PublishError,
    PublishOutcome, QoS, ReasonCode, Token, TransportError, DEFAULT_V311_INFLIGHT,
};
use support::*;

const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn harness(c: Config) -> Harness {
    let mut h = Harness::with_backoff(c, no_jitter());
    h.connected();
    h
}

fn publish_n(h: &mut Harness, n: usize, qos: QoS) -> Vec<Token> {
    (0..n)
        .map(|i| h.publish(&format!("t/{i}"), qos, "x"))
        .collect()
}

/// The broker closes the connection (EOF); the client reconnects at the scheduled instant, to
/// a broker without the session (3.1.1 clean session). Returns the PUBLISHes of the new link.
fn cut_and_reconnect(h: &mut Harness) -> Vec<Publish> {
    h.transport_error(TransportError::Closed);
    h.advance_to_next_timeout();
    h.connect(false);
    publishes(&h.sent())
}

fn topics(p: &[Publish]) -> Vec<&str> {
    p.iter().map(|p| p.topic.as_str()).collect()
}

#[test]
fn v311_has_a_bounded_default_window_and_v5_follows_receive_maximum() {
    assert_eq!(DEFAULT_V311_INFLIGHT, 10);
    let mut h = harness(config(V311));
    publish_n(&mut h, 25, QoS::ExactlyOnce);
    let sent = publishes(&h.sent());
    assert_eq!(sent.len(), 10, "3.1.1 cannot learn the broker's limit");
    // One completes: exactly one more goes out.
    h.pubrec(sent[0].pkid);
    h.pubcomp(sent[0].pkid);
    let more = publishes(&h.sent());
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].topic.as_str(), "t/10");

    // MQTT 5 without a configured window: the broker's Receive Maximum alone.
    let mut h = Harness::v(V5);
    h.start();
    h.connect_with(
        false,
        Properties {
            receive_maximum: Some(16),
            ..Properties::default()
        },
    );
    h.sent();
    publish_n(&mut h, 25, QoS::ExactlyOnce);
    assert_eq!(publishes(&h.sent()).len(), 16);
}

#[test]
fn max_inflight_is_configurable_and_v5_takes_the_smaller_limit() {
    for (v, mine, theirs, expected) in [
        (V311, 40, None, 40),
        (V5, 3, Some(5), 3),
        (V5, 8, Some(5), 5),
    ] {
        let mut h = Harness::new(Config {
            max_inflight: Some(mine),
            ..config(v)
        });
        h.start();
        h.connect_with(
            false,
            Properties {
                receive_maximum: theirs,
                ..Properties::default()
            },
        );
        h.sent();
        publish_n(&mut h, 50, QoS::AtLeastOnce);
        assert_eq!(
            publishes(&h.sent()).len(),
            expected,
            "{v} {mine} {theirs:?}"
        );
    }
}

#[test]
fn a_v311_broker_that_keeps_cutting_a_full_window_gets_a_smaller_one() {
    // rmqtt closes a 3.1.1 connection that sends a 17th unreleased QoS 2 message.
    let mut h = harness(Config {
        max_inflight: Some(64),
        ..config(V311)
    });
    let toks = publish_n(&mut h, 100, QoS::ExactlyOnce);
    assert_eq!(publishes(&h.sent()).len(), 64);
    let mut windows = vec![];
    let mut sent = vec![];
    for _ in 0..4 {
        sent = cut_and_reconnect(&mut h);
        windows.push(sent.len());
    }
    // One cut may be the network; from the second in a row, half of what was in flight.
    assert_eq!(windows, [64, 32, 16, 8]);
    // The cuts were blamed on the window (the first on the oldest message, once: no verdict).
    assert!(h.publish_done().is_empty());
    // The smaller window holds: the broker keeps this connection and everything completes.
    let mut done = 0;
    while !sent.is_empty() {
        assert!(sent.len() <= 8);
        for p in &sent {
            h.pubrec(p.pkid);
        }
        h.sent();
        for p in &sent {
            h.pubcomp(p.pkid);
        }
        done += h.publish_done().iter().filter(|(_, r)| r.is_ok()).count();
        sent = publishes(&h.sent());
    }
    assert_eq!(done, toks.len());
}

#[test]
fn a_poison_message_is_failed_after_three_closes_and_the_queue_goes_on() {
    // NATS closes the connection on every QoS 2 PUBLISH; a 3.1.1 ACL denial does the same.
    let mut h = harness(config(V311));
    let toks = publish_n(&mut h, 2, QoS::ExactlyOnce);
    assert_eq!(publishes(&h.sent()).len(), 2);
    // The first cut blames t/0, the oldest.
    assert_eq!(topics(&cut_and_reconnect(&mut h)), ["t/0", "t/1"]);
    // The second in a row with two in flight is blamed on the window, which drops to one.
    assert_eq!(topics(&cut_and_reconnect(&mut h)), ["t/0"]);
    // Now t/0 alone is in flight: its second close.
    assert_eq!(topics(&cut_and_reconnect(&mut h)), ["t/0"]);
    assert!(
        h.publish_done().is_empty(),
        "two closes are not yet a verdict"
    );
    // The third close while t/0 is the oldest unacknowledged message.
    let sent = cut_and_reconnect(&mut h);
    assert_eq!(topics(&sent), ["t/1"]);
    let done = h.publish_done();
    assert_eq!(
        done,
        vec![(toks[0], Err(PublishError::Poison { closes: 3 }))]
    );
    let text = PublishError::Poison { closes: 3 }.to_string();
    assert!(text.contains("poison"), "{text}");
    // The rest goes on.
    h.pubrec(sent[0].pkid);
    assert!(h
        .sent()
        .contains(&Packet::PubRel(PubRel::new(sent[0].pkid))));
    h.pubcomp(sent[0].pkid);
    assert_eq!(
        h.publish_done(),
        vec![(
            toks[1],
            Ok(PublishOutcome {
                reason: ReasonCode::Success
            })
        )]
    );
}

#[test]
fn an_acknowledgement_in_between_starts_the_count_again() {
    let mut h = harness(config(V5));
    let toks = publish_n(&mut h, 1, QoS::ExactlyOnce);
    let pkid = publishes(&h.sent())[0].pkid;
    h.transport_error(TransportError::Closed);
    h.advance_to_next_timeout();
    h.connect(true);
    h.sent();
    h.transport_error(TransportError::Closed);
    h.advance_to_next_timeout();
    h.connect(true);
    h.sent();
    // The broker acknowledges it (PUBREC) before closing a third time: not a poison message.
    h.pubrec(pkid);
    h.transport_error(TransportError::Closed);
    h.advance_to_next_timeout();
    h.connect(true);
    assert!(h.publish_done().is_empty());
    // Two more closes at the PUBREL stage are not yet three in a row.
    for _ in 0..2 {
        h.transport_error(TransportError::Closed);
        h.advance_to_next_timeout();
        h.connect(true);
    }
    assert_eq!(
        h.publish_done(),
        vec![(toks[0], Err(PublishError::Poison { closes: 3 }))]
    );
}

#[test]
fn closes_the_broker_did_not_make_do_not_count() {
    // A silent link (keep-alive timeout) says nothing about the message.
    let mut h = harness(Config {
        keep_alive: secs(10),
        ..config(V311)
    });
    publish_n(&mut h, 1, QoS::AtLeastOnce);
    for _ in 0..4 {
        h.sent();
        // No answer at all: PINGREQ at 10 s, no reply by 15 s, the client closes the link.
        h.advance(secs(15));
        let lost = h.lifecycle().iter().any(|e| {
            matches!(
                e,
                Lifecycle::ConnectionLost {
                    reason: steadfast_proto::Reason::KeepAliveTimeout(_),
                    ..
                }
            )
        });
        assert!(lost);
        h.advance_to_next_timeout();
        h.connect(false);
    }
    assert!(h.publish_done().is_empty());
}

#[test]
fn poison_after_zero_turns_the_check_off() {
    let mut h = harness(Config {
        poison_after: 0,
        ..config(V311)
    });
    publish_n(&mut h, 1, QoS::AtLeastOnce);
    h.sent();
    for _ in 0..5 {
        assert_eq!(topics(&cut_and_reconnect(&mut h)), ["t/0"]);
    }
    assert!(h.publish_done().is_empty());
}
