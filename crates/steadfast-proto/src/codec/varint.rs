//! Variable Byte Integers (MQTT 5.0 section 1.5.5, 3.1.1 section 2.2.3): 7 bits per byte,
//! least significant group first, the high bit of each byte set when another byte follows.
//! At most 4 bytes, so at most 268,435,455.
//!
//! ```
//! use bytes::BytesMut;
//! use steadfast_proto::codec::varint;
//!
//! let mut out = BytesMut::new();
//! varint::encode(16_384, &mut out).unwrap();
//! assert_eq!(&out[..], &[0x80, 0x80, 0x01]);
//! assert_eq!(varint::decode(&out).unwrap(), Some((16_384, 3)));
//! assert!(varint::encode(varint::MAX + 1, &mut out).is_err());
//! ```

use bytes::{BufMut, BytesMut};

use super::error::{EncodeError, Malformed, MalformedKind};

/// The largest value a variable byte integer can hold: 268,435,455 (`0xFF 0xFF 0xFF 0x7F`).
pub const MAX: u32 = 268_435_455;

/// How many bytes `value` takes, or an error when it is larger than [`MAX`].
#[inline]
pub fn encoded_len(value: u32) -> Result<usize, EncodeError> {
    if value > MAX {
        return Err(EncodeError::VarIntTooLarge {
            value: value.into(),
        });
    }
    Ok(len_unchecked(value as usize))
}

/// How many bytes a value already known to be at most [`MAX`] takes.
#[inline]
pub(crate) const fn len_unchecked(value: usize) -> usize {
    if value < 0x80 {
        1
    } else if value < 0x4000 {
        2
    } else if value < 0x20_0000 {
        3
    } else {
        4
    }
}

/// Appends `value` to `out`; returns the number of bytes written.
pub fn encode(value: u32, out: &mut BytesMut) -> Result<usize, EncodeError> {
    let n = encoded_len(value)?;
    put_unchecked(value as usize, out);
    Ok(n)
}

/// Appends a value already known to be at most [`MAX`]. Fixed-size writes only.
#[inline]
pub(crate) fn put_unchecked(value: usize, out: &mut BytesMut) {
    debug_assert!(value <= MAX as usize);
    let v = value as u32;
    let b0 = (v & 0x7F) as u8;
    let b1 = ((v >> 7) & 0x7F) as u8;
    let b2 = ((v >> 14) & 0x7F) as u8;
    let b3 = ((v >> 21) & 0x7F) as u8;
    if v < 0x80 {
        out.put_u8(b0);
    } else if v < 0x4000 {
        out.put_slice(&[b0 | 0x80, b1]);
    } else if v < 0x20_0000 {
        out.put_slice(&[b0 | 0x80, b1 | 0x80, b2]);
    } else {
        out.put_slice(&[b0 | 0x80, b1 | 0x80, b2 | 0x80, b3]);
    }
}

/// Parses a variable byte integer at the start of `buf`.
///
/// Returns `Ok(Some((value, bytes_used)))`, `Ok(None)` when `buf` ends before the last byte of
/// the integer, or a [`MalformedKind::VarInt`] error when a fifth byte would be needed.
/// Non-minimal encodings (e.g. `0x80 0x00` for 0) are accepted, as most implementations do.
#[inline]
pub fn decode(buf: &[u8]) -> Result<Option<(u32, usize)>, Malformed> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(too_long("variable byte integer"))
    } else {
        Ok(None)
    }
}

#[cold]
pub(crate) fn too_long(what: &str) -> Malformed {
    Malformed::new(
        MalformedKind::VarInt,
        format!("{what} varint is longer than 4 bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        let n = encode(v, &mut out).unwrap();
        assert_eq!(n, out.len());
        assert_eq!(encoded_len(v).unwrap(), n);
        out.to_vec()
    }

    #[test]
    fn boundaries() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(v, bytes) in cases {
            assert_eq!(enc(v), bytes, "{v}");
            assert_eq!(decode(bytes).unwrap(), Some((v, bytes.len())));
            // Every strict prefix is incomplete.
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]).unwrap(), None);
            }
        }
    }

    #[test]
    fn too_large_rejected_on_encode() {
        let mut out = BytesMut::new();
        assert_eq!(
            encode(268_435_456, &mut out),
            Err(EncodeError::VarIntTooLarge { value: 268_435_456 })
        );
        assert!(out.is_empty());
        assert!(encoded_len(u32::MAX).is_err());
    }

    #[test]
    fn fifth_byte_rejected_on_decode() {
        let e = decode(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).unwrap_err();
        assert_eq!(e.kind(), MalformedKind::VarInt);
        // Four continuation bytes are already known to be bad.
        assert!(decode(&[0x80, 0x80, 0x80, 0x80]).is_err());
    }

    #[test]
    fn non_minimal_accepted() {
        assert_eq!(decode(&[0x80, 0x00]).unwrap(), Some((0, 2)));
    }
}
