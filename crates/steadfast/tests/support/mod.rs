//! Shared support for the `engine_*` integration tests: fast client settings, an event
//! recorder with timed waits, private brokers, `mosquitto_sub` as a reference peer, and a
//! scripted-peer loop around the chaos crate's fake broker.
//!
//! Every wait here has a timeout, and a failing wait prints the client's event log.
#![allow(dead_code, unused_imports)]

use std::future::Future;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use std::time::{Duration, Instant};

use steadfast::Client;
pub use steadfast::{
    ClientBuilder, ClientEvent, Events, Exponential, Lifecycle, ProtocolVersion, QoS, Reason,
    ReasonCode, Received, State,
};
pub use steadfast_chaos::fake::{self, FakeBroker, FakeConn};
pub use steadfast_chaos::mosquitto::Mosquitto;
pub use steadfast_chaos::{Proxy, ProxyHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

/// The default bound on any single wait.
pub const T: Duration = Duration::from_secs(10);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs an async test body on a two-worker runtime with an overall time limit, so that a
/// failure can never hang CI.
pub fn run<F: Future<Output = ()>>(limit: Duration, body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if tokio::time::timeout(limit, body).await.is_err() {
            panic!("test exceeded its overall limit of {limit:?}");
        }
    });
}

/// Both protocol versions, for tests that apply to both.
pub const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V5, ProtocolVersion::V311];

pub fn vname(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "v5",
        _ => "v311",
    }
}

/// A unique name (client id or topic segment) for this process and test.
pub fn uid(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff
    )
}

fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A builder with test-friendly settings: keep-alive 5 s, connect timeout 2 s, backoff
/// exponential 50 ms .. 500 ms, a pinned seed.
pub fn fast(url: &str, v: ProtocolVersion, id: &str) -> ClientBuilder {
    ClientBuilder::from_url(url)
        .expect("url")
        .protocol(v)
        .client_id(id)
        .keep_alive(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .backoff(Exponential::new(ms(50), ms(500)))
        .rng_seed(seed_of(id))
}

/// A persistent session: MQTT 5 session expiry 300 s (clean start only on the first
/// connect), MQTT 3.1.1 clean session false.
pub fn persistent(b: ClientBuilder, v: ProtocolVersion) -> ClientBuilder {
    match v {
        ProtocolVersion::V5 => b.clean_start(true).session_expiry(Duration::from_secs(300)),
        _ => b.clean_start(false),
    }
}

pub fn url_of(addr: std::net::SocketAddr) -> String {
    format!("mqtt://{addr}")
}

/// Starts a private Mosquitto on a free port (blocking calls inside the runtime).
pub fn mosquitto() -> Mosquitto {
    tokio::task::block_in_place(|| Mosquitto::start().expect("start private mosquitto"))
}

pub fn mosquitto_with(b: steadfast_chaos::mosquitto::MosquittoBuilder) -> Mosquitto {
    tokio::task::block_in_place(|| b.start().expect("start private mosquitto"))
}

pub async fn proxy_to(addr: std::net::SocketAddr) -> Proxy {
    Proxy::start("127.0.0.1:0".parse().unwrap(), addr)
        .await
        .expect("proxy")
}

// ---------------------------------------------------------------------------------------------
// Event recorder

/// One lifecycle event as recorded.
#[derive(Debug, Clone)]
pub struct Rec {
    /// The client's own timestamp.
    pub at: SystemTime,
    /// When the recorder saw it.
    pub seen: Instant,
    pub event: Lifecycle,
}

struct Shared {
    log: Mutex<Vec<Rec>>,
    count: watch::Sender<usize>,
    ended: Mutex<bool>,
}

/// Drains a client's [`Events`] in the background: lifecycle events go to a log that tests
/// wait on; messages go to a channel.
pub struct Recorder {
    pub tag: String,
    shared: Arc<Shared>,
    count: watch::Receiver<usize>,
    cursor: usize,
    msgs: mpsc::UnboundedReceiver<Received>,
    started: Instant,
}

impl Recorder {
    pub fn spawn(mut events: Events, tag: impl Into<String>) -> Recorder {
        let tag = tag.into();
        let (count_tx, count_rx) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            count: count_tx,
            ended: Mutex::new(false),
        });
        let (mtx, mrx) = mpsc::unbounded_channel();
        let s = shared.clone();
        let t = tag.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    ClientEvent::Lifecycle { at, event } => {
                        eprintln!("[{t} +{:>6}ms] {event:?}", started.elapsed().as_millis());
                        let n = {
                            let mut log = s.log.lock().unwrap();
                            log.push(Rec {
                                at,
                                seen: Instant::now(),
                                event,
                            });
                            log.len()
                        };
                        s.count.send_replace(n);
                    }
                    ClientEvent::Message(m) => {
                        let _ = mtx.send(m);
                    }
                    other => eprintln!("[{t}] {other:?}"),
                }
            }
            *s.ended.lock().unwrap() = true;
            let n = s.log.lock().unwrap().len();
            s.count.send_replace(n + 1_000_000);
        });
        Recorder {
            tag,
            shared,
            count: count_rx,
            cursor: 0,
            msgs: mrx,
            started,
        }
    }

    /// A snapshot of every lifecycle event so far.
    pub fn records(&self) -> Vec<Rec> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Lifecycle> {
        self.records().into_iter().map(|r| r.event).collect()
    }

    /// True once the client's event stream ended (its driver task is gone).
    pub fn ended(&self) -> bool {
        *self.shared.ended.lock().unwrap()
    }

    pub fn count(&self, pred: impl Fn(&Lifecycle) -> bool) -> usize {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| pred(&r.event))
            .count()
    }

    fn dump(&self) -> String {
        let log = self.shared.log.lock().unwrap();
        let mut s = String::new();
        for r in log.iter() {
            s.push_str(&format!(
                "  +{:>6}ms {:?}\n",
                r.seen.duration_since(self.started).as_millis(),
                r.event
            ));
        }
        s
    }

    /// The next event after the cursor that matches `pred` (the cursor moves past it).
    pub async fn next(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Lifecycle) -> bool,
    ) -> Rec {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.count.clone();
        loop {
            {
                let log = self.shared.log.lock().unwrap();
                if let Some(i) = (self.cursor..log.len()).find(|&i| pred(&log[i].event)) {
                    self.cursor = i + 1;
                    return log[i].clone();
                }
            }
            if self.ended() {
                panic!(
                    "[{}] event stream ended while waiting for {what}; events:\n{}",
                    self.tag,
                    self.dump()
                );
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                panic!(
                    "[{}] no {what} within {timeout:?}; events:\n{}",
                    self.tag,
                    self.dump()
                );
            }
        }
    }

    /// Moves the cursor to the end of the log (later `next` calls see only new events).
    pub fn skip_all(&mut self) {
        self.cursor = self.shared.log.lock().unwrap().len();
    }

    pub async fn connected(&mut self, timeout: Duration) -> Rec {
        self.next("Connected", timeout, |e| {
            matches!(e, Lifecycle::Connected { .. })
        })
        .await
    }

    /// The next message, or a panic after `timeout`.
    pub async fn message(&mut self, timeout: Duration) -> Received {
        match tokio::time::timeout(timeout, self.msgs.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!(
                "[{}] event stream ended while waiting for a message; events:\n{}",
                self.tag,
                self.dump()
            ),
            Err(_) => panic!(
                "[{}] no message within {timeout:?}; events:\n{}",
                self.tag,
                self.dump()
            ),
        }
    }

    /// The next message if one arrives within `timeout`.
    pub async fn try_message(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.msgs.recv())
            .await
            .ok()
            .flatten()
    }

    pub fn panic_with_log(&self, msg: &str) -> ! {
        panic!("[{}] {msg}; events:\n{}", self.tag, self.dump())
    }
}

/// Builds a client and starts recording its events.
pub fn start(b: ClientBuilder, tag: &str) -> (Client, Recorder) {
    let (c, ev) = b.build().expect("build");
    (c, Recorder::spawn(ev, tag))
}

/// Builds a client and waits for its first `Connected`.
pub async fn start_connected(b: ClientBuilder, tag: &str) -> (Client, Recorder) {
    let (c, mut r) = start(b, tag);
    r.connected(T).await;
    (c, r)
}

/// Waits for a client state with a timeout.
pub async fn wait_state(
    c: &Client,
    what: &str,
    timeout: Duration,
    pred: impl FnMut(State) -> bool,
) -> State {
    match tokio::time::timeout(timeout, c.wait_for_state(pred)).await {
        Ok(s) => s,
        Err(_) => panic!(
            "state never became {what} within {timeout:?} (now {:?})",
            c.state()
        ),
    }
}

/// Polls `cond` every 5 ms until it holds, or panics after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            panic!("{what}: not true within {timeout:?}");
        }
        tokio::time::sleep(ms(5)).await;
    }
}

/// Payload helpers: numbered messages.
pub fn num_payload(n: u32) -> String {
    format!("{n}")
}

pub fn parse_num(payload: &[u8]) -> u32 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "not a sequence number: {:?}",
                String::from_utf8_lossy(payload)
            )
        })
}

/// Checks a received sequence: every number of 0..n at least once, and with `exactly_once`
/// none twice. Returns how many duplicates there were.
pub fn check_sequence(what: &str, got: &[u32], n: u32, exactly_once: bool) -> usize {
    let mut seen = vec![0u32; n as usize];
    for &x in got {
        assert!(x < n, "{what}: number {x} out of range 0..{n}");
        seen[x as usize] += 1;
    }
    let missing: Vec<u32> = (0..n).filter(|&i| seen[i as usize] == 0).collect();
    let dups: Vec<u32> = (0..n).filter(|&i| seen[i as usize] > 1).collect();
    assert!(
        missing.is_empty(),
        "{what}: {} numbers missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    if exactly_once {
        assert!(
            dups.is_empty(),
            "{what}: {} numbers delivered twice, first {:?}",
            dups.len(),
            &dups[..dups.len().min(20)]
        );
    }
    dups.len()
}

// ---------------------------------------------------------------------------------------------
// mosquitto_sub as a reference subscriber

/// A `mosquitto_sub` child process printing `MSG <topic> <payload>` per message.
pub struct MosqSub {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl MosqSub {
    /// Starts `mosquitto_sub` against `port` and waits until it is subscribed: its debug
    /// output sits in a pipe buffer until a message arrives, so readiness is proven with probe
    /// messages on an extra topic, published until one comes through.
    ///
    /// It always speaks MQTT 3.1.1: as an MQTT 5 client, libmosquitto 2.0.11 enforces a
    /// receive maximum of 20 that the broker (with `max_inflight_messages 0`) does not
    /// respect, and a burst of more than 20 QoS 2 messages makes `mosquitto_sub` quit with
    /// "A network protocol error occurred".
    pub async fn start(port: u16, topics: &[&str], qos: u8) -> MosqSub {
        let v = ProtocolVersion::V311;
        let probe = format!("probe/{}", uid("p"));
        let mut cmd = tokio::process::Command::new("mosquitto_sub");
        cmd.arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string());
        cmd.arg("-V").arg(if v == ProtocolVersion::V5 {
            "mqttv5"
        } else {
            "mqttv311"
        });
        cmd.arg("-i")
            .arg(uid("ref-sub"))
            .arg("-q")
            .arg(qos.to_string());
        cmd.arg("-F").arg("MSG %t %p").arg("-t").arg(&probe);
        for t in topics {
            cmd.arg("-t").arg(t);
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn mosquitto_sub");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        let l3 = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("mosquitto_sub: {line}");
                l3.lock().unwrap().push(format!("ERR {line}"));
            }
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                l2.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sub = MosqSub {
            child,
            lines: rx,
            log,
        };
        let deadline = Instant::now() + T;
        'ready: loop {
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub never received a probe"
            );
            mosq_pub(port, v, &probe, "probe", 0).await;
            while let Some((t, _)) = sub.next_raw(ms(200)).await {
                if t == probe {
                    break 'ready;
                }
            }
        }
        sub
    }

    async fn next_raw(&mut self, timeout: Duration) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .ok()
                .flatten()?;
            if let Some(rest) = line.strip_prefix("MSG ") {
                let (t, p) = rest.split_once(' ').unwrap_or((rest, ""));
                return Some((t.to_string(), p.to_string()));
            }
        }
    }

    /// The next `(topic, payload)` within `timeout`, or `None`.
    /// Probe messages (from readiness checks) are skipped.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (t, p) = self
                .next_raw(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await?;
            if !t.starts_with("probe/") {
                return Some((t, p));
            }
        }
    }
}

impl Drop for MosqSub {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Runs `mosquitto_pub` once (a reference publisher).
pub async fn mosq_pub(port: u16, v: ProtocolVersion, topic: &str, payload: &str, qos: u8) {
    let out = tokio::time::timeout(
        T,
        tokio::process::Command::new("mosquitto_pub")
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .arg("-V")
            .arg(if v == ProtocolVersion::V5 {
                "mqttv5"
            } else {
                "mqttv311"
            })
            .arg("-i")
            .arg(uid("ref-pub"))
            .arg("-q")
            .arg(qos.to_string())
            .arg("-t")
            .arg(topic)
            .arg("-m")
            .arg(payload)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mosquitto_pub timed out")
    .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Scripted peers

/// Serves every connection of a fake broker with `script` in its own task. The broker is
/// shared so the test can read `accept_count`.
pub fn serve<F, Fut>(broker: Arc<FakeBroker>, script: F) -> tokio::task::JoinHandle<()>
where
    F: Fn(usize, FakeConn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok(conn) = broker.accept().await {
            n += 1;
            tokio::spawn(script(n, conn));
        }
    })
}

/// Reads the CONNECT of a new connection; returns its protocol level.
pub async fn read_connect(conn: &mut FakeConn) -> Option<u8> {
    let f = conn.read_frame_timeout(T).await.ok()??;
    if fake::packet_type(&f) != Some(1) {
        return None;
    }
    fake::connect_level(&f)
}

/// A successful CONNACK for `level`.
pub fn connack_ok(level: u8) -> Vec<u8> {
    if level == 5 {
        fake::connack_v5(false, 0)
    } else {
        fake::connack_v311(false, 0)
    }
}

pub fn level_of(v: ProtocolVersion) -> u8 {
    if v == ProtocolVersion::V5 {
        5
    } else {
        4
    }
}

/// Consecutive differences of instants.
pub fn gaps(times: &[Instant]) -> Vec<Duration> {
    times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .collect()
}
