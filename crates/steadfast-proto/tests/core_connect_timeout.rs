//! Spec: "A whole connect (TCP, TLS, CONNECT to CONNACK) has a timeout, 20 s by default. A
//! stalled handshake is a failed attempt, not a hang."

mod support;

use std::time::Duration;

use steadfast_proto::{Action, Event, Lifecycle, Packet, Reason, ReasonCode, State};
use support::*;

fn failed_at(h: &mut Harness) -> Vec<(Duration, Lifecycle)> {
    let t0 = h.t0;
    h.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Lifecycle { at, event } => Some((at - t0, event)),
            _ => None,
        })
        .collect()
}

#[test]
fn transport_never_opens() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.start();
        h.expect_connect_action();
        assert_eq!(
            h.timeout_in(),
            Some(secs(20)),
            "{v}: default connect timeout"
        );
        h.events();
        h.advance(secs(20) - ms(1));
        assert!(h.events().is_empty(), "{v}: nothing before the timeout");
        assert_eq!(h.conn.state(), State::Connecting);
        h.advance(ms(1));
        let ev = failed_at(&mut h);
        assert_eq!(
            ev,
            vec![
                (
                    secs(20),
                    Lifecycle::ConnectFailed {
                        attempt: 1,
                        reason: Reason::ConnectTimeout(secs(20))
                    }
                ),
                (
                    secs(20),
                    Lifecycle::Reconnecting {
                        attempt: 2,
                        delay: secs(1)
                    }
                ),
            ],
            "{v}"
        );
        // The driver is told to abandon the pending connect.
        assert_eq!(h.actions(), vec![Action::Close]);
        assert_eq!(h.conn.state(), State::Backoff);
        // A late open of the abandoned transport is ignored: no CONNECT is written.
        h.open();
        assert!(h.sent().is_empty());
        h.advance(secs(1));
        assert_eq!(h.expect_connect_action(), SERVER);
    }
}

#[test]
fn transport_opens_but_no_connack() {
    for v in VERSIONS {
        let mut c = config(v);
        c.connect_timeout = secs(7);
        let mut h = Harness::with_backoff(c, no_jitter());
        h.start();
        h.expect_connect_action();
        h.advance(secs(3));
        h.open();
        assert!(matches!(h.sent().as_slice(), [Packet::Connect(_)]));
        // The timeout counts from the start of the attempt, not from the open.
        assert_eq!(h.timeout_in(), Some(secs(4)), "{v}");
        h.events();
        h.advance(secs(4) - ms(1));
        assert!(h.events().is_empty());
        h.advance(ms(1));
        let ev = failed_at(&mut h);
        assert_eq!(
            ev[0],
            (
                secs(7),
                Lifecycle::ConnectFailed {
                    attempt: 1,
                    reason: Reason::ConnectTimeout(secs(7))
                }
            ),
            "{v}"
        );
        assert!(h.actions().contains(&Action::Close));
        // A CONNACK that arrives after the timeout is for a dead link.
        h.connack(false, ReasonCode::Success, Default::default());
        assert_eq!(h.conn.state(), State::Backoff);
    }
}

#[test]
fn connack_in_time_stops_the_connect_timer() {
    for v in VERSIONS {
        let mut c = config(v);
        c.keep_alive = Duration::ZERO;
        let mut h = Harness::with_backoff(c, no_jitter());
        h.start();
        h.expect_connect_action();
        h.advance(secs(19));
        h.open();
        h.sent();
        h.connack(false, ReasonCode::Success, Default::default());
        // Only stable_after is left.
        assert_eq!(h.timeout_in(), Some(secs(30)), "{v}");
        h.advance(secs(60));
        assert_eq!(h.conn.state(), State::Connected);
    }
}

#[test]
fn every_attempt_gets_its_own_timeout() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.start();
        h.expect_connect_action();
        h.advance(secs(20)); // attempt 1 times out
        h.advance(secs(1)); // backoff 1 s
        h.expect_connect_action();
        h.events();
        assert_eq!(h.timeout_in(), Some(secs(20)));
        h.advance(secs(20));
        let ev = failed_at(&mut h);
        assert_eq!(
            ev[0],
            (
                secs(41),
                Lifecycle::ConnectFailed {
                    attempt: 2,
                    reason: Reason::ConnectTimeout(secs(20))
                }
            )
        );
    }
}
