//! The fault-injecting UDP relay: QUIC (or any datagram protocol) between clients and a
//! server, with loss, blackholes, delay and NAT rebinding switched at run time.
//!
//! It behaves like a NAT in front of the server. Each client source address (IP and port) gets
//! its own *flow*: a UDP socket of the relay, on a port of its own, that talks to the server.
//! The server sees every client at the address of its flow's socket. A client that moves to a
//! new socket (QUIC connection migration, `quinn::Endpoint::rebind`) sends from a new address,
//! so it gets a new flow and the server sees it move as well, as it would through a real NAT;
//! the old flow stays until it has been idle for [`FLOW_IDLE`].
//! [`UdpProxyHandle::rebind`] is the other half of a NAT's life: the relay moves every flow to
//! a new socket on a new port while the clients stay where they are (a NAT rebinding: the
//! mapping expired or the NAT restarted). The server sees its clients come from new addresses;
//! a QUIC server migrates the connections, a TCP-like protocol would not survive it.
//!
//! Unlike the TCP [`Proxy`](crate::Proxy), nothing is held back: a datagram that meets a
//! blackhole or a loss roll is gone, as on a real link, and it is up to the protocol to send
//! it again. Delayed datagrams are sent in their own time, so with jitter they can overtake
//! one another (reordering, as on a real path).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use steadfast_chaos::udp::{Direction, UdpProxy};
//!
//! let server = "127.0.0.1:14567".parse().unwrap();
//! let proxy = UdpProxy::start("127.0.0.1:0".parse().unwrap(), server).await?;
//! let faults = proxy.handle();
//! // ... connect a QUIC client to proxy.local_addr() ...
//! faults.drop_rate(0.05); // 5% of the datagrams, both ways
//! faults.delay(Duration::from_millis(50), Duration::from_millis(10));
//! faults.blackhole(Direction::Down, Some(Duration::from_secs(3)));
//! faults.rebind(); // the server sees every client at a new port
//! faults.clear();
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use steadfast_proto::rng::{Draw, Xoshiro256};
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::proxy::FaultRecord;

/// The largest datagram relayed (the largest a UDP socket can carry).
const MAX_DATAGRAM: usize = 65_536;
/// How long a flow may see no datagram from its client before it is forgotten (a NAT's
/// mapping timeout; generous, so that no test client is cut by it).
pub const FLOW_IDLE: Duration = Duration::from_secs(300);
/// The most flows kept; a new client beyond it evicts the one idle longest.
pub const MAX_FLOWS: usize = 1024;
/// The most datagrams waiting out a delay at once; more are dropped (a full router queue).
pub const MAX_DELAYED: usize = 8192;
/// How many records [`UdpProxyHandle::events`] keeps (the most recent).
const MAX_EVENTS: usize = 10_000;
/// The loss RNG's seed until [`UdpProxyHandle::seed`] sets one.
const DEFAULT_SEED: u64 = 0x5eed_f457;

/// Which way a fault applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Both ways.
    Both,
    /// Client to server only.
    Up,
    /// Server to client only.
    Down,
}

impl Direction {
    fn covers(self, way: Way) -> bool {
        matches!(
            (self, way),
            (Direction::Both, _) | (Direction::Up, Way::Up) | (Direction::Down, Way::Down)
        )
    }

    fn label(self) -> &'static str {
        match self {
            Direction::Both => "both ways",
            Direction::Up => "client to server",
            Direction::Down => "server to client",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Up,
    Down,
}

/// A snapshot of the relay's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Flows (client source addresses) currently mapped.
    pub flows: usize,
    /// Flows opened so far (a migrated client opens a new one).
    pub flows_opened: u64,
    /// Times [`UdpProxyHandle::rebind`] moved a flow to a new port.
    pub rebinds: u64,
    /// Datagrams received from clients.
    pub datagrams_up: u64,
    /// Datagrams received from the server.
    pub datagrams_down: u64,
    /// Datagrams from clients delivered to the server.
    pub delivered_up: u64,
    /// Datagrams from the server delivered to clients.
    pub delivered_down: u64,
    /// Datagrams from clients dropped (loss, blackhole, full delay queue).
    pub dropped_up: u64,
    /// Datagrams from the server dropped (loss, blackhole, full delay queue).
    pub dropped_down: u64,
    /// Bytes delivered to the server.
    pub bytes_up: u64,
    /// Bytes delivered to clients.
    pub bytes_down: u64,
}

/// A blackhole's end: `None` for until [`UdpProxyHandle::clear`].
type Until = Option<Instant>;

#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    drop_rate: f64,
    black_up: Option<Until>,
    black_down: Option<Until>,
    delay: Duration,
    jitter: Duration,
}

impl Faults {
    fn blackholed(&self, way: Way, now: Instant) -> bool {
        let b = match way {
            Way::Up => self.black_up,
            Way::Down => self.black_down,
        };
        match b {
            None => false,
            Some(None) => true,
            Some(Some(end)) => now < end,
        }
    }
}

struct Flow {
    /// The relay's socket toward the server for this client.
    up: Arc<UdpSocket>,
    /// Reads `up` and relays to the client.
    task: JoinHandle<()>,
    last_seen: Instant,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    faults: Faults,
    /// The loss and jitter draws: the project's seeded generator.
    rng: Xoshiro256,
    flows: HashMap<SocketAddr, Flow>,
    stats: UdpStats,
    events: VecDeque<FaultRecord>,
    /// Bumped by every blackhole and clear, so an old timer does not end a newer blackhole.
    blackhole_gen: u64,
}

struct Inner {
    upstream: SocketAddr,
    outside: Arc<UdpSocket>,
    state: Mutex<State>,
    delayed: AtomicUsize,
    events_tx: broadcast::Sender<FaultRecord>,
    runtime: tokio::runtime::Handle,
}

/// What to do with one datagram.
enum Verdict {
    Drop,
    Send,
    SendAfter(Duration),
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves nothing a test relay must refuse to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self, fault: String) {
        let rec = FaultRecord {
            at: SystemTime::now(),
            fault,
        };
        {
            let mut st = self.state();
            if st.events.len() >= MAX_EVENTS {
                st.events.pop_front();
            }
            st.events.push_back(rec.clone());
        }
        let _ = self.events_tx.send(rec);
    }

    /// Counts the datagram and decides its fate under the standing faults.
    fn verdict(&self, way: Way) -> Verdict {
        let mut st = self.state();
        match way {
            Way::Up => st.stats.datagrams_up += 1,
            Way::Down => st.stats.datagrams_down += 1,
        }
        let f = st.faults;
        let lost = f.blackholed(way, Instant::now())
            || (f.drop_rate > 0.0 && st.rng.next_f64() < f.drop_rate);
        if lost {
            match way {
                Way::Up => st.stats.dropped_up += 1,
                Way::Down => st.stats.dropped_down += 1,
            }
            return Verdict::Drop;
        }
        if f.delay.is_zero() && f.jitter.is_zero() {
            return Verdict::Send;
        }
        let extra = if f.jitter.is_zero() {
            Duration::ZERO
        } else {
            f.jitter.mul_f64(st.rng.next_f64())
        };
        Verdict::SendAfter(f.delay + extra)
    }

    fn delivered(&self, way: Way, n: usize) {
        let mut st = self.state();
        match way {
            Way::Up => {
                st.stats.delivered_up += 1;
                st.stats.bytes_up += n as u64;
            }
            Way::Down => {
                st.stats.delivered_down += 1;
                st.stats.bytes_down += n as u64;
            }
        }
    }

    fn dropped_for_queue(&self, way: Way) {
        let mut st = self.state();
        match way {
            Way::Up => st.stats.dropped_up += 1,
            Way::Down => st.stats.dropped_down += 1,
        }
    }

    /// A new socket toward the server, of the server's address family.
    fn bind_upstream(&self) -> io::Result<UdpSocket> {
        let ip = match self.upstream.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let sock = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
        sock.connect(self.upstream)?;
        sock.set_nonblocking(true)?;
        let _guard = self.runtime.enter();
        UdpSocket::from_std(sock)
    }
}

/// A running UDP relay. Dropping it stops relaying and closes the flows' sockets; the
/// listening socket is closed once the last [`UdpProxyHandle`] is gone too.
pub struct UdpProxy {
    local: SocketAddr,
    handle: UdpProxyHandle,
    task: JoinHandle<()>,
}

/// Controls a [`UdpProxy`]'s faults from any task or thread. Cheap to clone.
#[derive(Clone)]
pub struct UdpProxyHandle {
    inner: Arc<Inner>,
}

impl UdpProxy {
    /// Binds `listen` (port 0 picks a free port) and relays every client's datagrams to
    /// `upstream` and back. Must be called inside a tokio runtime.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<UdpProxy> {
        let outside = Arc::new(UdpSocket::bind(listen).await?);
        let local = outside.local_addr()?;
        let (events_tx, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            upstream,
            outside: outside.clone(),
            state: Mutex::new(State {
                faults: Faults::default(),
                rng: Xoshiro256::seed_from_u64(DEFAULT_SEED),
                flows: HashMap::new(),
                stats: UdpStats::default(),
                events: VecDeque::new(),
                blackhole_gen: 0,
            }),
            delayed: AtomicUsize::new(0),
            events_tx,
            runtime: tokio::runtime::Handle::current(),
        });
        let task = tokio::spawn(client_loop(inner.clone()));
        Ok(UdpProxy {
            local,
            handle: UdpProxyHandle { inner },
            task,
        })
    }

    /// Where clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A handle to switch faults and read stats.
    pub fn handle(&self) -> UdpProxyHandle {
        self.handle.clone()
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Dropping the flows aborts their tasks and closes their sockets.
        self.handle.inner.state().flows.clear();
    }
}

impl UdpProxyHandle {
    /// The server's address.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.upstream
    }

    /// Drops each datagram, either way, with probability `rate` (0.0 to 1.0; clamped; 0
    /// ends the loss). The rolls come from a seeded generator, see [`seed`](Self::seed).
    pub fn drop_rate(&self, rate: f64) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.inner.state().faults.drop_rate = rate;
        if rate > 0.0 {
            self.inner.log(format!("drop {:.1}%", rate * 100.0));
        } else {
            self.inner.log("drop off".to_string());
        }
    }

    /// Restarts the loss and jitter generator from `seed`: the same seed gives the same
    /// sequence of rolls (in the order the datagrams arrive).
    pub fn seed(&self, seed: u64) {
        self.inner.state().rng = Xoshiro256::seed_from_u64(seed);
        self.inner.log(format!("seed {seed}"));
    }

    /// Drops every datagram going `dir` for `dur` (`None`: until [`clear`](Self::clear)), as
    /// a link that died without a word does: no reset, no ICMP. Flows stay mapped. A
    /// blackhole of one direction leaves a blackhole of the other as it is.
    pub fn blackhole(&self, dir: Direction, dur: Option<Duration>) {
        let until = dur.map(|d| Instant::now() + d);
        let gen = {
            let mut st = self.inner.state();
            if dir.covers(Way::Up) {
                st.faults.black_up = Some(until);
            }
            if dir.covers(Way::Down) {
                st.faults.black_down = Some(until);
            }
            st.blackhole_gen += 1;
            st.blackhole_gen
        };
        let how_long = match dur {
            Some(d) => format!("{d:?}"),
            None => "until clear".to_string(),
        };
        self.inner
            .log(format!("blackhole {} {how_long}", dir.label()));
        if let Some(d) = dur {
            let inner = self.inner.clone();
            self.inner.runtime.spawn(async move {
                tokio::time::sleep(d).await;
                let ended = {
                    let mut st = inner.state();
                    let current = st.blackhole_gen == gen;
                    if current {
                        st.faults.black_up = None;
                        st.faults.black_down = None;
                    }
                    current
                };
                if ended {
                    inner.log("blackhole ended".to_string());
                }
            });
        }
    }

    /// Delays every datagram, both ways, by `fixed` plus a uniform draw from `[0, jitter]`
    /// (both zero: no delay). Each datagram is sent in its own time, so jitter reorders them.
    /// At most [`MAX_DELAYED`] wait at once; more are dropped.
    pub fn delay(&self, fixed: Duration, jitter: Duration) {
        {
            let mut st = self.inner.state();
            st.faults.delay = fixed;
            st.faults.jitter = jitter;
        }
        if fixed.is_zero() && jitter.is_zero() {
            self.inner.log("delay off".to_string());
        } else if jitter.is_zero() {
            self.inner.log(format!("delay {fixed:?}"));
        } else {
            self.inner.log(format!("delay {fixed:?} jitter {jitter:?}"));
        }
    }

    /// A NAT rebinding: every flow moves to a new socket on a new port toward the server,
    /// while its client keeps sending to the same relay address. The server sees each client
    /// come from a new address; datagrams it still sends to an old one are lost with that
    /// socket. Returns how many flows moved, or the error of a socket that could not be bound
    /// (the flows before it have moved).
    pub fn rebind(&self) -> io::Result<usize> {
        let mut moved = Vec::new();
        let mut failed = None;
        {
            let mut st = self.inner.state();
            let clients: Vec<SocketAddr> = st.flows.keys().copied().collect();
            for client in clients {
                let sock = match self.inner.bind_upstream() {
                    Ok(s) => Arc::new(s),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                };
                let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
                let task =
                    self.inner
                        .runtime
                        .spawn(server_loop(self.inner.clone(), sock.clone(), client));
                if let Some(flow) = st.flows.get_mut(&client) {
                    let old = flow.up.local_addr().map(|a| a.port()).unwrap_or(0);
                    flow.task.abort();
                    flow.up = sock;
                    flow.task = task;
                    moved.push(format!("{client} {old} -> {port}"));
                }
            }
            st.stats.rebinds += moved.len() as u64;
        }
        let n = moved.len();
        let detail = if moved.is_empty() {
            String::new()
        } else {
            format!(": {}", moved.join(", "))
        };
        let flows = if n == 1 { "flow" } else { "flows" };
        match failed {
            None => {
                self.inner.log(format!("rebind ({n} {flows}){detail}"));
                Ok(n)
            }
            Some(e) => {
                self.inner
                    .log(format!("rebind stopped after {n} {flows}: {e}{detail}"));
                Err(e)
            }
        }
    }

    /// Ends every standing fault: loss, blackholes and delay. Flows stay.
    pub fn clear(&self) {
        {
            let mut st = self.inner.state();
            st.faults = Faults::default();
            st.blackhole_gen += 1;
        }
        self.inner.log("clear".to_string());
    }

    /// The port each flow uses toward the server, by client address.
    pub fn flow_ports(&self) -> Vec<(SocketAddr, u16)> {
        self.inner
            .state()
            .flows
            .iter()
            .map(|(c, f)| (*c, f.up.local_addr().map(|a| a.port()).unwrap_or(0)))
            .collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UdpStats {
        let st = self.inner.state();
        UdpStats {
            flows: st.flows.len(),
            ..st.stats.clone()
        }
    }

    /// The faults applied so far (and new flows), oldest first; the most recent 10 000.
    pub fn events(&self) -> Vec<FaultRecord> {
        self.inner.state().events.iter().cloned().collect()
    }

    /// A live feed of the records that [`events`](Self::events) collects.
    pub fn subscribe(&self) -> broadcast::Receiver<FaultRecord> {
        self.inner.events_tx.subscribe()
    }

    /// Polls the stats until `pred` holds (returns that snapshot) or `timeout` passes
    /// (returns `None`).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&UdpStats) -> bool,
    ) -> Option<UdpStats> {
        crate::proxy::poll_until(timeout, || self.stats(), pred).await
    }
}

/// The flow's current socket for `client`, opening a flow if there is none.
fn flow_socket(inner: &Arc<Inner>, client: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    let now = Instant::now();
    let mut opened = None;
    let sock = {
        let mut st = inner.state();
        if let Some(flow) = st.flows.get_mut(&client) {
            flow.last_seen = now;
            flow.up.clone()
        } else {
            st.flows
                .retain(|_, f| now.duration_since(f.last_seen) < FLOW_IDLE);
            if st.flows.len() >= MAX_FLOWS {
                let oldest = st
                    .flows
                    .iter()
                    .min_by_key(|(_, f)| f.last_seen)
                    .map(|(c, _)| *c);
                if let Some(c) = oldest {
                    st.flows.remove(&c);
                }
            }
            let sock = Arc::new(inner.bind_upstream()?);
            let port = sock.local_addr()?.port();
            let task = inner
                .runtime
                .spawn(server_loop(inner.clone(), sock.clone(), client));
            st.flows.insert(
                client,
                Flow {
                    up: sock.clone(),
                    task,
                    last_seen: now,
                },
            );
            st.stats.flows_opened += 1;
            opened = Some(port);
            sock
        }
    };
    if let Some(port) = opened {
        inner.log(format!("new flow {client} via port {port}"));
    }
    Ok(sock)
}

/// Client to server: reads the relay's outside socket.
async fn client_loop(inner: Arc<Inner>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match inner.outside.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors and the like: keep relaying.
            Err(_) => continue,
        };
        let sock = match flow_socket(&inner, client) {
            Ok(s) => s,
            Err(e) => {
                inner.log(format!("cannot open a flow for {client}: {e}"));
                continue;
            }
        };
        match inner.verdict(Way::Up) {
            Verdict::Drop => {}
            Verdict::Send => {
                if sock.send(&buf[..n]).await.is_ok() {
                    inner.delivered(Way::Up, n);
                }
            }
            Verdict::SendAfter(d) => later(&inner, Way::Up, client, buf[..n].to_vec(), d),
        }
    }
}

/// Server to client: reads one flow's socket.
async fn server_loop(inner: Arc<Inner>, sock: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match sock.recv(&mut buf).await {
            Ok(n) => n,
            // ICMP port unreachable from a server that is down: keep the flow.
            Err(_) => continue,
        };
        match inner.verdict(Way::Down) {
            Verdict::Drop => {}
            Verdict::Send => {
                if inner.outside.send_to(&buf[..n], client).await.is_ok() {
                    inner.delivered(Way::Down, n);
                }
            }
            Verdict::SendAfter(d) => later(&inner, Way::Down, client, buf[..n].to_vec(), d),
        }
    }
}

/// Sends a datagram after `d`. Toward the server it goes out through the flow's socket *at
/// send time*, so a datagram delayed across a rebind leaves from the new port.
fn later(inner: &Arc<Inner>, way: Way, client: SocketAddr, data: Vec<u8>, d: Duration) {
    if inner.delayed.fetch_add(1, Ordering::Relaxed) >= MAX_DELAYED {
        inner.delayed.fetch_sub(1, Ordering::Relaxed);
        inner.dropped_for_queue(way);
        return;
    }
    let inner = inner.clone();
    inner.runtime.clone().spawn(async move {
        tokio::time::sleep(d).await;
        let sent = match way {
            Way::Up => {
                let sock = inner.state().flows.get(&client).map(|f| f.up.clone());
                match sock {
                    Some(s) => s.send(&data).await.is_ok(),
                    None => false,
                }
            }
            Way::Down => inner.outside.send_to(&data, client).await.is_ok(),
        };
        if sent {
            inner.delivered(way, data.len());
        }
        inner.delayed.fetch_sub(1, Ordering::Relaxed);
    });
}
