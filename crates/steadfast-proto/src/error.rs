//! Errors that say who closed a connection and why.
//!
//! Three kinds of trouble are kept apart, as rustls and h2 do: bad bytes from the peer
//! ([`Reason::ProtocolViolation`]), a peer that chose to refuse or close ([`Reason::Refused`],
//! [`Reason::ServerDisconnect`]), and misuse of the API ([`PublishError`], [`CommandError`]).

use core::fmt;
use std::time::Duration;

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

/// What went wrong with the transport, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Name resolution failed.
    Dns(String),
    /// Any other I/O error (refused, reset, unreachable, ...).
    Io(String),
    /// The peer closed the stream (EOF).
    Closed,
    /// The TLS handshake failed for a reason a retry cannot fix (certificate rejected).
    TlsFatal(String),
    /// The TLS handshake failed for another reason.
    Tls(String),
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
impl std::error::Error for TransportError {}

/// Why a connect attempt failed or a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Why a publish did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    Invalid(String),
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

impl std::error::Error for PublishError {}

/// Why a subscribe, unsubscribe or other command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The client is closed.
    Closed,
    /// An invalid argument (bad filter, empty list, an MQTT 5 option with MQTT 3.1.1, ...).
    Invalid(String),
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

impl std::error::Error for CommandError {}

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
