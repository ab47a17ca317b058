//! Every proxy fault against a scripted fake upstream (and a TCP echo server).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use steadfast_chaos::fake::{self, FakeBroker, FakeConn};
use steadfast_chaos::raw::{self, Connect, RawClient};
use steadfast_chaos::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound for things that must happen.
const T: Duration = Duration::from_secs(5);
/// Window in which something must stay silent.
const SILENCE: Duration = Duration::from_millis(300);

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A client through the proxy, CONNECTed and CONNACKed by the fake broker.
async fn session(proxy: &Proxy, broker: &FakeBroker, level: u8) -> (RawClient, FakeConn) {
    let connect = if level == 5 {
        Connect::v5("c")
    } else {
        Connect::v311("c")
    };
    let mut client = RawClient::connect(proxy.local_addr()).await.unwrap();
    client.send(&connect.to_bytes()).await.unwrap();
    let mut up = broker.accept_timeout(T).await.unwrap();
    let got = up.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(
        &got[..],
        &connect.to_bytes()[..],
        "CONNECT forwarded verbatim"
    );
    let connack = if level == 5 {
        fake::connack_v5(false, 0)
    } else {
        fake::connack_v311(false, 0)
    };
    up.write_all(&connack).await.unwrap();
    let got = client.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&got[..], &connack[..]);
    (client, up)
}

fn assert_silent<T: std::fmt::Debug>(r: io::Result<T>) {
    match r {
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind(any()).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Sends `data` through an echo path and reads it all back; returns the time.
async fn echo_roundtrip(stream: &mut TcpStream, data: &[u8]) -> Duration {
    let t0 = Instant::now();
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(data).await.unwrap();
    };
    let read = async {
        let mut back = vec![0u8; data.len()];
        r.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::time::timeout(T, async { tokio::join!(write, read) })
        .await
        .expect("echo round trip");
    assert!(back == data, "echoed bytes differ");
    t0.elapsed()
}

#[tokio::test]
async fn forwards_transparently_and_counts() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut client, mut up) = session(&proxy, &broker, 5).await;
    client.send(&raw::subscribe(5, 1, "a/b", 1)).await.unwrap();
    let sub = up.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&sub[..], &raw::subscribe(5, 1, "a/b", 1)[..]);
    let big = raw::publish(5, "a/b", &vec![7u8; 200_000], 0, 0);
    up.write_all(&big).await.unwrap();
    let got = client.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got[..] == big[..]);
    let up_bytes = (Connect::v5("c").to_bytes().len() + sub.len()) as u64;
    let down_bytes = (5 + big.len()) as u64;
    let s = h
        .wait_until(T, |s| s.bytes_up == up_bytes && s.bytes_down == down_bytes)
        .await
        .expect("byte counters");
    assert_eq!(s.accepted, 1);
    assert_eq!(s.live, 1);
    assert_eq!(s.connects_seen, 1);
    assert_eq!(s.connect_times.len(), 1);
    // A close from the client is passed on (half-close); once the broker
    // closes too, the connection is gone.
    drop(client);
    up.wait_closed(T).await.unwrap();
    assert_eq!(h.stats().live, 1);
    drop(up);
    assert!(h.wait_until(T, |s| s.live == 0).await.is_some());
}

#[tokio::test]
async fn forwards_non_mqtt_bytes_intact() {
    let proxy = Proxy::start(any(), echo_server().await).await.unwrap();
    let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    echo_roundtrip(&mut s, &data).await;
    assert_eq!(proxy.handle().stats().connects_seen, 0);
    let s = proxy.handle();
    let s = s.wait_until(T, |s| s.bytes_up == 1_000_000 && s.bytes_down == 1_000_000);
    assert!(s.await.is_some(), "byte counters");
}

#[tokio::test]
async fn reset_sends_rst_to_client_and_closes_upstream() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut c1, mut u1) = session(&proxy, &broker, 5).await;
    let (mut c2, mut u2) = session(&proxy, &broker, 4).await;
    assert_eq!(h.reset(), 2);
    for c in [&mut c1, &mut c2] {
        let e = c.read_frame_timeout(T).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }
    u1.wait_closed(T).await.unwrap();
    u2.wait_closed(T).await.unwrap();
    assert!(h.wait_until(T, |s| s.live == 0).await.is_some());
    assert!(h
        .events()
        .iter()
        .any(|e| e.fault == "reset (2 connections)"));
    // New connections are not affected.
    let (_c3, _u3) = session(&proxy, &broker, 5).await;
}

#[tokio::test]
async fn blackhole_silences_live_and_new_connections_until_clear() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut client, mut up) = session(&proxy, &broker, 5).await;
    h.blackhole(None);
    client.send(&raw::pingreq()).await.unwrap();
    up.write_all(&fake::pingresp()).await.unwrap();
    let mut newcomer = RawClient::connect(proxy.local_addr()).await.unwrap();
    newcomer.send(&Connect::v5("new").to_bytes()).await.unwrap();
    let (a, b) = tokio::join!(
        up.read_frame_timeout(SILENCE),
        client.read_frame_timeout(SILENCE)
    );
    assert_silent(a);
    assert_silent(b);
    // The newcomer's connection is open (accepted) but goes nowhere.
    assert_eq!(h.stats().accepted, 2);
    assert_eq!(broker.accept_count(), 1);
    assert_silent(newcomer.read_frame_timeout(Duration::from_millis(50)).await);
    h.clear();
    // Nothing was lost: the held bytes flow both ways.
    let got = up.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&got[..], &raw::pingreq()[..]);
    let got = client.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&got[..], &fake::pingresp()[..]);
    let mut up2 = broker.accept_timeout(T).await.unwrap();
    let got = up2.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(fake::packet_type(&got), Some(1));
}

#[tokio::test]
async fn cut_kills_live_connections_silently_and_lets_new_ones_pass() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut client, mut up) = session(&proxy, &broker, 5).await;
    assert_eq!(h.cut(), 1);
    let before = h.stats();
    client.send(&raw::pingreq()).await.unwrap();
    up.write_all(&fake::pingresp()).await.unwrap();
    let (a, b) = tokio::join!(
        up.read_frame_timeout(SILENCE),
        client.read_frame_timeout(SILENCE)
    );
    // Nothing forwarded, nothing closed: both ends just hear nothing.
    assert_silent(a);
    assert_silent(b);
    let after = h.stats();
    assert_eq!(
        (after.bytes_up, after.bytes_down),
        (before.bytes_up, before.bytes_down)
    );
    // Unlike a blackhole, a cut is for good and only for the connections it found: a new
    // connection passes at once.
    let (mut c2, mut u2) = session(&proxy, &broker, 5).await;
    c2.send(&raw::pingreq()).await.unwrap();
    let got = u2.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&got[..], &raw::pingreq()[..]);
    // The cut connection goes once both of its ends have closed.
    assert_eq!(h.stats().live, 2);
    drop(client);
    drop(up);
    assert!(h.wait_until(T, |s| s.live == 1).await.is_some());
    assert!(h.events().iter().any(|e| e.fault == "cut (1 connection)"));
}

#[tokio::test]
async fn timed_blackhole_ends_by_itself() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut client, mut up) = session(&proxy, &broker, 5).await;
    let mut events = h.subscribe();
    let t0 = Instant::now();
    h.blackhole(Some(Duration::from_millis(400)));
    client.send(&raw::pingreq()).await.unwrap();
    let got = up.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&got[..], &raw::pingreq()[..]);
    assert!(
        t0.elapsed() >= Duration::from_millis(390),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(events.recv().await.unwrap().fault, "blackhole 400ms");
    assert_eq!(events.recv().await.unwrap().fault, "blackhole ended");
}

#[tokio::test]
async fn refuse_resets_new_connections_only() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut client, mut up) = session(&proxy, &broker, 5).await;
    h.refuse(None);
    // The RST may even beat the end of the TCP handshake on the client side.
    let e = match RawClient::connect(proxy.local_addr()).await {
        Err(e) => e,
        Ok(mut refused) => {
            let _ = refused.send(&Connect::v5("r").to_bytes()).await;
            refused.read_frame_timeout(T).await.unwrap_err()
        }
    };
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    assert_eq!(h.stats().refused, 1);
    // The live connection still works.
    client.send(&raw::pingreq()).await.unwrap();
    assert!(up.read_frame_timeout(T).await.unwrap().is_some());
    assert_eq!(broker.accept_count(), 1);
    h.clear();
    let (_c, _u) = session(&proxy, &broker, 5).await;
    assert_eq!(broker.accept_count(), 2);
}

#[tokio::test]
async fn timed_refuse_ends_by_itself() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    h.refuse(Some(Duration::from_millis(300)));
    let t0 = Instant::now();
    // Retry like a client would until a connection gets through.
    let mut attempts = 0;
    let mut clients = Vec::new();
    loop {
        attempts += 1;
        if let Ok(mut c) = RawClient::connect(proxy.local_addr()).await {
            let _ = c.send(&Connect::v5("x").to_bytes()).await;
            clients.push(c);
        }
        if let Ok(mut up) = broker.accept_timeout(Duration::from_millis(50)).await {
            assert!(up.read_frame_timeout(T).await.unwrap().is_some());
            break;
        }
        assert!(t0.elapsed() < T, "refuse never ended");
    }
    assert!(t0.elapsed() >= Duration::from_millis(290));
    assert!(attempts >= 2);
    assert_eq!(h.stats().refused, attempts - 1);
    assert!(h.events().iter().any(|e| e.fault == "refuse ended"));
}

#[tokio::test]
async fn delay_adds_latency_both_ways() {
    let proxy = Proxy::start(any(), echo_server().await).await.unwrap();
    let h = proxy.handle();
    let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let fast = echo_roundtrip(&mut s, b"ping").await;
    h.delay(Duration::from_millis(150));
    let slow = echo_roundtrip(&mut s, b"ping").await;
    assert!(
        slow >= Duration::from_millis(300),
        "{slow:?} (fast was {fast:?})"
    );
    // Latency, not a throughput cap: a burst of chunks takes one delay, not many.
    let t0 = Instant::now();
    let (mut r, mut w) = s.split();
    let writes = async {
        for _ in 0..20 {
            w.write_all(&[1u8; 100]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let reads = async {
        let mut b = vec![0u8; 2000];
        r.read_exact(&mut b).await.unwrap();
    };
    tokio::join!(writes, reads);
    assert!(
        t0.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t0.elapsed()
    );
    h.delay(Duration::ZERO);
    let fast_again = echo_roundtrip(&mut s, b"ping").await;
    // With the delay on it would take at least 300 ms.
    assert!(fast_again < Duration::from_millis(300), "{fast_again:?}");
}

#[tokio::test]
async fn throttle_limits_rate() {
    let proxy = Proxy::start(any(), echo_server().await).await.unwrap();
    let h = proxy.handle();
    let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let data = vec![42u8; 10_000];
    let free = echo_roundtrip(&mut s, &data).await;
    h.throttle(Some(20_000));
    let throttled = echo_roundtrip(&mut s, &data).await;
    // 10 kB at 20 kB/s: about 0.5 s (the first chunk goes at once).
    assert!(throttled >= Duration::from_millis(400), "{throttled:?}");
    assert!(throttled < Duration::from_secs(3), "{throttled:?}");
    h.throttle(None);
    let free_again = echo_roundtrip(&mut s, &data).await;
    assert!(
        // Throttled it would take at least 400 ms.
        free_again < Duration::from_millis(400),
        "{free_again:?} (first {free:?})"
    );
}

#[tokio::test]
async fn reject_next_connects_answers_without_upstream() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    h.reject_next_connects(3, 0x87);
    let cases: [(Connect, &[u8]); 3] = [
        (Connect::v5("a"), &[0x20, 0x03, 0x00, 0x87, 0x00]),
        (Connect::v311("b"), &[0x20, 0x02, 0x00, 0x05]),
        (
            Connect::v5("big").will("w", &vec![0u8; 100_000]),
            &[0x20, 0x03, 0x00, 0x87, 0x00],
        ),
    ];
    for (connect, expect) in cases {
        let (mut c, connack) = RawClient::mqtt_connect(proxy.local_addr(), &connect)
            .await
            .unwrap();
        assert_eq!(&connack[..], expect);
        // Then a clean close.
        assert!(c.read_frame_timeout(T).await.unwrap().is_none());
    }
    // The fourth goes through; the upstream saw only that one.
    let (_c, _u) = session(&proxy, &broker, 5).await;
    assert_eq!(broker.accept_count(), 1);
    let s = h.stats();
    assert_eq!((s.connects_seen, s.rejected), (4, 3));
    let ev = h.events();
    assert!(ev
        .iter()
        .any(|e| e.fault.starts_with("rejected CONNECT (MQTT 3.1.1)")));
}

#[tokio::test]
async fn reject_maps_v5_codes_for_311_clients() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    for (v5, v3) in [
        (0x84u8, 1u8),
        (0x85, 2),
        (0x86, 4),
        (0x87, 5),
        (0x88, 3),
        (0x89, 3),
        (0x97, 3),
    ] {
        proxy.handle().reject_next_connects(1, v5);
        let (_c, connack) = RawClient::mqtt_connect(proxy.local_addr(), &Connect::v311("m"))
            .await
            .unwrap();
        assert_eq!(&connack[..], &[0x20, 0x02, 0x00, v3], "0x{v5:02x}");
    }
    assert_eq!(broker.accept_count(), 0);
}

#[tokio::test]
async fn disconnect_is_injected_at_a_packet_boundary() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut client, mut up) = session(&proxy, &broker, 5).await;
    let publish = raw::publish(5, "t", &[9u8; 1000], 0, 0);
    let (head, tail) = publish.split_at(300);
    up.write_all(head).await.unwrap();
    let before = h.stats().bytes_down;
    assert!(h
        .wait_until(T, |s| s.bytes_down == before + 300)
        .await
        .is_some());
    // Mid-packet: the proxy must finish this PUBLISH before the DISCONNECT.
    assert_eq!(h.send_disconnect(0x8b), 1);
    let mut rest = tail.to_vec();
    rest.extend_from_slice(&fake::pingresp()); // after the boundary: dropped
    up.write_all(&rest).await.unwrap();
    let got = client.read_frame_timeout(T).await.unwrap().unwrap();
    assert!(got[..] == publish[..]);
    let got = client.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&got[..], &fake::disconnect_v5(0x8b)[..]);
    assert!(client.read_frame_timeout(T).await.unwrap().is_none());
    up.wait_closed(T).await.unwrap();
    assert!(h.wait_until(T, |s| s.live == 0).await.is_some());
}

#[tokio::test]
async fn disconnect_on_idle_v5_is_immediate_and_v311_is_just_closed() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut c5, mut u5) = session(&proxy, &broker, 5).await;
    let (mut c4, mut u4) = session(&proxy, &broker, 4).await;
    assert_eq!(h.send_disconnect(0x8e), 2);
    let got = c5.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&got[..], &[0xe0, 0x02, 0x8e, 0x00]);
    assert!(c5.read_frame_timeout(T).await.unwrap().is_none());
    assert!(c4.read_frame_timeout(T).await.unwrap().is_none());
    u5.wait_closed(T).await.unwrap();
    u4.wait_closed(T).await.unwrap();
}

#[tokio::test]
async fn disconnect_while_blackholed_mid_packet_gives_up_and_closes() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut client, mut up) = session(&proxy, &broker, 5).await;
    let publish = raw::publish(5, "t", &[1u8; 100], 0, 0);
    up.write_all(&publish[..50]).await.unwrap();
    let before = h.stats().bytes_down;
    assert!(h
        .wait_until(T, |s| s.bytes_down == before + 50)
        .await
        .is_some());
    h.blackhole(None);
    let t0 = Instant::now();
    h.send_disconnect(0x8b);
    // No boundary can come: the connection is closed without a DISCONNECT.
    let mut seen = Vec::new();
    loop {
        let b = tokio::time::timeout(T, client.read_raw())
            .await
            .unwrap()
            .unwrap();
        if b.is_empty() {
            break;
        }
        seen.extend(b);
    }
    assert!(seen.is_empty() || seen[..] == publish[..50]);
    assert!(t0.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn connect_times_and_clear_cancels_rejections() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    h.reject_next_connects(5, 0x88);
    for _ in 0..3 {
        let (_c, connack) = RawClient::mqtt_connect(proxy.local_addr(), &Connect::v5("s"))
            .await
            .unwrap();
        assert_eq!(connack[3], 0x88);
    }
    h.clear();
    let (_c, _u) = session(&proxy, &broker, 5).await;
    let s = h.stats();
    assert_eq!(s.connects_seen, 4);
    assert_eq!(s.connect_times.len(), 4);
    assert!(s.connect_times.windows(2).all(|w| w[0] <= w[1]));
    let faults: Vec<_> = h.events().into_iter().map(|e| e.fault).collect();
    assert_eq!(faults[0], "reject next 5 CONNECTs with 0x88");
    assert!(faults.contains(&"clear".to_string()));
}

#[tokio::test]
async fn upstream_reset_is_passed_on_and_upstream_down_resets_client() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let (mut client, up) = session(&proxy, &broker, 5).await;
    up.reset();
    let e = client.read_frame_timeout(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    // Nothing listens upstream any more.
    let dead = steadfast_chaos::free_port();
    let proxy2 = Proxy::start(any(), SocketAddr::from(([127, 0, 0, 1], dead)))
        .await
        .unwrap();
    let mut c = RawClient::connect(proxy2.local_addr()).await.unwrap();
    c.send(&Connect::v5("d").to_bytes()).await.unwrap();
    let e = c.read_frame_timeout(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
}

#[tokio::test]
async fn shutdown_closes_everything_and_frees_the_port() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let addr = proxy.local_addr();
    let h = proxy.handle();
    let (mut client, mut up) = session(&proxy, &broker, 5).await;
    proxy.shutdown().await;
    assert!(client.read_frame_timeout(T).await.unwrap().is_none());
    up.wait_closed(T).await.unwrap();
    assert_eq!(h.stats().live, 0);
    let e = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn malformed_upstream_bytes_do_not_break_forwarding() {
    let broker = FakeBroker::bind().await.unwrap();
    let proxy = Proxy::start(any(), broker.addr()).await.unwrap();
    let h = proxy.handle();
    let (mut client, mut up) = session(&proxy, &broker, 5).await;
    let garbage = [0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    up.write_all(&garbage).await.unwrap();
    let mut got = Vec::new();
    while got.len() < garbage.len() {
        got.extend(
            tokio::time::timeout(T, client.read_raw())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(got, garbage);
    // The stream is no longer MQTT: a DISCONNECT cannot be placed, so just close.
    h.send_disconnect(0x8b);
    let tail = tokio::time::timeout(T, client.read_raw()).await.unwrap();
    assert!(
        matches!(tail, Ok(ref b) if b.is_empty()) || tail.is_err(),
        "{tail:?}"
    );
}
