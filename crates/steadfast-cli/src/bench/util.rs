//! Small helpers of the bench: the payload header, percentiles, memory and fd limits, and a
//! process-independent monotonic clock.

use std::time::{Duration, Instant};

/// Payload header: publisher (u32), sequence number (u64), send time (u64 ns since the run's
/// start), little endian.
pub const HEADER_LEN: usize = 20;

/// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
pub fn put_header(buf: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    buf[0..4].copy_from_slice(&publisher.to_le_bytes());
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
    buf[12..20].copy_from_slice(&sent_ns.to_le_bytes());
}

/// Reads a header: (publisher, sequence number, send time in ns).
pub fn get_header(buf: &[u8]) -> Option<(u32, u64, u64)> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let p = u32::from_le_bytes(buf[0..4].try_into().ok()?);
    let s = u64::from_le_bytes(buf[4..12].try_into().ok()?);
    let t = u64::from_le_bytes(buf[12..20].try_into().ok()?);
    Some((p, s, t))
}

/// Nanoseconds since `start`, saturating.
pub fn ns_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The `q` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// VmRSS of this process in bytes (0 if /proc is not there).
pub fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes allocated with malloc and not yet freed (glibc's `mallinfo2`; 0 elsewhere).
pub fn heap_in_use() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        (info.uordblks + info.hblkhd) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// CLOCK_MONOTONIC in ns: the clock behind [`Instant`] on Linux, shared by every process, so
/// times from a child process can be put on the parent's time line.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer to a local struct.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Maps [`Instant`]s to CLOCK_MONOTONIC ns (taken once, then exact differences).
#[derive(Debug, Clone, Copy)]
pub struct MonoClock {
    base: Instant,
    base_ns: u64,
}

impl MonoClock {
    /// Pairs `Instant::now()` with the monotonic clock. The clock is read just before the
    /// `Instant`, so the pairing never runs ahead of the clock (a mapped time is at most the
    /// gap between the two reads early); the tightest of a few tries is kept, so a thread
    /// preempted between the reads does not widen that gap.
    pub fn new() -> MonoClock {
        let mut best: Option<(u64, MonoClock)> = None;
        for _ in 0..16 {
            let before = monotonic_ns();
            let base = Instant::now();
            let gap = monotonic_ns().saturating_sub(before);
            if best.as_ref().is_none_or(|(g, _)| gap < *g) {
                best = Some((
                    gap,
                    MonoClock {
                        base,
                        base_ns: before,
                    },
                ));
            }
            if gap < 10_000 {
                break;
            }
        }
        match best {
            Some((_, clock)) => clock,
            None => MonoClock {
                base: Instant::now(),
                base_ns: monotonic_ns(),
            },
        }
    }

    /// `t` in CLOCK_MONOTONIC ns.
    pub fn ns(&self, t: Instant) -> u64 {
        match t.checked_duration_since(self.base) {
            Some(d) => self.base_ns.saturating_add(d.as_nanos() as u64),
            None => self
                .base_ns
                .saturating_sub(self.base.duration_since(t).as_nanos() as u64),
        }
    }
}

/// `d` in seconds with three decimals, as a JSON number.
pub fn secs3(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut b = vec![0u8; 64];
        put_header(&mut b, 7, 123_456_789, 42);
        assert_eq!(get_header(&b), Some((7, 123_456_789, 42)));
        assert_eq!(get_header(&b[..19]), None);
    }

    #[test]
    fn quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[5], 0.999), 5);
    }

    #[test]
    fn mono_clock_is_consistent() {
        let c = MonoClock::new();
        let t = Instant::now();
        let a = c.ns(t);
        let b = monotonic_ns();
        assert!(b >= a && b - a < 1_000_000_000);
    }
}
