//! Interoperability with real brokers besides Mosquitto, each started by the test on free
//! loopback ports: NATS (MQTT mode), RabbitMQ (MQTT plugin), rmqtt (the demo's embedded broker,
//! run as `steadfast broker`) and rumqttd. For each: a round trip at every QoS and version it
//! supports, a broker restart with the client reconnecting and resubscribing, session resume
//! with QoS 1 messages queued for an offline subscriber, and its limitations answered with a
//! clear, typed reason. The matrix is in docs/interop.md.
//!
//! A missing broker binary fails the test with a message that says how to install it
//! (`./scripts/test` installs all of them).

#[path = "../../steadfast/tests/support/mod.rs"]
mod support;

use steadfast::Message;
use steadfast::ReasonCode;
use steadfast_chaos::brokers::BrokerProcess;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");

const BOTH: &[ProtocolVersion] = &[ProtocolVersion::V311, ProtocolVersion::V5];
const ALL_QOS: &[QoS] = &[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// Starts a broker (blocking inside the runtime); a missing binary or a failed start is a
/// test failure with the broker's own words.
fn up(start: impl FnOnce() -> std::io::Result<BrokerProcess>) -> BrokerProcess {
    tokio::task::block_in_place(start).unwrap_or_else(|e| panic!("cannot start the broker: {e}"))
}

fn restart(b: &mut BrokerProcess) {
    tokio::task::block_in_place(|| b.restart())
        .unwrap_or_else(|e| panic!("cannot restart {}: {e}", b.name()));
}

/// `steadfast broker` (feature `demo`).
#[cfg(feature = "demo")]
fn rmqtt() -> std::io::Result<BrokerProcess> {
    BrokerProcess::command("rmqtt (steadfast broker)", BIN, |port| {
        vec!["broker".into(), "--port".into(), port.to_string()]
    })
}

/// Runs `steadfast pub` (MQTT 5, its default) against `port`; returns its exit code and
/// stderr. It must end by itself: a refusal is an exit, not a retry loop.
async fn cli_pub_v5(port: u16) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .args([
                "pub",
                "-p",
                &port.to_string(),
                "-t",
                "interop/cli",
                "-m",
                "x",
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("steadfast pub ended by itself")
    .expect("run steadfast pub");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn qos_num(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// How a broker picks the QoS of a delivered message.
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    /// min(published, granted), as MQTT requires.
    Min,
    /// The subscription's granted QoS, whatever the message was published with (rumqttd 0.20:
    /// a QoS 0 message reaches a QoS 2 subscriber as QoS 2).
    Granted,
}

/// Subscribes at QoS 2 and publishes one message at each QoS of `qos`: every publish resolves
/// Ok, the message arrives with its payload at the QoS `delivery` says. Returns the granted
/// QoS so the caller can check what the broker offers.
async fn round_trip(url: &str, v: ProtocolVersion, qos: &[QoS], delivery: Delivery) -> QoS {
    let tag = format!("rt-{}", vname(v));
    let topic = format!("interop/{}", uid(&tag));
    let (sub, mut rs) = start_connected(fast(url, v, &uid(&format!("{tag}-sub"))), "sub").await;
    let granted = sub
        .subscribe(topic.as_str(), QoS::ExactlyOnce)
        .await
        .unwrap_or_else(|e| rs.panic_with_log(&format!("subscribe: {e}")));
    let (publ, rp) = start_connected(fast(url, v, &uid(&format!("{tag}-pub"))), "pub").await;
    for &q in qos {
        let payload = format!("qos{}", qos_num(q));
        if let Err(e) = publ
            .send(Message::new(topic.as_str(), payload.clone()).qos(q))
            .await
        {
            rp.panic_with_log(&format!("{} publish at {q:?}: {e}", vname(v)));
        }
        let m = rs.message(T).await;
        assert_eq!(m.topic(), topic, "{}", vname(v));
        assert_eq!(&m.payload()[..], payload.as_bytes(), "{}", vname(v));
        let expected = match delivery {
            Delivery::Min => qos_num(q).min(qos_num(granted)),
            Delivery::Granted => qos_num(granted),
        };
        assert_eq!(
            qos_num(m.qos()),
            expected,
            "{} delivered QoS of a QoS {q:?} message with {granted:?} granted",
            vname(v)
        );
    }
    let _ = publ.disconnect().await;
    let _ = sub.disconnect().await;
    granted
}

/// A subscriber and a publisher are connected; the broker restarts on the same port. Both
/// notice, reconnect by themselves, the subscriber's filter is live again (resubscribed, or
/// kept by a broker that stores sessions), and QoS 1 messages published after the restart
/// arrive.
async fn restart_and_resubscribe(broker: &mut BrokerProcess, v: ProtocolVersion) {
    let url = broker.url();
    let tag = format!("rs-{}", vname(v));
    let topic = format!("interop/{}", uid(&tag));
    let (sub, mut rs) = start_connected(fast(&url, v, &uid(&format!("{tag}-sub"))), "sub").await;
    sub.subscribe(topic.as_str(), QoS::AtLeastOnce)
        .await
        .unwrap_or_else(|e| rs.panic_with_log(&format!("subscribe: {e}")));
    let (publ, mut rp) = start_connected(fast(&url, v, &uid(&format!("{tag}-pub"))), "pub").await;
    rs.skip_all();
    rp.skip_all();

    restart(broker);

    for r in [&mut rs, &mut rp] {
        r.next("ConnectionLost", T, |e| {
            matches!(e, Lifecycle::ConnectionLost { .. })
        })
        .await;
    }
    let conn = rs.connected(Duration::from_secs(30)).await;
    let Lifecycle::Connected {
        session_present, ..
    } = conn.event
    else {
        unreachable!()
    };
    if !session_present {
        rs.next("Resubscribed", T, |e| {
            matches!(e, Lifecycle::Resubscribed { .. })
        })
        .await;
    }
    rp.connected(Duration::from_secs(30)).await;
    // The SUBACK of the resubscription can reach the client before the broker routes to the
    // new subscription; publish until one arrives.
    let deadline = Instant::now() + T;
    let mut n = 0u32;
    loop {
        n += 1;
        let payload = format!("after-restart-{n}");
        if let Err(e) = publ
            .send(Message::new(topic.as_str(), payload.clone()).qos(QoS::AtLeastOnce))
            .await
        {
            rp.panic_with_log(&format!("publish after the restart: {e}"));
        }
        if let Some(m) = rs.try_message(ms(300)).await {
            assert!(
                m.payload().starts_with(b"after-restart-"),
                "{:?}",
                m.payload()
            );
            break;
        }
        if Instant::now() >= deadline {
            rs.panic_with_log("no message after the broker restart");
        }
    }
    assert_eq!(sub.state(), State::Connected);
    let _ = publ.disconnect().await;
    let _ = sub.disconnect().await;
}

/// A persistent-session subscriber subscribes at QoS 1 and disconnects; five QoS 1 messages
/// are published while it is away; it connects again with the same client id and
/// clean start off: the broker says the session is present and delivers all five, in order.
///
/// `settle` is how long the broker needs after the DISCONNECT before it queues for the
/// offline session: rmqtt hands the session over asynchronously, and a message routed in the
/// first milliseconds after a 3.1.1 DISCONNECT is dropped (about 1 run in 10 without a pause).
async fn session_resume(url: &str, v: ProtocolVersion, settle: Duration) {
    let tag = format!("sr-{}", vname(v));
    let id = uid(&format!("{tag}-sub"));
    let topic = format!("interop/{}", uid(&tag));
    let (sub, rs) = start_connected(persistent(fast(url, v, &id), v), "sub-1").await;
    sub.subscribe(topic.as_str(), QoS::AtLeastOnce)
        .await
        .unwrap_or_else(|e| rs.panic_with_log(&format!("subscribe: {e}")));
    sub.disconnect()
        .await
        .unwrap_or_else(|e| rs.panic_with_log(&format!("disconnect: {e}")));
    drop(sub);
    tokio::time::sleep(settle).await;

    let (publ, rp) = start_connected(fast(url, v, &uid(&format!("{tag}-pub"))), "pub").await;
    for i in 0..5u32 {
        if let Err(e) = publ
            .send(Message::new(topic.as_str(), num_payload(i)).qos(QoS::AtLeastOnce))
            .await
        {
            rp.panic_with_log(&format!("publish {i}: {e}"));
        }
    }

    let b = persistent(fast(url, v, &id), v).clean_start(false);
    let (sub, mut rs) = start(b, "sub-2");
    let conn = rs.connected(T).await;
    let Lifecycle::Connected {
        session_present, ..
    } = conn.event
    else {
        unreachable!()
    };
    assert!(session_present, "[{}] the broker kept no session", vname(v));
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(parse_num(rs.message(T).await.payload()));
    }
    got.dedup();
    assert_eq!(got, vec![0, 1, 2, 3, 4], "{}", vname(v));
    let _ = publ.disconnect().await;
    let _ = sub.disconnect().await;
}

/// The next `Fatal` event's reason.
async fn fatal_reason(r: &mut Recorder) -> Reason {
    let ev = r
        .next("Fatal", Duration::from_secs(20), |e| {
            matches!(e, Lifecycle::Fatal { .. })
        })
        .await;
    let Lifecycle::Fatal { reason } = ev.event else {
        unreachable!()
    };
    reason
}

// ---------------------------------------------------------------------------------------------
// NATS

#[test]
fn nats_round_trip_qos0_qos1() {
    run(Duration::from_secs(60), async {
        let broker = up(BrokerProcess::nats);
        // QoS 2 publishing is not supported (see nats_qos2_publish_is_failed_back, in
        // interop_refusing_brokers.rs); a QoS 2 subscription is granted QoS 1.
        let granted = round_trip(
            &broker.url(),
            ProtocolVersion::V311,
            &[QoS::AtMostOnce, QoS::AtLeastOnce],
            Delivery::Min,
        )
        .await;
        assert_eq!(granted, QoS::AtLeastOnce);
    });
}

#[test]
fn nats_restart_resubscribes() {
    run(Duration::from_secs(90), async {
        let mut broker = up(BrokerProcess::nats);
        restart_and_resubscribe(&mut broker, ProtocolVersion::V311).await;
    });
}

#[test]
fn nats_session_resume() {
    run(Duration::from_secs(60), async {
        let broker = up(BrokerProcess::nats);
        session_resume(&broker.url(), ProtocolVersion::V311, Duration::ZERO).await;
    });
}

/// NATS answers an MQTT 5 CONNECT with return code 1: Fatal, unsupported protocol version,
/// no retry.
#[test]
fn nats_v5_is_fatal_unsupported_protocol_version() {
    run(Duration::from_secs(60), async {
        let broker = up(BrokerProcess::nats);
        let (c, mut r) = start(
            fast(&broker.url(), ProtocolVersion::V5, &uid("nats-v5")),
            "v5",
        );
        let reason = fatal_reason(&mut r).await;
        assert_eq!(
            reason.reason_code(),
            Some(ReasonCode::UnsupportedProtocolVersion),
            "{reason:?}"
        );
        assert_eq!(c.state(), State::Failed);
        assert_eq!(r.count(|e| matches!(e, Lifecycle::Connecting { .. })), 1);

        // The CLI (MQTT 5 by default): one clear line, exit 3 (refused).
        let (code, stderr) = cli_pub_v5(broker.port()).await;
        assert_eq!(code, Some(3), "{stderr}");
        assert!(
            stderr
                .to_lowercase()
                .contains("unsupported protocol version"),
            "{stderr}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ: one node per test takes 5 to 15 s to start, so the cases share nodes.

/// Round trip at QoS 0 and 1; QoS 2: RabbitMQ answers a QoS 2 PUBLISH with PUBACK (it took
/// the message at QoS 1). The publish fails back with `DowngradedToQoS1` instead of a
/// protocol-violation close and a resend loop, the subscriber gets the message at QoS 1, and
/// the publisher stays connected. Then session resume and a restart.
#[test]
fn rabbitmq_round_trip_restart_and_resume() {
    run(Duration::from_secs(180), async {
        let mut broker = up(BrokerProcess::rabbitmq);
        let url = broker.url();
        let v = ProtocolVersion::V311;
        let granted = round_trip(&url, v, &ALL_QOS[..2], Delivery::Min).await;
        assert_eq!(granted, QoS::AtLeastOnce);

        let topic = format!("interop/{}", uid("rabbit-q2"));
        let (sub, mut rs) = start_connected(fast(&url, v, &uid("rabbit-q2-sub")), "sub").await;
        sub.subscribe(topic.as_str(), QoS::ExactlyOnce)
            .await
            .unwrap();
        let (publ, rp) = start_connected(fast(&url, v, &uid("rabbit-q2-pub")), "pub").await;
        let res = publ
            .send(Message::new(topic.as_str(), "two").qos(QoS::ExactlyOnce))
            .await;
        assert_eq!(
            res,
            Err(steadfast::ClientError::Publish(
                steadfast::PublishError::DowngradedToQoS1
            ))
        );
        let m = rs.message(T).await;
        assert_eq!((&m.payload()[..], m.qos()), (&b"two"[..], QoS::AtLeastOnce));
        assert_eq!(publ.state(), State::Connected);
        assert_eq!(
            rp.count(|e| matches!(e, Lifecycle::ConnectionLost { .. })),
            0
        );
        publ.send(Message::new(topic.as_str(), "one").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(&rs.message(T).await.payload()[..], b"one");
        let _ = publ.disconnect().await;
        let _ = sub.disconnect().await;

        session_resume(&broker.url(), ProtocolVersion::V311, Duration::ZERO).await;
        restart_and_resubscribe(&mut broker, ProtocolVersion::V311).await;
    });
}

/// RabbitMQ closes an MQTT 5 CONNECT without a CONNACK. The client reports each attempt as
/// failed because the broker closed before CONNACK (a typed reason that says it may not speak
/// MQTT 5) and, since this server never accepted MQTT 5, goes Fatal instead of looping.
#[test]
fn rabbitmq_v5_closed_before_connack_is_fatal() {
    run(Duration::from_secs(120), async {
        let broker = up(BrokerProcess::rabbitmq);
        let (c, mut r) = start(
            fast(&broker.url(), ProtocolVersion::V5, &uid("rabbit-v5")),
            "v5",
        );
        let failed = r
            .next("ConnectFailed", T, |e| {
                matches!(e, Lifecycle::ConnectFailed { .. })
            })
            .await;
        let Lifecycle::ConnectFailed { reason, .. } = failed.event else {
            unreachable!()
        };
        let text = reason.to_string();
        assert!(text.contains("CONNACK"), "{text}");
        let reason = fatal_reason(&mut r).await;
        assert!(reason.to_string().contains("MQTT 5"), "{reason}");
        assert_eq!(c.state(), State::Failed);
        assert_eq!(
            r.count(|e| matches!(e, Lifecycle::Connecting { .. })),
            steadfast::proto::CLOSED_BEFORE_CONNACK_FATAL as usize
        );

        // The CLI (MQTT 5 by default): exit 3 with a line that says what to do.
        let (code, stderr) = cli_pub_v5(broker.port()).await;
        assert_eq!(code, Some(3), "{stderr}");
        assert!(
            stderr.contains("before CONNACK") && stderr.contains("MQTT 3.1.1"),
            "{stderr}"
        );
    });
}

// ---------------------------------------------------------------------------------------------
// rmqtt (the demo's embedded broker as a process)

#[cfg(feature = "demo")]
#[test]
fn rmqtt_round_trip_all_qos_both_versions() {
    run(Duration::from_secs(60), async {
        let broker = up(rmqtt);
        for &v in BOTH {
            let granted = round_trip(&broker.url(), v, ALL_QOS, Delivery::Min).await;
            assert_eq!(granted, QoS::ExactlyOnce);
        }
    });
}

#[cfg(feature = "demo")]
#[test]
fn rmqtt_restart_resubscribes() {
    run(Duration::from_secs(90), async {
        let mut broker = up(rmqtt);
        for &v in BOTH {
            restart_and_resubscribe(&mut broker, v).await;
        }
    });
}

#[cfg(feature = "demo")]
#[test]
fn rmqtt_session_resume() {
    run(Duration::from_secs(60), async {
        let broker = up(rmqtt);
        for &v in BOTH {
            session_resume(&broker.url(), v, ms(300)).await;
        }
    });
}

// ---------------------------------------------------------------------------------------------
// rumqttd (one listener per protocol version)

#[test]
fn rumqttd_round_trip_all_qos_both_versions() {
    run(Duration::from_secs(60), async {
        for &v in BOTH {
            let broker = up(|| BrokerProcess::rumqttd(v == ProtocolVersion::V5));
            let granted = round_trip(&broker.url(), v, ALL_QOS, Delivery::Granted).await;
            assert_eq!(granted, QoS::ExactlyOnce);
        }
    });
}

#[test]
fn rumqttd_restart_resubscribes() {
    run(Duration::from_secs(90), async {
        for &v in BOTH {
            let mut broker = up(|| BrokerProcess::rumqttd(v == ProtocolVersion::V5));
            restart_and_resubscribe(&mut broker, v).await;
        }
    });
}

#[test]
fn rumqttd_session_resume() {
    run(Duration::from_secs(60), async {
        let broker = up(|| BrokerProcess::rumqttd(false));
        session_resume(&broker.url(), ProtocolVersion::V311, Duration::ZERO).await;
    });
}

/// rumqttd 0.20 keeps no session for MQTT 5 clients (clean start off with a session expiry is
/// answered with session present false). The client notices the loss, resubscribes by itself
/// after the connection is dropped (fault proxy reset), and messages flow again.
#[test]
fn rumqttd_v5_keeps_no_session_and_the_client_resubscribes() {
    run(Duration::from_secs(60), async {
        let v = ProtocolVersion::V5;
        let broker = up(|| BrokerProcess::rumqttd(true));
        let proxy = proxy_to(broker.addr()).await;
        let via = url_of(proxy.local_addr());
        let topic = format!("interop/{}", uid("rumqttd-v5-sess"));
        let b = persistent(fast(&via, v, &uid("rumqttd-v5-sub")), v);
        let (sub, mut rs) = start_connected(b, "sub").await;
        sub.subscribe(topic.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        rs.skip_all();
        proxy.handle().reset();
        let conn = rs.connected(T).await;
        let Lifecycle::Connected {
            session_present, ..
        } = conn.event
        else {
            unreachable!()
        };
        assert!(!session_present, "rumqttd kept an MQTT 5 session after all");
        rs.next("Resubscribed", T, |e| {
            matches!(e, Lifecycle::Resubscribed { .. })
        })
        .await;
        let (publ, _rp) =
            start_connected(fast(&broker.url(), v, &uid("rumqttd-v5-pub")), "pub").await;
        publ.send(Message::new(topic.as_str(), "after").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(&rs.message(T).await.payload()[..], b"after");
        let _ = publ.disconnect().await;
        let _ = sub.disconnect().await;
    });
}
