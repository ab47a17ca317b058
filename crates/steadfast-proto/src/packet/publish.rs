//! PUBLISH (section 3.3).
use bytes::Bytes;

use super::{Properties, QoS};
use crate::codec::ByteStr;

/// PUBLISH: an application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: this is a resend.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name, as on the wire. Empty only when a topic alias (5.0) stands in for it.
    pub topic: ByteStr,
    /// Packet identifier; 0 for QoS 0 (not encoded), non-zero otherwise.
    pub pkid: u16,
    /// PUBLISH properties (5.0 only).
    pub properties: Properties,
    /// Application payload.
    pub payload: Bytes,
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::Publish;
    use crate::codec::checks;
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::{put_str, Reader};
    use crate::codec::{EncodeError, Malformed, MalformedKind, Sizes};
    use crate::packet::{PacketType, ProtocolVersion, QoS, ReasonCode};
    use crate::topic::{self, TopicError};

    impl Publish {
        /// The fixed-header flags: DUP, QoS, RETAIN.
        #[inline]
        pub(crate) fn flags(&self) -> u8 {
            (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
        }

        #[inline]
        pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
            let mut remaining = 2 + self.topic.len() + self.payload.len();
            if self.qos == QoS::AtMostOnce {
                if self.pkid != 0 {
                    return Err(EncodeError::UnexpectedPacketId);
                }
                if self.dup {
                    return Err(EncodeError::DupWithQoS0);
                }
            } else {
                checks::pkid_nonzero(PacketType::Publish, self.pkid)?;
                remaining += 2;
            }
            let mut props = 0;
            match v {
                ProtocolVersion::V5 => {
                    props = properties::measure(&self.properties, PropCtx::Publish)?;
                    remaining += properties::block_len(props);
                }
                ProtocolVersion::V311 => {
                    checks::no_props_v311(PacketType::Publish, &self.properties)?
                }
            }
            let empty_ok = v == ProtocolVersion::V5 && self.properties.topic_alias.is_some();
            let valid = if self.topic.is_empty() && !empty_ok {
                Err(TopicError::Empty)
            } else {
                topic::check_name_allow_empty(&self.topic)
            };
            if let Err(error) = valid {
                return Err(EncodeError::InvalidTopic {
                    field: "PUBLISH topic name",
                    error,
                });
            }
            Ok(Sizes {
                remaining,
                props,
                will_props: 0,
            })
        }

        #[inline]
        pub(crate) fn write(&self, v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
            put_str(out, &self.topic);
            if self.qos != QoS::AtMostOnce {
                out.put_u16(self.pkid);
            }
            if v == ProtocolVersion::V5 {
                properties::write(&self.properties, s.props, out);
            }
            out.put_slice(&self.payload);
        }

        #[inline]
        pub(crate) fn decode(
            flags: u8,
            mut r: Reader,
            v: ProtocolVersion,
        ) -> Result<Publish, Malformed> {
            // QoS 3 and DUP on QoS 0 were rejected with the fixed header.
            let qos = QoS::from_u8((flags >> 1) & 0b11).unwrap_or(QoS::AtMostOnce);
            let topic_bytes = r.binary("topic name")?;
            if let Err(e) = topic::check_name_allow_empty_bytes(&topic_bytes) {
                return Err(bad_topic(e));
            }
            let topic = r.utf8(topic_bytes, "topic name")?;
            let pkid = if qos == QoS::AtMostOnce {
                0
            } else {
                checks::pkid(&mut r)?
            };
            let properties = match v {
                ProtocolVersion::V5 => properties::decode(&mut r, PropCtx::Publish)?,
                ProtocolVersion::V311 => Default::default(),
            };
            if topic.is_empty() && properties.topic_alias.is_none() {
                return Err(empty_topic(v));
            }
            Ok(Publish {
                dup: flags & 0b1000 != 0,
                qos,
                retain: flags & 0b0001 != 0,
                topic,
                pkid,
                properties,
                payload: r.rest(),
            })
        }
    }

    #[cold]
    fn bad_topic(e: TopicError) -> Malformed {
        match e {
            TopicError::NullCharacter => Malformed::new(
                MalformedKind::NullCharacter,
                "PUBLISH topic name: string contains U+0000",
            ),
            _ => Malformed::new(
                MalformedKind::InvalidTopicName,
                "PUBLISH topic name contains a wildcard",
            ),
        }
    }

    #[cold]
    fn empty_topic(v: ProtocolVersion) -> Malformed {
        match v {
            ProtocolVersion::V311 => Malformed::new(
                MalformedKind::InvalidTopicName,
                "PUBLISH topic name is empty",
            ),
            ProtocolVersion::V5 => Malformed::new(
                MalformedKind::InvalidTopicName,
                "PUBLISH topic name is empty and there is no Topic Alias",
            )
            .with_reason(ReasonCode::ProtocolError),
        }
    }
}
