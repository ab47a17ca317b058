//! Spec "Backoff": every policy plugged into the Connection, seeded distributions, reset only
//! after `stable_after`, and `max_attempts` / Dormant / wake.

mod support;

use std::time::Duration;

use steadfast_proto::backoff::{
    BackoffPolicy, Constant, Exponential, Jitter, Stepped, UniformRandom,
};
use steadfast_proto::rng::Rng;
use steadfast_proto::{Config, Lifecycle, ProtocolVersion, Reason, State, TransportError};
use support::*;

/// Fails `n` consecutive attempts with an I/O error on the transport open; returns each
/// `Reconnecting` delay, and checks the reconnect deadline is exactly that delay.
fn fail_attempts(h: &mut Harness, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        h.expect_connect_action();
        h.io_error();
        let d = delays(&h.lifecycle());
        assert_eq!(d.len(), 1, "attempt {i}");
        assert_eq!(
            h.timeout_in(),
            Some(d[0]),
            "the reconnect deadline is the reported delay"
        );
        out.push(d[0]);
        h.advance(d[0]);
    }
    out
}

fn harness(policy: Box<dyn BackoffPolicy>, seed: u64) -> Harness {
    let mut c = config(ProtocolVersion::V5);
    c.rng_seed = seed;
    let mut h = Harness::with_backoff(c, policy);
    h.start();
    h
}

/// 1 s per failed attempt, up to 10 s: a user-supplied policy.
#[derive(Debug, Default)]
struct Linear {
    resets: u32,
}

impl BackoffPolicy for Linear {
    fn next_delay(&mut self, attempt: u32, _rng: &mut dyn Rng) -> Duration {
        Duration::from_secs(u64::from(attempt.clamp(1, 10)))
    }
    fn reset(&mut self) {
        self.resets += 1;
    }
    fn max_delay(&self) -> Duration {
        secs(10)
    }
    fn min_delay(&self) -> Duration {
        secs(1)
    }
}

fn policies() -> Vec<(&'static str, Box<dyn BackoffPolicy>)> {
    let exp = |j| Box::new(Exponential::new(ms(500), secs(30)).jitter(j)) as Box<dyn BackoffPolicy>;
    vec![
        ("exponential/none", exp(Jitter::None)),
        ("exponential/full", exp(Jitter::Full)),
        ("exponential/equal", exp(Jitter::Equal)),
        ("exponential/decorrelated", exp(Jitter::Decorrelated)),
        (
            "default",
            Box::new(steadfast_proto::backoff::default_policy()),
        ),
        ("uniform", Box::new(UniformRandom::new(secs(2), secs(9)))),
        (
            "stepped",
            Box::new(Stepped::new(vec![secs(1), secs(5), secs(20)], 0.25).expect("valid steps")),
        ),
        ("constant", Box::new(Constant::new(secs(3)))),
        ("user", Box::new(Linear::default())),
    ]
}

#[test]
fn every_policy_keeps_the_delays_within_min_and_max() {
    for (name, policy) in policies() {
        let (min, max) = (policy.min_delay(), policy.max_delay());
        let mut h = harness(policy, 42);
        let d = fail_attempts(&mut h, 200);
        for (i, d) in d.iter().enumerate() {
            assert!(
                *d >= min && *d <= max,
                "{name}: delay {i} = {d:?} outside [{min:?}, {max:?}]"
            );
        }
    }
}

#[test]
fn exact_schedules_of_the_deterministic_policies() {
    let mut h = harness(
        Box::new(Exponential::new(secs(1), secs(60)).jitter(Jitter::None)),
        1,
    );
    assert_eq!(
        fail_attempts(&mut h, 9),
        [1, 2, 4, 8, 16, 32, 60, 60, 60].map(secs)
    );
    let mut h = harness(Box::new(Constant::new(secs(3))), 1);
    assert_eq!(fail_attempts(&mut h, 4), [secs(3); 4]);
    let mut h = harness(Box::new(Linear::default()), 1);
    assert_eq!(
        fail_attempts(&mut h, 12),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10].map(secs)
    );
    let mut h = harness(
        Box::new(Stepped::new(vec![secs(1), secs(5), secs(20)], 0.0).unwrap()),
        1,
    );
    assert_eq!(fail_attempts(&mut h, 5), [1, 5, 20, 20, 20].map(secs));
}

#[test]
fn stepped_jitter_stays_around_each_step() {
    let mut h = harness(
        Box::new(Stepped::new(vec![secs(1), secs(5), secs(20)], 0.25).unwrap()),
        9,
    );
    let d = fail_attempts(&mut h, 50);
    assert!(d[0] >= ms(750) && d[0] <= ms(1250));
    assert!(d[1] >= ms(3750) && d[1] <= ms(6250));
    for d in &d[2..] {
        assert!(*d >= secs(15) && *d <= secs(25), "{d:?}");
    }
}

fn uniform_run(seed: u64, n: usize) -> Vec<Duration> {
    let mut h = harness(Box::new(UniformRandom::new(secs(1), secs(5))), seed);
    fail_attempts(&mut h, n)
}

#[test]
fn seeded_uniform_distribution() {
    let d = uniform_run(0xC0FFEE, 2000);
    let mean = d.iter().map(Duration::as_secs_f64).sum::<f64>() / d.len() as f64;
    assert!(
        (mean - 3.0).abs() < 0.1,
        "mean {mean} not near (min + max) / 2 = 3"
    );
    // Deciles of [1 s, 5 s]: 200 expected in each; allow a wide but meaningful margin.
    let mut bins = [0usize; 10];
    for d in &d {
        let i = (((d.as_secs_f64() - 1.0) / 4.0) * 10.0).floor() as usize;
        bins[i.min(9)] += 1;
    }
    for (i, b) in bins.iter().enumerate() {
        assert!(
            (140..=260).contains(b),
            "decile {i} has {b} of 2000: {bins:?}"
        );
    }
    // Same seed, same delays; another seed, other delays.
    assert_eq!(uniform_run(0xC0FFEE, 2000), d);
    let other = uniform_run(0xC0FFEF, 2000);
    assert_ne!(other, d);
    let same = other.iter().zip(&d).filter(|(a, b)| a == b).count();
    assert!(same < 20, "{same} equal delays between two seeds");
}

#[test]
fn seeded_jitter_modes_are_reproducible_and_seed_dependent() {
    for j in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
        let run = |seed| {
            let mut h = harness(
                Box::new(Exponential::new(secs(1), secs(60)).jitter(j)),
                seed,
            );
            fail_attempts(&mut h, 300)
        };
        let a = run(7);
        assert_eq!(run(7), a, "{j:?}");
        assert_ne!(run(8), a, "{j:?}");
        // Jitter spreads the delays: not all at the cap.
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(
            distinct.len() > 100,
            "{j:?}: {} distinct delays",
            distinct.len()
        );
    }
}

#[test]
fn full_jitter_distribution_once_capped() {
    // Past attempt 7 the exponential cap is 60 s: full jitter is uniform in [1 s, 60 s].
    let mut h = harness(
        Box::new(Exponential::new(secs(1), secs(60)).jitter(Jitter::Full)),
        3,
    );
    let d = fail_attempts(&mut h, 2000);
    let tail = &d[10..];
    let mean = tail.iter().map(Duration::as_secs_f64).sum::<f64>() / tail.len() as f64;
    assert!((mean - 30.5).abs() < 1.5, "mean {mean}");
    // Equal jitter is in [exp / 2, exp]: [30 s, 60 s] once capped.
    let mut h = harness(
        Box::new(Exponential::new(secs(1), secs(60)).jitter(Jitter::Equal)),
        3,
    );
    let d = fail_attempts(&mut h, 500);
    for d in &d[10..] {
        assert!(*d >= secs(30) && *d <= secs(60));
    }
}

#[test]
fn the_default_grows_from_min() {
    let mut h = harness(Box::new(steadfast_proto::backoff::default_policy()), 11);
    let d = fail_attempts(&mut h, 2000);
    assert!(
        d[0] <= secs(3),
        "first delay is within [min, 3 x min]: {:?}",
        d[0]
    );
    let mean = d.iter().map(Duration::as_secs_f64).sum::<f64>() / d.len() as f64;
    assert!(mean > 15.0 && mean < 60.0, "mean {mean}");
}

// ----------------------------------------------------------------------------------------
// Reset only after stable_after

fn up_for(h: &mut Harness, d: Duration) -> Duration {
    h.connect(false);
    h.events();
    h.advance_answering_pings(d);
    h.io_error();
    let dl = delays(&h.lifecycle());
    assert_eq!(dl.len(), 1);
    h.advance(dl[0]);
    dl[0]
}

#[test]
fn a_connection_dropped_before_stable_after_keeps_growing_the_delay() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.start();
        assert_eq!(fail_attempts(&mut h, 3), [1, 2, 4].map(secs));
        // Accepted, then dropped after 10 s (< 30 s): the delay keeps growing.
        assert_eq!(up_for(&mut h, secs(10)), secs(8));
        // Accepted then kicked at once, repeatedly: no reconnect storm.
        let mut seq = vec![];
        for _ in 0..5 {
            seq.push(up_for(&mut h, Duration::ZERO));
        }
        assert_eq!(seq, [16, 32, 60, 60, 60].map(secs), "{v}");
        // Just short of stable_after.
        assert_eq!(up_for(&mut h, secs(30) - ms(1)), secs(60));
    }
}

#[test]
fn a_connection_that_lasted_past_stable_after_resets_to_the_first_delay() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.start();
        assert_eq!(fail_attempts(&mut h, 5), [1, 2, 4, 8, 16].map(secs));
        assert_eq!(
            up_for(&mut h, secs(30)),
            secs(1),
            "{v}: exactly stable_after"
        );
        assert_eq!(fail_attempts(&mut h, 2), [2, 4].map(secs));
        assert_eq!(up_for(&mut h, secs(3600)), secs(1));
    }
}

#[test]
fn stable_after_is_configurable_and_resets_a_user_policy() {
    let mut c = config(ProtocolVersion::V5);
    c.stable_after = secs(5);
    let mut h = Harness::with_backoff(c, Box::new(Linear::default()));
    h.start();
    assert_eq!(fail_attempts(&mut h, 3), [1, 2, 3].map(secs));
    assert_eq!(up_for(&mut h, secs(4)), secs(4));
    assert_eq!(up_for(&mut h, secs(5)), secs(1));
}

// ----------------------------------------------------------------------------------------
// max_attempts, Dormant, wake

fn max_attempts(n: u32) -> Harness {
    let mut c: Config = config(ProtocolVersion::V5);
    c.max_attempts = Some(n);
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    h
}

fn connecting_attempts(ev: &[Lifecycle]) -> Vec<u32> {
    ev.iter()
        .filter_map(|e| match e {
            Lifecycle::Connecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect()
}

#[test]
fn max_attempts_then_dormant_and_nothing_more() {
    for v in VERSIONS {
        let mut c = config(v);
        c.max_attempts = Some(3);
        let mut h = Harness::with_backoff(c, no_jitter());
        h.start();
        let mut all = vec![];
        for _ in 0..2 {
            h.expect_connect_action();
            h.io_error();
            all.extend(h.lifecycle());
            h.advance_to_next_timeout();
        }
        h.expect_connect_action();
        h.io_error();
        all.extend(h.lifecycle());
        assert_eq!(connecting_attempts(&all), [1, 2, 3]);
        assert_eq!(
            all[all.len() - 2..],
            [
                Lifecycle::ConnectFailed {
                    attempt: 3,
                    reason: Reason::Transport(TransportError::Io("connection reset".into()))
                },
                Lifecycle::Dormant { attempts: 3 },
            ],
            "{v}"
        );
        assert_eq!(h.conn.state(), State::Dormant);
        assert_eq!(
            h.conn.poll_timeout(),
            None,
            "{v}: no deadline while dormant"
        );
        h.advance(secs(10 * 3600));
        assert!(!h.any_connect_action(), "{v}");
        assert!(h.lifecycle().is_empty());
    }
}

#[test]
fn max_attempts_counts_the_first_connect_and_timeouts() {
    let mut h = max_attempts(1);
    h.expect_connect_action();
    h.advance(secs(20));
    assert_eq!(
        h.lifecycle()[1..],
        [
            Lifecycle::ConnectFailed {
                attempt: 1,
                reason: Reason::ConnectTimeout(secs(20))
            },
            Lifecycle::Dormant { attempts: 1 },
        ]
    );
}

#[test]
fn wake_and_reconnect_now_reset_the_count_and_try_at_once() {
    for wake in [true, false] {
        let mut h = max_attempts(2);
        fail_attempts(&mut h, 1);
        h.expect_connect_action();
        h.io_error();
        assert!(h.lifecycle().contains(&Lifecycle::Dormant { attempts: 2 }));
        h.advance(secs(3600));
        if wake {
            h.conn.wake(h.now);
        } else {
            h.conn.reconnect_now(h.now);
        }
        assert_eq!(h.expect_connect_action(), SERVER);
        assert_eq!(
            h.lifecycle(),
            [Lifecycle::Connecting {
                attempt: 1,
                server: server(SERVER)
            }],
            "wake={wake}"
        );
        // The backoff was reset too, and the cap applies afresh.
        h.io_error();
        assert_eq!(delays(&h.lifecycle()), [secs(1)]);
        h.advance(secs(1));
        h.expect_connect_action();
        h.io_error();
        assert_eq!(
            h.lifecycle().last(),
            Some(&Lifecycle::Dormant { attempts: 2 })
        );
    }
}

#[test]
fn reconnect_now_skips_the_current_delay() {
    let mut h = Harness::v(ProtocolVersion::V5);
    h.start();
    fail_attempts(&mut h, 4);
    h.expect_connect_action();
    h.io_error();
    assert_eq!(delays(&h.lifecycle()), [secs(16)]);
    h.advance(secs(1));
    h.conn.reconnect_now(h.now);
    assert_eq!(h.expect_connect_action(), SERVER);
    assert_eq!(
        h.lifecycle(),
        [Lifecycle::Connecting {
            attempt: 6,
            server: server(SERVER)
        }]
    );
    // The reconnect timer is gone: only the connect timeout remains.
    assert_eq!(h.timeout_in(), Some(secs(20)));
    // reconnect_now while connecting or connected does nothing.
    h.conn.reconnect_now(h.now);
    assert!(h.actions().is_empty());
    h.open();
    h.sent();
    h.connack(
        false,
        steadfast_proto::ReasonCode::Success,
        Default::default(),
    );
    h.conn.reconnect_now(h.now);
    assert!(h.actions().is_empty());
    assert_eq!(h.conn.state(), State::Connected);
}

#[test]
fn attempt_numbers_restart_at_one_after_a_stable_connection() {
    for v in VERSIONS {
        let mut h = Harness::v(v);
        h.start();
        fail_attempts(&mut h, 2);
        h.connect(false);
        let ev = h.lifecycle();
        assert!(
            matches!(ev.last(), Some(Lifecycle::Connected { attempt: 3, .. })),
            "{ev:?}"
        );
        // Up for `stable_after` (30 s): the count of attempts starts again.
        h.advance_answering_pings(secs(30));
        h.io_error();
        let ev = h.lifecycle();
        assert!(matches!(ev[0], Lifecycle::ConnectionLost { .. }));
        assert!(
            matches!(ev[1], Lifecycle::Reconnecting { attempt: 1, .. }),
            "{ev:?}"
        );
        h.advance_to_next_timeout();
        h.expect_connect_action();
        h.io_error();
        h.advance_to_next_timeout();
        h.expect_connect_action();
        let ev = h.lifecycle();
        assert_eq!(connecting_attempts(&ev), [1, 2], "{v}");
    }
}

#[test]
fn a_connection_lost_before_stable_after_is_one_more_failed_attempt() {
    for v in VERSIONS {
        let mut h = Harness::with_backoff(config(v), no_jitter());
        h.start();
        fail_attempts(&mut h, 1);
        h.connect(false);
        h.advance_answering_pings(secs(29));
        h.io_error();
        h.advance_to_next_timeout();
        h.expect_connect_action();
        let ev = h.lifecycle();
        let reconnecting: Vec<(u32, Duration)> = ev
            .iter()
            .filter_map(|e| match e {
                Lifecycle::Reconnecting { attempt, delay } => Some((*attempt, *delay)),
                _ => None,
            })
            .collect();
        // The attempt numbers go on (2 connected, lost: 3 next) and the delay keeps growing.
        assert_eq!(reconnecting, [(3, secs(2))], "{v}: {ev:?}");
        assert_eq!(connecting_attempts(&ev), [2, 3], "{v}");
    }
}

#[test]
fn a_flapping_client_goes_dormant_after_max_attempts() {
    // A broker that accepts every CONNECT and drops the connection at once: each connect
    // succeeds, yet the client must not cycle for ever.
    let mut h = max_attempts(3);
    let mut lost = 0;
    while h.conn.state() != State::Dormant {
        assert!(lost < 3, "still cycling after {lost} losses");
        h.connect(false);
        h.advance(secs(1));
        h.transport_error(TransportError::Closed);
        lost += 1;
        if h.conn.state() != State::Dormant {
            h.advance_to_next_timeout();
        }
    }
    let ev = h.lifecycle();
    assert_eq!(lost, 3);
    assert_eq!(ev.last(), Some(&Lifecycle::Dormant { attempts: 3 }));
    assert_eq!(connecting_attempts(&ev), [1, 2, 3]);
}

#[test]
fn max_attempts_is_about_consecutive_failures() {
    let mut h = max_attempts(2);
    fail_attempts(&mut h, 1);
    h.connect(false);
    h.advance_answering_pings(secs(30));
    h.io_error();
    h.advance_to_next_timeout();
    h.events();
    fail_attempts(&mut h, 1);
    h.expect_connect_action();
    h.io_error();
    assert_eq!(
        h.lifecycle().last(),
        Some(&Lifecycle::Dormant { attempts: 2 })
    );
}

#[test]
fn auto_reconnect_off_goes_dormant_at_the_first_failure() {
    let mut c = config(ProtocolVersion::V5);
    c.auto_reconnect = false;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.connected();
    h.io_error();
    let ev = h.lifecycle();
    assert!(matches!(ev[0], Lifecycle::ConnectionLost { .. }));
    assert!(matches!(ev[1], Lifecycle::Dormant { .. }), "{ev:?}");
    assert_eq!(h.conn.poll_timeout(), None);
}

#[test]
fn failed_attempts_rotate_through_the_servers() {
    let mut c = config(ProtocolVersion::V5);
    c.servers = ["mqtt://a", "mqtt://b", "mqtt://c"].map(server).to_vec();
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    let mut seen = vec![];
    for _ in 0..4 {
        seen.push(h.expect_connect_action());
        h.io_error();
        h.advance_to_next_timeout();
    }
    assert_eq!(
        seen,
        [
            "mqtt://a:1883",
            "mqtt://b:1883",
            "mqtt://c:1883",
            "mqtt://a:1883"
        ]
    );
}

#[test]
fn exact_event_sequence_of_a_drop_and_reconnect() {
    use steadfast_proto::{Event, Granted};
    for v in VERSIONS {
        let mut h = Harness::v(v);
        let t0 = h.t0;
        h.start();
        h.expect_connect_action();
        h.advance(ms(10));
        h.open();
        h.sent();
        h.connack(
            false,
            steadfast_proto::ReasonCode::Success,
            Default::default(),
        );
        h.advance(secs(5));
        h.io_error();
        h.advance(secs(1));
        let granted = Granted {
            keep_alive: secs(60),
            receive_maximum: u16::MAX,
            maximum_packet_size: None,
            assigned_client_id: None,
            topic_alias_maximum: 0,
            maximum_qos: steadfast_proto::QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscription_available: true,
            subscription_identifiers_available: true,
            shared_subscription_available: true,
            response_information: None,
            session_expiry_interval: None,
        };
        let at = |d: Duration| t0 + d;
        let expected = vec![
            Event::StateChanged(State::Connecting),
            Event::Lifecycle {
                at: at(ms(0)),
                event: Lifecycle::Connecting {
                    attempt: 1,
                    server: server(SERVER),
                },
            },
            Event::StateChanged(State::Connected),
            Event::Lifecycle {
                at: at(ms(10)),
                event: Lifecycle::Connected {
                    attempt: 1,
                    server: server(SERVER),
                    session_present: false,
                    granted: Box::new(granted),
                },
            },
            Event::Lifecycle {
                at: at(ms(5010)),
                event: Lifecycle::ConnectionLost {
                    reason: Reason::Transport(TransportError::Io("connection reset".into())),
                    uptime: secs(5),
                },
            },
            Event::StateChanged(State::Backoff),
            Event::Lifecycle {
                at: at(ms(5010)),
                // Lost after 5 s, before `stable_after`: attempt 1 counts as failed.
                event: Lifecycle::Reconnecting {
                    attempt: 2,
                    delay: secs(1),
                },
            },
            Event::StateChanged(State::Connecting),
            Event::Lifecycle {
                at: at(ms(6010)),
                event: Lifecycle::Connecting {
                    attempt: 2,
                    server: server(SERVER),
                },
            },
        ];
        assert_eq!(h.events(), expected, "{v}");
        assert_eq!(
            h.actions(),
            vec![
                steadfast_proto::Action::Close,
                steadfast_proto::Action::Connect {
                    server: server(SERVER)
                }
            ]
        );
    }
}
