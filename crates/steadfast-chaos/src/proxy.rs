//! The fault-injecting TCP proxy.

use crate::frame::{peek_first, v5_to_v311_connack_code, FirstPacket, FrameTracker};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::future::pending;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

/// Largest chunk read and forwarded in one go.
const CHUNK: usize = 64 * 1024;
/// Chunks read ahead of the writer in each direction (matters under delay).
const PIPELINE_DEPTH: usize = 64;
/// How long an injected DISCONNECT may wait for the broker to finish the
/// packet it is in the middle of; after that the connection is just closed.
const INJECT_GRACE: Duration = Duration::from_secs(2);
/// How long a rejected or disconnected client gets to close its side.
const DRAIN: Duration = Duration::from_secs(1);
/// How long the proxy waits for the rest of a CONNECT it is about to reject.
const READ_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How many records [`ProxyHandle::events`] keeps (the most recent).
const MAX_EVENTS: usize = 10_000;
/// Timeout for opening the upstream connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One applied fault (or one effect of a standing fault), with its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    /// When it happened (wall clock).
    pub at: SystemTime,
    /// What happened, e.g. `reset (2 connections)` or `blackhole 3s`.
    pub fault: String,
}

/// A snapshot of the proxy's counters.
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// TCP connections accepted from clients (refused ones included).
    pub accepted: u64,
    /// Client connections currently open through the proxy.
    pub live: usize,
    /// CONNECT packets seen from clients (rejected ones included).
    pub connects_seen: u64,
    /// When each of those CONNECTs arrived, oldest first (all of them, for
    /// reconnect-storm measurements).
    pub connect_times: Vec<Instant>,
    /// Connections closed at once because of [`ProxyHandle::refuse`].
    pub refused: u64,
    /// CONNECTs answered by the proxy because of [`ProxyHandle::reject_next_connects`].
    pub rejected: u64,
    /// Bytes delivered to the upstream (client -> broker).
    pub bytes_up: u64,
    /// Bytes delivered to clients (broker -> client).
    pub bytes_down: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    Forever,
    At(Instant),
}

impl Until {
    fn from(dur: Option<Duration>) -> Self {
        match dur {
            None => Until::Forever,
            Some(d) => Until::At(Instant::now() + d),
        }
    }

    fn active(self, now: Instant) -> bool {
        match self {
            Until::Forever => true,
            Until::At(t) => now < t,
        }
    }
}

/// The standing faults, shared through a watch channel.
#[derive(Debug, Clone, Default)]
struct Faults {
    blackhole: Option<Until>,
    refuse: Option<Until>,
    delay: Duration,
    throttle: Option<u64>,
}

/// Per-connection commands.
#[derive(Debug, Clone, Default)]
struct Ctl {
    reset: bool,
    close: bool,
    cut: bool,
    disconnect: Option<u8>,
}

struct State {
    reject: Option<(u32, u8)>,
    conns: HashMap<u64, watch::Sender<Ctl>>,
    next_id: u64,
    connects_seen: u64,
    connect_times: Vec<Instant>,
    refused: u64,
    rejected: u64,
    events: VecDeque<FaultRecord>,
    blackhole_gen: u64,
    refuse_gen: u64,
}

struct Inner {
    upstream: SocketAddr,
    faults: watch::Sender<Faults>,
    state: Mutex<State>,
    accepted: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    events_tx: broadcast::Sender<FaultRecord>,
    runtime: tokio::runtime::Handle,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent
        // in a way that matters for a test proxy: keep going.
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

    fn refusing(&self) -> bool {
        self.faults
            .borrow()
            .refuse
            .is_some_and(|u| u.active(Instant::now()))
    }

    fn take_reject(&self) -> Option<u8> {
        let mut st = self.state();
        match st.reject {
            Some((n, rc)) if n > 0 => {
                st.reject = if n > 1 { Some((n - 1, rc)) } else { None };
                st.rejected += 1;
                Some(rc)
            }
            _ => None,
        }
    }

    fn signal_all(&self, f: impl Fn(&mut Ctl)) -> usize {
        let st = self.state();
        for ctl in st.conns.values() {
            ctl.send_modify(&f);
        }
        st.conns.len()
    }
}

/// Removes a connection from the registry when its task ends.
struct ConnGuard {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.inner.state().conns.remove(&self.id);
    }
}

/// A running fault proxy. Dropping it stops accepting and closes every
/// connection; [`Proxy::shutdown`] does the same and waits for it.
pub struct Proxy {
    local: SocketAddr,
    handle: ProxyHandle,
    stop: watch::Sender<bool>,
    accept_task: Option<JoinHandle<()>>,
}

/// Controls a [`Proxy`]'s faults from any task or thread. Cheap to clone.
#[derive(Clone)]
pub struct ProxyHandle {
    inner: Arc<Inner>,
}

impl Proxy {
    /// Binds `listen` (port 0 picks a free port) and starts forwarding every
    /// accepted connection to `upstream`. Must be called inside a tokio runtime.
    ///
    /// The upstream connection is opened once the client's first bytes have
    /// arrived (so that a rejected CONNECT never reaches the broker): the
    /// proxy suits protocols where the client speaks first, like MQTT.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let (faults, _) = watch::channel(Faults::default());
        let (events_tx, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            upstream,
            faults,
            state: Mutex::new(State {
                reject: None,
                conns: HashMap::new(),
                next_id: 0,
                connects_seen: 0,
                connect_times: Vec::new(),
                refused: 0,
                rejected: 0,
                events: VecDeque::new(),
                blackhole_gen: 0,
                refuse_gen: 0,
            }),
            accepted: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            events_tx,
            runtime: tokio::runtime::Handle::current(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let accept_task = tokio::spawn(accept_loop(listener, inner.clone(), stop_rx));
        Ok(Proxy {
            local,
            handle: ProxyHandle { inner },
            stop,
            accept_task: Some(accept_task),
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A handle to control faults and read stats.
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// Stops accepting, closes every connection (FIN) and waits until the
    /// listening socket is released and the connections are gone.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.accept_task.take() {
            let _ = task.await;
        }
        self.handle.inner.signal_all(|c| c.close = true);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.handle.inner.state().conns.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.accept_task.take() {
            task.abort();
        }
        self.handle.inner.signal_all(|c| c.close = true);
    }
}

fn conns(n: usize) -> String {
    if n == 1 {
        "1 connection".to_string()
    } else {
        format!("{n} connections")
    }
}

fn fmt_dur(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!("{d:?}"),
        None => "until clear".to_string(),
    }
}

impl ProxyHandle {
    /// The upstream (broker) address.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.upstream
    }

    /// Aborts every live connection: the client side gets a TCP RST
    /// (SO_LINGER 0), the upstream side is closed. Returns how many.
    pub fn reset(&self) -> usize {
        let n = self.inner.signal_all(|c| c.reset = true);
        self.inner.log(format!("reset ({})", conns(n)));
        n
    }

    /// Cuts every live connection silently, for good: from now on nothing is forwarded on
    /// them either way and nothing is closed; whatever either side sends is read and thrown
    /// away until that side closes. New connections pass. It is what a NAT rebinding (or a
    /// NAT that forgot its mapping) does to TCP: the old connection is dead but nobody is
    /// told, so each end finds out through its own keep-alive. Returns how many.
    pub fn cut(&self) -> usize {
        let n = self.inner.signal_all(|c| c.cut = true);
        self.inner.log(format!("cut ({})", conns(n)));
        n
    }

    /// Stops forwarding bytes both ways on live and new connections for
    /// `dur` (`None`: until [`ProxyHandle::clear`]). Sockets stay open; the
    /// proxy just stops reading, so nothing is lost: held bytes flow again
    /// when the blackhole ends, like a TCP connection surviving a partition.
    pub fn blackhole(&self, dur: Option<Duration>) {
        let until = Until::from(dur);
        self.inner.faults.send_modify(|f| f.blackhole = Some(until));
        let gen = {
            let mut st = self.inner.state();
            st.blackhole_gen += 1;
            st.blackhole_gen
        };
        self.inner.log(format!("blackhole {}", fmt_dur(dur)));
        if let Some(d) = dur {
            let inner = self.inner.clone();
            self.inner.runtime.spawn(async move {
                tokio::time::sleep(d).await;
                if inner.state().blackhole_gen == gen {
                    inner.faults.send_modify(|f| f.blackhole = None);
                    inner.log("blackhole ended".to_string());
                }
            });
        }
    }

    /// Ends every standing fault: blackhole, refuse, delay, throttle, and
    /// the CONNECT rejections not used yet.
    pub fn clear(&self) {
        self.inner.faults.send_modify(|f| *f = Faults::default());
        {
            let mut st = self.inner.state();
            st.blackhole_gen += 1;
            st.refuse_gen += 1;
            st.reject = None;
        }
        self.inner.log("clear".to_string());
    }

    /// New connections are closed at once with a TCP RST for `dur`
    /// (`None`: until [`ProxyHandle::clear`]). Live connections are untouched.
    /// Depending on timing the client sees its connect, its first write or
    /// its first read fail with "connection reset".
    pub fn refuse(&self, dur: Option<Duration>) {
        let until = Until::from(dur);
        self.inner.faults.send_modify(|f| f.refuse = Some(until));
        let gen = {
            let mut st = self.inner.state();
            st.refuse_gen += 1;
            st.refuse_gen
        };
        self.inner.log(format!("refuse {}", fmt_dur(dur)));
        if let Some(d) = dur {
            let inner = self.inner.clone();
            self.inner.runtime.spawn(async move {
                tokio::time::sleep(d).await;
                if inner.state().refuse_gen == gen {
                    inner.faults.send_modify(|f| f.refuse = None);
                    inner.log("refuse ended".to_string());
                }
            });
        }
    }

    /// Adds `d` of latency to every chunk forwarded, both directions
    /// (`Duration::ZERO` removes it). Throughput is not capped by it.
    pub fn delay(&self, d: Duration) {
        self.inner.faults.send_modify(|f| f.delay = d);
        self.inner.log(format!("delay {d:?}"));
    }

    /// Limits each direction of each connection to `bytes_per_sec`
    /// (`None` or `Some(0)`: no limit).
    pub fn throttle(&self, bytes_per_sec: Option<u64>) {
        let rate = bytes_per_sec.filter(|&r| r > 0);
        self.inner.faults.send_modify(|f| f.throttle = rate);
        match rate {
            Some(r) => self.inner.log(format!("throttle {r} B/s")),
            None => self.inner.log("throttle off".to_string()),
        }
    }

    /// The next `n` client CONNECTs are answered by the proxy itself with a
    /// CONNACK carrying `reason_code` (an MQTT 5 code; mapped to the 3.1.1
    /// return code for level-4 clients, see [`crate::v5_to_v311_connack_code`]),
    /// then closed. The upstream never sees those connections. Replaces any
    /// rejections still pending; `n == 0` cancels them.
    pub fn reject_next_connects(&self, n: u32, reason_code: u8) {
        self.inner.state().reject = (n > 0).then_some((n, reason_code));
        self.inner
            .log(format!("reject next {n} CONNECTs with 0x{reason_code:02x}"));
    }

    /// On every live connection: at the next packet boundary of the
    /// broker->client stream, sends the client an MQTT 5 DISCONNECT
    /// (`e0 02 <rc> 00`), then closes both sides. MQTT 3.1.1 (and non-MQTT)
    /// connections are just closed. The DISCONNECT is sent even during a
    /// blackhole or delay (queued broker bytes after the boundary are
    /// dropped); if the broker stays in the middle of a packet for 2 s, the
    /// connection is closed without it. Returns how many connections were told.
    pub fn send_disconnect(&self, reason_code: u8) -> usize {
        let n = self.inner.signal_all(|c| {
            c.disconnect.get_or_insert(reason_code);
        });
        self.inner
            .log(format!("disconnect 0x{reason_code:02x} ({})", conns(n)));
        n
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let st = self.inner.state();
        ProxyStats {
            accepted: self.inner.accepted.load(Ordering::Relaxed),
            live: st.conns.len(),
            connects_seen: st.connects_seen,
            connect_times: st.connect_times.clone(),
            refused: st.refused,
            rejected: st.rejected,
            bytes_up: self.inner.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.inner.bytes_down.load(Ordering::Relaxed),
        }
    }

    /// The faults applied so far (and their effects: refused connections,
    /// rejected CONNECTs, expiries), oldest first; the most recent 10 000.
    pub fn events(&self) -> Vec<FaultRecord> {
        self.inner.state().events.iter().cloned().collect()
    }

    /// A live feed of the records that [`ProxyHandle::events`] collects.
    pub fn subscribe(&self) -> broadcast::Receiver<FaultRecord> {
        self.inner.events_tx.subscribe()
    }

    /// Polls the stats until `pred` holds (returns that snapshot) or
    /// `timeout` passes (returns `None`).
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&ProxyStats) -> bool,
    ) -> Option<ProxyStats> {
        crate::proxy::poll_until(timeout, || self.stats(), pred).await
    }
}

/// Takes a snapshot with `probe` every 5 ms until `pred` holds (returns that snapshot) or
/// `timeout` passes (returns `None`): the `wait_until` of the TCP proxy and the UDP relay.
pub(crate) async fn poll_until<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> T,
    pred: impl Fn(&T) -> bool,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = probe();
        if pred(&s) {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => return,
        };
        let (sock, peer) = match accepted {
            Ok(x) => x,
            Err(_) => {
                // EMFILE and friends: back off a little and keep serving.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        inner.accepted.fetch_add(1, Ordering::Relaxed);
        if inner.refusing() {
            let _ = sock.set_zero_linger();
            drop(sock);
            inner.state().refused += 1;
            inner.log(format!("refused connection from {peer}"));
            continue;
        }
        let (tx, rx) = watch::channel(Ctl::default());
        let id = {
            let mut st = inner.state();
            st.next_id += 1;
            let id = st.next_id;
            st.conns.insert(id, tx);
            id
        };
        let guard = ConnGuard {
            inner: inner.clone(),
            id,
        };
        tokio::spawn(handle_conn(guard, sock, peer, rx));
    }
}

/// Waits until a per-connection command matching `pred` is present.
async fn ctl_signal(ctl: &mut watch::Receiver<Ctl>, pred: impl Fn(&Ctl) -> bool) -> Ctl {
    loop {
        {
            let c = ctl.borrow_and_update();
            if pred(&c) {
                return c.clone();
            }
        }
        if ctl.changed().await.is_err() {
            pending::<()>().await;
        }
    }
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => pending().await,
    }
}

/// Returns once no blackhole is in force.
async fn wait_open(faults: &mut watch::Receiver<Faults>) {
    loop {
        let until = match faults.borrow_and_update().blackhole {
            None => return,
            Some(Until::Forever) => None,
            Some(Until::At(t)) if t <= Instant::now() => return,
            Some(Until::At(t)) => Some(t),
        };
        tokio::select! {
            _ = sleep_opt(until) => {}
            r = faults.changed() => if r.is_err() { return },
        }
    }
}

enum Gate {
    Ready,
    CtlChanged,
}

/// Waits until a chunk read at `read_at` may be written: its delay has
/// passed, no blackhole is in force and the throttle allows it. Returns early
/// if `ctl` (when given) changes.
async fn gate(
    faults: &mut watch::Receiver<Faults>,
    read_at: Instant,
    next_slot: Option<Instant>,
    mut ctl: Option<&mut watch::Receiver<Ctl>>,
) -> Gate {
    loop {
        let (forever, until) = {
            let f = faults.borrow_and_update();
            let now = Instant::now();
            let mut until: Option<Instant> = None;
            let mut forever = false;
            match f.blackhole {
                Some(Until::Forever) => forever = true,
                Some(Until::At(t)) if t > now => until = Some(t),
                _ => {}
            }
            let mut ready_at = read_at + f.delay;
            if f.throttle.is_some() {
                if let Some(slot) = next_slot {
                    ready_at = ready_at.max(slot);
                }
            }
            if ready_at > now {
                until = Some(until.map_or(ready_at, |u| u.max(ready_at)));
            }
            (forever, until)
        };
        if !forever && until.is_none() {
            return Gate::Ready;
        }
        let ctl_changed = async {
            match ctl.as_deref_mut() {
                Some(c) => {
                    if c.changed().await.is_err() {
                        pending::<()>().await;
                    }
                }
                None => pending().await,
            }
        };
        tokio::select! {
            _ = sleep_opt(if forever { None } else { until }) => {}
            r = faults.changed() => if r.is_err() { return Gate::Ready },
            _ = ctl_changed => return Gate::CtlChanged,
        }
    }
}

#[derive(Debug)]
enum Item {
    Data(Instant, Bytes),
    Eof(Instant),
    Err,
}

#[derive(Debug)]
enum PumpEnd {
    /// The source ended; the destination was shut down for writing.
    Eof,
    /// Reading the source failed (e.g. the peer reset).
    ReadError,
    /// Writing the destination failed.
    WriteError,
    /// A DISCONNECT was injected and the destination shut down.
    Injected,
    /// A DISCONNECT was asked for but no packet boundary came in time.
    GaveUp,
}

#[derive(Clone, Copy)]
enum Dir {
    Up,
    Down,
}

/// Forwards `src` to `dst` with the standing faults applied. With `inject`
/// (broker->client of an MQTT 5 connection) it tracks packet boundaries and
/// injects DISCONNECT when asked.
async fn pump<R, W>(
    mut src: R,
    mut dst: W,
    dir: Dir,
    initial: Option<(Instant, Bytes)>,
    inner: &Inner,
    mut inject: Option<watch::Receiver<Ctl>>,
) -> PumpEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<Item>(PIPELINE_DEPTH);
    let reader = async {
        let mut faults = inner.faults.subscribe();
        if let Some((t, b)) = initial {
            if tx.send(Item::Data(t, b)).await.is_err() {
                return;
            }
        }
        let mut buf = BytesMut::new();
        loop {
            wait_open(&mut faults).await;
            let limit = match faults.borrow().throttle {
                Some(r) => usize::try_from(r / 20).unwrap_or(CHUNK).clamp(1, CHUNK),
                None => CHUNK,
            };
            if buf.capacity() < limit {
                buf.reserve(limit);
            }
            let item = match src.read_buf(&mut (&mut buf).limit(limit)).await {
                Ok(0) => Item::Eof(Instant::now()),
                Ok(_) => Item::Data(Instant::now(), buf.split().freeze()),
                Err(_) => Item::Err,
            };
            let last = !matches!(item, Item::Data(..));
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    };
    let counter = match dir {
        Dir::Up => &inner.bytes_up,
        Dir::Down => &inner.bytes_down,
    };
    let writer = async {
        let mut faults = inner.faults.subscribe();
        let mut tracker = FrameTracker::new();
        let mut next_slot: Option<Instant> = None;
        let mut inject_deadline: Option<Instant> = None;
        loop {
            // The disconnect asked for, if any (only tracked with `inject`).
            let pending_rc = |inject: &mut Option<watch::Receiver<Ctl>>| {
                inject
                    .as_mut()
                    .and_then(|c| c.borrow_and_update().disconnect)
            };
            // 1. Next item; inject at once when idle at a boundary.
            let item = if inject.is_some() {
                if let Some(rc) = pending_rc(&mut inject) {
                    if tracker.at_boundary() || tracker.is_invalid() {
                        return inject_disconnect(&mut dst, rc, tracker.is_invalid()).await;
                    }
                    let dl = *inject_deadline.get_or_insert_with(|| Instant::now() + INJECT_GRACE);
                    match tokio::time::timeout_at(dl.into(), rx.recv()).await {
                        Ok(i) => i,
                        Err(_) => return PumpEnd::GaveUp,
                    }
                } else {
                    let Some(ctl) = inject.as_mut() else {
                        continue;
                    };
                    tokio::select! {
                        i = rx.recv() => i,
                        r = ctl.changed() => {
                            if r.is_err() {
                                inject = None;
                            }
                            continue;
                        }
                    }
                }
            } else {
                rx.recv().await
            };
            let (read_at, data) = match item {
                None | Some(Item::Err) => return PumpEnd::ReadError,
                Some(Item::Eof(t)) => {
                    let _ = gate(&mut faults, t, None, None).await;
                    let _ = dst.shutdown().await;
                    return PumpEnd::Eof;
                }
                Some(Item::Data(t, d)) => (t, d),
            };
            // 2. Wait for delay / blackhole / throttle.
            loop {
                if let Some(rc) = pending_rc(&mut inject) {
                    if tracker.at_boundary() || tracker.is_invalid() {
                        return inject_disconnect(&mut dst, rc, tracker.is_invalid()).await;
                    }
                    let dl = *inject_deadline.get_or_insert_with(|| Instant::now() + INJECT_GRACE);
                    let g = gate(&mut faults, read_at, next_slot, None);
                    match tokio::time::timeout_at(dl.into(), g).await {
                        Ok(_) => break,
                        Err(_) => return PumpEnd::GaveUp,
                    }
                }
                match gate(&mut faults, read_at, next_slot, inject.as_mut()).await {
                    Gate::Ready => break,
                    Gate::CtlChanged => continue,
                }
            }
            // 3. Write (only up to the boundary if a disconnect is pending).
            let mut inject_after = None;
            let out: &[u8] = match pending_rc(&mut inject) {
                Some(rc) => {
                    if tracker.at_boundary() || tracker.is_invalid() {
                        return inject_disconnect(&mut dst, rc, tracker.is_invalid()).await;
                    }
                    let k = tracker.finish_packet(&data);
                    if tracker.at_boundary() {
                        inject_after = Some(rc);
                    }
                    &data[..k]
                }
                None => {
                    if inject.is_some() {
                        tracker.skip(&data);
                    }
                    &data
                }
            };
            if dst.write_all(out).await.is_err() {
                return PumpEnd::WriteError;
            }
            counter.fetch_add(out.len() as u64, Ordering::Relaxed);
            if let Some(rc) = inject_after {
                return inject_disconnect(&mut dst, rc, false).await;
            }
            let throttle = faults.borrow().throttle;
            next_slot = throttle.map(|rate| {
                let now = Instant::now();
                let base = next_slot.map_or(now, |s| s.max(now));
                base + Duration::from_secs_f64(out.len() as f64 / rate as f64)
            });
        }
    };
    tokio::select! {
        end = writer => end,
        _ = async { reader.await; pending::<()>().await } => PumpEnd::ReadError,
    }
}

async fn inject_disconnect<W: AsyncWrite + Unpin>(dst: &mut W, rc: u8, invalid: bool) -> PumpEnd {
    if invalid {
        // Not MQTT any more: no boundary to inject at.
        return PumpEnd::GaveUp;
    }
    if dst.write_all(&[0xe0, 0x02, rc, 0x00]).await.is_err() {
        return PumpEnd::WriteError;
    }
    let _ = dst.flush().await;
    let _ = dst.shutdown().await;
    PumpEnd::Injected
}

/// Shuts the client's write side, then lets it close its side (reading and
/// discarding) for a short while, so it sees our last bytes and a FIN rather
/// than a RST.
async fn close_gracefully(client: &mut TcpStream) {
    let _ = client.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(DRAIN, async {
        loop {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// A cut connection: reads and drops whatever either side sends until both have closed (or
/// the proxy closes or resets the connection).
async fn discard_until_closed(
    mut client: TcpStream,
    mut upstream: TcpStream,
    mut ctl: watch::Receiver<Ctl>,
) {
    async fn drain(s: &mut TcpStream) {
        let mut sink = vec![0u8; 8192];
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
    let both = async {
        tokio::join!(drain(&mut client), drain(&mut upstream));
    };
    let reset = tokio::select! {
        _ = both => false,
        c = ctl_signal(&mut ctl, |c| c.reset || c.close) => c.reset,
    };
    if reset {
        reset_now(client);
    }
}

fn reset_now(sock: TcpStream) {
    let _ = sock.set_zero_linger();
    drop(sock);
}

enum Handshake {
    Read(io::Result<usize>),
    Ctl(Ctl),
}

enum End {
    Cut,
    Normal,
    Reset,
    Close,
    Injected,
    ClientFailed,
    UpstreamFailed,
}

/// Serves one client connection; the registry entry (`guard`) goes when the
/// connection is no longer forwarded.
async fn handle_conn(
    guard: ConnGuard,
    mut client: TcpStream,
    peer: SocketAddr,
    mut ctl: watch::Receiver<Ctl>,
) {
    let inner = guard.inner.clone();
    let _ = client.set_nodelay(true);
    let mut faults = inner.faults.subscribe();
    let any_ctl = |c: &Ctl| c.reset || c.close || c.disconnect.is_some();

    // Phase 1: read until the first packet says what this connection is.
    let mut first = BytesMut::with_capacity(1024);
    let (level, frame_len) = loop {
        match peek_first(&first) {
            FirstPacket::NeedMore => {}
            FirstPacket::NotConnect => break (None, None),
            FirstPacket::Connect { level, frame_len } => break (level, Some(frame_len)),
        }
        let ev = tokio::select! {
            c = ctl_signal(&mut ctl, any_ctl) => Handshake::Ctl(c),
            r = async {
                wait_open(&mut faults).await;
                client.read_buf(&mut first).await
            } => Handshake::Read(r),
        };
        match ev {
            Handshake::Ctl(c) if c.reset => return reset_now(client),
            Handshake::Ctl(_) => return,
            Handshake::Read(Ok(0)) | Handshake::Read(Err(_)) => return,
            Handshake::Read(Ok(_)) => {}
        }
    };
    let read_at = Instant::now();
    let is_connect = frame_len.is_some();
    if is_connect {
        let mut st = inner.state();
        st.connects_seen += 1;
        st.connect_times.push(read_at);
    }

    // Phase 1b: a rejected CONNECT is answered here.
    if let Some(frame_len) = frame_len {
        if let Some(rc) = inner.take_reject() {
            let mut left = frame_len.saturating_sub(first.len());
            let discard = async {
                let mut sink = vec![0u8; 8192];
                while left > 0 {
                    let want = left.min(sink.len());
                    match client.read(&mut sink[..want]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => left -= n,
                    }
                }
                wait_open(&mut faults).await;
                true
            };
            let ok = tokio::select! {
                c = ctl_signal(&mut ctl, any_ctl) => {
                    if c.reset {
                        return reset_now(client);
                    }
                    false
                }
                r = tokio::time::timeout(READ_CONNECT_TIMEOUT, discard) => r.unwrap_or(true),
            };
            if ok {
                let connack: &[u8] = if level == Some(5) {
                    &[0x20, 0x03, 0x00, rc, 0x00]
                } else {
                    &[0x20, 0x02, 0x00, v5_to_v311_connack_code(rc)]
                };
                let _ = client.write_all(connack).await;
                let version = match level {
                    Some(5) => "MQTT 5".to_string(),
                    Some(4) => "MQTT 3.1.1".to_string(),
                    Some(l) => format!("level {l}"),
                    None => "unknown level".to_string(),
                };
                inner.log(format!(
                    "rejected CONNECT ({version}) from {peer} with 0x{:02x}",
                    if level == Some(5) {
                        rc
                    } else {
                        v5_to_v311_connack_code(rc)
                    }
                ));
                // No longer a live connection: only its goodbye is left.
                drop(guard);
                close_gracefully(&mut client).await;
            }
            return;
        }
    }

    // Phase 2: connect upstream.
    let connect =
        tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(inner.upstream));
    let mut upstream = tokio::select! {
        c = ctl_signal(&mut ctl, any_ctl) => {
            if c.reset {
                reset_now(client);
            }
            return;
        }
        r = connect => match r {
            Ok(Ok(s)) => s,
            // Upstream down: the client sees its connection reset.
            _ => return reset_now(client),
        },
    };
    let _ = upstream.set_nodelay(true);

    // Phase 3: forward both ways until something ends it.
    let level5 = level == Some(5);
    let end = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        let up = pump(
            cr,
            uw,
            Dir::Up,
            Some((read_at, first.freeze())),
            &inner,
            None,
        );
        let down = pump(ur, cw, Dir::Down, None, &inner, level5.then(|| ctl.clone()));
        tokio::pin!(up);
        tokio::pin!(down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let down_gone = down_done;
            let conn_ctl = move |c: &Ctl| {
                c.reset || c.close || c.cut || (c.disconnect.is_some() && (!level5 || down_gone))
            };
            tokio::select! {
                r = &mut up, if !up_done => {
                    up_done = true;
                    match r {
                        PumpEnd::Eof => if down_done { break End::Normal },
                        PumpEnd::ReadError => break End::ClientFailed,
                        _ => break End::Close,
                    }
                }
                r = &mut down, if !down_done => {
                    down_done = true;
                    match r {
                        PumpEnd::Eof => if up_done { break End::Normal },
                        PumpEnd::Injected => break End::Injected,
                        PumpEnd::ReadError => break End::UpstreamFailed,
                        PumpEnd::WriteError | PumpEnd::GaveUp => break End::Close,
                    }
                }
                c = ctl_signal(&mut ctl, conn_ctl) => {
                    break if c.reset {
                        End::Reset
                    } else if c.cut && !c.close {
                        End::Cut
                    } else {
                        End::Close
                    };
                }
            }
        }
    };
    match end {
        End::Normal | End::Close => {}
        End::Reset | End::UpstreamFailed => reset_now(client),
        End::ClientFailed => reset_now(upstream),
        End::Cut => discard_until_closed(client, upstream, ctl).await,
        End::Injected => {
            drop(upstream);
            drop(guard);
            close_gracefully(&mut client).await;
        }
    }
}
