//! What the demo observes: each client's lifecycle timeline, the message counts, and the
//! detect / recover times derived from them.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use steadfast::Lifecycle;

/// How many recent events the live view keeps.
const RECENT: usize = 6;

/// The two clients of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes the numbered QoS 1 sequence.
    Publisher,
    /// Subscribes to it (and is the one restarted).
    Subscriber,
}

impl Role {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        }
    }
}

/// The five scripted faults, in the order they are played. How each is played depends on
/// the transport (see `demo.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A network drop: over TCP the proxy resets every connection (TCP RST); over QUIC the
    /// link loses every datagram for half a keep-alive (UDP has no reset).
    NetworkDrop,
    /// The proxy silently stops forwarding for longer than the keep-alive: a half-open link.
    HalfOpen,
    /// A broker-side close with DISCONNECT 0x8B (server shutting down): injected by the TCP
    /// proxy; over QUIC the embedded broker really shuts down and starts again.
    BrokerClose,
    /// The subscriber client is stopped and a new one is built with the same id and session.
    ClientRestart,
    /// The clients' address as the broker sees it changes (a NAT rebinding): over TCP the
    /// proxy cuts the live connections silently, over QUIC it moves every flow to a new port.
    AddressChange,
}

impl FaultKind {
    /// All of them, in order.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::NetworkDrop,
        FaultKind::HalfOpen,
        FaultKind::BrokerClose,
        FaultKind::ClientRestart,
        FaultKind::AddressChange,
    ];

    /// The snake_case name used in JSON.
    pub fn id(self) -> &'static str {
        match self {
            FaultKind::NetworkDrop => "network_drop",
            FaultKind::HalfOpen => "half_open",
            FaultKind::BrokerClose => "broker_close",
            FaultKind::ClientRestart => "client_restart",
            FaultKind::AddressChange => "address_change",
        }
    }

    /// The human name.
    pub fn title(self) -> &'static str {
        match self {
            FaultKind::NetworkDrop => "network drop",
            FaultKind::HalfOpen => "half-open link",
            FaultKind::BrokerClose => "broker close",
            FaultKind::ClientRestart => "client restart",
            FaultKind::AddressChange => "address change",
        }
    }

    /// The clients it hits.
    pub fn affects(self) -> &'static [Role] {
        match self {
            FaultKind::ClientRestart => &[Role::Subscriber],
            _ => &[Role::Publisher, Role::Subscriber],
        }
    }
}

/// One client's timeline (both subscriber instances share one: the restart is part of it).
#[derive(Debug, Default)]
pub struct ClientTrack {
    /// The state shown in the live view.
    pub state: &'static str,
    /// `Connected` events.
    pub connects: u32,
    /// `ConnectFailed` events.
    pub connect_failures: u32,
    /// Why the last attempt failed.
    pub last_failure: Option<String>,
    /// When each `ConnectionLost` was seen, and why.
    pub lost: Vec<(SystemTime, String)>,
    /// When each `Connected` was seen, and its session-present flag.
    pub connected: Vec<(SystemTime, bool)>,
    /// Each `Reconnecting` delay.
    pub delays: Vec<(SystemTime, Duration)>,
    /// When each `Disconnected` (the application's own stop) was seen.
    pub stopped: Vec<SystemTime>,
    /// When traffic was seen: a PUBACK for the publisher, a message for the subscriber.
    pub flow: Vec<SystemTime>,
    /// `Resubscribed` events (the broker had no session).
    pub resubscribed: u32,
    /// Messages republished after `SessionLost` events.
    pub republished: usize,
    /// A fatal refusal, if any.
    pub fatal: Option<String>,
}

/// What one fault did to one client.
#[derive(Debug, Clone, Default)]
pub struct ClientOutcome {
    /// When the loss (or, for the restart, the stop) was observed.
    pub detected: Option<SystemTime>,
    /// When it was connected again.
    pub connected: Option<SystemTime>,
    /// When traffic flowed again after that.
    pub flowing: Option<SystemTime>,
    /// The backoff delays chosen in between.
    pub delays: Vec<Duration>,
    /// Session Present on the reconnect.
    pub session_present: Option<bool>,
}

impl ClientTrack {
    /// Records a lifecycle event.
    pub fn record(&mut self, at: SystemTime, event: &Lifecycle) {
        match event {
            Lifecycle::Connecting { .. } => self.state = "connecting",
            Lifecycle::Connected {
                session_present, ..
            } => {
                self.state = "connected";
                self.connects += 1;
                self.connected.push((at, *session_present));
            }
            Lifecycle::ConnectFailed { reason, .. } => {
                self.state = "connect failed";
                self.connect_failures += 1;
                self.last_failure = Some(reason.to_string());
            }
            Lifecycle::ConnectionLost { reason, .. } => {
                self.state = "lost";
                self.lost.push((at, reason.to_string()));
            }
            Lifecycle::Reconnecting { delay, .. } => {
                self.state = "backoff";
                self.delays.push((at, *delay));
            }
            // Shown in the log line; the refusal itself is a connect failure.
            Lifecycle::BadServerReference { .. } => {}
            Lifecycle::Resubscribed { .. } => self.resubscribed += 1,
            // Shown in the log line; it is not a connection failure.
            Lifecycle::ResubscribeFailed { .. } => {}
            Lifecycle::SessionLost { republished } => self.republished += republished,
            Lifecycle::Dormant { .. } => self.state = "dormant",
            Lifecycle::Fatal { reason } => {
                self.state = "failed";
                self.fatal = Some(reason.to_string());
            }
            Lifecycle::Disconnected => {
                self.state = "stopped";
                self.stopped.push(at);
            }
            _ => {}
        }
    }

    /// What a fault injected at `t` did: the first loss (or stop, for the restart) at or after
    /// `t`, the first connect after it, and the first traffic after that. A fault the
    /// connection may ride through (`ride_from`: from when traffic counts as recovered) and
    /// that caused no loss has no detection and no connect, only the first traffic from then.
    pub fn outcome(
        &self,
        t: SystemTime,
        restart: bool,
        ride_from: Option<SystemTime>,
    ) -> ClientOutcome {
        let mut o = ClientOutcome::default();
        let detected = if restart {
            self.stopped.iter().copied().find(|&s| s >= t)
        } else {
            self.lost.iter().map(|(s, _)| *s).find(|&s| s >= t)
        };
        let Some(detected) = detected else {
            if let Some(from) = ride_from {
                o.flowing = self.flow.iter().copied().find(|&f| f >= from);
            }
            return o;
        };
        o.detected = Some(detected);
        if let Some(&(c, sp)) = self.connected.iter().find(|(c, _)| *c >= detected) {
            o.connected = Some(c);
            o.session_present = Some(sp);
            o.flowing = self.flow.iter().copied().find(|&f| f >= c);
        }
        let end = o.flowing.or(o.connected);
        o.delays = self
            .delays
            .iter()
            .filter(|(at, _)| *at >= detected && end.is_none_or(|e| *at <= e))
            .map(|(_, d)| *d)
            .collect();
        o
    }
}

/// One played fault.
#[derive(Debug, Clone)]
pub struct FaultRun {
    /// Which.
    pub kind: FaultKind,
    /// What exactly was done, e.g. `blackhole 4s`.
    pub detail: String,
    /// When it was injected.
    pub injected: SystemTime,
    /// Per affected client, once settled.
    pub outcomes: Vec<(Role, ClientOutcome)>,
    /// Done: every affected client recovered (or the wait timed out).
    pub settled: bool,
    /// For the restart: messages published while the subscriber was away, and how many of
    /// them it received after coming back.
    pub published_while_away: Option<(u64, u64)>,
    /// For the restart: when the new client was built.
    pub restarted: Option<SystemTime>,
    /// For a fault the connections may ride through: from when traffic counts as recovered.
    pub ride_from: Option<SystemTime>,
    /// Connects of the affected clients from the injection until the fault settled.
    pub reconnects: u32,
    /// `ConnectionLost` events of the affected clients in the same span.
    pub connections_lost: u32,
}

impl FaultRun {
    /// The slowest client's detection (None if any client never saw it).
    pub fn detect(&self) -> Option<Duration> {
        self.max_of(|o| o.detected)
    }

    /// The slowest client's recovery (None if any client has not recovered).
    pub fn recover(&self) -> Option<Duration> {
        self.max_of(|o| o.flowing)
    }

    fn max_of(&self, f: impl Fn(&ClientOutcome) -> Option<SystemTime>) -> Option<Duration> {
        if self.outcomes.is_empty() {
            return None;
        }
        let mut worst = Duration::ZERO;
        for (_, o) in &self.outcomes {
            worst = worst.max(since(self.injected, f(o)?));
        }
        Some(worst)
    }

    /// Every affected client kept its connection and traffic flows again.
    pub fn rode_through(&self) -> bool {
        self.connections_lost == 0
            && self.reconnects == 0
            && !self.outcomes.is_empty()
            && self.outcomes.iter().all(|(_, o)| o.flowing.is_some())
    }

    /// Every delay chosen by any affected client.
    pub fn delays(&self) -> Vec<Duration> {
        self.outcomes
            .iter()
            .flat_map(|(_, o)| o.delays.iter().copied())
            .collect()
    }
}

/// `later - earlier`, zero if the clock says otherwise.
pub fn since(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

/// Everything the demo's tasks share.
#[derive(Debug)]
pub struct Shared {
    /// When the demo started.
    pub started: SystemTime,
    /// The publisher's timeline.
    pub publisher: ClientTrack,
    /// The subscriber's timeline.
    pub subscriber: ClientTrack,
    /// Messages accepted by the publisher client (sequence numbers 1..=sent).
    pub sent: u64,
    /// When each was accepted (index = sequence - 1).
    pub sent_at: Vec<SystemTime>,
    /// Messages the broker acknowledged (PUBACK).
    pub acked: u64,
    /// Publishes that failed (should stay 0).
    pub publish_errors: u64,
    /// Messages the subscriber received, duplicates included.
    pub received: u64,
    /// Times each sequence number was received (index = sequence - 1).
    pub seen: Vec<u32>,
    /// Messages received that were not part of the sequence (a shared real broker).
    pub foreign: u64,
    /// What the demo is doing now.
    pub phase: String,
    /// The faults played so far.
    pub faults: Vec<FaultRun>,
    /// Recent lifecycle events, formatted, for the live view.
    pub recent: VecDeque<String>,
}

impl Shared {
    /// A fresh state.
    pub fn new() -> Shared {
        Shared {
            started: SystemTime::now(),
            publisher: ClientTrack {
                state: "idle",
                ..Default::default()
            },
            subscriber: ClientTrack {
                state: "idle",
                ..Default::default()
            },
            sent: 0,
            sent_at: Vec::new(),
            acked: 0,
            publish_errors: 0,
            received: 0,
            seen: Vec::new(),
            foreign: 0,
            phase: "starting".into(),
            faults: Vec::new(),
            recent: VecDeque::new(),
        }
    }

    /// A client's timeline.
    pub fn track(&mut self, role: Role) -> &mut ClientTrack {
        match role {
            Role::Publisher => &mut self.publisher,
            Role::Subscriber => &mut self.subscriber,
        }
    }

    /// A client's timeline, read-only.
    pub fn track_ref(&self, role: Role) -> &ClientTrack {
        match role {
            Role::Publisher => &self.publisher,
            Role::Subscriber => &self.subscriber,
        }
    }

    /// Seconds since the start, for log lines.
    pub fn elapsed(&self, at: SystemTime) -> f64 {
        since(self.started, at).as_secs_f64()
    }

    /// Records a lifecycle event of `role`.
    pub fn lifecycle(&mut self, role: Role, at: SystemTime, event: &Lifecycle) {
        self.track(role).record(at, event);
        let line = format!(
            "{:5.1}s {:<10} {}",
            self.elapsed(at),
            role.name(),
            describe(event)
        );
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    /// Records a received message; `seq` is None for a payload outside the sequence.
    pub fn message(&mut self, seq: Option<u64>) {
        let now = SystemTime::now();
        self.subscriber.flow.push(now);
        self.received += 1;
        match seq
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s >= 1)
        {
            Some(s) => {
                if self.seen.len() < s {
                    self.seen.resize(s, 0);
                }
                self.seen[s - 1] += 1;
            }
            None => self.foreign += 1,
        }
    }

    /// Distinct sequence numbers received.
    pub fn unique(&self) -> u64 {
        self.seen.iter().filter(|&&n| n > 0).count() as u64
    }

    /// Messages received more than once (extra copies).
    pub fn duplicates(&self) -> u64 {
        self.seen
            .iter()
            .map(|&n| u64::from(n.saturating_sub(1)))
            .sum()
    }

    /// Sent sequence numbers never received.
    pub fn lost(&self) -> u64 {
        let sent = usize::try_from(self.sent).unwrap_or(usize::MAX);
        (0..sent)
            .filter(|&i| self.seen.get(i).copied().unwrap_or(0) == 0)
            .count() as u64
    }

    /// Connects and connection losses of `roles` at or after `t`.
    pub fn churn_since(&self, roles: &[Role], t: SystemTime) -> (u32, u32) {
        let mut connects = 0;
        let mut lost = 0;
        for &r in roles {
            let track = self.track_ref(r);
            connects += track.connected.iter().filter(|(c, _)| *c >= t).count() as u32;
            lost += track.lost.iter().filter(|(l, _)| *l >= t).count() as u32;
        }
        (connects, lost)
    }

    /// Connections made again after the first one of each client.
    pub fn reconnects(&self) -> u32 {
        self.publisher.connects.saturating_sub(1) + self.subscriber.connects.saturating_sub(1)
    }

    /// Messages accepted between `from` and `to`, and how many of those were received.
    pub fn sent_between(&self, from: SystemTime, to: SystemTime) -> (u64, u64) {
        let mut n = 0;
        let mut got = 0;
        for (i, at) in self.sent_at.iter().enumerate() {
            if *at >= from && *at <= to {
                n += 1;
                if self.seen.get(i).copied().unwrap_or(0) > 0 {
                    got += 1;
                }
            }
        }
        (n, got)
    }
}

/// A one-line description of a lifecycle event.
pub fn describe(event: &Lifecycle) -> String {
    match event {
        Lifecycle::Connecting { attempt, .. } => format!("connecting (attempt {attempt})"),
        Lifecycle::Connected {
            attempt,
            session_present,
            ..
        } => {
            let session = if *session_present {
                "session resumed"
            } else {
                "new session"
            };
            format!("connected (attempt {attempt}, {session})")
        }
        Lifecycle::ConnectFailed { attempt, reason } => {
            format!("connect failed (attempt {attempt}): {reason}")
        }
        Lifecycle::ConnectionLost { reason, uptime } => {
            format!("connection lost after {}: {reason}", fmt_dur(*uptime))
        }
        Lifecycle::Reconnecting { attempt, delay } => {
            format!("reconnecting in {} (attempt {attempt})", fmt_dur(*delay))
        }
        Lifecycle::BadServerReference { reference, error } => {
            format!("ignored the broker's Server Reference {reference:?}: {error}")
        }
        Lifecycle::Resubscribed { filters, .. } => {
            format!("resubscribed {} filter(s)", filters.len())
        }
        Lifecycle::ResubscribeFailed { filter, error } => {
            format!("cannot resubscribe {filter}: {error}")
        }
        Lifecycle::SessionLost { republished } => {
            format!("broker lost the session: {republished} message(s) republished")
        }
        Lifecycle::Dormant { attempts } => format!("dormant after {attempts} attempts"),
        Lifecycle::Fatal { reason } => format!("fatal: {reason}"),
        Lifecycle::Disconnected => "disconnected (stopped by the demo)".into(),
        other => other.name().replace('_', " "),
    }
}

/// A duration for people: `412 ms`, `2.9 s`.
pub fn fmt_dur(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 10_000 {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_000 + ms)
    }

    #[test]
    fn outcome_measures_from_injection() {
        let mut c = ClientTrack::default();
        c.lost.push((t(5), "reset".into()));
        c.delays.push((t(6), Duration::from_millis(250)));
        c.connected.push((t(300), true));
        c.flow.extend([t(100), t(320), t(400)]);
        let o = c.outcome(t(0), false, None);
        assert_eq!(o.detected, Some(t(5)));
        assert_eq!(o.connected, Some(t(300)));
        assert_eq!(o.flowing, Some(t(320)));
        assert_eq!(o.delays, vec![Duration::from_millis(250)]);
        assert_eq!(o.session_present, Some(true));
        let run = FaultRun {
            kind: FaultKind::NetworkDrop,
            detail: String::new(),
            injected: t(0),
            outcomes: vec![(Role::Publisher, o)],
            settled: true,
            published_while_away: None,
            restarted: None,
            ride_from: None,
            reconnects: 1,
            connections_lost: 1,
        };
        assert_eq!(run.detect(), Some(Duration::from_millis(5)));
        assert_eq!(run.recover(), Some(Duration::from_millis(320)));
        assert!(!run.rode_through());
    }

    #[test]
    fn a_fault_ridden_through_has_no_detection_and_recovers_with_traffic() {
        let mut c = ClientTrack::default();
        c.flow.extend([t(10), t(600), t(700)]);
        let o = c.outcome(t(0), false, Some(t(500)));
        assert_eq!(o.detected, None);
        assert_eq!(o.connected, None);
        assert_eq!(o.flowing, Some(t(600)));
        // Without a ride-through window, no loss means not recovered yet.
        assert_eq!(c.outcome(t(0), false, None).flowing, None);
        let run = FaultRun {
            kind: FaultKind::AddressChange,
            detail: String::new(),
            injected: t(0),
            outcomes: vec![(Role::Publisher, o)],
            settled: true,
            published_while_away: None,
            restarted: None,
            ride_from: Some(t(500)),
            reconnects: 0,
            connections_lost: 0,
        };
        assert!(run.rode_through());
        assert_eq!(run.detect(), None);
        assert_eq!(run.recover(), Some(Duration::from_millis(600)));
    }

    #[test]
    fn counts_lost_and_duplicates() {
        let mut s = Shared::new();
        s.sent = 4;
        for seq in [1, 2, 2, 4] {
            s.message(Some(seq));
        }
        s.message(None);
        assert_eq!(s.received, 5);
        assert_eq!(s.unique(), 3);
        assert_eq!(s.duplicates(), 1);
        assert_eq!(s.lost(), 1);
        assert_eq!(s.foreign, 1);
    }
}
