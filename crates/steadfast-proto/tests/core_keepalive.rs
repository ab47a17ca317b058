//! Spec "Keep-alive and dead links", on virtual time.

mod support;

use std::time::Duration;

use steadfast_proto::{
    Action, Event, Lifecycle, Packet, Properties, ProtocolVersion, QoS, Reason, State,
};
use support::*;

fn harness(version: ProtocolVersion, keep_alive: Duration) -> Harness {
    let mut c = config(version);
    c.keep_alive = keep_alive;
    Harness::with_backoff(c, no_jitter())
}

fn qos0_from_broker(h: &mut Harness) {
    h.reply(Packet::Publish(message("in/x", QoS::AtMostOnce, "x")));
}

/// The single `ConnectionLost` among the events, with the time it was emitted.
fn lost(h: &mut Harness) -> Option<(Duration, Reason)> {
    let t0 = h.t0;
    h.events().into_iter().find_map(|e| match e {
        Event::Lifecycle {
            at,
            event: Lifecycle::ConnectionLost { reason, .. },
        } => Some((at - t0, reason)),
        _ => None,
    })
}

#[test]
fn connect_carries_the_keep_alive() {
    for v in VERSIONS {
        let mut h = harness(v, secs(10));
        h.start();
        let c = h.connect(false);
        assert_eq!(c.keep_alive, 10);
        let mut h = Harness::with_backoff(config(v), no_jitter());
        h.start();
        assert_eq!(
            h.connect(false).keep_alive,
            60,
            "default keep-alive is 60 s"
        );
    }
}

#[test]
fn pingreq_after_keep_alive_of_not_sending_even_while_receiving() {
    for v in VERSIONS {
        let mut h = harness(v, secs(10));
        h.connected();
        // The broker keeps talking; the client says nothing.
        for _ in 0..4 {
            h.advance(secs(2));
            qos0_from_broker(&mut h);
            assert!(h.sent().is_empty(), "{v}");
        }
        assert_eq!(h.timeout_in(), Some(secs(2)), "{v}: PINGREQ due at 10 s");
        h.advance(secs(2) - ms(1));
        assert!(h.sent().is_empty());
        h.advance(ms(1));
        assert_eq!(h.sent(), vec![Packet::PingReq], "{v}");
        assert_eq!(h.elapsed(), secs(10));
        h.reply(Packet::PingResp);
        // Next PINGREQ ten seconds after the last one was sent.
        assert_eq!(h.conn.poll_timeout(), Some(h.t0 + secs(20)), "{v}");
    }
}

#[test]
fn pingreq_when_only_sending_and_nothing_received() {
    for v in VERSIONS {
        let mut h = harness(v, secs(10));
        h.connected();
        // A publisher that only sends QoS 0: nothing ever comes back.
        for i in 0..4 {
            h.advance(secs(2));
            h.publish("out/x", QoS::AtMostOnce, "x");
            let sent = h.sent();
            assert_eq!(publishes(&sent).len(), 1, "{v} publish {i}");
        }
        h.advance(secs(2));
        assert_eq!(
            h.sent(),
            vec![Packet::PingReq],
            "{v}: the publisher must still ping at 10 s"
        );
        // And a silent path is noticed at 15 s.
        h.advance(secs(5) - ms(1));
        assert_eq!(h.conn.state(), State::Connected);
        h.advance(ms(1));
        let (at, reason) = lost(&mut h).expect("connection lost");
        assert_eq!(at, secs(15));
        assert_eq!(reason, Reason::KeepAliveTimeout(secs(5)));
    }
}

#[test]
fn silent_path_detected_at_one_and_a_half_keep_alive_and_not_before_the_ping_timeout() {
    for v in VERSIONS {
        for ka in [2u64, 10, 60] {
            let mut h = harness(v, secs(ka));
            h.connected(); // last packet received at t = 0 (CONNACK)
            h.advance(secs(ka));
            assert_eq!(h.sent(), vec![Packet::PingReq]);
            let ping_at = h.elapsed();
            let pt = Duration::from_secs(ka) / 2;
            assert_eq!(h.timeout_in(), Some(pt), "{v} ka {ka}");
            h.advance(pt - ms(1));
            assert_eq!(
                h.conn.state(),
                State::Connected,
                "{v} ka {ka}: not before the ping timeout"
            );
            assert!(lost(&mut h).is_none());
            h.advance(ms(1));
            let (at, reason) = lost(&mut h).expect("lost");
            assert_eq!(at, ping_at + pt);
            assert!(
                at <= Duration::from_secs(ka) * 3 / 2,
                "{v} ka {ka}: within 1.5 x keep-alive"
            );
            assert_eq!(reason, Reason::KeepAliveTimeout(pt));
            assert_eq!(reason.reason_code(), None);
            assert_eq!(reason.initiator(), steadfast_proto::Initiator::Library);
            assert_eq!(h.conn.state(), State::Backoff);
            assert!(h.actions().contains(&Action::Close));
        }
    }
}

#[test]
fn worst_case_is_one_and_a_half_keep_alive_after_the_last_received_packet() {
    for v in VERSIONS {
        let mut h = harness(v, secs(10));
        h.connected();
        // Received at 3 s, then silence; the client keeps publishing QoS 0 every second.
        h.advance(secs(3));
        qos0_from_broker(&mut h);
        let last_recv = h.elapsed();
        let mut lost_at = None;
        for _ in 0..30 {
            h.advance(secs(1));
            if h.conn.state() != State::Connected {
                lost_at = lost(&mut h).map(|(at, _)| at);
                break;
            }
            h.publish("out", QoS::AtMostOnce, "x");
        }
        let at = lost_at.expect("noticed");
        assert!(at <= last_recv + secs(15), "{v}: lost at {at:?}");
    }
}

#[test]
fn any_packet_cancels_the_ping_timeout() {
    for v in VERSIONS {
        let mut h = harness(v, secs(10));
        h.connected();
        h.advance(secs(10));
        assert_eq!(h.sent(), vec![Packet::PingReq]);
        h.advance(secs(2));
        qos0_from_broker(&mut h); // not a PINGRESP
        h.events();
        h.advance(secs(4)); // past the 15 s ping deadline
        assert_eq!(h.conn.state(), State::Connected, "{v}");
        assert!(h.events().is_empty());
        // The next PINGREQ is due 10 s after the last one was sent (t = 20 s).
        assert_eq!(h.conn.poll_timeout(), Some(h.t0 + secs(20)), "{v}");
        h.advance(secs(4));
        assert_eq!(h.sent(), vec![Packet::PingReq]);
    }
}

#[test]
fn server_keep_alive_replaces_ours() {
    let mut h = harness(ProtocolVersion::V5, secs(60));
    h.start();
    let props = Properties {
        server_keep_alive: Some(4),
        ..Properties::default()
    };
    h.connect_with(false, props);
    let granted = h
        .lifecycle()
        .into_iter()
        .find_map(|e| match e {
            Lifecycle::Connected { granted, .. } => Some(granted),
            _ => None,
        })
        .expect("connected");
    assert_eq!(granted.keep_alive, secs(4));
    assert_eq!(h.timeout_in(), Some(secs(4)));
    h.advance(secs(4));
    assert_eq!(h.sent(), vec![Packet::PingReq]);
    // Ping timeout is half of the server's keep-alive.
    h.advance(secs(2));
    assert_eq!(
        lost(&mut h).map(|(_, r)| r),
        Some(Reason::KeepAliveTimeout(secs(2)))
    );
}

#[test]
fn server_keep_alive_zero_disables_pings() {
    let mut h = harness(ProtocolVersion::V5, secs(10));
    h.start();
    h.connect_with(
        false,
        Properties {
            server_keep_alive: Some(0),
            ..Properties::default()
        },
    );
    h.events();
    h.advance(secs(3600));
    assert!(h.sent().is_empty());
    assert_eq!(h.conn.state(), State::Connected);
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn keep_alive_zero_disables_pings() {
    for v in VERSIONS {
        let mut h = harness(v, Duration::ZERO);
        h.start();
        assert_eq!(h.connect(false).keep_alive, 0);
        h.events();
        // Only the stable_after timer remains.
        assert_eq!(h.timeout_in(), Some(secs(30)));
        h.advance(secs(30));
        assert_eq!(
            h.conn.poll_timeout(),
            None,
            "{v}: no deadline at all once stable"
        );
        h.advance(secs(10 * 3600));
        assert!(h.sent().is_empty(), "{v}");
        assert_eq!(h.conn.state(), State::Connected);
        assert!(h.events().is_empty());
    }
}

#[test]
fn ping_timeout_is_capped_at_30_s() {
    for v in VERSIONS {
        let mut h = harness(v, secs(120));
        h.connected();
        h.advance(secs(120));
        assert_eq!(h.sent(), vec![Packet::PingReq]);
        assert_eq!(h.timeout_in(), Some(secs(30)), "{v}: min(60 s, 30 s)");
        h.advance(secs(30));
        let (at, reason) = lost(&mut h).expect("lost");
        assert_eq!(at, secs(150));
        assert_eq!(reason, Reason::KeepAliveTimeout(secs(30)));
    }
}

#[test]
fn configured_ping_timeout_is_used() {
    let mut c = config(ProtocolVersion::V5);
    c.keep_alive = secs(10);
    c.ping_timeout = Some(secs(1));
    let mut h = Harness::with_backoff(c, no_jitter());
    h.connected();
    h.advance(secs(10));
    assert_eq!(h.sent(), vec![Packet::PingReq]);
    assert_eq!(h.timeout_in(), Some(secs(1)));
}

#[test]
fn keep_alive_restarts_on_a_new_connection() {
    for v in VERSIONS {
        let mut h = harness(v, secs(10));
        h.connected();
        h.advance(secs(7));
        h.io_error();
        h.events();
        assert_eq!(h.timeout_in(), Some(secs(1)), "backoff 1 s");
        h.advance(secs(1));
        h.connect(true);
        h.events();
        // Keep-alive counts from the new CONNACK, not from the old link.
        assert_eq!(h.conn.poll_timeout(), Some(h.now + secs(10)), "{v}");
    }
}

#[test]
fn a_slow_application_does_not_suspend_the_ping_deadline() {
    for v in VERSIONS {
        let mut h = harness(v, secs(10));
        h.connected();
        // The application stops taking messages at 8 s; the driver keeps reading bytes it
        // does not decode yet, and tells the core they came.
        h.advance(secs(8));
        h.conn.handle_liveness(h.now);
        h.advance(secs(2));
        assert_eq!(h.sent(), vec![Packet::PingReq], "{v}: pings still go out");
        // Bytes after the PINGREQ answer it, decoded or not.
        h.advance(secs(3));
        h.conn.handle_liveness(h.now);
        assert!(lost(&mut h).is_none());
        // Then nothing at all arrives, decoded or not: the next ping (10 s after the last
        // one went out) goes unanswered, and the link is dead whether or not the
        // application is slow.
        h.advance(secs(12));
        assert_eq!(
            h.sent(),
            vec![Packet::PingReq],
            "{v}: the second ping, at 20 s"
        );
        let (at, reason) =
            lost(&mut h).expect("a silent link is found while the application is behind");
        assert_eq!(at, secs(25), "{v}");
        assert_eq!(reason, Reason::KeepAliveTimeout(secs(5)));
    }
}
