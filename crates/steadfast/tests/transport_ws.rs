//! `ws://` and `wss://` through a WebSocket-to-TCP bridge in front of a private Mosquitto
//! (Mosquitto here cannot listen on WebSockets): round trips, large and many small packets,
//! and reconnection after the broker or the bridge goes away.

mod transport_support;

use std::time::Duration;

use steadfast::{ClientBuilder, Constant, Lifecycle, QoS};
use transport_support::*;

fn quick(b: ClientBuilder) -> ClientBuilder {
    b.backoff(Constant::new(Duration::from_millis(100)))
        .connect_timeout(Duration::from_secs(5))
        .keep_alive(Duration::from_secs(5))
}

/// Publishes a few messages (one large, so that a packet spans many reads, and a burst of
/// small ones, so that one frame or read holds several packets) and checks they all arrive.
async fn round_trip(sub_url: &str, pub_url: &str, ca: Option<&std::path::Path>) {
    let with_ca = |b: ClientBuilder| match ca {
        Some(ca) => b.ca_file(ca),
        None => b,
    };
    let topic = uid("ws/rt");
    let (sub, events) = with_ca(quick(ClientBuilder::from_url(sub_url).unwrap()))
        .build()
        .unwrap();
    let mut sub_log = Log::new(events);
    sub_log.connected().await;
    assert_eq!(
        sub.subscribe(topic.as_str(), QoS::AtLeastOnce).await,
        Ok(QoS::AtLeastOnce)
    );

    let (publisher, events) = with_ca(quick(ClientBuilder::from_url(pub_url).unwrap()))
        .build()
        .unwrap();
    Log::new(events).connected().await;
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    publisher
        .publish(topic.as_str(), QoS::AtLeastOnce, false, big.clone())
        .await
        .unwrap();
    let small: Vec<_> = (0..50)
        .map(|i| publisher.publish(topic.as_str(), QoS::AtLeastOnce, false, format!("m{i}")))
        .collect();
    for r in futures_util::future::join_all(small).await {
        r.unwrap();
    }
    assert_eq!(sub_log.message(&topic).await, big);
    for i in 0..50 {
        assert_eq!(sub_log.message(&topic).await, format!("m{i}").into_bytes());
    }
    publisher.disconnect().await.unwrap();
    sub.disconnect().await.unwrap();
}

#[test]
fn ws_publish_subscribe_round_trip() {
    run(Duration::from_secs(30), async {
        let broker = tcp_broker();
        let bridge = WsBridge::start(0, broker.addr(), None).await;
        // The default path is /mqtt (the bridge refuses any other); the explicit one too.
        round_trip(
            &format!("ws://127.0.0.1:{}", bridge.port),
            &format!("ws://localhost:{}/mqtt", bridge.port),
            None,
        )
        .await;
    });
}

#[test]
fn wss_publish_subscribe_round_trip() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tcp_broker();
        let bridge = WsBridge::start(0, broker.addr(), Some(tls_server_config(&pki.server))).await;
        round_trip(
            &format!("wss://127.0.0.1:{}/mqtt", bridge.port),
            &format!("wss://localhost:{}", bridge.port),
            Some(&pki.ca),
        )
        .await;
    });
}

#[test]
fn wss_with_expired_certificate_is_fatal() {
    run(Duration::from_secs(30), async {
        let pki = Pki::generate();
        let broker = tcp_broker();
        let bridge = WsBridge::start(0, broker.addr(), Some(tls_server_config(&pki.expired))).await;
        let (client, events) =
            quick(ClientBuilder::from_url(&format!("wss://127.0.0.1:{}", bridge.port)).unwrap())
                .ca_file(&pki.ca)
                .build()
                .unwrap();
        let mut log = Log::new(events);
        let fatal = log
            .lifecycle("Fatal", T, |e| matches!(e, Lifecycle::Fatal { .. }))
            .await;
        assert!(
            format!("{fatal:?}").contains("certificate expired"),
            "{fatal:?}"
        );
        log.drain_for(Duration::from_millis(800)).await;
        assert_eq!(log.attempts(), 1, "{}", log.dump());
        assert_eq!(client.state(), steadfast::State::Failed);
    });
}

#[test]
fn ws_wrong_path_fails_and_is_retried() {
    run(Duration::from_secs(30), async {
        let broker = tcp_broker();
        let bridge = WsBridge::start(0, broker.addr(), None).await;
        let (client, events) = quick(
            ClientBuilder::from_url(&format!("ws://127.0.0.1:{}/other", bridge.port)).unwrap(),
        )
        .build()
        .unwrap();
        let mut log = Log::new(events);
        let failed = log
            .lifecycle("ConnectFailed", T, |e| {
                matches!(e, Lifecycle::ConnectFailed { .. })
            })
            .await;
        let text = format!("{failed:?}");
        assert!(text.contains("HTTP 400"), "{text}");
        // Not fatal: the next attempt comes.
        log.lifecycle("second attempt", T, |e| {
            matches!(e, Lifecycle::Connecting { attempt: 2, .. })
        })
        .await;
        client.disconnect().await.unwrap();
    });
}

/// ws://: the broker behind the bridge is killed and restarted; wss://: the bridge itself is
/// dropped and started again on the same port. Either way the client reconnects by itself,
/// resubscribes, and a message published after the restart arrives.
#[test]
fn reconnects_and_resubscribes_over_ws_and_wss() {
    run(Duration::from_secs(60), async {
        let pki = Pki::generate();
        let mut broker = tcp_broker();
        let ws_bridge = WsBridge::start(0, broker.addr(), None).await;
        let tls = tls_server_config(&pki.server);
        let mut wss_bridge = WsBridge::start(0, broker.addr(), Some(tls.clone())).await;
        let ws_url = format!("ws://127.0.0.1:{}", ws_bridge.port);
        let wss_url = format!("wss://127.0.0.1:{}", wss_bridge.port);

        let topic = uid("ws/k9");
        let mut clients = Vec::new();
        for u in [&ws_url, &wss_url] {
            let (c, events) = quick(ClientBuilder::from_url(u).unwrap())
                .ca_file(&pki.ca)
                .build()
                .unwrap();
            let mut log = Log::new(events);
            log.connected().await;
            assert_eq!(
                c.subscribe(topic.as_str(), QoS::AtLeastOnce).await,
                Ok(QoS::AtLeastOnce)
            );
            clients.push((c, log));
        }

        // The broker crashes: both lose their connection (the wss bridge's upstream is gone too).
        tokio::task::block_in_place(|| broker.kill9());
        for (_, log) in clients.iter_mut() {
            log.lifecycle("ConnectionLost", T, |e| {
                matches!(e, Lifecycle::ConnectionLost { .. })
            })
            .await;
            log.lifecycle("ConnectFailed", T, |e| {
                matches!(e, Lifecycle::ConnectFailed { .. })
            })
            .await;
        }
        tokio::task::block_in_place(|| broker.restart()).expect("restart");
        for (c, log) in clients.iter_mut() {
            log.connected().await;
            log.lifecycle("Resubscribed", T, |e| {
                matches!(e, Lifecycle::Resubscribed { .. })
            })
            .await;
            log.sync(c, &topic).await;
        }
        let publish = |payload: &'static str| {
            let topic = topic.clone();
            let url = broker.url();
            async move {
                let (p, events) = quick(ClientBuilder::from_url(&url).unwrap())
                    .build()
                    .unwrap();
                Log::new(events).connected().await;
                p.publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
                p.disconnect().await.unwrap();
            }
        };
        publish("after broker restart").await;
        for (_, log) in clients.iter_mut() {
            log.payload(&topic, b"after broker restart").await;
        }

        // The wss bridge goes away and comes back on the same port.
        let port = wss_bridge.port;
        drop(wss_bridge);
        let (c, log) = &mut clients[1];
        log.lifecycle("ConnectionLost", T, |e| {
            matches!(e, Lifecycle::ConnectionLost { .. })
        })
        .await;
        log.lifecycle("ConnectFailed", T, |e| {
            matches!(e, Lifecycle::ConnectFailed { .. })
        })
        .await;
        wss_bridge = WsBridge::start(port, broker.addr(), Some(tls)).await;
        log.connected().await;
        log.sync(c, &topic).await;
        publish("after bridge restart").await;
        for (_, log) in clients.iter_mut() {
            log.payload(&topic, b"after bridge restart").await;
        }
        for (c, _) in &clients {
            c.disconnect().await.unwrap();
        }
        drop(wss_bridge);
        drop(ws_bridge);
    });
}
