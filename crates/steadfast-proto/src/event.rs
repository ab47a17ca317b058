//! What the core reports to the application: lifecycle transitions, messages and completions.

use std::time::{Duration, Instant};

use crate::error::{CommandError, PublishError, Reason};
use crate::{ByteStr, Publish, QoS, ReasonCode, ServerAddr, ServerAddrError};

/// The connection state the application can read at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started yet.
    Idle,
    /// A connect attempt is under way (transport, TLS, CONNECT to CONNACK).
    Connecting,
    /// Connected: CONNACK accepted.
    Connected,
    /// A graceful disconnect is draining in-flight messages.
    Disconnecting,
    /// Waiting for the backoff delay before the next attempt.
    Backoff,
    /// Gave up after `max_attempts`; waits to be woken.
    Dormant,
    /// A fatal refusal; the client does not retry by itself.
    Failed,
    /// The application disconnected.
    Closed,
}

impl State {
    /// The snake_case name used in logs and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Disconnecting => "disconnecting",
            State::Backoff => "backoff",
            State::Dormant => "dormant",
            State::Failed => "failed",
            State::Closed => "closed",
        }
    }
}

impl core::fmt::Display for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the broker granted in CONNACK (with the MQTT defaults filled in where it was silent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The keep-alive in force: the broker's Server Keep Alive when sent, else ours.
    pub keep_alive: Duration,
    /// The broker's Receive Maximum (65,535 when not sent): the cap on QoS 1/2 in flight.
    pub receive_maximum: u16,
    /// The broker's Maximum Packet Size, if it set one.
    pub maximum_packet_size: Option<u32>,
    /// The client identifier the broker assigned, if it assigned one.
    pub assigned_client_id: Option<ByteStr>,
    /// The broker's Topic Alias Maximum (0 when not sent).
    pub topic_alias_maximum: u16,
    /// The broker's Maximum QoS.
    pub maximum_qos: QoS,
    /// Whether the broker accepts retained messages.
    pub retain_available: bool,
    /// Whether the broker accepts wildcard subscriptions.
    pub wildcard_subscription_available: bool,
    /// Whether the broker accepts subscription identifiers.
    pub subscription_identifiers_available: bool,
    /// Whether the broker accepts shared subscriptions.
    pub shared_subscription_available: bool,
    /// Response Information for request/response, if the broker sent it.
    pub response_information: Option<ByteStr>,
    /// Session Expiry Interval the broker imposed, if it sent one.
    pub session_expiry_interval: Option<u32>,
}

/// A lifecycle transition. Each carries the time it happened (the `now` the core was given).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lifecycle {
    /// A connect attempt starts. `attempt` is 1 for the first try after a success or start.
    Connecting {
        /// Attempt number.
        attempt: u32,
        /// Server being tried (its `Display` and `Debug` never show a password).
        server: ServerAddr,
    },
    /// CONNACK accepted.
    Connected {
        /// Attempt number that succeeded.
        attempt: u32,
        /// Server (its `Display` and `Debug` never show a password).
        server: ServerAddr,
        /// Session Present flag.
        session_present: bool,
        /// What the broker granted.
        granted: Box<Granted>,
    },
    /// An attempt failed.
    ConnectFailed {
        /// Attempt number.
        attempt: u32,
        /// Why.
        reason: Reason,
    },
    /// A redirect (0x9C / 0x9D) carried a Server Reference that does not parse. It is not
    /// followed and never replaces a configured server: the refusal counts as transient and the
    /// configured servers are tried.
    BadServerReference {
        /// The reference as sent, with any URL password replaced by `***`, shortened when long.
        reference: String,
        /// Why it does not parse.
        error: ServerAddrError,
    },
    /// An established connection ended.
    ConnectionLost {
        /// Why; [`Reason::initiator`] tells who closed it.
        reason: Reason,
        /// How long it had been up.
        uptime: Duration,
    },
    /// The next attempt is scheduled.
    Reconnecting {
        /// The attempt number it will have.
        attempt: u32,
        /// The chosen delay.
        delay: Duration,
    },
    /// Subscriptions restored because the broker had no session: emitted once the broker has
    /// answered every SUBSCRIBE of the restore, with the filters it granted.
    Resubscribed {
        /// The filters the broker granted, in registry order.
        filters: Vec<ByteStr>,
        /// What it granted for each (`granted[i]` is the SUBACK code of `filters[i]`: the
        /// granted QoS, which may be lower than the one asked for).
        granted: Vec<ReasonCode>,
    },
    /// A subscription could not be restored. Either the broker refused it in its SUBACK
    /// ([`CommandError::Refused`] with the code, for example 0x87 not authorized after an ACL
    /// change, 0x80 with MQTT 3.1.1): it is then removed from the registry, since nothing
    /// arrives for it any more. Or its SUBSCRIBE alone exceeds this broker's Maximum Packet
    /// Size ([`CommandError::PacketTooLarge`]): it stays registered and is tried again after
    /// the next session loss.
    ResubscribeFailed {
        /// The filter.
        filter: ByteStr,
        /// Why.
        error: CommandError,
    },
    /// The broker no longer had the session the client expected.
    SessionLost {
        /// How many unacknowledged messages were republished as new publications.
        republished: usize,
    },
    /// `max_attempts` consecutive attempts failed, or with `auto_reconnect` off the first
    /// failed attempt or lost connection; no more attempts until woken.
    Dormant {
        /// Attempts made.
        attempts: u32,
    },
    /// A fatal refusal or disconnect: the client will not retry by itself.
    Fatal {
        /// Why.
        reason: Reason,
    },
    /// The application's own clean disconnect completed.
    Disconnected,
}

impl Lifecycle {
    /// The snake_case event name used by the CLI's JSON events.
    pub const fn name(&self) -> &'static str {
        match self {
            Lifecycle::Connecting { .. } => "connecting",
            Lifecycle::Connected { .. } => "connected",
            Lifecycle::ConnectFailed { .. } => "connect_failed",
            Lifecycle::BadServerReference { .. } => "bad_server_reference",
            Lifecycle::ConnectionLost { .. } => "connection_lost",
            Lifecycle::Reconnecting { .. } => "reconnecting",
            Lifecycle::Resubscribed { .. } => "resubscribed",
            Lifecycle::ResubscribeFailed { .. } => "resubscribe_failed",
            Lifecycle::SessionLost { .. } => "session_lost",
            Lifecycle::Dormant { .. } => "dormant",
            Lifecycle::Fatal { .. } => "fatal",
            Lifecycle::Disconnected => "disconnected",
        }
    }
}

/// Identifies one command (publish, subscribe, unsubscribe) so its completion can be matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u64);

/// How a publish completed successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The reason code of PUBACK / PUBREC / PUBCOMP (`Success` for QoS 0, or e.g.
    /// `NoMatchingSubscribers`, which is still a success).
    pub reason: ReasonCode,
}

/// Everything the core reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A lifecycle transition and when it happened.
    Lifecycle {
        /// The `now` at which it happened.
        at: Instant,
        /// What happened.
        event: Lifecycle,
    },
    /// An incoming application message (topic aliases already resolved). For QoS 2 it is
    /// reported once, even across reconnects; with [`crate::Config::manual_acks`], once per
    /// delivery until the application acknowledges it (a delivery whose link closed before
    /// its acknowledgement is reported again when the broker redelivers it).
    Message {
        /// The message.
        publish: Publish,
        /// With [`crate::Config::manual_acks`], the token to pass to
        /// [`crate::Connection::ack`] for a QoS 1 or 2 message; `None` otherwise (the client
        /// acknowledged it already, or QoS 0 needs none).
        ack: Option<crate::AckToken>,
    },
    /// A publish finished: acknowledged (PUBACK, PUBCOMP; QoS 0 when written), or failed.
    PublishDone {
        /// The token `publish` returned.
        token: Token,
        /// The outcome.
        result: Result<PublishOutcome, PublishError>,
    },
    /// A subscribe finished: one reason code per filter, in order.
    SubscribeDone {
        /// The token `subscribe` returned.
        token: Token,
        /// Granted QoS or failure code per filter; `Err` when the client closed first.
        result: Result<Vec<ReasonCode>, CommandError>,
    },
    /// An unsubscribe finished.
    UnsubscribeDone {
        /// The token `unsubscribe` returned.
        token: Token,
        /// Reason code per filter (MQTT 5; `Success` per filter for 3.1.1).
        result: Result<Vec<ReasonCode>, CommandError>,
    },
    /// The state changed (also implied by lifecycle events; reported for convenience).
    StateChanged(State),
    /// A session change a durable store must record before the bytes produced with it are
    /// written (only with `Config::persistence`).
    Store(crate::session::persist::StoreOp),
    /// The broker completed an MQTT 5 re-authentication (AUTH 0x00).
    Reauthenticated,
    /// A re-authentication started with `Connection::reauthenticate` ended without success:
    /// the connection closed first (the broker refused with DISCONNECT, the authenticator
    /// gave up, the link failed, or the application disconnected).
    ReauthenticationFailed {
        /// Why the connection closed.
        reason: Reason,
    },
}
