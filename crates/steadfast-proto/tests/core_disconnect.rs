//! Spec "Closing": `disconnect()` stops reconnecting, lets in-flight messages finish within a
//! timeout, sends DISCONNECT and emits `Disconnected`.

mod support;

use steadfast_proto::{
    Action, CommandError, Disconnect, DisconnectOptions, Event, Lifecycle, Packet, Properties,
    Props, ProtocolVersion, PublishError, PublishOutcome, QoS, ReasonCode, State,
};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn plain_disconnect() -> Packet {
    Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Props::new(),
    })
}

fn assert_closed_for_good(h: &mut Harness) {
    assert_eq!(h.conn.state(), State::Closed);
    assert_eq!(h.conn.poll_timeout(), None);
    h.advance(secs(24 * 3600));
    assert!(!h.any_connect_action());
    assert!(h.events().is_empty());
    h.conn.reconnect_now(h.now);
    h.conn.wake(h.now);
    assert!(h.actions().is_empty(), "a closed client stays closed");
}

#[test]
fn disconnect_drains_in_flight_then_sends_disconnect() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        let tok = h.publish("t", QoS::AtLeastOnce, "x");
        let id = publishes(&h.sent())[0].pkid;
        h.conn.disconnect(DisconnectOptions::default(), h.now);
        assert_eq!(h.conn.state(), State::Disconnecting);
        assert!(h.sent().is_empty(), "{v}: waits for the PUBACK");
        assert!(h.actions().is_empty());
        // New work is refused while draining.
        assert_eq!(
            h.conn
                .publish(message("t", QoS::AtMostOnce, "late"), h.now)
                .unwrap_err()
                .0,
            PublishError::Closed
        );
        assert_eq!(
            h.conn.subscribe(
                vec![steadfast_proto::SubscribeFilter::new("a", QoS::AtMostOnce)],
                Properties::default(),
                h.now
            ),
            Err(CommandError::Closed)
        );
        h.advance(secs(1));
        h.puback(id);
        assert_eq!(h.sent(), vec![plain_disconnect()], "{v}");
        assert_eq!(h.actions(), vec![Action::Close]);
        let ev = h.events();
        assert!(ev.contains(&Event::PublishDone {
            token: tok,
            result: Ok(PublishOutcome {
                reason: ReasonCode::Success
            })
        }));
        let life: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Lifecycle { event, .. } => Some(event.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(life, vec![Lifecycle::Disconnected]);
        assert_closed_for_good(&mut h);
    }
}

#[test]
fn disconnect_with_nothing_in_flight_is_immediate() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        h.conn.disconnect(DisconnectOptions::default(), h.now);
        assert_eq!(h.sent(), vec![plain_disconnect()]);
        assert_eq!(h.actions(), vec![Action::Close]);
        assert_eq!(h.lifecycle(), vec![Lifecycle::Disconnected]);
        assert_closed_for_good(&mut h);
    }
}

#[test]
fn drain_timeout_fails_the_rest_with_closed() {
    for v in VERSIONS {
        let mut c = config(v);
        c.drain_timeout = secs(3);
        c.keep_alive = secs(0);
        let mut h = Harness::with_backoff(c, no_jitter());
        h.connected();
        let a = h.publish("t", QoS::AtLeastOnce, "a");
        let b = h.publish("t", QoS::ExactlyOnce, "b");
        let ids: Vec<u16> = publishes(&h.sent()).iter().map(|p| p.pkid).collect();
        h.conn.disconnect(DisconnectOptions::default(), h.now);
        h.puback(ids[0]);
        assert_eq!(h.timeout_in(), Some(secs(3)));
        h.advance(secs(3) - ms(1));
        assert_eq!(h.conn.state(), State::Disconnecting);
        assert!(h.sent().is_empty());
        h.advance(ms(1));
        assert_eq!(h.sent(), vec![plain_disconnect()], "{v}");
        assert_eq!(h.actions(), vec![Action::Close]);
        let ev = h.events();
        let done: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                Event::PublishDone { token, result } => Some((*token, result.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            done,
            vec![
                (
                    a,
                    Ok(PublishOutcome {
                        reason: ReasonCode::Success
                    })
                ),
                (b, Err(PublishError::Closed))
            ]
        );
        assert!(matches!(
            ev.last(),
            Some(Event::Lifecycle {
                event: Lifecycle::Disconnected,
                ..
            })
        ));
        assert_closed_for_good(&mut h);
    }
}

#[test]
fn disconnect_while_in_backoff_closes_at_once() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.start();
        h.expect_connect_action();
        h.io_error();
        assert_eq!(h.conn.state(), State::Backoff);
        let tok = h.publish("t", QoS::AtLeastOnce, "queued");
        h.events();
        h.conn.disconnect(DisconnectOptions::default(), h.now);
        assert!(h.sent().is_empty());
        let ev = h.events();
        assert!(ev.contains(&Event::PublishDone {
            token: tok,
            result: Err(PublishError::Closed)
        }));
        assert!(matches!(
            ev.last(),
            Some(Event::Lifecycle {
                event: Lifecycle::Disconnected,
                ..
            })
        ));
        assert_closed_for_good(&mut h);
    }
}

#[test]
fn disconnect_while_connecting_aborts_the_attempt() {
    for v in VERSIONS {
        // Transport open, waiting for CONNACK.
        let mut h = Harness::v(v);
        h.start();
        h.expect_connect_action();
        h.open();
        h.sent();
        h.conn.disconnect(DisconnectOptions::default(), h.now);
        assert_eq!(h.actions(), vec![Action::Close]);
        assert_eq!(h.lifecycle().last(), Some(&Lifecycle::Disconnected));
        assert_closed_for_good(&mut h);
        // Transport not open yet: the driver is told to drop the pending connect.
        let mut h = Harness::v(v);
        h.start();
        h.expect_connect_action();
        h.conn.disconnect(DisconnectOptions::default(), h.now);
        assert_eq!(h.actions(), vec![Action::Close], "{v}");
        assert_eq!(h.lifecycle().last(), Some(&Lifecycle::Disconnected));
        h.open();
        assert!(h.sent().is_empty(), "a late open writes nothing");
        assert_closed_for_good(&mut h);
    }
}

#[test]
fn disconnect_before_start_and_while_dormant() {
    let mut h = Harness::v(V5);
    h.conn.disconnect(DisconnectOptions::default(), h.now);
    assert_eq!(h.lifecycle(), vec![Lifecycle::Disconnected]);
    h.start();
    assert_closed_for_good(&mut h);

    let mut c = config(V5);
    c.max_attempts = Some(1);
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    h.expect_connect_action();
    h.io_error();
    assert_eq!(h.conn.state(), State::Dormant);
    h.events();
    h.conn.disconnect(DisconnectOptions::default(), h.now);
    assert_eq!(h.lifecycle(), vec![Lifecycle::Disconnected]);
    assert_closed_for_good(&mut h);
}

#[test]
fn link_lost_while_draining_ends_the_disconnect() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.connected();
        let tok = h.publish("t", QoS::AtLeastOnce, "x");
        h.sent();
        h.conn.disconnect(DisconnectOptions::default(), h.now);
        h.io_error();
        let ev = h.events();
        assert!(ev.contains(&Event::PublishDone {
            token: tok,
            result: Err(PublishError::Closed)
        }));
        let life: Vec<&str> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Lifecycle { event, .. } => Some(event.name()),
                _ => None,
            })
            .collect();
        assert_eq!(
            life,
            ["connection_lost", "disconnected"],
            "{v}: no reconnect"
        );
        assert_closed_for_good(&mut h);
    }
}

#[test]
fn v5_disconnect_options() {
    let mut h = Harness::v(V5);
    h.connected();
    h.conn.disconnect(
        DisconnectOptions {
            reason: ReasonCode::DisconnectWithWillMessage,
            session_expiry_interval: Some(600),
        },
        h.now,
    );
    assert_eq!(
        h.sent(),
        vec![Packet::Disconnect(Disconnect {
            reason: ReasonCode::DisconnectWithWillMessage,
            properties: Properties {
                session_expiry_interval: Some(600),
                ..Properties::default()
            }
            .into(),
        })]
    );
}

#[test]
fn v311_disconnect_ignores_v5_options() {
    let mut h = Harness::v(ProtocolVersion::V311);
    h.connected();
    h.conn.disconnect(
        DisconnectOptions {
            reason: ReasonCode::DisconnectWithWillMessage,
            session_expiry_interval: Some(600),
        },
        h.now,
    );
    assert_eq!(h.sent_bytes().as_ref(), [0xE0, 0x00]);
}

#[test]
fn pending_subscribe_fails_with_closed() {
    let mut h = Harness::v(V5);
    h.start();
    let tok = h.subscribe("a/#", QoS::AtMostOnce);
    h.conn.disconnect(DisconnectOptions::default(), h.now);
    assert!(h.events().contains(&Event::SubscribeDone {
        token: tok,
        result: Err(CommandError::Closed)
    }));
}
