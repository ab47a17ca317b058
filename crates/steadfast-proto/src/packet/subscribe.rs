//! SUBSCRIBE (section 3.8).
use super::{Props, QoS};
use crate::codec::ByteStr;

/// Retain Handling subscription option (5.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send retained messages only if the subscription did not exist.
    SendAtSubscribeIfNew = 1,
    /// 2: do not send retained messages.
    DoNotSend = 2,
}

/// Subscription options byte (5.0); 3.1.1 only has the QoS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (5.0).
    pub no_local: bool,
    /// Retain As Published (5.0).
    pub retain_as_published: bool,
    /// Retain Handling (5.0).
    pub retain_handling: RetainHandling,
}

/// One topic filter with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic filter (validated: wildcards placed correctly, `$share/` well-formed).
    pub filter: ByteStr,
    /// Options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub pkid: u16,
    /// At least one filter.
    pub filters: Vec<SubscribeFilter>,
    /// Properties (5.0): subscription identifier, user properties.
    pub properties: Props,
}

impl RetainHandling {
    /// Parses 0, 1 or 2; 3 (a protocol error) is `None`.
    pub const fn from_u8(v: u8) -> Option<RetainHandling> {
        match v {
            0 => Some(RetainHandling::SendAtSubscribe),
            1 => Some(RetainHandling::SendAtSubscribeIfNew),
            2 => Some(RetainHandling::DoNotSend),
            _ => None,
        }
    }
}

impl SubscriptionOptions {
    /// Options with only a maximum QoS (all MQTT 3.1.1 can express).
    pub const fn qos(qos: QoS) -> Self {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    /// The MQTT 5 options byte (bits 0-1 QoS, 2 No Local, 3 Retain As Published, 4-5 Retain
    /// Handling).
    pub const fn to_byte(self) -> u8 {
        (self.qos as u8)
            | ((self.no_local as u8) << 2)
            | ((self.retain_as_published as u8) << 3)
            | ((self.retain_handling as u8) << 4)
    }
}

impl SubscribeFilter {
    /// A filter with the given maximum QoS and default MQTT 5 options.
    pub fn new(filter: impl Into<ByteStr>, qos: QoS) -> Self {
        SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions::qos(qos),
        }
    }
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::{RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions};
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::{put_str, Reader};
    use crate::codec::{checks, EncodeError, Malformed, MalformedKind, Sizes};
    use crate::packet::{PacketType, ProtocolVersion, QoS, ReasonCode};
    use crate::topic::{self, TopicError};

    const P: PacketType = PacketType::Subscribe;

    impl Subscribe {
        pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
            checks::pkid_nonzero(P, self.pkid)?;
            if self.filters.is_empty() {
                return Err(EncodeError::EmptyPayload { packet: P });
            }
            let mut remaining = 2;
            let mut props = 0;
            match v {
                ProtocolVersion::V5 => {
                    props = properties::measure(&self.properties, PropCtx::Subscribe)?;
                    remaining += properties::block_len(props);
                }
                ProtocolVersion::V311 => checks::no_props_v311(P, &self.properties)?,
            }
            for f in &self.filters {
                topic::validate_filter(&f.filter).map_err(|error| EncodeError::InvalidTopic {
                    field: "SUBSCRIBE topic filter",
                    error,
                })?;
                let o = f.options;
                if v == ProtocolVersion::V311
                    && (o.no_local
                        || o.retain_as_published
                        || o.retain_handling != RetainHandling::SendAtSubscribe)
                {
                    return Err(EncodeError::UnsupportedInV311 {
                        packet: P,
                        field: "subscription options other than QoS",
                    });
                }
                if o.no_local && f.filter.starts_with("$share/") {
                    return Err(EncodeError::InvalidSubscriptionOptions {
                        problem: "No Local on a shared subscription",
                    });
                }
                remaining += 2 + f.filter.len() + 1;
            }
            Ok(Sizes {
                remaining,
                props,
                will_props: 0,
            })
        }

        pub(crate) fn write(&self, v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
            out.put_u16(self.pkid);
            if v == ProtocolVersion::V5 {
                properties::write(&self.properties, s.props, out);
            }
            for f in &self.filters {
                put_str(out, &f.filter);
                out.put_u8(f.options.to_byte());
            }
        }

        pub(crate) fn decode(mut r: Reader, v: ProtocolVersion) -> Result<Subscribe, Malformed> {
            let pkid = checks::pkid(&mut r)?;
            let properties = match v {
                ProtocolVersion::V5 => properties::decode(&mut r, PropCtx::Subscribe)?,
                ProtocolVersion::V311 => Default::default(),
            };
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string("topic filter")?;
                if let Err(e) = topic::validate_filter(&filter) {
                    return Err(bad_filter(P, e));
                }
                let byte = r.u8("subscription options")?;
                let options = decode_options(byte, v, filter.starts_with("$share/"))?;
                filters.push(SubscribeFilter { filter, options });
            }
            if filters.is_empty() {
                return Err(Malformed::new(
                    MalformedKind::EmptyPayload,
                    "SUBSCRIBE contains no topic filter",
                ));
            }
            Ok(Subscribe {
                pkid,
                filters,
                properties,
            })
        }
    }

    fn decode_options(
        byte: u8,
        v: ProtocolVersion,
        shared: bool,
    ) -> Result<SubscriptionOptions, Malformed> {
        let reserved = match v {
            ProtocolVersion::V311 => 0b1111_1100,
            ProtocolVersion::V5 => 0b1100_0000,
        };
        if byte & reserved != 0 {
            return Err(Malformed::new(
                MalformedKind::SubscriptionOptions,
                format!("reserved bits set in SUBSCRIBE options 0b{byte:08b} ({v})"),
            ));
        }
        let protocol_error = |kind, msg: &'static str| {
            let m = Malformed::new(kind, msg);
            Err(match v {
                ProtocolVersion::V5 => m.with_reason(ReasonCode::ProtocolError),
                ProtocolVersion::V311 => m,
            })
        };
        let Some(qos) = QoS::from_u8(byte & 0b11) else {
            return protocol_error(MalformedKind::InvalidQoS, "QoS 3 in SUBSCRIBE options");
        };
        let Some(retain_handling) = RetainHandling::from_u8((byte >> 4) & 0b11) else {
            return protocol_error(
                MalformedKind::SubscriptionOptions,
                "Retain Handling 3 in SUBSCRIBE options",
            );
        };
        let no_local = byte & 0b0100 != 0;
        if no_local && shared {
            return protocol_error(
                MalformedKind::SubscriptionOptions,
                "No Local set on a shared subscription",
            );
        }
        Ok(SubscriptionOptions {
            qos,
            no_local,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }

    #[cold]
    pub(crate) fn bad_filter(p: PacketType, e: TopicError) -> Malformed {
        Malformed::new(
            MalformedKind::InvalidTopicFilter,
            format!("{p} topic filter {}", e.as_str()),
        )
    }
}

pub(crate) use codec::bad_filter;
