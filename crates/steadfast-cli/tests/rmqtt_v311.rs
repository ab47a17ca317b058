//! The real-broker proof of the MQTT 3.1.1 in-flight window: rmqtt, with its default of 16
//! unreleased inbound QoS 2 messages per client, closes a 3.1.1 connection that sends a 17th
//! ("Inflight window is full"); 3.1.1 cannot announce that limit. `steadfast pub -l` with 200
//! QoS 2 lines must finish on one connection, and the subscriber must get each line once.
//!
//! The lines are queued while the broker is unreachable (the fault proxy refuses), so the
//! client sends as many as its window lets it in one burst when the connection comes: without
//! a bounded window that is all 200, and rmqtt cuts the connection every time.
//!
//! Feature `demo` (on by default): the embedded broker.
#![cfg(feature = "demo")]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::net::Builder;
use rmqtt::server::MqttServer;
use steadfast::Message;
use steadfast::{ClientBuilder, ClientEvent, ProtocolVersion, QoS};
use steadfast_chaos::Proxy;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], 0)), addr)
        .await
        .expect("proxy");
    let h = proxy.handle();
    h.refuse(None);
    let port = proxy.local_addr().port().to_string();
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
    // Two refused attempts after the input was handed over: the lines wait in the queue.
    let mut err = BufReader::new(publisher.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    let mut refused = 0;
    while refused < 2 {
        let line = tokio::time::timeout(T, err.next_line())
            .await
            .expect("connect attempts")
            .unwrap()
            .expect("stderr open");
        refused += usize::from(line.contains("\"connect_failed\""));
        stderr.push_str(&line);
        stderr.push('\n');
    }
    h.clear();
    let status = tokio::time::timeout(T, async {
        while let Ok(Some(line)) = err.next_line().await {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        publisher.wait().await
    })
    .await
    .unwrap_or_else(|_| panic!("pub -l did not finish: {stderr}"))
    .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("\"connection_lost\""),
        "the broker never had to cut the connection: {stderr}"
    );

    // An end marker behind the 200 (one publisher, one topic: delivered in order).
    sub.send(Message::new(topic.as_str(), "end").qos(QoS::ExactlyOnce))
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(T, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no end marker; {} messages so far", seen.len()))
            .expect("events");
        if let ClientEvent::Message(m) = ev {
            let p = String::from_utf8_lossy(m.payload()).into_owned();
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
