//! The UDP relay's faults against a UDP echo server: flows per client address, loss with a
//! seeded generator, blackholes each way, delay with jitter, and NAT rebinding.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steadfast_chaos::udp::{Direction, UdpProxy};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Bound for things that must happen.
const T: Duration = Duration::from_secs(5);

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Datagrams with their source addresses.
type Seen = Vec<(SocketAddr, Vec<u8>)>;

/// Sends every datagram back to where it came from (unless `echo` is off), and remembers
/// each one with its source address.
struct Echo {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Echo {
    async fn start(echo: bool) -> Echo {
        let sock = UdpSocket::bind(any()).await.unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                log.lock().unwrap().push((from, buf[..n].to_vec()));
                if echo {
                    let _ = sock.send_to(&buf[..n], from).await;
                }
            }
        });
        Echo { addr, seen, task }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_count(&self, n: usize) -> Seen {
        let deadline = Instant::now() + T;
        loop {
            let s = self.seen();
            if s.len() >= n {
                return s;
            }
            assert!(Instant::now() < deadline, "echo saw {} of {n}", s.len());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn client(proxy: &UdpProxy) -> UdpSocket {
    let c = UdpSocket::bind(any()).await.unwrap();
    c.connect(proxy.local_addr()).await.unwrap();
    c
}

async fn recv(c: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(T, c.recv(&mut buf))
        .await
        .expect("a datagram in time")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn ping(c: &UdpSocket, what: &[u8]) {
    c.send(what).await.unwrap();
    assert_eq!(recv(c).await, what);
}

#[tokio::test]
async fn relays_both_ways_with_one_flow_per_client_address() {
    let echo = Echo::start(true).await;
    let proxy = UdpProxy::start(any(), echo.addr).await.unwrap();
    let h = proxy.handle();
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    ping(&a, b"a1").await;
    ping(&b, b"b1").await;
    ping(&a, b"a2").await;
    // A datagram as large as UDP allows over loopback.
    let big = vec![7u8; 60_000];
    ping(&b, &big).await;

    let seen = echo.seen();
    let from = |p: &[u8]| seen.iter().find(|(_, d)| d == p).unwrap().0;
    assert_eq!(from(b"a1"), from(b"a2"), "one flow per client");
    assert_ne!(from(b"a1"), from(b"b1"), "each client its own flow");
    assert_ne!(from(b"a1"), proxy.local_addr());
    let s = h.stats();
    assert_eq!((s.flows, s.flows_opened), (2, 2), "{s:?}");
    assert_eq!((s.delivered_up, s.delivered_down), (4, 4), "{s:?}");
    assert_eq!(s.bytes_up, 2 + 2 + 2 + 60_000);

    // A client that moves to a new socket is a new client to a NAT: a new flow, and the
    // server sees a new address.
    let moved = client(&proxy).await;
    ping(&moved, b"a3").await;
    let seen = echo.seen();
    let a3 = seen.iter().find(|(_, d)| d == b"a3").unwrap().0;
    assert_ne!(a3, from(b"a1"));
    assert_eq!(h.stats().flows_opened, 3);
    let ports: Vec<u16> = h.flow_ports().iter().map(|(_, p)| *p).collect();
    assert!(ports.contains(&a3.port()), "{ports:?}");
}

#[tokio::test]
async fn blackholes_drop_each_way_or_both_and_end() {
    let echo = Echo::start(true).await;
    let proxy = UdpProxy::start(any(), echo.addr).await.unwrap();
    let h = proxy.handle();
    let c = client(&proxy).await;
    ping(&c, b"before").await;

    // Client to server: the server never gets it.
    h.blackhole(Direction::Up, None);
    c.send(b"lost up").await.unwrap();
    h.wait_until(T, |s| s.dropped_up == 1)
        .await
        .expect("dropped");
    h.clear();
    // The next datagram is the first one back: the dropped one never reached the echo.
    ping(&c, b"after up").await;
    assert!(!echo.seen().iter().any(|(_, d)| d == b"lost up"));

    // Server to client: the server gets it, its answer is dropped.
    h.blackhole(Direction::Down, None);
    c.send(b"lost down").await.unwrap();
    echo.wait_count(3).await;
    h.wait_until(T, |s| s.dropped_down == 1)
        .await
        .expect("answer dropped");
    h.clear();
    ping(&c, b"after down").await;

    // Both ways, for a while: it ends by itself.
    h.blackhole(Direction::Both, Some(Duration::from_millis(300)));
    c.send(b"lost both").await.unwrap();
    h.wait_until(T, |s| s.dropped_up == 2)
        .await
        .expect("dropped");
    let deadline = Instant::now() + T;
    while !h.events().iter().any(|e| e.fault == "blackhole ended") {
        assert!(Instant::now() < deadline, "{:?}", h.events());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ping(&c, b"after both").await;
    let faults: Vec<String> = h.events().into_iter().map(|e| e.fault).collect();
    assert!(
        faults.contains(&"blackhole client to server until clear".to_string()),
        "{faults:?}"
    );
    assert!(
        faults.contains(&"blackhole both ways 300ms".to_string()),
        "{faults:?}"
    );
}

/// Sends `n` numbered datagrams at `rate` loss (toward a server that does not answer, so every
/// roll is on the way up) and returns the numbers that arrived.
async fn lossy_run(seed: u64, rate: f64, n: u32) -> Vec<u32> {
    let sink = Echo::start(false).await;
    let proxy = UdpProxy::start(any(), sink.addr).await.unwrap();
    let h = proxy.handle();
    h.seed(seed);
    h.drop_rate(rate);
    let c = client(&proxy).await;
    for i in 0..n {
        c.send(&i.to_be_bytes()).await.unwrap();
        // One at a time, so that the rolls meet the datagrams in order.
        h.wait_until(T, |s| s.datagrams_up == u64::from(i) + 1)
            .await
            .expect("relayed");
    }
    let s = h
        .wait_until(T, |s| s.delivered_up + s.dropped_up == u64::from(n))
        .await
        .expect("all decided");
    let got = sink.wait_count(s.delivered_up as usize).await;
    got.iter()
        .map(|(_, d)| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect()
}

#[tokio::test]
async fn loss_follows_the_rate_and_the_seed() {
    let n = 500;
    let a = lossy_run(42, 0.2, n).await;
    let lost = n as usize - a.len();
    assert!((60..=140).contains(&lost), "lost {lost} of {n} at 20%");
    // The same seed drops the same datagrams; another seed others.
    assert_eq!(lossy_run(42, 0.2, n).await, a);
    assert_ne!(lossy_run(7, 0.2, n).await, a);
    // No loss without a rate.
    assert_eq!(lossy_run(42, 0.0, 100).await.len(), 100);
}

#[tokio::test]
async fn delay_and_jitter_apply_each_way() {
    let echo = Echo::start(true).await;
    let proxy = UdpProxy::start(any(), echo.addr).await.unwrap();
    let h = proxy.handle();
    let c = client(&proxy).await;
    ping(&c, b"warm").await;

    h.delay(Duration::from_millis(150), Duration::ZERO);
    let t = Instant::now();
    ping(&c, b"slow").await;
    let rtt = t.elapsed();
    assert!(rtt >= Duration::from_millis(300), "{rtt:?}");
    assert!(rtt < Duration::from_millis(1000), "{rtt:?}");

    h.delay(Duration::from_millis(50), Duration::from_millis(100));
    for i in 0..10u8 {
        let t = Instant::now();
        ping(&c, &[i]).await;
        let rtt = t.elapsed();
        assert!(rtt >= Duration::from_millis(100), "{rtt:?}");
        assert!(rtt < Duration::from_millis(1000), "{rtt:?}");
    }

    h.delay(Duration::ZERO, Duration::ZERO);
    let t = Instant::now();
    ping(&c, b"fast").await;
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn rebind_moves_every_flow_to_a_new_port_and_keeps_relaying() {
    let echo = Echo::start(true).await;
    let proxy = UdpProxy::start(any(), echo.addr).await.unwrap();
    let h = proxy.handle();
    let a = client(&proxy).await;
    let b = client(&proxy).await;
    ping(&a, b"a before").await;
    ping(&b, b"b before").await;
    let before = h.flow_ports();

    assert_eq!(h.rebind().unwrap(), 2);
    ping(&a, b"a after").await;
    ping(&b, b"b after").await;
    let seen = echo.seen();
    let from = |p: &[u8]| seen.iter().find(|(_, d)| d == p).unwrap().0;
    assert_ne!(
        from(b"a before"),
        from(b"a after"),
        "the server sees a move"
    );
    assert_ne!(
        from(b"b before"),
        from(b"b after"),
        "the server sees a move"
    );
    let after = h.flow_ports();
    for (client, port) in &before {
        let now = after.iter().find(|(c, _)| c == client).unwrap().1;
        assert_ne!(now, *port, "{client}");
    }
    let s = h.stats();
    assert_eq!((s.flows, s.flows_opened, s.rebinds), (2, 2, 2), "{s:?}");
    assert!(
        h.events()
            .iter()
            .any(|e| e.fault.starts_with("rebind (2 flows)")),
        "{:?}",
        h.events()
    );

    // A datagram delayed across a rebind leaves from the new port.
    h.delay(Duration::from_millis(200), Duration::ZERO);
    a.send(b"delayed").await.unwrap();
    h.rebind().unwrap();
    let newest = h
        .flow_ports()
        .into_iter()
        .find(|(c, _)| *c == a.local_addr().unwrap())
        .unwrap()
        .1;
    assert_eq!(recv(&a).await, b"delayed");
    let seen = echo.seen();
    let delayed = seen.iter().find(|(_, d)| d == b"delayed").unwrap().0;
    assert_eq!(delayed.port(), newest);
}
