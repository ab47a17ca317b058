//! CONNACK (section 3.2).
use super::{Props, ReasonCode};

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present.
    pub session_present: bool,
    /// The reason code (5.0) or the 3.1.1 return code mapped onto its name.
    pub reason: ReasonCode,
    /// CONNACK properties (5.0 only).
    pub properties: Props,
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::ConnAck;
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::Reader;
    use crate::codec::{checks, EncodeError, Malformed, MalformedKind, Sizes};
    use crate::packet::{PacketType, ProtocolVersion, ReasonCode};

    const P: PacketType = PacketType::ConnAck;

    impl ConnAck {
        pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
            match v {
                ProtocolVersion::V311 => {
                    if self.reason.to_v311_connack().is_none() {
                        return Err(EncodeError::ReasonCodeNotInV311 {
                            packet: P,
                            reason: self.reason,
                        });
                    }
                    checks::no_props_v311(P, &self.properties)?;
                    Ok(Sizes {
                        remaining: 2,
                        ..Sizes::default()
                    })
                }
                ProtocolVersion::V5 => {
                    checks::reason_v5_ok(P, self.reason)?;
                    let props = properties::measure(&self.properties, PropCtx::ConnAck)?;
                    Ok(Sizes {
                        remaining: 2 + properties::block_len(props),
                        props,
                        will_props: 0,
                    })
                }
            }
        }

        pub(crate) fn write(&self, v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
            out.put_u8(u8::from(self.session_present));
            match v {
                ProtocolVersion::V311 => out.put_u8(self.reason.to_v311_connack().unwrap_or(0)),
                ProtocolVersion::V5 => {
                    out.put_u8(self.reason.code());
                    properties::write(&self.properties, s.props, out);
                }
            }
        }

        /// Decodes a CONNACK. For MQTT 5, a CONNACK of remaining length 2 (no property length)
        /// is accepted as having no properties, and an MQTT 3.1.1 return code 1 to 5 in it is
        /// mapped onto its MQTT 5 name: that is how a 3.1.1-only server rejects a 5.0 CONNECT.
        pub(crate) fn decode(mut r: Reader, v: ProtocolVersion) -> Result<ConnAck, Malformed> {
            let flags = r.u8("acknowledge flags")?;
            if flags & 0xFE != 0 {
                return Err(Malformed::new(
                    MalformedKind::ConnAckFlags,
                    format!(
                        "reserved bits 0b{:07b} set in CONNACK acknowledge flags",
                        flags >> 1
                    ),
                ));
            }
            let code = r.u8("reason code")?;
            let (reason, properties) = match v {
                ProtocolVersion::V311 => {
                    let rc = ReasonCode::from_v311_connack(code)
                        .ok_or_else(|| checks::bad_reason(P, code, v))?;
                    (rc, Default::default())
                }
                ProtocolVersion::V5 if r.is_empty() => {
                    let rc = match ReasonCode::from_v311_connack(code) {
                        Some(rc) if code != 0 => rc,
                        _ => checks::reason_v5(P, code)?,
                    };
                    (rc, Default::default())
                }
                ProtocolVersion::V5 => {
                    let rc = checks::reason_v5(P, code)?;
                    (rc, properties::decode(&mut r, PropCtx::ConnAck)?)
                }
            };
            r.finish("properties")?;
            Ok(ConnAck {
                session_present: flags & 1 != 0,
                reason,
                properties,
            })
        }
    }
}
