//! AUTH (section 3.15, MQTT 5 only).
use super::{Props, ReasonCode};

/// AUTH: enhanced authentication exchange (5.0 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub reason: ReasonCode,
    /// Properties: authentication method and data, reason string, user properties.
    pub properties: Props,
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::Auth;
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::Reader;
    use crate::codec::{checks, EncodeError, Malformed, Sizes};
    use crate::packet::{PacketType, ProtocolVersion, ReasonCode};

    const P: PacketType = PacketType::Auth;

    impl Auth {
        pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
            if v == ProtocolVersion::V311 {
                return Err(EncodeError::UnsupportedInV311 {
                    packet: P,
                    field: "the AUTH packet",
                });
            }
            checks::reason_v5_ok(P, self.reason)?;
            let props = properties::measure(&self.properties, PropCtx::Auth)?;
            let remaining = match (self.reason, props) {
                // Section 3.15.2.1: remaining length 0 means Success without properties.
                (ReasonCode::Success, 0) => 0,
                _ => 1 + properties::block_len(props),
            };
            Ok(Sizes {
                remaining,
                props,
                will_props: 0,
            })
        }

        pub(crate) fn write(&self, _v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
            if s.remaining > 0 {
                out.put_u8(self.reason.code());
                properties::write(&self.properties, s.props, out);
            }
        }

        /// Decodes an AUTH with a non-empty body (AUTH is rejected for 3.1.1 with the fixed
        /// header). A body of just the reason code is accepted as having no properties.
        pub(crate) fn decode(mut r: Reader, _v: ProtocolVersion) -> Result<Auth, Malformed> {
            let reason = checks::reason_v5(P, r.u8("reason code")?)?;
            let properties = if r.is_empty() {
                Default::default()
            } else {
                properties::decode(&mut r, PropCtx::Auth)?
            };
            r.finish("properties")?;
            Ok(Auth { reason, properties })
        }
    }
}
