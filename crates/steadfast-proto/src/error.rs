//! Errors that say who closed a connection and why.
//!
//! Three kinds of trouble are kept apart, as rustls and h2 do: bad bytes from the peer
//! ([`Reason::ProtocolViolation`]), a peer that chose to refuse or close ([`Reason::Refused`],
//! [`Reason::ServerDisconnect`]), and misuse of the API ([`PublishError`], [`CommandError`]).

use core::fmt;
use std::time::Duration;

use crate::topic::TopicError;
use crate::{ByteStr, PacketType, ProtocolVersion, ReasonCode};

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Initiator {
    /// The application (disconnect, reconnect_now).
    Local,
    /// steadfast itself (keep-alive timeout, a protocol violation by the broker).
    Library,
    /// The broker or the network (DISCONNECT, EOF, reset).
    Remote,
}

impl fmt::Display for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Initiator::Local => "local",
            Initiator::Library => "library",
            Initiator::Remote => "remote",
        })
    }
}

/// An I/O error with what was being done when it happened: its [`std::io::ErrorKind`] is kept,
/// and so is the [`std::io::Error`] itself when there was one (as
/// [`std::error::Error::source`]).
///
/// ```
/// use std::error::Error;
/// use std::io::ErrorKind;
/// use steadfast_proto::error::IoError;
///
/// let refused = std::io::Error::from(ErrorKind::ConnectionRefused);
/// let e = IoError::with_source("TCP connect to 127.0.0.1:1", refused);
/// assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
/// assert!(e.source().is_some());
/// assert!(e.to_string().starts_with("TCP connect to 127.0.0.1:1: "));
/// ```
#[derive(Debug, Clone)]
pub struct IoError {
    kind: std::io::ErrorKind,
    context: String,
    source: Option<std::sync::Arc<std::io::Error>>,
}

impl IoError {
    /// An error of this kind, with no underlying `io::Error` (`context` says what failed).
    pub fn new(kind: std::io::ErrorKind, context: impl Into<String>) -> Self {
        IoError {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// `error`, which happened while doing `context` (for example `"TCP connect to
    /// host:1883"`); its kind is kept.
    pub fn with_source(context: impl Into<String>, error: std::io::Error) -> Self {
        IoError {
            kind: error.kind(),
            context: context.into(),
            source: Some(std::sync::Arc::new(error)),
        }
    }

    /// The kind of the error (connection refused, timed out, ...).
    pub fn kind(&self) -> std::io::ErrorKind {
        self.kind
    }

    /// What was being done.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The underlying `io::Error`, when there was one.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.source.as_deref()
    }
}

impl From<std::io::Error> for IoError {
    fn from(error: std::io::Error) -> Self {
        IoError::with_source(String::new(), error)
    }
}

/// A message alone, of kind [`std::io::ErrorKind::Other`] (for tests and fakes; a transport
/// keeps the real error with [`IoError::with_source`]).
impl From<&str> for IoError {
    fn from(context: &str) -> Self {
        IoError::new(std::io::ErrorKind::Other, context)
    }
}

/// As `From<&str>`.
impl From<String> for IoError {
    fn from(context: String) -> Self {
        IoError::new(std::io::ErrorKind::Other, context)
    }
}

/// Equal when the kind and the message are (an `io::Error` is not comparable itself).
impl PartialEq for IoError {
    fn eq(&self, other: &IoError) -> bool {
        self.kind == other.kind && self.to_string() == other.to_string()
    }
}

impl Eq for IoError {}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.context.is_empty()) {
            (Some(e), true) => fmt::Display::fmt(e, f),
            (Some(e), false) => write!(f, "{}: {e}", self.context),
            (None, false) => f.write_str(&self.context),
            (None, true) => fmt::Display::fmt(&std::io::Error::from(self.kind), f),
        }
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// What went wrong with the transport, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// Name resolution failed.
    Dns(IoError),
    /// Any other I/O error (refused, reset, unreachable, ...); see [`IoError::kind`].
    Io(IoError),
    /// The peer closed the stream (EOF).
    Closed,
    /// The TLS handshake failed for a reason a retry cannot fix (certificate rejected).
    TlsFatal(String),
    /// The TLS handshake failed for another reason.
    Tls(String),
}

impl TransportError {
    /// An I/O error of this kind, with `context` as its message.
    pub fn io(kind: std::io::ErrorKind, context: impl Into<String>) -> Self {
        TransportError::Io(IoError::new(kind, context))
    }

    /// `error`, which happened while doing `context`.
    pub fn io_with(context: impl Into<String>, error: std::io::Error) -> Self {
        TransportError::Io(IoError::with_source(context, error))
    }

    /// The I/O error kind, for [`TransportError::Io`] and [`TransportError::Dns`].
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            TransportError::Io(e) | TransportError::Dns(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Dns(e) => write!(f, "DNS lookup failed: {e}"),
            TransportError::Io(e) => write!(f, "I/O error: {e}"),
            TransportError::Closed => f.write_str("connection closed by peer"),
            TransportError::TlsFatal(e) => write!(f, "TLS certificate rejected: {e}"),
            TransportError::Tls(e) => write!(f, "TLS error: {e}"),
        }
    }
}

/// A transport can carry one inside an `io::Error` (`io::Error::new(kind, transport_error)`)
/// when a read or write learns something the driver must not flatten into
/// [`TransportError::Io`], such as a certificate refusal that arrives after the handshake.
///
/// The source of [`TransportError::Io`] and [`TransportError::Dns`] is the underlying
/// `io::Error`, when there was one.
impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransportError::Io(e) | TransportError::Dns(e) => std::error::Error::source(e),
            _ => None,
        }
    }
}

/// Why a connect attempt failed or a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The transport failed.
    Transport(TransportError),
    /// The whole connect (transport, TLS, CONNECT to CONNACK) took longer than the connect timeout.
    ConnectTimeout(Duration),
    /// No packet arrived within the ping timeout after a PINGREQ.
    KeepAliveTimeout(Duration),
    /// The broker refused the CONNECT.
    Refused {
        /// The CONNACK reason code (3.1.1 return codes mapped onto MQTT 5 names).
        code: ReasonCode,
        /// The broker's Reason String, if any.
        reason_string: Option<ByteStr>,
    },
    /// The broker sent DISCONNECT.
    ServerDisconnect {
        /// Its reason code.
        code: ReasonCode,
        /// Its Reason String, if any.
        reason_string: Option<ByteStr>,
    },
    /// The broker closed the connection after the CONNECT without sending CONNACK. A broker that
    /// does not speak the CONNECT's protocol version may do this (RabbitMQ 3.10 with MQTT 5).
    /// With MQTT 5, on a client that has never been connected, the third such close in a row
    /// is fatal (a broker that restarts was connected before, so it keeps being retried).
    ClosedBeforeConnack {
        /// The protocol version of the CONNECT.
        protocol: ProtocolVersion,
        /// How many connect attempts in a row have ended this way.
        consecutive: u32,
    },
    /// The broker sent bytes that break the protocol.
    ProtocolViolation {
        /// The code we reported to the broker (0x81 Malformed Packet, 0x82 Protocol Error, ...).
        code: ReasonCode,
        /// What exactly was wrong.
        detail: String,
    },
    /// The enhanced-authentication exchange failed on our side (the authenticator refused).
    Authentication(String),
    /// The durable session store failed; the client stops rather than lose messages.
    Storage(String),
    /// The application asked for it.
    Local,
}

impl Reason {
    /// The MQTT reason code involved, where one exists.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            Reason::Refused { code, .. }
            | Reason::ServerDisconnect { code, .. }
            | Reason::ProtocolViolation { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Who ended the connection for this reason.
    pub fn initiator(&self) -> Initiator {
        match self {
            Reason::Transport(_)
            | Reason::Refused { .. }
            | Reason::ServerDisconnect { .. }
            | Reason::ClosedBeforeConnack { .. } => Initiator::Remote,
            Reason::ConnectTimeout(_)
            | Reason::KeepAliveTimeout(_)
            | Reason::ProtocolViolation { .. }
            | Reason::Authentication(_)
            | Reason::Storage(_) => Initiator::Library,
            Reason::Local => Initiator::Local,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Transport(e) => fmt::Display::fmt(e, f),
            Reason::ConnectTimeout(d) => write!(f, "connect timed out after {d:?}"),
            Reason::KeepAliveTimeout(d) => {
                write!(f, "keep-alive timeout: no answer to PINGREQ within {d:?}")
            }
            Reason::Refused {
                code,
                reason_string,
            } => {
                write!(f, "{}", code.name().to_lowercase())?;
                if let Some(s) = reason_string {
                    write!(f, " ({s})")?;
                }
                Ok(())
            }
            Reason::ServerDisconnect {
                code,
                reason_string,
            } => {
                write!(f, "server disconnected: {}", code.name().to_lowercase())?;
                if let Some(s) = reason_string {
                    write!(f, " ({s})")?;
                }
                Ok(())
            }
            Reason::ClosedBeforeConnack {
                protocol,
                consecutive,
            } => {
                write!(
                    f,
                    "the broker closed the connection before CONNACK ({consecutive} in a row)"
                )?;
                if *protocol == ProtocolVersion::V5 {
                    f.write_str("; it may not speak MQTT 5: try MQTT 3.1.1")?;
                }
                Ok(())
            }
            Reason::ProtocolViolation { code, detail } => {
                write!(
                    f,
                    "broker violated the protocol ({}): {detail}",
                    code.name()
                )
            }
            Reason::Authentication(e) => write!(f, "authentication failed: {e}"),
            Reason::Storage(e) => write!(f, "session store failed: {e}"),
            Reason::Local => f.write_str("closed by the application"),
        }
    }
}

/// The source of [`Reason::Transport`] is its [`TransportError`].
impl std::error::Error for Reason {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Reason::Transport(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a publish did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The offline queue is full and its policy is `Reject` (or `Backpressure`: try again later).
    QueueFull,
    /// The message was evicted from the offline queue by the `DropOldest` policy.
    Dropped,
    /// QoS 0 while disconnected with QoS 0 queueing turned off.
    NotConnected,
    /// The message is larger than the broker's Maximum Packet Size.
    PacketTooLarge {
        /// Encoded size of the packet.
        size: usize,
        /// The broker's limit.
        max: u32,
    },
    /// The broker's Maximum QoS is lower than the message's QoS.
    QoSNotSupported {
        /// The highest QoS the broker accepts.
        max: u8,
    },
    /// The broker answered a QoS 2 PUBLISH with PUBACK: it does not do QoS 2 and took the
    /// message at QoS 1 instead (RabbitMQ's MQTT plugin does this). The message reached the
    /// broker, but may be delivered more than once; the connection stays up.
    DowngradedToQoS1,
    /// The broker does not support retained messages.
    RetainNotSupported,
    /// The message expired (Message Expiry Interval) before it could be sent.
    Expired,
    /// The broker answered with a failure reason code in PUBACK / PUBREC.
    Rejected(ReasonCode),
    /// The client was closed, or has failed fatally, before the message was acknowledged.
    Closed,
    /// The broker lost the session and republishing is turned off.
    SessionLost,
    /// The message is invalid (for example, an MQTT 5 property with MQTT 3.1.1).
    Invalid(InvalidMessage),
    /// A poison message: it was the oldest unacknowledged message each of the last `closes`
    /// times the broker closed the connection ([`crate::Config::poison_after`] in a row, with
    /// no acknowledgement of it in between). It is given up so the rest of the queue goes on.
    Poison {
        /// How many closes in a row it was blamed for.
        closes: u32,
    },
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::QueueFull => f.write_str("offline queue is full"),
            PublishError::Dropped => f.write_str("dropped from the offline queue (drop_oldest)"),
            PublishError::NotConnected => f.write_str("not connected and QoS 0 queueing is off"),
            PublishError::PacketTooLarge { size, max } => write!(
                f,
                "packet of {size} bytes exceeds the broker's maximum packet size of {max}"
            ),
            PublishError::QoSNotSupported { max } => {
                write!(f, "the broker's maximum QoS is {max}")
            }
            PublishError::DowngradedToQoS1 => f.write_str(
                "the broker does not support QoS 2: it acknowledged the message at QoS 1 \
                 (PUBACK), so it may be delivered more than once",
            ),
            PublishError::RetainNotSupported => f.write_str("the broker does not support retain"),
            PublishError::Expired => f.write_str("message expired before it could be sent"),
            PublishError::Rejected(rc) => write!(f, "rejected by the broker: {rc}"),
            PublishError::Closed => f.write_str("client closed before acknowledgement"),
            PublishError::SessionLost => {
                f.write_str("the broker lost the session and republishing is off")
            }
            PublishError::Invalid(e) => write!(f, "invalid message: {e}"),
            PublishError::Poison { closes } => write!(
                f,
                "poison message: the broker closed the connection {closes} times in a row \
                 while it was the oldest unacknowledged message"
            ),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PublishError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a message cannot be published at all ([`PublishError::Invalid`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidMessage {
    /// The topic name is not valid (the source is the [`TopicError`]).
    Topic(TopicError),
    /// MQTT 5 properties with MQTT 3.1.1, which has none.
    PropertiesNeedV5,
    /// A topic alias was set: the client manages aliases itself (see
    /// [`Config::outgoing_topic_aliases`](crate::Config::outgoing_topic_aliases)).
    TopicAliasSet,
    /// A subscription identifier was set: only a server sends them in PUBLISH.
    SubscriptionIdentifierSet,
    /// The packet could not be encoded (a property out of its range, say).
    Unencodable,
}

impl fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidMessage::Topic(e) => fmt::Display::fmt(e, f),
            InvalidMessage::PropertiesNeedV5 => {
                f.write_str("MQTT 5 properties cannot be sent with MQTT 3.1.1")
            }
            InvalidMessage::TopicAliasSet => f.write_str(
                "topic aliases are managed by the client; enable outgoing_topic_aliases",
            ),
            InvalidMessage::SubscriptionIdentifierSet => {
                f.write_str("a client must not send subscription identifiers in PUBLISH")
            }
            InvalidMessage::Unencodable => f.write_str("message cannot be encoded"),
        }
    }
}

impl std::error::Error for InvalidMessage {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InvalidMessage::Topic(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a subscribe, unsubscribe or re-authentication cannot be made
/// ([`CommandError::Invalid`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidCommand {
    /// A topic filter is not valid (the source is the [`TopicError`]).
    Filter {
        /// The filter as given.
        filter: ByteStr,
        /// What is wrong with it.
        error: TopicError,
    },
    /// A SUBSCRIBE or UNSUBSCRIBE without any filter.
    NoFilters,
    /// An option that only MQTT 5 has, with MQTT 3.1.1.
    NeedsV5 {
        /// The option (`"subscribe properties"`, `"no_local"`, `"re-authentication"`, ...).
        what: &'static str,
    },
    /// A subscription identifier was set: the client assigns them.
    SubscriptionIdentifierSet,
    /// Re-authentication needs a connection.
    NotConnected,
    /// A re-authentication is already under way.
    ReauthenticationInProgress,
    /// Re-authentication needs an authenticator.
    NoAuthenticator,
}

impl fmt::Display for InvalidCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidCommand::Filter { filter, error } => write!(f, "{:?}: {error}", filter.as_str()),
            InvalidCommand::NoFilters => f.write_str("at least one topic filter is needed"),
            InvalidCommand::NeedsV5 { what } => {
                write!(f, "{what} needs MQTT 5, but the protocol is MQTT 3.1.1")
            }
            InvalidCommand::SubscriptionIdentifierSet => {
                f.write_str("subscription identifiers are assigned by the client")
            }
            InvalidCommand::NotConnected => f.write_str("not connected"),
            InvalidCommand::ReauthenticationInProgress => {
                f.write_str("a re-authentication is already under way")
            }
            InvalidCommand::NoAuthenticator => f.write_str("no authenticator installed"),
        }
    }
}

impl std::error::Error for InvalidCommand {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InvalidCommand::Filter { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Why a subscribe, unsubscribe or other command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// The client is closed.
    Closed,
    /// An invalid argument (bad filter, empty list, an MQTT 5 option with MQTT 3.1.1, ...).
    Invalid(InvalidCommand),
    /// The packet would exceed the broker's Maximum Packet Size, so it is not sent.
    PacketTooLarge {
        /// The packet that does not fit (SUBSCRIBE, UNSUBSCRIBE, AUTH).
        packet: PacketType,
        /// Its encoded size.
        size: usize,
        /// The broker's limit.
        max: u32,
    },
    /// The broker refused it with this reason code (a SUBACK failure code: MQTT 5 0x80 and
    /// above, MQTT 3.1.1 0x80).
    Refused(ReasonCode),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Closed => f.write_str("client is closed"),
            CommandError::Invalid(e) => write!(f, "invalid request: {e}"),
            CommandError::PacketTooLarge { packet, size, max } => write!(
                f,
                "{packet} of {size} bytes exceeds the broker's maximum packet size of {max}"
            ),
            CommandError::Refused(rc) => write!(f, "refused by the broker: {rc}"),
        }
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommandError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

/// Why an acknowledgement of an incoming message (see [`crate::Config::manual_acks`]) was
/// not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AckError {
    /// The connection the message arrived on has closed: an acknowledgement cannot go out on
    /// another one. If the broker kept the session it delivers the message again (with DUP),
    /// and that delivery carries its own token to acknowledge; if it did not, the message is
    /// gone with the session.
    ConnectionClosed,
    /// The token is not one this client gave out.
    Unknown,
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckError::ConnectionClosed => f.write_str(
                "the connection the message arrived on has closed; the broker redelivers it if the session survived",
            ),
            AckError::Unknown => f.write_str("not a delivery of this client"),
        }
    }
}

impl std::error::Error for AckError {}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::io::ErrorKind;

    use super::*;

    #[test]
    fn io_errors_keep_kind_and_source_and_compare_by_kind_and_message() {
        let e = TransportError::io_with("read", std::io::Error::from(ErrorKind::ConnectionReset));
        assert_eq!(e.io_kind(), Some(ErrorKind::ConnectionReset));
        let source = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            source.map(std::io::Error::kind),
            Some(ErrorKind::ConnectionReset)
        );
        assert_eq!(
            e,
            TransportError::io_with("read", std::io::Error::from(ErrorKind::ConnectionReset))
        );
        assert_ne!(e, TransportError::io(ErrorKind::ConnectionReset, "read"));
        let plain = TransportError::io(ErrorKind::TimedOut, "no answer");
        assert_eq!(plain.io_kind(), Some(ErrorKind::TimedOut));
        assert!(plain.source().is_none());
        assert_eq!(plain.to_string(), "I/O error: no answer");
        assert_eq!(TransportError::Closed.io_kind(), None);
        let reason = Reason::Transport(e.clone());
        assert!(reason
            .source()
            .and_then(|s| s.downcast_ref::<TransportError>())
            .is_some_and(|t| *t == e));
    }

    #[test]
    fn invalid_requests_are_typed_with_their_topic_error_as_source() {
        let e = PublishError::Invalid(InvalidMessage::Topic(TopicError::WildcardInName));
        let inner = e.source().expect("the invalid message");
        assert_eq!(
            inner.source().and_then(|s| s.downcast_ref::<TopicError>()),
            Some(&TopicError::WildcardInName)
        );
        assert_eq!(e.to_string(), "invalid message: topic contains a wildcard");
        let c = CommandError::Invalid(InvalidCommand::Filter {
            filter: ByteStr::from("a/#/b"),
            error: TopicError::MisplacedMultiLevelWildcard,
        });
        assert!(c.to_string().contains("\"a/#/b\""), "{c}");
        let topic = c.source().and_then(Error::source);
        assert_eq!(
            topic.and_then(|s| s.downcast_ref::<TopicError>()),
            Some(&TopicError::MisplacedMultiLevelWildcard)
        );
        assert!(CommandError::Invalid(InvalidCommand::NoFilters)
            .source()
            .is_some_and(|s| s.source().is_none()));
    }
}
