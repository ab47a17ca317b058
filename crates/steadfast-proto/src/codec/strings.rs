//! MQTT data representations (section 1.5): two-byte integers, UTF-8 strings, binary data and
//! string pairs. A [`Reader`] does checked, zero-copy reads over a frozen packet body, and the
//! `put_*` / `*_len` helpers do the encoding side.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{EncodeError, Malformed, MalformedKind};
use super::{varint, ByteStr};
use crate::packet::PacketType;

/// The longest string or binary field: the length prefix is a `u16`.
pub(crate) const MAX_FIELD_LEN: usize = u16::MAX as usize;

/// Checked reads over one packet's body. Every read fails with a [`Malformed`] error naming the
/// packet and the field instead of panicking; slices share the body's buffer.
pub(crate) struct Reader {
    buf: Bytes,
    packet: PacketType,
}

impl Reader {
    #[inline]
    pub(crate) fn new(buf: Bytes, packet: PacketType) -> Self {
        Reader { buf, packet }
    }

    /// The packet being read (for error messages).
    #[inline]
    pub(crate) fn packet(&self) -> PacketType {
        self.packet
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Skips the next byte if it is 0 (an empty property block); true if it did.
    #[inline]
    pub(crate) fn skip_zero_byte(&mut self) -> bool {
        if self.buf.first() == Some(&0) {
            self.buf.advance(1);
            true
        } else {
            false
        }
    }

    #[inline]
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        if self.buf.is_empty() {
            return Err(truncated(self.packet, what));
        }
        Ok(self.buf.get_u8())
    }

    #[inline]
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        if self.buf.len() < 2 {
            return Err(truncated(self.packet, what));
        }
        Ok(self.buf.get_u16())
    }

    #[inline]
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        if self.buf.len() < 4 {
            return Err(truncated(self.packet, what));
        }
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer.
    #[inline]
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u32, Malformed> {
        match varint::decode(&self.buf) {
            Ok(Some((v, n))) => {
                self.buf.advance(n);
                Ok(v)
            }
            Ok(None) => Err(truncated(self.packet, what)),
            Err(_) => Err(varint::too_long(&format!("{} {what}", self.packet))),
        }
    }

    /// The next `n` bytes, shared with the body.
    #[inline]
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, Malformed> {
        if self.buf.len() < n {
            return Err(truncated(self.packet, what));
        }
        Ok(self.buf.split_to(n))
    }

    /// Binary data: a two-byte length and that many bytes.
    #[inline]
    pub(crate) fn binary(&mut self, what: &'static str) -> Result<Bytes, Malformed> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }

    /// A UTF-8 string: well-formed UTF-8 (so no surrogates) without U+0000.
    #[inline]
    pub(crate) fn string(&mut self, what: &'static str) -> Result<ByteStr, Malformed> {
        let b = self.binary(what)?;
        if b.contains(&0) {
            return Err(null_char(self.packet, what));
        }
        self.utf8(b, what)
    }

    /// Wraps bytes that were already checked for U+0000 as a string.
    #[inline]
    pub(crate) fn utf8(&self, b: Bytes, what: &'static str) -> Result<ByteStr, Malformed> {
        ByteStr::from_utf8(b).map_err(|_| bad_utf8(self.packet, what))
    }

    /// A sub-reader over the next `n` bytes (a property block).
    #[inline]
    pub(crate) fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader, Malformed> {
        Ok(Reader {
            buf: self.take(n, what)?,
            packet: self.packet,
        })
    }

    /// Everything that is left (the PUBLISH payload).
    #[inline]
    pub(crate) fn rest(self) -> Bytes {
        self.buf
    }

    /// Fails when bytes are left after the last field.
    #[inline]
    pub(crate) fn finish(&self, after: &'static str) -> Result<(), Malformed> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(trailing(self.packet, self.buf.len(), after))
        }
    }
}

#[cold]
pub(crate) fn truncated(packet: PacketType, what: &str) -> Malformed {
    Malformed::new(
        MalformedKind::Truncated,
        format!("{packet} {what} runs past the end of the packet"),
    )
}

#[cold]
pub(crate) fn trailing(packet: PacketType, n: usize, after: &str) -> Malformed {
    Malformed::new(
        MalformedKind::TrailingBytes,
        format!("trailing bytes after {packet} {after} ({n} byte(s))"),
    )
}

#[cold]
fn null_char(packet: PacketType, what: &str) -> Malformed {
    Malformed::new(
        MalformedKind::NullCharacter,
        format!("{packet} {what}: string contains U+0000"),
    )
}

#[cold]
fn bad_utf8(packet: PacketType, what: &str) -> Malformed {
    Malformed::new(
        MalformedKind::InvalidUtf8,
        format!("{packet} {what}: string is not well-formed UTF-8"),
    )
}

/// Encoded size of a UTF-8 string field (length prefix included), after checking its length
/// and that it has no U+0000.
#[inline]
pub(crate) fn str_len(s: &str, field: &'static str) -> Result<usize, EncodeError> {
    if s.len() > MAX_FIELD_LEN {
        return Err(EncodeError::FieldTooLong {
            field,
            len: s.len(),
        });
    }
    if s.as_bytes().contains(&0) {
        return Err(EncodeError::NullCharacter { field });
    }
    Ok(2 + s.len())
}

/// Encoded size of a binary field (length prefix included), after checking its length.
#[inline]
pub(crate) fn bin_len(b: &[u8], field: &'static str) -> Result<usize, EncodeError> {
    if b.len() > MAX_FIELD_LEN {
        return Err(EncodeError::FieldTooLong {
            field,
            len: b.len(),
        });
    }
    Ok(2 + b.len())
}

/// Writes a length-prefixed field whose length was checked.
#[inline]
pub(crate) fn put_bin(out: &mut BytesMut, b: &[u8]) {
    debug_assert!(b.len() <= MAX_FIELD_LEN);
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

/// Writes a length-prefixed string whose length was checked.
#[inline]
pub(crate) fn put_str(out: &mut BytesMut, s: &str) {
    put_bin(out, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(b: &'static [u8]) -> Reader {
        Reader::new(Bytes::from_static(b), PacketType::Connect)
    }

    #[test]
    fn strings_decode() {
        let mut r = reader(b"\x00\x03abc\x00\x00");
        assert_eq!(r.string("s").unwrap(), "abc");
        assert_eq!(r.string("s").unwrap(), "");
        assert!(r.finish("s").is_ok());
    }

    #[test]
    fn spec_example_string() {
        // 1.5.4 example: "A𪛔" = 0x00 0x05 0x41 0xF0 0xAA 0x9B 0x94.
        let mut r = reader(b"\x00\x05\x41\xF0\xAA\x9B\x94");
        assert_eq!(r.string("s").unwrap(), "A\u{2A6D4}");
    }

    #[test]
    fn strings_rejected() {
        let e = reader(b"\x00\x01\xff").string("s").unwrap_err();
        assert_eq!(e.kind(), MalformedKind::InvalidUtf8);
        assert!(
            e.message().contains("string is not well-formed UTF-8"),
            "{e}"
        );
        // U+D800 encoded as UTF-8 (CESU style) is not well-formed.
        let e = reader(b"\x00\x03\xED\xA0\x80").string("s").unwrap_err();
        assert_eq!(e.kind(), MalformedKind::InvalidUtf8);
        let e = reader(b"\x00\x03a\x00b").string("s").unwrap_err();
        assert_eq!(e.kind(), MalformedKind::NullCharacter);
        assert!(e.message().contains("string contains U+0000"), "{e}");
        let e = reader(b"\x00\x05abc").string("s").unwrap_err();
        assert_eq!(e.kind(), MalformedKind::Truncated);
        let e = reader(b"\x00").string("s").unwrap_err();
        assert_eq!(e.kind(), MalformedKind::Truncated);
    }

    #[test]
    fn ints_and_trailing() {
        let mut r = reader(b"\x01\x02\x03\x04\x05\x06\x07\x80\x01");
        assert_eq!(r.u8("a").unwrap(), 1);
        assert_eq!(r.u16("b").unwrap(), 0x0203);
        assert_eq!(r.u32("c").unwrap(), 0x0405_0607);
        assert_eq!(r.varint("d").unwrap(), 128);
        assert!(r.is_empty());
        assert_eq!(r.u8("e").unwrap_err().kind(), MalformedKind::Truncated);
        let r = reader(b"\x01");
        assert_eq!(
            r.finish("x").unwrap_err().kind(),
            MalformedKind::TrailingBytes
        );
    }

    #[test]
    fn encode_checks() {
        assert_eq!(str_len("abc", "f"), Ok(5));
        assert_eq!(
            str_len("a\0", "f"),
            Err(EncodeError::NullCharacter { field: "f" })
        );
        let long = "x".repeat(65_536);
        assert_eq!(
            str_len(&long, "f"),
            Err(EncodeError::FieldTooLong {
                field: "f",
                len: 65_536
            })
        );
        assert_eq!(bin_len(&[0; 65_535], "f"), Ok(65_537));
        let mut out = BytesMut::new();
        put_str(&mut out, "ab");
        assert_eq!(&out[..], b"\x00\x02ab");
    }
}
