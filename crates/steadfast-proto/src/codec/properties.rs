//! Encoding and decoding of MQTT 5 properties (section 2.2.2), with the per-packet allowed set
//! of section 2.2.2.2, repetition rules and value ranges. The same checks run on both sides, so
//! whatever encodes also decodes.

use bytes::{BufMut, BytesMut};

use super::error::{EncodeError, Malformed, MalformedKind};
use super::strings::{bin_len, put_bin, put_str, str_len, Reader};
use super::varint;
use crate::packet::{PacketType, Properties, PropertyId, Props, ReasonCode};
use crate::topic;

/// Where a property block sits: a packet, or the will properties in CONNECT's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropCtx {
    Connect,
    ConnAck,
    Publish,
    Will,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropCtx {
    const fn bit(self) -> u16 {
        1 << (self as u16)
    }

    pub(crate) const fn name(self) -> &'static str {
        match self {
            PropCtx::Will => "will properties",
            other => other.packet().name(),
        }
    }

    pub(crate) const fn packet(self) -> PacketType {
        match self {
            PropCtx::Connect | PropCtx::Will => PacketType::Connect,
            PropCtx::ConnAck => PacketType::ConnAck,
            PropCtx::Publish => PacketType::Publish,
            PropCtx::PubAck => PacketType::PubAck,
            PropCtx::PubRec => PacketType::PubRec,
            PropCtx::PubRel => PacketType::PubRel,
            PropCtx::PubComp => PacketType::PubComp,
            PropCtx::Subscribe => PacketType::Subscribe,
            PropCtx::SubAck => PacketType::SubAck,
            PropCtx::Unsubscribe => PacketType::Unsubscribe,
            PropCtx::UnsubAck => PacketType::UnsubAck,
            PropCtx::Disconnect => PacketType::Disconnect,
            PropCtx::Auth => PacketType::Auth,
        }
    }

    /// The context for an acknowledgement packet type.
    pub(crate) const fn for_ack(packet: PacketType) -> PropCtx {
        match packet {
            PacketType::PubRec => PropCtx::PubRec,
            PacketType::PubRel => PropCtx::PubRel,
            PacketType::PubComp => PropCtx::PubComp,
            _ => PropCtx::PubAck,
        }
    }
}

/// The contexts in which each property may appear (MQTT 5.0 table 2.2.2.2).
const fn allowed_in(id: PropertyId) -> u16 {
    use PropCtx as C;
    const PUBLISH_WILL: u16 = C::Publish.bit() | C::Will.bit();
    const ACKS: u16 = C::PubAck.bit() | C::PubRec.bit() | C::PubRel.bit() | C::PubComp.bit();
    match id {
        PropertyId::PayloadFormatIndicator
        | PropertyId::MessageExpiryInterval
        | PropertyId::ContentType
        | PropertyId::ResponseTopic
        | PropertyId::CorrelationData => PUBLISH_WILL,
        PropertyId::SubscriptionIdentifier => C::Publish.bit() | C::Subscribe.bit(),
        PropertyId::SessionExpiryInterval => {
            C::Connect.bit() | C::ConnAck.bit() | C::Disconnect.bit()
        }
        PropertyId::AssignedClientIdentifier
        | PropertyId::ServerKeepAlive
        | PropertyId::ResponseInformation
        | PropertyId::MaximumQoS
        | PropertyId::RetainAvailable
        | PropertyId::WildcardSubscriptionAvailable
        | PropertyId::SubscriptionIdentifierAvailable
        | PropertyId::SharedSubscriptionAvailable => C::ConnAck.bit(),
        PropertyId::AuthenticationMethod | PropertyId::AuthenticationData => {
            C::Connect.bit() | C::ConnAck.bit() | C::Auth.bit()
        }
        PropertyId::RequestProblemInformation | PropertyId::RequestResponseInformation => {
            C::Connect.bit()
        }
        PropertyId::WillDelayInterval => C::Will.bit(),
        PropertyId::ServerReference => C::ConnAck.bit() | C::Disconnect.bit(),
        PropertyId::ReasonString => {
            C::ConnAck.bit()
                | ACKS
                | C::SubAck.bit()
                | C::UnsubAck.bit()
                | C::Disconnect.bit()
                | C::Auth.bit()
        }
        PropertyId::ReceiveMaximum
        | PropertyId::TopicAliasMaximum
        | PropertyId::MaximumPacketSize => C::Connect.bit() | C::ConnAck.bit(),
        PropertyId::TopicAlias => C::Publish.bit(),
        PropertyId::UserProperty => u16::MAX,
    }
}

/// Is property `id` allowed in `ctx`?
pub(crate) const fn is_allowed(id: PropertyId, ctx: PropCtx) -> bool {
    allowed_in(id) & ctx.bit() != 0
}

/// Range rules shared by the encoder and the decoder; `Err` holds what is wrong.
#[inline]
fn check_u8_flag(v: u8) -> Result<(), &'static str> {
    if v > 1 {
        Err("value must be 0 or 1")
    } else {
        Ok(())
    }
}

#[inline]
fn check_nonzero<T: PartialEq + Default>(v: T) -> Result<(), &'static str> {
    if v == T::default() {
        Err("value 0 is not allowed")
    } else {
        Ok(())
    }
}

#[inline]
fn check_subscription_id(v: u32) -> Result<(), &'static str> {
    if v == 0 {
        Err("value 0 is not allowed")
    } else if v > varint::MAX {
        Err("value exceeds 268435455")
    } else {
        Ok(())
    }
}

/// Encoded size of the properties (without their length prefix), after checking that each set
/// property is allowed in `ctx` and in range.
pub(crate) fn measure(p: &Properties, ctx: PropCtx) -> Result<usize, EncodeError> {
    #[inline]
    fn allow(id: PropertyId, ctx: PropCtx) -> Result<(), EncodeError> {
        if is_allowed(id, ctx) {
            Ok(())
        } else {
            Err(EncodeError::PropertyNotAllowed {
                packet: ctx.name(),
                property: id,
            })
        }
    }
    #[inline]
    fn value(id: PropertyId, r: Result<(), &'static str>) -> Result<(), EncodeError> {
        r.map_err(|problem| EncodeError::InvalidPropertyValue {
            property: id,
            problem,
        })
    }
    use PropertyId as I;

    let mut len = 0usize;
    if let Some(v) = p.payload_format_indicator {
        allow(I::PayloadFormatIndicator, ctx)?;
        value(I::PayloadFormatIndicator, check_u8_flag(v))?;
        len += 2;
    }
    if p.message_expiry_interval.is_some() {
        allow(I::MessageExpiryInterval, ctx)?;
        len += 5;
    }
    if let Some(s) = &p.content_type {
        allow(I::ContentType, ctx)?;
        len += 1 + str_len(s, "Content Type property")?;
    }
    if let Some(s) = &p.response_topic {
        allow(I::ResponseTopic, ctx)?;
        len += 1 + str_len(s, "Response Topic property")?;
        topic::validate_name(s).map_err(|error| EncodeError::InvalidTopic {
            field: "Response Topic property",
            error,
        })?;
    }
    if let Some(b) = &p.correlation_data {
        allow(I::CorrelationData, ctx)?;
        len += 1 + bin_len(b, "Correlation Data property")?;
    }
    if !p.subscription_identifiers.is_empty() {
        allow(I::SubscriptionIdentifier, ctx)?;
        if ctx == PropCtx::Subscribe && p.subscription_identifiers.len() > 1 {
            return Err(EncodeError::InvalidPropertyValue {
                property: I::SubscriptionIdentifier,
                problem: "SUBSCRIBE carries at most one",
            });
        }
        for &id in &p.subscription_identifiers {
            value(I::SubscriptionIdentifier, check_subscription_id(id))?;
            len += 1 + varint::len_unchecked(id as usize);
        }
    }
    if p.session_expiry_interval.is_some() {
        allow(I::SessionExpiryInterval, ctx)?;
        len += 5;
    }
    if let Some(s) = &p.assigned_client_identifier {
        allow(I::AssignedClientIdentifier, ctx)?;
        len += 1 + str_len(s, "Assigned Client Identifier property")?;
    }
    if p.server_keep_alive.is_some() {
        allow(I::ServerKeepAlive, ctx)?;
        len += 3;
    }
    if let Some(s) = &p.authentication_method {
        allow(I::AuthenticationMethod, ctx)?;
        len += 1 + str_len(s, "Authentication Method property")?;
    }
    if let Some(b) = &p.authentication_data {
        allow(I::AuthenticationData, ctx)?;
        if p.authentication_method.is_none() {
            return Err(EncodeError::InvalidPropertyValue {
                property: I::AuthenticationData,
                problem: "Authentication Data without Authentication Method",
            });
        }
        len += 1 + bin_len(b, "Authentication Data property")?;
    }
    if let Some(v) = p.request_problem_information {
        allow(I::RequestProblemInformation, ctx)?;
        value(I::RequestProblemInformation, check_u8_flag(v))?;
        len += 2;
    }
    if p.will_delay_interval.is_some() {
        allow(I::WillDelayInterval, ctx)?;
        len += 5;
    }
    if let Some(v) = p.request_response_information {
        allow(I::RequestResponseInformation, ctx)?;
        value(I::RequestResponseInformation, check_u8_flag(v))?;
        len += 2;
    }
    if let Some(s) = &p.response_information {
        allow(I::ResponseInformation, ctx)?;
        len += 1 + str_len(s, "Response Information property")?;
    }
    if let Some(s) = &p.server_reference {
        allow(I::ServerReference, ctx)?;
        len += 1 + str_len(s, "Server Reference property")?;
    }
    if let Some(s) = &p.reason_string {
        allow(I::ReasonString, ctx)?;
        len += 1 + str_len(s, "Reason String property")?;
    }
    if let Some(v) = p.receive_maximum {
        allow(I::ReceiveMaximum, ctx)?;
        value(I::ReceiveMaximum, check_nonzero(v))?;
        len += 3;
    }
    if p.topic_alias_maximum.is_some() {
        allow(I::TopicAliasMaximum, ctx)?;
        len += 3;
    }
    if let Some(v) = p.topic_alias {
        allow(I::TopicAlias, ctx)?;
        value(I::TopicAlias, check_nonzero(v))?;
        len += 3;
    }
    if let Some(v) = p.maximum_qos {
        allow(I::MaximumQoS, ctx)?;
        value(I::MaximumQoS, check_u8_flag(v))?;
        len += 2;
    }
    if let Some(v) = p.retain_available {
        allow(I::RetainAvailable, ctx)?;
        value(I::RetainAvailable, check_u8_flag(v))?;
        len += 2;
    }
    if !p.user_properties.is_empty() {
        allow(I::UserProperty, ctx)?;
        for (k, v) in &p.user_properties {
            len += 1 + str_len(k, "User Property name")? + str_len(v, "User Property value")?;
        }
    }
    if let Some(v) = p.maximum_packet_size {
        allow(I::MaximumPacketSize, ctx)?;
        value(I::MaximumPacketSize, check_nonzero(v))?;
        len += 5;
    }
    if let Some(v) = p.wildcard_subscription_available {
        allow(I::WildcardSubscriptionAvailable, ctx)?;
        value(I::WildcardSubscriptionAvailable, check_u8_flag(v))?;
        len += 2;
    }
    if let Some(v) = p.subscription_identifier_available {
        allow(I::SubscriptionIdentifierAvailable, ctx)?;
        value(I::SubscriptionIdentifierAvailable, check_u8_flag(v))?;
        len += 2;
    }
    if let Some(v) = p.shared_subscription_available {
        allow(I::SharedSubscriptionAvailable, ctx)?;
        value(I::SharedSubscriptionAvailable, check_u8_flag(v))?;
        len += 2;
    }
    if len > varint::MAX as usize {
        return Err(EncodeError::PacketTooLarge {
            remaining_length: len,
        });
    }
    Ok(len)
}

/// Size of a property block including its length prefix, for a length from [`measure`].
#[inline]
pub(crate) const fn block_len(props_len: usize) -> usize {
    varint::len_unchecked(props_len) + props_len
}

/// Writes the length prefix and the properties, in identifier order. `len` comes from
/// [`measure`], which also validated everything.
pub(crate) fn write(p: &Properties, len: usize, out: &mut BytesMut) {
    varint::put_unchecked(len, out);
    if len == 0 {
        return;
    }
    use PropertyId as I;
    if let Some(v) = p.payload_format_indicator {
        out.put_u8(I::PayloadFormatIndicator as u8);
        out.put_u8(v);
    }
    if let Some(v) = p.message_expiry_interval {
        out.put_u8(I::MessageExpiryInterval as u8);
        out.put_u32(v);
    }
    if let Some(s) = &p.content_type {
        out.put_u8(I::ContentType as u8);
        put_str(out, s);
    }
    if let Some(s) = &p.response_topic {
        out.put_u8(I::ResponseTopic as u8);
        put_str(out, s);
    }
    if let Some(b) = &p.correlation_data {
        out.put_u8(I::CorrelationData as u8);
        put_bin(out, b);
    }
    for &id in &p.subscription_identifiers {
        out.put_u8(I::SubscriptionIdentifier as u8);
        varint::put_unchecked(id as usize, out);
    }
    if let Some(v) = p.session_expiry_interval {
        out.put_u8(I::SessionExpiryInterval as u8);
        out.put_u32(v);
    }
    if let Some(s) = &p.assigned_client_identifier {
        out.put_u8(I::AssignedClientIdentifier as u8);
        put_str(out, s);
    }
    if let Some(v) = p.server_keep_alive {
        out.put_u8(I::ServerKeepAlive as u8);
        out.put_u16(v);
    }
    if let Some(s) = &p.authentication_method {
        out.put_u8(I::AuthenticationMethod as u8);
        put_str(out, s);
    }
    if let Some(b) = &p.authentication_data {
        out.put_u8(I::AuthenticationData as u8);
        put_bin(out, b);
    }
    if let Some(v) = p.request_problem_information {
        out.put_u8(I::RequestProblemInformation as u8);
        out.put_u8(v);
    }
    if let Some(v) = p.will_delay_interval {
        out.put_u8(I::WillDelayInterval as u8);
        out.put_u32(v);
    }
    if let Some(v) = p.request_response_information {
        out.put_u8(I::RequestResponseInformation as u8);
        out.put_u8(v);
    }
    if let Some(s) = &p.response_information {
        out.put_u8(I::ResponseInformation as u8);
        put_str(out, s);
    }
    if let Some(s) = &p.server_reference {
        out.put_u8(I::ServerReference as u8);
        put_str(out, s);
    }
    if let Some(s) = &p.reason_string {
        out.put_u8(I::ReasonString as u8);
        put_str(out, s);
    }
    if let Some(v) = p.receive_maximum {
        out.put_u8(I::ReceiveMaximum as u8);
        out.put_u16(v);
    }
    if let Some(v) = p.topic_alias_maximum {
        out.put_u8(I::TopicAliasMaximum as u8);
        out.put_u16(v);
    }
    if let Some(v) = p.topic_alias {
        out.put_u8(I::TopicAlias as u8);
        out.put_u16(v);
    }
    if let Some(v) = p.maximum_qos {
        out.put_u8(I::MaximumQoS as u8);
        out.put_u8(v);
    }
    if let Some(v) = p.retain_available {
        out.put_u8(I::RetainAvailable as u8);
        out.put_u8(v);
    }
    for (k, v) in &p.user_properties {
        out.put_u8(I::UserProperty as u8);
        put_str(out, k);
        put_str(out, v);
    }
    if let Some(v) = p.maximum_packet_size {
        out.put_u8(I::MaximumPacketSize as u8);
        out.put_u32(v);
    }
    if let Some(v) = p.wildcard_subscription_available {
        out.put_u8(I::WildcardSubscriptionAvailable as u8);
        out.put_u8(v);
    }
    if let Some(v) = p.subscription_identifier_available {
        out.put_u8(I::SubscriptionIdentifierAvailable as u8);
        out.put_u8(v);
    }
    if let Some(v) = p.shared_subscription_available {
        out.put_u8(I::SharedSubscriptionAvailable as u8);
        out.put_u8(v);
    }
}

#[cold]
fn not_allowed(id: PropertyId, ctx: PropCtx) -> Malformed {
    Malformed::new(
        MalformedKind::PropertyNotAllowed,
        format!(
            "property 0x{:02X} ({}) not allowed in {}",
            id as u8,
            id.name(),
            ctx.name()
        ),
    )
}

#[cold]
fn repeated(id: PropertyId, ctx: PropCtx) -> Malformed {
    Malformed::new(
        MalformedKind::DuplicateProperty,
        format!(
            "property 0x{:02X} ({}) repeated in {}",
            id as u8,
            id.name(),
            ctx.name()
        ),
    )
}

#[cold]
fn bad_value(id: PropertyId, ctx: PropCtx, problem: &str) -> Malformed {
    Malformed::new(
        MalformedKind::InvalidPropertyValue,
        format!(
            "property 0x{:02X} ({}) in {}: {problem}",
            id as u8,
            id.name(),
            ctx.name()
        ),
    )
}

#[cold]
fn unknown(id: u32, ctx: PropCtx) -> Malformed {
    Malformed::new(
        MalformedKind::UnknownProperty,
        format!("unknown property identifier 0x{id:02X} in {}", ctx.name()),
    )
}

/// Reads a property block (length prefix included) for `ctx`.
///
/// The empty block (a single 0 byte, by far the most common) is handled inline and allocates
/// nothing; a block with properties is decoded out of line and boxed.
#[inline(always)]
pub(crate) fn decode(r: &mut Reader, ctx: PropCtx) -> Result<Props, Malformed> {
    if r.skip_zero_byte() {
        return Ok(Props::new());
    }
    decode_block(r, ctx)
}

#[inline(never)]
fn decode_block(r: &mut Reader, ctx: PropCtx) -> Result<Props, Malformed> {
    let len = r.varint("property length")? as usize;
    if len == 0 {
        return Ok(Props::new());
    }
    let mut p = Box::<Properties>::default();
    let mut r = r.sub(len, "properties")?;
    // One bit per identifier (all are below 64) to catch repetitions.
    let mut seen: u64 = 0;
    while !r.is_empty() {
        let raw = r.varint("property identifier")?;
        let id = u8::try_from(raw)
            .ok()
            .and_then(PropertyId::from_u8)
            .ok_or_else(|| unknown(raw, ctx))?;
        if !is_allowed(id, ctx) {
            return Err(not_allowed(id, ctx));
        }
        let bit = 1u64 << (id as u8);
        let may_repeat = id == PropertyId::UserProperty
            || (id == PropertyId::SubscriptionIdentifier && ctx == PropCtx::Publish);
        if seen & bit != 0 && !may_repeat {
            return Err(repeated(id, ctx));
        }
        seen |= bit;
        let check = |res: Result<(), &'static str>| res.map_err(|e| bad_value(id, ctx, e));
        use PropertyId as I;
        match id {
            I::PayloadFormatIndicator => {
                let v = r.u8("Payload Format Indicator")?;
                check(check_u8_flag(v))?;
                p.payload_format_indicator = Some(v);
            }
            I::MessageExpiryInterval => {
                p.message_expiry_interval = Some(r.u32("Message Expiry Interval")?);
            }
            I::ContentType => p.content_type = Some(r.string("Content Type property")?),
            I::ResponseTopic => {
                let s = r.string("Response Topic property")?;
                if let Err(e) = topic::validate_name(&s) {
                    return Err(Malformed::new(
                        MalformedKind::InvalidTopicName,
                        format!("{} Response Topic property {}", ctx.name(), e.as_str()),
                    )
                    .with_reason(ReasonCode::ProtocolError));
                }
                p.response_topic = Some(s);
            }
            I::CorrelationData => {
                p.correlation_data = Some(r.binary("Correlation Data property")?);
            }
            I::SubscriptionIdentifier => {
                let v = r.varint("Subscription Identifier")?;
                check(check_subscription_id(v))?;
                p.subscription_identifiers.push(v);
            }
            I::SessionExpiryInterval => {
                p.session_expiry_interval = Some(r.u32("Session Expiry Interval")?);
            }
            I::AssignedClientIdentifier => {
                p.assigned_client_identifier =
                    Some(r.string("Assigned Client Identifier property")?);
            }
            I::ServerKeepAlive => p.server_keep_alive = Some(r.u16("Server Keep Alive")?),
            I::AuthenticationMethod => {
                p.authentication_method = Some(r.string("Authentication Method property")?);
            }
            I::AuthenticationData => {
                p.authentication_data = Some(r.binary("Authentication Data property")?);
            }
            I::RequestProblemInformation => {
                let v = r.u8("Request Problem Information")?;
                check(check_u8_flag(v))?;
                p.request_problem_information = Some(v);
            }
            I::WillDelayInterval => {
                p.will_delay_interval = Some(r.u32("Will Delay Interval")?);
            }
            I::RequestResponseInformation => {
                let v = r.u8("Request Response Information")?;
                check(check_u8_flag(v))?;
                p.request_response_information = Some(v);
            }
            I::ResponseInformation => {
                p.response_information = Some(r.string("Response Information property")?);
            }
            I::ServerReference => {
                p.server_reference = Some(r.string("Server Reference property")?);
            }
            I::ReasonString => p.reason_string = Some(r.string("Reason String property")?),
            I::ReceiveMaximum => {
                let v = r.u16("Receive Maximum")?;
                check(check_nonzero(v))?;
                p.receive_maximum = Some(v);
            }
            I::TopicAliasMaximum => {
                p.topic_alias_maximum = Some(r.u16("Topic Alias Maximum")?);
            }
            I::TopicAlias => {
                let v = r.u16("Topic Alias")?;
                check(check_nonzero(v))?;
                p.topic_alias = Some(v);
            }
            I::MaximumQoS => {
                let v = r.u8("Maximum QoS")?;
                check(check_u8_flag(v))?;
                p.maximum_qos = Some(v);
            }
            I::RetainAvailable => {
                let v = r.u8("Retain Available")?;
                check(check_u8_flag(v))?;
                p.retain_available = Some(v);
            }
            I::UserProperty => {
                let k = r.string("User Property name")?;
                let v = r.string("User Property value")?;
                p.user_properties.push((k, v));
            }
            I::MaximumPacketSize => {
                let v = r.u32("Maximum Packet Size")?;
                check(check_nonzero(v))?;
                p.maximum_packet_size = Some(v);
            }
            I::WildcardSubscriptionAvailable => {
                let v = r.u8("Wildcard Subscription Available")?;
                check(check_u8_flag(v))?;
                p.wildcard_subscription_available = Some(v);
            }
            I::SubscriptionIdentifierAvailable => {
                let v = r.u8("Subscription Identifier Available")?;
                check(check_u8_flag(v))?;
                p.subscription_identifier_available = Some(v);
            }
            I::SharedSubscriptionAvailable => {
                let v = r.u8("Shared Subscription Available")?;
                check(check_u8_flag(v))?;
                p.shared_subscription_available = Some(v);
            }
        }
    }
    if p.authentication_data.is_some() && p.authentication_method.is_none() {
        return Err(bad_value(
            PropertyId::AuthenticationData,
            ctx,
            "Authentication Data without Authentication Method",
        ));
    }
    Ok(p.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_spot_checks() {
        use PropCtx as C;
        use PropertyId as I;
        assert!(is_allowed(I::TopicAlias, C::Publish));
        assert!(!is_allowed(I::TopicAlias, C::Will));
        assert!(is_allowed(I::WillDelayInterval, C::Will));
        assert!(!is_allowed(I::WillDelayInterval, C::Connect));
        assert!(is_allowed(I::SubscriptionIdentifier, C::Subscribe));
        assert!(!is_allowed(I::SubscriptionIdentifier, C::SubAck));
        assert!(is_allowed(I::ReasonString, C::PubRel));
        assert!(!is_allowed(I::ReasonString, C::Publish));
        assert!(!is_allowed(I::ReasonString, C::Connect));
        for &c in &[
            C::Connect,
            C::ConnAck,
            C::Publish,
            C::Will,
            C::PubAck,
            C::PubRec,
            C::PubRel,
            C::PubComp,
            C::Subscribe,
            C::SubAck,
            C::Unsubscribe,
            C::UnsubAck,
            C::Disconnect,
            C::Auth,
        ] {
            assert!(is_allowed(I::UserProperty, c));
        }
        // Every property is allowed somewhere.
        for &id in PropertyId::ALL {
            assert_ne!(allowed_in(id), 0);
        }
    }

    #[test]
    fn measure_matches_write() {
        let p = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(7),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"\x01\x02")),
            subscription_identifiers: vec![1, 128, 268_435_455],
            topic_alias: Some(3),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            ..Properties::default()
        };
        let len = measure(&p, PropCtx::Publish).unwrap();
        let mut out = BytesMut::new();
        write(&p, len, &mut out);
        assert_eq!(out.len(), block_len(len));
        let mut r = Reader::new(out.freeze(), PacketType::Publish);
        assert_eq!(decode(&mut r, PropCtx::Publish).unwrap(), p);
        assert!(r.is_empty());
        // Not allowed in a will (subscription identifier, topic alias).
        assert!(matches!(
            measure(&p, PropCtx::Will),
            Err(EncodeError::PropertyNotAllowed {
                property: PropertyId::SubscriptionIdentifier,
                ..
            })
        ));
    }
}
