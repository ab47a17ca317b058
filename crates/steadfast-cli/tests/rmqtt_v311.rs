//! The real-broker proof of the MQTT 3.1.1 in-flight window: rmqtt, with its default of 16
//! unreleased inbound QoS 2 messages per client, closes a 3.1.1 connection that sends a 17th
//! ("Inflight window is full"); 3.1.1 cannot announce that limit. `steadfast pub -l` with 200
//! QoS 2 lines must finish on one connection, and the subscriber must get each line once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use steadfast::{ClientBuilder, ClientEvent, ProtocolVersion, QoS};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");
const T: Duration = Duration::from_secs(30);
const N: usize = 200;

/// rmqtt on a free loopback port with its default listener limits (max_inflight 16).
async fn rmqtt() -> SocketAddr {
    let scx = ServerContext::new().build().await;
    let listener = Builder::new()
        .name("test/tcp")
        .laddr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .nodelay(true)
        .bind()
        .expect("bind rmqtt");
    let addr = listener.local_addr().expect("rmqtt address");
    let listener = listener.tcp().expect("rmqtt listener");
    let server = MqttServer::new(scx)
        .listener_by_id(listener, addr.port())
        .build();
    tokio::spawn(async move {
        let _ = server.run().await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_lines_at_qos2_over_v311_to_rmqtt_complete_once_each() {
    let addr = rmqtt().await;
    let port = addr.port().to_string();
    let topic = format!("w/{}", std::process::id());

    let (sub, mut events) = ClientBuilder::from_url(&format!("mqtt://{addr}"))
        .unwrap()
        .protocol(ProtocolVersion::V311)
        .client_id(format!("w-sub-{}", std::process::id()))
        .build()
        .unwrap();
    tokio::time::timeout(T, sub.subscribe(topic.as_str(), QoS::ExactlyOnce))
        .await
        .expect("subscribe in time")
        .expect("subscribed");

    let mut publisher = Command::new(BIN)
        .args([
            "pub", "-V", "311", "-p", &port, "-q", "2", "-t", &topic, "-l",
        ])
        .args([
            "--events",
            "--reconnect-min",
            "50ms",
            "--reconnect-max",
            "200ms",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn steadfast pub");
    let mut stdin = publisher.stdin.take().unwrap();
    let lines: String = (0..N).map(|i| format!("m{i}\n")).collect();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(T, publisher.wait_with_output())
        .await
        .expect("pub -l finishes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("\"connection_lost\""),
        "the broker never had to cut the connection: {stderr}"
    );

    // An end marker behind the 200 (one publisher, one topic: delivered in order).
    sub.publish(topic.as_str(), QoS::ExactlyOnce, false, "end")
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(T, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no end marker; {} messages so far", seen.len()))
            .expect("events");
        if let ClientEvent::Message(m) = ev {
            let p = String::from_utf8_lossy(&m.payload).into_owned();
            if p == "end" {
                break;
            }
            seen.push(p);
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), N, "lost {}", N - unique.len());
    assert_eq!(seen.len(), N, "{} duplicates", seen.len() - unique.len());
    sub.disconnect().await.unwrap();
}
