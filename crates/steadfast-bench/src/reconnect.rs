//! `steadfast-bench reconnect`: how long a reconnect takes (transport start to CONNACK) over
//! TCP, TLS over TCP and QUIC, with a full and with a resumed TLS handshake, on loopback
//! through one private Mosquitto (QUIC through the bench's QUIC-to-TCP bridge in front of it).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use crate::net::{Brokers, Pki};
use crate::transport::{quantile_ms, reconnects, Sample};

/// The cases: (label, transport, keep the connector).
pub const CASES: [(&str, &str, bool); 5] = [
    ("TCP", "tcp", false),
    ("TLS, full handshake", "tls", false),
    ("TLS, resumed", "tls", true),
    ("QUIC, full handshake", "quic", false),
    ("QUIC, resumed", "quic", true),
];

/// One case's figures.
#[derive(Debug, Clone)]
pub struct Row {
    pub label: String,
    pub samples: usize,
    pub resumed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Summarises samples.
pub fn row(label: &str, samples: &[Sample]) -> Row {
    let mut ms: Vec<f64> = samples
        .iter()
        .map(|s| s.took.as_secs_f64() * 1000.0)
        .collect();
    Row {
        label: label.to_string(),
        samples: samples.len(),
        resumed: samples.iter().filter(|s| s.resumed).count(),
        p50_ms: quantile_ms(&mut ms, 0.5),
        p99_ms: quantile_ms(&mut ms, 0.99),
    }
}

/// The markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut md =
        String::from("| transport | connects | resumed | p50 | p99 |\n|---|---:|---:|---:|---:|\n");
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} ms | {:.2} ms |\n",
            r.label, r.samples, r.resumed, r.p50_ms, r.p99_ms
        ));
    }
    md
}

/// Runs every case `n` times, interleaved in rounds of 10 so that all see the same machine
/// load. Returns the rows.
pub async fn measure(
    url_of: &(dyn Fn(&str) -> String + Sync),
    ca: &Path,
    n: usize,
    tag: &str,
) -> Result<Vec<Row>, String> {
    let mut all: Vec<Vec<Sample>> = vec![Vec::new(); CASES.len()];
    let per_round = 10.min(n.max(1));
    let mut round = 0;
    while all.iter().any(|s| s.len() < n) {
        for (k, (label, transport, keep)) in CASES.iter().enumerate() {
            let want = per_round.min(n - all[k].len());
            if want == 0 {
                continue;
            }
            let id = format!("{tag}-{round}-{k}");
            let got = reconnects(transport, &url_of(transport), ca, *keep, want, &id)
                .await
                .map_err(|e| format!("{label}: {e}"))?;
            all[k].extend(got);
        }
        round += 1;
    }
    Ok(CASES
        .iter()
        .zip(&all)
        .map(|((label, _, _), s)| row(label, s))
        .collect())
}

pub async fn run(n: usize, out: &Path) -> Result<String, String> {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let pki = Pki::generate(&[ip]).map_err(|e| e.to_string())?;
    let brokers = Brokers::start(ip, &pki).await.map_err(|e| e.to_string())?;
    eprintln!(
        "reconnect: {n} connects per case through Mosquitto on {} (TLS on {}, QUIC bridge on {})",
        brokers.tcp, brokers.tls, brokers.quic
    );
    let url_of = |t: &str| brokers.url(t);
    let rows = measure(&url_of, &pki.ca, n, &format!("{:x}", std::process::id())).await?;
    brokers.stop();
    let md = table(&rows);
    let _ = std::fs::create_dir_all(out);
    let _ = std::fs::write(out.join("reconnect.md"), &md);
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(md)
}
