//! SUBACK (section 3.9).
use super::{Props, ReasonCode};

/// SUBACK: one reason code per filter, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier.
    pub pkid: u16,
    /// Granted QoS or failure, per filter (3.1.1 codes mapped onto MQTT 5 names).
    pub reasons: Vec<ReasonCode>,
    /// Properties (5.0 only).
    pub properties: Props,
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::SubAck;
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::Reader;
    use crate::codec::{checks, EncodeError, Malformed, MalformedKind, Sizes};
    use crate::packet::{PacketType, ProtocolVersion, ReasonCode};

    const P: PacketType = PacketType::SubAck;

    impl SubAck {
        pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
            checks::pkid_nonzero(P, self.pkid)?;
            if self.reasons.is_empty() {
                return Err(EncodeError::EmptyPayload { packet: P });
            }
            let mut remaining = 2 + self.reasons.len();
            let mut props = 0;
            match v {
                ProtocolVersion::V311 => {
                    checks::no_props_v311(P, &self.properties)?;
                    if let Some(&reason) =
                        self.reasons.iter().find(|rc| rc.to_v311_suback().is_none())
                    {
                        return Err(EncodeError::ReasonCodeNotInV311 { packet: P, reason });
                    }
                }
                ProtocolVersion::V5 => {
                    for &rc in &self.reasons {
                        checks::reason_v5_ok(P, rc)?;
                    }
                    props = properties::measure(&self.properties, PropCtx::SubAck)?;
                    remaining += properties::block_len(props);
                }
            }
            Ok(Sizes {
                remaining,
                props,
                will_props: 0,
            })
        }

        pub(crate) fn write(&self, v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
            out.put_u16(self.pkid);
            match v {
                ProtocolVersion::V311 => {
                    for rc in &self.reasons {
                        out.put_u8(rc.to_v311_suback().unwrap_or(0x80));
                    }
                }
                ProtocolVersion::V5 => {
                    properties::write(&self.properties, s.props, out);
                    for rc in &self.reasons {
                        out.put_u8(rc.code());
                    }
                }
            }
        }

        pub(crate) fn decode(mut r: Reader, v: ProtocolVersion) -> Result<SubAck, Malformed> {
            let pkid = checks::pkid(&mut r)?;
            let properties = match v {
                ProtocolVersion::V5 => properties::decode(&mut r, PropCtx::SubAck)?,
                ProtocolVersion::V311 => Default::default(),
            };
            let mut reasons = Vec::with_capacity(r.remaining());
            while !r.is_empty() {
                let code = r.u8("reason code")?;
                let rc = match v {
                    ProtocolVersion::V311 => ReasonCode::from_v311_suback(code)
                        .ok_or_else(|| checks::bad_reason(P, code, v))?,
                    ProtocolVersion::V5 => checks::reason_v5(P, code)?,
                };
                reasons.push(rc);
            }
            if reasons.is_empty() {
                return Err(Malformed::new(
                    MalformedKind::EmptyPayload,
                    "SUBACK contains no reason code",
                ));
            }
            Ok(SubAck {
                pkid,
                reasons,
                properties,
            })
        }
    }
}
