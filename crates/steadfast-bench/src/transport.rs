//! The measurements of the transport benchmarks (`reconnect`, `lossy`): steadfast only, over
//! TCP, TLS over TCP and QUIC, through one Mosquitto (see [`crate::net`]).
//!
//! - reconnect time: from the `Connecting` to the `Connected` lifecycle event of one client
//!   (both stamped by the core: transport start, handshakes, CONNECT, CONNACK; no backoff),
//!   with a fresh connector per connect (a full TLS handshake) or one connector kept across
//!   connects (the session resumed, checked with `DefaultConnector::tls_handshakes`);
//! - latency: QoS 1 at a fixed rate, publish to receive, 1 publisher and 1 subscriber;
//! - flood: QoS 1 publishing as fast as the window of unacknowledged publishes allows for a
//!   fixed time, messages received per second;
//! - outage: QoS 1 at a fixed rate while the link is cut for a while (by the caller); every
//!   message's receive time is reported, to find when delivery resumed.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use steadfast::transport::{DefaultConnector, TlsOptions};
use steadfast::{ByteStr, Client, ClientBuilder, ClientEvent, Events, Lifecycle, Message, QoS};

use crate::common::{get_header, put_header};

/// The transports compared, as named in the reports.
pub const TRANSPORTS: [&str; 3] = ["tcp", "tls", "quic"];

/// A connector for `transport`: TLS settings (the bench CA) for `tls` and `quic`.
pub fn connector(transport: &str, ca: &Path) -> Result<DefaultConnector, String> {
    if transport == "tcp" {
        return Ok(DefaultConnector::new());
    }
    DefaultConnector::with_tls(TlsOptions::new().ca_file(ca)).map_err(|e| e.to_string())
}

/// Builds a client on `connector` and waits for its first `Connected`. Returns the client, its
/// events, and the time from `Connecting` to `Connected`.
pub async fn connect(
    url: &str,
    connector: &DefaultConnector,
    id: &str,
) -> Result<(Client, Events, Duration), String> {
    let (client, mut events) = ClientBuilder::from_url(url)
        .map_err(|e| e.to_string())?
        .client_id(id)
        .keep_alive(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(20))
        .connector(connector.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let mut started = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| format!("{url}: no CONNACK within 30 s"))?
            .ok_or_else(|| format!("{url}: the client stopped"))?;
        if let ClientEvent::Lifecycle { at, event } = ev {
            match event {
                Lifecycle::Connecting { .. } => started = Some(at),
                Lifecycle::Connected { .. } => {
                    let took = started
                        .and_then(|s| at.duration_since(s).ok())
                        .unwrap_or_default();
                    return Ok((client, events, took));
                }
                Lifecycle::Fatal { reason } => return Err(format!("{url}: {reason}")),
                _ => {}
            }
        }
    }
}

/// One reconnect-time sample: the time, and whether the TLS session was resumed.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub took: Duration,
    pub resumed: bool,
}

/// `n` connects of a client to `url`, each after the previous client disconnected. With
/// `keep`, one connector serves them all (after one connect to get a ticket), so TLS sessions
/// resume; without, each gets a fresh connector (a full handshake).
pub async fn reconnects(
    transport: &str,
    url: &str,
    ca: &Path,
    keep: bool,
    n: usize,
    run_id: &str,
) -> Result<Vec<Sample>, String> {
    let mut kept = connector(transport, ca)?;
    if keep {
        let (c, _ev, _) = connect(url, &kept, &format!("rc-{run_id}-warm")).await?;
        let _ = c.disconnect().await;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if !keep {
            kept = connector(transport, ca)?;
        }
        let before = kept.tls_handshakes().resumed;
        let (c, _ev, took) = connect(url, &kept, &format!("rc-{run_id}-{i}")).await?;
        out.push(Sample {
            took,
            resumed: kept.tls_handshakes().resumed > before,
        });
        let _ = tokio::time::timeout(Duration::from_secs(5), c.disconnect()).await;
    }
    Ok(out)
}

fn publish(topic: &ByteStr, buf: &[u8]) -> Message {
    Message::new(topic.as_str(), Bytes::copy_from_slice(buf)).qos(QoS::AtLeastOnce)
}

/// A connected publisher and a subscriber (QoS 1) on `topic`.
async fn pair(
    url: &str,
    connector: &DefaultConnector,
    run_id: &str,
) -> Result<(Client, Client, steadfast::Subscription, ByteStr), String> {
    let topic = format!("bench/{run_id}/net");
    let (sub, ev, _) = connect(url, connector, &format!("net-sub-{run_id}")).await?;
    tokio::spawn(drain(ev));
    let stream = sub
        .subscribe_stream(topic.clone(), QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    let (publisher, ev, _) = connect(url, connector, &format!("net-pub-{run_id}")).await?;
    tokio::spawn(drain(ev));
    Ok((publisher, sub, stream, ByteStr::from(topic)))
}

async fn drain(mut ev: Events) {
    while ev.recv().await.is_some() {}
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What a fixed-rate run saw: per message received (first copy only), its sequence number,
/// its publish time and its receive time (wall clock, ns since the Unix epoch: the parent
/// process compares them with the outage it caused).
#[derive(Debug, Default)]
pub struct Paced {
    pub sent: u64,
    pub received: Vec<(u64, u64, u64)>,
    pub duplicates: u64,
}

/// What a fixed-rate run sends.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Messages per second.
    pub rate: f64,
    /// For this long.
    pub secs: f64,
    /// Payload bytes (at least the 16-byte header).
    pub payload: usize,
}

/// QoS 1 messages at `pace`, then waits (at most `grace`) until all have arrived. `on_start`
/// runs once publishing has begun.
pub async fn paced(
    url: &str,
    connector: &DefaultConnector,
    run_id: &str,
    pace: Pace,
    grace: Duration,
    on_start: impl FnOnce(),
) -> Result<Paced, String> {
    let Pace {
        rate,
        secs,
        payload,
    } = pace;
    let (publisher, sub, mut stream, topic) = pair(url, connector, run_id).await?;
    let count = (rate * secs).round() as u64;
    let receiver = tokio::spawn(async move {
        let mut seen = vec![false; count as usize];
        let mut out = Paced::default();
        let mut unique = 0u64;
        while unique < count {
            let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(60), stream.recv()).await
            else {
                break;
            };
            let now = wall_ns();
            let Some((seq, sent)) = get_header(m.payload()) else {
                continue;
            };
            match seen.get_mut(seq as usize) {
                Some(s) if !*s => {
                    *s = true;
                    unique += 1;
                    out.received.push((seq, sent, now));
                }
                Some(_) => out.duplicates += 1,
                None => {}
            }
        }
        out
    });
    let mut buf = vec![b'.'; payload.max(16)];
    let began = tokio::time::Instant::now();
    let mut on_start = Some(on_start);
    for seq in 0..count {
        tokio::time::sleep_until(began + Duration::from_secs_f64(seq as f64 / rate)).await;
        put_header(&mut buf, seq, wall_ns());
        // Accepted into the client (queued while the link is down), its acknowledgement not
        // waited for: the rate holds through an outage.
        drop(
            publisher
                .publish_accepted(publish(&topic, &buf))
                .await
                .map_err(|e| e.to_string())?,
        );
        if let Some(f) = on_start.take() {
            f();
        }
    }
    let receiver_done = tokio::time::timeout(grace, receiver).await;
    let mut out = match receiver_done {
        Ok(r) => r.map_err(|e| e.to_string())?,
        Err(_) => return Err(format!("not every message arrived within {grace:?}")),
    };
    out.sent = count;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = publisher.disconnect().await;
        let _ = sub.disconnect().await;
    })
    .await;
    Ok(out)
}

/// QoS 1 as fast as `window` unacknowledged publishes allow, for `secs`: messages received
/// per second in that time.
pub async fn flood(
    url: &str,
    connector: &DefaultConnector,
    run_id: &str,
    secs: f64,
    payload: usize,
    window: usize,
) -> Result<f64, String> {
    let (publisher, sub, mut stream, topic) = pair(url, connector, run_id).await?;
    let dur = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok(Some(_)) =
            tokio::time::timeout_at(tokio::time::Instant::from_std(start + dur), stream.recv())
                .await
        {
            n += 1;
        }
        n
    });
    let mut buf = vec![b'.'; payload.max(16)];
    let mut acks = VecDeque::with_capacity(window);
    let mut seq = 0u64;
    while start.elapsed() < dur {
        put_header(&mut buf, seq, 0);
        seq += 1;
        acks.push_back(
            publisher
                .publish_accepted(publish(&topic, &buf))
                .await
                .map_err(|e| e.to_string())?,
        );
        if acks.len() >= window {
            if let Some(a) = acks.pop_front() {
                let left = dur.saturating_sub(start.elapsed());
                if tokio::time::timeout(left, a).await.is_err() {
                    break;
                }
            }
        }
    }
    let n = receiver.await.map_err(|e| e.to_string())?;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = publisher.disconnect().await;
        let _ = sub.disconnect().await;
    })
    .await;
    Ok(n as f64 / secs)
}

/// The `q` quantile (nearest rank) of `v`, sorted in place.
pub fn quantile_ms(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
