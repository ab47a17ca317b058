//! The markdown report: medians per client and case, and steadfast's ratios to each peer.

use std::fmt::Write;

use crate::common::Measured;
use crate::{Case, Results};

/// The median of `f` over the runs of (case, client).
pub fn median(
    results: &Results,
    ci: usize,
    client: &str,
    f: impl Fn(&Measured) -> f64,
) -> Option<f64> {
    let runs = results.get(&(ci, client.to_string()))?;
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt_num(x: Option<f64>, decimals: usize) -> String {
    match x {
        None => "–".into(),
        Some(x) if decimals == 0 => group(x.round() as u64),
        Some(x) => format!("{x:.decimals$}"),
    }
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// steadfast's advantage: `ours / theirs` when higher is better, else `theirs / ours`
/// (so > 1 always means steadfast is ahead).
fn ratio(ours: Option<f64>, theirs: Option<f64>, higher_better: bool) -> String {
    match (ours, theirs) {
        (Some(o), Some(t)) if o > 0.0 && t > 0.0 => {
            let r = if higher_better { o / t } else { t / o };
            if r >= 1.0 {
                format!("**{r:.2}x**")
            } else {
                format!("{r:.2}x")
            }
        }
        _ => "–".into(),
    }
}

struct Metric<'a> {
    title: &'a str,
    unit: &'a str,
    decimals: usize,
    higher_better: bool,
    f: fn(&Measured) -> f64,
}

fn table(
    out: &mut String,
    cases: &[(usize, &Case)],
    clients: &[String],
    results: &Results,
    m: &Metric,
) {
    if cases.is_empty() {
        return;
    }
    let peers: Vec<&String> = clients.iter().filter(|c| *c != "steadfast").collect();
    let _ = writeln!(out, "\n#### {}\n", m.title);
    let mut head = String::from("| case |");
    let mut line = String::from("|---|");
    for c in clients {
        let _ = write!(head, " {c} ({}) |", m.unit);
        line.push_str("---:|");
    }
    for p in &peers {
        let _ = write!(head, " steadfast vs {p} |");
        line.push_str("---:|");
    }
    let _ = writeln!(out, "{head}\n{line}");
    for (ci, case) in cases {
        let mut row = format!("| QoS {} {} |", case.qos, size(case.payload));
        let ours = median(results, *ci, "steadfast", m.f);
        for c in clients {
            let _ = write!(
                row,
                " {} |",
                fmt_num(median(results, *ci, c, m.f), m.decimals)
            );
        }
        for p in &peers {
            let _ = write!(
                row,
                " {} |",
                ratio(ours, median(results, *ci, p, m.f), m.higher_better)
            );
        }
        let _ = writeln!(out, "{row}");
    }
}

fn size(b: usize) -> String {
    if b >= 1024 && b.is_multiple_of(1024) {
        format!("{} KiB", b / 1024)
    } else {
        format!("{b} B")
    }
}

/// The report.
pub fn markdown(
    cases: &[Case],
    clients: &[String],
    results: &Results,
    runs: usize,
    full: bool,
    failures: &[String],
) -> String {
    let mut out = String::new();
    let tput: Vec<(usize, &Case)> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == "throughput")
        .collect();
    let lat: Vec<(usize, &Case)> = cases
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == "latency")
        .collect();
    let _ = writeln!(
        out,
        "Medians of {runs} runs per cell; ratios are steadfast's advantage (> 1: steadfast ahead, in bold)."
    );
    table(
        &mut out,
        &tput,
        clients,
        results,
        &Metric {
            title: "Throughput, 1 publisher -> 1 subscriber (messages received per second)",
            unit: "msg/s",
            decimals: 0,
            higher_better: true,
            f: |m| m.msgs_per_s,
        },
    );
    if !lat.is_empty() {
        table(
            &mut out,
            &lat,
            clients,
            results,
            &Metric {
                title: "Latency p99 at a fixed 5,000 msg/s (publish to receive)",
                unit: "µs",
                decimals: 0,
                higher_better: false,
                f: |m| m.p99_us,
            },
        );
        table(
            &mut out,
            &lat,
            clients,
            results,
            &Metric {
                title: "Latency p50 at a fixed 5,000 msg/s",
                unit: "µs",
                decimals: 0,
                higher_better: false,
                f: |m| m.p50_us,
            },
        );
    }
    if full {
        table(&mut out, &tput, clients, results, &Metric {
            title: "CPU time per message (user + system of the client process, publisher and subscriber together; throughput runs)",
            unit: "µs",
            decimals: 2,
            higher_better: false,
            f: |m| m.cpu_per_msg_us,
        });
        table(
            &mut out,
            &lat,
            clients,
            results,
            &Metric {
                title: "CPU time per message at 5,000 msg/s",
                unit: "µs",
                decimals: 2,
                higher_better: false,
                f: |m| m.cpu_per_msg_us,
            },
        );
        table(
            &mut out,
            &tput,
            clients,
            results,
            &Metric {
                title: "Peak RSS of the client process (throughput runs)",
                unit: "MiB",
                decimals: 1,
                higher_better: false,
                f: |m| m.maxrss_kib as f64 / 1024.0,
            },
        );
        table(
            &mut out,
            &lat,
            clients,
            results,
            &Metric {
                title: "Peak RSS of the client process at 5,000 msg/s",
                unit: "MiB",
                decimals: 1,
                higher_better: false,
                f: |m| m.maxrss_kib as f64 / 1024.0,
            },
        );
    }
    let lossy: Vec<String> = results
        .iter()
        .filter(|(_, ms)| ms.iter().any(|m| m.lost > 0 || m.duplicates > 0))
        .map(|((ci, client), ms)| {
            let lost: u64 = ms.iter().map(|m| m.lost).sum();
            let dup: u64 = ms.iter().map(|m| m.duplicates).sum();
            format!(
                "{} {client}: lost {lost}, duplicates {dup} (all runs)",
                cases[*ci].label()
            )
        })
        .collect();
    let _ = writeln!(out);
    if lossy.is_empty() {
        let _ = writeln!(out, "Every run received every message exactly once.");
    } else {
        let _ = writeln!(out, "Runs with loss or duplicates:");
        for l in lossy {
            let _ = writeln!(out, "- {l}");
        }
    }
    for f in failures {
        let _ = writeln!(out, "- failed: {f}");
    }
    out
}
