//! PUBACK, PUBREC, PUBREL, PUBCOMP (sections 3.4 to 3.7): same shape, different type byte.
use super::{Props, ReasonCode};

macro_rules! ack_packet {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// Packet identifier (non-zero).
            pub pkid: u16,
            /// Reason code (5.0; always `Success` in 3.1.1).
            pub reason: ReasonCode,
            /// Properties (5.0 only).
            pub properties: Props,
        }

        impl $name {
            /// A successful acknowledgement with no properties.
            pub fn new(pkid: u16) -> Self {
                Self { pkid, reason: ReasonCode::Success, properties: Props::new() }
            }
        }
    };
}

ack_packet!(
    /// PUBACK: QoS 1 acknowledgement.
    PubAck
);
ack_packet!(
    /// PUBREC: QoS 2, part 1.
    PubRec
);
ack_packet!(
    /// PUBREL: QoS 2, part 2 (fixed header flags 0b0010).
    PubRel
);
ack_packet!(
    /// PUBCOMP: QoS 2, part 3.
    PubComp
);

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::{PubAck, PubComp, PubRec, PubRel};
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::Reader;
    use crate::codec::{checks, EncodeError, Malformed, Sizes};
    use crate::packet::{PacketType, Properties, Props, ProtocolVersion, ReasonCode};

    fn measure(
        p: PacketType,
        pkid: u16,
        reason: ReasonCode,
        props: &Properties,
        v: ProtocolVersion,
    ) -> Result<Sizes, EncodeError> {
        checks::pkid_nonzero(p, pkid)?;
        match v {
            ProtocolVersion::V311 => {
                if reason != ReasonCode::Success {
                    return Err(EncodeError::ReasonCodeNotInV311 { packet: p, reason });
                }
                checks::no_props_v311(p, props)?;
                Ok(Sizes {
                    remaining: 2,
                    ..Sizes::default()
                })
            }
            ProtocolVersion::V5 => {
                checks::reason_v5_ok(p, reason)?;
                let n = properties::measure(props, PropCtx::for_ack(p))?;
                let remaining = match (reason, n) {
                    // The short forms of section 3.4.2.1.
                    (ReasonCode::Success, 0) => 2,
                    (_, 0) => 3,
                    _ => 3 + properties::block_len(n),
                };
                Ok(Sizes {
                    remaining,
                    props: n,
                    will_props: 0,
                })
            }
        }
    }

    fn write(pkid: u16, reason: ReasonCode, props: &Properties, s: &Sizes, out: &mut BytesMut) {
        out.put_u16(pkid);
        if s.remaining >= 3 {
            out.put_u8(reason.code());
        }
        if s.remaining > 3 {
            properties::write(props, s.props, out);
        }
    }

    fn decode(mut r: Reader, v: ProtocolVersion) -> Result<(u16, ReasonCode, Props), Malformed> {
        let p = r.packet();
        let pkid = checks::pkid(&mut r)?;
        let mut reason = ReasonCode::Success;
        let mut props = Props::new();
        if v == ProtocolVersion::V5 && !r.is_empty() {
            reason = checks::reason_v5(p, r.u8("reason code")?)?;
            if !r.is_empty() {
                props = properties::decode(&mut r, PropCtx::for_ack(p))?;
            }
        }
        r.finish("properties")?;
        Ok((pkid, reason, props))
    }

    macro_rules! ack_codec {
        ($name:ident) => {
            impl $name {
                pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
                    measure(
                        PacketType::$name,
                        self.pkid,
                        self.reason,
                        &self.properties,
                        v,
                    )
                }

                pub(crate) fn write(&self, _v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
                    write(self.pkid, self.reason, &self.properties, s, out)
                }

                pub(crate) fn decode(r: Reader, v: ProtocolVersion) -> Result<Self, Malformed> {
                    let (pkid, reason, properties) = decode(r, v)?;
                    Ok($name {
                        pkid,
                        reason,
                        properties,
                    })
                }
            }
        };
    }

    ack_codec!(PubAck);
    ack_codec!(PubRec);
    ack_codec!(PubRel);
    ack_codec!(PubComp);
}
