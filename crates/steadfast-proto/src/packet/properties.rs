//! MQTT 5 properties (specification section 2.2.2).
//!
//! One [`Properties`] struct serves every packet. Packets hold it as [`Props`], which allocates
//! only when a property is set: most packets carry none, and a `Publish` stays small. The decoder
//! rejects a property that is not allowed in the packet being decoded, and a property repeated
//! where the specification forbids it.

use core::fmt;
use core::ops::{Deref, DerefMut};

use bytes::Bytes;

use crate::codec::ByteStr;

/// Every MQTT 5 property identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQoS = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

/// The MQTT 5 properties of a packet. All fields are optional; `Default` is "no properties".
///
/// Which fields a packet may carry is checked by the codec, per the table in section 2.2.2.2.
/// For MQTT 3.1.1 the properties are not encoded at all, and the encoder rejects a packet
/// whose properties are not empty (options that only MQTT 5 has fail clearly, not silently).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01 (PUBLISH, will): 0 = unspecified bytes, 1 = UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// 0x02 (PUBLISH, will), seconds.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 (PUBLISH, will).
    pub content_type: Option<ByteStr>,
    /// 0x08 (PUBLISH, will).
    pub response_topic: Option<ByteStr>,
    /// 0x09 (PUBLISH, will).
    pub correlation_data: Option<Bytes>,
    /// 0x0B (PUBLISH: may repeat; SUBSCRIBE: at most one). Values 1..=268,435,455.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 (CONNECT, CONNACK, DISCONNECT), seconds.
    pub session_expiry_interval: Option<u32>,
    /// 0x12 (CONNACK).
    pub assigned_client_identifier: Option<ByteStr>,
    /// 0x13 (CONNACK), seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15 (CONNECT, CONNACK, AUTH).
    pub authentication_method: Option<ByteStr>,
    /// 0x16 (CONNECT, CONNACK, AUTH).
    pub authentication_data: Option<Bytes>,
    /// 0x17 (CONNECT): 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x18 (will), seconds.
    pub will_delay_interval: Option<u32>,
    /// 0x19 (CONNECT): 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x1A (CONNACK).
    pub response_information: Option<ByteStr>,
    /// 0x1C (CONNACK, DISCONNECT).
    pub server_reference: Option<ByteStr>,
    /// 0x1F (CONNACK, acks, SUBACK, UNSUBACK, DISCONNECT, AUTH).
    pub reason_string: Option<ByteStr>,
    /// 0x21 (CONNECT, CONNACK): 1..=65535.
    pub receive_maximum: Option<u16>,
    /// 0x22 (CONNECT, CONNACK).
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 (PUBLISH): 1..=65535.
    pub topic_alias: Option<u16>,
    /// 0x24 (CONNACK): 0 or 1.
    pub maximum_qos: Option<u8>,
    /// 0x25 (CONNACK): 0 or 1.
    pub retain_available: Option<u8>,
    /// 0x26 (every packet with properties; may repeat, order preserved).
    pub user_properties: Vec<(ByteStr, ByteStr)>,
    /// 0x27 (CONNECT, CONNACK): 1..=268,435,455 plus header, i.e. non-zero.
    pub maximum_packet_size: Option<u32>,
    /// 0x28 (CONNACK): 0 or 1.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 (CONNACK): 0 or 1.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A (CONNACK): 0 or 1.
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// No property set, as a constant (what `Properties::default()` returns).
    pub const EMPTY: Properties = Properties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        subscription_identifiers: Vec::new(),
        session_expiry_interval: None,
        assigned_client_identifier: None,
        server_keep_alive: None,
        authentication_method: None,
        authentication_data: None,
        request_problem_information: None,
        will_delay_interval: None,
        request_response_information: None,
        response_information: None,
        server_reference: None,
        reason_string: None,
        receive_maximum: None,
        topic_alias_maximum: None,
        topic_alias: None,
        maximum_qos: None,
        retain_available: None,
        user_properties: Vec::new(),
        maximum_packet_size: None,
        wildcard_subscription_available: None,
        subscription_identifier_available: None,
        shared_subscription_available: None,
    };

    /// True when no property is set.
    #[inline]
    pub fn is_empty(&self) -> bool {
        // Field by field rather than `== Properties::default()`, and with `&` rather than `&&`
        // (branch-free): this runs for every PUBLISH encoded.
        let Properties {
            payload_format_indicator,
            message_expiry_interval,
            content_type,
            response_topic,
            correlation_data,
            subscription_identifiers,
            session_expiry_interval,
            assigned_client_identifier,
            server_keep_alive,
            authentication_method,
            authentication_data,
            request_problem_information,
            will_delay_interval,
            request_response_information,
            response_information,
            server_reference,
            reason_string,
            receive_maximum,
            topic_alias_maximum,
            topic_alias,
            maximum_qos,
            retain_available,
            user_properties,
            maximum_packet_size,
            wildcard_subscription_available,
            subscription_identifier_available,
            shared_subscription_available,
        } = self;
        payload_format_indicator.is_none()
            & message_expiry_interval.is_none()
            & content_type.is_none()
            & response_topic.is_none()
            & correlation_data.is_none()
            & subscription_identifiers.is_empty()
            & session_expiry_interval.is_none()
            & assigned_client_identifier.is_none()
            & server_keep_alive.is_none()
            & authentication_method.is_none()
            & authentication_data.is_none()
            & request_problem_information.is_none()
            & will_delay_interval.is_none()
            & request_response_information.is_none()
            & response_information.is_none()
            & server_reference.is_none()
            & reason_string.is_none()
            & receive_maximum.is_none()
            & topic_alias_maximum.is_none()
            & topic_alias.is_none()
            & maximum_qos.is_none()
            & retain_available.is_none()
            & user_properties.is_empty()
            & maximum_packet_size.is_none()
            & wildcard_subscription_available.is_none()
            & subscription_identifier_available.is_none()
            & shared_subscription_available.is_none()
    }
}

impl PropertyId {
    /// Every property identifier, in numeric order.
    pub const ALL: &'static [PropertyId] = &[
        PropertyId::PayloadFormatIndicator,
        PropertyId::MessageExpiryInterval,
        PropertyId::ContentType,
        PropertyId::ResponseTopic,
        PropertyId::CorrelationData,
        PropertyId::SubscriptionIdentifier,
        PropertyId::SessionExpiryInterval,
        PropertyId::AssignedClientIdentifier,
        PropertyId::ServerKeepAlive,
        PropertyId::AuthenticationMethod,
        PropertyId::AuthenticationData,
        PropertyId::RequestProblemInformation,
        PropertyId::WillDelayInterval,
        PropertyId::RequestResponseInformation,
        PropertyId::ResponseInformation,
        PropertyId::ServerReference,
        PropertyId::ReasonString,
        PropertyId::ReceiveMaximum,
        PropertyId::TopicAliasMaximum,
        PropertyId::TopicAlias,
        PropertyId::MaximumQoS,
        PropertyId::RetainAvailable,
        PropertyId::UserProperty,
        PropertyId::MaximumPacketSize,
        PropertyId::WildcardSubscriptionAvailable,
        PropertyId::SubscriptionIdentifierAvailable,
        PropertyId::SharedSubscriptionAvailable,
    ];

    /// The property for an identifier byte, if the specification defines one.
    pub const fn from_u8(id: u8) -> Option<PropertyId> {
        Some(match id {
            0x01 => PropertyId::PayloadFormatIndicator,
            0x02 => PropertyId::MessageExpiryInterval,
            0x03 => PropertyId::ContentType,
            0x08 => PropertyId::ResponseTopic,
            0x09 => PropertyId::CorrelationData,
            0x0B => PropertyId::SubscriptionIdentifier,
            0x11 => PropertyId::SessionExpiryInterval,
            0x12 => PropertyId::AssignedClientIdentifier,
            0x13 => PropertyId::ServerKeepAlive,
            0x15 => PropertyId::AuthenticationMethod,
            0x16 => PropertyId::AuthenticationData,
            0x17 => PropertyId::RequestProblemInformation,
            0x18 => PropertyId::WillDelayInterval,
            0x19 => PropertyId::RequestResponseInformation,
            0x1A => PropertyId::ResponseInformation,
            0x1C => PropertyId::ServerReference,
            0x1F => PropertyId::ReasonString,
            0x21 => PropertyId::ReceiveMaximum,
            0x22 => PropertyId::TopicAliasMaximum,
            0x23 => PropertyId::TopicAlias,
            0x24 => PropertyId::MaximumQoS,
            0x25 => PropertyId::RetainAvailable,
            0x26 => PropertyId::UserProperty,
            0x27 => PropertyId::MaximumPacketSize,
            0x28 => PropertyId::WildcardSubscriptionAvailable,
            0x29 => PropertyId::SubscriptionIdentifierAvailable,
            0x2A => PropertyId::SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// The specification's name, e.g. `"Topic Alias"`.
    pub const fn name(self) -> &'static str {
        match self {
            PropertyId::PayloadFormatIndicator => "Payload Format Indicator",
            PropertyId::MessageExpiryInterval => "Message Expiry Interval",
            PropertyId::ContentType => "Content Type",
            PropertyId::ResponseTopic => "Response Topic",
            PropertyId::CorrelationData => "Correlation Data",
            PropertyId::SubscriptionIdentifier => "Subscription Identifier",
            PropertyId::SessionExpiryInterval => "Session Expiry Interval",
            PropertyId::AssignedClientIdentifier => "Assigned Client Identifier",
            PropertyId::ServerKeepAlive => "Server Keep Alive",
            PropertyId::AuthenticationMethod => "Authentication Method",
            PropertyId::AuthenticationData => "Authentication Data",
            PropertyId::RequestProblemInformation => "Request Problem Information",
            PropertyId::WillDelayInterval => "Will Delay Interval",
            PropertyId::RequestResponseInformation => "Request Response Information",
            PropertyId::ResponseInformation => "Response Information",
            PropertyId::ServerReference => "Server Reference",
            PropertyId::ReasonString => "Reason String",
            PropertyId::ReceiveMaximum => "Receive Maximum",
            PropertyId::TopicAliasMaximum => "Topic Alias Maximum",
            PropertyId::TopicAlias => "Topic Alias",
            PropertyId::MaximumQoS => "Maximum QoS",
            PropertyId::RetainAvailable => "Retain Available",
            PropertyId::UserProperty => "User Property",
            PropertyId::MaximumPacketSize => "Maximum Packet Size",
            PropertyId::WildcardSubscriptionAvailable => "Wildcard Subscription Available",
            PropertyId::SubscriptionIdentifierAvailable => "Subscription Identifier Available",
            PropertyId::SharedSubscriptionAvailable => "Shared Subscription Available",
        }
    }
}

impl TryFrom<u8> for PropertyId {
    type Error = u8;
    /// Maps an identifier byte to a property; an unknown byte is returned as the error.
    fn try_from(id: u8) -> Result<Self, u8> {
        PropertyId::from_u8(id).ok_or(id)
    }
}

impl fmt::Display for PropertyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} ({})", *self as u8, self.name())
    }
}

/// The shared "no properties" value that an empty [`Props`] dereferences to.
static EMPTY: Properties = Properties::EMPTY;

/// A packet's MQTT 5 properties, boxed: no allocation, and one pointer in the packet, while no
/// property is set (the common case). It dereferences to [`Properties`], so fields read as
/// `packet.properties.topic_alias`; writing through it (`DerefMut`) allocates on first use.
///
/// ```
/// use steadfast_proto::{Properties, Props};
///
/// let mut props = Props::new();
/// assert!(props.is_empty() && props.topic_alias.is_none());
/// props.topic_alias = Some(3);
/// assert_eq!(props.topic_alias, Some(3));
///
/// let from: Props = Properties { message_expiry_interval: Some(60), ..Properties::default() }.into();
/// assert_eq!(from.message_expiry_interval, Some(60));
/// ```
#[derive(Clone, Default)]
pub struct Props(Option<Box<Properties>>);

impl Props {
    /// No properties (does not allocate).
    pub const fn new() -> Props {
        Props(None)
    }

    /// True when no property is set. Checks one pointer when nothing was ever set.
    #[inline]
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            None => true,
            Some(p) => p.is_empty(),
        }
    }

    /// The properties for writing, or `None` while none are set (no allocation). Use it to
    /// change a property only if the packet has some, e.g. to clear one.
    #[inline]
    pub fn get_mut(&mut self) -> Option<&mut Properties> {
        self.0.as_deref_mut()
    }

    /// Takes the properties out, leaving none.
    pub fn take(&mut self) -> Props {
        Props(self.0.take())
    }

    /// The properties by value.
    pub fn into_inner(self) -> Properties {
        match self.0 {
            None => Properties::EMPTY,
            Some(p) => *p,
        }
    }
}

impl Deref for Props {
    type Target = Properties;
    #[inline]
    fn deref(&self) -> &Properties {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl DerefMut for Props {
    /// Allocates the properties on first write.
    #[inline]
    fn deref_mut(&mut self) -> &mut Properties {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<Properties> for Props {
    /// Boxes `p`, or holds nothing when it is empty.
    fn from(p: Properties) -> Props {
        if p.is_empty() {
            Props(None)
        } else {
            Props(Some(Box::new(p)))
        }
    }
}

impl From<Box<Properties>> for Props {
    fn from(p: Box<Properties>) -> Props {
        if p.is_empty() {
            Props(None)
        } else {
            Props(Some(p))
        }
    }
}

impl From<Props> for Properties {
    fn from(p: Props) -> Properties {
        p.into_inner()
    }
}

impl PartialEq for Props {
    fn eq(&self, other: &Props) -> bool {
        **self == **other
    }
}

impl Eq for Props {}

impl PartialEq<Properties> for Props {
    fn eq(&self, other: &Properties) -> bool {
        **self == *other
    }
}

impl fmt::Debug for Props {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Packet, Publish};

    /// Packets and events are moved through queues and channels by value; with the properties
    /// boxed they stay a few words (unboxed, a `Publish` was 472 bytes and an `Event` 480).
    #[test]
    fn packets_and_events_stay_small() {
        assert_eq!(core::mem::size_of::<Props>(), core::mem::size_of::<usize>());
        assert!(core::mem::size_of::<Publish>() <= 80);
        assert!(core::mem::size_of::<Event>() <= 96);
        assert!(core::mem::size_of::<Packet>() <= 192);
    }

    #[test]
    fn empty_props_do_not_allocate_and_compare_by_value() {
        let mut p = Props::new();
        assert!(p.is_empty() && p.get_mut().is_none());
        assert_eq!(p, Props::from(Properties::default()));
        assert!(Props::from(Properties::default()).get_mut().is_none());
        p.reason_string = Some("why".into());
        assert!(!p.is_empty());
        assert_eq!(p.clone().into_inner().reason_string.as_deref(), Some("why"));
        // A box emptied by hand still compares equal to no properties.
        p.reason_string = None;
        assert!(p.is_empty());
        assert_eq!(p, Props::new());
    }
}
