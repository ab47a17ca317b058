//! `steadfast pub -l --store DIR`, killed with SIGKILL mid-stream and started again with the same
//! store, delivers every line it had accepted before the kill.
//!
//! A private Mosquitto on a free port (never the system broker on 1883), a reference
//! `mosquitto_sub` (MQTT 3.1.1, QoS 1, straight to the broker) started first, and `steadfast
//! pub -l -q 1 --store DIR -i ID` (through the fault proxy) fed numbered lines 1..=N through a
//! pipe, a few lines at a time. The publisher is SIGKILLed at seeded random moments: mid-stream
//! on a healthy link, on a delayed link, on a blackholed link (many accepted messages are then
//! unacknowledged), or while it starts, loads the store and resends. Each time it is started
//! again on the same store and fed the lines not yet written to the killed process's pipe.
//! Lines written to a killed process but not accepted by it (still in the pipe or in its read
//! buffer) may be lost: nobody was told they were safe.
//!
//! The oracle, for each kill:
//! - **Stored**: right after the kill the store's `outgoing` table is read directly (rusqlite,
//!   read-only; the records decoded with the protocol codec, not with the store's own loader):
//!   exactly the lines that were accepted (durable) and not yet acknowledged. Every one of them
//!   must reach the reference subscriber.
//! - **No gap**: `pub -l` hands a line to the library only after the previous one's
//!   `publish_accepted` resolved, so the lines a process accepted are a prefix of the lines
//!   written to it. The highest line of that process's range that was received or stored was
//!   accepted, so every line of the range up to it must be received.
//!
//! After the last kill (always on a blackholed link, so the store holds messages), a process
//! with empty stdin (EOF at once) must deliver what the store holds and exit 0 with the store
//! empty; a last process gets the rest of the lines, then EOF, and must exit 0 with the store
//! empty and every one of its lines delivered.
//!
//! What this cannot see: `pub` reports nothing per line, so accepted lines that left no trace
//! at all (not in the store at the kill, not delivered, no later line of the same process seen)
//! look like lines never accepted. A library bug that forgets a message before its PUBACK is
//! the business of `crates/steadfast/tests/store_crash.rs`, whose child reports each acceptance.
//!
//! The seed is printed; `STEADFAST_PUB_CRASH_SEED=N` replays a schedule.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rusqlite::OpenFlags;
use steadfast::proto::{Packet, ProtocolVersion};
use steadfast_chaos::mosquitto::Mosquitto;
use steadfast_chaos::Proxy;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");
/// The longest any single wait may take.
const T: Duration = Duration::from_secs(15);
const TOPIC: &str = "crash/lines";
const ID: &str = "pub-store-crash";
/// Lines 1..=N.
const N: u32 = 3000;
const KILLS: usize = 5;

/// splitmix64: a tiny seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("STEADFAST_PUB_CRASH_SEED") {
        Ok(s) => s.parse().expect("STEADFAST_PUB_CRASH_SEED: a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// What the reference subscriber received.
#[derive(Default)]
struct Got {
    numbers: BTreeSet<u32>,
    /// Messages, duplicates included (QoS 1 allows them).
    messages: usize,
    /// Payloads that are not a line number of this test.
    strange: Vec<String>,
}

/// `mosquitto_sub -V mqttv311 -q 1`, straight to the broker; its payload lines are collected
/// in the background.
struct Reference {
    child: Child,
    got: Arc<Mutex<Got>>,
    reader: JoinHandle<()>,
}

impl Reference {
    async fn start(port: u16) -> Reference {
        // -d prints "... SUBACK" once subscribed, and debug lines around each payload line.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["-V", "mqttv311", "-q", "1", "-t", TOPIC, "-d"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mosquitto_sub");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let l = tokio::time::timeout(T, out.next_line())
                .await
                .expect("mosquitto_sub: no SUBACK")
                .unwrap()
                .expect("mosquitto_sub ended");
            if l.contains("SUBACK") {
                break;
            }
        }
        let got = Arc::new(Mutex::new(Got::default()));
        let g = got.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                if l.starts_with("Client ") || l.starts_with("Subscribed (mid") {
                    continue; // -d debug output
                }
                let mut g = g.lock().unwrap();
                match l.parse::<u32>() {
                    Ok(n) if (1..=N).contains(&n) => {
                        g.numbers.insert(n);
                        g.messages += 1;
                    }
                    _ => g.strange.push(l),
                }
            }
        });
        Reference { child, got, reader }
    }

    /// Waits until `check` returns `None` (it describes what is still missing otherwise).
    async fn wait(&self, what: &str, check: impl Fn(&Got) -> Option<String>) {
        let deadline = Instant::now() + T;
        loop {
            let missing = check(&self.got.lock().unwrap());
            match missing {
                None => return,
                Some(m) if Instant::now() >= deadline => {
                    panic!("{what}: not received within {T:?}: {m}")
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    async fn stop(mut self) {
        self.child.kill().await.ok();
        self.reader.abort();
    }
}

/// One `steadfast pub -l` process with a piped stdin; its stderr is kept for failure messages.
struct Publisher {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: JoinHandle<String>,
}

impl Publisher {
    fn start(port: u16, store: &Path) -> Publisher {
        let mut child = Command::new(BIN)
            .args(["pub", "-p"])
            .arg(port.to_string())
            .args(["-t", TOPIC, "-l", "-q", "1", "-i", ID, "--store"])
            .arg(store)
            .args(["--reconnect-min", "20ms", "--reconnect-max", "100ms"])
            .arg("--events")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn steadfast pub");
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s).await;
            s
        });
        Publisher {
            stdin: child.stdin.take(),
            child,
            stderr,
        }
    }

    /// Writes lines `range` (one number per line) to the pipe.
    async fn write(&mut self, range: Range<u32>) {
        let text: String = range.map(|i| format!("{i}\n")).collect();
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(text.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// SIGKILL, and wait until the process is gone (its store lock with it).
    async fn kill(mut self) -> String {
        self.child.start_kill().expect("SIGKILL");
        let status = tokio::time::timeout(T, self.child.wait())
            .await
            .expect("no exit after SIGKILL")
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        let err = self.stderr.await.unwrap();
        // It must not have ended by itself before the kill (a crash would be a failure too).
        assert_eq!(
            status.signal(),
            Some(9),
            "the publisher ended before the kill: {status:?}; stderr:\n{err}"
        );
        err
    }

    /// Closes stdin (EOF) and waits for the exit code.
    async fn finish(mut self) -> (i32, String) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(T, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("pub -l did not exit within {T:?} after EOF"))
            .unwrap();
        let err = self.stderr.await.unwrap();
        (status.code().expect("exited by a signal"), err)
    }
}

/// The line numbers in the store's `outgoing` table: accepted (durable) and not yet
/// acknowledged. Read directly with SQLite, read-only, while no process holds the store.
fn stored(dir: &Path) -> BTreeSet<u32> {
    let path = dir.join("session.db");
    if !path.exists() {
        return BTreeSet::new();
    }
    let db = rusqlite::Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()));
    let mut numbers = BTreeSet::new();
    {
        let mut stmt = db
            .prepare("SELECT id, record FROM outgoing ORDER BY id")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .unwrap();
        for row in rows {
            let (id, record) = row.unwrap();
            // [CRC-32 of key and packet][MQTT 5 PUBLISH packet] (docs/store.md).
            assert!(
                record.len() > 4,
                "outgoing record {id}: {} bytes",
                record.len()
            );
            let mut buf = BytesMut::from(&record[4..]);
            let p = match Packet::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
                Ok(Packet::Publish(p)) => p,
                other => panic!("outgoing record {id}: not a PUBLISH: {other:?}"),
            };
            assert_eq!(p.topic.as_str(), TOPIC, "outgoing record {id}");
            let n: u32 = std::str::from_utf8(&p.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("outgoing record {id}: payload {:?}", p.payload));
            assert!(numbers.insert(n), "line {n} is stored twice (record {id})");
        }
    }
    drop(db);
    numbers
}

/// One process that was killed: the lines written to it, and the store right after the kill.
struct Killed {
    lines: Range<u32>,
    stored: BTreeSet<u32>,
    /// How the kill was placed (for the report).
    moment: String,
}

impl Killed {
    /// The highest line of this process known to be accepted: received, or in the store.
    fn highest_accepted(&self, got: &BTreeSet<u32>) -> Option<u32> {
        let received = got.range(self.lines.clone()).next_back().copied();
        let stored = self.stored.range(self.lines.clone()).next_back().copied();
        received.max(stored)
    }
}

/// What the reference subscriber is still missing, or `None`.
fn missing(killed: &[Killed], last: &Range<u32>, got: &BTreeSet<u32>) -> Option<String> {
    let mut report = Vec::new();
    for (k, kill) in killed.iter().enumerate() {
        let lost: Vec<u32> = kill.stored.difference(got).copied().collect();
        if !lost.is_empty() {
            report.push(format!(
                "kill {k}: {} of the {} lines in the store after the kill, e.g. {:?}",
                lost.len(),
                kill.stored.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        if let Some(top) = kill.highest_accepted(got) {
            let gaps: Vec<u32> = (kill.lines.start..=top)
                .filter(|n| !got.contains(n))
                .collect();
            if !gaps.is_empty() {
                report.push(format!(
                    "kill {k}: lines {:?} were written to it and {top} was accepted, but {} \
                     before it are missing, e.g. {:?}",
                    kill.lines,
                    gaps.len(),
                    &gaps[..gaps.len().min(10)]
                ));
            }
        }
    }
    let gaps: Vec<u32> = last.clone().filter(|n| !got.contains(n)).collect();
    if !gaps.is_empty() {
        report.push(format!(
            "last run: {} of lines {last:?} (all acknowledged before exit 0), e.g. {:?}",
            gaps.len(),
            &gaps[..gaps.len().min(10)]
        ));
    }
    (!report.is_empty()).then(|| report.join("; "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_lines_killed_mid_stream_deliver_every_accepted_line() {
    let seed = seed();
    eprintln!("seed {seed} (STEADFAST_PUB_CRASH_SEED={seed} replays the schedule)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let reference = Reference::start(port).await;

    // The publisher goes through the fault proxy (the subscriber does not): a delay or a
    // blackhole keeps accepted messages unacknowledged, so the store holds many at the kill.
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), broker.addr())
        .await
        .unwrap();
    let faults = proxy.handle();
    let pport = proxy.local_addr().port();

    let mut next = 1u32;
    let mut killed: Vec<Killed> = Vec::new();
    for k in 0..KILLS {
        let last_kill = k == KILLS - 1;
        let mut p = Publisher::start(pport, &store);
        let first = next;
        let mut moment = String::new();
        if k > 0 && !last_kill && rng.below(3) == 0 {
            // While it starts: opening the store, connecting, resending what it holds.
            let ms = rng.below(60);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            moment = format!("{ms} ms after start, nothing written");
        } else {
            if k == 0 || last_kill {
                // Mid-stream for sure: the subscriber sees this process's lines first.
                p.write(next..next + 10).await;
                next += 10;
                let range = first..next;
                reference
                    .wait("a line of this process", |g| {
                        g.numbers
                            .range(range.clone())
                            .next()
                            .is_none()
                            .then(|| format!("none of {range:?}"))
                    })
                    .await;
            }
            // The last kill always comes during a blackhole: the empty-stdin run below then
            // has messages to restore.
            match if last_kill { 2 } else { rng.below(3) } {
                1 => {
                    let ms = 2 + rng.below(30);
                    faults.delay(Duration::from_millis(ms));
                    moment = format!("link delayed {ms} ms, ");
                }
                2 => {
                    faults.blackhole(None);
                    moment = "link blackholed, ".into();
                }
                _ => {}
            }
            // Chunks of 1-20 lines, 0-5 ms apart, for 0-60 ms (60 ms before the last kill);
            // the kill follows the last chunk within 0-5 ms.
            let ms = if last_kill { 60 } else { rng.below(61) };
            let until = Instant::now() + Duration::from_millis(ms);
            let mut chunks = 0;
            while chunks == 0 || Instant::now() < until {
                let end = (next + 1 + rng.below(20) as u32).min(N + 1);
                p.write(next..end).await;
                next = end;
                chunks += 1;
                tokio::time::sleep(Duration::from_micros(rng.below(5000))).await;
            }
            moment += &format!("{} lines written in {chunks} chunks", next - first);
        }
        let stderr = p.kill().await;
        faults.clear();
        let stored = stored(&store);
        eprintln!(
            "kill {k}: {moment}; lines {first}..{next}; {} stored after the kill (received so \
             far: {})",
            stored.len(),
            reference.got.lock().unwrap().numbers.len()
        );
        if stderr.lines().any(|l| !l.starts_with('{')) {
            panic!("kill {k}: the publisher reported errors:\n{stderr}");
        }
        killed.push(Killed {
            lines: first..next,
            stored,
            moment,
        });
    }
    assert!(
        next <= N,
        "the schedule used up the lines before the last kill"
    );

    // EOF at once: what the store holds (restored from the killed process) must still be
    // delivered before exit 0.
    let held = stored(&store);
    assert!(
        !held.is_empty(),
        "the last kill, after 60 ms of lines through a blackholed link, left nothing in the \
         store: the restore was not exercised"
    );
    let p = Publisher::start(pport, &store);
    let (code, err) = p.finish().await;
    assert_eq!(code, 0, "pub -l with empty stdin after a kill:\n{err}");
    let left = stored(&store);
    assert!(
        left.is_empty(),
        "pub -l with empty stdin exited 0 with {} of the {} restored messages still in the \
         store, e.g. {:?}; stderr:\n{err}",
        left.len(),
        held.len(),
        left.iter().take(10).collect::<Vec<_>>()
    );
    reference
        .wait("the messages restored by an empty-stdin run", |g| {
            let lost: Vec<&u32> = held.difference(&g.numbers).take(10).collect();
            (!lost.is_empty()).then(|| format!("{lost:?}"))
        })
        .await;

    // The rest of the lines, then EOF: exit 0 once all of them are acknowledged.
    let last = next..N + 1;
    let mut p = Publisher::start(pport, &store);
    while next <= N {
        let end = (next + 1 + rng.below(200) as u32).min(N + 1);
        p.write(next..end).await;
        next = end;
    }
    let (code, err) = p.finish().await;
    assert_eq!(code, 0, "the last pub -l run:\n{err}");
    let left = stored(&store);
    assert!(
        left.is_empty(),
        "the last run exited 0 with {} messages still in the store, e.g. {:?}",
        left.len(),
        left.iter().take(10).collect::<Vec<_>>()
    );

    reference
        .wait("every accepted line", |g| {
            missing(&killed, &last, &g.numbers)
        })
        .await;
    let (total, messages, strange) = {
        let g = reference.got.lock().unwrap();
        (g.numbers.len(), g.messages, g.strange.clone())
    };
    assert!(strange.is_empty(), "unexpected payloads: {strange:?}");
    let restored: usize = killed.iter().map(|k| k.stored.len()).sum();
    let lost: u32 = {
        let g = reference.got.lock().unwrap();
        killed
            .iter()
            .map(|k| match k.highest_accepted(&g.numbers) {
                Some(top) => k.lines.end - 1 - top,
                None => k.lines.end - k.lines.start,
            })
            .sum()
    };
    for (k, kill) in killed.iter().enumerate() {
        eprintln!(
            "kill {k} ({}): lines {:?}, {} in the store",
            kill.moment,
            kill.lines,
            kill.stored.len()
        );
    }
    eprintln!(
        "{total} distinct lines received ({} duplicates); {restored} stored at the kills \
         (all delivered); {lost} lines written with no sign of acceptance (may be lost); {:.1} s",
        messages - total,
        started.elapsed().as_secs_f64()
    );
    // Every line received must have been accepted by some process; the no-gap check above
    // covers that within each range, and nothing outside 1..=N was seen.
    assert_eq!(
        total as u32 + lost,
        N,
        "received + never accepted = all lines"
    );
    reference.stop().await;
    proxy.shutdown().await;
}
