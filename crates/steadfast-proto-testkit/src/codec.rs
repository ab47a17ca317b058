//! Properties shared by the cargo-fuzz targets (`fuzz/`) and the stable-toolchain smoke tests.
//! Not part of the supported API.
//!
//! Every function panics when the codec breaks one of its promises, and returns normally for
//! any input the codec handles correctly (whether it decodes or not).

use bytes::{Bytes, BytesMut};

use steadfast_proto::packet::*;
use steadfast_proto::rng::{Draw, Rng, Xoshiro256};
use steadfast_proto::{DecodeError, Malformed};

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

/// Decodes `data` as a stream of packets with both protocol versions and two packet size
/// limits. Every packet that decodes must re-encode, and the re-encoding must decode to an
/// equal packet (see [`check_packet_roundtrip`]). `Incomplete` must leave the buffer untouched,
/// `TooLarge` must report a size above the limit.
pub fn check_decode_roundtrip(data: &[u8]) {
    let small_max = 2 + u32::from(data.first().copied().unwrap_or(0) % 128);
    for version in VERSIONS {
        for max in [u32::MAX, small_max] {
            let mut buf = BytesMut::from(data);
            loop {
                let before = buf.len();
                match Packet::decode(&mut buf, version, max) {
                    Ok(p) => {
                        let consumed = before - buf.len();
                        assert!(
                            consumed >= 2 && consumed <= max as usize,
                            "consumed {consumed}"
                        );
                        check_packet_roundtrip(&p, version);
                    }
                    Err(DecodeError::Incomplete { needed }) => {
                        assert!(needed >= 1);
                        assert_eq!(buf.len(), before, "Incomplete must not consume");
                        assert_eq!(&buf[..], &data[data.len() - before..]);
                        break;
                    }
                    Err(DecodeError::TooLarge { size, max: m }) => {
                        assert_eq!(m, max);
                        assert!(size > max as usize);
                        assert_eq!(buf.len(), before, "TooLarge must not consume");
                        break;
                    }
                    Err(DecodeError::Malformed(m)) => {
                        assert!(!m.message().is_empty());
                        let _ = m.reason_code();
                        break;
                    }
                    Err(other) => {
                        panic!("a decode error these checks do not know: {other:?}");
                    }
                }
            }
        }
    }
}

/// `p` (a decoded packet) must encode for `version`, `encoded_len` must agree, the encoding
/// must decode to `p` consuming exactly its bytes, and re-encoding must give the same bytes.
pub fn check_packet_roundtrip(p: &Packet, version: ProtocolVersion) {
    let len = match p.encoded_len(version) {
        Ok(len) => len,
        Err(e) => panic!("decoded packet does not re-encode: {e}\n{p:?}"),
    };
    let mut out = BytesMut::new();
    if let Err(e) = p.encode(version, &mut out) {
        panic!("encoded_len succeeded but encode failed: {e}\n{p:?}");
    }
    assert_eq!(
        out.len(),
        len,
        "encoded_len disagrees with encode for {p:?}"
    );
    let bytes = out.clone().freeze();
    match Packet::decode(&mut out, version, u32::MAX) {
        Ok(q) => {
            assert_eq!(&q, p, "round trip changed the packet");
            assert!(
                out.is_empty(),
                "decode left {} byte(s) of its own encoding",
                out.len()
            );
            let mut again = BytesMut::new();
            if let Err(e) = q.encode(version, &mut again) {
                panic!("second encode failed: {e}");
            }
            assert_eq!(again.freeze(), bytes, "encoding is not deterministic");
        }
        Err(e) => panic!("re-encoded packet does not decode: {e}\n{p:?}\n{bytes:02x?}"),
    }
}

/// How a stream of packets ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Incomplete,
    TooLarge { size: usize, max: u32 },
    Malformed(Malformed),
}

fn decode_stream(
    chunks: impl Iterator<Item = Bytes>,
    version: ProtocolVersion,
    max: u32,
) -> (Vec<Packet>, End) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(&chunk);
        loop {
            match Packet::decode(&mut buf, version, max) {
                Ok(p) => packets.push(p),
                Err(DecodeError::Incomplete { .. }) => break,
                Err(DecodeError::TooLarge { size, max }) => {
                    return (packets, End::TooLarge { size, max })
                }
                Err(DecodeError::Malformed(m)) => return (packets, End::Malformed(m)),
                Err(other) => panic!("a decode error these checks do not know: {other:?}"),
            }
        }
    }
    (packets, End::Incomplete)
}

/// Decoding `data[1..]` fed in chunks (sizes drawn from a generator seeded by `data[0]`, from 1
/// byte up) must give the same packets and the same final outcome as decoding it whole.
pub fn check_chunked(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let stream = Bytes::copy_from_slice(stream);
    let max = if seed & 0x80 != 0 {
        16 + u32::from(seed)
    } else {
        u32::MAX
    };
    for version in VERSIONS {
        let whole = decode_stream(core::iter::once(stream.clone()), version, max);
        let mut rng = Xoshiro256::seed_from_u64(u64::from(seed) + 1);
        let mut rest = stream.clone();
        let chunks = core::iter::from_fn(|| {
            if rest.is_empty() {
                return None;
            }
            // Mostly tiny chunks, sometimes large ones.
            let n = if rng.below(4) == 0 {
                rng.below(64)
            } else {
                rng.below(4)
            } + 1;
            let n = (n as usize).min(rest.len());
            Some(rest.split_to(n))
        });
        let chunked = decode_stream(chunks, version, max);
        assert_eq!(whole, chunked, "chunked decoding differs ({version})");
    }
}

/// Applies one to four random edits to `data`: flip bits, overwrite, insert or remove bytes,
/// set interesting values (0, 0xFF, 0x80, 0x7F).
pub fn mutate(data: &mut Vec<u8>, rng: &mut Xoshiro256) {
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        let len = data.len() as u64;
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                if let Some(b) = data.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 if len > 0 => {
                let i = rng.below(len) as usize;
                if let Some(b) = data.get_mut(i) {
                    *b = rng.next_u64() as u8;
                }
            }
            2 => {
                let i = rng.below(len + 1) as usize;
                data.insert(i, rng.next_u64() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len) as usize;
                data.remove(i);
            }
            4 if len > 0 => {
                let i = rng.below(len) as usize;
                if let Some(b) = data.get_mut(i) {
                    *b = [0x00, 0xFF, 0x80, 0x7F][rng.below(4) as usize];
                }
            }
            _ => {
                let n = rng.below(8) as usize;
                let mut extra = vec![0u8; n];
                rng.fill_bytes(&mut extra);
                data.extend_from_slice(&extra);
            }
        }
    }
}

pub use steadfast_proto::codec::samples::{sample_encodings, sample_packets};
