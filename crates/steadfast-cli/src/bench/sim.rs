//! `steadfast bench --simulate N`: a fleet of N real connection cores ([`Connection`] from
//! steadfast-proto) on one virtual clock, against a broker model, for fleets far larger than
//! one machine can open sockets for.
//!
//! The simulator is a driver, like `steadfast::driver`, with the network and the broker
//! replaced by a model; the core is the library's, unchanged. It starts each core, follows its
//! [`Action`]s, hands it the broker's bytes (CONNACK, SUBACK, PINGRESP) through
//! `handle_input`, transport results through `handle_transport_open` / `handle_transport_error`,
//! and calls `handle_timeout` at `poll_timeout`. Time is virtual: a binary heap of
//! (deadline, client) holds each client's next wake-up (its next network event or its core's
//! timer, whichever comes first), so the cost is per event, not per client per tick.
//!
//! The scenario, per policy:
//! 1. every client connects and subscribes to one filter (the broker admits everyone);
//! 2. at `kill` the broker dies: every link ends (EOF), and every TCP connect is refused
//!    until `restart = kill + outage`;
//! 3. from `restart` on the broker admits at most `admit_rate` CONNECTs in any one-second
//!    window (a sliding window, so no one-second window ever holds more) and refuses the rest:
//!    CONNACK 0x9F "connection rate exceeded" then close for MQTT 5, a close without CONNACK
//!    for MQTT 3.1.1; each answer comes `connack_latency` after the CONNECT arrives;
//! 4. a client is back when its core reports `Resubscribed` (the broker kept no session).
//!
//! The network: a TCP connect (or its refusal) takes one `rtt`, a packet half of one; a
//! SUBACK or PINGRESP comes one `rtt` after the request was sent.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use steadfast::proto::backoff::BackoffPolicy;
use steadfast::proto::connection::Connection;
use steadfast::proto::policy::ReasonClass;
use steadfast::proto::rng::{Draw, Rng, Xoshiro256};
use steadfast::proto::{
    Action, ByteStr, Config, ConnAck, Event, Lifecycle, Packet, Props, ProtocolVersion, QoS,
    ReasonCode, ServerAddr, SubAck, SubscribeFilter, SubscriptionOptions, TransportError,
};

/// A curve: (seconds since the kill, attempts per second) points.
type Curve = Vec<(f64, f64)>;

/// Width of the fine buckets (peaks over one-second windows are computed from these).
const FINE_NS: u64 = 100_000_000;
/// Fine buckets per second.
const FINE_PER_S: usize = 10;

/// How the slow-down floor (after 0x89 / 0x97 / 0x9F) is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorRule {
    /// The core's own rule: the delay is at least `max / 4`, then twice that after each
    /// further slow-down refusal, up to `max`.
    Core,
    /// The same floors, but the delay is drawn uniformly in `[floor, 2 x floor]` (capped at
    /// `max`) instead of being raised to exactly `floor`: the clients a second of refusals
    /// sends away come back spread over a window as long as the floor, not all at once.
    /// Applied by the simulator (a reason hook and a policy wrapper), the core unchanged.
    Jittered,
}

impl FloorRule {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            FloorRule::Core => "core",
            FloorRule::Jittered => "jittered",
        }
    }
}

/// The scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Clients.
    pub clients: usize,
    /// MQTT version of every client.
    pub protocol: ProtocolVersion,
    /// Keep-alive of every client.
    pub keep_alive: Duration,
    /// When the broker dies (all clients are connected and subscribed well before).
    pub kill: Duration,
    /// How long it stays down.
    pub outage: Duration,
    /// CONNECTs admitted in any one-second window after the restart (`None`: no limit).
    pub admit_rate: Option<u32>,
    /// From a CONNECT's arrival to the broker's answer.
    pub connack_latency: Duration,
    /// Network round trip.
    pub rtt: Duration,
    /// Seed of every client's generator (client `i` gets a seed derived from it and `i`).
    pub seed: u64,
    /// Give up on the policy when the fleet has made this many attempts per client on average.
    pub max_attempts_per_client: f64,
    /// Give up when the fleet is not back this long after the restart.
    pub timeout: Duration,
    /// How refusals raise the delay.
    pub floor: FloorRule,
}

/// What one simulated storm measured. Times are nanoseconds of virtual time since the kill.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Clients.
    pub clients: usize,
    /// Restart, since the kill.
    pub restart_ns: u64,
    /// Client attempts (`Action::Connect`) from the kill on, per fine bucket since the kill.
    pub attempts_fine: Vec<u64>,
    /// Refused CONNECTs (after the restart), per fine bucket.
    pub refused_fine: Vec<u64>,
    /// Every admitted CONNECT after the restart, its arrival time, in order.
    pub admitted: Vec<u64>,
    /// Per client: attempts from the kill on.
    pub attempts: Vec<u32>,
    /// Per client: refused attempts after the restart.
    pub refused: Vec<u32>,
    /// Per client: when it was back (resubscribed), since the kill; `None`: never.
    pub back: Vec<Option<u64>>,
    /// Why the run ended early, if it did.
    pub cut: Option<String>,
    /// Heap events handled (the simulator's work).
    pub events: u64,
    /// Wall time of the storm (setup excluded).
    pub wall: Duration,
}

/// Why a client must be woken: the network events waiting for it, in order.
#[derive(Debug, Clone)]
enum Net {
    /// The TCP connect succeeded.
    Open,
    /// The TCP connect was refused (the broker is down).
    TcpRefused,
    /// Our CONNECT reaches the broker.
    ConnectArrives,
    /// Bytes from the broker.
    Input(Bytes),
    /// A SUBACK for this packet id, granting QoS 0 to `n` filters.
    SubAck(u16, u16),
    /// The broker closed the connection.
    Eof,
}

struct Client {
    conn: Connection,
    net: Vec<(u64, Net)>,
    /// The deadline this client sits in the heap with (`u64::MAX`: none).
    wake: u64,
    /// A transport is open (bytes written go to the broker).
    link: bool,
    attempts: u32,
    refused: u32,
    /// When it was back after the kill (0: not yet).
    back: u64,
}

/// The broker model.
struct Broker {
    kill: u64,
    restart: u64,
    /// The arrival times of the last `rate` admissions after the restart (a ring).
    window: Vec<u64>,
    head: usize,
    admitted: Vec<u64>,
    connack_ok: Bytes,
    connack_refused: Option<Bytes>,
    pingresp: Bytes,
}

impl Broker {
    fn up(&self, t: u64) -> bool {
        t < self.kill || t >= self.restart
    }

    /// A CONNECT arrives at `t` (the broker is up): admitted or not.
    fn admit(&mut self, t: u64) -> bool {
        if t < self.restart {
            return true;
        }
        if !self.window.is_empty() {
            // The oldest of the last `rate` admissions must be a full second old.
            let oldest = self.window[self.head];
            if oldest != u64::MAX && t < oldest.saturating_add(1_000_000_000) {
                return false;
            }
            self.window[self.head] = t;
            self.head = (self.head + 1) % self.window.len();
        }
        self.admitted.push(t);
        true
    }
}

fn encode(packet: Packet, protocol: ProtocolVersion) -> Result<Bytes, String> {
    let mut b = BytesMut::new();
    packet
        .encode(protocol, &mut b)
        .map_err(|e| format!("cannot encode a broker packet: {e}"))?;
    Ok(b.freeze())
}

fn connack(reason: ReasonCode, protocol: ProtocolVersion) -> Result<Bytes, String> {
    encode(
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties: Props::default(),
        }),
        protocol,
    )
}

/// SplitMix64: a distinct, well-mixed seed per client.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The policy under [`FloorRule::Jittered`]: the reason hook turns a slow-down refusal into a
/// plain transient one (so the core applies no floor of its own) and raises `slowed`; the next
/// delay then comes from `[floor, 2 x floor]`.
#[derive(Debug)]
struct JitteredFloor {
    inner: Box<dyn BackoffPolicy>,
    slowed: Arc<AtomicBool>,
    floor: Option<Duration>,
}

impl BackoffPolicy for JitteredFloor {
    fn next_delay(&mut self, attempt: u32, rng: &mut dyn Rng) -> Duration {
        let max = self.inner.max_delay();
        if self.slowed.swap(false, Ordering::Relaxed) {
            self.floor = Some(match self.floor {
                Some(f) => (f * 2).min(max),
                None => max / 4,
            });
        }
        let d = self.inner.next_delay(attempt, rng);
        match self.floor {
            Some(f) => d.max(rng.duration_between(f, (f * 2).min(max))),
            None => d,
        }
    }
    fn reset(&mut self) {
        self.inner.reset();
        self.floor = None;
    }
    fn max_delay(&self) -> Duration {
        self.inner.max_delay()
    }
    fn min_delay(&self) -> Duration {
        self.inner.min_delay()
    }
}

struct Sim {
    base: Instant,
    clients: Vec<Client>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    broker: Broker,
    protocol: ProtocolVersion,
    rtt: u64,
    connack_latency: u64,
    /// Kill time: counters start here.
    kill: u64,
    attempts_fine: Vec<u64>,
    refused_fine: Vec<u64>,
    total_attempts: u64,
    back_count: usize,
    subscribed: usize,
    events: u64,
}

fn bump(v: &mut Vec<u64>, idx: usize) {
    if v.len() <= idx {
        v.resize(idx + 1, 0);
    }
    v[idx] += 1;
}

impl Sim {
    fn at(&self, t: u64) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    fn ns(&self, i: Instant) -> u64 {
        u64::try_from(i.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Puts client `i` back in the heap at its next wake-up.
    fn reschedule(&mut self, i: usize) {
        let c = &self.clients[i];
        let net = c.net.first().map(|e| e.0).unwrap_or(u64::MAX);
        let timer = c
            .conn
            .poll_timeout()
            .map(|d| self.ns(d))
            .unwrap_or(u64::MAX);
        let wake = net.min(timer);
        if wake != self.clients[i].wake {
            self.clients[i].wake = wake;
            if wake != u64::MAX {
                self.heap.push(Reverse((wake, i as u32)));
            }
        }
    }

    fn push_net(&mut self, i: usize, at: u64, ev: Net) {
        let net = &mut self.clients[i].net;
        let pos = net.partition_point(|e| e.0 <= at);
        net.insert(pos, (at, ev));
    }

    /// Drains what the core wants after a call: actions, bytes, events.
    fn drain(&mut self, i: usize, t: u64) -> Result<(), String> {
        loop {
            let mut progressed = false;
            while let Some(action) = self.clients[i].conn.poll_action() {
                progressed = true;
                match action {
                    Action::Connect { .. } => {
                        let c = &mut self.clients[i];
                        c.net.clear();
                        c.link = false;
                        if t >= self.kill {
                            c.attempts = c.attempts.saturating_add(1);
                            self.total_attempts += 1;
                            bump(
                                &mut self.attempts_fine,
                                ((t - self.kill) / FINE_NS) as usize,
                            );
                        }
                        let ev = if self.broker.up(t) {
                            Net::Open
                        } else {
                            Net::TcpRefused
                        };
                        self.push_net(i, t + self.rtt, ev);
                    }
                    Action::Close => {
                        let c = &mut self.clients[i];
                        c.net.clear();
                        c.link = false;
                    }
                }
            }
            while let Some(bytes) = self.clients[i].conn.poll_transmit() {
                progressed = true;
                if self.clients[i].link {
                    self.send_to_broker(i, t, bytes)?;
                }
            }
            while let Some(ev) = self.clients[i].conn.poll_event() {
                progressed = true;
                if let Event::Lifecycle {
                    event: Lifecycle::Resubscribed { .. },
                    ..
                } = ev
                {
                    let c = &mut self.clients[i];
                    if t >= self.kill && c.back == 0 {
                        c.back = t.max(1);
                        self.back_count += 1;
                    }
                } else if let Event::SubscribeDone { result: Ok(_), .. } = ev {
                    self.subscribed += 1;
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    /// The broker reads what client `i` wrote at `t`.
    fn send_to_broker(&mut self, i: usize, t: u64, bytes: Bytes) -> Result<(), String> {
        let mut buf = BytesMut::from(&bytes[..]);
        while !buf.is_empty() {
            let packet = Packet::decode(&mut buf, self.protocol, u32::MAX)
                .map_err(|e| format!("client {i} wrote what the broker cannot decode: {e:?}"))?;
            match packet {
                Packet::Connect(_) => self.push_net(i, t + self.rtt / 2, Net::ConnectArrives),
                Packet::Subscribe(s) => {
                    let n = u16::try_from(s.filters.len()).unwrap_or(u16::MAX);
                    self.push_net(i, t + self.rtt, Net::SubAck(s.pkid, n));
                }
                Packet::PingReq => {
                    let b = self.broker.pingresp.clone();
                    self.push_net(i, t + self.rtt, Net::Input(b));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Handles one network event of client `i` at `t`.
    fn deliver(&mut self, i: usize, t: u64, ev: Net) -> Result<(), String> {
        let now = self.at(t);
        match ev {
            Net::Open => {
                self.clients[i].link = true;
                self.clients[i].conn.handle_transport_open(now);
            }
            Net::TcpRefused => self.clients[i]
                .conn
                .handle_transport_error(TransportError::Io("connection refused".into()), now),
            Net::ConnectArrives => {
                let answer = t + self.connack_latency;
                if !self.broker.up(t) {
                    self.push_net(i, t + self.rtt / 2, Net::Eof);
                } else if self.broker.admit(t) {
                    let b = self.broker.connack_ok.clone();
                    self.push_net(i, answer, Net::Input(b));
                } else {
                    self.clients[i].refused = self.clients[i].refused.saturating_add(1);
                    bump(&mut self.refused_fine, ((t - self.kill) / FINE_NS) as usize);
                    if let Some(b) = self.broker.connack_refused.clone() {
                        self.push_net(i, answer, Net::Input(b));
                    }
                    self.push_net(i, answer, Net::Eof);
                }
            }
            Net::Input(b) => self.clients[i].conn.handle_input(&b, now),
            Net::SubAck(pkid, n) => {
                let b = encode(
                    Packet::SubAck(SubAck {
                        pkid,
                        reasons: vec![ReasonCode::Success; usize::from(n)],
                        properties: Props::default(),
                    }),
                    self.protocol,
                )?;
                self.clients[i].conn.handle_input(&b, now);
            }
            Net::Eof => {
                self.clients[i].link = false;
                self.clients[i]
                    .conn
                    .handle_transport_error(TransportError::Closed, now);
            }
        }
        Ok(())
    }

    /// Wakes client `i` at `t`: its due network events, then its timers.
    fn step(&mut self, i: usize, t: u64) -> Result<(), String> {
        self.events += 1;
        loop {
            let due = self.clients[i].net.first().is_some_and(|e| e.0 <= t);
            if !due {
                break;
            }
            let (_, ev) = self.clients[i].net.remove(0);
            self.deliver(i, t, ev)?;
            self.drain(i, t)?;
        }
        let now = self.at(t);
        if self.clients[i]
            .conn
            .poll_timeout()
            .is_some_and(|d| d <= now)
        {
            self.clients[i].conn.handle_timeout(now);
            self.drain(i, t)?;
        }
        self.reschedule(i);
        Ok(())
    }

    /// Runs events until `until` (exclusive) or until `stop` holds.
    fn run_until(
        &mut self,
        until: u64,
        stop: &mut dyn FnMut(&Sim) -> Option<String>,
    ) -> Result<Option<String>, String> {
        while let Some(&Reverse((t, i))) = self.heap.peek() {
            if t >= until {
                return Ok(None);
            }
            self.heap.pop();
            let i = i as usize;
            if self.clients[i].wake != t {
                continue; // a stale entry: the client was rescheduled since
            }
            self.clients[i].wake = u64::MAX;
            self.step(i, t)?;
            if let Some(why) = stop(self) {
                return Ok(Some(why));
            }
        }
        Ok(None)
    }
}

/// Runs the scenario with the policy `make(i)` builds for client `i`.
pub fn simulate(
    sc: &Scenario,
    make: &dyn Fn(usize) -> Result<Box<dyn BackoffPolicy>, String>,
) -> Result<Outcome, String> {
    let n = sc.clients;
    if n == 0 || n > u32::MAX as usize {
        return Err("the simulated fleet needs 1 to 2^32 - 1 clients".into());
    }
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let kill = ns(sc.kill);
    let restart = kill.saturating_add(ns(sc.outage));
    let protocol = sc.protocol;
    let broker = Broker {
        kill,
        restart,
        window: vec![u64::MAX; sc.admit_rate.unwrap_or(0) as usize],
        head: 0,
        admitted: Vec::new(),
        connack_ok: connack(ReasonCode::Success, protocol)?,
        connack_refused: match protocol {
            ProtocolVersion::V5 => Some(connack(ReasonCode::ConnectionRateExceeded, protocol)?),
            ProtocolVersion::V311 => None,
        },
        pingresp: encode(Packet::PingResp, protocol)?,
    };
    let server = ServerAddr::parse_url("mqtt://broker.sim:1883").map_err(|e| e.to_string())?;
    let filter = ByteStr::from("fleet/sim");
    let base = Instant::now();
    let mut sim = Sim {
        base,
        clients: Vec::with_capacity(n),
        heap: BinaryHeap::with_capacity(n),
        broker,
        protocol,
        rtt: ns(sc.rtt),
        connack_latency: ns(sc.connack_latency),
        kill,
        attempts_fine: Vec::new(),
        refused_fine: Vec::new(),
        total_attempts: 0,
        back_count: 0,
        subscribed: 0,
        events: 0,
    };
    // 1. The fleet connects and subscribes, all at time 0.
    for i in 0..n {
        let config = Config {
            protocol,
            servers: vec![server.clone()],
            client_id: ByteStr::from(format!("sim-{i}")),
            keep_alive: sc.keep_alive,
            rng_seed: mix(sc.seed, i as u64),
            ..Config::default()
        };
        let mut policy = make(i)?;
        let slowed = Arc::new(AtomicBool::new(false));
        if sc.floor == FloorRule::Jittered {
            policy = Box::new(JitteredFloor {
                inner: policy,
                slowed: slowed.clone(),
                floor: None,
            });
        }
        let mut conn = Connection::with_backoff(config, policy);
        if sc.floor == FloorRule::Jittered {
            conn.set_reason_hook(Box::new(move |_, class| {
                if class == ReasonClass::SlowDown {
                    slowed.store(true, Ordering::Relaxed);
                    ReasonClass::Transient
                } else {
                    class
                }
            }));
        }
        let now = base;
        conn.subscribe(
            vec![SubscribeFilter {
                filter: filter.clone(),
                options: SubscriptionOptions {
                    qos: QoS::AtMostOnce,
                    ..SubscriptionOptions::default()
                },
            }],
            steadfast::proto::Properties::default(),
            now,
        )
        .map_err(|e| format!("cannot subscribe client {i}: {e}"))?;
        conn.start(now);
        sim.clients.push(Client {
            conn,
            net: Vec::new(),
            wake: u64::MAX,
            link: false,
            attempts: 0,
            refused: 0,
            back: 0,
        });
        sim.drain(i, 0)?;
        sim.reschedule(i);
    }
    sim.run_until(kill, &mut |_| None)?;
    if sim.subscribed != n {
        return Err(format!(
            "only {} of {n} clients connected and subscribed before the kill at {:?}",
            sim.subscribed, sc.kill
        ));
    }
    // 2. The kill: every link ends at once.
    let wall = Instant::now();
    for i in 0..n {
        let c = &mut sim.clients[i];
        c.net.clear();
        if c.link {
            c.link = false;
            c.conn
                .handle_transport_error(TransportError::Closed, base + sc.kill);
        }
        sim.drain(i, kill)?;
        sim.reschedule(i);
    }
    // 3. Until the whole fleet is back, or a limit.
    let budget = (sc.max_attempts_per_client * n as f64) as u64;
    let deadline = restart.saturating_add(ns(sc.timeout));
    let cut = sim.run_until(deadline, &mut |s| {
        if s.back_count == n {
            Some(String::new())
        } else if s.total_attempts > budget {
            Some(format!(
                "cut off: more than {} attempts per client on average",
                sc.max_attempts_per_client
            ))
        } else {
            None
        }
    })?;
    let cut = match cut {
        Some(why) if why.is_empty() => None,
        Some(why) => Some(why),
        None if sim.back_count == n => None,
        None => Some(format!(
            "timeout: {} of {n} back {:?} after the restart",
            sim.back_count, sc.timeout
        )),
    };
    let wall = wall.elapsed();
    let to_kill = |t: u64| t - kill;
    Ok(Outcome {
        clients: n,
        restart_ns: restart - kill,
        attempts_fine: sim.attempts_fine,
        refused_fine: sim.refused_fine,
        admitted: sim.broker.admitted.iter().map(|&t| to_kill(t)).collect(),
        attempts: sim.clients.iter().map(|c| c.attempts).collect(),
        refused: sim.clients.iter().map(|c| c.refused).collect(),
        back: sim
            .clients
            .iter()
            .map(|c| (c.back != 0).then(|| to_kill(c.back)))
            .collect(),
        cut,
        events: sim.events,
        wall,
    })
}

/// The most entries of `fine` (buckets of [`FINE_NS`]) in any run of one second, from bucket
/// `from` on, as a rate per second.
fn peak_per_s(fine: &[u64], from: usize) -> u64 {
    let mut peak = 0;
    let mut sum = 0;
    for k in from..fine.len() {
        sum += fine[k];
        if k >= from + FINE_PER_S {
            sum -= fine[k - FINE_PER_S];
        }
        peak = peak.max(sum);
    }
    peak
}

/// The most admissions in any one-second window (exact, from the arrival times).
pub fn peak_admitted(admitted: &[u64]) -> usize {
    let mut peak = 0;
    let mut lo = 0;
    for hi in 0..admitted.len() {
        while admitted[hi] - admitted[lo] >= 1_000_000_000 {
            lo += 1;
        }
        peak = peak.max(hi - lo + 1);
    }
    peak
}

/// How a lone client whose link drops (the broker up) comes back under a policy: the delay of
/// its first retry, over `samples` fresh policies (mean, p99, max), in seconds.
pub fn lone_client(
    make: &dyn Fn(usize) -> Result<Box<dyn BackoffPolicy>, String>,
    samples: usize,
) -> Result<(f64, f64, f64), String> {
    let mut rng = Xoshiro256::seed_from_u64(7);
    let mut d: Vec<u64> = Vec::with_capacity(samples);
    for i in 0..samples {
        let mut p = make(i)?;
        d.push(u64::try_from(p.next_delay(1, &mut rng).as_nanos()).unwrap_or(u64::MAX));
    }
    d.sort_unstable();
    let mean = d.iter().map(|&x| x as f64).sum::<f64>() / d.len().max(1) as f64;
    let s = |x: u64| x as f64 / 1e9;
    Ok((
        mean / 1e9,
        s(super::util::quantile(&d, 0.99)),
        s(d.last().copied().unwrap_or(0)),
    ))
}

impl Outcome {
    /// Seconds after the restart until `q` of the fleet was back (`None`: never).
    pub fn back_after_restart(&self, q: f64) -> Option<f64> {
        let mut t: Vec<u64> = self.back.iter().flatten().copied().collect();
        let need = ((q * self.clients as f64).ceil() as usize).clamp(1, self.clients);
        if t.len() < need {
            return None;
        }
        t.sort_unstable();
        Some(t[need - 1].saturating_sub(self.restart_ns) as f64 / 1e9)
    }

    /// The report fields and the curve: (seconds since the kill, attempts per second) per
    /// `bucket` (a multiple of 100 ms).
    pub fn summarize(
        &self,
        rate: Option<u32>,
        bucket: Duration,
    ) -> (serde_json::Map<String, Value>, Vec<(f64, f64)>) {
        let n = self.clients as f64;
        let restart_fine = (self.restart_ns / FINE_NS) as usize;
        let minute_fine = restart_fine + 60 * FINE_PER_S;
        let attempts: u64 = self.attempts.iter().map(|&a| u64::from(a)).sum();
        let refused: u64 = self.refused.iter().map(|&a| u64::from(a)).sum();
        let while_down: u64 = self.attempts_fine.iter().take(restart_fine).sum();
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        let peak_after = peak_per_s(&self.attempts_fine, restart_fine);
        let after_minute = peak_per_s(&self.attempts_fine, minute_fine);
        let per = (bucket.as_nanos() as u64 / FINE_NS).max(1) as usize;
        let curve: Vec<(f64, f64)> = self
            .attempts_fine
            .chunks(per)
            .enumerate()
            .map(|(k, c)| {
                let secs = (k * per) as f64 * FINE_NS as f64 / 1e9;
                (
                    secs,
                    c.iter().sum::<u64>() as f64 / (per as f64 * FINE_NS as f64 / 1e9),
                )
            })
            .collect();
        let mut m = serde_json::Map::new();
        m.insert("attempts".into(), json!(attempts));
        m.insert("attempts_while_down".into(), json!(while_down));
        m.insert(
            "attempts_after_restart".into(),
            json!(attempts - while_down),
        );
        m.insert("attempts_per_client".into(), json!(r3(attempts as f64 / n)));
        m.insert(
            "attempts_per_client_max".into(),
            json!(self.attempts.iter().max().copied().unwrap_or(0)),
        );
        m.insert("refused_after_restart".into(), json!(refused));
        m.insert("refused_per_client".into(), json!(r3(refused as f64 / n)));
        m.insert(
            "refused_per_client_max".into(),
            json!(self.refused.iter().max().copied().unwrap_or(0)),
        );
        m.insert(
            "peak_attempts_per_s".into(),
            json!(peak_per_s(&self.attempts_fine, 0)),
        );
        m.insert("peak_after_restart_per_s".into(), json!(peak_after));
        m.insert("peak_after_first_minute_per_s".into(), json!(after_minute));
        m.insert(
            "peak_refused_per_s".into(),
            json!(peak_per_s(&self.refused_fine, 0)),
        );
        m.insert(
            "peak_admitted_per_s".into(),
            json!(peak_admitted(&self.admitted)),
        );
        if let Some(r) = rate {
            let r = f64::from(r);
            m.insert(
                "peak_after_restart_over_rate".into(),
                json!(r3(peak_after as f64 / r)),
            );
            m.insert(
                "peak_after_first_minute_over_rate".into(),
                json!(r3(after_minute as f64 / r)),
            );
        }
        for (name, q) in [("back_50_s", 0.5), ("back_99_s", 0.99), ("back_100_s", 1.0)] {
            m.insert(name.into(), json!(self.back_after_restart(q).map(r3)));
        }
        m.insert(
            "back".into(),
            json!(self.back.iter().filter(|b| b.is_some()).count()),
        );
        m.insert(
            "restart_at_s".into(),
            json!(r3(self.restart_ns as f64 / 1e9)),
        );
        m.insert("cut".into(), json!(self.cut));
        m.insert("sim_events".into(), json!(self.events));
        m.insert("sim_wall_s".into(), json!(r3(self.wall.as_secs_f64())));
        (m, curve)
    }
}

/// Runs `steadfast bench --simulate N`: every policy of `--policy` (default: all five) in
/// turn, then the report, the JSON and the plot.
pub fn run(args: &super::BenchArgs, n: usize) -> Result<std::process::ExitCode, String> {
    use super::PolicyKind;
    let mut policies: Vec<PolicyKind> = Vec::new();
    for p in if args.policy.is_empty() {
        PolicyKind::ALL.to_vec()
    } else {
        args.policy.clone()
    } {
        if !policies.contains(&p) {
            policies.push(p);
        }
    }
    let rate = (args.sim.admit_rate > 0).then_some(args.sim.admit_rate);
    let sc = Scenario {
        clients: n,
        protocol: args.conn.protocol,
        keep_alive: Duration::from_secs(u64::from(args.conn.keepalive)),
        kill: Duration::from_secs(5),
        outage: args.outage,
        admit_rate: rate,
        connack_latency: args.sim.connack_latency,
        rtt: args.sim.rtt,
        seed: args.sim.sim_seed,
        max_attempts_per_client: args.sim.sim_max_attempts,
        timeout: args.fleet_timeout,
        floor: args.sim.slow_floor,
    };
    let lower_bound = rate.map(|r| n as f64 / f64::from(r));
    if !args.json {
        println!(
            "simulated fleet: {n} clients (MQTT {}), broker down {} s, then {}; CONNACK latency \
             {:?}, RTT {:?}, slow-down floor rule: {}, seed {}",
            match sc.protocol {
                ProtocolVersion::V5 => "5",
                ProtocolVersion::V311 => "3.1.1",
            },
            sc.outage.as_secs_f64(),
            match rate {
                Some(r) => format!(
                    "admitting at most {r} CONNECTs/s (N / R = {:.0} s)",
                    n as f64 / f64::from(r)
                ),
                None => "admitting everyone".to_string(),
            },
            sc.connack_latency,
            sc.rtt,
            sc.floor.name(),
            sc.seed
        );
    }
    let mut reports = Vec::new();
    let mut curves = Vec::new();
    for &policy in &policies {
        let make = |_: usize| super::fleet::make_policy(args, policy);
        let out = simulate(&sc, &make)?;
        let (summary, curve) = out.summarize(rate, super::fleet::BUCKET);
        let (lone_mean, lone_p99, lone_max) = lone_client(&make, 100_000)?;
        let mut report = json!({
            "policy": policy.name(),
            "backoff": super::fleet::describe_policy(args, policy),
            "lone_client_first_retry_mean_s": (lone_mean * 1000.0).round() / 1000.0,
            "lone_client_first_retry_p99_s": (lone_p99 * 1000.0).round() / 1000.0,
            "lone_client_first_retry_max_s": (lone_max * 1000.0).round() / 1000.0,
        });
        if let Value::Object(r) = &mut report {
            r.extend(summary);
        }
        if let (Some(lb), Some(r)) = (lower_bound, rate) {
            report["targets"] = targets(&report, lb, r);
        }
        if !args.json {
            print_report(&report, rate);
        }
        curves.push((policy.name().to_string(), curve));
        reports.push(report);
    }
    let doc = json!({
        "simulated": true,
        "clients": n,
        "protocol": match sc.protocol { ProtocolVersion::V5 => "5", ProtocolVersion::V311 => "3.1.1" },
        "keepalive_s": args.conn.keepalive,
        "outage_s": super::util::secs3(sc.outage),
        "admit_rate_per_s": rate,
        "connack_latency_s": sc.connack_latency.as_secs_f64(),
        "rtt_s": sc.rtt.as_secs_f64(),
        "slow_floor": sc.floor.name(),
        "seed": sc.seed,
        "bucket_s": super::util::secs3(super::fleet::BUCKET),
        "policies": reports,
    });
    if let Some(path) = &args.storm_json {
        let mut full = doc.clone();
        full["curves"] = Value::Object(
            curves
                .iter()
                .map(|(name, c)| (name.clone(), json!(c)))
                .collect(),
        );
        std::fs::write(
            path,
            serde_json::to_string_pretty(&full).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.storm_svg {
        let mut plotted: Vec<(String, Curve)> = curves
            .iter()
            .map(|(name, c)| (format!("simulated: {name}"), c.clone()))
            .collect();
        if let Some(real) = &args.sim.compare_json {
            plotted.extend(real_curves(real)?);
        }
        let title = format!(
            "Simulated reconnect storm: {n} clients, broker down {} s{} (attempts per second)",
            sc.outage.as_secs_f64(),
            match rate {
                Some(r) => format!(", then at most {r} CONNECTs/s"),
                None => String::new(),
            }
        );
        let (reference, label) = match rate {
            Some(r) => (f64::from(r), format!("admission cap R ({r}/s)")),
            None => {
                let ideal = n as f64 / args.conn.reconnect_max.as_secs_f64().max(1e-9);
                (ideal, format!("ideal uniform spread ({ideal:.0}/s)"))
            }
        };
        super::plot::storm_svg(
            path,
            &title,
            &plotted,
            sc.outage.as_secs_f64(),
            reference,
            &label,
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{doc}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The targets for this run: back within 1.5 x N / R, at most 2 refused and 8 attempts
/// per client, and after the first minute of recovery at most 2 x R offered per second.
fn targets(report: &Value, lower_bound: f64, rate: u32) -> Value {
    let f = |k: &str| report[k].as_f64();
    let back = f("back_100_s");
    let after_minute = f("peak_after_first_minute_per_s").unwrap_or(f64::INFINITY);
    let cut = !report["cut"].is_null();
    json!({
        "back_within_1_5_lower_bound": !cut && back.is_some_and(|b| b <= 1.5 * lower_bound),
        "refused_per_client_at_most_2": !cut && f("refused_per_client").is_some_and(|r| r <= 2.0),
        "attempts_per_client_at_most_8": !cut && f("attempts_per_client").is_some_and(|a| a <= 8.0),
        "load_after_first_minute_within_2r": !cut && after_minute <= 2.0 * f64::from(rate),
    })
}

fn print_report(r: &Value, rate: Option<u32>) {
    let s = |k: &str| match &r[k] {
        Value::Null => "-".to_string(),
        Value::String(v) => v.clone(),
        v => v.to_string(),
    };
    println!(
        "[{}] {}: attempts {} per client (max {}; {} while down), refused {} per client after the \
         restart (max {}); back 50% {} s, 99% {} s, 100% {} s after the restart; peak {}/s \
         (after the restart {}/s{}, after its first minute {}/s); admitted at most {} in any 1 s; \
         lone client first retry mean {} s, p99 {} s; {} events in {} s{}",
        s("policy"),
        s("backoff"),
        s("attempts_per_client"),
        s("attempts_per_client_max"),
        s("attempts_while_down"),
        s("refused_per_client"),
        s("refused_per_client_max"),
        s("back_50_s"),
        s("back_99_s"),
        s("back_100_s"),
        s("peak_attempts_per_s"),
        s("peak_after_restart_per_s"),
        match rate {
            Some(_) => format!(" = {}x R", s("peak_after_restart_over_rate")),
            None => String::new(),
        },
        s("peak_after_first_minute_per_s"),
        s("peak_admitted_per_s"),
        s("lone_client_first_retry_mean_s"),
        s("lone_client_first_retry_p99_s"),
        s("sim_events"),
        s("sim_wall_s"),
        match r["cut"].as_str() {
            Some(c) => format!("; {c}"),
            None => String::new(),
        }
    );
    if let Value::Object(t) = &r["targets"] {
        let line: Vec<String> = t
            .iter()
            .map(|(k, v)| format!("{k}: {}", if v == &json!(true) { "met" } else { "MISSED" }))
            .collect();
        println!("[{}] targets: {}", s("policy"), line.join(", "));
    }
}

/// The curves of a real storm report (`--storm-json` of a socket run), named "real: <policy>".
fn real_curves(path: &std::path::Path) -> Result<Vec<(String, Curve)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a storm report: {e}", path.display()))?;
    let Some(curves) = doc["curves"].as_object() else {
        return Err(format!(
            "{} has no curves (written by --storm-json?)",
            path.display()
        ));
    };
    let mut out = Vec::new();
    for (name, c) in curves {
        let points: Vec<(f64, f64)> = c
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        out.push((format!("real sockets: {name}"), points));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast::proto::backoff::default_policy;

    fn scenario(protocol: ProtocolVersion, floor: FloorRule, seed: u64) -> Scenario {
        Scenario {
            clients: 400,
            protocol,
            keep_alive: Duration::from_secs(60),
            kill: Duration::from_secs(5),
            outage: Duration::from_secs(20),
            admit_rate: Some(25),
            connack_latency: Duration::from_millis(5),
            rtt: Duration::from_millis(2),
            seed,
            max_attempts_per_client: 40.0,
            timeout: Duration::from_secs(600),
            floor,
        }
    }

    fn library_default(_: usize) -> Result<Box<dyn BackoffPolicy>, String> {
        Ok(Box::new(default_policy()))
    }

    /// The properties every run must have, whatever the policy.
    fn check(sc: &Scenario, out: &Outcome) {
        let n = sc.clients;
        let rate = sc.admit_rate.unwrap_or(u32::MAX) as usize;
        assert_eq!(out.cut, None);
        // Every client ends connected and resubscribed, after the restart.
        assert!(out
            .back
            .iter()
            .all(|b| b.is_some_and(|t| t > out.restart_ns)));
        // The broker admitted each client exactly once, never more than R in any second.
        assert_eq!(out.admitted.len(), n);
        assert!(out.admitted.windows(2).all(|w| w[0] <= w[1]));
        assert!(peak_admitted(&out.admitted) <= rate);
        // It takes at least N / R for the fleet to be admitted.
        let last = out.admitted[n - 1] - out.restart_ns;
        assert!(
            last as f64 / 1e9 >= (n / rate) as f64 - 1.0,
            "last admitted {last}"
        );
        // The counts add up: every attempt after the restart was refused or admitted, and the
        // per-client counts sum to the curve.
        let attempts: u64 = out.attempts.iter().map(|&a| u64::from(a)).sum();
        let refused: u64 = out.refused.iter().map(|&a| u64::from(a)).sum();
        assert_eq!(attempts, out.attempts_fine.iter().sum::<u64>());
        assert_eq!(refused, out.refused_fine.iter().sum::<u64>());
        let restart_fine = (out.restart_ns / FINE_NS) as usize;
        let while_down: u64 = out.attempts_fine.iter().take(restart_fine).sum();
        assert_eq!(attempts - while_down, refused + n as u64);
        for (a, r) in out.attempts.iter().zip(&out.refused) {
            assert!(a > r, "a client was admitted once, after its refusals");
        }
        assert!(out.refused_fine.iter().take(restart_fine).all(|&r| r == 0));
    }

    #[test]
    fn default_policy_mqtt5_is_capped_and_everyone_comes_back() {
        let sc = scenario(ProtocolVersion::V5, FloorRule::Core, 1);
        let out = simulate(&sc, &library_default).unwrap();
        check(&sc, &out);
        // 400 clients at 25/s: some were refused, and the 0x9F floor (15 s) keeps each one's
        // refusals few.
        let refused: u32 = out.refused.iter().sum();
        assert!(refused > 0);
        assert!(
            out.refused.iter().all(|&r| r <= 4),
            "{:?}",
            out.refused.iter().max()
        );
        // Decorrelated jitter's first retry comes 1 s to 3 s after the kill, for everyone (some
        // make their second one by then too).
        let first_3s: u64 = out.attempts_fine.iter().take(31).sum();
        assert!(first_3s >= sc.clients as u64 && first_3s < 2 * sc.clients as u64);
        assert!(out.attempts_fine.iter().take(10).all(|&a| a == 0));
    }

    #[test]
    fn the_output_is_deterministic_for_a_seed() {
        let sc = scenario(ProtocolVersion::V5, FloorRule::Core, 7);
        let a = simulate(&sc, &library_default).unwrap();
        let b = simulate(&sc, &library_default).unwrap();
        assert_eq!(a.attempts, b.attempts);
        assert_eq!(a.back, b.back);
        assert_eq!(a.admitted, b.admitted);
        assert_eq!(a.attempts_fine, b.attempts_fine);
        let c = simulate(
            &scenario(ProtocolVersion::V5, FloorRule::Core, 8),
            &library_default,
        )
        .unwrap();
        assert_ne!(a.back, c.back);
    }

    #[test]
    fn mqtt311_refusals_close_and_the_fleet_still_recovers() {
        let sc = scenario(ProtocolVersion::V311, FloorRule::Core, 3);
        let out = simulate(&sc, &library_default).unwrap();
        check(&sc, &out);
        assert!(out.refused.iter().sum::<u32>() > 0);
    }

    #[test]
    fn jittered_floor_keeps_the_properties() {
        let sc = scenario(ProtocolVersion::V5, FloorRule::Jittered, 1);
        let out = simulate(&sc, &library_default).unwrap();
        check(&sc, &out);
    }

    #[test]
    fn no_backoff_is_cut_off_at_the_attempt_budget() {
        let mut sc = scenario(ProtocolVersion::V5, FloorRule::Core, 1);
        sc.clients = 50;
        sc.max_attempts_per_client = 10.0;
        let out = simulate(&sc, &|_| {
            Ok(Box::new(steadfast::Constant::new(Duration::ZERO)))
        })
        .unwrap();
        assert!(out.cut.as_deref().is_some_and(|c| c.starts_with("cut off")));
        let attempts: u32 = out.attempts.iter().sum();
        assert!(attempts as f64 > 10.0 * 50.0 && attempts <= 10 * 50 + 50);
    }

    #[test]
    fn one_second_peaks() {
        let mut fine = vec![0u64; 30];
        fine[3] = 5;
        fine[12] = 4; // 9 buckets after: in one window with bucket 3
        fine[25] = 7;
        assert_eq!(peak_per_s(&fine, 0), 9);
        assert_eq!(peak_per_s(&fine, 4), 7);
        let s = 1_000_000_000;
        assert_eq!(peak_admitted(&[0, s - 1, s, 2 * s + 1]), 2);
    }
}
