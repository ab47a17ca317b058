//! What the demo prints: the live view (a terminal only), the plain progress lines, and the
//! final report (text, and JSON with `--json`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::track::{fmt_dur, since, FaultRun, Role, Shared};

/// The fixed facts of a run, shown in the header and the report.
#[derive(Debug, Clone)]
pub struct Setup {
    /// e.g. `rmqtt 0.24 (embedded)` or `mqtt://host:1883`.
    pub broker: String,
    /// The broker's address.
    pub broker_addr: String,
    /// The fault proxy's address.
    pub proxy_addr: String,
    /// `tcp` or `quic`.
    pub transport: &'static str,
    /// The topic of the sequence.
    pub topic: String,
    /// Messages per second.
    pub rate: u32,
    /// Keep-alive of both clients.
    pub keep_alive: Duration,
    /// Backoff bounds.
    pub backoff: (Duration, Duration),
}

/// Widest line the live view draws (longer ones are cut, so nothing wraps).
const WIDTH: usize = 78;

/// Cuts `s` to [`WIDTH`] visible characters; ANSI escape sequences take no room.
fn cut(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut visible = 0;
    let mut in_escape = false;
    for c in s.chars() {
        if in_escape {
            out.push(c);
            in_escape = !c.is_ascii_alphabetic();
            continue;
        }
        if c == '\x1b' {
            in_escape = true;
            out.push(c);
            continue;
        }
        if visible + 1 == WIDTH && s.len() > out.len() + c.len_utf8() {
            out.push('…');
            out.push_str("\x1b[0m");
            return out;
        }
        visible += 1;
        out.push(c);
    }
    out
}

/// The live view: redrawn in place with ANSI cursor movements.
#[derive(Debug, Default)]
pub struct LiveView {
    drawn: usize,
}

impl LiveView {
    /// Draws (or redraws) the view.
    pub fn draw(&mut self, setup: &Setup, s: &Shared) {
        let lines = live_lines(setup, s);
        let mut out = String::new();
        if self.drawn > 0 {
            // Back to the first line of the previous drawing.
            let _ = write!(out, "\x1b[{}F", self.drawn);
        }
        for l in &lines {
            let _ = writeln!(out, "\x1b[2K{}", cut(l));
        }
        // A shorter drawing than the last one: clear what is left below.
        if self.drawn > lines.len() {
            out.push_str("\x1b[J");
        }
        self.drawn = lines.len();
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

fn bold(s: &str) -> String {
    format!("\x1b[1m{s}\x1b[0m")
}

fn state_colored(state: &str) -> String {
    let code = match state {
        "connected" => "32",
        "lost" | "connect failed" | "failed" | "dormant" => "31",
        "backoff" | "connecting" => "33",
        _ => "2",
    };
    format!("\x1b[{code}m{state:<14}\x1b[0m")
}

fn live_lines(setup: &Setup, s: &Shared) -> Vec<String> {
    let now = SystemTime::now();
    let mut l = Vec::new();
    l.push(bold(&format!(
        "steadfast demo  {:5.1} s  {}",
        s.elapsed(now),
        s.phase
    )));
    l.push(format!(
        "broker   {} at {}",
        setup.broker, setup.broker_addr
    ));
    l.push(format!(
        "clients  {} via the {} at {}, {} QoS 1 msg/s",
        transport_name(setup.transport),
        proxy_name(setup.transport),
        setup.proxy_addr,
        setup.rate
    ));
    l.push(format!(
        "         keep-alive {}, backoff {}..{}",
        fmt_dur(setup.keep_alive),
        fmt_dur(setup.backoff.0),
        fmt_dur(setup.backoff.1)
    ));
    l.push(String::new());
    l.push("client      state          reconnects  last delay  traffic".into());
    for role in [Role::Publisher, Role::Subscriber] {
        let t = s.track_ref(role);
        let last = t
            .delays
            .last()
            .map(|(_, d)| fmt_dur(*d))
            .unwrap_or_else(|| "-".into());
        let traffic = match role {
            Role::Publisher => format!("sent {}  acked {}", s.sent, s.acked),
            Role::Subscriber => {
                format!("received {}  duplicates {}", s.received, s.duplicates())
            }
        };
        l.push(format!(
            "{:<11} {} {:>10}  {:>10}  {}",
            role.name(),
            state_colored(t.state),
            t.connects.saturating_sub(1),
            last,
            traffic
        ));
    }
    l.push(String::new());
    l.push("fault                 detected    recovered   delays".into());
    for (i, kind) in super::track::FaultKind::ALL.iter().enumerate() {
        let run = s.faults.iter().find(|f| f.kind == *kind);
        let line = match run {
            None => format!("  {} {:<18}", i + 1, kind.title()),
            Some(f) => {
                let det = match f.detect() {
                    Some(d) => fmt_dur(d),
                    None if f.settled && f.rode_through() => "not lost".into(),
                    None => "…".into(),
                };
                let rec = f.recover().map(fmt_dur).unwrap_or_else(|| "…".into());
                let mark = if f.settled && f.recover().is_some() {
                    "\x1b[32m✓\x1b[0m"
                } else if f.settled {
                    "\x1b[31m✗\x1b[0m"
                } else {
                    "\x1b[33m▶\x1b[0m"
                };
                format!(
                    "{mark} {} {:<18} {:>9}   {:>9}   {}",
                    i + 1,
                    kind.title(),
                    det,
                    rec,
                    delays(&f.delays())
                )
            }
        };
        l.push(line);
    }
    l.push(String::new());
    l.push("recent events".into());
    for e in &s.recent {
        l.push(format!("  {e}"));
    }
    for _ in s.recent.len()..6 {
        l.push(String::new());
    }
    l
}

/// `MQTT 5 over TCP` or `MQTT 5 over QUIC`.
fn transport_name(transport: &str) -> &'static str {
    if transport == "quic" {
        "MQTT 5 over QUIC"
    } else {
        "MQTT 5 over TCP"
    }
}

/// Which fault proxy the clients go through.
fn proxy_name(transport: &str) -> &'static str {
    if transport == "quic" {
        "UDP fault proxy"
    } else {
        "fault proxy"
    }
}

fn delays(d: &[Duration]) -> String {
    if d.is_empty() {
        "-".into()
    } else {
        d.iter().map(|d| fmt_dur(*d)).collect::<Vec<_>>().join(", ")
    }
}

/// A plain progress line: `[  3.0 s] ...`.
pub fn plain(s: &Shared, text: &str) {
    println!("[{:5.1} s] {text}", s.elapsed(SystemTime::now()));
}

/// The plain lines describing a settled fault.
pub fn plain_fault(s: &Shared, run: &FaultRun) {
    for (role, o) in &run.outcomes {
        if o.detected.is_none() && run.ride_from.is_some() {
            let rec = match o.flowing {
                Some(f) => format!("flowing again after {}", fmt_dur(since(run.injected, f))),
                None => "NOT flowing again".into(),
            };
            plain(
                s,
                &format!(
                    "  {:<10} kept its connection (no loss, no reconnect), {rec}",
                    role.name()
                ),
            );
            continue;
        }
        let what = if run.kind == super::track::FaultKind::ClientRestart {
            "stopped"
        } else {
            "lost"
        };
        let det = o
            .detected
            .map(|d| fmt_dur(since(run.injected, d)))
            .unwrap_or_else(|| "never".into());
        let rec = match o.flowing {
            Some(f) => format!("flowing again after {}", fmt_dur(since(run.injected, f))),
            None => "NOT recovered".into(),
        };
        plain(
            s,
            &format!(
                "  {:<10} {what} after {det}, {rec}; delays {}",
                role.name(),
                delays(&o.delays)
            ),
        );
    }
    if let Some((n, got)) = run.published_while_away {
        plain(s, &format!("  {n} messages were published while the subscriber was away; it received {got} of them"));
    }
}

/// The final report.
#[derive(Debug)]
pub struct Report {
    /// Setup.
    pub setup: Setup,
    /// Seconds the demo ran.
    pub elapsed: Duration,
    /// Messages accepted by the publisher.
    pub sent: u64,
    /// Messages acknowledged by the broker.
    pub acked: u64,
    /// Received, duplicates included.
    pub received: u64,
    /// Distinct.
    pub unique: u64,
    /// Sent, never received.
    pub lost: u64,
    /// Extra copies.
    pub duplicates: u64,
    /// Reconnects (both clients; the restarted subscriber's first connect included).
    pub reconnects: u32,
    /// Per client.
    pub per_client: [(Role, u32, Vec<Duration>); 2],
    /// The faults.
    pub faults: Vec<FaultRun>,
    /// Failed publishes.
    pub publish_errors: u64,
}

impl Report {
    /// Builds the report from what was observed.
    pub fn new(setup: Setup, s: &Shared) -> Report {
        let per = |role: Role| {
            let t = s.track_ref(role);
            (
                role,
                t.connects.saturating_sub(1),
                t.delays.iter().map(|(_, d)| *d).collect(),
            )
        };
        Report {
            setup,
            elapsed: since(s.started, SystemTime::now()),
            sent: s.sent,
            acked: s.acked,
            received: s.received,
            unique: s.unique(),
            lost: s.lost(),
            duplicates: s.duplicates(),
            reconnects: s.reconnects(),
            per_client: [per(Role::Publisher), per(Role::Subscriber)],
            faults: s.faults.clone(),
            publish_errors: s.publish_errors,
        }
    }

    /// Passed: nothing lost.
    pub fn passed(&self) -> bool {
        self.lost == 0
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "steadfast demo report ({:.1} s)",
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            o,
            "  broker      {} at {}",
            self.setup.broker, self.setup.broker_addr
        );
        let _ = writeln!(
            o,
            "  clients     publisher ({}/s) + subscriber via the {} at {}, {}, QoS 1,",
            self.setup.rate,
            proxy_name(self.setup.transport),
            self.setup.proxy_addr,
            transport_name(self.setup.transport)
        );
        let _ = writeln!(
            o,
            "              keep-alive {}, backoff {}..{} (exponential, decorrelated jitter)",
            fmt_dur(self.setup.keep_alive),
            fmt_dur(self.setup.backoff.0),
            fmt_dur(self.setup.backoff.1)
        );
        let _ = writeln!(
            o,
            "  messages    sent {}, acknowledged {}, received {} ({} unique), lost {}, duplicates {}",
            self.sent, self.acked, self.received, self.unique, self.lost, self.duplicates
        );
        let _ = writeln!(
            o,
            "  reconnects  {} (publisher {}, subscriber {})",
            self.reconnects, self.per_client[0].1, self.per_client[1].1
        );
        let _ = writeln!(
            o,
            "  faults                              detected   recovered  backoff delays chosen"
        );
        for (i, f) in self.faults.iter().enumerate() {
            let det = match f.detect() {
                Some(d) => fmt_dur(d),
                None if f.rode_through() => "not lost".into(),
                None => "never".into(),
            };
            let rec = f.recover().map(fmt_dur).unwrap_or_else(|| "NO".into());
            let _ = writeln!(
                o,
                "    {} {:<14} {:<15} {:>9}   {:>9}  {}",
                i + 1,
                f.kind.title(),
                f.detail,
                det,
                rec,
                delays(&f.delays())
            );
            if f.rode_through() {
                let why = if f.kind == super::track::FaultKind::AddressChange {
                    "the broker moved the connections to the new addresses (QUIC migration)"
                } else {
                    "the connections carried on once the link was back"
                };
                let _ = writeln!(o, "      no connection lost, no reconnect: {why}");
            } else if f.kind == super::track::FaultKind::AddressChange {
                let _ = writeln!(
                    o,
                    "      {} connections lost (dead, found by the keep-alive), {} reconnects",
                    f.connections_lost, f.reconnects
                );
            }
            if let Some((n, got)) = f.published_while_away {
                let resumed = f
                    .outcomes
                    .iter()
                    .find_map(|(_, o)| o.session_present)
                    .map(|p| {
                        if p {
                            "session resumed"
                        } else {
                            "session NOT resumed"
                        }
                    })
                    .unwrap_or("not reconnected");
                let new_client = f
                    .restarted
                    .zip(f.outcomes.iter().find_map(|(_, o)| o.connected))
                    .map(|(start, conn)| {
                        format!(
                            "the new client connected {} after it started, ",
                            fmt_dur(since(start, conn))
                        )
                    })
                    .unwrap_or_default();
                let _ = writeln!(o, "      {new_client}{resumed};");
                let _ = writeln!(
                    o,
                    "      {got} of the {n} messages published while it was away were delivered"
                );
            }
        }
        if self.publish_errors > 0 {
            let _ = writeln!(o, "  publish errors {}", self.publish_errors);
        }
        let verdict = if self.passed() {
            format!(
                "PASS: lost 0 of {} QoS 1 messages across {} faults",
                self.sent,
                self.faults.len()
            )
        } else {
            format!("FAIL: lost {} of {} QoS 1 messages", self.lost, self.sent)
        };
        let _ = writeln!(o, "  result      {verdict}");
        o
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        let faults: Vec<Value> = self
            .faults
            .iter()
            .map(|f| {
                let clients: serde_json::Map<String, Value> = f
                    .outcomes
                    .iter()
                    .map(|(role, o)| {
                        (
                            role.name().to_string(),
                            json!({
                                "detect_ms": ms(o.detected.map(|d| since(f.injected, d))),
                                "recover_ms": ms(o.flowing.map(|d| since(f.injected, d))),
                                "reconnected_ms": ms(o.connected.map(|d| since(f.injected, d))),
                                "session_present": o.session_present,
                                "delays_ms": o.delays.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
                            }),
                        )
                    })
                    .collect();
                let mut v = json!({
                    "fault": f.kind.id(),
                    "detail": f.detail,
                    "detect_ms": ms(f.detect()),
                    "recover_ms": ms(f.recover()),
                    "delays_ms": f.delays().iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>(),
                    "reconnects": f.reconnects,
                    "connections_lost": f.connections_lost,
                    "rode_through": f.rode_through(),
                    "clients": clients,
                });
                if let Some((n, got)) = f.published_while_away {
                    v["published_while_away"] = json!(n);
                    v["delivered_after_restart"] = json!(got);
                }
                v
            })
            .collect();
        let delays: Vec<u64> = self
            .per_client
            .iter()
            .flat_map(|(_, _, d)| d.iter().map(|d| d.as_millis() as u64))
            .collect();
        json!({
            "broker": self.setup.broker,
            "broker_addr": self.setup.broker_addr,
            "proxy_addr": self.setup.proxy_addr,
            "transport": self.setup.transport,
            "topic": self.setup.topic,
            "rate": self.setup.rate,
            "keep_alive_s": self.setup.keep_alive.as_secs(),
            "backoff_ms": [self.setup.backoff.0.as_millis() as u64, self.setup.backoff.1.as_millis() as u64],
            "elapsed_s": (self.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "sent": self.sent,
            "acked": self.acked,
            "received": self.received,
            "unique": self.unique,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "reconnects": self.reconnects,
            "publish_errors": self.publish_errors,
            "delays_ms": delays,
            "faults": faults,
            "passed": self.passed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_counts_visible_characters_only() {
        let colored = format!("\x1b[32m{}\x1b[0m", "x".repeat(10));
        assert_eq!(cut(&colored), colored);
        let long = format!("\x1b[1m{}\x1b[0m", "y".repeat(WIDTH + 10));
        let c = cut(&long);
        let visible: String = c.replace("\x1b[1m", "").replace("\x1b[0m", "");
        assert_eq!(visible.chars().count(), WIDTH);
        assert!(visible.ends_with('…'));
        assert!(c.ends_with("\x1b[0m"));
    }
}
