//! Spec "Session continuity": resubscribe, resend, session loss, assigned client id, QoS 2
//! exactly once across reconnects.

mod support;

use steadfast_proto::{
    Event, Lifecycle, Packet, Properties, Props, ProtocolVersion, PubRel, Publish, PublishOutcome,
    QoS, ReasonCode, State, Subscribe, SubscribeFilter, Unsubscribe,
};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn filters(s: &Subscribe) -> Vec<&str> {
    s.filters.iter().map(|f| f.filter.as_str()).collect()
}

/// Subscribes and has the broker grant it.
fn subscribed(h: &mut Harness, filter: &str) {
    h.subscribe(filter, QoS::AtLeastOnce);
    let s = subscribes(&h.sent());
    assert_eq!(s.len(), 1);
    h.suback(s[0].pkid, vec![ReasonCode::GrantedQoS1]);
    assert!(h
        .events()
        .iter()
        .any(|e| matches!(e, Event::SubscribeDone { result: Ok(_), .. })));
}

#[test]
fn resubscribe_when_the_broker_has_no_session() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        subscribed(&mut h, "a/#");
        subscribed(&mut h, "b/+");
        h.io_error();
        h.advance_to_next_timeout();
        h.connect(false);
        let sent = h.sent();
        let subs = subscribes(&sent);
        let mut all: Vec<&str> = subs.iter().flat_map(filters).collect();
        all.sort_unstable();
        assert_eq!(all, ["a/#", "b/+"], "{v}");
        for s in &subs {
            assert!(s.filters.iter().all(|f| f.options.qos == QoS::AtLeastOnce));
        }
        // Not restored until the broker says so.
        assert!(
            !h.lifecycle()
                .iter()
                .any(|e| matches!(e, Lifecycle::Resubscribed { .. })),
            "{v}"
        );
        // The broker acks the restore: no SubscribeDone for the application's old tokens.
        for s in subs {
            h.suback(s.pkid, vec![ReasonCode::GrantedQoS1; s.filters.len()]);
        }
        let ev = h.events();
        assert!(!ev.iter().any(|e| matches!(e, Event::SubscribeDone { .. })));
        let resub: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Lifecycle {
                    event: Lifecycle::Resubscribed { filters, granted },
                    ..
                } => Some((filters.clone(), granted.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(resub.len(), 1, "{v}: one event once every SUBACK is in");
        let mut f: Vec<&str> = resub[0].0.iter().map(|f| f.as_str()).collect();
        f.sort_unstable();
        assert_eq!(f, ["a/#", "b/+"]);
        assert_eq!(resub[0].1, [ReasonCode::GrantedQoS1; 2]);
        assert_eq!(h.conn.state(), State::Connected);
    }
}

#[test]
fn no_resubscribe_when_the_session_is_present() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        subscribed(&mut h, "a/#");
        h.io_error();
        h.advance_to_next_timeout();
        h.connect(true);
        assert!(subscribes(&h.sent()).is_empty(), "{v}");
        assert!(!h
            .lifecycle()
            .iter()
            .any(|e| matches!(e, Lifecycle::Resubscribed { .. })));
    }
}

#[test]
fn a_subscribe_made_offline_is_sent_after_connect() {
    for v in VERSIONS {
        // Before the first connect.
        let mut h = Harness::v(v);
        h.start();
        let tok = h.subscribe("early/#", QoS::AtMostOnce);
        h.connect(false);
        let subs = subscribes(&h.sent());
        assert_eq!(subs.len(), 1, "{v}: sent once, not also as a restore");
        assert_eq!(filters(&subs[0]), ["early/#"]);
        assert!(!h
            .lifecycle()
            .iter()
            .any(|e| matches!(e, Lifecycle::Resubscribed { .. })));
        h.suback(subs[0].pkid, vec![ReasonCode::Success]);
        assert!(h.events().contains(&Event::SubscribeDone {
            token: tok,
            result: Ok(vec![ReasonCode::Success])
        }));

        // During backoff.
        h.io_error();
        let tok = h.subscribe("late/#", QoS::AtMostOnce);
        assert!(h.sent().is_empty());
        h.advance_to_next_timeout();
        h.connect(true);
        let subs = subscribes(&h.sent());
        assert_eq!(subs.len(), 1);
        assert_eq!(filters(&subs[0]), ["late/#"]);
        h.suback(subs[0].pkid, vec![ReasonCode::Success]);
        assert!(h.events().contains(&Event::SubscribeDone {
            token: tok,
            result: Ok(vec![ReasonCode::Success])
        }));
    }
}

#[test]
fn a_subscribe_unanswered_when_the_link_drops_is_sent_again() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        let tok = h.subscribe("x/#", QoS::AtLeastOnce);
        assert_eq!(subscribes(&h.sent()).len(), 1);
        h.io_error();
        h.advance_to_next_timeout();
        h.connect(false);
        let subs = subscribes(&h.sent());
        assert_eq!(subs.len(), 1, "{v}: {subs:?}");
        assert_eq!(filters(&subs[0]), ["x/#"]);
        h.suback(subs[0].pkid, vec![ReasonCode::GrantedQoS1]);
        assert!(h.events().contains(&Event::SubscribeDone {
            token: tok,
            result: Ok(vec![ReasonCode::GrantedQoS1])
        }));
    }
}

#[test]
fn an_unsubscribe_removes_the_filter_from_what_is_restored() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        subscribed(&mut h, "a/#");
        subscribed(&mut h, "b/#");
        let tok = h
            .conn
            .unsubscribe(vec!["a/#".into()], Properties::default(), h.now)
            .unwrap();
        let uns: Vec<Unsubscribe> = h
            .sent()
            .into_iter()
            .filter_map(|p| match p {
                Packet::Unsubscribe(u) => Some(u),
                _ => None,
            })
            .collect();
        assert_eq!(uns.len(), 1);
        h.reply(Packet::UnsubAck(steadfast_proto::UnsubAck {
            pkid: uns[0].pkid,
            reasons: if v == V5 {
                vec![ReasonCode::Success]
            } else {
                vec![]
            },
            properties: Props::new(),
        }));
        assert!(h.events().contains(&Event::UnsubscribeDone {
            token: tok,
            result: Ok(vec![ReasonCode::Success])
        }));
        h.drop_and_reconnect(false);
        let subs = subscribes(&h.sent());
        let all: Vec<&str> = subs.iter().flat_map(filters).collect();
        assert_eq!(all, ["b/#"], "{v}");
        h.suback(subs[0].pkid, vec![ReasonCode::GrantedQoS1]);
        assert!(h.lifecycle().contains(&Lifecycle::Resubscribed {
            filters: vec!["b/#".into()],
            granted: vec![ReasonCode::GrantedQoS1],
        }));
    }
}

#[test]
fn a_refused_filter_is_not_restored() {
    let mut h = Harness::v(V5);
    h.connected();
    h.conn
        .subscribe(
            vec![
                SubscribeFilter::new("ok/#", QoS::AtMostOnce),
                SubscribeFilter::new("no/#", QoS::AtMostOnce),
            ],
            Properties::default(),
            h.now,
        )
        .unwrap();
    let s = subscribes(&h.sent());
    h.suback(
        s[0].pkid,
        vec![ReasonCode::Success, ReasonCode::NotAuthorized],
    );
    h.drop_and_reconnect(false);
    let all: Vec<String> = subscribes(&h.sent())
        .iter()
        .flat_map(|s| filters(s).into_iter().map(String::from).collect::<Vec<_>>())
        .collect();
    assert_eq!(all, ["ok/#"]);
}

// ----------------------------------------------------------------------------------------
// Resend

/// Publishes m1 (QoS 1), m2 (QoS 2), m3 (QoS 2, PUBREC received), m4 (QoS 1); returns their
/// packet ids and tokens.
fn four_in_flight(h: &mut Harness) -> (Vec<u16>, Vec<steadfast_proto::Token>) {
    let toks = vec![
        h.publish("t/1", QoS::AtLeastOnce, "m1"),
        h.publish("t/2", QoS::ExactlyOnce, "m2"),
        h.publish("t/3", QoS::ExactlyOnce, "m3"),
        h.publish("t/4", QoS::AtLeastOnce, "m4"),
    ];
    let p = publishes(&h.sent());
    assert_eq!(p.len(), 4);
    let ids: Vec<u16> = p.iter().map(|p| p.pkid).collect();
    assert!(p.iter().all(|p| !p.dup));
    h.pubrec(ids[2]);
    assert_eq!(h.sent(), vec![Packet::PubRel(PubRel::new(ids[2]))]);
    (ids, toks)
}

#[test]
fn resend_with_dup_and_original_ids_in_order_when_the_session_is_present() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        let (ids, toks) = four_in_flight(&mut h);
        h.io_error();
        h.advance_to_next_timeout();
        h.connect(true);
        let sent = h.sent();
        let expect = vec![
            Packet::Publish(Publish {
                dup: true,
                pkid: ids[0],
                ..message("t/1", QoS::AtLeastOnce, "m1")
            }),
            Packet::Publish(Publish {
                dup: true,
                pkid: ids[1],
                ..message("t/2", QoS::ExactlyOnce, "m2")
            }),
            Packet::PubRel(PubRel::new(ids[2])),
            Packet::Publish(Publish {
                dup: true,
                pkid: ids[3],
                ..message("t/4", QoS::AtLeastOnce, "m4")
            }),
        ];
        assert_eq!(sent, expect, "{v}");
        assert!(!h
            .lifecycle()
            .iter()
            .any(|e| matches!(e, Lifecycle::SessionLost { .. })));
        // Completing them completes the original tokens.
        h.puback(ids[0]);
        h.pubrec(ids[1]);
        assert_eq!(h.sent(), vec![Packet::PubRel(PubRel::new(ids[1]))]);
        h.pubcomp(ids[1]);
        h.pubcomp(ids[2]);
        h.puback(ids[3]);
        let done: Vec<_> = h.publish_done();
        let ok = Ok(PublishOutcome {
            reason: ReasonCode::Success,
        });
        assert_eq!(
            done,
            vec![
                (toks[0], ok.clone()),
                (toks[1], ok.clone()),
                (toks[2], ok.clone()),
                (toks[3], ok)
            ]
        );
        assert_eq!(h.conn.inflight_len(), 0);
    }
}

#[test]
fn resend_survives_several_reconnects() {
    for v in VERSIONS {
        // Poison detection would give the message up at the third close (core_flow.rs).
        let mut h = Harness::new(steadfast_proto::Config {
            poison_after: 0,
            ..config(v)
        });
        h.connected();
        h.publish("t", QoS::AtLeastOnce, "x");
        let id = publishes(&h.sent())[0].pkid;
        for _ in 0..3 {
            h.drop_and_reconnect(true);
            let p = publishes(&h.sent());
            assert_eq!(p.len(), 1);
            assert!(p[0].dup);
            assert_eq!(p[0].pkid, id);
        }
    }
}

#[test]
fn session_loss_republishes_as_new_publications_after_the_resubscribe() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        subscribed(&mut h, "s/#");
        let (_, toks) = four_in_flight(&mut h);
        h.publish_done();
        h.io_error();
        h.advance_to_next_timeout();
        h.connect(false);
        let sent = h.sent();
        // SUBSCRIBE first, then all four as new publications, in order: m3 too, although
        // past PUBREC (a broker that lost the session may not have forwarded it).
        assert!(matches!(sent[0], Packet::Subscribe(_)), "{v}: {sent:?}");
        let p = publishes(&sent);
        assert_eq!(sent.len(), 1 + p.len());
        let topics: Vec<&str> = p.iter().map(|p| p.topic.as_str()).collect();
        assert_eq!(topics, ["t/1", "t/2", "t/3", "t/4"], "{v}");
        assert!(p.iter().all(|p| !p.dup), "{v}: republished with DUP=0");
        let ids: Vec<u16> = p.iter().map(|p| p.pkid).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), 4);
        if let Packet::Subscribe(s) = &sent[0] {
            h.suback(s.pkid, vec![ReasonCode::GrantedQoS1]);
        }
        let ev = h.events();
        let life: Vec<Lifecycle> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Lifecycle { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect();
        let pos = |n: &str| {
            life.iter()
                .position(|e| e.name() == n)
                .unwrap_or_else(|| panic!("{n}: {life:?}"))
        };
        assert!(
            life.contains(&Lifecycle::SessionLost { republished: 4 }),
            "{life:?}"
        );
        assert!(pos("connected") < pos("session_lost"));
        assert!(pos("session_lost") < pos("resubscribed"));
        assert!(
            !ev.iter().any(|e| matches!(e, Event::PublishDone { .. })),
            "nothing completes before the new acks"
        );
        // The republished ones complete their original tokens on the new acks.
        h.puback(ids[0]);
        h.pubrec(ids[1]);
        h.pubrec(ids[2]);
        h.sent();
        h.pubcomp(ids[1]);
        h.pubcomp(ids[2]);
        h.puback(ids[3]);
        let done: Vec<_> = h
            .publish_done()
            .into_iter()
            .map(|(t, r)| (t, r.is_ok()))
            .collect();
        assert_eq!(
            done,
            vec![
                (toks[0], true),
                (toks[1], true),
                (toks[2], true),
                (toks[3], true)
            ],
            "{v}"
        );
    }
}

#[test]
fn session_loss_without_republish_fails_the_messages() {
    let mut c = config(V5);
    c.republish_on_session_loss = false;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.connected();
    let tok = h.publish("t", QoS::AtLeastOnce, "x");
    h.sent();
    h.drop_and_reconnect(false);
    assert!(publishes(&h.sent()).is_empty());
    let ev = h.events();
    assert!(ev.contains(&Event::PublishDone {
        token: tok,
        result: Err(steadfast_proto::PublishError::SessionLost)
    }));
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Lifecycle {
            event: Lifecycle::SessionLost { republished: 0 },
            ..
        }
    )));
}

#[test]
fn no_session_lost_event_without_unacked_messages() {
    let mut h = Harness::v(V5);
    h.connected();
    h.drop_and_reconnect(false);
    assert!(!h
        .lifecycle()
        .iter()
        .any(|e| matches!(e, Lifecycle::SessionLost { .. })));
}

// ----------------------------------------------------------------------------------------
// Assigned Client Identifier

#[test]
fn assigned_client_identifier_is_reused() {
    let mut c = config(V5);
    c.client_id = "".into();
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    let props = Properties {
        assigned_client_identifier: Some("abc".into()),
        ..Properties::default()
    };
    let first = h.connect_with(false, props);
    assert_eq!(first.client_id.as_str(), "");
    assert!(first.clean_start);
    let ev = h.lifecycle();
    assert!(ev.iter().any(|e| matches!(e, Lifecycle::Connected { granted, .. } if granted.assigned_client_id.as_deref() == Some("abc"))));
    assert_eq!(h.conn.client_id().as_str(), "abc");
    for _ in 0..2 {
        h.io_error();
        h.advance_to_next_timeout();
        let next = h.connect(true);
        assert_eq!(next.client_id.as_str(), "abc");
        assert!(
            !next.clean_start,
            "MQTT 5 reconnects resume the session (Clean Start 0)"
        );
    }
}

#[test]
fn v311_keeps_its_clean_session_flag() {
    for clean in [true, false] {
        let mut c = config(ProtocolVersion::V311);
        c.clean_start = clean;
        let mut h = Harness::with_backoff(c, no_jitter());
        h.start();
        assert_eq!(h.connect(false).clean_start, clean);
        h.io_error();
        h.advance_to_next_timeout();
        assert_eq!(h.connect(false).clean_start, clean);
    }
}

// ----------------------------------------------------------------------------------------
// QoS 2 exactly once

fn incoming_qos2(pkid: u16, dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        pkid,
        ..message("in/q2", QoS::ExactlyOnce, "once")
    })
}

fn messages(ev: &[Event]) -> usize {
    ev.iter()
        .filter(|e| matches!(e, Event::Message { .. }))
        .count()
}

#[test]
fn qos2_received_is_delivered_exactly_once_across_reconnects() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        h.reply(incoming_qos2(7, false));
        assert_eq!(messages(&h.events()), 1);
        assert_eq!(
            h.sent(),
            vec![Packet::PubRec(steadfast_proto::PubRec::new(7))]
        );
        assert_eq!(h.conn.incoming_qos2_pending(), 1);
        // The link drops before PUBREL; the session is resumed.
        h.drop_and_reconnect(true);
        h.events();
        h.sent();
        h.reply(incoming_qos2(7, true));
        assert_eq!(messages(&h.events()), 0, "{v}: no second delivery");
        assert_eq!(
            h.sent(),
            vec![Packet::PubRec(steadfast_proto::PubRec::new(7))]
        );
        h.pubrel(7);
        assert_eq!(
            h.sent(),
            vec![Packet::PubComp(steadfast_proto::PubComp::new(7))]
        );
        assert_eq!(h.conn.incoming_qos2_pending(), 0);
        // After the exchange, id 7 may carry a new message.
        h.reply(incoming_qos2(7, false));
        assert_eq!(messages(&h.events()), 1);
    }
}

#[test]
fn qos2_duplicate_on_the_same_connection_is_not_redelivered() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        h.reply(incoming_qos2(9, false));
        h.reply(incoming_qos2(9, true));
        assert_eq!(messages(&h.events()), 1, "{v}");
        assert_eq!(
            h.sent(),
            vec![
                Packet::PubRec(steadfast_proto::PubRec::new(9)),
                Packet::PubRec(steadfast_proto::PubRec::new(9))
            ]
        );
    }
}

#[test]
fn qos1_received_is_acked() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        h.reply(Packet::Publish(Publish {
            pkid: 3,
            ..message("in", QoS::AtLeastOnce, "x")
        }));
        assert_eq!(messages(&h.events()), 1);
        assert_eq!(
            h.sent(),
            vec![Packet::PubAck(steadfast_proto::PubAck::new(3))]
        );
    }
}

#[test]
fn incoming_qos2_receive_maximum() {
    // MQTT 5: our Receive Maximum is advertised and enforced.
    let mut c = config(V5);
    c.receive_maximum = 2;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    assert_eq!(h.connect(false).properties.receive_maximum, Some(2));
    h.events();
    h.reply(incoming_qos2(1, false));
    h.reply(incoming_qos2(2, false));
    assert_eq!(messages(&h.events()), 2);
    h.reply(incoming_qos2(3, false));
    let ev = h.lifecycle();
    assert!(
        matches!(
            &ev[0],
            Lifecycle::ConnectionLost {
                reason: steadfast_proto::Reason::ProtocolViolation {
                    code: ReasonCode::ReceiveMaximumExceeded,
                    ..
                },
                ..
            }
        ),
        "{ev:?}"
    );
    // MQTT 3.1.1 cannot tell the broker: nothing is enforced.
    let mut c = config(ProtocolVersion::V311);
    c.receive_maximum = 1;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.connected();
    for id in 1..=5 {
        h.reply(incoming_qos2(id, false));
    }
    assert_eq!(messages(&h.events()), 5);
    assert_eq!(h.conn.state(), State::Connected);
}

#[test]
fn a_suback_with_the_wrong_count_closes_the_link_and_the_subscribe_is_sent_again() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        let tok = h.subscribe("a/#", QoS::AtMostOnce);
        let s = subscribes(&h.sent());
        h.suback(s[0].pkid, vec![ReasonCode::Success, ReasonCode::Success]);
        let ev = h.lifecycle();
        assert!(
            matches!(
                &ev[0],
                Lifecycle::ConnectionLost {
                    reason: steadfast_proto::Reason::ProtocolViolation { .. },
                    ..
                }
            ),
            "{ev:?}"
        );
        h.advance_to_next_timeout();
        h.connect(false);
        let s = subscribes(&h.sent());
        assert_eq!(s.len(), 1, "{v}: the request is sent again");
        assert_eq!(filters(&s[0]), ["a/#"]);
        h.suback(s[0].pkid, vec![ReasonCode::Success]);
        assert!(h.events().contains(&Event::SubscribeDone {
            token: tok,
            result: Ok(vec![ReasonCode::Success])
        }));
    }
}

fn unsuback(h: &mut Harness, pkid: u16, reasons: Vec<ReasonCode>) {
    h.reply(Packet::UnsubAck(steadfast_proto::UnsubAck {
        pkid,
        reasons,
        properties: Props::new(),
    }));
}

#[test]
fn an_unsuback_with_the_wrong_count_closes_the_link_and_the_unsubscribe_is_sent_again() {
    for wrong in [vec![ReasonCode::Success], vec![ReasonCode::Success; 3]] {
        let mut h = Harness::v(V5);
        h.connected();
        let tok = h
            .conn
            .unsubscribe(
                vec!["a/#".into(), "b/+".into()],
                Properties::default(),
                h.now,
            )
            .expect("unsubscribe");
        let u = unsubscribes(&h.sent());
        assert_eq!(u.len(), 1);
        unsuback(&mut h, u[0].pkid, wrong.clone());
        // The link is closed with a Protocol Error DISCONNECT, the request is not answered.
        assert!(
            h.sent()
                .contains(&Packet::Disconnect(steadfast_proto::Disconnect {
                    reason: ReasonCode::ProtocolError,
                    properties: Props::new(),
                })),
            "{wrong:?}"
        );
        let ev = h.events();
        assert!(
            ev.iter().any(|e| matches!(
                e,
                Event::Lifecycle {
                    event: Lifecycle::ConnectionLost {
                        reason: steadfast_proto::Reason::ProtocolViolation {
                            code: ReasonCode::ProtocolError,
                            detail,
                        },
                        ..
                    },
                    ..
                } if detail.contains(&format!("UNSUBACK has {} codes for 2 filters", wrong.len()))
            )),
            "{ev:?}"
        );
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Event::UnsubscribeDone { .. })),
            "{ev:?}"
        );
        // Sent again on the next link, and completed by a correct UNSUBACK.
        h.advance_to_next_timeout();
        h.connect(true);
        let u = unsubscribes(&h.sent());
        assert_eq!(u.len(), 1, "the request is sent again");
        assert_eq!(u[0].filters, ["a/#", "b/+"]);
        unsuback(
            &mut h,
            u[0].pkid,
            vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        );
        assert!(h.events().contains(&Event::UnsubscribeDone {
            token: tok,
            result: Ok(vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted])
        }));
        assert_eq!(h.conn.state(), State::Connected);
    }
}

#[test]
fn a_v311_unsuback_completes_with_success_per_filter() {
    let mut h = Harness::v(ProtocolVersion::V311);
    h.connected();
    let tok = h
        .conn
        .unsubscribe(
            vec!["a/#".into(), "b/+".into()],
            Properties::default(),
            h.now,
        )
        .expect("unsubscribe");
    let u = unsubscribes(&h.sent());
    unsuback(&mut h, u[0].pkid, Vec::new());
    assert!(h.events().contains(&Event::UnsubscribeDone {
        token: tok,
        result: Ok(vec![ReasonCode::Success; 2])
    }));
    assert_eq!(h.conn.state(), State::Connected);
}

/// Subscribes to `filters` in one SUBSCRIBE and has the broker grant them all at QoS 1.
fn subscribed_together(h: &mut Harness, list: &[&str]) {
    h.conn
        .subscribe(
            list.iter()
                .map(|f| SubscribeFilter::new(*f, QoS::AtLeastOnce))
                .collect(),
            Properties::default(),
            h.now,
        )
        .unwrap();
    let s = subscribes(&h.sent());
    assert_eq!(s.len(), 1);
    h.suback(s[0].pkid, vec![ReasonCode::GrantedQoS1; list.len()]);
    h.events();
}

#[test]
fn a_refused_resubscription_is_reported_and_leaves_the_registry() {
    // After an ACL change the broker refuses a restored filter: 0x87 in MQTT 5, 0x80 (the only
    // failure code) in MQTT 3.1.1.
    for (v, refusal) in [
        (ProtocolVersion::V311, ReasonCode::UnspecifiedError),
        (V5, ReasonCode::NotAuthorized),
    ] {
        let mut h = Harness::v(v);
        h.connected();
        subscribed_together(&mut h, &["a/#", "b/#"]);
        h.drop_and_reconnect(false);
        let subs = subscribes(&h.sent());
        assert_eq!(subs.len(), 1, "{v}");
        assert_eq!(filters(&subs[0]), ["a/#", "b/#"]);
        h.suback(subs[0].pkid, vec![ReasonCode::Success, refusal]);
        let ev = h.lifecycle();
        assert!(
            ev.contains(&Lifecycle::ResubscribeFailed {
                filter: "b/#".into(),
                error: steadfast_proto::CommandError::Refused(refusal),
            }),
            "{v}: {ev:?}"
        );
        // What was granted, with the broker's (here lower) QoS.
        assert!(
            ev.contains(&Lifecycle::Resubscribed {
                filters: vec!["a/#".into()],
                granted: vec![ReasonCode::Success],
            }),
            "{v}: {ev:?}"
        );
        // The registry says what is live: the refused filter is not restored again.
        let live: Vec<&str> = h.conn.subscriptions().map(|s| s.filter.as_str()).collect();
        assert_eq!(live, ["a/#"], "{v}");
        h.drop_and_reconnect(false);
        let subs = subscribes(&h.sent());
        let all: Vec<&str> = subs.iter().flat_map(filters).collect();
        assert_eq!(all, ["a/#"], "{v}");
    }
}

#[test]
fn a_resubscription_refused_entirely_emits_no_resubscribed() {
    let mut h = Harness::v(V5);
    h.connected();
    subscribed_together(&mut h, &["a/#"]);
    h.drop_and_reconnect(false);
    h.events();
    let subs = subscribes(&h.sent());
    h.suback(subs[0].pkid, vec![ReasonCode::NotAuthorized]);
    let ev = h.lifecycle();
    assert_eq!(names(&ev), ["resubscribe_failed"], "{ev:?}");
    assert_eq!(h.conn.subscriptions().count(), 0);
}

#[test]
fn a_resubscription_suback_with_the_wrong_count_is_a_protocol_error() {
    let mut h = Harness::v(V5);
    h.connected();
    subscribed_together(&mut h, &["a/#", "b/#"]);
    h.drop_and_reconnect(false);
    h.events();
    let subs = subscribes(&h.sent());
    h.suback(subs[0].pkid, vec![ReasonCode::GrantedQoS1]);
    let ev = h.lifecycle();
    assert!(
        matches!(
            ev.first(),
            Some(Lifecycle::ConnectionLost {
                reason: steadfast_proto::Reason::ProtocolViolation { .. },
                ..
            })
        ),
        "{ev:?}"
    );
    // Nothing was dropped: both are restored on the next connection.
    h.advance_to_next_timeout();
    h.connect(false);
    let subs = subscribes(&h.sent());
    let all: Vec<&str> = subs.iter().flat_map(filters).collect();
    assert_eq!(all, ["a/#", "b/#"]);
}

/// A broker without QoS 2 that answers a QoS 2 PUBLISH with PUBACK (RabbitMQ's MQTT plugin):
/// the publish is failed back with `DowngradedToQoS1`, its packet id is free again, the
/// connection stays up (no close, so no resend loop), and QoS 1 goes on as before. A PUBACK
/// after PUBREC is still a protocol violation.
#[test]
fn puback_for_qos2_fails_the_publish_back_and_keeps_the_connection() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        let q2 = h.publish("t", QoS::ExactlyOnce, "two");
        let p = publishes(&h.sent());
        assert_eq!(p.len(), 1, "{v}");
        h.puback(p[0].pkid);
        assert_eq!(
            h.publish_done(),
            vec![(q2, Err(steadfast_proto::PublishError::DowngradedToQoS1))],
            "{v}"
        );
        assert_eq!(h.conn.state(), State::Connected, "{v}");
        assert_eq!(h.conn.inflight_len(), 0, "{v}");
        assert!(h.sent().is_empty(), "{v}: nothing sent in answer");

        let q1 = h.publish("t", QoS::AtLeastOnce, "one");
        let p = publishes(&h.sent());
        h.puback(p[0].pkid);
        let done = h.publish_done();
        assert!(
            matches!(done.as_slice(), [(t, Ok(_))] if *t == q1),
            "{v}: {done:?}"
        );

        // PUBREC, then PUBACK for the same id: a violation, the connection is closed.
        h.publish("t", QoS::ExactlyOnce, "two again");
        let p = publishes(&h.sent());
        h.pubrec(p[0].pkid);
        h.sent();
        h.puback(p[0].pkid);
        assert_ne!(h.conn.state(), State::Connected, "{v}");
        assert!(
            h.lifecycle().iter().any(|e| matches!(
                e,
                Lifecycle::ConnectionLost {
                    reason: steadfast_proto::Reason::ProtocolViolation { .. },
                    ..
                }
            )),
            "{v}"
        );
    }
}
