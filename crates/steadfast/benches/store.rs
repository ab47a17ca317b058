//! Durable publishing throughput: QoS 1 messages through a private Mosquitto with a window of
//! concurrent `publish` futures, without a store, with the in-memory store and with the
//! durable (SQLite) store, in the same run.
//!
//! `cargo bench -p steadfast --bench store` (options after `--`: `--messages N`,
//! `--window N`, `--rounds N`, `--qos 1|2`, `--payload BYTES`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use steadfast::store::{DurableStore, MemoryStore};
use steadfast::Message;
use steadfast::{ClientBuilder, ClientError, PublishOutcome, QoS, State};
use steadfast_chaos::mosquitto::Mosquitto;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    NoStore,
    Memory,
    Durable,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::NoStore => "no store",
            Mode::Memory => "MemoryStore",
            Mode::Durable => "DurableStore",
        }
    }
}

struct Opts {
    messages: usize,
    window: usize,
    rounds: usize,
    qos: QoS,
    payload: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        messages: 20_000,
        window: 256,
        rounds: 5,
        qos: QoS::AtLeastOnce,
        payload: 64,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let val = || {
            args.get(i + 1)
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a number")
        };
        match args[i].as_str() {
            "--messages" => o.messages = val(),
            "--window" => o.window = val().max(1),
            "--rounds" => o.rounds = val().max(1),
            "--payload" => o.payload = val(),
            "--qos" => {
                o.qos = match val() {
                    2 => QoS::ExactlyOnce,
                    _ => QoS::AtLeastOnce,
                }
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

async fn run(url: &str, mode: Mode, round: usize, o: &Opts, dir: &std::path::Path) -> f64 {
    let mut b = ClientBuilder::new()
        .server(url)
        .client_id(format!("bench-store-{}-{round}", mode.name()))
        .keep_alive(Duration::from_secs(60));
    match mode {
        Mode::NoStore => {}
        Mode::Memory => b = b.store(MemoryStore::new()),
        Mode::Durable => {
            let d = dir.join(format!("durable-{round}"));
            b = b.store(DurableStore::open(&d).expect("open the store"));
        }
    }
    let (client, mut events) = b.build().expect("build");
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    let s = tokio::time::timeout(
        Duration::from_secs(10),
        client.wait_for_state(|s| s == State::Connected),
    )
    .await
    .expect("connect");
    assert_eq!(s, State::Connected);

    let payload = Bytes::from(vec![b'x'; o.payload]);
    let start = Instant::now();
    let mut inflight: FuturesUnordered<_> = FuturesUnordered::new();
    for _ in 0..o.messages {
        if inflight.len() >= o.window {
            let done: Option<Result<PublishOutcome, ClientError>> = inflight.next().await;
            done.expect("a publish").expect("published");
        }
        let c = client.clone();
        let p = payload.clone();
        let qos = o.qos;
        inflight.push(async move { c.send(Message::new("bench/store", p).qos(qos)).await });
    }
    while let Some(r) = inflight.next().await {
        r.expect("published");
    }
    let rate = o.messages as f64 / start.elapsed().as_secs_f64();
    client.disconnect().await.expect("disconnect");
    rate
}

/// Median and 90th percentile of a 4 KiB overwrite + fsync in `dir`, in microseconds: what
/// one durable commit costs at least on this disk right now.
fn fsync_latency(dir: &std::path::Path) -> (f64, f64) {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    f.write_all(&[0u8; 65536]).expect("probe");
    f.sync_all().expect("probe");
    let mut us = Vec::new();
    for i in 0..200u64 {
        let t = Instant::now();
        f.seek(SeekFrom::Start((i % 16) * 4096)).expect("probe");
        f.write_all(&[1u8; 4096]).expect("probe");
        f.sync_all().expect("probe");
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_file(path);
    us.sort_by(|a, b| a.total_cmp(b));
    (us[us.len() / 2], us[us.len() * 9 / 10])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let o = opts();
    let broker = Mosquitto::start().expect("start a private mosquitto");
    let url = broker.url();
    let dir = tempfile::Builder::new()
        .prefix("steadfast-bench-store")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let modes = [Mode::NoStore, Mode::Memory, Mode::Durable];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    println!(
        "store bench: {} QoS {} messages of {} bytes, {} publish futures in flight, {} rounds, broker {url}",
        o.messages, o.qos as u8, o.payload, o.window, o.rounds
    );
    let (p50, p90) = fsync_latency(dir.path());
    println!("disk before: 4 KiB write + fsync median {p50:.0} us, p90 {p90:.0} us");
    rt.block_on(async {
        // Warm-up: connections, allocator, page cache.
        let warm = Opts {
            messages: o.messages / 10,
            ..o
        };
        for &m in &modes {
            run(&url, m, 1000, &warm, dir.path()).await;
        }
        for round in 0..o.rounds {
            for (i, &m) in modes.iter().enumerate() {
                let r = run(&url, m, round, &o, dir.path()).await;
                println!("  round {round}: {:<13} {r:>9.0} msgs/s", m.name());
                rates[i].push(r);
            }
        }
    });
    let (p50, p90) = fsync_latency(dir.path());
    println!("disk after:  4 KiB write + fsync median {p50:.0} us, p90 {p90:.0} us");
    let med: Vec<f64> = rates.into_iter().map(median).collect();
    println!("median msgs/s:");
    for (m, r) in modes.iter().zip(&med) {
        println!("  {:<13} {r:>9.0}", m.name());
    }
    println!("DurableStore / MemoryStore = {:.2}", med[2] / med[1]);
    println!("DurableStore / no store    = {:.2}", med[2] / med[0]);
}
