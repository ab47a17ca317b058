//! MQTT 5 reason codes, with the MQTT 3.1.1 return codes mapped onto the same names.

use core::fmt;

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $name:ident = $code:literal => $text:literal, )*) => {
        /// A reason code, as defined in MQTT 5.0 section 2.4.
        ///
        /// MQTT 3.1.1 return codes (CONNACK, SUBACK) are mapped onto the same names with
        /// [`ReasonCode::from_v311_connack`] and [`ReasonCode::from_v311_suback`].
        ///
        /// `Display` prints the specification's words:
        ///
        /// ```
        /// use steadfast_proto::ReasonCode;
        /// assert_eq!(ReasonCode::BadUserNameOrPassword.to_string(), "Bad User Name or Password");
        /// assert_eq!(ReasonCode::try_from(0x87).unwrap(), ReasonCode::NotAuthorized);
        /// ```
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum ReasonCode {
            $( $(#[$doc])* $name = $code, )*
        }

        impl ReasonCode {
            /// Every reason code the specification defines, in numeric order.
            pub const ALL: &'static [ReasonCode] = &[ $( ReasonCode::$name, )* ];

            /// The specification's name for this code (for 0x00, "Success").
            pub const fn name(self) -> &'static str {
                match self { $( ReasonCode::$name => $text, )* }
            }
        }

        impl TryFrom<u8> for ReasonCode {
            type Error = u8;
            /// Maps a byte to a reason code; an unknown byte is returned as the error.
            fn try_from(b: u8) -> Result<Self, u8> {
                match b {
                    $( $code => Ok(ReasonCode::$name), )*
                    other => Err(other),
                }
            }
        }
    };
}

reason_codes! {
    /// 0x00: Success, Normal disconnection, Granted QoS 0.
    Success = 0x00 => "Success",
    /// 0x01: Granted QoS 1.
    GrantedQoS1 = 0x01 => "Granted QoS 1",
    /// 0x02: Granted QoS 2.
    GrantedQoS2 = 0x02 => "Granted QoS 2",
    /// 0x04: Disconnect with Will Message.
    DisconnectWithWillMessage = 0x04 => "Disconnect with Will Message",
    /// 0x10: No matching subscribers.
    NoMatchingSubscribers = 0x10 => "No matching subscribers",
    /// 0x11: No subscription existed.
    NoSubscriptionExisted = 0x11 => "No subscription existed",
    /// 0x18: Continue authentication.
    ContinueAuthentication = 0x18 => "Continue authentication",
    /// 0x19: Re-authenticate.
    ReAuthenticate = 0x19 => "Re-authenticate",
    /// 0x80: Unspecified error.
    UnspecifiedError = 0x80 => "Unspecified error",
    /// 0x81: Malformed Packet.
    MalformedPacket = 0x81 => "Malformed Packet",
    /// 0x82: Protocol Error.
    ProtocolError = 0x82 => "Protocol Error",
    /// 0x83: Implementation specific error.
    ImplementationSpecificError = 0x83 => "Implementation specific error",
    /// 0x84: Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84 => "Unsupported Protocol Version",
    /// 0x85: Client Identifier not valid.
    ClientIdentifierNotValid = 0x85 => "Client Identifier not valid",
    /// 0x86: Bad User Name or Password.
    BadUserNameOrPassword = 0x86 => "Bad User Name or Password",
    /// 0x87: Not authorized.
    NotAuthorized = 0x87 => "Not authorized",
    /// 0x88: Server unavailable.
    ServerUnavailable = 0x88 => "Server unavailable",
    /// 0x89: Server busy.
    ServerBusy = 0x89 => "Server busy",
    /// 0x8A: Banned.
    Banned = 0x8A => "Banned",
    /// 0x8B: Server shutting down.
    ServerShuttingDown = 0x8B => "Server shutting down",
    /// 0x8C: Bad authentication method.
    BadAuthenticationMethod = 0x8C => "Bad authentication method",
    /// 0x8D: Keep Alive timeout.
    KeepAliveTimeout = 0x8D => "Keep Alive timeout",
    /// 0x8E: Session taken over.
    SessionTakenOver = 0x8E => "Session taken over",
    /// 0x8F: Topic Filter invalid.
    TopicFilterInvalid = 0x8F => "Topic Filter invalid",
    /// 0x90: Topic Name invalid.
    TopicNameInvalid = 0x90 => "Topic Name invalid",
    /// 0x91: Packet Identifier in use.
    PacketIdentifierInUse = 0x91 => "Packet Identifier in use",
    /// 0x92: Packet Identifier not found.
    PacketIdentifierNotFound = 0x92 => "Packet Identifier not found",
    /// 0x93: Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93 => "Receive Maximum exceeded",
    /// 0x94: Topic Alias invalid.
    TopicAliasInvalid = 0x94 => "Topic Alias invalid",
    /// 0x95: Packet too large.
    PacketTooLarge = 0x95 => "Packet too large",
    /// 0x96: Message rate too high.
    MessageRateTooHigh = 0x96 => "Message rate too high",
    /// 0x97: Quota exceeded.
    QuotaExceeded = 0x97 => "Quota exceeded",
    /// 0x98: Administrative action.
    AdministrativeAction = 0x98 => "Administrative action",
    /// 0x99: Payload format invalid.
    PayloadFormatInvalid = 0x99 => "Payload format invalid",
    /// 0x9A: Retain not supported.
    RetainNotSupported = 0x9A => "Retain not supported",
    /// 0x9B: QoS not supported.
    QoSNotSupported = 0x9B => "QoS not supported",
    /// 0x9C: Use another server.
    UseAnotherServer = 0x9C => "Use another server",
    /// 0x9D: Server moved.
    ServerMoved = 0x9D => "Server moved",
    /// 0x9E: Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E => "Shared Subscriptions not supported",
    /// 0x9F: Connection rate exceeded.
    ConnectionRateExceeded = 0x9F => "Connection rate exceeded",
    /// 0xA0: Maximum connect time.
    MaximumConnectTime = 0xA0 => "Maximum connect time",
    /// 0xA1: Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1 => "Subscription Identifiers not supported",
    /// 0xA2: Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2 => "Wildcard Subscriptions not supported",
}

impl ReasonCode {
    /// 0x00 in a DISCONNECT: "Normal disconnection".
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// 0x00 in a SUBACK: "Granted QoS 0".
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// The numeric code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// True for codes below 0x80.
    pub const fn is_success(self) -> bool {
        (self as u8) < 0x80
    }

    /// Maps an MQTT 3.1.1 CONNACK return code (0-5) onto the MQTT 5 name.
    pub const fn from_v311_connack(rc: u8) -> Option<ReasonCode> {
        Some(match rc {
            0 => ReasonCode::Success,
            1 => ReasonCode::UnsupportedProtocolVersion,
            2 => ReasonCode::ClientIdentifierNotValid,
            3 => ReasonCode::ServerUnavailable,
            4 => ReasonCode::BadUserNameOrPassword,
            5 => ReasonCode::NotAuthorized,
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 CONNACK return code for this reason, when one exists.
    pub const fn to_v311_connack(self) -> Option<u8> {
        Some(match self {
            ReasonCode::Success => 0,
            ReasonCode::UnsupportedProtocolVersion => 1,
            ReasonCode::ClientIdentifierNotValid => 2,
            ReasonCode::ServerUnavailable => 3,
            ReasonCode::BadUserNameOrPassword => 4,
            ReasonCode::NotAuthorized => 5,
            _ => return None,
        })
    }

    /// Maps an MQTT 3.1.1 SUBACK return code (0, 1, 2, 0x80) onto the MQTT 5 name.
    pub const fn from_v311_suback(rc: u8) -> Option<ReasonCode> {
        Some(match rc {
            0 => ReasonCode::Success,
            1 => ReasonCode::GrantedQoS1,
            2 => ReasonCode::GrantedQoS2,
            0x80 => ReasonCode::UnspecifiedError,
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 SUBACK return code for this reason, when one exists.
    pub const fn to_v311_suback(self) -> Option<u8> {
        Some(match self {
            ReasonCode::Success => 0,
            ReasonCode::GrantedQoS1 => 1,
            ReasonCode::GrantedQoS2 => 2,
            ReasonCode::UnspecifiedError => 0x80,
            _ => return None,
        })
    }
}

impl ReasonCode {
    /// May an MQTT 5 packet of type `packet` carry this reason code? (The tables in sections
    /// 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1 and 3.15.2.1.)
    /// Packets without a reason code accept none.
    ///
    /// ```
    /// use steadfast_proto::{PacketType, ReasonCode};
    /// assert!(ReasonCode::NoMatchingSubscribers.is_valid_for(PacketType::PubAck));
    /// assert!(!ReasonCode::NoMatchingSubscribers.is_valid_for(PacketType::PubRel));
    /// ```
    pub const fn is_valid_for(self, packet: super::PacketType) -> bool {
        use super::PacketType as P;
        let c = self as u8;
        match packet {
            P::ConnAck => matches!(
                c,
                0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
            ),
            P::PubAck | P::PubRec => {
                matches!(
                    c,
                    0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
                )
            }
            P::PubRel | P::PubComp => matches!(c, 0x00 | 0x92),
            P::SubAck => matches!(
                c,
                0x00 | 0x01 | 0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
            ),
            P::UnsubAck => matches!(c, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91),
            P::Disconnect => matches!(
                c,
                0x00 | 0x04
                    | 0x80..=0x83
                    | 0x87
                    | 0x89
                    | 0x8B
                    | 0x8D..=0x90
                    | 0x93..=0xA2
            ),
            P::Auth => matches!(c, 0x00 | 0x18 | 0x19),
            _ => false,
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_u8() {
        for &rc in ReasonCode::ALL {
            assert_eq!(ReasonCode::try_from(rc.code()), Ok(rc));
        }
        assert_eq!(ReasonCode::ALL.len(), 43);
        assert_eq!(ReasonCode::try_from(0x03), Err(0x03));
    }

    #[test]
    fn v311_connack_codes_map_onto_v5_names() {
        for rc in 0..=5u8 {
            let r = ReasonCode::from_v311_connack(rc).unwrap();
            assert_eq!(r.to_v311_connack(), Some(rc));
        }
        assert_eq!(
            ReasonCode::from_v311_connack(4).unwrap().to_string(),
            "Bad User Name or Password"
        );
        assert_eq!(ReasonCode::from_v311_connack(6), None);
    }

    #[test]
    fn validity_per_packet() {
        use crate::packet::PacketType as P;
        let count = |p| {
            ReasonCode::ALL
                .iter()
                .filter(|rc| rc.is_valid_for(p))
                .count()
        };
        assert_eq!(count(P::ConnAck), 22);
        assert_eq!(count(P::PubAck), 9);
        assert_eq!(count(P::PubRec), 9);
        assert_eq!(count(P::PubRel), 2);
        assert_eq!(count(P::PubComp), 2);
        assert_eq!(count(P::SubAck), 12);
        assert_eq!(count(P::UnsubAck), 7);
        assert_eq!(count(P::Disconnect), 29);
        assert_eq!(count(P::Auth), 3);
        assert_eq!(count(P::Publish), 0);
        assert!(ReasonCode::ServerMoved.is_valid_for(P::ConnAck));
        assert!(!ReasonCode::ServerShuttingDown.is_valid_for(P::ConnAck));
        assert!(ReasonCode::ServerShuttingDown.is_valid_for(P::Disconnect));
        assert!(!ReasonCode::BadUserNameOrPassword.is_valid_for(P::Disconnect));
        assert!(ReasonCode::DisconnectWithWillMessage.is_valid_for(P::Disconnect));
        assert!(ReasonCode::ReAuthenticate.is_valid_for(P::Auth));
    }
}
