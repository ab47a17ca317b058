//! UNSUBACK (section 3.11).
use super::{Props, ReasonCode};

/// UNSUBACK. In 3.1.1 it has no reason codes and `reasons` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier.
    pub pkid: u16,
    /// One reason code per filter (5.0 only).
    pub reasons: Vec<ReasonCode>,
    /// Properties (5.0 only).
    pub properties: Props,
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::UnsubAck;
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::Reader;
    use crate::codec::{checks, EncodeError, Malformed, MalformedKind, Sizes};
    use crate::packet::{PacketType, ProtocolVersion};

    const P: PacketType = PacketType::UnsubAck;

    impl UnsubAck {
        pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
            checks::pkid_nonzero(P, self.pkid)?;
            match v {
                ProtocolVersion::V311 => {
                    checks::no_props_v311(P, &self.properties)?;
                    if !self.reasons.is_empty() {
                        return Err(EncodeError::UnsupportedInV311 {
                            packet: P,
                            field: "reason codes",
                        });
                    }
                    Ok(Sizes {
                        remaining: 2,
                        ..Sizes::default()
                    })
                }
                ProtocolVersion::V5 => {
                    if self.reasons.is_empty() {
                        return Err(EncodeError::EmptyPayload { packet: P });
                    }
                    for &rc in &self.reasons {
                        checks::reason_v5_ok(P, rc)?;
                    }
                    let props = properties::measure(&self.properties, PropCtx::UnsubAck)?;
                    Ok(Sizes {
                        remaining: 2 + properties::block_len(props) + self.reasons.len(),
                        props,
                        will_props: 0,
                    })
                }
            }
        }

        pub(crate) fn write(&self, v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
            out.put_u16(self.pkid);
            if v == ProtocolVersion::V5 {
                properties::write(&self.properties, s.props, out);
                for rc in &self.reasons {
                    out.put_u8(rc.code());
                }
            }
        }

        pub(crate) fn decode(mut r: Reader, v: ProtocolVersion) -> Result<UnsubAck, Malformed> {
            let pkid = checks::pkid(&mut r)?;
            if v == ProtocolVersion::V311 {
                // The remaining length was checked to be 2 with the fixed header.
                r.finish("packet identifier")?;
                return Ok(UnsubAck {
                    pkid,
                    reasons: Vec::new(),
                    properties: Default::default(),
                });
            }
            let properties = properties::decode(&mut r, PropCtx::UnsubAck)?;
            let mut reasons = Vec::with_capacity(r.remaining());
            while !r.is_empty() {
                reasons.push(checks::reason_v5(P, r.u8("reason code")?)?);
            }
            if reasons.is_empty() {
                return Err(Malformed::new(
                    MalformedKind::EmptyPayload,
                    "UNSUBACK contains no reason code",
                ));
            }
            Ok(UnsubAck {
                pkid,
                reasons,
                properties,
            })
        }
    }
}
