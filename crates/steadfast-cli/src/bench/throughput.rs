//! Throughput and latency: publishers and subscribers in one process, through a broker.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::{ByteStr, Client, ClientBuilder, Message, QoS, State, Subscription};
use steadfast_chaos::mosquitto::Mosquitto;

use super::util::{self, get_header, ns_since, put_header, quantile};
use super::BenchArgs;

/// How long a client may take to connect (and subscribe).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the clients get to disconnect gracefully at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one subscriber saw.
struct SubResult {
    received: u64,
    unique: u64,
    last_ns: u64,
    latencies_ns: Vec<u64>,
}

/// What one publisher did.
struct PubResult {
    first_ns: Option<u64>,
    sent: u64,
    error: Option<String>,
}

/// Starts a private broker for `--spawn-broker` (blocking for a moment: fine before the run).
pub(super) fn spawn_broker(extra: &[&str]) -> Result<Mosquitto, String> {
    let mut b = Mosquitto::builder();
    for e in extra {
        b = b.extra_config(*e);
    }
    b.start()
        .map_err(|e| format!("cannot start a private mosquitto: {e}"))
}

/// The builder for one bench client: the connection flags, `server` if given, and an id.
pub(super) fn client_builder(
    args: &BenchArgs,
    server: Option<&str>,
    role: &str,
    i: usize,
) -> Result<ClientBuilder, String> {
    let conn = args.conn.builder().map_err(|e| e.0)?;
    let mut b = conn.builder;
    if let Some(s) = server {
        b = b.server(s);
    }
    let id = match &args.conn.id {
        Some(prefix) => format!("{prefix}-{role}-{i}"),
        None => format!("sfbench-{}-{role}-{i}", std::process::id()),
    };
    Ok(b.client_id(id))
}

/// Waits until `client` is connected, or says why not.
pub(super) async fn wait_connected(client: &Client, timeout: Duration) -> Result<(), String> {
    let waited = tokio::time::timeout(
        timeout,
        client.wait_for_state(|s| {
            matches!(
                s,
                State::Connected | State::Failed | State::Dormant | State::Closed
            )
        }),
    )
    .await;
    match waited {
        Ok(State::Connected) => Ok(()),
        Ok(s) => Err(format!("the client could not connect (state {s})")),
        Err(_) => Err(format!("the client did not connect within {timeout:?}")),
    }
}

/// Runs the throughput bench.
pub async fn run(args: &BenchArgs) -> Result<ExitCode, String> {
    let broker = if args.spawn_broker {
        Some(spawn_broker(&["set_tcp_nodelay true"])?)
    } else {
        None
    };
    let server = broker.as_ref().map(|b| b.url());
    let run_id = format!("{:08x}", util::monotonic_ns() as u32 ^ std::process::id());
    let prefix = format!("{}/{}", args.topic, run_id);
    let qos = args.qos;
    let p_count = args.publishers;
    let s_count = args.subscribers;
    // Messages per publisher: the remainder goes to the first ones.
    let per_pub: Vec<u64> = (0..p_count as u64)
        .map(|p| args.count / p_count as u64 + u64::from(p < args.count % p_count as u64))
        .collect();
    let expected = args.count * s_count as u64;

    // Subscribers first, so that no message is published before they listen.
    let mut clients = Vec::new();
    let mut subs: Vec<Subscription> = Vec::new();
    for i in 0..s_count {
        let (client, events) = client_builder(args, server.as_deref(), "sub", i)?
            .build()
            .map_err(|e| e.to_string())?;
        tokio::spawn(drain_events(events));
        wait_connected(&client, CONNECT_TIMEOUT).await?;
        let sub = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.subscribe_stream(format!("{prefix}/#"), qos),
        )
        .await
        .map_err(|_| "the subscription was not acknowledged in time".to_string())?
        .map_err(|e| format!("subscribe failed: {e}"))?;
        subs.push(sub);
        clients.push(client);
    }
    let mut publishers = Vec::new();
    for i in 0..p_count {
        let (client, events) = client_builder(args, server.as_deref(), "pub", i)?
            .build()
            .map_err(|e| e.to_string())?;
        tokio::spawn(drain_events(events));
        wait_connected(&client, CONNECT_TIMEOUT).await?;
        publishers.push(client.clone());
        clients.push(client);
    }

    let start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut sub_tasks = Vec::new();
    for sub in subs {
        let per_pub = per_pub.clone();
        let received = received.clone();
        let idle = args.idle_timeout;
        sub_tasks.push(tokio::spawn(subscriber(
            sub, per_pub, start, received, idle,
        )));
    }
    let mut pub_tasks = Vec::new();
    for (i, client) in publishers.into_iter().enumerate() {
        let job = PubJob {
            client,
            publisher: i as u32,
            topic: ByteStr::from(format!("{prefix}/{i}")),
            qos,
            count: per_pub[i],
            payload_size: args.payload_size,
            rate: if args.rate > 0.0 {
                args.rate / p_count as f64
            } else {
                0.0
            },
            window: args.window,
            start,
            sent: sent.clone(),
        };
        pub_tasks.push(tokio::spawn(publisher(job)));
    }

    let progress = std::io::stdout().is_terminal().then(|| {
        let (sent, received) = (sent.clone(), received.clone());
        let total = args.count;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let s = sent.load(Ordering::Relaxed);
                let r = received.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64();
                let mut out = std::io::stdout().lock();
                let _ = write!(
                    out,
                    "\r\x1b[Ksent {s}/{total}  received {r}/{expected}  {:.0} msg/s received",
                    r as f64 / secs.max(1e-9)
                );
                let _ = out.flush();
            }
        })
    });

    let mut first_ns: Option<u64> = None;
    let mut total_sent = 0;
    let mut pub_errors = Vec::new();
    for t in pub_tasks {
        let r = t.await.map_err(|e| format!("publisher task failed: {e}"))?;
        if let Some(f) = r.first_ns {
            first_ns = Some(first_ns.map_or(f, |x: u64| x.min(f)));
        }
        total_sent += r.sent;
        if let Some(e) = r.error {
            pub_errors.push(e);
        }
    }
    let mut results = Vec::new();
    for t in sub_tasks {
        results.push(
            t.await
                .map_err(|e| format!("subscriber task failed: {e}"))?,
        );
    }
    if let Some(p) = progress {
        p.abort();
        print!("\r\x1b[K");
        let _ = std::io::stdout().flush();
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        for c in &clients {
            let _ = c.disconnect().await;
        }
    })
    .await;
    drop(broker);

    let got: u64 = results.iter().map(|r| r.received).sum();
    let unique: u64 = results.iter().map(|r| r.unique).sum();
    let last_ns = results.iter().map(|r| r.last_ns).max().unwrap_or(0);
    let mut lat: Vec<u64> = results.into_iter().flat_map(|r| r.latencies_ns).collect();
    lat.sort_unstable();
    let first = first_ns.unwrap_or(0);
    let elapsed = Duration::from_nanos(last_ns.saturating_sub(first));
    let rate = if elapsed.is_zero() {
        0.0
    } else {
        got as f64 / elapsed.as_secs_f64()
    };
    let us = |q: f64| quantile(&lat, q) as f64 / 1000.0;
    let (p50, p99, p999) = (us(0.50), us(0.99), us(0.999));
    let max = lat.last().copied().unwrap_or(0) as f64 / 1000.0;
    let lost = expected.saturating_sub(unique);
    let dups = got - unique;

    for e in &pub_errors {
        eprintln!("steadfast bench: publisher: {e}");
    }
    println!(
        "qos {}, {} messages of {} B, {} publisher(s) -> {} subscriber(s)",
        qos as u8, args.count, args.payload_size, p_count, s_count
    );
    println!(
        "received {got} of {expected} (lost {lost}, duplicates {dups}) in {:.3} s: {:.0} msg/s",
        elapsed.as_secs_f64(),
        rate
    );
    println!("latency p50 {p50:.0} us, p99 {p99:.0} us, p99.9 {p999:.0} us, max {max:.0} us");
    if args.json {
        let round = |x: f64| (x * 10.0).round() / 10.0;
        let line = crate::events::to_json(&Report {
            qos: qos as u8,
            count: args.count,
            payload_size: args.payload_size as u64,
            publishers: p_count as u64,
            subscribers: s_count as u64,
            elapsed_s: (elapsed.as_secs_f64() * 1e6).round() / 1e6,
            msgs_per_s: rate.round(),
            sent: total_sent,
            received: got,
            expected,
            lost,
            duplicates: dups,
            p50_us: round(p50),
            p99_us: round(p99),
            p999_us: round(p999),
            max_us: round(max),
        });
        println!("{line}");
    }
    Ok(if pub_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::RUNTIME)
    })
}

/// The `--json` line of a throughput run (the fields of the help text, in that order).
#[derive(serde::Serialize)]
struct Report {
    qos: u8,
    count: u64,
    payload_size: u64,
    publishers: u64,
    subscribers: u64,
    elapsed_s: f64,
    msgs_per_s: f64,
    sent: u64,
    received: u64,
    expected: u64,
    lost: u64,
    duplicates: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

/// Reads (and drops) a client's events; messages go to the subscription handles.
pub(super) async fn drain_events(mut events: steadfast::Events) {
    while events.recv().await.is_some() {}
}

async fn subscriber(
    mut sub: Subscription,
    per_pub: Vec<u64>,
    start: Instant,
    received: Arc<AtomicU64>,
    idle: Duration,
) -> SubResult {
    let expected: u64 = per_pub.iter().sum();
    let mut seen: Vec<Vec<u64>> = per_pub
        .iter()
        .map(|&n| vec![0u64; n.div_ceil(64) as usize])
        .collect();
    let mut r = SubResult {
        received: 0,
        unique: 0,
        last_ns: 0,
        latencies_ns: Vec::with_capacity(expected.min(50_000_000) as usize),
    };
    while r.unique < expected {
        let msg = match tokio::time::timeout(idle, sub.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        let now = ns_since(start);
        received.fetch_add(1, Ordering::Relaxed);
        r.received += 1;
        r.last_ns = now;
        let Some((p, seq, sent)) = get_header(msg.payload()) else {
            continue;
        };
        let Some(bits) = seen.get_mut(p as usize) else {
            continue;
        };
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        let Some(w) = bits.get_mut(word) else {
            continue;
        };
        if *w & (1 << bit) != 0 {
            continue;
        }
        *w |= 1 << bit;
        r.unique += 1;
        r.latencies_ns.push(now.saturating_sub(sent));
    }
    r
}

struct PubJob {
    client: Client,
    publisher: u32,
    topic: ByteStr,
    qos: QoS,
    count: u64,
    payload_size: usize,
    rate: f64,
    window: usize,
    start: Instant,
    sent: Arc<AtomicU64>,
}

/// Publishes in order; at most `window` acknowledgements are awaited at once.
async fn publisher(job: PubJob) -> PubResult {
    let mut buf = vec![b'.'; job.payload_size];
    let mut window = VecDeque::with_capacity(job.window);
    let mut r = PubResult {
        first_ns: None,
        sent: 0,
        error: None,
    };
    let began = tokio::time::Instant::now();
    for seq in 0..job.count {
        if job.rate > 0.0 {
            let at = began + Duration::from_secs_f64(seq as f64 / job.rate);
            tokio::time::sleep_until(at).await;
        }
        let now = ns_since(job.start);
        r.first_ns.get_or_insert(now);
        put_header(&mut buf, job.publisher, seq, now);
        let message = Message::new(job.topic.clone(), Bytes::copy_from_slice(&buf)).qos(job.qos);
        match job.client.publish_accepted(message).await {
            Ok(ack) => window.push_back(ack),
            Err(e) => {
                r.error = Some(e.to_string());
                break;
            }
        }
        r.sent += 1;
        job.sent.fetch_add(1, Ordering::Relaxed);
        if window.len() >= job.window {
            if let Some(ack) = window.pop_front() {
                if let Err(e) = ack.await {
                    r.error = Some(e.to_string());
                    break;
                }
            }
        }
    }
    for ack in window {
        if let Err(e) = ack.await {
            r.error.get_or_insert(e.to_string());
        }
    }
    r
}
