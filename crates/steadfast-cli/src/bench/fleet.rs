//! Fleet mode: N idle clients (memory per connection, connect time) and the reconnect storm
//! after a broker crash, one fleet per backoff policy, in the same run.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use steadfast::{
    BackoffPolicy, Client, ClientEvent, Constant, Exponential, Jitter, Lifecycle, QoS,
    UniformRandom,
};
use tokio::sync::Semaphore;

use super::shard::Shard;
use super::throughput::{client_builder, spawn_broker, wait_connected};
use super::util::{self, secs3, MonoClock};
use super::{BenchArgs, PolicyKind};

/// Clients per proxy shard (each costs the shard two sockets).
const SHARD_CLIENTS: usize = 8_000;
/// Sockets kept free for everything else in a process.
const FD_RESERVE: u64 = 200;
/// Width of the buckets of the attempts-per-second curves.
pub const BUCKET: Duration = Duration::from_millis(500);

/// Per-client records, written by each client's event task.
struct FleetState {
    origin: Instant,
    ready: AtomicUsize,
    failed: AtomicUsize,
    /// ns since `origin` of the last `resubscribed` event (0: none yet).
    resubscribed_ns: Vec<AtomicU64>,
    /// ns since `origin` of the last `connected` event.
    connected_ns: Vec<AtomicU64>,
    probes: Vec<AtomicU32>,
    connecting: AtomicU64,
}

impl FleetState {
    fn new(n: usize) -> FleetState {
        FleetState {
            origin: Instant::now(),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            resubscribed_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            connected_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            probes: (0..n).map(|_| AtomicU32::new(0)).collect(),
            connecting: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        util::ns_since(self.origin).max(1)
    }
}

/// Runs fleet mode.
pub async fn run(args: &BenchArgs, n: usize) -> Result<ExitCode, String> {
    let nofile = util::raise_nofile_limit();
    if (n as u64) + FD_RESERVE > nofile {
        return Err(format!(
            "{n} clients need about {} file descriptors, but RLIMIT_NOFILE is {nofile} (its hard \
             limit; raising it needs root or CAP_SYS_RESOURCE, e.g. `ulimit -Hn`)",
            n as u64 + FD_RESERVE
        ));
    }
    let mut policies: Vec<PolicyKind> = Vec::new();
    for p in if args.policy.is_empty() {
        vec![PolicyKind::Default, PolicyKind::None, PolicyKind::Fixed]
    } else {
        args.policy.clone()
    } {
        if !policies.contains(&p) {
            policies.push(p);
        }
    }
    let storm = args.spawn_broker && !args.outage.is_zero();
    if !args.spawn_broker {
        eprintln!(
            "steadfast bench: no --spawn-broker: measuring the fleet only (the reconnect storm \
             needs a broker the bench can kill and restart)"
        );
        policies.truncate(1);
    }
    // Mosquitto inherits our raised RLIMIT_NOFILE; it must not cap connections.
    let mut broker = if args.spawn_broker {
        Some(spawn_broker(&[
            "max_connections -1",
            "set_tcp_nodelay true",
        ])?)
    } else {
        None
    };
    let mut shards = Vec::new();
    if let Some(b) = &broker {
        for _ in 0..n.div_ceil(SHARD_CLIENTS) {
            shards.push(Shard::start(b.addr()).await?);
        }
    }
    let servers: Vec<Option<String>> = if shards.is_empty() {
        vec![None]
    } else {
        shards
            .iter()
            .map(|s| Some(format!("mqtt://{}", s.addr)))
            .collect()
    };
    let clock = MonoClock::new();
    let ideal_window = args.conn.reconnect_max;
    let ideal = n as f64 / ideal_window.as_secs_f64().max(1e-9);
    let json_out = args.json;
    if !json_out {
        println!(
            "fleet: {n} clients, keep-alive {} s, {} (RLIMIT_NOFILE {nofile})",
            args.conn.keepalive,
            if shards.is_empty() {
                "straight to the broker".to_string()
            } else {
                format!("through {} proxy shard(s)", shards.len())
            }
        );
    }

    let mut reports = Vec::new();
    let mut curves = Vec::new();
    for (k, &policy) in policies.iter().enumerate() {
        let state = Arc::new(FleetState::new(n));
        let topic = format!(
            "{}/fleet/{:x}/{}",
            args.topic,
            std::process::id(),
            policy.name()
        );
        // 1. Open the fleet.
        let rss_before = util::vm_rss();
        let heap_before = util::heap_in_use();
        let sem = Arc::new(Semaphore::new(args.connect_concurrency));
        let opened = Instant::now();
        let mut clients: Vec<Client> = Vec::with_capacity(n);
        for i in 0..n {
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let server = servers[i % servers.len()].as_deref();
            let b = client_builder(args, server, &format!("{}{k}", policy.name()), i)?
                .backoff(make_policy(args, policy)?);
            let (client, events) = b.build().map_err(|e| e.to_string())?;
            let st = state.clone();
            let c = client.clone();
            let filter = topic.clone();
            // Boxed, with what only it needs: the task lives as long as the client, and its
            // size (counted in the memory per idle client) is that of its largest await.
            let subscribed = Box::pin(async move {
                let r = c.subscribe(filter, QoS::AtMostOnce).await;
                drop(permit);
                r.is_ok()
            });
            tokio::spawn(async move {
                if subscribed.await {
                    st.ready.fetch_add(1, Ordering::Relaxed);
                } else {
                    st.failed.fetch_add(1, Ordering::Relaxed);
                }
                client_events(i, events, st).await;
            });
            clients.push(client);
        }
        let all_ready = wait_for(args.fleet_timeout, || {
            state.ready.load(Ordering::Relaxed) + state.failed.load(Ordering::Relaxed) >= n
        })
        .await;
        let connect_time = opened.elapsed();
        let ready = state.ready.load(Ordering::Relaxed);
        if !all_ready || ready < n {
            close_fleet(clients).await;
            return Err(format!(
                "only {ready} of {n} clients connected and subscribed within {:?} ({} failed)",
                args.fleet_timeout,
                state.failed.load(Ordering::Relaxed)
            ));
        }
        // Let the last SUBACKs' allocations settle before reading the RSS.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after = util::vm_rss();
        let per_client = rss_after.saturating_sub(rss_before) as f64 / n as f64;
        let heap_per_client = util::heap_in_use().saturating_sub(heap_before) as f64 / n as f64;
        if !json_out {
            // Only the first fleet starts from a fresh heap: later ones reuse what the previous
            // fleet freed, so their VmRSS delta says little (the heap figure still holds).
            let rss = if k == 0 {
                format!(
                    "{:.1} KiB per idle client (VmRSS {} -> {} MiB); ",
                    per_client / 1024.0,
                    rss_before >> 20,
                    rss_after >> 20
                )
            } else {
                String::new()
            };
            println!(
                "[{}] {n} clients connected and subscribed in {:.2} s ({:.0} per second); memory \
                 {rss}heap allocated {:.1} KiB per client",
                policy.name(),
                connect_time.as_secs_f64(),
                n as f64 / connect_time.as_secs_f64().max(1e-9),
                heap_per_client / 1024.0
            );
        }
        let mut report = json!({
            "policy": policy.name(),
            "backoff": describe_policy(args, policy),
            "clients": n,
            "connect_s": secs3(connect_time),
            "rss_before_bytes": rss_before,
            "rss_after_bytes": rss_after,
            "memory_per_client_bytes": per_client.round(),
            "rss_is_fresh": k == 0,
            "heap_per_client_bytes": heap_per_client.round(),
        });

        // 2. The storm: kill the broker, restart it after the outage, wait for the fleet.
        if let (true, Some(b)) = (storm, broker.as_mut()) {
            let storm = run_storm(args, b, &mut shards, &state, &clock, n, &topic).await?;
            let (summary, curve) = storm.summarize(n, ideal, ideal_window);
            if !json_out {
                println!(
                    "[{}] storm: {} attempts seen ({} while down); peak {} per second (ideal {:.0}: \
                     x{:.1}); fleet back and resubscribed {} after the restart; probe reached {}/{n}",
                    policy.name(),
                    summary["attempts"],
                    summary["attempts_while_down"],
                    summary["peak_attempts_per_s"],
                    ideal,
                    summary["peak_over_ideal"].as_f64().unwrap_or(0.0),
                    match summary["recovery_s"].as_f64() {
                        Some(s) => format!("{s:.2} s"),
                        None => "never (timeout)".to_string(),
                    },
                    summary["probe_received"],
                );
            }
            if let Value::Object(r) = &mut report {
                let s = summary;
                r.extend(s);
            }
            curves.push((policy.name().to_string(), curve));
        }
        close_fleet(clients).await;
        reports.push(report);
    }
    for s in shards {
        s.stop().await;
    }
    drop(broker.take());

    let doc = json!({
        "clients": n,
        "keepalive_s": args.conn.keepalive,
        "outage_s": secs3(args.outage),
        "nofile_limit": nofile,
        "ideal_window_s": secs3(ideal_window),
        "ideal_attempts_per_s": ideal.round(),
        "bucket_s": secs3(BUCKET),
        "policies": reports,
    });
    if let Some(path) = &args.storm_json {
        let mut full = doc.clone();
        full["curves"] = Value::Object(
            curves
                .iter()
                .map(|(name, c)| (name.clone(), json!(c)))
                .collect(),
        );
        std::fs::write(
            path,
            serde_json::to_string_pretty(&full).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.storm_svg {
        if curves.is_empty() {
            eprintln!("steadfast bench: no storm ran, so no plot");
        } else {
            let title = format!(
                "Reconnect storm: {n} clients, broker down {} s (CONNECTs seen per second)",
                args.outage.as_secs_f64()
            );
            super::plot::storm_svg(
                path,
                &title,
                &curves,
                args.outage.as_secs_f64(),
                ideal,
                &format!("ideal uniform spread ({ideal:.0}/s)"),
            )
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
    }
    if json_out {
        let mut line = doc;
        if let Some(first) = line["policies"].get(0).cloned() {
            line["memory_per_client_bytes"] = first["memory_per_client_bytes"].clone();
            line["connect_s"] = first["connect_s"].clone();
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn make_policy(
    args: &BenchArgs,
    policy: PolicyKind,
) -> Result<Box<dyn BackoffPolicy>, String> {
    Ok(match policy {
        PolicyKind::Default => args.conn.backoff_policy().map_err(|e| e.0)?,
        PolicyKind::None => Box::new(Constant::new(Duration::ZERO)),
        PolicyKind::Fixed => Box::new(Constant::new(args.fixed_interval)),
        PolicyKind::Uniform => Box::new(UniformRandom::new(
            args.conn.reconnect_min,
            args.conn.reconnect_max,
        )),
        PolicyKind::Full => Box::new(
            Exponential::new(args.conn.reconnect_min, args.conn.reconnect_max).jitter(Jitter::Full),
        ),
        PolicyKind::Rising => Box::new(
            Exponential::new(args.conn.reconnect_min, args.conn.reconnect_max)
                .jitter(Jitter::Rising),
        ),
    })
}

pub(super) fn describe_policy(args: &BenchArgs, policy: PolicyKind) -> String {
    let d = |d: Duration| humantime::format_duration(d).to_string();
    match policy {
        PolicyKind::Default => {
            let jitter = match args.conn.backoff {
                crate::conn::BackoffKind::Exponential | crate::conn::BackoffKind::Stepped => {
                    format!(
                        ", jitter {:?}",
                        args.conn.jitter.unwrap_or(crate::conn::JitterKind::Rising)
                    )
                }
                _ => String::new(),
            };
            format!(
                "{:?} {}..{}{jitter}",
                args.conn.backoff,
                d(args.conn.reconnect_min),
                d(args.conn.reconnect_max)
            )
            .to_lowercase()
        }
        PolicyKind::None => "constant 0 (immediate)".into(),
        PolicyKind::Fixed => format!("constant {}", d(args.fixed_interval)),
        PolicyKind::Uniform => format!(
            "uniform random {}..{}",
            d(args.conn.reconnect_min),
            d(args.conn.reconnect_max)
        ),
        PolicyKind::Full => format!(
            "exponential {}..{}, full jitter",
            d(args.conn.reconnect_min),
            d(args.conn.reconnect_max)
        ),
        PolicyKind::Rising => format!(
            "exponential {}..{}, rising decorrelated jitter",
            d(args.conn.reconnect_min),
            d(args.conn.reconnect_max)
        ),
    }
}

async fn client_events(i: usize, mut events: steadfast::Events, st: Arc<FleetState>) {
    while let Some(ev) = events.recv().await {
        match ev {
            ClientEvent::Message(_) => {
                st.probes[i].fetch_add(1, Ordering::Relaxed);
            }
            ClientEvent::Lifecycle { event, .. } => match event {
                Lifecycle::Connecting { .. } => {
                    st.connecting.fetch_add(1, Ordering::Relaxed);
                }
                Lifecycle::Connected { .. } => {
                    st.connected_ns[i].store(st.now_ns(), Ordering::Relaxed)
                }
                Lifecycle::Resubscribed { .. } => {
                    st.resubscribed_ns[i].store(st.now_ns(), Ordering::Relaxed)
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// Polls `done` every 20 ms until it holds or `timeout` passes.
async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn close_fleet(clients: Vec<Client>) {
    let mut tasks = Vec::with_capacity(clients.len());
    for c in clients {
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.disconnect()).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// What one storm recorded.
struct Storm {
    /// CLOCK_MONOTONIC ns of the kill, the restart (spawn) and the broker being ready.
    kill_ns: u64,
    restart_ns: u64,
    ready_ns: u64,
    /// Monotonic ns when every client had resubscribed (None: timeout).
    back_ns: Option<u64>,
    resubscribed: usize,
    /// Every CONNECT the proxies saw from the kill on, sorted.
    attempts: Vec<u64>,
    client_attempts: u64,
    probe_received: usize,
}

async fn run_storm(
    args: &BenchArgs,
    broker: &mut steadfast_chaos::mosquitto::Mosquitto,
    shards: &mut [Shard],
    state: &Arc<FleetState>,
    clock: &MonoClock,
    n: usize,
    topic: &str,
) -> Result<Storm, String> {
    let attempts_before = state.connecting.load(Ordering::Relaxed);
    let kill_at = Instant::now();
    tokio::task::block_in_place(|| broker.kill9());
    tokio::time::sleep_until((kill_at + args.outage).into()).await;
    let restart_at = Instant::now();
    tokio::task::block_in_place(|| broker.restart())
        .map_err(|e| format!("cannot restart the broker: {e}"))?;
    let ready_at = Instant::now();
    let kill_rel = kill_at.saturating_duration_since(state.origin).as_nanos() as u64;
    let back = wait_for(args.fleet_timeout, || {
        state
            .resubscribed_ns
            .iter()
            .all(|t| t.load(Ordering::Relaxed) > kill_rel)
    })
    .await;
    let resub: Vec<u64> = state
        .resubscribed_ns
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .collect();
    let resubscribed = resub.iter().filter(|&&t| t > kill_rel).count();
    let back_ns = back.then(|| {
        let last = resub.iter().copied().max().unwrap_or(0);
        clock.ns(state.origin + Duration::from_nanos(last))
    });
    let client_attempts = state.connecting.load(Ordering::Relaxed) - attempts_before;
    // Give the SUBACKs in flight a moment, then check every subscription with one message,
    // sent straight to the broker.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probe_received = probe(args, broker, state, topic, n).await;
    let kill_ns = clock.ns(kill_at);
    let mut attempts = Vec::new();
    for s in shards.iter_mut() {
        attempts.extend(
            s.connect_times()
                .await?
                .into_iter()
                .filter(|&t| t >= kill_ns),
        );
    }
    attempts.sort_unstable();
    Ok(Storm {
        kill_ns,
        restart_ns: clock.ns(restart_at),
        ready_ns: clock.ns(ready_at),
        back_ns,
        resubscribed,
        attempts,
        client_attempts,
        probe_received,
    })
}

/// Publishes one message on the fleet's filter (straight to the broker) and counts the
/// clients that got it.
async fn probe(
    args: &BenchArgs,
    broker: &steadfast_chaos::mosquitto::Mosquitto,
    state: &Arc<FleetState>,
    topic: &str,
    n: usize,
) -> usize {
    let before: Vec<u32> = state
        .probes
        .iter()
        .map(|p| p.load(Ordering::Relaxed))
        .collect();
    let count = || {
        state
            .probes
            .iter()
            .zip(&before)
            .filter(|(p, b)| p.load(Ordering::Relaxed) > **b)
            .count()
    };
    let Ok(b) = client_builder(args, Some(&broker.url()), "probe", 0) else {
        return 0;
    };
    let Ok((client, events)) = b.build() else {
        return 0;
    };
    tokio::spawn(super::throughput::drain_events(events));
    if wait_connected(&client, Duration::from_secs(10))
        .await
        .is_ok()
        && client.publish(topic.to_string(), "probe").await.is_ok()
    {
        wait_for(Duration::from_secs(10), || count() >= n).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), client.disconnect()).await;
    count()
}

impl Storm {
    /// The report fields, and the curve: (seconds since the kill, attempts per second) per
    /// [`BUCKET`].
    fn summarize(
        &self,
        n: usize,
        ideal: f64,
        ideal_window: Duration,
    ) -> (serde_json::Map<String, Value>, Vec<(f64, f64)>) {
        let end_ns = self
            .back_ns
            .unwrap_or_else(|| self.attempts.last().copied().unwrap_or(self.ready_ns));
        let window: Vec<u64> = self
            .attempts
            .iter()
            .copied()
            .filter(|&t| t <= end_ns.max(self.ready_ns) + 1_000_000_000)
            .collect();
        // Peak in any one-second window (two pointers over the sorted times).
        let mut peak = 0usize;
        let mut lo = 0;
        for hi in 0..window.len() {
            while window[hi] - window[lo] >= 1_000_000_000 {
                lo += 1;
            }
            peak = peak.max(hi - lo + 1);
        }
        let while_down = window.iter().filter(|&&t| t < self.restart_ns).count();
        let after_restart = window.len() - while_down;
        let s = |ns: u64| ns.saturating_sub(self.kill_ns) as f64 / 1e9;
        let recovery = self
            .back_ns
            .map(|b| b.saturating_sub(self.restart_ns) as f64 / 1e9);
        let bucket_ns = BUCKET.as_nanos() as u64;
        let last = window.last().copied().unwrap_or(self.kill_ns).max(end_ns);
        let buckets = ((last - self.kill_ns) / bucket_ns + 1) as usize;
        let mut counts = vec![0u64; buckets];
        for &t in &window {
            counts[((t - self.kill_ns) / bucket_ns) as usize] += 1;
        }
        let per_s = 1e9 / bucket_ns as f64;
        let curve: Vec<(f64, f64)> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| (i as f64 * BUCKET.as_secs_f64(), c as f64 * per_s))
            .collect();
        let mut m = serde_json::Map::new();
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        m.insert("attempts".into(), json!(window.len()));
        m.insert("attempts_while_down".into(), json!(while_down));
        m.insert("attempts_after_restart".into(), json!(after_restart));
        m.insert(
            "attempts_per_client".into(),
            json!(r3(window.len() as f64 / n as f64)),
        );
        m.insert("client_side_attempts".into(), json!(self.client_attempts));
        m.insert("peak_attempts_per_s".into(), json!(peak));
        m.insert("ideal_attempts_per_s".into(), json!(ideal.round()));
        m.insert("ideal_window_s".into(), json!(secs3(ideal_window)));
        m.insert(
            "peak_over_ideal".into(),
            json!(r3(peak as f64 / ideal.max(1e-9))),
        );
        m.insert("restart_at_s".into(), json!(r3(s(self.restart_ns))));
        m.insert("broker_ready_at_s".into(), json!(r3(s(self.ready_ns))));
        m.insert("recovery_s".into(), json!(recovery.map(r3)));
        m.insert("resubscribed".into(), json!(self.resubscribed));
        m.insert("probe_received".into(), json!(self.probe_received));
        m.insert(
            "verified".into(),
            json!(self.probe_received == n && self.resubscribed == n),
        );
        (m, curve)
    }
}
