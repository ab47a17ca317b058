//! Typed decode and encode errors.

use std::borrow::Cow;
use std::fmt;

use crate::packet::{PacketType, PropertyId, ReasonCode};
use crate::topic::TopicError;

/// Why [`Packet::decode`](crate::Packet::decode) did not return a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer does not hold a whole packet yet; `buf` is left untouched.
    ///
    /// `needed` is a lower bound on how many more bytes must arrive before a packet can be
    /// decoded (at least 1).
    Incomplete {
        /// At least this many more bytes are needed.
        needed: usize,
    },
    /// The fixed header announces a packet of `size` bytes (fixed header included), more than
    /// the `max` allowed. Reported as soon as the fixed header is complete, before the body
    /// arrives.
    TooLarge {
        /// Total size of the packet announced by the fixed header.
        size: usize,
        /// The limit that was passed to `decode`.
        max: u32,
    },
    /// The bytes are not a valid MQTT packet.
    Malformed(Malformed),
}

impl DecodeError {
    /// True for [`DecodeError::Incomplete`].
    pub fn is_incomplete(&self) -> bool {
        matches!(self, DecodeError::Incomplete { .. })
    }

    /// The reason code an MQTT 5 DISCONNECT should carry for this error, when the connection
    /// has to be closed because of it (`None` for [`DecodeError::Incomplete`]).
    pub fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            DecodeError::Incomplete { .. } => None,
            DecodeError::TooLarge { .. } => Some(ReasonCode::PacketTooLarge),
            DecodeError::Malformed(m) => Some(m.reason_code()),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete { needed } => {
                write!(
                    f,
                    "incomplete packet: at least {needed} more byte(s) needed"
                )
            }
            DecodeError::TooLarge { size, max } => {
                write!(
                    f,
                    "packet of {size} bytes exceeds the maximum packet size of {max} bytes"
                )
            }
            DecodeError::Malformed(m) => write!(f, "malformed packet: {m}"),
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Malformed(m) => Some(m),
            _ => None,
        }
    }
}

impl From<Malformed> for DecodeError {
    fn from(m: Malformed) -> Self {
        DecodeError::Malformed(m)
    }
}

/// What is wrong with a malformed packet; see [`Malformed::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MalformedKind {
    /// The packet type nibble is reserved: 0, or 15 (AUTH) in MQTT 3.1.1.
    PacketType,
    /// The fixed header flags are not the ones the packet type requires.
    FixedHeaderFlags,
    /// A variable byte integer (remaining length, property length, ...) is longer than 4 bytes.
    VarInt,
    /// A field runs past the end of the packet, or of its property block.
    Truncated,
    /// Bytes are left over after the last field of the packet.
    TrailingBytes,
    /// A UTF-8 string is not well-formed UTF-8 (this includes surrogates U+D800..U+DFFF).
    InvalidUtf8,
    /// A UTF-8 string contains U+0000.
    NullCharacter,
    /// QoS 3: in a PUBLISH, a CONNECT's will QoS, or subscription options.
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH.
    DupWithQoS0,
    /// Packet identifier 0 where a non-zero one is required.
    PacketIdZero,
    /// A topic name with a wildcard, an empty one, or (MQTT 5) an empty one without a topic alias.
    InvalidTopicName,
    /// A topic filter with misplaced wildcards, empty, or a malformed `$share/` filter.
    InvalidTopicFilter,
    /// The CONNECT protocol name is not `MQTT`.
    ProtocolName,
    /// The CONNECT protocol level is neither 4 (3.1.1) nor 5 (5.0).
    ProtocolLevel,
    /// CONNECT flags: reserved bit set, will QoS/retain without a will, or (3.1.1) a password
    /// without a user name.
    ConnectFlags,
    /// CONNACK acknowledge flags: reserved bits set.
    ConnAckFlags,
    /// A reason or return code that is unknown or not allowed in this packet and version.
    ReasonCode,
    /// Subscription options: reserved bits set, Retain Handling 3, or No Local on a shared
    /// subscription.
    SubscriptionOptions,
    /// A SUBSCRIBE or UNSUBSCRIBE without topic filters, or a SUBACK / UNSUBACK without reason
    /// codes.
    EmptyPayload,
    /// An unknown property identifier.
    UnknownProperty,
    /// A property that is not allowed in this packet.
    PropertyNotAllowed,
    /// A property that may appear only once is repeated.
    DuplicateProperty,
    /// A property value is out of range (e.g. Receive Maximum 0, Topic Alias 0).
    InvalidPropertyValue,
}

impl MalformedKind {
    /// The reason code the specification gives for this kind of error, by default.
    const fn default_reason(self) -> ReasonCode {
        match self {
            MalformedKind::DupWithQoS0
            | MalformedKind::PacketIdZero
            | MalformedKind::EmptyPayload
            | MalformedKind::DuplicateProperty
            | MalformedKind::InvalidPropertyValue => ReasonCode::ProtocolError,
            MalformedKind::ProtocolName | MalformedKind::ProtocolLevel => {
                ReasonCode::UnsupportedProtocolVersion
            }
            _ => ReasonCode::MalformedPacket,
        }
    }
}

/// A malformed packet: a typed [`MalformedKind`] plus a precise message.
///
/// ```
/// use bytes::BytesMut;
/// use steadfast_proto::{codec::MalformedKind, DecodeError, Packet, ProtocolVersion, ReasonCode};
///
/// // PUBLISH QoS 0, topic "a/#".
/// let mut buf = BytesMut::from(&b"\x30\x05\x00\x03a/#"[..]);
/// match Packet::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
///     Err(DecodeError::Malformed(m)) => {
///         assert_eq!(m.kind(), MalformedKind::InvalidTopicName);
///         assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
///         assert_eq!(m.message(), "PUBLISH topic name contains a wildcard");
///     }
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    kind: MalformedKind,
    reason: ReasonCode,
    message: Cow<'static, str>,
}

impl Malformed {
    /// A malformed-packet error of `kind`, with the reason code the specification gives for it.
    pub fn new(kind: MalformedKind, message: impl Into<Cow<'static, str>>) -> Self {
        Malformed {
            kind,
            reason: kind.default_reason(),
            message: message.into(),
        }
    }

    /// Overrides the reason code (the specification calls some violations of one kind a
    /// Malformed Packet and others a Protocol Error).
    pub fn with_reason(mut self, reason: ReasonCode) -> Self {
        self.reason = reason;
        self
    }

    /// What kind of error this is.
    pub fn kind(&self) -> MalformedKind {
        self.kind
    }

    /// The precise description, e.g. `"PUBLISH topic name contains a wildcard"`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK) answering this packet:
    /// [`ReasonCode::MalformedPacket`] or [`ReasonCode::ProtocolError`] as the specification
    /// says, or [`ReasonCode::UnsupportedProtocolVersion`] for a CONNECT that is not MQTT
    /// 3.1.1 or 5.0.
    pub fn reason_code(&self) -> ReasonCode {
        self.reason
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Malformed {}

/// Why [`Packet::encode`](crate::Packet::encode) refused a packet. Nothing is written to the
/// output buffer when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field that MQTT 3.1.1 cannot express is set while encoding for 3.1.1 (properties,
    /// an MQTT 5-only reason code, UNSUBACK reason codes, subscription options other than QoS,
    /// a password without a user name, the AUTH packet).
    UnsupportedInV311 {
        /// The packet.
        packet: PacketType,
        /// What cannot be expressed.
        field: &'static str,
    },
    /// The reason code has no MQTT 3.1.1 equivalent in this packet (3.1.1 acknowledgements only
    /// carry success; CONNACK has return codes 0 to 5 and SUBACK 0, 1, 2 and 0x80).
    ReasonCodeNotInV311 {
        /// The packet.
        packet: PacketType,
        /// The offending code.
        reason: ReasonCode,
    },
    /// The reason code is not one the packet may carry.
    InvalidReasonCode {
        /// The packet.
        packet: PacketType,
        /// The offending code.
        reason: ReasonCode,
    },
    /// A string or binary field is longer than 65,535 bytes.
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A UTF-8 string field contains U+0000.
    NullCharacter {
        /// Which field.
        field: &'static str,
    },
    /// The remaining length would exceed 268,435,455 bytes, the protocol maximum.
    PacketTooLarge {
        /// The remaining length the packet would need.
        remaining_length: usize,
    },
    /// A value for a variable byte integer exceeds 268,435,455.
    VarIntTooLarge {
        /// The value.
        value: u64,
    },
    /// Packet identifier 0 where a non-zero one is required.
    PacketIdZero {
        /// The packet.
        packet: PacketType,
    },
    /// A QoS 0 PUBLISH with a non-zero packet identifier (it would be lost on the wire).
    UnexpectedPacketId,
    /// A QoS 0 PUBLISH with the DUP flag.
    DupWithQoS0,
    /// A SUBSCRIBE / UNSUBSCRIBE without filters, or SUBACK / UNSUBACK (5.0) without reasons.
    EmptyPayload {
        /// The packet.
        packet: PacketType,
    },
    /// An invalid topic name or topic filter.
    InvalidTopic {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        error: TopicError,
    },
    /// A property that the packet may not carry.
    PropertyNotAllowed {
        /// The packet (or `"will properties"`).
        packet: &'static str,
        /// The property.
        property: PropertyId,
    },
    /// A property value that is out of range.
    InvalidPropertyValue {
        /// The property.
        property: PropertyId,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Subscription options that cannot be sent (No Local on a shared subscription).
    InvalidSubscriptionOptions {
        /// What is wrong.
        problem: &'static str,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::UnsupportedInV311 { packet, field } => {
                write!(f, "{packet}: {field} cannot be encoded in MQTT 3.1.1")
            }
            EncodeError::ReasonCodeNotInV311 { packet, reason } => write!(
                f,
                "reason code 0x{:02X} ({reason}) in {packet} cannot be encoded in MQTT 3.1.1",
                reason.code()
            ),
            EncodeError::InvalidReasonCode { packet, reason } => write!(
                f,
                "reason code 0x{:02X} ({reason}) is not allowed in {packet}",
                reason.code()
            ),
            EncodeError::FieldTooLong { field, len } => {
                write!(f, "{field} is {len} bytes long, more than 65535")
            }
            EncodeError::NullCharacter { field } => write!(f, "{field} contains U+0000"),
            EncodeError::PacketTooLarge { remaining_length } => write!(
                f,
                "remaining length {remaining_length} exceeds the protocol maximum of 268435455"
            ),
            EncodeError::VarIntTooLarge { value } => write!(
                f,
                "{value} does not fit a variable byte integer (maximum 268435455)"
            ),
            EncodeError::PacketIdZero { packet } => {
                write!(f, "{packet} needs a non-zero packet identifier")
            }
            EncodeError::UnexpectedPacketId => {
                f.write_str("a QoS 0 PUBLISH has no packet identifier, but one is set")
            }
            EncodeError::DupWithQoS0 => f.write_str("DUP must be 0 on a QoS 0 PUBLISH"),
            EncodeError::EmptyPayload { packet } => match packet {
                PacketType::Subscribe | PacketType::Unsubscribe => {
                    write!(f, "{packet} needs at least one topic filter")
                }
                _ => write!(f, "{packet} needs at least one reason code"),
            },
            EncodeError::InvalidTopic { field, error } => write!(f, "{field}: {error}"),
            EncodeError::PropertyNotAllowed { packet, property } => write!(
                f,
                "property 0x{:02X} ({}) is not allowed in {packet}",
                *property as u8,
                property.name()
            ),
            EncodeError::InvalidPropertyValue { property, problem } => write!(
                f,
                "property 0x{:02X} ({}): {problem}",
                *property as u8,
                property.name()
            ),
            EncodeError::InvalidSubscriptionOptions { problem } => {
                write!(f, "invalid subscription options: {problem}")
            }
        }
    }
}

impl std::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EncodeError::InvalidTopic { error, .. } => Some(error),
            _ => None,
        }
    }
}
