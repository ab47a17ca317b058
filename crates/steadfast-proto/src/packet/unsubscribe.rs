//! UNSUBSCRIBE (section 3.10).
use super::Props;
use crate::codec::ByteStr;

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub pkid: u16,
    /// At least one filter.
    pub filters: Vec<ByteStr>,
    /// Properties (5.0 only).
    pub properties: Props,
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::Unsubscribe;
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::{put_str, Reader};
    use crate::codec::{checks, EncodeError, Malformed, MalformedKind, Sizes};
    use crate::packet::subscribe::bad_filter;
    use crate::packet::{PacketType, ProtocolVersion};
    use crate::topic;

    const P: PacketType = PacketType::Unsubscribe;

    impl Unsubscribe {
        pub(crate) fn measure(&self, v: ProtocolVersion) -> Result<Sizes, EncodeError> {
            checks::pkid_nonzero(P, self.pkid)?;
            if self.filters.is_empty() {
                return Err(EncodeError::EmptyPayload { packet: P });
            }
            let mut remaining = 2;
            let mut props = 0;
            match v {
                ProtocolVersion::V5 => {
                    props = properties::measure(&self.properties, PropCtx::Unsubscribe)?;
                    remaining += properties::block_len(props);
                }
                ProtocolVersion::V311 => checks::no_props_v311(P, &self.properties)?,
            }
            for f in &self.filters {
                topic::validate_filter(f).map_err(|error| EncodeError::InvalidTopic {
                    field: "UNSUBSCRIBE topic filter",
                    error,
                })?;
                remaining += 2 + f.len();
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
                put_str(out, f);
            }
        }

        pub(crate) fn decode(mut r: Reader, v: ProtocolVersion) -> Result<Unsubscribe, Malformed> {
            let pkid = checks::pkid(&mut r)?;
            let properties = match v {
                ProtocolVersion::V5 => properties::decode(&mut r, PropCtx::Unsubscribe)?,
                ProtocolVersion::V311 => Default::default(),
            };
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string("topic filter")?;
                if let Err(e) = topic::validate_filter(&filter) {
                    return Err(bad_filter(P, e));
                }
                filters.push(filter);
            }
            if filters.is_empty() {
                return Err(Malformed::new(
                    MalformedKind::EmptyPayload,
                    "UNSUBSCRIBE contains no topic filter",
                ));
            }
            Ok(Unsubscribe {
                pkid,
                filters,
                properties,
            })
        }
    }
}
