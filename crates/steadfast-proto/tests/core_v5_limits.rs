//! MQTT 5 limits granted by the broker, topic aliases, subscription identifiers, and MQTT 5
//! features refused under MQTT 3.1.1.

mod support;

use bytes::Bytes;
use steadfast_proto::{
    CommandError, Event, Lifecycle, Packet, Properties, ProtocolVersion, Publish, PublishError,
    QoS, Reason, ReasonCode, RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

fn connected_with(props: Properties) -> Harness {
    let mut h = Harness::v(V5);
    h.start();
    h.connect_with(false, props);
    h.events();
    h.sent();
    h
}

fn publish_err(h: &mut Harness, p: Publish) -> PublishError {
    h.conn.publish(p, h.now).expect_err("refused").0
}

#[test]
fn maximum_packet_size() {
    let mut h = connected_with(Properties {
        maximum_packet_size: Some(100),
        ..Properties::default()
    });
    let big = message("t", QoS::AtLeastOnce, &"x".repeat(200));
    match publish_err(&mut h, big) {
        PublishError::PacketTooLarge { size, max } => {
            assert_eq!(max, 100);
            assert!(size > 200);
        }
        other => panic!("{other:?}"),
    }
    assert!(h.sent().is_empty());
    // One that fits goes out.
    h.publish("t", QoS::AtLeastOnce, &"x".repeat(50));
    assert_eq!(publishes(&h.sent()).len(), 1);
}

#[test]
fn maximum_packet_size_applies_to_what_was_queued_offline() {
    let mut h = Harness::v(V5);
    h.start();
    let tok = h.publish("t", QoS::AtLeastOnce, &"x".repeat(200));
    let small = h.publish("t", QoS::AtLeastOnce, "ok");
    h.connect_with(
        false,
        Properties {
            maximum_packet_size: Some(100),
            ..Properties::default()
        },
    );
    let p = publishes(&h.sent());
    assert_eq!(p.len(), 1);
    assert_eq!(&p[0].payload[..], b"ok");
    let done = h.publish_done();
    assert!(
        matches!(done.as_slice(), [(t, Err(PublishError::PacketTooLarge { max: 100, .. }))] if *t == tok)
    );
    let _ = small;
}

#[test]
fn maximum_qos() {
    let mut h = connected_with(Properties {
        maximum_qos: Some(1),
        ..Properties::default()
    });
    assert_eq!(
        publish_err(&mut h, message("t", QoS::ExactlyOnce, "x")),
        PublishError::QoSNotSupported { max: 1 }
    );
    h.publish("t", QoS::AtLeastOnce, "x");
    assert_eq!(publishes(&h.sent()).len(), 1);
    let mut h = connected_with(Properties {
        maximum_qos: Some(0),
        ..Properties::default()
    });
    assert_eq!(
        publish_err(&mut h, message("t", QoS::AtLeastOnce, "x")),
        PublishError::QoSNotSupported { max: 0 }
    );
}

#[test]
fn retain_not_available() {
    let mut h = connected_with(Properties {
        retain_available: Some(0),
        ..Properties::default()
    });
    let retained = Publish {
        retain: true,
        ..message("t", QoS::AtMostOnce, "x")
    };
    assert_eq!(
        publish_err(&mut h, retained),
        PublishError::RetainNotSupported
    );
    h.publish("t", QoS::AtMostOnce, "not retained");
    assert_eq!(publishes(&h.sent()).len(), 1);
}

#[test]
fn outgoing_topic_alias() {
    let mut c = config(V5);
    c.outgoing_topic_aliases = true;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    h.connect_with(
        false,
        Properties {
            topic_alias_maximum: Some(2),
            ..Properties::default()
        },
    );
    h.publish("a/b", QoS::AtLeastOnce, "1");
    h.publish("a/b", QoS::AtLeastOnce, "2");
    h.publish("c/d", QoS::AtMostOnce, "3");
    h.publish("e/f", QoS::AtMostOnce, "4"); // no alias left
    h.publish("c/d", QoS::AtMostOnce, "5");
    let p = publishes(&h.sent());
    let wire: Vec<(&str, Option<u16>)> = p
        .iter()
        .map(|p| (p.topic.as_str(), p.properties.topic_alias))
        .collect();
    assert_eq!(
        wire,
        [
            ("a/b", Some(1)),
            ("", Some(1)),
            ("c/d", Some(2)),
            ("e/f", None),
            ("", Some(2))
        ]
    );
    // A resend after reconnect carries the full topic: aliases do not survive the link.
    h.io_error();
    h.advance_to_next_timeout();
    h.connect_with(
        true,
        Properties {
            topic_alias_maximum: Some(2),
            ..Properties::default()
        },
    );
    let p = publishes(&h.sent());
    assert_eq!(p.len(), 2);
    for p in &p {
        assert_eq!(p.topic.as_str(), "a/b");
        assert!(p.dup);
    }
    // New publications on the new link set up aliases afresh.
    h.publish("a/b", QoS::AtMostOnce, "3");
    h.publish("a/b", QoS::AtMostOnce, "4");
    let p = publishes(&h.sent());
    let wire: Vec<(&str, Option<u16>)> = p
        .iter()
        .map(|p| (p.topic.as_str(), p.properties.topic_alias))
        .collect();
    assert_eq!(wire, [("a/b", Some(1)), ("", Some(1))]);
}

#[test]
fn no_outgoing_alias_unless_enabled_and_granted() {
    // Enabled, but the broker grants none.
    let mut c = config(V5);
    c.outgoing_topic_aliases = true;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    h.connect(false);
    h.publish("a/b", QoS::AtMostOnce, "1");
    h.publish("a/b", QoS::AtMostOnce, "2");
    assert!(publishes(&h.sent())
        .iter()
        .all(|p| p.topic.as_str() == "a/b" && p.properties.topic_alias.is_none()));
    // Granted but not enabled.
    let mut h = connected_with(Properties {
        topic_alias_maximum: Some(5),
        ..Properties::default()
    });
    h.publish("a/b", QoS::AtMostOnce, "1");
    h.publish("a/b", QoS::AtMostOnce, "2");
    assert!(publishes(&h.sent())
        .iter()
        .all(|p| p.properties.topic_alias.is_none()));
    // The application cannot set an alias itself.
    let mut p = message("a/b", QoS::AtMostOnce, "x");
    p.properties.topic_alias = Some(1);
    assert!(matches!(publish_err(&mut h, p), PublishError::Invalid(_)));
}

fn incoming(topic: &str, alias: Option<u16>) -> Packet {
    let mut p = message(topic, QoS::AtMostOnce, "x");
    p.properties.topic_alias = alias;
    Packet::Publish(p)
}

fn message_topics(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .filter_map(|e| match e {
            Event::Message { publish: p, .. } => Some(p.topic.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn incoming_topic_alias_is_resolved() {
    let mut h = connected_with(Properties::default());
    h.reply(incoming("x/y", Some(3)));
    h.reply(incoming("", Some(3)));
    h.reply(incoming("z", Some(3))); // rebinds 3
    h.reply(incoming("", Some(3)));
    assert_eq!(message_topics(&h.events()), ["x/y", "x/y", "z", "z"]);
}

#[test]
fn incoming_topic_alias_errors() {
    // Out of range (we advertise 16).
    let mut h = connected_with(Properties::default());
    h.reply(incoming("x", Some(17)));
    let ev = h.lifecycle();
    assert!(
        matches!(
            &ev[0],
            Lifecycle::ConnectionLost {
                reason: Reason::ProtocolViolation {
                    code: ReasonCode::TopicAliasInvalid,
                    ..
                },
                ..
            }
        ),
        "{ev:?}"
    );
    // Unknown alias.
    let mut h = connected_with(Properties::default());
    h.reply(incoming("", Some(2)));
    let ev = h.lifecycle();
    assert!(
        matches!(
            &ev[0],
            Lifecycle::ConnectionLost {
                reason: Reason::ProtocolViolation { .. },
                ..
            }
        ),
        "{ev:?}"
    );
    // Aliases do not survive the link.
    let mut h = connected_with(Properties::default());
    h.reply(incoming("x/y", Some(1)));
    h.drop_and_reconnect(true);
    h.events();
    h.reply(incoming("", Some(1)));
    let ev = h.lifecycle();
    assert!(
        matches!(
            &ev[0],
            Lifecycle::ConnectionLost {
                reason: Reason::ProtocolViolation { .. },
                ..
            }
        ),
        "{ev:?}"
    );
}

fn subscribe_packets(h: &mut Harness) -> Vec<Subscribe> {
    h.sent()
        .into_iter()
        .filter_map(|p| match p {
            Packet::Subscribe(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn subscription_identifiers_are_assigned_and_sent() {
    let mut h = connected_with(Properties::default());
    h.subscribe("a/#", QoS::AtMostOnce);
    h.conn
        .subscribe(
            vec![
                SubscribeFilter::new("b/#", QoS::AtMostOnce),
                SubscribeFilter::new("c/#", QoS::AtMostOnce),
            ],
            Properties::default(),
            h.now,
        )
        .unwrap();
    let s = subscribe_packets(&mut h);
    assert_eq!(s[0].properties.subscription_identifiers, [1]);
    assert_eq!(s[1].properties.subscription_identifiers, [2]);
    assert_eq!(
        h.conn.filters_for_subscription_id(2),
        vec!["b/#".into(), "c/#".into()] as Vec<steadfast_proto::ByteStr>
    );
    for s in &s {
        h.suback(s.pkid, vec![ReasonCode::Success; s.filters.len()]);
    }
    // Restored with the same identifiers.
    h.drop_and_reconnect(false);
    let mut s: Vec<(Vec<u32>, Vec<String>)> = subscribe_packets(&mut h)
        .into_iter()
        .map(|s| {
            (
                s.properties.subscription_identifiers.clone(),
                s.filters.iter().map(|f| f.filter.to_string()).collect(),
            )
        })
        .collect();
    s.sort();
    assert_eq!(
        s,
        vec![
            (vec![1], vec!["a/#".to_string()]),
            (vec![2], vec!["b/#".to_string(), "c/#".to_string()])
        ]
    );
    // The application cannot pick one.
    let props = Properties {
        subscription_identifiers: vec![9],
        ..Properties::default()
    };
    assert!(matches!(
        h.conn.subscribe(
            vec![SubscribeFilter::new("d", QoS::AtMostOnce)],
            props,
            h.now
        ),
        Err(CommandError::Invalid(_))
    ));
}

#[test]
fn no_subscription_identifiers_when_the_broker_has_none() {
    let mut h = connected_with(Properties {
        subscription_identifier_available: Some(0),
        ..Properties::default()
    });
    h.subscribe("a/#", QoS::AtMostOnce);
    let s = subscribe_packets(&mut h);
    assert!(s[0].properties.subscription_identifiers.is_empty());
}

#[test]
fn v311_refuses_mqtt5_features_clearly() {
    let mut h = Harness::v(V311);
    h.connected();
    let mut p = message("t", QoS::AtLeastOnce, "x");
    p.properties.message_expiry_interval = Some(10);
    match publish_err(&mut h, p) {
        PublishError::Invalid(e) => {
            assert_eq!(e, steadfast_proto::InvalidMessage::PropertiesNeedV5);
            assert!(e.to_string().contains("3.1.1"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let mut p = message("t", QoS::AtMostOnce, "x");
    p.properties.user_properties.push(("k".into(), "v".into()));
    assert!(matches!(publish_err(&mut h, p), PublishError::Invalid(_)));
    let props = Properties {
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    };
    assert!(matches!(
        h.conn.subscribe(
            vec![SubscribeFilter::new("a", QoS::AtMostOnce)],
            props.clone(),
            h.now
        ),
        Err(CommandError::Invalid(_))
    ));
    let opts = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::qos(QoS::AtMostOnce)
    };
    assert!(matches!(
        h.conn.subscribe(
            vec![SubscribeFilter {
                filter: "a".into(),
                options: opts
            }],
            Properties::default(),
            h.now
        ),
        Err(CommandError::Invalid(_))
    ));
    let opts = SubscriptionOptions {
        retain_handling: RetainHandling::DoNotSend,
        ..SubscriptionOptions::qos(QoS::AtMostOnce)
    };
    assert!(matches!(
        h.conn.subscribe(
            vec![SubscribeFilter {
                filter: "a".into(),
                options: opts
            }],
            Properties::default(),
            h.now
        ),
        Err(CommandError::Invalid(_))
    ));
    assert!(matches!(
        h.conn.unsubscribe(vec!["a".into()], props, h.now),
        Err(CommandError::Invalid(_))
    ));
    // Nothing reached the wire, and the connection is fine.
    assert!(h.sent().is_empty());
    assert_eq!(h.conn.state(), steadfast_proto::State::Connected);
    // No subscription identifiers under 3.1.1.
    h.subscribe("a/#", QoS::AtMostOnce);
    assert_eq!(h.sent().len(), 1);
}

#[test]
fn invalid_topics_and_filters_are_refused() {
    let mut h = Harness::v(V5);
    h.connected();
    for bad in ["a/+", "#", ""] {
        assert!(
            matches!(
                publish_err(&mut h, message(bad, QoS::AtMostOnce, "x")),
                PublishError::Invalid(_)
            ),
            "{bad:?}"
        );
    }
    for bad in ["a/#/b", "a+", ""] {
        assert!(
            matches!(
                h.conn.subscribe(
                    vec![SubscribeFilter::new(bad, QoS::AtMostOnce)],
                    Properties::default(),
                    h.now
                ),
                Err(CommandError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        h.conn.subscribe(vec![], Properties::default(), h.now),
        Err(CommandError::Invalid(_))
    ));
    assert!(h.sent().is_empty());
}

#[test]
fn message_expiry_while_queued() {
    let mut h = Harness::v(V5);
    h.start();
    let mut p = message("t", QoS::AtLeastOnce, "x");
    p.properties.message_expiry_interval = Some(10);
    let expired = h.conn.publish(p.clone(), h.now).unwrap();
    h.advance(secs(4));
    p.payload = Bytes::from_static(b"y");
    let kept = h.conn.publish(p, h.now).unwrap();
    h.advance(secs(6)); // the first has waited 10 s, the second 6 s
                        // Connect timed out meanwhile (20 s not yet): still connecting.
    h.connect(false);
    let sent = publishes(&h.sent());
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0].payload[..], b"y");
    assert_eq!(
        sent[0].properties.message_expiry_interval,
        Some(4),
        "the remaining lifetime is sent"
    );
    let done = h.publish_done();
    assert_eq!(done, vec![(expired, Err(PublishError::Expired))]);
    let _ = kept;
}

#[test]
fn resend_to_a_broker_that_grants_less_fails_the_message() {
    let mut h = connected_with(Properties::default());
    let q2 = h.publish("t", QoS::ExactlyOnce, "two");
    let big = h.publish("t", QoS::AtLeastOnce, &"x".repeat(200));
    let ok = h.publish("t", QoS::AtLeastOnce, "small");
    let ids: Vec<u16> = publishes(&h.sent()).iter().map(|p| p.pkid).collect();
    h.io_error();
    h.advance_to_next_timeout();
    // Same session, but now Maximum QoS 1 and Maximum Packet Size 100.
    h.connect_with(
        true,
        Properties {
            maximum_qos: Some(1),
            maximum_packet_size: Some(100),
            ..Properties::default()
        },
    );
    let p = publishes(&h.sent());
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!((p[0].pkid, p[0].dup), (ids[2], true));
    let done = h.publish_done();
    assert_eq!(done.len(), 2);
    assert_eq!(done[0], (q2, Err(PublishError::QoSNotSupported { max: 1 })));
    assert!(matches!(done[1], (t, Err(PublishError::PacketTooLarge { max: 100, .. })) if t == big));
    assert_eq!(h.conn.inflight_len(), 1);
    h.puback(ids[2]);
    assert!(h.publish_done().iter().any(|(t, r)| *t == ok && r.is_ok()));
}

#[test]
fn a_topic_alias_never_pushes_a_packet_past_the_maximum_packet_size() {
    let mut c = config(V5);
    c.outgoing_topic_aliases = true;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    // "sensor/1/temperature" QoS 0 with an empty payload is 24 bytes; with the alias, 27.
    let exact = Packet::Publish(message("sensor/1/temperature", QoS::AtMostOnce, ""))
        .encoded_len(V5)
        .unwrap();
    let max = exact as u32 + 1;
    h.connect_with(
        false,
        Properties {
            topic_alias_maximum: Some(3),
            maximum_packet_size: Some(max),
            ..Properties::default()
        },
    );
    h.publish("sensor/1/temperature", QoS::AtMostOnce, "");
    // "a": the alias (3 bytes) outweighs the 1-byte topic; set it up with a roomy packet first.
    h.publish("a", QoS::AtMostOnce, "");
    let p = publishes(&h.sent());
    assert!(
        p.iter()
            .all(|p| Packet::Publish(p.clone()).encoded_len(V5).unwrap() <= max as usize),
        "{p:?}"
    );
    assert_eq!(p[0].properties.topic_alias, None, "no room for the alias");
    assert_eq!(p[0].topic.as_str(), "sensor/1/temperature");
}
