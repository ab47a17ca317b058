//! Interoperability cases that depend on a broker refusing a message by closing the
//! connection, which the client survives through poison-message detection (a message that was
//! the oldest unacknowledged one when the connection closed 3 times in a row is failed back)
//! and, for MQTT 3.1.1, through its own bounded in-flight window.
//!
//! - NATS closes the connection on every QoS 2 PUBLISH ("publish QoS=2 not supported").
//! - rmqtt allows 16 unreleased inbound QoS 2 messages per client by default (the demo's broker,
//!   which these tests run as `steadfast broker`, sets 64; 40 at once already pass); on MQTT
//!   3.1.1, which cannot announce that limit, it closes the connection of a client that sends
//!   more, and the client resends them all on the next connection: a loop unless the client's
//!   own 3.1.1 in-flight window is at most the broker's limit.

#[path = "../../steadfast/tests/support/mod.rs"]
mod support;

use steadfast::Message;
use steadfast_chaos::brokers::BrokerProcess;
use support::*;

#[cfg(feature = "demo")]
const BIN: &str = env!("CARGO_BIN_EXE_steadfast");

fn up(start: impl FnOnce() -> std::io::Result<BrokerProcess>) -> BrokerProcess {
    tokio::task::block_in_place(start).unwrap_or_else(|e| panic!("cannot start the broker: {e}"))
}

/// A QoS 2 publish to NATS (which closes the connection on every one) is failed back as a
/// poison message, not resent for ever; afterwards the client is connected and a QoS 1 publish goes through.
#[test]
fn nats_qos2_publish_is_failed_back() {
    run(Duration::from_secs(60), async {
        let broker = up(BrokerProcess::nats);
        let v = ProtocolVersion::V311;
        let topic = format!("interop/{}", uid("nats-q2"));
        let (c, r) = start_connected(fast(&broker.url(), v, &uid("nats-q2")), "pub").await;
        let res = tokio::time::timeout(
            Duration::from_secs(30),
            c.send(Message::new(topic.as_str(), "two").qos(QoS::ExactlyOnce)),
        )
        .await;
        let Ok(res) = res else {
            r.panic_with_log("the QoS 2 publish did not resolve within 30 s")
        };
        assert!(
            matches!(
                res,
                Err(steadfast::ClientError::Publish(
                    steadfast::PublishError::Poison { .. }
                ))
            ),
            "a QoS 2 publish to NATS must be failed back as a poison message: {res:?}"
        );
        wait_state(&c, "Connected", T, |s| s == State::Connected).await;
        if let Err(e) = c
            .send(Message::new(topic.as_str(), "one").qos(QoS::AtLeastOnce))
            .await
        {
            r.panic_with_log(&format!("QoS 1 after the failed QoS 2: {e}"));
        }
        let _ = c.disconnect().await;
    });
}

/// 150 QoS 2 messages published at once over MQTT 3.1.1 to rmqtt (`steadfast broker` allows 64
/// unreleased): every publish resolves Ok, the publisher's connection is never closed, and the
/// subscriber gets each message exactly once.
#[cfg(feature = "demo")]
#[test]
fn rmqtt_v311_qos2_burst_beyond_the_broker_limit() {
    run(Duration::from_secs(60), async {
        let broker = up(|| {
            BrokerProcess::command("rmqtt (steadfast broker)", BIN, |port| {
                vec!["broker".into(), "--port".into(), port.to_string()]
            })
        });
        let v = ProtocolVersion::V311;
        let url = broker.url();
        let topic = format!("interop/{}", uid("rmqtt-q2"));
        let (sub, mut rs) = start_connected(fast(&url, v, &uid("rmqtt-q2-sub")), "sub").await;
        sub.subscribe(topic.as_str(), QoS::ExactlyOnce)
            .await
            .unwrap();
        let (publ, rp) = start_connected(fast(&url, v, &uid("rmqtt-q2-pub")), "pub").await;
        const N: u32 = 150;
        let sends: Vec<_> = (0..N)
            .map(|i| {
                let (c, t) = (publ.clone(), topic.clone());
                tokio::spawn(async move {
                    c.send(Message::new(t, num_payload(i)).qos(QoS::ExactlyOnce))
                        .await
                })
            })
            .collect();
        for (i, s) in sends.into_iter().enumerate() {
            match s.await {
                Ok(Ok(_)) => {}
                other => rp.panic_with_log(&format!("publish {i}: {other:?}")),
            }
        }
        let mut got = Vec::new();
        while got.len() < N as usize {
            got.push(parse_num(rs.message(T).await.payload()));
        }
        check_sequence("rmqtt 3.1.1 QoS 2 burst", &got, N, true);
        assert_eq!(
            rp.count(|e| matches!(e, Lifecycle::ConnectionLost { .. })),
            0,
            "the broker closed the publisher's connection"
        );
        let _ = publ.disconnect().await;
        let _ = sub.disconnect().await;
    });
}
