//! The little MQTT framing the proxy and the fake broker need: the fixed header
//! (packet type byte + remaining-length varint) and a peek at CONNECT's
//! protocol level. Everything else is opaque bytes.

use bytes::{Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest remaining length the MQTT varint can encode (256 MiB - 1).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Outcome of parsing a fixed header at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// More bytes are needed.
    Incomplete,
    /// The remaining-length varint runs over four bytes: not MQTT.
    Invalid,
    /// `header_len` bytes of fixed header, then `remaining` bytes of body.
    Complete { header_len: usize, remaining: usize },
}

/// Parses the fixed header at the start of `buf`.
pub(crate) fn parse_header(buf: &[u8]) -> Header {
    if buf.is_empty() {
        return Header::Incomplete;
    }
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Header::Incomplete;
        };
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Header::Complete {
                header_len: 2 + i,
                remaining: value,
            };
        }
    }
    Header::Invalid
}

/// What the first bytes a client sent say about its first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstPacket {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// The stream does not start with an MQTT CONNECT.
    NotConnect,
    /// A CONNECT of `frame_len` bytes in all, with this protocol level
    /// (`None` when the variable header is too odd to read it).
    Connect { level: Option<u8>, frame_len: usize },
}

/// Looks at the start of the client->broker stream.
pub(crate) fn peek_first(buf: &[u8]) -> FirstPacket {
    let Some(&first) = buf.first() else {
        return FirstPacket::NeedMore;
    };
    // CONNECT is packet type 1 with all flag bits zero.
    if first != 0x10 {
        return FirstPacket::NotConnect;
    }
    let (header_len, remaining) = match parse_header(buf) {
        Header::Incomplete => return FirstPacket::NeedMore,
        Header::Invalid => return FirstPacket::NotConnect,
        Header::Complete {
            header_len,
            remaining,
        } => (header_len, remaining),
    };
    let frame_len = header_len + remaining;
    let body = &buf[header_len..buf.len().min(frame_len)];
    let unknown = FirstPacket::Connect {
        level: None,
        frame_len,
    };
    if remaining < 2 {
        return unknown;
    }
    let (Some(&hi), Some(&lo)) = (body.first(), body.get(1)) else {
        return FirstPacket::NeedMore;
    };
    let name_len = usize::from(u16::from_be_bytes([hi, lo]));
    // "MQTT" (3.1.1, 5) or "MQIsdp" (3.1).
    if name_len > 6 || remaining < 2 + name_len + 1 {
        return unknown;
    }
    match body.get(2 + name_len) {
        Some(&level) => FirstPacket::Connect {
            level: Some(level),
            frame_len,
        },
        None => FirstPacket::NeedMore,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Boundary,
    Length { value: usize, count: u32 },
    Body(usize),
    Invalid,
}

/// Follows packet boundaries in a byte stream without buffering it: O(1)
/// work per packet for the body, a few steps per fixed header.
#[derive(Debug, Clone)]
pub(crate) struct FrameTracker {
    state: Track,
}

impl FrameTracker {
    /// A tracker at the start of a stream (a packet boundary).
    pub(crate) fn new() -> Self {
        FrameTracker {
            state: Track::Boundary,
        }
    }

    /// True between two packets.
    pub(crate) fn at_boundary(&self) -> bool {
        self.state == Track::Boundary
    }

    /// True once the stream stopped looking like MQTT.
    pub(crate) fn is_invalid(&self) -> bool {
        self.state == Track::Invalid
    }

    /// Consumes bytes until the end of the current packet (starting a new one
    /// if at a boundary) or the end of `data`; returns how many were consumed.
    fn step(&mut self, data: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            match &mut self.state {
                Track::Invalid => return data.len(),
                Track::Boundary => {
                    if pos > 0 || pos >= data.len() {
                        return pos;
                    }
                    pos += 1;
                    self.state = Track::Length { value: 0, count: 0 };
                }
                Track::Length { value, count } => {
                    let Some(&b) = data.get(pos) else {
                        return pos;
                    };
                    pos += 1;
                    *value |= usize::from(b & 0x7f) << (7 * *count);
                    *count += 1;
                    if b & 0x80 == 0 {
                        let v = *value;
                        self.state = if v == 0 {
                            Track::Boundary
                        } else {
                            Track::Body(v)
                        };
                    } else if *count == 4 {
                        self.state = Track::Invalid;
                    }
                }
                Track::Body(rem) => {
                    let take = (*rem).min(data.len() - pos);
                    pos += take;
                    *rem -= take;
                    if *rem == 0 {
                        self.state = Track::Boundary;
                    } else {
                        return pos;
                    }
                }
            }
        }
    }

    /// Consumes all of `data`.
    pub(crate) fn skip(&mut self, data: &[u8]) {
        let mut pos = 0;
        while pos < data.len() {
            pos += self.step(&data[pos..]);
        }
    }

    /// Consumes the bytes of `data` that finish the current packet; 0 when
    /// already at a boundary. Afterwards check [`FrameTracker::at_boundary`].
    pub(crate) fn finish_packet(&mut self, data: &[u8]) -> usize {
        if self.at_boundary() {
            0
        } else {
            self.step(data)
        }
    }
}

/// Reads one whole packet (fixed header + body) from `r`, buffering in `buf`.
/// `Ok(None)` on a clean end of stream between packets.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max_len: usize,
) -> io::Result<Option<Bytes>> {
    loop {
        match parse_header(buf) {
            Header::Complete {
                header_len,
                remaining,
            } => {
                let total = header_len + remaining;
                if total > max_len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("MQTT packet of {total} bytes exceeds the {max_len}-byte cap"),
                    ));
                }
                if buf.len() >= total {
                    return Ok(Some(buf.split_to(total).freeze()));
                }
                buf.reserve(total - buf.len());
            }
            Header::Invalid => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed MQTT remaining length",
                ))
            }
            Header::Incomplete => {}
        }
        if r.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside an MQTT packet",
                ))
            };
        }
    }
}

/// Maps an MQTT 5 CONNACK reason code to the closest MQTT 3.1.1 return code.
///
/// 0x00 -> 0, 0x84 -> 1 (unacceptable protocol version), 0x85 -> 2
/// (identifier rejected), 0x86 -> 4 (bad user name or password), 0x87 -> 5
/// (not authorized), anything else (0x88 server unavailable, 0x89 server busy,
/// ...) -> 3 (server unavailable).
pub fn v5_to_v311_connack_code(rc: u8) -> u8 {
    match rc {
        0x00 => 0,
        0x84 => 1,
        0x85 => 2,
        0x86 => 4,
        0x87 => 5,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parsing() {
        assert_eq!(parse_header(&[]), Header::Incomplete);
        assert_eq!(parse_header(&[0x30]), Header::Incomplete);
        assert_eq!(
            parse_header(&[0xd0, 0x00]),
            Header::Complete {
                header_len: 2,
                remaining: 0
            }
        );
        assert_eq!(
            parse_header(&[0x30, 0xc1, 0x02]),
            Header::Complete {
                header_len: 3,
                remaining: 321
            }
        );
        assert_eq!(
            parse_header(&[0x30, 0xff, 0xff, 0xff, 0x7f]),
            Header::Complete {
                header_len: 5,
                remaining: MAX_REMAINING_LENGTH
            }
        );
        assert_eq!(parse_header(&[0x30, 0xff, 0xff, 0xff]), Header::Incomplete);
        assert_eq!(
            parse_header(&[0x30, 0xff, 0xff, 0xff, 0xff]),
            Header::Invalid
        );
    }

    #[test]
    fn first_packet_peek() {
        let connect5 = [
            0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 5, 0x02, 0x00, 0x3c, 0x00, 0x00, 0x00,
        ];
        for cut in 0..9 {
            assert_eq!(peek_first(&connect5[..cut]), FirstPacket::NeedMore, "{cut}");
        }
        assert_eq!(
            peek_first(&connect5[..9]),
            FirstPacket::Connect {
                level: Some(5),
                frame_len: 15
            }
        );
        let connect31 = [
            0x10, 0x0a, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0,
        ];
        assert_eq!(
            peek_first(&connect31),
            FirstPacket::Connect {
                level: Some(3),
                frame_len: 12
            }
        );
        assert_eq!(peek_first(b"hello"), FirstPacket::NotConnect);
        assert_eq!(
            peek_first(&[0x10, 0xff, 0xff, 0xff, 0xff]),
            FirstPacket::NotConnect
        );
        assert_eq!(
            peek_first(&[0x10, 0x01, 0x00]),
            FirstPacket::Connect {
                level: None,
                frame_len: 3
            }
        );
        assert_eq!(
            peek_first(&[0x10, 0x20, 0x00, 0x40]),
            FirstPacket::Connect {
                level: None,
                frame_len: 34
            }
        );
    }

    #[test]
    fn tracker_follows_boundaries_across_chunks() {
        // PUBLISH (len 5), PINGRESP, PUBACK (len 2)
        let stream = [
            0x30, 0x05, 0, 1, b't', b'x', b'y', 0xd0, 0x00, 0x40, 0x02, 0, 1,
        ];
        let boundaries = [0usize, 7, 9, 13];
        for split in 0..=stream.len() {
            let mut t = FrameTracker::new();
            t.skip(&stream[..split]);
            assert_eq!(t.at_boundary(), boundaries.contains(&split), "{split}");
            t.skip(&stream[split..]);
            assert!(t.at_boundary());
        }
        let mut t = FrameTracker::new();
        t.skip(&stream[..3]);
        assert_eq!(t.finish_packet(&stream[3..]), 4);
        assert!(t.at_boundary());
        assert_eq!(t.finish_packet(&stream[7..]), 0);
        let mut t = FrameTracker::new();
        t.skip(&[0x30, 0x80, 0x80, 0x80, 0x80, 1, 2, 3]);
        assert!(t.is_invalid());
    }

    #[tokio::test]
    async fn read_frame_splits_and_caps() {
        let data: &[u8] = &[0x30, 0x03, 0, 1, b'a', 0xd0, 0x00, 0x30, 0x7f];
        let mut r = data;
        let mut buf = BytesMut::new();
        let f = read_frame(&mut r, &mut buf, 64).await.unwrap().unwrap();
        assert_eq!(&f[..], &[0x30, 0x03, 0, 1, b'a']);
        let f = read_frame(&mut r, &mut buf, 64).await.unwrap().unwrap();
        assert_eq!(&f[..], &[0xd0, 0x00]);
        let e = read_frame(&mut r, &mut buf, 64).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut r: &[u8] = &[0x30, 0x02, 0];
        let mut buf = BytesMut::new();
        let e = read_frame(&mut r, &mut buf, 64).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let mut r: &[u8] = &[];
        let mut buf = BytesMut::new();
        assert!(read_frame(&mut r, &mut buf, 64).await.unwrap().is_none());
    }

    #[test]
    fn reason_code_mapping() {
        let cases = [
            (0x00, 0),
            (0x84, 1),
            (0x85, 2),
            (0x88, 3),
            (0x89, 3),
            (0x80, 3),
            (0x86, 4),
            (0x87, 5),
        ];
        for (v5, v3) in cases {
            assert_eq!(v5_to_v311_connack_code(v5), v3);
        }
    }
}
