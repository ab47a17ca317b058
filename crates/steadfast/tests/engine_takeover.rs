//! Two clients sharing one client id must not ping-pong: with Mosquitto (which closes the
//! old connection without a DISCONNECT) and with a scripted peer that sends DISCONNECT 0x8E
//! (session taken over), the connections stay few over a 10 s window.

mod support;

use std::sync::Arc;

use steadfast::ReasonClass;
use support::*;

/// Two clients sharing one client id must not ping-pong. Mosquitto closes the old
/// connection without a DISCONNECT; each client reconnects with a growing backoff (max 4 s),
/// so over 10 s each one connects only a few times (a tight loop would be hundreds).
#[test]
fn shared_client_id_does_not_ping_pong_with_mosquitto() {
    run(Duration::from_secs(40), async {
        let broker = mosquitto();
        let runs = VERSIONS.map(|v| {
            let broker = &broker;
            async move {
                let id = uid(&format!("twin-{}", vname(v)));
                let mut proxies = Vec::new();
                let mut clients = Vec::new();
                let window = Duration::from_secs(10);
                for k in 0..2 {
                    let proxy = proxy_to(broker.addr()).await;
                    let b = fast(&url_of(proxy.local_addr()), v, &id)
                        .backoff(Exponential::new(ms(100), Duration::from_secs(4)))
                        .rng_seed(k + 1);
                    clients.push(start(b, &format!("{id}#{k}")));
                    proxies.push(proxy);
                }
                let t0 = Instant::now();
                tokio::time::sleep(window).await;
                let counts: Vec<u64> = proxies
                    .iter()
                    .map(|p| p.handle().stats().connects_seen)
                    .collect();
                eprintln!(
                    "{id}: CONNECTs per client over {:?}: {counts:?}",
                    t0.elapsed()
                );
                for (k, n) in counts.iter().enumerate() {
                    // Delays 0.1, 0.2, 0.4, ... up to 4 s with jitter: well under 15 in 10 s.
                    assert!(
                        *n <= 14,
                        "client {k} connected {n} times in {window:?}: ping-pong"
                    );
                    assert!(
                        *n >= 2,
                        "client {k} connected only {n} times: was it kicked at all?"
                    );
                }
                // They really did fight: both saw their connection taken away.
                for (_, r) in &clients {
                    assert!(r.count(|e| matches!(e, Lifecycle::ConnectionLost { .. })) >= 1);
                }
            }
        });
        let [a, b] = runs;
        tokio::join!(a, b);
    });
}

/// A scripted broker that accepts and then takes the session over (DISCONNECT 0x8E) after
/// 50 ms, on every connection. `ConnectionLost` reports the takeover with code 0x8E, the
/// delays jump to at least max/4 (1 s) and grow, so over 10 s there are only a few
/// connections (a ping-pong would be hundreds). A reason hook can make it fatal instead.
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
            let (_c, r) = start(b, &id);
            let window = Duration::from_secs(10);
            tokio::time::sleep(window).await;
            let n = broker.accept_count();
            eprintln!("takeover: {n} connections in {window:?}");
            // Floors 1 s, 2 s, 4 s: connections at about 0, 1, 3 and 7 s.
            assert!((3..=5).contains(&n), "{n} connections in {window:?}");
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
            // Backoff 50..500 ms: a retrying client would be back within 1.5 s.
            tokio::time::sleep(ms(1500)).await;
            assert_eq!(broker.accept_count(), 1);
        };
        tokio::join!(retrying, stopping);
    });
}
