//! PUBLISH (section 3.3).
use bytes::Bytes;

use super::{Props, QoS};
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
    pub properties: Props,
    /// Application payload.
    pub payload: Bytes,
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::Publish;
    use crate::codec::checks;
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::{put_str, Reader, MAX_FIELD_LEN};
    use crate::codec::{
        varint, EncodeError, Malformed, MalformedKind, Sizes, MAX_REMAINING_LENGTH,
    };
    use crate::packet::{PacketType, ProtocolVersion, QoS, ReasonCode};
    use crate::topic::{self, TopicError};

    impl Publish {
        /// The fixed-header flags: DUP, QoS, RETAIN.
        #[inline]
        pub(crate) fn flags(&self) -> u8 {
            (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
        }

        /// Checks the packet identifier, DUP, the topic and the properties; returns the
        /// property length. The common case (no properties, a valid topic) is one branch-light
        /// test; anything else goes to [`Publish::check_slow`], which finds the error.
        #[inline(always)]
        fn check(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
            let qos0 = self.qos == QoS::AtMostOnce;
            let fast = self.properties.is_empty()
                & (qos0 == (self.pkid == 0))
                & !(qos0 & self.dup)
                & !self.topic.is_empty()
                & (self.topic.len() <= MAX_FIELD_LEN)
                && topic::check_name_allow_empty_bytes(self.topic.as_bytes()).is_ok();
            if fast {
                Ok(0)
            } else {
                self.check_slow(v)
            }
        }

        #[cold]
        #[inline(never)]
        fn check_slow(&self, v: ProtocolVersion) -> Result<usize, EncodeError> {
            let props = if self.properties.is_empty() {
                0
            } else {
                match v {
                    ProtocolVersion::V5 => properties::measure(&self.properties, PropCtx::Publish)?,
                    ProtocolVersion::V311 => {
                        return Err(EncodeError::UnsupportedInV311 {
                            packet: PacketType::Publish,
                            field: "properties",
                        })
                    }
                }
            };
            if self.qos == QoS::AtMostOnce {
                if self.pkid != 0 {
                    return Err(EncodeError::UnexpectedPacketId);
                }
                if self.dup {
                    return Err(EncodeError::DupWithQoS0);
                }
            } else {
                checks::pkid_nonzero(PacketType::Publish, self.pkid)?;
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
            Ok(props)
        }

        #[inline(always)]
        fn remaining(&self, v: ProtocolVersion, props: usize) -> usize {
            let mut remaining = 2 + self.topic.len() + self.payload.len();
            if self.qos != QoS::AtMostOnce {
                remaining += 2;
            }
            if v == ProtocolVersion::V5 {
                remaining += properties::block_len(props);
            }
            remaining
        }

        pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
            let props = self.check(v)?;
            Ok(Sizes {
                remaining: self.remaining(v, props),
                props,
                will_props: 0,
            })
        }

        /// Validates, measures and writes the whole packet (fixed header included), with one
        /// reservation and as few writes as possible: the encoding hot path. `out` is left
        /// unchanged on error.
        #[inline(always)]
        pub(crate) fn encode(
            &self,
            v: ProtocolVersion,
            out: &mut BytesMut,
        ) -> Result<(), EncodeError> {
            let props = self.check(v)?;
            let remaining = self.remaining(v, props);
            if remaining > MAX_REMAINING_LENGTH {
                return Err(EncodeError::PacketTooLarge {
                    remaining_length: remaining,
                });
            }
            out.reserve(1 + varint::len_unchecked(remaining) + remaining);

            // Few, fixed-size writes (each compiles to plain stores; every `BytesMut` write also
            // updates its length through memory, so fewer is faster). The only variable-length
            // copies are the topic and the payload.
            let b0 = 0x30 | self.flags();
            let [t0, t1] = (self.topic.len() as u16).to_be_bytes();
            let r = remaining as u32;
            let (r0, r1, r2, r3) = (
                r as u8 & 0x7F,
                (r >> 7) as u8 & 0x7F,
                (r >> 14) as u8 & 0x7F,
                (r >> 21) as u8,
            );
            if r < 0x80 {
                out.put_slice(&[b0, r0, t0, t1]);
            } else if r < 0x4000 {
                out.put_slice(&[b0, r0 | 0x80, r1, t0, t1]);
            } else if r < 0x20_0000 {
                out.put_slice(&[b0, r0 | 0x80, r1 | 0x80, r2, t0, t1]);
            } else {
                out.put_slice(&[b0, r0 | 0x80, r1 | 0x80, r2 | 0x80, r3, t0, t1]);
            }
            out.put_slice(self.topic.as_bytes());
            let [p0, p1] = self.pkid.to_be_bytes();
            match (self.qos != QoS::AtMostOnce, v, props) {
                (true, ProtocolVersion::V5, 0) => out.put_slice(&[p0, p1, 0]),
                (true, ProtocolVersion::V311, _) => out.put_slice(&[p0, p1]),
                (false, ProtocolVersion::V5, 0) => out.put_u8(0),
                (false, ProtocolVersion::V311, _) => {}
                (has_pkid, ProtocolVersion::V5, _) => {
                    if has_pkid {
                        out.put_slice(&[p0, p1]);
                    }
                    properties::write(&self.properties, props, out);
                }
            }
            out.put_slice(&self.payload);
            Ok(())
        }

        /// Writes the body, after the fixed header (for `Packet::encode_other`'s callers).
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

        #[inline(always)]
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
