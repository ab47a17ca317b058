//! Crash tests of the durable store with real processes and a real (private) Mosquitto.
//!
//! The children are this test binary run again with `STEADFAST_CHILD` set and the filter
//! `child_entry`: no extra build step. A child reports on stdout, one complete line per fact;
//! the parent kills it with SIGKILL and starts it again on the same store directory.
//!
//! - `publisher_killed_at_random_loses_nothing_accepted`: every number the publisher reported
//!   as accepted (`publish_accepted` resolved, i.e. durable) reaches a reference
//!   `mosquitto_sub`; at QoS 2 exactly once.
//! - `subscriber_killed_and_restarted_sees_every_qos2_message_once`: a subscriber killed and
//!   restarted on its store resumes its session and sees each QoS 2 message exactly once.
//! - `subscriber_resubscribes_from_its_store_when_the_broker_lost_the_session`.
//! - `manual_acks_with_a_store_process_each_qos2_message_once_across_a_kill`: a consumer with
//!   manual acks killed while it holds a message unacknowledged gets that one again after the
//!   restart, and none of those it acknowledged.
//!
//! Feature `durable-store`.
#![cfg(feature = "durable-store")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use steadfast::store::{CommitFuture, DurableStore, SessionSnapshot, Store, StoreError, StoreOp};
use steadfast::Message;
use steadfast::{ClientBuilder, ClientEvent, Lifecycle, QoS};
use steadfast_chaos::mosquitto::Mosquitto;

const CHILD_ENV: &str = "STEADFAST_CHILD";
const PUB_ID: &str = "store-crash-pub";
const SUB_ID: &str = "store-crash-sub";
const ACK_ID: &str = "store-crash-acker";

// ---------------------------------------------------------------------------------------------
// Small helpers: a seeded RNG, child processes with line readers, waits with deadlines.

/// splitmix64: a tiny seeded generator (the seed is printed; `STEADFAST_STORE_SEED` overrides it).
struct Rng(u64);

impl Rng {
    fn from_env(default: u64) -> Rng {
        let seed = std::env::var("STEADFAST_STORE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default);
        eprintln!("seed {seed} (set STEADFAST_STORE_SEED to replay)");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// A process whose stdout is read line by line (complete lines only) on a thread.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &str) -> Proc {
        cmd.stdout(Stdio::piped()).stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    // A line cut short by a kill is not a report.
                    Ok(n) if n > 0 && buf.ends_with(b"\n") => {
                        let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
        Proc {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// This test binary as a child of the given kind.
    fn child(kind: &str, envs: &[(&str, String)]) -> Proc {
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_ENV, kind)
        .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Proc::spawn(cmd, kind)
    }

    /// Takes the lines that arrived so far.
    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Waits (up to `limit`) for a line satisfying `pred`.
    fn wait_line(&mut self, limit: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        if self.seen.iter().any(|l| pred(l)) {
            return true;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = pred(&l);
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    fn send(&mut self, line: &str) {
        if let Some(i) = self.stdin.as_mut() {
            let _ = writeln!(i, "{line}");
            let _ = i.flush();
        }
    }

    /// SIGKILL, reap, and collect every line it wrote.
    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        self.finish()
    }

    /// Waits for the exit (up to 20 s, then SIGKILL) and collects every line.
    fn finish(mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends at EOF: everything written is in the channel.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        std::mem::take(&mut self.seen)
    }

    fn exit_signal(&mut self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.child
            .try_wait()
            .ok()
            .flatten()
            .and_then(|s| s.signal())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failed assertion must not leave a child behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

fn broker() -> Mosquitto {
    Mosquitto::builder()
        .max_queued_messages(1_000_000)
        .start()
        .expect("private mosquitto")
}

fn count<'a>(it: impl Iterator<Item = &'a str>) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for s in it {
        if let Ok(n) = s.parse::<u64>() {
            *m.entry(n).or_insert(0) += 1;
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------
// The children.

/// The child processes' entry point; a no-op in a normal test run.
#[test]
fn child_entry() {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("publisher") => publisher_child(),
        Ok("subscriber") => subscriber_child(),
        Ok("acker") => acker_child(),
        _ => {}
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The publisher's numbering: blocks of numbers are reserved durably before use, so a
/// restarted publisher never reuses a number (numbers reserved but never published are
/// skipped; they were never reported accepted).
struct Numbers {
    path: PathBuf,
    next: u64,
    reserved: u64,
}

impl Numbers {
    const BLOCK: u64 = 64;

    fn open(dir: &Path) -> Numbers {
        let path = dir.join("next-number");
        let next = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Numbers {
            path,
            next,
            reserved: next,
        }
    }

    fn take(&mut self) -> u64 {
        if self.next == self.reserved {
            self.reserved += Self::BLOCK;
            let tmp = self.path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp).expect("counter");
            write!(f, "{}", self.reserved).expect("counter");
            f.sync_all().expect("counter");
            std::fs::rename(&tmp, &self.path).expect("counter");
            std::fs::File::open(self.path.parent().expect("dir"))
                .and_then(|d| d.sync_all())
                .expect("counter");
        }
        self.next += 1;
        self.next - 1
    }
}

fn numbered(n: u64) -> Message {
    if n % 2 == 0 {
        Message::new("crash/q1", n.to_string()).qos(QoS::AtLeastOnce)
    } else {
        Message::new("crash/q2", n.to_string()).qos(QoS::ExactlyOnce)
    }
}

/// Publishes numbers (even: QoS 1, odd: QoS 2) with 16 in flight, printing `A n` once `n` is
/// accepted. With `STOP_AFTER=k` it stops after k numbers, publishes `END` on both topics,
/// disconnects and prints `DONE`; otherwise it runs until killed.
fn publisher_child() {
    let dir = PathBuf::from(env("STORE_DIR"));
    let url = env("BROKER_URL");
    let stop_after: Option<u64> = std::env::var("STOP_AFTER")
        .ok()
        .and_then(|s| s.parse().ok());
    runtime().block_on(async move {
        let store = DurableStore::open(&dir).expect("open the store");
        let (client, mut events) = ClientBuilder::new()
            .server(url)
            .client_id(PUB_ID)
            .session_expiry(Duration::from_secs(600))
            .store(store)
            .build()
            .expect("build");
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let mut numbers = Numbers::open(&dir);
        let end = stop_after.map(|k| numbers.next + k);
        let mut inflight = FuturesUnordered::new();
        loop {
            while inflight.len() < 16 && end.is_none_or(|e| numbers.next < e) {
                let n = numbers.take();
                let c = client.clone();
                inflight.push(async move { (n, c.publish_accepted(numbered(n)).await) });
            }
            match inflight.next().await {
                Some((n, Ok(_ack))) => println!("A {n}"),
                Some((n, Err(e))) => panic!("publish {n} not accepted: {e}"),
                None => break,
            }
        }
        client
            .send(Message::new("crash/q1", "END").qos(QoS::AtLeastOnce))
            .await
            .expect("END q1");
        client
            .send(Message::new("crash/q2", "END").qos(QoS::ExactlyOnce))
            .await
            .expect("END q2");
        client.disconnect().await.expect("disconnect");
        println!("DONE");
    });
}

/// Counts incoming QoS 2 messages between "recorded" and "handled by the application".
///
/// A QoS 2 message is exactly-once *per handover to the application*: once its packet id is
/// durable (before the message is handed over), it is never delivered again. A process killed
/// after that and before the application handled it loses it: that window belongs to the
/// application (see docs/store.md). The test child closes it by killing itself only while no
/// message is in it; every other moment is fair game (mid-commit of other batches, before or
/// after PUBREC / PUBCOMP are written, during connect and session resume).
#[derive(Default)]
struct Gate {
    in_window: Mutex<u64>,
    /// Die right after the next message was handled: the moment where a packet id that was
    /// not recorded would bring the message back (PUBREC not yet at the broker).
    after_delivery: std::sync::atomic::AtomicBool,
}

/// SIGKILL to ourselves.
fn die() -> ! {
    // SAFETY: kill(2) on our own pid.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL cannot be caught")
}

struct GatedStore {
    inner: DurableStore,
    gate: Arc<Gate>,
}

impl Store for GatedStore {
    fn load(&mut self, client_id: &str) -> Result<SessionSnapshot, StoreError> {
        self.inner.load(client_id)
    }
    fn commit(&mut self, ops: Vec<StoreOp>) -> CommitFuture<'_> {
        let adds = ops
            .iter()
            .filter(|op| matches!(op, StoreOp::IncomingQos2Add(_)))
            .count() as u64;
        if adds > 0 {
            *self.gate.in_window.lock().expect("gate") += adds;
        }
        self.inner.commit(ops)
    }
}

/// Subscribes (with `FIRST`) or resumes; prints `CONNECTED <session_present>`, `READY`,
/// `RESUBSCRIBED` and `M <payload>`. On `kill` from stdin it SIGKILLs itself as soon as no
/// QoS 2 message is between being recorded and being printed; on `kill-after-delivery`, right
/// after the next message was printed.
fn subscriber_child() {
    let dir = PathBuf::from(env("STORE_DIR"));
    let url = env("BROKER_URL");
    let topic = env("TOPIC");
    let first = std::env::var_os("FIRST").is_some();
    let gate = Arc::new(Gate::default());
    {
        let gate = gate.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let line = line.unwrap_or_default();
                match line.trim() {
                    "kill" => {}
                    "kill-after-delivery" => {
                        gate.after_delivery
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        // Unless no message comes: then like "kill".
                        std::thread::sleep(Duration::from_secs(2));
                    }
                    _ => continue,
                }
                loop {
                    // The lock is held: no recorded message can be waiting to be printed.
                    let g = gate.in_window.lock().expect("gate");
                    if *g == 0 {
                        die();
                    }
                    drop(g);
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        });
    }
    runtime().block_on(async move {
        let store = GatedStore {
            inner: DurableStore::open(&dir).expect("open the store"),
            gate: gate.clone(),
        };
        let (client, mut events) = ClientBuilder::new()
            .server(url)
            .client_id(SUB_ID)
            .session_expiry(Duration::from_secs(600))
            .store(store)
            .build()
            .expect("build");
        if first {
            client
                .subscribe(topic, QoS::ExactlyOnce)
                .await
                .expect("subscribe");
            println!("READY");
        }
        while let Some(ev) = events.recv().await {
            match ev {
                ClientEvent::Message(m) => {
                    println!("M {}", String::from_utf8_lossy(m.payload()));
                    if m.qos() == QoS::ExactlyOnce {
                        let mut g = gate.in_window.lock().expect("gate");
                        *g -= 1;
                        if *g == 0
                            && gate
                                .after_delivery
                                .load(std::sync::atomic::Ordering::SeqCst)
                        {
                            die();
                        }
                    }
                }
                ClientEvent::Lifecycle {
                    event:
                        Lifecycle::Connected {
                            session_present, ..
                        },
                    ..
                } => {
                    println!("CONNECTED {session_present}")
                }
                ClientEvent::Lifecycle {
                    event: Lifecycle::Resubscribed { .. },
                    ..
                } => println!("RESUBSCRIBED"),
                _ => {}
            }
        }
    });
}

/// A consumer with manual acks and a durable store. Subscribes (with `FIRST`) or resumes;
/// prints `CONNECTED <session_present>`, `READY`, `GOT <payload>` for each message and
/// `ACKED <payload>` once its acknowledgement resolved (durable). The message `STALL_AT` is
/// never acknowledged (`STALLED`): processing that never finished.
fn acker_child() {
    let dir = PathBuf::from(env("STORE_DIR"));
    let url = env("BROKER_URL");
    let topic = env("TOPIC");
    let first = std::env::var_os("FIRST").is_some();
    let stall = std::env::var("STALL_AT").ok();
    runtime().block_on(async move {
        let (client, mut events) = ClientBuilder::new()
            .server(url)
            .client_id(ACK_ID)
            .session_expiry(Duration::from_secs(600))
            .manual_acks(true)
            .store(DurableStore::open(&dir).expect("open the store"))
            .build()
            .expect("build");
        if first {
            client
                .subscribe(topic, QoS::ExactlyOnce)
                .await
                .expect("subscribe");
            println!("READY");
        }
        while let Some(ev) = events.recv().await {
            match ev {
                ClientEvent::Message(m) => {
                    let p = String::from_utf8_lossy(m.payload()).into_owned();
                    println!("GOT {p}");
                    if stall.as_deref() == Some(p.as_str()) {
                        println!("STALLED");
                        continue;
                    }
                    client.ack(&m).await.expect("ack");
                    println!("ACKED {p}");
                }
                ClientEvent::Lifecycle {
                    event:
                        Lifecycle::Connected {
                            session_present, ..
                        },
                    ..
                } => println!("CONNECTED {session_present}"),
                _ => {}
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn manual_acks_with_a_store_process_each_qos2_message_once_across_a_kill() {
    const N: u64 = 10;
    const STALL: u64 = 4;
    let broker = broker();
    let dir = tempdir("store-crash-acks");
    let envs = |first: bool, stall: bool| {
        let mut v = vec![
            ("STORE_DIR", dir.path().join("store").display().to_string()),
            ("BROKER_URL", broker.url()),
            ("TOPIC", "jobs".to_string()),
        ];
        if first {
            v.push(("FIRST", "1".into()));
        }
        if stall {
            v.push(("STALL_AT", STALL.to_string()));
        }
        v
    };
    let rt = runtime();
    let url = broker.url();
    let (publisher, events) = rt.block_on(async {
        ClientBuilder::new()
            .server(url)
            .client_id("store-acks-publisher")
            .build()
            .expect("build")
    });
    drop(events);
    let publish = |payload: String| {
        rt.block_on(publisher.send(Message::new("jobs", payload).qos(QoS::ExactlyOnce)))
            .expect("publish")
    };
    let t = Duration::from_secs(20);

    // Run 1: every job is processed and acknowledged but STALL, which is held when the
    // process is killed.
    let mut run1 = Proc::child("acker", &envs(true, true));
    assert!(run1.wait_line(t, |l| l == "READY"), "did not subscribe");
    for n in 0..N {
        publish(n.to_string());
    }
    assert!(
        run1.wait_line(t, |l| l == "STALLED"),
        "never got job {STALL}"
    );
    for n in (0..N).filter(|&n| n != STALL) {
        let want = format!("ACKED {n}");
        assert!(run1.wait_line(t, |l| l == want), "job {n} not acknowledged");
    }
    let lines1 = run1.kill();

    // Run 2: the held job comes again, and only it; then a marker published now.
    let mut run2 = Proc::child("acker", &envs(false, false));
    let want = format!("ACKED {STALL}");
    assert!(
        run2.wait_line(t, |l| l == want),
        "the unacknowledged job did not come again"
    );
    publish("FIN".into());
    assert!(
        run2.wait_line(t, |l| l == "ACKED FIN"),
        "FIN did not arrive"
    );
    let lines2 = run2.kill();

    // Run 3: nothing of the above comes again; the next message is the next marker.
    let mut run3 = Proc::child("acker", &envs(false, false));
    assert!(run3.wait_line(t, |l| l.starts_with("CONNECTED")));
    publish("FIN2".into());
    assert!(
        run3.wait_line(t, |l| l == "ACKED FIN2"),
        "FIN2 did not arrive"
    );
    let lines3 = run3.kill();
    rt.block_on(publisher.disconnect()).expect("disconnect");

    let got = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("GOT "))
            .map(str::to_string)
            .collect()
    };
    let mut first: Vec<String> = got(&lines1);
    first.sort();
    let mut want: Vec<String> = (0..N).map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(first, want, "run 1 got every job once");
    assert_eq!(
        got(&lines2),
        vec![STALL.to_string(), "FIN".into()],
        "run 2 got the unacknowledged job again and no other"
    );
    assert_eq!(got(&lines3), vec!["FIN2".to_string()], "run 3: {lines3:?}");
    for (i, lines) in [&lines2, &lines3].into_iter().enumerate() {
        assert!(
            lines.iter().any(|l| l == "CONNECTED true"),
            "run {} resumed its session: {lines:?}",
            i + 2
        );
    }
}

#[test]
fn publisher_killed_at_random_loses_nothing_accepted() {
    const KILLS: usize = 22;
    let mut rng = Rng::from_env(0x5EED_0001);
    let broker = broker();
    let dir = tempdir("store-crash-pub");
    let store_dir = dir.path().join("store");

    // The reference subscriber: a persistent mosquitto_sub session for the whole test.
    let mut sub_cmd = Command::new("mosquitto_sub");
    sub_cmd
        .args(["-h", "127.0.0.1", "-p", &broker.port().to_string()])
        .args([
            "-i",
            "store-crash-ref",
            "-c",
            "-q",
            "2",
            "-t",
            "crash/q1",
            "-t",
            "crash/q2",
            "-v",
        ])
        .stderr(Stdio::null());
    let mut reference = Proc::spawn(sub_cmd, "mosquitto_sub");
    // Subscribed once a probe comes through.
    let probed = (0..50).any(|_| {
        let _ = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port().to_string(),
                "-q",
                "1",
                "-t",
                "crash/q1",
                "-m",
                "PROBE",
            ])
            .status();
        reference.wait_line(Duration::from_millis(200), |l| l == "crash/q1 PROBE")
    });
    assert!(probed, "mosquitto_sub did not subscribe");

    let envs = |stop: Option<u64>| {
        let mut v = vec![
            ("STORE_DIR", store_dir.display().to_string()),
            ("BROKER_URL", broker.url()),
        ];
        if let Some(k) = stop {
            v.push(("STOP_AFTER", k.to_string()));
        }
        v
    };
    let mut accepted: Vec<u64> = Vec::new();
    let mut killed_while_publishing = 0;
    for _ in 0..KILLS {
        let mut p = Proc::child("publisher", &envs(None));
        // Some kills land in start-up (store load, connect, resume), most mid-stream.
        std::thread::sleep(Duration::from_millis(rng.range(20, 350)));
        p.drain();
        if !p.seen.is_empty() {
            killed_while_publishing += 1;
        }
        let lines = p.kill();
        accepted.extend(
            lines
                .iter()
                .filter_map(|l| l.strip_prefix("A "))
                .filter_map(|n| n.parse::<u64>().ok()),
        );
    }
    // The last run finishes: what was left in the store goes out, then END on both topics.
    let mut last = Proc::child("publisher", &envs(Some(100)));
    assert!(
        last.wait_line(Duration::from_secs(60), |l| l == "DONE"),
        "the last publisher did not finish"
    );
    let lines = last.finish();
    accepted.extend(
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("A "))
            .filter_map(|n| n.parse::<u64>().ok()),
    );

    // END was published after everything else was acknowledged, and the broker delivers one
    // session's messages in order: once both ENDs are in, everything before them is.
    assert!(
        reference.wait_line(Duration::from_secs(30), |l| l == "crash/q1 END")
            && reference.wait_line(Duration::from_secs(30), |l| l == "crash/q2 END"),
        "END did not arrive at the reference subscriber"
    );
    reference.drain();
    let received = reference.kill();
    let q1 = count(received.iter().filter_map(|l| l.strip_prefix("crash/q1 ")));
    let q2 = count(received.iter().filter_map(|l| l.strip_prefix("crash/q2 ")));

    let distinct: std::collections::HashSet<u64> = accepted.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "a number was reported accepted twice"
    );
    eprintln!(
        "{} kills ({} mid-stream), {} numbers accepted, received {} at QoS 1 and {} at QoS 2",
        KILLS,
        killed_while_publishing,
        accepted.len(),
        q1.values().sum::<usize>(),
        q2.values().sum::<usize>()
    );
    assert!(
        killed_while_publishing >= KILLS / 2,
        "too few kills landed while publishing"
    );
    let mut missing = Vec::new();
    for &n in &accepted {
        let got = if n % 2 == 0 { q1.get(&n) } else { q2.get(&n) };
        if got.is_none() {
            missing.push(n);
        }
    }
    missing.sort_unstable();
    assert!(
        missing.is_empty(),
        "{} accepted numbers never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let dup2: Vec<_> = q2
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(n, c)| (*n, *c))
        .collect();
    assert!(
        dup2.is_empty(),
        "QoS 2 numbers delivered more than once: {dup2:?}"
    );
    assert!(
        q1.keys().all(|n| n % 2 == 0) && q2.keys().all(|n| n % 2 == 1),
        "a number on the wrong topic"
    );

    // Nothing is left behind in the store, and it still belongs to the publisher.
    let mut store = DurableStore::open(&store_dir).expect("reopen");
    let snap = store.load("").expect("load");
    assert_eq!(snap.client_id.as_deref(), Some(PUB_ID));
    assert!(
        snap.outgoing.is_empty(),
        "{} messages left in the store",
        snap.outgoing.len()
    );
}

#[test]
fn subscriber_killed_and_restarted_sees_every_qos2_message_once() {
    const KILLS: usize = 8;
    const TOTAL: u64 = 3000;
    let mut rng = Rng::from_env(0x5EED_0002);
    let broker = broker();
    let dir = tempdir("store-crash-sub");
    let envs = |first: bool| {
        let mut v = vec![
            ("STORE_DIR", dir.path().join("store").display().to_string()),
            ("BROKER_URL", broker.url()),
            ("TOPIC", "seq".to_string()),
        ];
        if first {
            v.push(("FIRST", "1".into()));
        }
        v
    };
    let mut outputs: Vec<Vec<String>> = Vec::new();
    let mut sub = Proc::child("subscriber", &envs(true));
    assert!(
        sub.wait_line(Duration::from_secs(10), |l| l == "READY"),
        "the subscriber did not subscribe"
    );

    // The publisher: another client (no store, never killed), a paced numbered QoS 2 stream.
    let rt = runtime();
    let url = broker.url();
    let publisher = rt.spawn(async move {
        let (client, mut events) = ClientBuilder::new()
            .server(url)
            .client_id("store-sub-publisher")
            .build()
            .expect("build");
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        for n in 0..TOTAL {
            client
                .send(Message::new("seq", n.to_string()).qos(QoS::ExactlyOnce))
                .await
                .expect("publish");
            if n % 5 == 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        client
    });

    for k in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.range(100, 600)));
        sub.send(if rng.next() % 2 == 0 {
            "kill"
        } else {
            "kill-after-delivery"
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while sub.exit_signal().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            sub.exit_signal(),
            Some(libc::SIGKILL),
            "run {k} did not die by SIGKILL"
        );
        outputs.push(sub.finish());
        // Down for a while: the broker queues for the session.
        std::thread::sleep(Duration::from_millis(rng.range(0, 300)));
        sub = Proc::child("subscriber", &envs(false));
    }
    // FIN goes out after every number was acknowledged (PUBCOMP), and the broker delivers a
    // session's messages in order: once FIN is in, every delivery before it is.
    let client = rt.block_on(publisher).expect("publisher");
    rt.block_on(async {
        client
            .send(Message::new("seq", "FIN").qos(QoS::ExactlyOnce))
            .await
            .expect("publish FIN");
        client.disconnect().await.expect("disconnect");
    });
    if !sub.wait_line(Duration::from_secs(60), |l| l == "M FIN") {
        sub.drain();
        let n = sub.seen.len();
        for (i, o) in outputs.iter().enumerate() {
            let m = o.iter().filter(|l| l.starts_with("M ")).count();
            let other: Vec<_> = o.iter().filter(|l| !l.starts_with("M ")).collect();
            let last = o.iter().rev().find(|l| l.starts_with("M "));
            eprintln!("run {i}: {m} messages, last {last:?}, other lines {other:?}");
        }
        panic!(
            "FIN never arrived; the last run's last lines: {:?}",
            &sub.seen[n.saturating_sub(10)..]
        );
    }
    outputs.push(sub.kill());

    let all: Vec<&str> = outputs
        .iter()
        .flatten()
        .filter_map(|l| l.strip_prefix("M "))
        .collect();
    let seen = count(all.iter().copied());
    let missing: Vec<u64> = (0..TOTAL).filter(|n| !seen.contains_key(n)).collect();
    let dups: Vec<(u64, usize)> = seen
        .iter()
        .filter(|(_, &c)| c > 1)
        .map(|(n, c)| (*n, *c))
        .collect();
    let per_run: Vec<usize> = outputs
        .iter()
        .map(|o| o.iter().filter(|l| l.starts_with("M ")).count())
        .collect();
    eprintln!("messages per run: {per_run:?}");
    assert!(
        missing.is_empty(),
        "{} messages never seen: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        dups.is_empty(),
        "QoS 2 messages seen more than once: {dups:?}"
    );
    assert!(
        per_run.iter().filter(|&&n| n > 0).count() >= KILLS / 2,
        "too few runs received messages: {per_run:?}"
    );
    // Every restart resumed the session (clean start off, session expiry > 0).
    for (i, o) in outputs.iter().enumerate().skip(1) {
        for l in o.iter().filter(|l| l.starts_with("CONNECTED")) {
            assert_eq!(l, "CONNECTED true", "run {i} did not resume its session");
        }
    }
}

#[test]
fn subscriber_resubscribes_from_its_store_when_the_broker_lost_the_session() {
    let mut broker = broker();
    let dir = tempdir("store-crash-resub");
    let url = broker.url();
    let envs = |first: bool| {
        let mut v = vec![
            ("STORE_DIR", dir.path().join("store").display().to_string()),
            ("BROKER_URL", url.clone()),
            ("TOPIC", "resub/#".to_string()),
        ];
        if first {
            v.push(("FIRST", "1".into()));
        }
        v
    };
    let mut sub = Proc::child("subscriber", &envs(true));
    assert!(
        sub.wait_line(Duration::from_secs(10), |l| l == "READY"),
        "did not subscribe"
    );
    sub.kill();
    // The broker forgets every session (no persistence).
    broker.restart().expect("restart the broker");
    let mut sub = Proc::child("subscriber", &envs(false));
    assert!(
        sub.wait_line(Duration::from_secs(10), |l| l == "RESUBSCRIBED"),
        "did not resubscribe: {:?}",
        sub.seen
    );
    assert!(
        sub.seen.iter().any(|l| l == "CONNECTED false"),
        "{:?}",
        sub.seen
    );
    // Retained: it reaches the subscription whether it lands before or after the SUBSCRIBE.
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-q",
            "2",
            "-r",
            "-t",
            "resub/x",
            "-m",
            "hello",
        ])
        .status()
        .expect("mosquitto_pub");
    assert!(status.success());
    assert!(
        sub.wait_line(Duration::from_secs(10), |l| l == "M hello"),
        "no message: {:?}",
        sub.seen
    );
    sub.kill();
}
