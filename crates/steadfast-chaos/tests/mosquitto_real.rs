//! The test-support Mosquitto launcher, and the proxy in front of a real broker.

use std::io;
use std::process::Stdio;
use std::time::{Duration, Instant};
use steadfast_chaos::fake;
use steadfast_chaos::mosquitto::Mosquitto;
use steadfast_chaos::raw::{self, Connect, RawClient};
use steadfast_chaos::Proxy;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const T: Duration = Duration::from_secs(5);
const SILENCE: Duration = Duration::from_millis(300);

async fn proxy_for(broker: &Mosquitto) -> Proxy {
    Proxy::start("127.0.0.1:0".parse().unwrap(), broker.addr())
        .await
        .unwrap()
}

/// A subscriber straight to the broker, SUBACKed.
async fn direct_sub(broker: &Mosquitto, id: &str, filter: &str) -> RawClient {
    let (mut c, connack) = RawClient::mqtt_connect(broker.addr(), &Connect::v5(id))
        .await
        .unwrap();
    assert_eq!((connack[0], connack[3]), (0x20, 0x00));
    c.send(&raw::subscribe(5, 1, filter, 0)).await.unwrap();
    let suback = c.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(fake::packet_type(&suback), Some(9));
    c
}

/// Reads packets until a PUBLISH; returns (topic, payload).
async fn next_publish(c: &mut RawClient) -> (String, Vec<u8>) {
    loop {
        let f = c.read_frame_timeout(T).await.unwrap().expect("open");
        if fake::packet_type(&f) == Some(3) {
            return parse_publish_v5(&f);
        }
    }
}

/// Topic and payload of a QoS 0 MQTT 5 PUBLISH.
fn parse_publish_v5(f: &[u8]) -> (String, Vec<u8>) {
    let mut i = 1;
    while f[i] & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let tl = usize::from(u16::from_be_bytes([f[i], f[i + 1]]));
    let topic = String::from_utf8(f[i + 2..i + 2 + tl].to_vec()).unwrap();
    let mut j = i + 2 + tl;
    if (f[0] >> 1) & 3 > 0 {
        j += 2;
    }
    let props = usize::from(f[j]); // short property blocks only
    j += 1 + props;
    (topic, f[j..].to_vec())
}

#[test]
fn mosquitto_lifecycle_kill_restart_stop() {
    let mut b = Mosquitto::start().unwrap();
    assert_eq!(b.url(), format!("mqtt://127.0.0.1:{}", b.port()));
    assert_ne!(b.port(), 1883);
    assert!(b.is_running());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut c, connack) = RawClient::mqtt_connect(b.addr(), &Connect::v311("life"))
            .await
            .unwrap();
        assert_eq!(&connack[..], &[0x20, 0x02, 0x00, 0x00]);
        b.kill9();
        assert!(!b.is_running());
        // The client's connection died with the broker.
        assert!(c.read_frame_timeout(T).await.unwrap_or(None).is_none());
        let e = RawClient::connect(b.addr()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let port = b.port();
        b.restart().unwrap();
        assert_eq!(b.port(), port);
        assert!(b.is_running());
        let (_c, connack) = RawClient::mqtt_connect(b.addr(), &Connect::v5("again"))
            .await
            .unwrap();
        assert_eq!(connack[3], 0x00);
    });
    b.stop();
    assert!(!b.is_running());
    assert!(b.log().contains("mosquitto version"));
}

#[test]
fn parallel_brokers_get_distinct_ports() {
    let brokers: Vec<Mosquitto> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| Mosquitto::start().unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = brokers.iter().map(|b| b.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    for b in brokers {
        assert!(std::net::TcpStream::connect(b.addr()).is_ok());
    }
}

#[test]
fn taken_port_is_reported_with_the_log() {
    let first = Mosquitto::start().unwrap();
    let e = Mosquitto::builder().port(first.port()).start().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("Address already in use"), "{msg}");
}

#[test]
fn starts_even_when_the_log_goes_elsewhere() {
    let b = Mosquitto::builder()
        .extra_config("log_dest none")
        .start()
        .unwrap();
    assert!(std::net::TcpStream::connect(b.addr()).is_ok());
}

#[tokio::test]
async fn password_file_and_no_anonymous() {
    let b = Mosquitto::builder()
        .password("alice", "secret")
        .password("bob", "hunter2")
        .start()
        .unwrap();
    let try_connect = |c: Connect| {
        let addr = b.addr();
        async move { RawClient::mqtt_connect(addr, &c).await.unwrap().1 }
    };
    assert_eq!(
        try_connect(Connect::v5("a").credentials("alice", "secret")).await[3],
        0x00
    );
    assert_eq!(
        try_connect(Connect::v5("b").credentials("bob", "hunter2")).await[3],
        0x00
    );
    // Mosquitto 2.0.11 answers a wrong password with "not authorized".
    assert_eq!(
        try_connect(Connect::v5("c").credentials("alice", "nope")).await[3],
        0x87
    );
    assert_eq!(
        try_connect(Connect::v311("d").credentials("alice", "nope")).await[3],
        5
    );
    assert_eq!(try_connect(Connect::v5("e")).await[3], 0x87);
    assert_eq!(try_connect(Connect::v311("f")).await[3], 5);
}

#[tokio::test]
async fn persistence_keeps_sessions_across_stop_and_restart() {
    let mut b = Mosquitto::builder()
        .persistence(true)
        .extra_config("autosave_interval 0")
        .start()
        .unwrap();
    let durable = Connect {
        clean: false,
        ..Connect::v311("durable")
    };
    let (mut c, _) = RawClient::mqtt_connect(b.addr(), &durable).await.unwrap();
    c.send(&raw::subscribe(4, 1, "keep/#", 1)).await.unwrap();
    assert_eq!(
        fake::packet_type(&c.read_frame_timeout(T).await.unwrap().unwrap()),
        Some(9)
    );
    c.send(&raw::disconnect()).await.unwrap();
    assert!(c.read_frame_timeout(T).await.unwrap().is_none());
    let (mut p, _) = RawClient::mqtt_connect(b.addr(), &Connect::v311("pub"))
        .await
        .unwrap();
    p.send(&raw::publish(4, "keep/x", b"stored", 1, 7))
        .await
        .unwrap();
    assert_eq!(
        fake::packet_type(&p.read_frame_timeout(T).await.unwrap().unwrap()),
        Some(4)
    );
    b.stop();
    b.restart().unwrap();
    let (mut c, connack) = RawClient::mqtt_connect(b.addr(), &durable).await.unwrap();
    assert_eq!(&connack[..], &[0x20, 0x02, 0x01, 0x00], "session present");
    let f = c.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(fake::packet_type(&f), Some(3));
    assert!(f.ends_with(b"stored"));
}

#[tokio::test]
async fn pubsub_through_proxy_and_reset_fires_the_will() {
    let b = Mosquitto::start().unwrap();
    let proxy = proxy_for(&b).await;
    let h = proxy.handle();
    let mut watcher = direct_sub(&b, "watcher", "#").await;
    let connect = Connect::v5("victim").will("wills/victim", b"gone");
    let (mut victim, connack) = RawClient::mqtt_connect(proxy.local_addr(), &connect)
        .await
        .unwrap();
    assert_eq!(connack[3], 0x00);
    victim
        .send(&raw::publish(5, "hello", b"via proxy", 0, 0))
        .await
        .unwrap();
    assert_eq!(
        next_publish(&mut watcher).await,
        ("hello".into(), b"via proxy".to_vec())
    );
    assert_eq!(h.reset(), 1);
    let e = victim.read_frame_timeout(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    // The broker saw the connection drop without DISCONNECT: it sends the will.
    assert_eq!(
        next_publish(&mut watcher).await,
        ("wills/victim".into(), b"gone".to_vec())
    );
}

#[tokio::test]
async fn rejected_connect_never_reaches_mosquitto() {
    let b = Mosquitto::start().unwrap();
    let proxy = proxy_for(&b).await;
    let h = proxy.handle();
    let mut watcher = direct_sub(&b, "watcher", "t").await;
    h.reject_next_connects(1, 0x86);
    let port = proxy.local_addr().port().to_string();
    let run_pub = |id: &'static str, msg: &'static str| {
        let port = port.clone();
        async move {
            let out = Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-V",
                    "5",
                    "-i",
                    id,
                    "-t",
                    "t",
                    "-m",
                    msg,
                ])
                .stdin(Stdio::null())
                .output();
            tokio::time::timeout(T, out).await.unwrap().unwrap()
        }
    };
    let out = run_pub("rejected-pub", "no").await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("bad user name or password"), "{err}");
    let out = run_pub("accepted-pub", "yes").await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        next_publish(&mut watcher).await,
        ("t".into(), b"yes".to_vec())
    );
    let log = b.log();
    assert!(log.contains("accepted-pub"), "{log}");
    assert!(!log.contains("rejected-pub"), "{log}");
    assert_eq!(h.stats().connects_seen, 2);
}

#[tokio::test]
async fn disconnect_injected_into_a_publish_flood_lands_on_a_boundary() {
    let b = Mosquitto::start().unwrap();
    let proxy = proxy_for(&b).await;
    let h = proxy.handle();
    let (mut sub, _) = RawClient::mqtt_connect(proxy.local_addr(), &Connect::v5("flooded"))
        .await
        .unwrap();
    sub.send(&raw::subscribe(5, 1, "flood", 0)).await.unwrap();
    assert_eq!(
        fake::packet_type(&sub.read_frame_timeout(T).await.unwrap().unwrap()),
        Some(9)
    );
    let (mut publisher, _) = RawClient::mqtt_connect(b.addr(), &Connect::v5("flooder"))
        .await
        .unwrap();
    let flood = tokio::spawn(async move {
        let payload = vec![b'x'; 777];
        for _ in 0..4000 {
            if publisher
                .send(&raw::publish(5, "flood", &payload, 0, 0))
                .await
                .is_err()
            {
                break;
            }
        }
        publisher
    });
    let mut received = 0;
    let mut injected = false;
    loop {
        let f = sub.read_frame_timeout(T).await.unwrap();
        let Some(f) = f else { break };
        match fake::packet_type(&f) {
            Some(3) => {
                assert!(!injected || received < 4000);
                assert_eq!(parse_publish_v5(&f).1.len(), 777);
                received += 1;
                if received == 200 {
                    assert_eq!(h.send_disconnect(0x8b), 1);
                    injected = true;
                }
            }
            Some(14) => {
                assert_eq!(&f[..], &[0xe0, 0x02, 0x8b, 0x00]);
                // Nothing after the DISCONNECT but the end of the stream.
                assert!(sub.read_frame_timeout(T).await.unwrap().is_none());
                break;
            }
            other => panic!("unexpected packet type {other:?}"),
        }
    }
    assert!(injected && received >= 200);
    let _ = flood.await;
}

#[tokio::test]
async fn blackhole_holds_a_ping_until_clear() {
    let b = Mosquitto::start().unwrap();
    let proxy = proxy_for(&b).await;
    let h = proxy.handle();
    let (mut c, _) = RawClient::mqtt_connect(proxy.local_addr(), &Connect::v5("quiet"))
        .await
        .unwrap();
    h.blackhole(None);
    c.send(&raw::pingreq()).await.unwrap();
    let e = c.read_frame_timeout(SILENCE).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    h.clear();
    let f = c.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&f[..], &fake::pingresp()[..]);
}

#[tokio::test]
async fn mosquitto_sub_resumes_its_session_after_a_reset() {
    let b = Mosquitto::start().unwrap();
    let proxy = proxy_for(&b).await;
    let h = proxy.handle();
    let (mut p, _) = RawClient::mqtt_connect(b.addr(), &Connect::v5("pub"))
        .await
        .unwrap();
    // Retained, so the subscriber gets it as soon as it subscribes.
    let mut first = raw::publish(5, "news", b"one", 0, 0);
    first[0] |= 0x01;
    p.send(&first).await.unwrap();
    let port = proxy.local_addr().port().to_string();
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "311",
            "-i",
            "resumer",
            "-c",
            "-q",
            "1",
        ])
        .args(["-t", "news", "-C", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(T, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.as_deref(), Some("one"));
    let t0 = Instant::now();
    assert_eq!(h.reset(), 1);
    // Queued in the persistent session while the subscriber is away.
    p.send(&raw::publish(5, "news", b"two", 1, 1))
        .await
        .unwrap();
    let line = tokio::time::timeout(T, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.as_deref(), Some("two"));
    let status = tokio::time::timeout(T, sub.wait()).await.unwrap().unwrap();
    assert!(status.success());
    let s = h.stats();
    assert_eq!(s.connects_seen, 2, "mosquitto_sub reconnected once");
    assert!(s.connect_times[1] > s.connect_times[0]);
    assert!(t0.elapsed() < T);
}
