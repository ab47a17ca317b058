//! What every client runner shares: the scenario, the payload header, the receive-side
//! recorder, pacing, and the process's CPU time and peak RSS.

use std::time::{Duration, Instant};

/// Payload header: sequence number (u64) and send time (u64 ns since the run's start).
pub const HEADER_LEN: usize = 16;

/// One measured run of one client library: 1 publisher and 1 subscriber in this process.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// `mqtt://127.0.0.1:PORT` of the broker.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub qos: u8,
    pub payload: usize,
    pub count: u64,
    /// Messages per second (0: as fast as the client goes).
    pub rate: f64,
    /// Publishes awaiting their acknowledgement at once, at most.
    pub window: usize,
    /// Unique part of topics and client ids.
    pub run_id: String,
    /// Give up when nothing arrived for this long.
    pub idle: Duration,
}

impl Scenario {
    pub fn topic(&self) -> String {
        format!("bench/{}/data", self.run_id)
    }

    pub fn filter(&self) -> String {
        format!("bench/{}/#", self.run_id)
    }

    /// A payload with the header filled in and `.` after it.
    pub fn payload_buf(&self) -> Vec<u8> {
        vec![b'.'; self.payload.max(HEADER_LEN)]
    }
}

pub fn put_header(buf: &mut [u8], seq: u64, sent_ns: u64) {
    buf[0..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&sent_ns.to_le_bytes());
}

pub fn get_header(buf: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(buf.get(0..8)?.try_into().ok()?);
    let sent = u64::from_le_bytes(buf.get(8..16)?.try_into().ok()?);
    Some((seq, sent))
}

pub fn ns_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The subscriber's records: loss and duplicates by sequence number, latency per message.
#[derive(Debug)]
pub struct Recorder {
    pub start: Instant,
    pub expected: u64,
    pub received: u64,
    pub unique: u64,
    pub last_ns: u64,
    seen: Vec<u64>,
    pub latencies_ns: Vec<u64>,
}

impl Recorder {
    pub fn new(start: Instant, expected: u64) -> Recorder {
        Recorder {
            start,
            expected,
            received: 0,
            unique: 0,
            last_ns: 0,
            seen: vec![0; expected.div_ceil(64) as usize],
            latencies_ns: Vec::with_capacity(expected as usize),
        }
    }

    /// Records one message; true once every message arrived.
    pub fn record(&mut self, payload: &[u8]) -> bool {
        let now = ns_since(self.start);
        self.received += 1;
        self.last_ns = now;
        if let Some((seq, sent)) = get_header(payload) {
            if let Some(w) = self.seen.get_mut((seq / 64) as usize) {
                let bit = 1u64 << (seq % 64);
                if *w & bit == 0 {
                    *w |= bit;
                    self.unique += 1;
                    self.latencies_ns.push(now.saturating_sub(sent));
                }
            }
        }
        self.done()
    }

    pub fn done(&self) -> bool {
        self.unique >= self.expected
    }
}

/// The `q` quantile of sorted values (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU time (user + system) of this process, and its peak RSS in KiB.
pub fn rusage() -> (Duration, u64) {
    // SAFETY: getrusage with a valid pointer to a zeroed local struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64)
}

/// When the `i`-th message is due (None: as fast as possible).
pub fn due(began: tokio::time::Instant, rate: f64, i: u64) -> Option<tokio::time::Instant> {
    (rate > 0.0).then(|| began + Duration::from_secs_f64(i as f64 / rate))
}

/// What a child process reports.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub msgs_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub lost: u64,
    pub duplicates: u64,
    pub cpu_s: f64,
    pub cpu_per_msg_us: f64,
    pub maxrss_kib: u64,
    pub elapsed_s: f64,
}

impl Measured {
    /// From the recorder, the first publish and the CPU time around the run.
    pub fn new(mut rec: Recorder, first_ns: u64, cpu: Duration) -> Measured {
        rec.latencies_ns.sort_unstable();
        let elapsed = Duration::from_nanos(rec.last_ns.saturating_sub(first_ns));
        let us = |q: f64| quantile(&rec.latencies_ns, q) as f64 / 1000.0;
        let (_, maxrss) = rusage();
        Measured {
            msgs_per_s: if elapsed.is_zero() {
                0.0
            } else {
                rec.received as f64 / elapsed.as_secs_f64()
            },
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            lost: rec.expected.saturating_sub(rec.unique),
            duplicates: rec.received - rec.unique,
            cpu_s: cpu.as_secs_f64(),
            cpu_per_msg_us: cpu.as_secs_f64() * 1e6 / rec.received.max(1) as f64,
            maxrss_kib: maxrss,
            elapsed_s: elapsed.as_secs_f64(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "msgs_per_s": self.msgs_per_s,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "cpu_s": self.cpu_s,
            "cpu_per_msg_us": self.cpu_per_msg_us,
            "maxrss_kib": self.maxrss_kib,
            "elapsed_s": self.elapsed_s,
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Option<Measured> {
        let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
        Some(Measured {
            msgs_per_s: f("msgs_per_s")?,
            p50_us: f("p50_us")?,
            p99_us: f("p99_us")?,
            p999_us: f("p999_us")?,
            lost: f("lost")? as u64,
            duplicates: f("duplicates")? as u64,
            cpu_s: f("cpu_s")?,
            cpu_per_msg_us: f("cpu_per_msg_us")?,
            maxrss_kib: f("maxrss_kib")? as u64,
            elapsed_s: f("elapsed_s")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_counts_loss_and_duplicates() {
        let mut r = Recorder::new(Instant::now(), 3);
        let mut b = vec![0u8; 16];
        put_header(&mut b, 0, 0);
        assert!(!r.record(&b));
        assert!(!r.record(&b));
        put_header(&mut b, 2, 0);
        assert!(!r.record(&b));
        let m = Measured::new(r, 0, Duration::from_millis(1));
        assert_eq!((m.lost, m.duplicates), (1, 1));
    }

    #[test]
    fn quantiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.5), 500);
    }
}
