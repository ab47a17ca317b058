//! `steadfast-bench lossy`: TCP, TLS over TCP and QUIC compared on a link with 100 ms RTT and
//! loss, built by the bench itself (needs root).
//!
//! The link: a network namespace for the clients, and between it and the host's namespace a
//! point-to-point link made of two TUN devices (one on each side) and this process, which
//! carries every IP packet across after 50 ms and drops it with the chosen probability, each
//! way (so 100 ms RTT and X% loss each way, the model of `tc netem delay 50ms loss X%` on
//! both ends). It is done in userspace because the kernel of the development machine has no
//! `sch_netem`. TUN devices get single packets (TCP segments and UDP datagrams, no
//! offloads), so a loss is one packet. The broker side (one Mosquitto with a plain and a TLS
//! 1.3 listener, and the bench's QUIC-to-TCP bridge in front of it) listens on the host's
//! end; every measurement runs in a child process inside the namespace (this binary,
//! re-executed as `net-child` under `ip netns exec`). The namespace is removed on exit, also
//! after a failure or Ctrl-C (the TUN devices go with the process), and a leftover from an
//! earlier run that was killed is removed at the start.
//!
//! Per loss level and transport: p50 / p99 publish-to-receive latency at QoS 1 and a fixed
//! rate; throughput (QoS 1 flood of 1 KiB messages); recovery after an outage of the link
//! (every packet dropped both ways): the time from the link's return until the next message
//! is delivered. At 0% loss, the reconnect time of each transport too.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::net::{Brokers, Pki};
use crate::reconnect;
use crate::transport::{self, quantile_ms, TRANSPORTS};

const NS: &str = "steadfast-bench-lossy";
const HOST_IF: &str = "sfb-host";
const NS_IF: &str = "sfb-client";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const NS_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// One-way delay: 100 ms RTT.
const DELAY: Duration = Duration::from_millis(50);
/// The link's time back between two outages, in seconds.
const GAP: f64 = 4.0;

#[derive(Args, Debug, Clone)]
pub struct LossyArgs {
    /// Loss levels in percent, each way (repeatable) [default: 0, 2, 5].
    #[arg(long = "loss")]
    losses: Vec<f64>,
    /// The fixed rate of the latency and outage runs, in messages per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Length of each latency run, in seconds.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Length of each throughput run, in seconds.
    #[arg(long, default_value_t = 5.0)]
    flood_seconds: f64,
    /// Payload of the throughput runs, in bytes (the latency runs use 64 B).
    #[arg(long, default_value_t = 1024)]
    flood_payload: usize,
    /// The outage, in seconds.
    #[arg(long, default_value_t = 3.0)]
    outage: f64,
    /// Outages per transport and loss level (the median recovery is reported).
    #[arg(long, default_value_t = 3)]
    outages: usize,
    /// Reconnects per case at 0% loss (0: none).
    #[arg(long, default_value_t = 20)]
    reconnects: usize,
    /// Where lossy.md and lossy.json go.
    #[arg(long, default_value = "target/steadfast-bench")]
    out: PathBuf,
    /// Where the SVG plots go.
    #[arg(long, default_value = "docs/img")]
    img: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct NetChildArgs {
    #[arg(long)]
    mode: String,
    #[arg(long)]
    transport: String,
    #[arg(long)]
    url: String,
    /// `tcp=URL,tls=URL,quic=URL` for `--mode reconnect`.
    #[arg(long, default_value = "")]
    urls: String,
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 64)]
    payload: usize,
    #[arg(long, default_value_t = 20)]
    count: usize,
    #[arg(long)]
    run_id: String,
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The link: the clients' namespace, a TUN device on each side, and the threads that carry
/// packets between them with the delay and the loss. The namespace is removed when dropped
/// (the TUN devices go with the process).
struct Link {
    /// The loss probability each way, as `f64` bits (1.0 during an outage).
    loss: Arc<AtomicU64>,
}

/// `TUNSETIFF` (`_IOW('T', 202, int)`).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens (creating it) the TUN device `name`: IP packets, no packet information header, so
/// the kernel hands over single packets (segmented, no offloads).
fn open_tun(name: &str) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("cannot open /dev/net/tun: {e}"))?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    let n = name.len().min(15);
    req.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is laid out as; the fd is open.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if r < 0 {
        return Err(format!(
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

/// Carries packets read from `from` to `to` after `delay`, dropping each with the current
/// loss probability. Two threads: the reader stamps and drops, the writer waits and writes;
/// a bounded queue between them (a full queue drops, like a tail-drop router).
fn carry(from: std::fs::File, to: std::fs::File, delay: Duration, loss: Arc<AtomicU64>, seed: u64) {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::sync_channel::<(std::time::Instant, Vec<u8>)>(65_536);
    std::thread::spawn(move || {
        let mut from = from;
        let mut rng = seed | 1;
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // xorshift64*
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let r = (rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
            if r < f64::from_bits(loss.load(Ordering::Relaxed)) {
                continue;
            }
            let _ = tx.try_send((std::time::Instant::now() + delay, buf[..n].to_vec()));
        }
    });
    std::thread::spawn(move || {
        let mut to = to;
        while let Ok((due, pkt)) = rx.recv() {
            let now = std::time::Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write(&pkt).is_err() {
                return;
            }
        }
    });
}

impl Link {
    fn create() -> Result<Link, String> {
        Link::remove();
        let host_tun = open_tun(HOST_IF)?;
        let ns_tun = open_tun(NS_IF)?;
        let link = Link {
            loss: Arc::new(AtomicU64::new(0f64.to_bits())),
        };
        let (host, ns) = (HOST_IP.to_string(), NS_IP.to_string());
        sh(&["ip", "netns", "add", NS])?;
        sh(&["ip", "link", "set", NS_IF, "netns", NS])?;
        sh(&["ip", "addr", "add", &host, "peer", &ns, "dev", HOST_IF])?;
        sh(&["ip", "link", "set", HOST_IF, "txqueuelen", "10000", "up"])?;
        let in_ns = |cmd: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", NS];
            v.extend_from_slice(cmd);
            sh(&v)
        };
        in_ns(&["ip", "addr", "add", &ns, "peer", &host, "dev", NS_IF])?;
        in_ns(&["ip", "link", "set", NS_IF, "txqueuelen", "10000", "up"])?;
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        let clone = |f: &std::fs::File| f.try_clone().map_err(|e| format!("TUN: {e}"));
        let seed = wall_ns();
        carry(
            clone(&host_tun)?,
            clone(&ns_tun)?,
            DELAY,
            link.loss.clone(),
            seed,
        );
        carry(
            ns_tun,
            host_tun,
            DELAY,
            link.loss.clone(),
            seed.rotate_left(17),
        );
        Ok(link)
    }

    /// `loss` percent loss each way from now on (100: an outage).
    fn set_loss(&self, loss: f64) -> Result<(), String> {
        self.loss
            .store((loss / 100.0).clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// Removes the namespace (with its TUN device) and the host's device, if present.
    fn remove() {
        let quiet = |args: &[&str]| {
            let _ = std::process::Command::new(args[0])
                .args(&args[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["ip", "netns", "del", NS]);
        quiet(&["ip", "link", "del", HOST_IF]);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        Link::remove();
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Figures of one transport at one loss level.
#[derive(Debug, Clone, Default)]
struct Cell {
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
    msgs_per_s: f64,
    /// The median of `recoveries_ms`.
    recovery_ms: f64,
    recoveries_ms: Vec<f64>,
    outage_lost: u64,
}

pub fn run(mut a: LossyArgs) -> ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("lossy: needs root (network namespaces, veth, tc netem)");
        return ExitCode::FAILURE;
    }
    if a.losses.is_empty() {
        a.losses = vec![0.0, 2.0, 5.0];
    }
    let link = match Link::create() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lossy: cannot build the link: {e}");
            Link::remove();
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lossy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        tokio::select! {
            r = bench(&a, &link) => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(link);
    match r {
        Ok(md) => {
            println!("{md}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lossy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one `net-child` in the namespace. `during` is called with the line it prints once its
/// publishing started (`ready`), for the outage run. Returns its JSON line.
async fn net_child<F, Fut>(args: &[String], during: Option<F>) -> Result<Value, String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", NS])
        .arg(exe)
        .arg("net-child")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut during = during;
    let mut last = String::new();
    let limit = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let line = tokio::time::timeout_at(limit, lines.next_line())
            .await
            .map_err(|_| "the child timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let Some(line) = line else { break };
        if line == "ready" {
            if let Some(f) = during.take() {
                f().await?;
            }
        } else if !line.trim().is_empty() {
            last = line;
        }
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    serde_json::from_str(&last).map_err(|_| {
        format!(
            "the child gave no result ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

fn child_args(mode: &str, transport: &str, url: &str, ca: &std::path::Path) -> Vec<String> {
    [
        "--mode",
        mode,
        "--transport",
        transport,
        "--url",
        url,
        "--ca",
        &ca.display().to_string(),
        "--run-id",
        &format!(
            "{:x}-{mode}-{transport}-{}",
            std::process::id(),
            wall_ns() % 1_000_000
        ),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn bench(a: &LossyArgs, link: &Link) -> Result<String, String> {
    let ip = IpAddr::V4(HOST_IP);
    let pki = Pki::generate(&[ip]).map_err(|e| e.to_string())?;
    let brokers = Brokers::start(ip, &pki).await.map_err(|e| e.to_string())?;
    eprintln!(
        "lossy: Mosquitto on {} (TLS {}), QUIC bridge {}; clients in namespace {NS} ({NS_IP}), {DELAY:?} each way; PKI in {}",
        brokers.tcp,
        brokers.tls,
        brokers.quic,
        pki.dir().display()
    );
    let mut cells: Vec<(f64, &str, Cell)> = Vec::new();
    let mut reconnect_rows = Vec::new();
    for &loss in &a.losses {
        link.set_loss(loss)?;
        for transport in TRANSPORTS {
            let url = brokers.url(transport);
            let mut cell = Cell::default();

            let mut args = child_args("latency", transport, &url, &pki.ca);
            args.extend([
                "--rate".into(),
                a.rate.to_string(),
                "--seconds".into(),
                a.seconds.to_string(),
            ]);
            let v = net_child(
                &args,
                None::<fn() -> std::future::Ready<Result<(), String>>>,
            )
            .await
            .map_err(|e| format!("{loss}% {transport} latency: {e}"))?;
            cell.p50_ms = v["p50_ms"].as_f64().unwrap_or(f64::NAN);
            cell.p99_ms = v["p99_ms"].as_f64().unwrap_or(f64::NAN);
            cell.lost = v["lost"].as_u64().unwrap_or(0);

            let mut args = child_args("flood", transport, &url, &pki.ca);
            args.extend([
                "--seconds".into(),
                a.flood_seconds.to_string(),
                "--payload".into(),
                a.flood_payload.to_string(),
            ]);
            let v = net_child(
                &args,
                None::<fn() -> std::future::Ready<Result<(), String>>>,
            )
            .await
            .map_err(|e| format!("{loss}% {transport} flood: {e}"))?;
            cell.msgs_per_s = v["msgs_per_s"].as_f64().unwrap_or(f64::NAN);

            // Outages: 2 s of traffic, then `outages` times the link cut for `outage` and
            // back for GAP (longer than any retransmission backoff seen after 3 s).
            let mut args = child_args("outage", transport, &url, &pki.ca);
            let total = 2.0 + a.outages as f64 * (a.outage + GAP);
            args.extend([
                "--rate".into(),
                a.rate.to_string(),
                "--seconds".into(),
                total.to_string(),
            ]);
            let restored = Arc::new(std::sync::Mutex::new(Vec::new()));
            let restored_at = restored.clone();
            let (outage, outages) = (a.outage, a.outages);
            let v = net_child(
                &args,
                Some(move || async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    for _ in 0..outages {
                        link.set_loss(100.0)?;
                        tokio::time::sleep(Duration::from_secs_f64(outage)).await;
                        link.set_loss(loss)?;
                        if let Ok(mut r) = restored_at.lock() {
                            r.push(wall_ns());
                        }
                        tokio::time::sleep(Duration::from_secs_f64(GAP)).await;
                    }
                    Ok(())
                }),
            )
            .await
            .map_err(|e| format!("{loss}% {transport} outage: {e}"))?;
            let received: Vec<u64> = v["received"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.get(2).and_then(Value::as_u64))
                .collect();
            let backs = restored.lock().map(|r| r.clone()).unwrap_or_default();
            cell.recoveries_ms = backs
                .iter()
                .filter_map(|&b| {
                    received
                        .iter()
                        .filter(|&&t| t >= b)
                        .min()
                        .map(|&t| (t - b) as f64 / 1e6)
                })
                .collect();
            let mut r = cell.recoveries_ms.clone();
            cell.recovery_ms = quantile_ms(&mut r, 0.5);
            cell.outage_lost = v["lost"].as_u64().unwrap_or(0);
            eprintln!(
                "lossy: {loss}% {transport:<4}  p50 {:>7.1} ms  p99 {:>7.1} ms  lost {}  flood {:>7.0} msg/s  recovery {:?} ms (lost {})",
                cell.p50_ms, cell.p99_ms, cell.lost, cell.msgs_per_s, cell.recoveries_ms, cell.outage_lost
            );
            cells.push((loss, transport, cell));
        }
        if loss == 0.0 && a.reconnects > 0 {
            let urls = TRANSPORTS
                .iter()
                .map(|t| format!("{t}={}", brokers.url(t)))
                .collect::<Vec<_>>()
                .join(",");
            let mut args = child_args("reconnect", "all", "-", &pki.ca);
            args.extend([
                "--urls".into(),
                urls,
                "--count".into(),
                a.reconnects.to_string(),
            ]);
            let v = net_child(
                &args,
                None::<fn() -> std::future::Ready<Result<(), String>>>,
            )
            .await
            .map_err(|e| format!("reconnect: {e}"))?;
            for r in v["rows"].as_array().into_iter().flatten() {
                reconnect_rows.push(reconnect::Row {
                    label: r["label"].as_str().unwrap_or_default().to_string(),
                    samples: r["samples"].as_u64().unwrap_or(0) as usize,
                    resumed: r["resumed"].as_u64().unwrap_or(0) as usize,
                    p50_ms: r["p50_ms"].as_f64().unwrap_or(f64::NAN),
                    p99_ms: r["p99_ms"].as_f64().unwrap_or(f64::NAN),
                });
            }
            eprintln!(
                "lossy: reconnect at 0% loss:\n{}",
                reconnect::table(&reconnect_rows)
            );
        }
    }
    brokers.stop();

    let md = report(a, &cells, &reconnect_rows);
    let _ = std::fs::create_dir_all(&a.out);
    let _ = std::fs::write(a.out.join("lossy.md"), &md);
    let raw = json!({
        "rate": a.rate, "seconds": a.seconds, "flood_seconds": a.flood_seconds,
        "flood_payload": a.flood_payload, "outage": a.outage,
        "cells": cells.iter().map(|(l, t, c)| json!({
            "loss": l, "transport": t, "p50_ms": c.p50_ms, "p99_ms": c.p99_ms, "lost": c.lost,
            "msgs_per_s": c.msgs_per_s, "recovery_ms": c.recovery_ms,
            "recoveries_ms": c.recoveries_ms, "outage_lost": c.outage_lost,
        })).collect::<Vec<_>>(),
        "reconnect": reconnect_rows.iter().map(|r| json!({
            "label": r.label, "samples": r.samples, "resumed": r.resumed,
            "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
        })).collect::<Vec<_>>(),
    });
    let _ = std::fs::write(
        a.out.join("lossy.json"),
        serde_json::to_string_pretty(&raw).unwrap_or_default(),
    );
    plots(a, &cells);
    Ok(md)
}

fn report(a: &LossyArgs, cells: &[(f64, &str, Cell)], rc: &[reconnect::Row]) -> String {
    let mut md = format!(
        "| loss (each way) | transport | p50 latency | p99 latency | throughput ({} B) | recovery after a {} s outage: median (each of {}) |\n|---:|---|---:|---:|---:|---:|\n",
        a.flood_payload, a.outage, a.outages
    );
    for (loss, t, c) in cells {
        let lost = if c.lost + c.outage_lost > 0 {
            format!(" ({} lost)", c.lost + c.outage_lost)
        } else {
            String::new()
        };
        md.push_str(&format!(
            "| {loss}% | {} | {:.1} ms | {:.1} ms | {:.0} msg/s | {:.0} ms ({}){lost} |\n",
            t.to_uppercase(),
            c.p50_ms,
            c.p99_ms,
            c.msgs_per_s,
            c.recovery_ms,
            c.recoveries_ms
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !rc.is_empty() {
        md.push_str("\nReconnect time at 100 ms RTT, 0% loss:\n\n");
        md.push_str(&reconnect::table(rc));
    }
    md
}

/// A plot: file name, title, y axis, the value drawn.
type Figure = (&'static str, String, &'static str, fn(&Cell) -> f64);

fn plots(a: &LossyArgs, cells: &[(f64, &str, Cell)]) {
    let _ = std::fs::create_dir_all(&a.img);
    let groups: Vec<String> = a.losses.iter().map(|l| format!("{l}% loss")).collect();
    let series: Vec<String> = TRANSPORTS.iter().map(|t| t.to_uppercase()).collect();
    let values = |f: fn(&Cell) -> f64| -> Vec<Vec<f64>> {
        a.losses
            .iter()
            .map(|l| {
                TRANSPORTS
                    .iter()
                    .map(|t| {
                        cells
                            .iter()
                            .find(|(cl, ct, _)| cl == l && ct == t)
                            .map(|(_, _, c)| f(c))
                            .filter(|v| v.is_finite())
                            .unwrap_or(0.0)
                    })
                    .collect()
            })
            .collect()
    };
    let figs: [Figure; 3] = [
        (
            "lossy-latency-p99.svg",
            format!(
                "p99 publish-to-receive latency, QoS 1 at {} msg/s, 100 ms RTT (lower is better)",
                a.rate
            ),
            "p99 latency (ms)",
            |c| c.p99_ms,
        ),
        (
            "lossy-throughput.svg",
            format!(
                "Throughput, QoS 1 flood of {} B messages, 100 ms RTT",
                a.flood_payload
            ),
            "messages received per second",
            |c| c.msgs_per_s,
        ),
        (
            "lossy-recovery.svg",
            format!(
                "Recovery after a {} s outage: link back to next delivery, median (lower is better)",
                a.outage
            ),
            "recovery time (ms)",
            |c| c.recovery_ms,
        ),
    ];
    for (file, title, y, f) in figs {
        let path = a.img.join(file);
        if let Err(e) = crate::plot::grouped_bars(&path, &title, y, &groups, &series, &values(f)) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}

/// `net-child`: one measurement inside the namespace; prints one JSON line.
pub async fn child(a: NetChildArgs) -> Result<(), String> {
    if a.mode == "reconnect" {
        let urls: Vec<(String, String)> = a
            .urls
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let url_of = |t: &str| {
            urls.iter()
                .find(|(k, _)| k == t)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let rows = reconnect::measure(&url_of, &a.ca, a.count, &a.run_id).await?;
        let v = json!({"rows": rows.iter().map(|r| json!({
            "label": r.label, "samples": r.samples, "resumed": r.resumed,
            "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
        })).collect::<Vec<_>>()});
        println!("{v}");
        return Ok(());
    }
    let connector = transport::connector(&a.transport, &a.ca)?;
    match a.mode.as_str() {
        "latency" | "outage" => {
            let outage = a.mode == "outage";
            let r = transport::paced(
                &a.url,
                &connector,
                &a.run_id,
                transport::Pace {
                    rate: a.rate,
                    secs: a.seconds,
                    payload: a.payload,
                },
                Duration::from_secs(60),
                || {
                    if outage {
                        println!("ready");
                    }
                },
            )
            .await?;
            let mut ms: Vec<f64> = r
                .received
                .iter()
                .map(|(_, sent, got)| got.saturating_sub(*sent) as f64 / 1e6)
                .collect();
            let v = json!({
                "p50_ms": quantile_ms(&mut ms, 0.5),
                "p99_ms": quantile_ms(&mut ms, 0.99),
                "lost": r.sent - r.received.len() as u64,
                "duplicates": r.duplicates,
                "received": if outage { json!(r.received) } else { json!([]) },
            });
            println!("{v}");
            Ok(())
        }
        "flood" => {
            let n =
                transport::flood(&a.url, &connector, &a.run_id, a.seconds, a.payload, 1000).await?;
            println!("{}", json!({ "msgs_per_s": n }));
            Ok(())
        }
        other => Err(format!("unknown mode {other}")),
    }
}
