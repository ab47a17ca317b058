//! The client against a real, private Mosquitto that crashes, starts late, refuses
//! credentials, or is unreachable for a while; and the graceful disconnect.

mod support;

use steadfast::DisconnectOptions;
use steadfast::Message;
use support::*;

/// kill -9 and restart of the broker: the client reconnects by itself, resubscribes (the
/// broker lost every session, so even a persistent-session client gets `Resubscribed`), and
/// a message published by another client after the restart arrives.
#[test]
fn broker_kill9_and_restart_restores_subscriptions() {
    run(Duration::from_secs(40), async {
        let mut broker = mosquitto();
        let url = broker.url();
        let port = broker.port();
        let mut clients = Vec::new();
        for v in VERSIONS {
            for persistent_session in [false, true] {
                let id = uid(&format!("k9-{}-{persistent_session}", vname(v)));
                let topic = format!("k9/{id}");
                let mut b = fast(&url, v, &id);
                if persistent_session {
                    b = persistent(b, v);
                }
                let (c, mut r) = start_connected(b, &id).await;
                assert_eq!(
                    c.subscribe(topic.as_str(), QoS::AtLeastOnce).await,
                    Ok(QoS::AtLeastOnce)
                );
                // A stream subscription (routed by subscription identifier in MQTT 5) ...
                let stream = c
                    .subscribe_stream(format!("{topic}/stream"), QoS::AtLeastOnce)
                    .await
                    .unwrap();
                // ... and one that is gone again, so it must not come back.
                c.subscribe(format!("{topic}/gone"), QoS::AtLeastOnce)
                    .await
                    .unwrap();
                c.unsubscribe(format!("{topic}/gone")).await.unwrap();
                r.skip_all();
                clients.push((v, c, r, topic, stream));
            }
        }

        tokio::task::block_in_place(|| broker.kill9());
        for (_, _, r, _, _) in clients.iter_mut() {
            let lost = r
                .next("ConnectionLost", T, |e| {
                    matches!(e, Lifecycle::ConnectionLost { .. })
                })
                .await;
            let Lifecycle::ConnectionLost { reason, .. } = lost.event else {
                unreachable!()
            };
            assert!(matches!(reason, Reason::Transport(_)), "{reason:?}");
            // With the broker gone, at least one attempt fails before the restart.
            r.next("ConnectFailed", T, |e| {
                matches!(e, Lifecycle::ConnectFailed { .. })
            })
            .await;
        }
        tokio::task::block_in_place(|| broker.restart()).expect("restart");

        for (v, c, r, topic, stream) in clients.iter_mut() {
            let conn = r.connected(T).await;
            let Lifecycle::Connected {
                session_present, ..
            } = conn.event
            else {
                unreachable!()
            };
            assert!(
                !session_present,
                "the killed broker cannot have kept a session"
            );
            let resub = r
                .next("Resubscribed", T, |e| {
                    matches!(e, Lifecycle::Resubscribed { .. })
                })
                .await;
            let Lifecycle::Resubscribed { filters, .. } = resub.event else {
                unreachable!()
            };
            let mut filters: Vec<&str> = filters.iter().map(|f| f.as_str()).collect();
            filters.sort();
            let stream_topic = format!("{topic}/stream");
            assert_eq!(filters, vec![topic.as_str(), stream_topic.as_str()]);
            assert_eq!(c.state(), State::Connected);
            // A reference publisher after the restart; repeated until the (asynchronous)
            // resubscription has been processed by the broker.
            let deadline = Instant::now() + T;
            loop {
                mosq_pub(port, *v, topic, "after-restart", 1).await;
                if let Some(m) = r.try_message(ms(300)).await {
                    assert_eq!(m.topic(), topic.as_str());
                    assert_eq!(&m.payload()[..], b"after-restart");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "[{}] no message after the restart",
                    r.tag
                );
            }
            // The stream handle still gets its messages after the resubscription.
            mosq_pub(port, *v, &stream_topic, "to-stream", 1).await;
            let m = tokio::time::timeout(T, stream.recv())
                .await
                .expect("stream message")
                .expect("open");
            assert_eq!(&m.payload()[..], b"to-stream");
        }
    });
}

/// The broker is absent at start: the first connect is retried (ConnectFailed with attempt
/// 1, 2, ...), then the broker starts on that port and the client connects by itself.
#[test]
fn broker_absent_at_start_first_connect_is_retried() {
    run(Duration::from_secs(30), async {
        for v in VERSIONS {
            let port = steadfast_chaos::free_port();
            let url = format!("mqtt://127.0.0.1:{port}");
            let id = uid(&format!("absent-{}", vname(v)));
            let (c, mut r) = start(fast(&url, v, &id), &id);
            // Subscribing before there is any broker: it is sent once connected.
            let topic = format!("absent/{id}");
            let early = {
                let (c, t) = (c.clone(), topic.clone());
                tokio::spawn(async move { c.subscribe(t, QoS::AtLeastOnce).await })
            };
            for n in 1..=3 {
                let f = r
                    .next("ConnectFailed", T, |e| {
                        matches!(e, Lifecycle::ConnectFailed { .. })
                    })
                    .await;
                let Lifecycle::ConnectFailed { attempt, reason } = f.event else {
                    unreachable!()
                };
                assert_eq!(attempt, n);
                assert!(matches!(reason, Reason::Transport(_)), "{reason:?}");
                let rc = r
                    .next("Reconnecting", T, |e| {
                        matches!(e, Lifecycle::Reconnecting { .. })
                    })
                    .await;
                let Lifecycle::Reconnecting { attempt, delay } = rc.event else {
                    unreachable!()
                };
                assert_eq!(attempt, n + 1);
                assert!(
                    delay >= ms(50) && delay <= ms(500),
                    "delay {delay:?} outside the policy's bounds"
                );
            }
            let _broker = mosquitto_with(Mosquitto::builder().port(port));
            let conn = r.connected(T).await;
            let Lifecycle::Connected { attempt, .. } = conn.event else {
                unreachable!()
            };
            assert!(attempt >= 4, "connected on attempt {attempt}");
            // Every attempt before it was announced and failed, numbered 1, 2, ...
            let attempts: Vec<u32> = r
                .events()
                .iter()
                .filter_map(|e| match e {
                    Lifecycle::Connecting { attempt, .. } => Some(*attempt),
                    _ => None,
                })
                .collect();
            assert_eq!(attempts, (1..=attempt).collect::<Vec<_>>());
            assert_eq!(c.state(), State::Connected);
            let granted = tokio::time::timeout(T, early)
                .await
                .expect("SUBACK")
                .unwrap();
            assert_eq!(granted, Ok(QoS::AtLeastOnce));
            c.send(Message::new(topic.as_str(), "hi").qos(QoS::AtLeastOnce))
                .await
                .expect("publish");
            assert_eq!(&r.message(T).await.payload()[..], b"hi");
        }
    });
}

/// Bad credentials: `Fatal` whose reason names "bad user name or password" (MQTT 5 0x86, 3.1.1
/// return code 4 mapped to the same name), state `Failed`, and exactly one CONNECT at the
/// proxy before the verdict. (That no retry follows it is proved on virtual time:
/// `driver_absence::a_fatal_connack_refusal_is_never_retried`.)
///
/// Mosquitto 2.0.11 itself answers a wrong password with 0x87 "not authorized" (return code 5
/// in 3.1.1), which is fatal too and is checked against the real broker; the 0x86 / return
/// code 4 refusal is injected by the proxy in front of the same broker.
#[test]
fn bad_credentials_are_fatal_with_one_attempt() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto_with(Mosquitto::builder().password("alice", "secret"));
        tokio::join!(
            bad_credentials_case(&broker, ProtocolVersion::V5, false),
            bad_credentials_case(&broker, ProtocolVersion::V311, false),
            bad_credentials_case(&broker, ProtocolVersion::V5, true),
            bad_credentials_case(&broker, ProtocolVersion::V311, true),
        );
    });
}

async fn bad_credentials_case(broker: &Mosquitto, v: ProtocolVersion, inject_0x86: bool) {
    let proxy = proxy_to(broker.addr()).await;
    let h = proxy.handle();
    if inject_0x86 {
        h.reject_next_connects(1, 0x86);
    }
    let id = uid(&format!("badpw-{}-{inject_0x86}", vname(v)));
    let b = fast(&url_of(proxy.local_addr()), v, &id).credentials("alice", "wrong");
    let (c, mut r) = start(b, &id);
    let fatal = r
        .next("Fatal", T, |e| matches!(e, Lifecycle::Fatal { .. }))
        .await;
    let Lifecycle::Fatal { reason } = fatal.event else {
        unreachable!()
    };
    let Reason::Refused { code, .. } = &reason else {
        panic!("{reason:?}")
    };
    if inject_0x86 {
        assert_eq!(*code, ReasonCode::BadUserNameOrPassword, "{}", vname(v));
        assert!(
            reason.to_string().contains("bad user name or password"),
            "{reason}"
        );
    } else {
        assert_eq!(*code, ReasonCode::NotAuthorized, "{}", vname(v));
        assert!(reason.to_string().contains("not authorized"), "{reason}");
    }
    // The failed attempt was reported with the same reason before the fatal verdict.
    assert_eq!(
        r.count(|e| matches!(e, Lifecycle::ConnectFailed { attempt: 1, .. })),
        1
    );
    wait_state(&c, "Failed", T, |s| s == State::Failed).await;
    assert_eq!(
        h.stats().connects_seen,
        1,
        "one CONNECT before the fatal verdict"
    );
    assert_eq!(r.count(|e| matches!(e, Lifecycle::Connecting { .. })), 1);
    assert_eq!(r.count(|e| matches!(e, Lifecycle::Reconnecting { .. })), 0);
    assert_eq!(c.state(), State::Failed);
}

/// Publishing while the broker is unreachable queues the messages; they are delivered, in
/// order, after the connection comes back.
#[test]
fn offline_queue_delivers_after_reconnect() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto();
        for v in VERSIONS {
            let proxy = proxy_to(broker.addr()).await;
            let h = proxy.handle();
            let id = uid(&format!("offq-{}", vname(v)));
            let topic = format!("offq/{id}");
            let (_sub, mut sr) =
                start_connected(fast(&broker.url(), v, &format!("{id}-sub")), "sub").await;
            _sub.subscribe(topic.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            let (c, mut r) = start_connected(fast(&url_of(proxy.local_addr()), v, &id), &id).await;

            h.refuse(None);
            assert_eq!(h.reset(), 1);
            r.next("ConnectionLost", T, |e| {
                matches!(e, Lifecycle::ConnectionLost { .. })
            })
            .await;
            r.next("ConnectFailed", T, |e| {
                matches!(e, Lifecycle::ConnectFailed { .. })
            })
            .await;
            let before = h.stats().bytes_up;

            let mut pending = Vec::new();
            for i in 0..20u32 {
                let c = c.clone();
                let t = topic.clone();
                pending.push(tokio::spawn(async move {
                    c.send(Message::new(t, num_payload(i)).qos(QoS::AtLeastOnce))
                        .await
                }));
                // Spawned in order; give each a moment to reach the driver in order.
                tokio::task::yield_now().await;
                tokio::time::sleep(ms(2)).await;
            }
            // Observed: the client is still failing to connect, nothing went upstream, and
            // no publish has completed.
            r.next("another ConnectFailed", T, |e| {
                matches!(e, Lifecycle::ConnectFailed { .. })
            })
            .await;
            assert_ne!(c.state(), State::Connected);
            assert_eq!(h.stats().bytes_up, before);
            assert!(
                pending.iter().all(|p| !p.is_finished()),
                "a publish completed while offline"
            );

            h.clear();
            r.connected(T).await;
            for p in pending {
                let out = tokio::time::timeout(T, p)
                    .await
                    .expect("publish completes")
                    .unwrap();
                assert!(out.is_ok(), "{out:?}");
            }
            for i in 0..20u32 {
                let m = sr.message(T).await;
                assert_eq!(
                    parse_num(m.payload()),
                    i,
                    "offline queue drained out of order"
                );
            }
        }
    });
}

/// `max_attempts` -> `Dormant` after exactly that many attempts (counted at the proxy) ->
/// `wake()` connects. (That a dormant client makes no attempt by itself is proved on virtual
/// time: `driver_absence::a_dormant_client_makes_no_attempt_until_woken`.)
#[test]
fn max_attempts_goes_dormant_and_wake_connects() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto();
        for v in VERSIONS {
            let proxy = proxy_to(broker.addr()).await;
            let h = proxy.handle();
            h.refuse(None);
            let id = uid(&format!("dormant-{}", vname(v)));
            let (c, mut r) = start(
                fast(&url_of(proxy.local_addr()), v, &id).max_attempts(3),
                &id,
            );
            let d = r
                .next("Dormant", T, |e| matches!(e, Lifecycle::Dormant { .. }))
                .await;
            assert_eq!(d.event, Lifecycle::Dormant { attempts: 3 });
            assert_eq!(r.count(|e| matches!(e, Lifecycle::ConnectFailed { .. })), 3);
            wait_state(&c, "Dormant", T, |s| s == State::Dormant).await;
            assert_eq!(h.stats().accepted, 3, "three attempts before Dormant");

            h.clear();
            c.wake();
            let conn = r.connected(T).await;
            let Lifecycle::Connected { attempt, .. } = conn.event else {
                unreachable!()
            };
            assert_eq!(attempt, 1, "wake() resets the attempt count");
            assert_eq!(h.stats().accepted, 4);
        }
    });
}

/// `disconnect()` lets in-flight QoS 1 messages finish, then sends DISCONNECT; the will is
/// not published on a clean disconnect.
#[test]
fn graceful_disconnect_drains_inflight_and_suppresses_will() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto();
        for v in VERSIONS {
            let id = uid(&format!("drain-{}", vname(v)));
            let topic = format!("drain/{id}");
            let will_topic = format!("will/{id}");
            let (sub, mut sr) =
                start_connected(fast(&broker.url(), v, &format!("{id}-sub")), "sub").await;
            sub.subscribe(topic.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            sub.subscribe(will_topic.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();

            // Through a proxy with latency, so the publishes are really in flight.
            let proxy = proxy_to(broker.addr()).await;
            let h = proxy.handle();
            let b = fast(&url_of(proxy.local_addr()), v, &id)
                .will(will_topic.as_str(), "gone", QoS::AtLeastOnce, false, None)
                .drain_timeout(Duration::from_secs(5));
            let (c, mut r) = start_connected(b, &id).await;
            h.delay(ms(150));
            let mut pending = Vec::new();
            for i in 0..20u32 {
                let c = c.clone();
                let t = topic.clone();
                pending.push(tokio::spawn(async move {
                    c.send(Message::new(t, num_payload(i)).qos(QoS::AtLeastOnce))
                        .await
                }));
            }
            eventually("20 publishes sent upstream", T, || h.stats().bytes_up > 100).await;
            assert!(
                pending.iter().all(|p| !p.is_finished()),
                "acks cannot be back before the proxy delay"
            );
            let t0 = Instant::now();
            tokio::time::timeout(T, c.disconnect())
                .await
                .expect("disconnect returns")
                .unwrap();
            assert!(
                t0.elapsed() >= ms(100),
                "disconnect returned before the acks could arrive"
            );
            for p in pending {
                let out = p.await.unwrap();
                assert!(out.is_ok(), "in-flight publish not drained: {out:?}");
            }
            r.next("Disconnected", T, |e| *e == Lifecycle::Disconnected)
                .await;
            assert_eq!(c.state(), State::Closed);
            let mut got = Vec::new();
            for _ in 0..20 {
                let m = sr.message(T).await;
                assert_eq!(m.topic(), topic.as_str());
                got.push(parse_num(m.payload()));
            }
            check_sequence("drained", &got, 20, false);
            // No will: the first message on the will topic is a sentinel published after the
            // disconnect completed.
            mosq_pub(broker.port(), v, &will_topic, "sentinel", 1).await;
            let m = sr.message(T).await;
            assert_eq!(
                (m.topic(), &m.payload()[..]),
                (will_topic.as_str(), &b"sentinel"[..]),
                "the will was published on a clean disconnect"
            );
            drop(proxy);
        }
    });
}

/// MQTT 5: `disconnect_with(reason 0x04)` has the broker publish the will.
#[test]
fn disconnect_with_will_message_publishes_the_will_v5() {
    run(Duration::from_secs(20), async {
        let broker = mosquitto();
        let v = ProtocolVersion::V5;
        let id = uid("will04");
        let will_topic = format!("will/{id}");
        let (sub, mut sr) =
            start_connected(fast(&broker.url(), v, &format!("{id}-sub")), "sub").await;
        sub.subscribe(will_topic.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let b = fast(&broker.url(), v, &id).will(
            will_topic.as_str(),
            "gone",
            QoS::AtLeastOnce,
            false,
            None,
        );
        let (c, mut r) = start_connected(b, &id).await;
        let opts = DisconnectOptions {
            reason: ReasonCode::DisconnectWithWillMessage,
            ..Default::default()
        };
        tokio::time::timeout(T, c.disconnect_with(opts))
            .await
            .unwrap()
            .unwrap();
        r.next("Disconnected", T, |e| *e == Lifecycle::Disconnected)
            .await;
        let m = sr.message(T).await;
        assert_eq!(
            (m.topic(), &m.payload()[..]),
            (will_topic.as_str(), &b"gone"[..])
        );
    });
}

/// With the default `Backpressure` overflow, a publish waiting for room in a full offline
/// queue must not hold up the other commands: `wake()` of a dormant client connects (and the
/// waiting publishes then go out, in order), and `disconnect()` of an unreachable client
/// completes, failing what could not be sent. (Both used to hang: the driver stopped reading
/// commands while a publish was blocked.)
#[test]
fn blocked_publish_does_not_hold_up_wake_or_disconnect() {
    run(Duration::from_secs(40), async {
        let broker = mosquitto();
        for v in VERSIONS {
            let id = uid(&format!("bp-{}", vname(v)));
            let topic = format!("bp/{id}");
            let (sub, mut sr) =
                start_connected(fast(&broker.url(), v, &format!("{id}-sub")), "sub").await;
            sub.subscribe(topic.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            let proxy = proxy_to(broker.addr()).await;
            let h = proxy.handle();
            h.refuse(None);
            let b = fast(&url_of(proxy.local_addr()), v, &id)
                .max_attempts(2)
                .offline_queue(3, 1 << 20)
                .overflow(steadfast::Overflow::Backpressure);
            let (c, mut r) = start(b, &id);
            r.next("Dormant", T, |e| matches!(e, Lifecycle::Dormant { .. }))
                .await;
            let mut pubs = Vec::new();
            for i in 0..5u32 {
                let c = c.clone();
                let t = topic.clone();
                pubs.push(tokio::spawn(async move {
                    c.send(Message::new(t, num_payload(i)).qos(QoS::AtLeastOnce))
                        .await
                }));
                tokio::time::sleep(ms(10)).await;
            }
            h.clear();
            c.wake();
            r.connected(T).await;
            for p in pubs {
                let out = tokio::time::timeout(T, p)
                    .await
                    .expect("publish completes")
                    .unwrap();
                assert!(out.is_ok(), "{out:?}");
            }
            for i in 0..5u32 {
                assert_eq!(parse_num(sr.message(T).await.payload()), i);
            }

            // Unreachable for good: disconnect() still completes.
            let id2 = format!("{id}-2");
            let proxy2 = proxy_to(broker.addr()).await;
            proxy2.handle().refuse(None);
            let b = fast(&url_of(proxy2.local_addr()), v, &id2).offline_queue(3, 1 << 20);
            let (c2, mut r2) = start(b, &id2);
            r2.next("ConnectFailed", T, |e| {
                matches!(e, Lifecycle::ConnectFailed { .. })
            })
            .await;
            let mut pubs = Vec::new();
            for i in 0..5u32 {
                let c = c2.clone();
                let t = topic.clone();
                pubs.push(tokio::spawn(async move {
                    c.send(Message::new(t, num_payload(i)).qos(QoS::AtLeastOnce))
                        .await
                }));
                tokio::time::sleep(ms(10)).await;
            }
            tokio::time::timeout(T, c2.disconnect())
                .await
                .expect("disconnect() hung behind a blocked publish")
                .unwrap();
            r2.next("Disconnected", T, |e| *e == Lifecycle::Disconnected)
                .await;
            for p in pubs {
                let out = tokio::time::timeout(T, p)
                    .await
                    .expect("publish completes")
                    .unwrap();
                assert!(out.is_err(), "nothing could be sent, yet {out:?}");
            }
        }
    });
}

/// `disconnect()` waits for in-flight messages only up to the drain timeout: on a dead path
/// (blackholed) it completes after about `drain_timeout`, failing what was not acknowledged.
#[test]
fn disconnect_drain_is_bounded_by_the_drain_timeout() {
    run(Duration::from_secs(20), async {
        let broker = mosquitto();
        for v in VERSIONS {
            let proxy = proxy_to(broker.addr()).await;
            let h = proxy.handle();
            let id = uid(&format!("draint-{}", vname(v)));
            let b = fast(&url_of(proxy.local_addr()), v, &id).drain_timeout(ms(500));
            let (c, mut r) = start_connected(b, &id).await;
            h.blackhole(None);
            let p = {
                let c = c.clone();
                let t = format!("draint/{id}");
                tokio::spawn(
                    async move { c.send(Message::new(t, "x").qos(QoS::AtLeastOnce)).await },
                )
            };
            tokio::time::sleep(ms(50)).await;
            let t0 = Instant::now();
            tokio::time::timeout(T, c.disconnect())
                .await
                .expect("disconnect returns")
                .unwrap();
            let took = t0.elapsed();
            assert!(
                took >= ms(450) && took <= ms(1500),
                "{}: disconnect took {took:?}",
                vname(v)
            );
            r.next("Disconnected", T, |e| *e == Lifecycle::Disconnected)
                .await;
            let out = tokio::time::timeout(T, p)
                .await
                .expect("publish completes")
                .unwrap();
            assert!(out.is_err(), "not acknowledged, yet {out:?}");
            h.clear();
        }
    });
}

/// An application that stops reading `Events` for a while (here 4 s, keep-alive 1 s) while
/// messages stream in: the client holds input back (bounded memory), yet keeps its ping
/// deadline armed, so it cannot tell a stall this long from a dead link and may reconnect
/// (the paused-clock tests in driver_scripted.rs pin both sides of that rule). Whatever
/// happens to the link, nothing is lost and nothing is delivered twice: what the client held
/// undecoded was not acknowledged, so the broker sends it again on the resumed session.
#[test]
fn a_stalled_consumer_loses_nothing_and_gets_nothing_twice() {
    run(Duration::from_secs(90), async {
        let broker = mosquitto();
        let id = uid("slow");
        let topic = format!("slow/{id}");
        let v = ProtocolVersion::V5;
        let b = persistent(fast(&broker.url(), v, &id), v).keep_alive(Duration::from_secs(1));
        let (c, mut events) = b.build().unwrap();
        c.subscribe(topic.as_str(), QoS::ExactlyOnce).await.unwrap();
        let (p, _pr) = start_connected(fast(&broker.url(), v, &format!("{id}-pub")), "pub").await;
        let n = 1000u32;
        for i in 0..n {
            let (p, t) = (p.clone(), topic.clone());
            tokio::spawn(async move {
                let mut payload = num_payload(i).into_bytes();
                payload.resize(1000, b' ');
                p.send(Message::new(t, payload).qos(QoS::ExactlyOnce)).await
            });
        }
        // The application is busy elsewhere for a while.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut got = Vec::new();
        let mut distinct = std::collections::HashSet::new();
        while distinct.len() < n as usize {
            match tokio::time::timeout(T, events.recv()).await {
                Ok(Some(ClientEvent::Message(m))) => {
                    let x = parse_num(m.payload());
                    distinct.insert(x);
                    got.push(x);
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        check_sequence("stalled consumer", &got, n, true);
        c.wait_for_state(|s| s == State::Connected).await;
    });
}
