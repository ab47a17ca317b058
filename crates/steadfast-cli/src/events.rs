//! `--events`: lifecycle events as JSON lines on stderr, and what each event means for the
//! process (keep going, or exit with which code and which one-line message).
//!
//! Each line is an [`EventLine`] serialised with serde. Every object has `"event"` (snake_case)
//! and `"ts"` (Unix milliseconds), then exactly the fields of the CLI contract, in this order:
//!
//! | event | fields |
//! |---|---|
//! | `connecting` | attempt, server |
//! | `connected` | attempt, server, session_present |
//! | `connect_failed` | attempt, reason, reason_code? |
//! | `connection_lost` | reason, reason_code?, initiator |
//! | `reconnecting` | attempt, delay_ms |
//! | `resubscribed` | filters |
//! | `session_lost` | republished |
//! | `dormant` | attempts (only after `--max-attempts`, never with `--no-reconnect`) |
//! | `fatal` | reason, reason_code? |
//! | `disconnected` | |
//!
//! `reason` names the cause; for a broker refusal it is the reason code's name in lower case
//! ("bad user name or password"). `reason_code` is the numeric code the broker sent where
//! one exists: the MQTT 5 reason code, or the MQTT 3.1.1 CONNACK return code (4 for bad
//! user name or password) on a 3.1.1 connection.

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use steadfast::proto::CommandError;
use steadfast::{Lifecycle, ProtocolVersion, Reason};

/// Reports on stderr a client event that is neither a lifecycle event nor a message.
pub fn report_other(ev: &steadfast::ClientEvent) {
    if let steadfast::ClientEvent::Lagged { missed } = ev {
        eprintln!("steadfast: {missed} lifecycle event(s) were dropped before they could be shown");
    }
}

/// Unix milliseconds.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The `reason` text of an event: what caused it, without the broker's free-form reason string
/// for a refusal (then it is exactly the reason code's name, in lower case).
pub fn reason_text(reason: &Reason) -> String {
    match reason {
        Reason::Refused { code, .. } => code.name().to_lowercase(),
        other => other.to_string(),
    }
}

/// The numeric code of a reason, if it has one: the 3.1.1 CONNACK return code for a 3.1.1
/// refusal, the MQTT 5 reason code otherwise.
pub fn reason_code(reason: &Reason, protocol: ProtocolVersion) -> Option<u8> {
    let code = reason.reason_code()?;
    if protocol == ProtocolVersion::V311 {
        if let Reason::Refused { .. } = reason {
            return Some(code.to_v311_connack().unwrap_or(code as u8));
        }
    }
    Some(code as u8)
}

/// One `--events` line: `event` and `ts` first, then the fields of the event, in this order.
#[derive(Debug, Serialize)]
pub struct EventLine<'a> {
    /// The event's snake_case name ([`Lifecycle::name`]).
    pub event: &'static str,
    /// When it happened, Unix milliseconds.
    pub ts: u64,
    /// The fields of this event.
    #[serde(flatten)]
    pub fields: EventFields<'a>,
}

/// The fields of each event (the table in the module docs and docs/cli.md). A field marked
/// `?` there is left out when absent.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum EventFields<'a> {
    /// `connecting`.
    Connecting {
        /// The attempt number.
        attempt: u32,
        /// The server, password shown as `***`.
        server: String,
    },
    /// `connected`.
    Connected {
        /// The attempt number.
        attempt: u32,
        /// The server, password shown as `***`.
        server: String,
        /// The broker's Session Present flag.
        session_present: bool,
    },
    /// `connect_failed`.
    ConnectFailed {
        /// The attempt number.
        attempt: u32,
        /// The cause ([`reason_text`]).
        reason: String,
        /// The broker's code, where there is one ([`reason_code`]).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason_code: Option<u8>,
    },
    /// `bad_server_reference` (printed as a plain line, not as JSON; see [`Tracker`]).
    BadServerReference {
        /// The reference, redacted.
        reference: &'a str,
        /// Why it does not parse.
        error: String,
    },
    /// `connection_lost`.
    ConnectionLost {
        /// The cause.
        reason: String,
        /// The broker's code, where there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason_code: Option<u8>,
        /// `local`, `library` or `remote`.
        initiator: String,
    },
    /// `reconnecting`.
    Reconnecting {
        /// The number the next attempt will have.
        attempt: u32,
        /// The backoff delay before it.
        delay_ms: u64,
    },
    /// `resubscribed`.
    Resubscribed {
        /// The filters the broker granted again.
        filters: Vec<&'a str>,
    },
    /// `resubscribe_failed`.
    ResubscribeFailed {
        /// The filter.
        filter: &'a str,
        /// The SUBACK code's name, or why it was not sent.
        reason: String,
        /// The SUBACK code, when the broker refused it.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason_code: Option<u8>,
    },
    /// `session_lost`.
    SessionLost {
        /// Unacknowledged messages published again.
        republished: usize,
    },
    /// `dormant`.
    Dormant {
        /// Attempts made.
        attempts: u32,
    },
    /// `fatal`.
    Fatal {
        /// The cause.
        reason: String,
        /// The broker's code, where there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason_code: Option<u8>,
    },
    /// `disconnected`: no fields.
    Disconnected {},
    /// An event of a newer library that this CLI does not know: its name only.
    Other {},
}

impl<'a> EventLine<'a> {
    /// The line of a lifecycle event.
    pub fn new(at: SystemTime, event: &'a Lifecycle, protocol: ProtocolVersion) -> EventLine<'a> {
        let fields = match event {
            Lifecycle::Connecting { attempt, server } => EventFields::Connecting {
                attempt: *attempt,
                server: server.to_string(),
            },
            Lifecycle::Connected {
                attempt,
                server,
                session_present,
                ..
            } => EventFields::Connected {
                attempt: *attempt,
                server: server.to_string(),
                session_present: *session_present,
            },
            Lifecycle::ConnectFailed { attempt, reason } => EventFields::ConnectFailed {
                attempt: *attempt,
                reason: reason_text(reason),
                reason_code: reason_code(reason, protocol),
            },
            Lifecycle::BadServerReference { reference, error } => EventFields::BadServerReference {
                reference: reference.as_str(),
                error: error.to_string(),
            },
            Lifecycle::ConnectionLost { reason, .. } => EventFields::ConnectionLost {
                reason: reason_text(reason),
                reason_code: reason_code(reason, protocol),
                initiator: reason.initiator().to_string(),
            },
            Lifecycle::Reconnecting { attempt, delay } => EventFields::Reconnecting {
                attempt: *attempt,
                delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            },
            Lifecycle::Resubscribed { filters, .. } => EventFields::Resubscribed {
                filters: filters.iter().map(|f| f.as_str()).collect(),
            },
            Lifecycle::ResubscribeFailed { filter, error } => match error {
                // The SUBACK code: its name, as for a refused connect, and its number.
                CommandError::Refused(rc) => EventFields::ResubscribeFailed {
                    filter: filter.as_str(),
                    reason: rc.name().to_lowercase(),
                    reason_code: Some(*rc as u8),
                },
                other => EventFields::ResubscribeFailed {
                    filter: filter.as_str(),
                    reason: other.to_string(),
                    reason_code: None,
                },
            },
            Lifecycle::SessionLost { republished } => EventFields::SessionLost {
                republished: *republished,
            },
            Lifecycle::Dormant { attempts } => EventFields::Dormant {
                attempts: *attempts,
            },
            Lifecycle::Fatal { reason } => EventFields::Fatal {
                reason: reason_text(reason),
                reason_code: reason_code(reason, protocol),
            },
            Lifecycle::Disconnected => EventFields::Disconnected {},
            _ => EventFields::Other {},
        };
        EventLine {
            event: event.name(),
            ts: unix_ms(at),
            fields,
        }
    }
}

/// Serialises a value made only of strings, numbers, booleans, options and sequences, which
/// cannot fail; a failure would be a bug, reported in the line rather than as a panic.
pub fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise: {e}\"}}"))
}

/// The JSON line of a lifecycle event (without the newline).
pub fn event_json(at: SystemTime, event: &Lifecycle, protocol: ProtocolVersion) -> String {
    to_json(&EventLine::new(at, event, protocol))
}

/// How the process ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Ok,
    /// Exit 1 with this line.
    Failed(String),
    /// Exit 3 with this line (a fatal refusal by the broker).
    Refused(String),
    /// Exit 4 with this line (dormant after --max-attempts).
    Dormant(String),
}

impl Outcome {
    /// Prints the outcome's line (if any) to stderr and returns its exit code.
    pub fn exit(self) -> ExitCode {
        let (code, line) = match self {
            Outcome::Ok => (crate::exit::OK, None),
            Outcome::Failed(l) => (crate::exit::RUNTIME, Some(l)),
            Outcome::Refused(l) => (crate::exit::REFUSED, Some(l)),
            Outcome::Dormant(l) => (crate::exit::DORMANT, Some(l)),
        };
        if let Some(l) = line {
            eprintln!("steadfast: {l}");
        }
        ExitCode::from(code)
    }
}

/// Prints events (with `--events`) and decides when a lifecycle event ends the process.
#[derive(Debug)]
pub struct Tracker {
    print: bool,
    protocol: ProtocolVersion,
    no_reconnect: bool,
    last_failure: Option<String>,
    /// Set once `disconnected` has been seen.
    pub disconnected: bool,
}

impl Tracker {
    /// A tracker; `print` is `--events`.
    pub fn new(print: bool, protocol: ProtocolVersion, no_reconnect: bool) -> Tracker {
        Tracker {
            print,
            protocol,
            no_reconnect,
            last_failure: None,
            disconnected: false,
        }
    }

    /// Prints one event line (with `--events`), then says whether the process must end:
    /// `fatal` ends it with exit 3 (1 for a failed session store), `dormant` with exit 4.
    ///
    /// With `--no-reconnect` the library goes dormant at the first failed connect or lost
    /// connection; that is not "gave up after `--max-attempts`", so no `dormant` line is
    /// printed: the `connect_failed` or `connection_lost` line before it is the last event,
    /// and the process exits 1 naming it.
    pub fn on_lifecycle(&mut self, at: SystemTime, event: &Lifecycle) -> Option<Outcome> {
        if let Lifecycle::BadServerReference { reference, error } = event {
            // Not one of the contract's JSON events: a plain warning line, always.
            eprintln!("steadfast: ignored the broker's Server Reference {reference:?}: {error}");
            return None;
        }
        let no_reconnect_end = self.no_reconnect && matches!(event, Lifecycle::Dormant { .. });
        if self.print && !no_reconnect_end {
            let mut line = event_json(at, event, self.protocol);
            line.push('\n');
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(line.as_bytes());
            let _ = err.flush();
        }
        match event {
            Lifecycle::ConnectFailed { reason, .. } => {
                self.last_failure = Some(format!("connection failed: {reason}"));
                None
            }
            Lifecycle::ConnectionLost { reason, .. } => {
                self.last_failure = Some(format!("connection lost: {reason}"));
                None
            }
            Lifecycle::Fatal { reason } => Some(match reason {
                Reason::Refused { .. } => Outcome::Refused(format!("connection refused: {reason}")),
                Reason::Storage(_) => Outcome::Failed(reason.to_string()),
                _ => Outcome::Refused(reason.to_string()),
            }),
            Lifecycle::Dormant { attempts } => {
                let last = self
                    .last_failure
                    .clone()
                    .unwrap_or_else(|| "no connection".into());
                Some(if no_reconnect_end {
                    Outcome::Failed(format!("{last} (--no-reconnect)"))
                } else {
                    let s = if *attempts == 1 { "" } else { "s" };
                    Outcome::Dormant(format!("gave up after {attempts} attempt{s}; last: {last}"))
                })
            }
            Lifecycle::Disconnected => {
                self.disconnected = true;
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::time::Duration;
    use steadfast::proto::TransportError;
    use steadfast::ReasonCode;

    fn parse(s: &str) -> serde_json::Map<String, Value> {
        serde_json::from_str::<Value>(s)
            .unwrap()
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn refusal_names_the_code() {
        let at = UNIX_EPOCH + Duration::from_millis(1234);
        let reason = Reason::Refused {
            code: ReasonCode::BadUserNameOrPassword,
            reason_string: Some("nope".into()),
        };
        let ev = Lifecycle::ConnectFailed {
            attempt: 2,
            reason: reason.clone(),
        };
        let o = parse(&event_json(at, &ev, ProtocolVersion::V5));
        assert_eq!(o["event"], "connect_failed");
        assert_eq!(o["ts"], 1234);
        assert_eq!(o["attempt"], 2);
        assert_eq!(o["reason"], "bad user name or password");
        assert_eq!(o["reason_code"], 0x86);
        assert_eq!(o.len(), 5);
        let o = parse(&event_json(at, &ev, ProtocolVersion::V311));
        assert_eq!(o["reason_code"], 4);
        let ev = Lifecycle::ConnectionLost {
            reason: Reason::Transport(TransportError::Closed),
            uptime: Duration::from_secs(1),
        };
        let o = parse(&event_json(at, &ev, ProtocolVersion::V5));
        assert_eq!(o["initiator"], "remote");
        assert!(!o.contains_key("reason_code"));
        assert_eq!(o.len(), 4);
    }

    #[test]
    fn every_event_has_exactly_its_fields() {
        let at = UNIX_EPOCH + Duration::from_millis(1);
        let reason = Reason::Transport(TransportError::Closed);
        let cases: Vec<(Lifecycle, &[&str])> = vec![
            (
                Lifecycle::Connecting {
                    attempt: 1,
                    server: "mqtt://h:1".parse().unwrap(),
                },
                &["attempt", "server"],
            ),
            (
                Lifecycle::BadServerReference {
                    reference: "garbage!".into(),
                    error: steadfast::ServerAddr::parse_url("garbage!").unwrap_err(),
                },
                &["reference", "error"],
            ),
            (
                Lifecycle::ConnectFailed {
                    attempt: 1,
                    reason: reason.clone(),
                },
                &["attempt", "reason"],
            ),
            (
                Lifecycle::ConnectionLost {
                    reason: reason.clone(),
                    uptime: Duration::ZERO,
                },
                &["reason", "initiator"],
            ),
            (
                Lifecycle::Reconnecting {
                    attempt: 2,
                    delay: Duration::from_millis(1500),
                },
                &["attempt", "delay_ms"],
            ),
            (
                Lifecycle::Resubscribed {
                    filters: vec!["a/#".into()],
                    granted: vec![ReasonCode::GrantedQoS1],
                },
                &["filters"],
            ),
            (
                Lifecycle::ResubscribeFailed {
                    filter: "a/#".into(),
                    error: steadfast::proto::CommandError::Refused(ReasonCode::NotAuthorized),
                },
                &["filter", "reason", "reason_code"],
            ),
            (
                Lifecycle::ResubscribeFailed {
                    filter: "a/#".into(),
                    error: steadfast::proto::CommandError::PacketTooLarge {
                        packet: steadfast::proto::PacketType::Subscribe,
                        size: 120,
                        max: 100,
                    },
                },
                &["filter", "reason"],
            ),
            (Lifecycle::SessionLost { republished: 3 }, &["republished"]),
            (Lifecycle::Dormant { attempts: 3 }, &["attempts"]),
            (
                Lifecycle::Fatal {
                    reason: reason.clone(),
                },
                &["reason"],
            ),
            (Lifecycle::Disconnected, &[]),
        ];
        for (ev, fields) in cases {
            let o = parse(&event_json(at, &ev, ProtocolVersion::V5));
            let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
            keys.sort();
            let mut want: Vec<&str> = fields.to_vec();
            want.extend(["event", "ts"]);
            want.sort();
            assert_eq!(keys, want, "{ev:?}");
            assert_eq!(o["event"], ev.name());
        }
        let o = parse(&event_json(
            at,
            &Lifecycle::Reconnecting {
                attempt: 2,
                delay: Duration::from_millis(1500),
            },
            ProtocolVersion::V5,
        ));
        assert_eq!(o["delay_ms"], 1500);
        let o = parse(&event_json(
            at,
            &Lifecycle::SessionLost { republished: 3 },
            ProtocolVersion::V5,
        ));
        assert_eq!(o["republished"], 3);
    }

    #[test]
    fn lines_keep_the_documented_order() {
        let at = UNIX_EPOCH + Duration::from_millis(1234);
        let ev = Lifecycle::ConnectFailed {
            attempt: 2,
            reason: Reason::Refused {
                code: ReasonCode::BadUserNameOrPassword,
                reason_string: None,
            },
        };
        assert_eq!(
            event_json(at, &ev, ProtocolVersion::V5),
            r#"{"event":"connect_failed","ts":1234,"attempt":2,"reason":"bad user name or password","reason_code":134}"#
        );
        assert_eq!(
            event_json(at, &Lifecycle::Disconnected, ProtocolVersion::V5),
            r#"{"event":"disconnected","ts":1234}"#
        );
        let ev = Lifecycle::Connecting {
            attempt: 1,
            server: "mqtt://u:secret@h:1".parse().unwrap(),
        };
        assert_eq!(
            event_json(at, &ev, ProtocolVersion::V5),
            r#"{"event":"connecting","ts":1234,"attempt":1,"server":"mqtt://u:***@h:1"}"#
        );
    }
}
