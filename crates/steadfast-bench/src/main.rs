//! `steadfast-bench`: steadfast against rumqttc and mqtt5, through the same private Mosquitto.
//!
//! ```text
//! cargo run --release -p steadfast-bench -- all    # the whole comparison (about 15 minutes)
//! cargo run --release -p steadfast-bench -- e2e    # 1 pub, 1 sub, 64 B, QoS 0/1/2
//! cargo run --release -p steadfast-bench -- reconnect   # reconnect time, TCP / TLS / QUIC
//! sudo cargo run --release -p steadfast-bench -- lossy  # TCP / TLS / QUIC on a lossy link
//! ```
//!
//! Every measurement runs one client library in a child process of its own (this binary,
//! re-executed as `child`), so the CPU time (`getrusage`, user + system) and the peak RSS
//! are that library's alone. Runs are interleaved (steadfast, rumqttc, mqtt5, steadfast, ...)
//! and the tables show medians.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

mod clients;
mod common;
mod lossy;
mod net;
mod plot;
mod reconnect;
mod report;
mod transport;

use clients::CLIENTS;
use common::{Measured, Scenario};

#[derive(Parser, Debug)]
#[command(
    name = "steadfast-bench",
    about = "steadfast vs rumqttc vs mqtt5 through a private Mosquitto"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The whole comparison: throughput (QoS 0/1/2 x 64 B / 4 KiB), p99 latency at a fixed
    /// 5,000 msg/s, CPU time per message, peak RSS; a markdown report and SVG plots.
    All(RunArgs),
    /// The e2e bench: 1 publisher, 1 subscriber, 64 B, QoS 0/1/2: msgs/s (flood) and p50/p99
    /// latency (at a fixed 5,000 msg/s).
    E2e(RunArgs),
    /// steadfast alone: reconnect time (transport start to CONNACK) over TCP, TLS over TCP and
    /// QUIC, with full and resumed TLS handshakes, on loopback through one Mosquitto.
    Reconnect {
        /// Connects per case.
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// Where reconnect.md goes.
        #[arg(long, default_value = "target/steadfast-bench")]
        out: PathBuf,
    },
    /// steadfast alone: TCP, TLS and QUIC on a link with 100 ms RTT and 0, 2 and 5% loss, in a
    /// network namespace this creates (needs root): QoS 1 latency at 50 msg/s, throughput,
    /// recovery after a 3 s outage, reconnect time.
    Lossy(lossy::LossyArgs),
    /// Internal: one measurement of `lossy`, run inside the client namespace.
    #[command(hide = true)]
    NetChild(lossy::NetChildArgs),
    /// Redraws the plots (and prints the report) from a results.json of `all`.
    Replot {
        /// The results file.
        #[arg(long, default_value = "target/steadfast-bench/results.json")]
        from: PathBuf,
        /// Where the SVG plots go.
        #[arg(long, default_value = "docs/img")]
        img: PathBuf,
    },
    /// Internal: one measurement of one client in this process; prints one JSON line.
    #[command(hide = true)]
    Child(ChildArgs),
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Runs per client and case (medians are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Divide every message count by this (for a quick look; the docs use 1).
    #[arg(long, default_value_t = 1)]
    scale_down: u64,
    /// Only these clients (repeatable) [default: steadfast, rumqttc, mqtt5].
    #[arg(long = "client")]
    clients: Vec<String>,
    /// Where report.md and results.json go.
    #[arg(long, default_value = "target/steadfast-bench")]
    out: PathBuf,
    /// Where the SVG plots go.
    #[arg(long, default_value = "docs/img")]
    img: PathBuf,
    /// Use this broker instead of starting a private Mosquitto (host:port).
    #[arg(long)]
    broker: Option<String>,
    /// Only the throughput cases or only the latency cases.
    #[arg(long, value_parser = ["throughput", "latency"])]
    only: Option<String>,
}

#[derive(Args, Debug)]
struct ChildArgs {
    #[arg(long)]
    client: String,
    #[arg(long)]
    url: String,
    #[arg(long)]
    qos: u8,
    #[arg(long)]
    payload: usize,
    #[arg(long)]
    count: u64,
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 1000)]
    window: usize,
    #[arg(long)]
    run_id: String,
}

/// One row of the comparison.
#[derive(Debug, Clone)]
pub struct Case {
    /// "throughput" or "latency".
    pub kind: &'static str,
    pub qos: u8,
    pub payload: usize,
    pub count: u64,
    pub rate: f64,
}

impl Case {
    pub fn label(&self) -> String {
        match self.kind {
            "latency" => format!(
                "latency QoS {} {} B at {} msg/s",
                self.qos, self.payload, self.rate
            ),
            _ => format!("throughput QoS {} {} B", self.qos, self.payload),
        }
    }
}

fn throughput_cases(scale: u64) -> Vec<Case> {
    let mut v = Vec::new();
    for (payload, counts) in [
        (64, [200_000, 100_000, 50_000]),
        (4096, [50_000, 40_000, 20_000]),
    ] {
        for (qos, count) in counts.into_iter().enumerate() {
            v.push(Case {
                kind: "throughput",
                qos: qos as u8,
                payload,
                count: count / scale,
                rate: 0.0,
            });
        }
    }
    v
}

fn latency_cases(scale: u64) -> Vec<Case> {
    (0..3)
        .map(|qos| Case {
            kind: "latency",
            qos,
            payload: 64,
            count: 20_000 / scale,
            rate: 5000.0,
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Child(a) => child(a),
        Cmd::Reconnect { count, out } => on_runtime(async move {
            let md = reconnect::run(count, &out).await?;
            println!("{md}");
            Ok(())
        }),
        Cmd::Lossy(a) => lossy::run(a),
        Cmd::NetChild(a) => on_runtime(lossy::child(a)),
        Cmd::Replot { from, img } => replot(&from, &img),
        Cmd::All(a) => {
            let mut cases = throughput_cases(a.scale_down.max(1));
            cases.extend(latency_cases(a.scale_down.max(1)));
            if let Some(only) = &a.only {
                cases.retain(|c| c.kind == only.as_str());
            }
            compare(&a, cases, true)
        }
        Cmd::E2e(a) => {
            let mut cases: Vec<Case> = throughput_cases(a.scale_down.max(1))
                .into_iter()
                .filter(|c| c.payload == 64)
                .collect();
            cases.extend(latency_cases(a.scale_down.max(1)));
            compare(&a, cases, false)
        }
    }
}

/// Runs `f` on a 2-worker tokio runtime; an error is printed.
fn on_runtime(
    f: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async move {
        match tokio::spawn(f).await {
            Ok(r) => r,
            Err(e) => Err(format!("panicked: {e}")),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn child(a: ChildArgs) -> ExitCode {
    let url = a.url.clone();
    let rest = url.trim_start_matches("mqtt://");
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(1883)),
        None => (rest.to_string(), 1883),
    };
    let s = Scenario {
        url,
        host,
        port,
        qos: a.qos,
        payload: a.payload,
        count: a.count,
        rate: a.rate,
        window: a.window.max(1),
        run_id: a.run_id,
        idle: Duration::from_secs(10),
    };
    // The same runtime for every client: tokio's multi-thread scheduler, 2 workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("child: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a worker thread, like the clients' own tasks (block_on's thread is not a worker).
    let client = a.client.clone();
    let r = rt.block_on(async move {
        let task = tokio::spawn(async move { clients::run(&client, &s).await });
        match tokio::time::timeout(Duration::from_secs(150), task).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Ok(Err(format!("the run panicked: {e}"))),
            Err(e) => Err(e),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    match r {
        Ok(Ok(m)) => {
            println!("{}", m.to_json());
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("child {}: {e}", a.client);
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("child {}: timed out", a.client);
            ExitCode::FAILURE
        }
    }
}

fn replot(from: &std::path::Path, img: &std::path::Path) -> ExitCode {
    let parsed = std::fs::read_to_string(from)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()));
    let v = match parsed {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cannot read {}: {e}", from.display());
            return ExitCode::FAILURE;
        }
    };
    let num = |x: &serde_json::Value, k: &str| x.get(k).and_then(|n| n.as_f64()).unwrap_or(0.0);
    let cases: Vec<Case> = v["cases"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| Case {
                    kind: if c["kind"] == "latency" {
                        "latency"
                    } else {
                        "throughput"
                    },
                    qos: num(c, "qos") as u8,
                    payload: num(c, "payload") as usize,
                    count: num(c, "count") as u64,
                    rate: num(c, "rate"),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut results: Results = BTreeMap::new();
    let mut clients: Vec<String> = Vec::new();
    for r in v["results"].as_array().into_iter().flatten() {
        let client = r["client"].as_str().unwrap_or_default().to_string();
        let runs = r["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Measured::from_json)
            .collect();
        results.insert((num(r, "case") as usize, client.clone()), runs);
        if !clients.contains(&client) {
            clients.push(client);
        }
    }
    clients.sort_by_key(|c| CLIENTS.iter().position(|k| k == c).unwrap_or(usize::MAX));
    let runs = results.values().map(Vec::len).max().unwrap_or(0);
    println!(
        "{}",
        report::markdown(&cases, &clients, &results, runs, true, &[])
    );
    draw(&cases, &clients, &results, img);
    ExitCode::SUCCESS
}

fn draw(cases: &[Case], clients: &[String], results: &Results, img: &std::path::Path) {
    let _ = std::fs::create_dir_all(img);
    let has = |kind: &str| cases.iter().any(|c| c.kind == kind);
    for payload in [64usize, 4096].into_iter().filter(|_| has("throughput")) {
        let path = img.join(format!("peers-throughput-{payload}b.svg"));
        if let Err(e) = plot::throughput_svg(&path, payload, cases, clients, results) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    if has("latency") {
        let path = img.join("peers-latency-p99.svg");
        if let Err(e) = plot::latency_svg(&path, cases, clients, results) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}

/// Runs one child and parses its JSON line.
fn run_child(client: &str, url: &str, case: &Case, run_id: &str) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["child", "--client", client, "--url", url])
        .args([
            "--qos",
            &case.qos.to_string(),
            "--payload",
            &case.payload.to_string(),
        ])
        .args([
            "--count",
            &case.count.to_string(),
            "--rate",
            &case.rate.to_string(),
        ])
        .args(["--run-id", run_id])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the child: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line).map_err(|_| {
        format!(
            "{client}: no result ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Measured::from_json(&v).ok_or_else(|| format!("{client}: bad result line {line}"))
}

/// The results: per case index, per client, one Measured per run.
pub type Results = BTreeMap<(usize, String), Vec<Measured>>;

fn compare(a: &RunArgs, cases: Vec<Case>, full: bool) -> ExitCode {
    let clients: Vec<String> = if a.clients.is_empty() {
        CLIENTS.iter().map(|s| s.to_string()).collect()
    } else {
        a.clients.clone()
    };
    let broker = match &a.broker {
        Some(_) => None,
        None => match steadfast_chaos::mosquitto::Mosquitto::builder()
            .extra_config("set_tcp_nodelay true")
            .extra_config("max_connections -1")
            .start()
        {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("cannot start a private mosquitto: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let url = match (&a.broker, &broker) {
        (Some(b), _) => format!("mqtt://{b}"),
        (None, Some(b)) => b.url(),
        (None, None) => unreachable!(),
    };
    eprintln!(
        "broker {url}; {} cases x {} clients x {} runs, each in a child process",
        cases.len(),
        clients.len(),
        a.runs
    );
    let mut results: Results = BTreeMap::new();
    let mut failures = Vec::new();
    let mut seq = 0u64;
    for run in 0..a.runs {
        for (ci, case) in cases.iter().enumerate() {
            // Interleaved: A B C, then B C A, then C A B, ...
            for k in 0..clients.len() {
                let client = &clients[(k + run) % clients.len()];
                seq += 1;
                let run_id = format!("{:x}-{seq}", std::process::id());
                match run_child(client, &url, case, &run_id) {
                    Ok(m) => {
                        eprintln!(
                            "run {}/{} {:<32} {:<9} {:>9.0} msg/s  p50 {:>8.0} us  p99 {:>8.0} us  cpu {:>6.2} us/msg  rss {:>6} KiB  lost {} dup {}",
                            run + 1,
                            a.runs,
                            case.label(),
                            client,
                            m.msgs_per_s,
                            m.p50_us,
                            m.p99_us,
                            m.cpu_per_msg_us,
                            m.maxrss_kib,
                            m.lost,
                            m.duplicates
                        );
                        results.entry((ci, client.clone())).or_default().push(m);
                    }
                    Err(e) => {
                        eprintln!(
                            "run {}/{} {} {client}: FAILED: {e}",
                            run + 1,
                            a.runs,
                            case.label()
                        );
                        failures.push(format!("{} {client}: {e}", case.label()));
                    }
                }
            }
        }
    }
    drop(broker);
    let md = report::markdown(&cases, &clients, &results, a.runs, full, &failures);
    println!("{md}");
    let _ = std::fs::create_dir_all(&a.out);
    let _ = std::fs::write(a.out.join(if full { "report.md" } else { "e2e.md" }), &md);
    let raw = json!({
        "cases": cases.iter().map(|c| json!({"kind": c.kind, "qos": c.qos, "payload": c.payload, "count": c.count, "rate": c.rate})).collect::<Vec<_>>(),
        "results": results.iter().map(|((ci, client), ms)| json!({
            "case": ci, "client": client, "runs": ms.iter().map(|m| m.to_json()).collect::<Vec<_>>()
        })).collect::<Vec<_>>(),
    });
    let _ = std::fs::write(
        a.out.join(if full { "results.json" } else { "e2e.json" }),
        serde_json::to_string_pretty(&raw).unwrap_or_default(),
    );
    if full {
        draw(&cases, &clients, &results, &a.img);
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
