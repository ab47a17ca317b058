//! Encoding and decoding of MQTT 3.1.1 and 5.0 packets.
//!
//! - [`Packet::encode`] validates the packet for the protocol version, reserves the exact size
//!   once and writes it. A field that the version cannot express is an error, never silently
//!   dropped.
//! - [`Packet::decode`] is check-then-parse: it reads the fixed header, rejects a packet larger
//!   than the caller's limit before its body arrives, returns [`DecodeError::Incomplete`] (with
//!   the buffer untouched) until the whole packet is buffered, then splits exactly one packet
//!   off the front. Strings, topics and payloads of the result are zero-copy slices of that
//!   buffer.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use steadfast_proto::{Props, Packet, ProtocolVersion, Publish, Properties, QoS};
//!
//! let publish = Packet::Publish(Publish {
//!     dup: false,
//!     qos: QoS::AtLeastOnce,
//!     retain: false,
//!     topic: "a/b".into(),
//!     pkid: 10,
//!     properties: Props::new(),
//!     payload: Bytes::from_static(b"hello"),
//! });
//! let mut buf = BytesMut::new();
//! publish.encode(ProtocolVersion::V311, &mut buf).unwrap();
//! assert_eq!(&buf[..], b"\x32\x0c\x00\x03a/b\x00\x0ahello");
//! assert_eq!(publish.encoded_len(ProtocolVersion::V311).unwrap(), buf.len());
//!
//! let decoded = Packet::decode(&mut buf, ProtocolVersion::V311, u32::MAX).unwrap();
//! assert_eq!(decoded, publish);
//! assert!(buf.is_empty());
//! ```

mod bytestr;
mod error;
pub(crate) mod properties;
#[cfg(any(test, feature = "testkit"))]
#[doc(hidden)]
pub mod samples;
pub(crate) mod strings;
pub mod varint;

pub use bytestr::ByteStr;
pub use error::{DecodeError, EncodeError, Malformed, MalformedKind};

use bytes::{Buf, BufMut, BytesMut};

use crate::packet::{
    Auth, ConnAck, Connect, Disconnect, Packet, PacketType, ProtocolVersion, PubAck, PubComp,
    PubRec, PubRel, Publish, SubAck, Subscribe, UnsubAck, Unsubscribe,
};
use strings::Reader;

/// The largest remaining length the protocol allows (the largest 4-byte variable byte integer).
pub const MAX_REMAINING_LENGTH: usize = varint::MAX as usize;

/// The sizes worked out (and validated) before encoding, so the encoder reserves once and
/// never computes a property length twice.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sizes {
    /// The remaining length.
    pub(crate) remaining: usize,
    /// Length of the packet's property block, without its length prefix (MQTT 5).
    pub(crate) props: usize,
    /// Length of the will property block, without its length prefix (MQTT 5 CONNECT).
    pub(crate) will_props: usize,
}

impl Packet {
    /// Appends the packet, encoded for `version`, to `out`.
    ///
    /// A CONNECT is always encoded for the protocol level in its `protocol` field. Fails, leaving
    /// `out` unchanged, when the packet cannot be encoded for `version` (see [`EncodeError`]).
    /// MQTT 5 acknowledgements, DISCONNECT and AUTH are written in their short form when the
    /// reason is Success and there are no properties.
    #[inline]
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            // The hot path: validated, measured and written in one go.
            Packet::Publish(p) => p.encode(version, out),
            _ => self.encode_other(version, out),
        }
    }

    #[inline(never)]
    fn encode_other(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let (byte1, sizes) = self.measure(version)?;
        let rl = sizes.remaining;
        let total = 1 + varint::len_unchecked(rl) + rl;
        out.reserve(total);
        #[cfg(debug_assertions)]
        let start = out.len();
        out.put_u8(byte1);
        varint::put_unchecked(rl, out);
        self.write_body(version, &sizes, out);
        #[cfg(debug_assertions)]
        debug_assert_eq!(out.len() - start, total, "{self:?}");
        Ok(())
    }

    /// The number of bytes [`Packet::encode`] would write, after the same validation.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        let (_, sizes) = self.measure(version)?;
        Ok(1 + varint::len_unchecked(sizes.remaining) + sizes.remaining)
    }

    /// Validates the packet and works out the first header byte and the sizes.
    fn measure(&self, v: ProtocolVersion) -> Result<(u8, Sizes), EncodeError> {
        let (ptype, flags, sizes) = match self {
            Packet::Connect(p) => (PacketType::Connect, 0, p.measure()?),
            Packet::ConnAck(p) => (PacketType::ConnAck, 0, p.measure(v)?),
            Packet::Publish(p) => (PacketType::Publish, p.flags(), p.measure(v)?),
            Packet::PubAck(p) => (PacketType::PubAck, 0, p.measure(v)?),
            Packet::PubRec(p) => (PacketType::PubRec, 0, p.measure(v)?),
            Packet::PubRel(p) => (PacketType::PubRel, 0b0010, p.measure(v)?),
            Packet::PubComp(p) => (PacketType::PubComp, 0, p.measure(v)?),
            Packet::Subscribe(p) => (PacketType::Subscribe, 0b0010, p.measure(v)?),
            Packet::SubAck(p) => (PacketType::SubAck, 0, p.measure(v)?),
            Packet::Unsubscribe(p) => (PacketType::Unsubscribe, 0b0010, p.measure(v)?),
            Packet::UnsubAck(p) => (PacketType::UnsubAck, 0, p.measure(v)?),
            Packet::PingReq => (PacketType::PingReq, 0, Sizes::default()),
            Packet::PingResp => (PacketType::PingResp, 0, Sizes::default()),
            Packet::Disconnect(p) => (PacketType::Disconnect, 0, p.measure(v)?),
            Packet::Auth(p) => (PacketType::Auth, 0, p.measure(v)?),
        };
        if sizes.remaining > MAX_REMAINING_LENGTH {
            return Err(EncodeError::PacketTooLarge {
                remaining_length: sizes.remaining,
            });
        }
        Ok(((ptype as u8) << 4 | flags, sizes))
    }

    fn write_body(&self, v: ProtocolVersion, s: &Sizes, out: &mut BytesMut) {
        match self {
            Packet::Connect(p) => p.write(s, out),
            Packet::ConnAck(p) => p.write(v, s, out),
            Packet::Publish(p) => p.write(v, s, out),
            Packet::PubAck(p) => p.write(v, s, out),
            Packet::PubRec(p) => p.write(v, s, out),
            Packet::PubRel(p) => p.write(v, s, out),
            Packet::PubComp(p) => p.write(v, s, out),
            Packet::Subscribe(p) => p.write(v, s, out),
            Packet::SubAck(p) => p.write(v, s, out),
            Packet::Unsubscribe(p) => p.write(v, s, out),
            Packet::UnsubAck(p) => p.write(v, s, out),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(p) => p.write(v, s, out),
            Packet::Auth(p) => p.write(v, s, out),
        }
    }

    /// Decodes one packet from the front of `buf`.
    ///
    /// - `Ok(packet)`: exactly the packet's bytes were split off the front of `buf`; the
    ///   packet's strings and payload share that buffer (no copy).
    /// - [`DecodeError::Incomplete`]: `buf` holds only part of a packet and is left untouched;
    ///   call again when more bytes have arrived.
    /// - [`DecodeError::TooLarge`]: the fixed header announces more than `max_packet_size`
    ///   bytes (fixed header included); reported from the fixed header alone, before the body
    ///   is buffered. `u32::MAX` means no limit beyond the protocol's.
    /// - [`DecodeError::Malformed`]: the connection must be closed. If the whole malformed
    ///   packet was buffered it has been removed from `buf`; an error found in the fixed header
    ///   leaves `buf` untouched.
    ///
    /// `version` is the version negotiated on the connection; a CONNECT is decoded with the
    /// protocol level it carries.
    pub fn decode(
        buf: &mut BytesMut,
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<Packet, DecodeError> {
        let header = parse_fixed_header(buf, version)?;
        let total = header.header_len + header.remaining;
        if total > max_packet_size as usize {
            return Err(DecodeError::TooLarge {
                size: total,
                max: max_packet_size,
            });
        }
        if buf.len() < total {
            return Err(DecodeError::Incomplete {
                needed: total - buf.len(),
            });
        }
        let ptype = header.ptype;
        if header.remaining == 0 {
            // No body to share: skip the split (and the allocation of a shared buffer).
            buf.advance(total);
            return empty_body(ptype, version).map_err(DecodeError::Malformed);
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(header.header_len);
        let r = Reader::new(frame, ptype);
        if ptype == PacketType::Publish {
            // The hot path, inlined so the packet is built in place.
            return match Publish::decode(header.flags, r, version) {
                Ok(p) => Ok(Packet::Publish(p)),
                Err(e) => Err(DecodeError::Malformed(e)),
            };
        }
        decode_body(ptype, r, version).map_err(DecodeError::Malformed)
    }
}

/// Every packet but PUBLISH, from its body.
#[inline(never)]
fn decode_body(
    ptype: PacketType,
    r: Reader,
    version: ProtocolVersion,
) -> Result<Packet, Malformed> {
    match ptype {
        PacketType::Publish => Publish::decode(0, r, version).map(Packet::Publish),
        PacketType::Connect => Connect::decode(r).map(Packet::Connect),
        PacketType::ConnAck => ConnAck::decode(r, version).map(Packet::ConnAck),
        PacketType::PubAck => PubAck::decode(r, version).map(Packet::PubAck),
        PacketType::PubRec => PubRec::decode(r, version).map(Packet::PubRec),
        PacketType::PubRel => PubRel::decode(r, version).map(Packet::PubRel),
        PacketType::PubComp => PubComp::decode(r, version).map(Packet::PubComp),
        PacketType::Subscribe => Subscribe::decode(r, version).map(Packet::Subscribe),
        PacketType::SubAck => SubAck::decode(r, version).map(Packet::SubAck),
        PacketType::Unsubscribe => Unsubscribe::decode(r, version).map(Packet::Unsubscribe),
        PacketType::UnsubAck => UnsubAck::decode(r, version).map(Packet::UnsubAck),
        PacketType::Disconnect => Disconnect::decode(r, version).map(Packet::Disconnect),
        PacketType::Auth => Auth::decode(r, version).map(Packet::Auth),
        // Checked against the remaining length in `parse_fixed_header`.
        PacketType::PingReq | PacketType::PingResp => {
            Err(strings::trailing(ptype, r.remaining(), "fixed header"))
        }
    }
}

/// A packet whose remaining length is 0.
fn empty_body(ptype: PacketType, v: ProtocolVersion) -> Result<Packet, Malformed> {
    match ptype {
        PacketType::PingReq => Ok(Packet::PingReq),
        PacketType::PingResp => Ok(Packet::PingResp),
        PacketType::Disconnect => Ok(Packet::Disconnect(Disconnect {
            reason: crate::ReasonCode::Success,
            properties: Default::default(),
        })),
        PacketType::Auth if v == ProtocolVersion::V5 => Ok(Packet::Auth(Auth {
            reason: crate::ReasonCode::Success,
            properties: Default::default(),
        })),
        other => Err(strings::truncated(other, "variable header")),
    }
}

/// The parsed fixed header.
#[derive(Debug, Clone, Copy)]
struct FixedHeader {
    ptype: PacketType,
    flags: u8,
    header_len: usize,
    remaining: usize,
}

#[inline]
fn parse_fixed_header(buf: &[u8], v: ProtocolVersion) -> Result<FixedHeader, DecodeError> {
    let Some(&byte1) = buf.first() else {
        return Err(DecodeError::Incomplete { needed: 2 });
    };
    let ptype = match PacketType::from_u8(byte1 >> 4) {
        Some(PacketType::Auth) if v == ProtocolVersion::V311 => {
            return Err(bad_type("packet type 15 (AUTH) does not exist in MQTT 3.1.1").into())
        }
        Some(t) => t,
        None => return Err(bad_type("reserved packet type 0").into()),
    };
    let flags = byte1 & 0x0F;
    match ptype.required_flags() {
        Some(req) if flags != req => return Err(bad_flags(ptype, flags).into()),
        Some(_) => {}
        None => check_publish_flags(flags)?,
    }
    let (remaining, n) = match varint::decode(buf.get(1..).unwrap_or_default()) {
        Ok(Some((rl, n))) => (rl as usize, n),
        Ok(None) => return Err(DecodeError::Incomplete { needed: 1 }),
        Err(_) => return Err(varint::too_long("remaining length").into()),
    };
    check_remaining_length(ptype, v, remaining)?;
    Ok(FixedHeader {
        ptype,
        flags,
        header_len: 1 + n,
        remaining,
    })
}

/// QoS 3 is malformed; DUP on QoS 0 is a protocol error. Checked on the first byte, so a
/// corrupt PUBLISH is reported before its body arrives.
#[inline]
fn check_publish_flags(flags: u8) -> Result<(), Malformed> {
    let qos = (flags >> 1) & 0b11;
    if qos == 3 {
        return Err(Malformed::new(
            MalformedKind::InvalidQoS,
            "QoS 3 in PUBLISH",
        ));
    }
    if qos == 0 && flags & 0b1000 != 0 {
        return Err(Malformed::new(
            MalformedKind::DupWithQoS0,
            "DUP flag set on a QoS 0 PUBLISH",
        ));
    }
    Ok(())
}

/// Packets whose remaining length is fixed are rejected from their fixed header.
#[inline]
fn check_remaining_length(
    ptype: PacketType,
    v: ProtocolVersion,
    rl: usize,
) -> Result<(), Malformed> {
    let exact = match (ptype, v) {
        (PacketType::PingReq | PacketType::PingResp, _) => 0,
        (PacketType::Disconnect, ProtocolVersion::V311) => 0,
        (
            PacketType::ConnAck
            | PacketType::PubAck
            | PacketType::PubRec
            | PacketType::PubRel
            | PacketType::PubComp
            | PacketType::UnsubAck,
            ProtocolVersion::V311,
        ) => 2,
        _ => return Ok(()),
    };
    match rl.cmp(&exact) {
        core::cmp::Ordering::Equal => Ok(()),
        core::cmp::Ordering::Greater => Err(Malformed::new(
            MalformedKind::TrailingBytes,
            format!("trailing bytes after {ptype}: remaining length {rl}, expected {exact}"),
        )),
        core::cmp::Ordering::Less => Err(Malformed::new(
            MalformedKind::Truncated,
            format!("{ptype} remaining length {rl} is shorter than {exact}"),
        )),
    }
}

#[cold]
fn bad_type(msg: &'static str) -> Malformed {
    Malformed::new(MalformedKind::PacketType, msg)
}

#[cold]
fn bad_flags(ptype: PacketType, flags: u8) -> Malformed {
    Malformed::new(
        MalformedKind::FixedHeaderFlags,
        format!("reserved flags 0b{flags:04b} in {ptype} fixed header"),
    )
}

/// Errors shared by several packets.
pub(crate) mod checks {
    use super::error::{EncodeError, Malformed, MalformedKind};
    use crate::packet::{PacketType, ProtocolVersion, ReasonCode};

    #[cold]
    pub(crate) fn pkid_zero(packet: PacketType) -> Malformed {
        Malformed::new(
            MalformedKind::PacketIdZero,
            format!("packet identifier 0 in {packet}"),
        )
    }

    /// Reads a non-zero packet identifier.
    #[inline]
    pub(crate) fn pkid(r: &mut super::Reader) -> Result<u16, Malformed> {
        let id = r.u16("packet identifier")?;
        if id == 0 {
            return Err(pkid_zero(r.packet()));
        }
        Ok(id)
    }

    /// Encoder check for a required packet identifier.
    #[inline]
    pub(crate) fn pkid_nonzero(packet: PacketType, id: u16) -> Result<(), EncodeError> {
        if id == 0 {
            Err(EncodeError::PacketIdZero { packet })
        } else {
            Ok(())
        }
    }

    #[cold]
    pub(crate) fn bad_reason(packet: PacketType, code: u8, v: ProtocolVersion) -> Malformed {
        let what = match v {
            ProtocolVersion::V311 => "return code",
            ProtocolVersion::V5 => "reason code",
        };
        let msg = match ReasonCode::try_from(code) {
            Ok(rc) => format!("{what} 0x{code:02X} ({rc}) is not allowed in {packet} ({v})"),
            Err(_) => format!("unknown {what} 0x{code:02X} in {packet} ({v})"),
        };
        Malformed::new(MalformedKind::ReasonCode, msg)
    }

    /// Decodes an MQTT 5 reason code valid for `packet`.
    #[inline]
    pub(crate) fn reason_v5(packet: PacketType, code: u8) -> Result<ReasonCode, Malformed> {
        match ReasonCode::try_from(code) {
            Ok(rc) if rc.is_valid_for(packet) => Ok(rc),
            _ => Err(bad_reason(packet, code, ProtocolVersion::V5)),
        }
    }

    /// Encoder check for an MQTT 5 reason code.
    #[inline]
    pub(crate) fn reason_v5_ok(packet: PacketType, reason: ReasonCode) -> Result<(), EncodeError> {
        if reason.is_valid_for(packet) {
            Ok(())
        } else {
            Err(EncodeError::InvalidReasonCode { packet, reason })
        }
    }

    /// Encoder check: MQTT 3.1.1 has no properties.
    #[inline]
    pub(crate) fn no_props_v311(
        packet: PacketType,
        props: &crate::packet::Properties,
    ) -> Result<(), EncodeError> {
        if props.is_empty() {
            Ok(())
        } else {
            Err(EncodeError::UnsupportedInV311 {
                packet,
                field: "properties",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Properties;
    use crate::Props;

    /// The fused PUBLISH encoder and the generic path (measure, then write) agree byte for byte,
    /// and with `encoded_len`.
    #[test]
    fn fused_publish_path_matches_generic_path() {
        for (v, p) in samples::sample_packets() {
            let mut fast = BytesMut::new();
            p.encode(v, &mut fast).unwrap();
            let mut generic = BytesMut::new();
            p.encode_other(v, &mut generic).unwrap();
            assert_eq!(fast, generic, "{p:?}");
            assert_eq!(p.encoded_len(v).unwrap(), fast.len());
        }
        // Remaining lengths of every varint size, with and without properties.
        for (size, props) in [(10, false), (200, true), (20_000, false), (2_100_000, true)] {
            let p = Packet::Publish(Publish {
                dup: false,
                qos: crate::QoS::AtLeastOnce,
                retain: true,
                topic: "t/1".into(),
                pkid: 1,
                properties: if props {
                    Properties {
                        topic_alias: Some(1),
                        ..Properties::default()
                    }
                    .into()
                } else {
                    Props::new()
                },
                payload: bytes::Bytes::from(vec![7u8; size]),
            });
            let mut fast = BytesMut::new();
            p.encode(ProtocolVersion::V5, &mut fast).unwrap();
            let mut generic = BytesMut::new();
            p.encode_other(ProtocolVersion::V5, &mut generic).unwrap();
            assert_eq!(fast, generic);
            let back = Packet::decode(&mut fast, ProtocolVersion::V5, u32::MAX).unwrap();
            assert_eq!(back, p);
        }
    }

    /// Errors leave the output untouched, on both paths.
    #[test]
    fn encode_errors_leave_output_unchanged() {
        let bad = Packet::Publish(Publish {
            dup: false,
            qos: crate::QoS::AtMostOnce,
            retain: false,
            topic: "a/+".into(),
            pkid: 0,
            properties: Props::new(),
            payload: bytes::Bytes::new(),
        });
        let mut out = BytesMut::from(&b"prefix"[..]);
        assert!(matches!(
            bad.encode(ProtocolVersion::V5, &mut out),
            Err(EncodeError::InvalidTopic { .. })
        ));
        assert_eq!(&out[..], b"prefix");
        let bad = Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![],
            properties: Props::new(),
        });
        assert!(bad.encode(ProtocolVersion::V5, &mut out).is_err());
        assert_eq!(&out[..], b"prefix");
    }
}
