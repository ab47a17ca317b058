//! Two clients sharing one client id must not ping-pong: with Mosquitto (which closes the
//! old connection without a DISCONNECT) and with a scripted peer that sends DISCONNECT 0x8E
//! (session taken over), each connection lost at once counts as a failed attempt and the
//! delays keep growing. How few the connections then are over a span of time is counted on
//! virtual time in `driver_absence.rs` (`twins_*`, `a_takeover_0x8e_*`).

mod support;

use std::sync::Arc;

use steadfast::ReasonClass;
use support::*;

/// Two clients sharing one client id, against Mosquitto, which closes the old connection
/// without a DISCONNECT: both are kicked, and both reconnect by themselves with the attempt
/// count going on (1, 2, 3, ...): a connection lost before `stable_after` does not reset the
/// backoff, which is what keeps the pair from a ping-pong.
#[test]
fn shared_client_id_does_not_ping_pong_with_mosquitto() {
    run(Duration::from_secs(60), async {
        let broker = mosquitto();
        let runs = VERSIONS.map(|v| {
            let broker = &broker;
            async move {
                let id = uid(&format!("twin-{}", vname(v)));
                let mut clients = Vec::new();
                for k in 0..2 {
                    let b = fast(&broker.url(), v, &id)
                        .backoff(Exponential::new(ms(100), Duration::from_secs(4)))
                        .rng_seed(k + 1);
                    clients.push(start(b, &format!("{id}#{k}")));
                }
                for (_, r) in clients.iter_mut() {
                    r.next("ConnectionLost", Duration::from_secs(20), |e| {
                        matches!(e, Lifecycle::ConnectionLost { .. })
                    })
                    .await;
                    r.next(
                        "Connected on attempt 3",
                        Duration::from_secs(30),
                        |e| matches!(e, Lifecycle::Connected { attempt, .. } if *attempt >= 3),
                    )
                    .await;
                }
                for (_, r) in &clients {
                    let attempts: Vec<u32> = r
                        .events()
                        .iter()
                        .filter_map(|e| match e {
                            Lifecycle::Connected { attempt, .. } => Some(*attempt),
                            _ => None,
                        })
                        .collect();
                    assert!(
                        attempts.windows(2).all(|w| w[1] > w[0]),
                        "[{}] the attempt count went back: {attempts:?}",
                        r.tag
                    );
                }
            }
        });
        let [a, b] = runs;
        tokio::join!(a, b);
    });
}

/// A scripted broker that accepts and then takes the session over (DISCONNECT 0x8E) after
/// 50 ms, on every connection. `ConnectionLost` reports the takeover with code 0x8E and the
/// delays jump to at least max/4 (1 s) and grow. A reason hook can make it fatal instead.
#[test]
fn takeover_0x8e_backs_off_instead_of_ping_pong() {
    run(Duration::from_secs(30), async {
        let script = |n: usize, mut conn: FakeConn| async move {
            let _ = n;
            let Some(level) = read_connect(&mut conn).await else {
                return;
            };
            let _ = conn.write_all(&connack_ok(level)).await;
            tokio::time::sleep(ms(50)).await;
            let _ = conn.write_all(&fake::disconnect_v5(0x8E)).await;
            let _ = conn.shutdown().await;
            let _ = conn.wait_closed(T).await;
        };
        let retrying = async {
            let broker = Arc::new(FakeBroker::bind().await.unwrap());
            serve(broker.clone(), script);
            let id = uid("takeover");
            let b = fast(&broker.url(), ProtocolVersion::V5, &id)
                .backoff(Exponential::new(ms(100), Duration::from_secs(4)));
            let (_c, mut r) = start(b, &id);
            // Floors 1 s, 2 s, 4 s: losses at about 0, 1 and 3 s.
            for _ in 0..3 {
                r.next("ConnectionLost", T, |e| {
                    matches!(e, Lifecycle::ConnectionLost { .. })
                })
                .await;
            }
            let recs = r.events();
            let losses: Vec<&Reason> = recs
                .iter()
                .filter_map(|e| match e {
                    Lifecycle::ConnectionLost { reason, .. } => Some(reason),
                    _ => None,
                })
                .collect();
            assert!(losses.len() >= 3);
            for reason in losses {
                assert!(
                    matches!(
                        reason,
                        Reason::ServerDisconnect {
                            code: ReasonCode::SessionTakenOver,
                            ..
                        }
                    ),
                    "{reason:?}"
                );
                assert_eq!(reason.initiator(), steadfast::Initiator::Remote);
            }
            let delays: Vec<Duration> = recs
                .iter()
                .filter_map(|e| match e {
                    Lifecycle::Reconnecting { delay, .. } => Some(*delay),
                    _ => None,
                })
                .collect();
            assert!(
                delays.iter().all(|d| *d >= Duration::from_secs(1)),
                "{delays:?}"
            );
            assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
        };
        let stopping = async {
            let broker = Arc::new(FakeBroker::bind().await.unwrap());
            serve(broker.clone(), script);
            let id = uid("takeover-stop");
            let b = fast(&broker.url(), ProtocolVersion::V5, &id).reason_hook(|_, class| {
                if class == ReasonClass::Takeover {
                    ReasonClass::Fatal
                } else {
                    class
                }
            });
            let (c, mut r) = start(b, &id);
            let f = r
                .next("Fatal", T, |e| matches!(e, Lifecycle::Fatal { .. }))
                .await;
            let Lifecycle::Fatal { reason } = &f.event else {
                unreachable!()
            };
            assert_eq!(reason.reason_code(), Some(ReasonCode::SessionTakenOver));
            wait_state(&c, "Failed", T, |s| s == State::Failed).await;
            assert_eq!(
                broker.accept_count(),
                1,
                "one connection before the verdict"
            );
        };
        tokio::join!(retrying, stopping);
    });
}
