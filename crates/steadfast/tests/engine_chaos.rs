//! Network faults between the client and a real, private Mosquitto, injected by the fault
//! proxy: periodic resets under load, a blackholed path, busy-broker refusals and two
//! clients fighting over one client id.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use steadfast::Client;
use steadfast::Message;
use support::*;

const N: u32 = 2000;

/// Resets every live connection through the proxy about once a second until `stop`;
/// returns how many resets hit a live connection.
fn resetter(h: ProxyHandle, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut hits = 0;
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(ms(1000)).await;
            if !stop.load(Ordering::Relaxed) && h.reset() > 0 {
                hits += 1;
            }
        }
        hits
    })
}

/// Publishes 0..N on `topic` with a window of 32 concurrent publishes, paced at about one
/// message per 2 ms so the run spans several resets. Every publish must succeed.
async fn publish_sequence(c: Client, topic: String, qos: QoS) {
    let window = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::with_capacity(N as usize);
    let mut tick = tokio::time::interval(ms(2));
    for i in 0..N {
        tick.tick().await;
        let permit = window.clone().acquire_owned().await.unwrap();
        let c = c.clone();
        let t = topic.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.send(Message::new(t, num_payload(i)).qos(qos)).await;
            drop(permit);
            r
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = tokio::time::timeout(T, t)
            .await
            .expect("publish completes")
            .unwrap();
        assert!(r.is_ok(), "publish {i} at {qos:?} failed: {r:?}");
    }
}

/// Publishers behind a proxy that resets the connection every ~1 s, 2,000 messages each at
/// QoS 1 and QoS 2 (persistent session) and at QoS 1 (clean session), with 32 publishes in
/// flight; `mosquitto_sub` on a direct connection is the reference subscriber. QoS 2: every
/// number exactly once. QoS 1: every number at least once.
///
/// The QoS 2 publisher needs its session: with a clean session a message whose PUBREC came
/// back just before a reset can be lost (see `qos2_after_pubrec_is_not_lost_when_the_session_is`
/// in `engine_fake`).
fn resets_while_publishing(v: ProtocolVersion) {
    run(Duration::from_secs(60), async move {
        let broker = mosquitto();
        let proxy = proxy_to(broker.addr()).await;
        let h = proxy.handle();
        let id = uid(&format!("pubreset-{}", vname(v)));
        let t1 = format!("pr/{id}/q1");
        let t2 = format!("pr/{id}/q2");
        let t3 = format!("pr/{id}/clean");
        let mut sub = MosqSub::start(broker.port(), &[&t1, &t2, &t3], 2).await;

        // A persistent session: QoS 2 in flight survives the resets (resent with the same ids).
        let b = persistent(fast(&url_of(proxy.local_addr()), v, &id), v);
        let (c, r) = start_connected(b, &id).await;
        // And a clean-session publisher at QoS 1: every reset loses its session, so what was
        // in flight is republished (SessionLost) rather than resent.
        let (clean, cr) = start_connected(
            fast(&url_of(proxy.local_addr()), v, &format!("{id}-clean")),
            "clean",
        )
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let resets = resetter(h.clone(), stop.clone());
        let started = Instant::now();
        tokio::join!(
            publish_sequence(c.clone(), t1.clone(), QoS::AtLeastOnce),
            publish_sequence(c.clone(), t2.clone(), QoS::ExactlyOnce),
            publish_sequence(clean.clone(), t3.clone(), QoS::AtLeastOnce)
        );
        stop.store(true, Ordering::Relaxed);
        let hits = resets.await.unwrap();
        eprintln!(
            "{id}: published 3 x {N} in {:?} with {hits} resets",
            started.elapsed()
        );
        assert!(hits >= 3, "only {hits} resets hit a live connection");
        assert!(r.count(|e| matches!(e, Lifecycle::ConnectionLost { .. })) >= 3);

        let losses = cr.count(|e| matches!(e, Lifecycle::ConnectionLost { .. }));
        assert!(
            losses >= 3,
            "clean-session publisher lost {losses} connections"
        );
        assert_eq!(
            cr.count(|e| matches!(
                e,
                Lifecycle::Connected {
                    session_present: true,
                    ..
                }
            )),
            0
        );

        // Everything was acknowledged, so the broker has queued all of it to the subscriber:
        // an end marker published now comes after every copy, duplicates included.
        mosq_pub(broker.port(), v, &t2, "end", 2).await;
        let (mut q1, mut q2, mut q3) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let Some((topic, payload)) = sub.next(T).await else {
                let log = sub.log.lock().unwrap();
                panic!(
                    "no end marker: {} + {} + {} received; sub output tail {:?}",
                    q1.len(),
                    q2.len(),
                    q3.len(),
                    &log[log.len().saturating_sub(5)..]
                );
            };
            if topic == t2 && payload == "end" {
                break;
            }
            let n = parse_num(payload.as_bytes());
            match topic {
                t if t == t1 => q1.push(n),
                t if t == t2 => q2.push(n),
                _ => q3.push(n),
            }
        }
        let dups1 = check_sequence("QoS 1", &q1, N, false);
        check_sequence("QoS 2", &q2, N, true);
        let dups3 = check_sequence("QoS 1, clean session", &q3, N, false);
        let republished: usize = cr
            .events()
            .iter()
            .map(|e| match e {
                Lifecycle::SessionLost { republished } => *republished,
                _ => 0,
            })
            .sum();
        eprintln!(
            "{id}: QoS 1 duplicates {dups1}; clean session: duplicates {dups3}, republished {republished}"
        );
    });
}

#[test]
fn resets_every_second_while_publishing_v5() {
    resets_while_publishing(ProtocolVersion::V5);
}

#[test]
fn resets_every_second_while_publishing_v311() {
    resets_while_publishing(ProtocolVersion::V311);
}

/// The SUBSCRIBER is behind the resetting proxy with a persistent session; a steadfast
/// publisher on a direct connection sends QoS 1 and QoS 2 sequences. Everything published
/// while it was reconnecting arrives: QoS 1 at least once, QoS 2 exactly once.
fn resets_while_subscribed(v: ProtocolVersion) {
    run(Duration::from_secs(60), async move {
        let broker = mosquitto();
        let proxy = proxy_to(broker.addr()).await;
        let h = proxy.handle();
        let id = uid(&format!("subreset-{}", vname(v)));
        let t1 = format!("sr/{id}/q1");
        let t2 = format!("sr/{id}/q2");
        let b = persistent(fast(&url_of(proxy.local_addr()), v, &id), v);
        let (sub, mut sr) = start_connected(b, &id).await;
        assert_eq!(
            sub.subscribe(t1.as_str(), QoS::AtLeastOnce).await,
            Ok(QoS::AtLeastOnce)
        );
        assert_eq!(
            sub.subscribe(t2.as_str(), QoS::ExactlyOnce).await,
            Ok(QoS::ExactlyOnce)
        );
        let (publisher, _pr) =
            start_connected(fast(&broker.url(), v, &format!("{id}-pub")), "pub").await;

        let stop = Arc::new(AtomicBool::new(false));
        let resets = resetter(h.clone(), stop.clone());
        let pub_done = tokio::spawn({
            let (p, t1, t2) = (publisher.clone(), t1.clone(), t2.clone());
            async move {
                tokio::join!(
                    publish_sequence(p.clone(), t1, QoS::AtLeastOnce),
                    publish_sequence(p.clone(), t2, QoS::ExactlyOnce)
                );
            }
        });
        let (mut q1, mut q2) = (Vec::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(40);
        while q1.len() < N as usize || !complete(&q2, N) {
            assert!(
                Instant::now() < deadline,
                "q1 {} q2 {} after 40 s",
                q1.len(),
                q2.len()
            );
            let m = sr.message(T).await;
            let n = parse_num(m.payload());
            if m.topic() == t1 {
                q1.push(n);
            } else {
                q2.push(n);
            }
        }
        tokio::time::timeout(T, pub_done)
            .await
            .expect("publisher done")
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        let hits = resets.await.unwrap();
        assert!(hits >= 3, "only {hits} resets hit a live connection");
        let lost = sr.count(|e| matches!(e, Lifecycle::ConnectionLost { .. }));
        assert!(lost >= 3, "{lost} connection losses");
        // Reconnects resumed the session (no resubscription needed).
        let resumed = sr.count(|e| {
            matches!(
                e,
                Lifecycle::Connected {
                    session_present: true,
                    ..
                }
            )
        });
        assert!(resumed >= 3, "{resumed} reconnects with session present");
        assert_eq!(sr.count(|e| matches!(e, Lifecycle::Resubscribed { .. })), 0);
        // Then an end marker on the QoS 2 topic: any duplicate would have come before it.
        publisher
            .send(Message::new(t2.as_str(), "end").qos(QoS::ExactlyOnce))
            .await
            .unwrap();
        loop {
            let m = sr.message(T).await;
            if m.topic() == t2 && &m.payload()[..] == b"end" {
                break;
            }
            let n = parse_num(m.payload());
            if m.topic() == t1 {
                q1.push(n)
            } else {
                q2.push(n)
            }
        }
        let dups1 = check_sequence("QoS 1", &q1, N, false);
        check_sequence("QoS 2", &q2, N, true);
        eprintln!("{id}: {hits} resets, QoS 1 duplicates {dups1}");
    });
}

fn complete(got: &[u32], n: u32) -> bool {
    if got.len() < n as usize {
        return false;
    }
    let mut seen = vec![false; n as usize];
    got.iter().for_each(|&x| seen[x as usize] = true);
    seen.iter().all(|&s| s)
}

#[test]
fn resets_every_second_while_subscribed_persistent_v5() {
    resets_while_subscribed(ProtocolVersion::V5);
}

#[test]
fn resets_every_second_while_subscribed_persistent_v311() {
    resets_while_subscribed(ProtocolVersion::V311);
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Traffic {
    /// Nothing but keep-alive traffic.
    Idle,
    /// A publisher that only sends (QoS 0 every 50 ms): it must still notice the dead path,
    /// because a PINGREQ is also due when nothing was *received* for a keep-alive.
    SendOnly,
}

async fn blackhole_case(broker: &Mosquitto, v: ProtocolVersion, traffic: Traffic) {
    let proxy = proxy_to(broker.addr()).await;
    let h = proxy.handle();
    let id = uid(&format!("bh-{}-{traffic:?}", vname(v)));
    let b = fast(&url_of(proxy.local_addr()), v, &id)
        .keep_alive(Duration::from_secs(1))
        .connect_timeout(ms(700));
    let (c, mut r) = start(b, &id);
    let up = r.connected(T).await;
    let Lifecycle::Connected { granted, .. } = &up.event else {
        unreachable!()
    };
    assert_eq!(granted.keep_alive, Duration::from_secs(1), "{id}");
    let sender = (traffic == Traffic::SendOnly).then(|| {
        let c = c.clone();
        let topic = format!("bh/{id}");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ms(50));
            loop {
                tick.tick().await;
                // Not awaited: after the loss these wait in the offline queue.
                let c = c.clone();
                let t = topic.clone();
                tokio::spawn(async move { c.publish(t, "x").await });
            }
        })
    });
    // Let a ping round trip happen, then cut the path in the middle of the cycle.
    tokio::time::sleep(ms(1300)).await;
    let blackhole = Duration::from_secs(3);
    let cut = std::time::SystemTime::now();
    let cut_i = Instant::now();
    h.blackhole(Some(blackhole));
    let lost = r
        .next("ConnectionLost", ms(2500), |e| {
            matches!(e, Lifecycle::ConnectionLost { .. })
        })
        .await;
    let Lifecycle::ConnectionLost { reason, .. } = &lost.event else {
        unreachable!()
    };
    assert!(
        matches!(reason, Reason::KeepAliveTimeout(d) if *d == ms(500)),
        "{id}: {reason:?}"
    );
    assert_eq!(reason.initiator(), steadfast::Initiator::Library);
    let took = lost.at.duration_since(cut).unwrap_or_default();
    assert!(
        took <= ms(1500 + 350),
        "{id}: dead path noticed after {took:?}"
    );
    // Attempts during the blackhole time out (nothing comes back) ...
    let failed = r
        .next("ConnectFailed", T, |e| {
            matches!(e, Lifecycle::ConnectFailed { .. })
        })
        .await;
    let Lifecycle::ConnectFailed { reason, .. } = failed.event else {
        unreachable!()
    };
    assert_eq!(reason, Reason::ConnectTimeout(ms(700)));
    // ... and once it clears the client connects again by itself.
    let conn = r.connected(T).await;
    assert!(
        conn.seen >= cut_i + blackhole - ms(50),
        "{id}: connected during the blackhole?"
    );
    let after = conn.seen.duration_since(cut_i + blackhole);
    // At worst: an attempt started just before the end times out (0.7 s), then the backoff
    // delay (<= 0.5 s), then a connect.
    assert!(
        after <= ms(700 + 500 + 500),
        "{id}: reconnected {after:?} after the blackhole ended"
    );
    // The CONNECTs of the attempts that timed out were held by the blackhole too, and reach
    // the broker when it ends: such a late CONNECT with our client id may take the session
    // over once more, and the client reconnects again by itself.
    wait_state(&c, "Connected", T, |s| s == State::Connected).await;
    if let Some(s) = sender {
        s.abort();
    }
}

/// A blackholed path is detected by keep-alive (1 s): `ConnectionLost` with a keep-alive
/// timeout within 1.5 x keep-alive (+ scheduling slack) of the blackhole's start, then a
/// reconnect once the blackhole clears. Idle clients and publishers that only send, in both
/// versions. (A keep-alive imposed by the broker is in `engine_fake`: Mosquitto's
/// `max_keepalive` cannot go below 10 s.)
#[test]
fn blackhole_detected_by_keep_alive_then_reconnect() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto();
        tokio::join!(
            blackhole_case(&broker, ProtocolVersion::V5, Traffic::Idle),
            blackhole_case(&broker, ProtocolVersion::V311, Traffic::Idle),
            blackhole_case(&broker, ProtocolVersion::V5, Traffic::SendOnly),
            blackhole_case(&broker, ProtocolVersion::V311, Traffic::SendOnly),
        );
    });
}

/// "Server busy" (0x89) and "connection rate exceeded" (0x9F) refusals: the client retries,
/// the Reconnecting delays are >= max/4 and grow, and it eventually connects. (MQTT 3.1.1 has
/// no such codes: the proxy's return code 3, server unavailable, is retried as transient.)
#[test]
fn busy_broker_codes_back_off_and_eventually_connect() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto();
        let cases = [
            (ProtocolVersion::V5, 0x89u8),
            (ProtocolVersion::V5, 0x9F),
            (ProtocolVersion::V311, 0x89),
        ];
        let runs = cases.map(|(v, rc)| {
            let broker = &broker;
            async move {
                let proxy = proxy_to(broker.addr()).await;
                let h = proxy.handle();
                h.reject_next_connects(3, rc);
                let id = uid(&format!("busy-{}-{rc:x}", vname(v)));
                let (_c, mut r) = start(fast(&url_of(proxy.local_addr()), v, &id), &id);
                let conn = r.connected(T).await;
                let Lifecycle::Connected { attempt, .. } = conn.event else {
                    unreachable!()
                };
                assert_eq!(attempt, 4, "connected on attempt {attempt}");
                let recs = r.records();
                let mut codes = Vec::new();
                let mut delays = Vec::new();
                for e in &recs {
                    match &e.event {
                        Lifecycle::ConnectFailed {
                            reason: Reason::Refused { code, .. },
                            ..
                        } => codes.push(*code),
                        Lifecycle::Reconnecting { delay, .. } => delays.push(*delay),
                        _ => {}
                    }
                }
                assert_eq!(delays.len(), 3, "{recs:?}");
                let stats = h.stats();
                assert_eq!((stats.connects_seen, stats.rejected), (4, 3));
                if v == ProtocolVersion::V5 {
                    let want = if rc == 0x89 {
                        ReasonCode::ServerBusy
                    } else {
                        ReasonCode::ConnectionRateExceeded
                    };
                    assert_eq!(codes, vec![want; 3]);
                    // max 500 ms: at least 125 ms, and growing (125 -> 250 -> 500 floors).
                    assert!(delays.iter().all(|d| *d >= ms(125)), "{delays:?}");
                    assert!(
                        delays.windows(2).all(|w| w[1] >= w[0]),
                        "delays must grow: {delays:?}"
                    );
                    assert!(delays[2] > delays[0], "{delays:?}");
                    assert!(
                        delays[1] >= ms(250) && delays[2] >= ms(500),
                        "floor doubles: {delays:?}"
                    );
                    // The proxy saw the CONNECTs that far apart.
                    let g = gaps(&stats.connect_times);
                    for (gap, d) in g.iter().zip(&delays) {
                        assert!(
                            *gap >= *d - ms(5),
                            "CONNECTs {gap:?} apart, delay was {d:?}"
                        );
                    }
                } else {
                    assert_eq!(codes, vec![ReasonCode::ServerUnavailable; 3]);
                    assert!(
                        delays.iter().all(|d| *d >= ms(50) && *d <= ms(500)),
                        "{delays:?}"
                    );
                }
            }
        });
        let [a, b, c] = runs;
        tokio::join!(a, b, c);
    });
}
