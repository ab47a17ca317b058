//! DISCONNECT (section 3.14).
use super::{Props, ReasonCode};

/// DISCONNECT. In 3.1.1 it has no body and only the client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code (5.0).
    pub reason: ReasonCode,
    /// Properties (5.0): session expiry, reason string, server reference, user properties.
    pub properties: Props,
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::Disconnect;
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::Reader;
    use crate::codec::{checks, EncodeError, Malformed, Sizes};
    use crate::packet::{PacketType, ProtocolVersion, ReasonCode};

    const P: PacketType = PacketType::Disconnect;

    impl Disconnect {
        pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
            match v {
                ProtocolVersion::V311 => {
                    if self.reason != ReasonCode::Success {
                        return Err(EncodeError::ReasonCodeNotInV311 {
                            packet: P,
                            reason: self.reason,
                        });
                    }
                    checks::no_props_v311(P, &self.properties)?;
                    Ok(Sizes::default())
                }
                ProtocolVersion::V5 => {
                    checks::reason_v5_ok(P, self.reason)?;
                    let props = properties::measure(&self.properties, PropCtx::Disconnect)?;
                    let remaining = match (self.reason, props) {
                        // Section 3.14.2.1: remaining length 0 means Normal disconnection, and
                        // with remaining length 1 there is no property length.
                        (ReasonCode::Success, 0) => 0,
                        (_, 0) => 1,
                        _ => 1 + properties::block_len(props),
                    };
                    Ok(Sizes {
                        remaining,
                        props,
                        will_props: 0,
                    })
                }
            }
        }

        pub(crate) fn write(&self, _v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
            if s.remaining >= 1 {
                out.put_u8(self.reason.code());
            }
            if s.remaining > 1 {
                properties::write(&self.properties, s.props, out);
            }
        }

        /// Decodes a DISCONNECT with a non-empty body (MQTT 5 only: the 3.1.1 remaining length
        /// is checked to be 0 with the fixed header).
        pub(crate) fn decode(mut r: Reader, v: ProtocolVersion) -> Result<Disconnect, Malformed> {
            if v == ProtocolVersion::V311 {
                r.finish("fixed header")?;
            }
            let reason = checks::reason_v5(P, r.u8("reason code")?)?;
            let properties = if r.is_empty() {
                Default::default()
            } else {
                properties::decode(&mut r, PropCtx::Disconnect)?
            };
            r.finish("properties")?;
            Ok(Disconnect { reason, properties })
        }
    }
}
