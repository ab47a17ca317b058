//! Keep-alive under an inbound flood, against a real Mosquitto. The test that pins the rule
//! (and fails on a driver that does not fire expired deadlines every turn) is the paused-clock
//! `driver_scripted.rs`: `keep_alive_and_commands_get_their_turn_under_an_inbound_flood`; on
//! this machine a Mosquitto flood does not keep the socket readable long enough to starve the
//! old driver, so this one is the real-broker check that the whole path holds up.

mod support;

use support::*;

/// A subscriber with a 1 s keep-alive under a QoS 0 flood from the broker. It sends nothing
/// but PINGREQ, so Mosquitto drops it after 1.5 s without one: the connection it has at the
/// end must still be its first, and a QoS 0 publish issued mid-flood goes through.
#[test]
fn a_subscriber_under_a_flood_keeps_its_connection() {
    run(Duration::from_secs(60), async {
        let broker = mosquitto();
        let id = uid("flood");
        let topic = format!("flood/{id}");
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let b = fast(&broker.url(), v, &format!("{id}-{}", vname(v)))
                .keep_alive(Duration::from_secs(1));
            let (sub, mut events) = b.build().unwrap();
            sub.subscribe(topic.as_str(), QoS::AtMostOnce)
                .await
                .unwrap();
            // The flood: pre-encoded QoS 0 PUBLISH packets written as fast as the socket
            // takes them, so Mosquitto keeps the subscriber's socket full.
            let addr: std::net::SocketAddr =
                broker.url().trim_start_matches("mqtt://").parse().unwrap();
            let mut connect =
                steadfast_chaos::raw::Connect::v311(&format!("{id}-raw-{}", vname(v)));
            connect.keepalive = 0;
            let (mut raw, _) = steadfast_chaos::raw::RawClient::mqtt_connect(addr, &connect)
                .await
                .unwrap();
            let one = steadfast_chaos::raw::publish(4, &topic, &[b'x'; 512], 0, 0);
            let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 512).collect();
            let flood = tokio::spawn(async move {
                let start = Instant::now();
                let mut sent = 0u64;
                while start.elapsed() < Duration::from_secs(4) {
                    if raw.send(&chunk).await.is_err() {
                        break;
                    }
                    sent += 512;
                }
                sent
            });
            let mut lifecycle = Vec::new();
            let mut got = 0u64;
            let reader = tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    match ev {
                        ClientEvent::Message(_) => got += 1,
                        ClientEvent::Lifecycle { event, .. } => lifecycle.push(event),
                        _ => {}
                    }
                }
                (got, lifecycle)
            });
            // Mid-flood, the subscriber publishes too.
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::time::timeout(
                Duration::from_secs(2),
                sub.publish("flood/other", "mid-flood"),
            )
            .await
            .expect("a QoS 0 publish during the flood completes")
            .unwrap();
            let sent = flood.await.unwrap();
            sub.disconnect().await.unwrap();
            let (got, lifecycle) = reader.await.unwrap();
            let connects = lifecycle
                .iter()
                .filter(|e| matches!(e, Lifecycle::Connected { .. }))
                .count();
            assert_eq!(
                connects,
                1,
                "{}: the flood cost the connection: {lifecycle:?}",
                vname(v)
            );
            assert!(got > 100, "{}: {got} of {sent} messages read", vname(v));
        }
    });
}
