//! The core's timers, all in one table. The driver sleeps until [`TimerTable::earliest`] and then
//! calls `handle_timeout(now)`; nothing here reads the clock.

use std::time::Instant;

/// Every timer the connection/session state machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// A whole connect attempt (transport, TLS, CONNECT to CONNACK) must finish before this.
    Connect,
    /// A PINGREQ is outstanding: some packet must arrive before this or the link is dead.
    PingResp,
    /// The backoff delay before the next connect attempt.
    Reconnect,
    /// A connection that stays up until this is stable: the backoff resets.
    StableAfter,
    /// A graceful disconnect waits for in-flight messages until this.
    Drain,
}

impl Timer {
    /// All timers, in table order.
    pub const ALL: [Timer; 5] = [
        Timer::Connect,
        Timer::PingResp,
        Timer::Reconnect,
        Timer::StableAfter,
        Timer::Drain,
    ];

    const fn index(self) -> usize {
        match self {
            Timer::Connect => 0,
            Timer::PingResp => 1,
            Timer::Reconnect => 2,
            Timer::StableAfter => 3,
            Timer::Drain => 4,
        }
    }
}

/// Deadlines of every [`Timer`]. The keep-alive deadline is derived from the last send and
/// receive times by the connection rather than stored here, so that sending a packet costs no
/// timer update.
#[derive(Debug, Clone, Default)]
pub struct TimerTable {
    deadlines: [Option<Instant>; 5],
}

impl TimerTable {
    /// Arms `timer` to fire at `at`, replacing any earlier deadline.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    /// Disarms every timer.
    pub fn stop_all(&mut self) {
        self.deadlines = [None; 5];
    }

    /// The deadline of `timer`, if armed.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer.index()]
    }

    /// True when `timer` is armed and its deadline is not after `now`.
    pub fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|t| t <= now)
    }

    /// The earliest armed deadline.
    pub fn earliest(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_and_expiry() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        assert_eq!(t.earliest(), None);
        t.set(Timer::Reconnect, t0 + Duration::from_secs(5));
        t.set(Timer::Connect, t0 + Duration::from_secs(2));
        assert_eq!(t.earliest(), Some(t0 + Duration::from_secs(2)));
        assert!(!t.is_expired(Timer::Connect, t0 + Duration::from_secs(1)));
        assert!(t.is_expired(Timer::Connect, t0 + Duration::from_secs(2)));
        t.stop(Timer::Connect);
        assert_eq!(t.earliest(), Some(t0 + Duration::from_secs(5)));
        t.stop_all();
        assert_eq!(t.earliest(), None);
    }
}
