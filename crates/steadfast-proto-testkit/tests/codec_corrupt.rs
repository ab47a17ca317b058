//! Corrupted input: every truncation of valid encodings, and many seeded random corruptions
//! and insertions. The decoder must never panic; truncations must be `Incomplete` with the
//! buffer untouched; anything else is a packet (which must then round trip) or a typed error.

use bytes::BytesMut;
use steadfast_proto::rng::{Draw, Rng, Xoshiro256};
use steadfast_proto::*;
use steadfast_proto_testkit::codec::{check_packet_roundtrip, mutate, sample_encodings};

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    incomplete: usize,
    too_large: usize,
    malformed: usize,
}

/// Decodes `data` as a stream until it stops; checks every outcome's promises.
fn decode_all(data: &[u8], v: ProtocolVersion, max: u32, tally: &mut Tally) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match Packet::decode(&mut buf, v, max) {
            Ok(p) => {
                tally.ok += 1;
                assert!(buf.len() < before.len());
                check_packet_roundtrip(&p, v);
            }
            Err(DecodeError::Incomplete { needed }) => {
                tally.incomplete += 1;
                assert!(needed >= 1);
                assert_eq!(buf, before, "Incomplete must leave the buffer untouched");
                return;
            }
            Err(DecodeError::TooLarge { size, max: m }) => {
                tally.too_large += 1;
                assert!(size > m as usize);
                assert_eq!(buf, before, "TooLarge must leave the buffer untouched");
                return;
            }
            Err(DecodeError::Malformed(m)) => {
                tally.malformed += 1;
                assert!(!m.message().is_empty());
                assert!(matches!(
                    m.reason_code(),
                    ReasonCode::MalformedPacket
                        | ReasonCode::ProtocolError
                        | ReasonCode::UnsupportedProtocolVersion
                ));
                return;
            }
            Err(other) => panic!("a decode error this test does not know: {other:?}"),
        }
    }
}

#[test]
fn every_truncation_is_incomplete() {
    let mut cases = 0;
    for (v, wire) in sample_encodings() {
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            match Packet::decode(&mut buf, v, u32::MAX) {
                Err(DecodeError::Incomplete { needed }) => {
                    assert!(needed >= 1);
                    assert!(
                        needed <= wire.len() - cut,
                        "needed {needed} > missing {}",
                        wire.len() - cut
                    );
                    assert_eq!(&buf[..], &wire[..cut], "buffer must be untouched");
                }
                other => panic!("{v} prefix {cut}/{} of {wire:02x?}: {other:?}", wire.len()),
            }
            cases += 1;
        }
        // And the whole thing decodes.
        let mut buf = BytesMut::from(&wire[..]);
        let p = Packet::decode(&mut buf, v, u32::MAX).expect("sample decodes");
        assert!(buf.is_empty());
        check_packet_roundtrip(&p, v);
    }
    assert!(cases > 20_000, "only {cases} truncations");
}

#[test]
fn seeded_random_corruptions() {
    let samples = sample_encodings();
    let mut rng = Xoshiro256::seed_from_u64(0x5EED_C0DE);
    let mut tally = Tally::default();
    let mut cases = 0;
    for (v, wire) in &samples {
        // The big sample is only corrupted a few times (it is slow to copy around).
        let rounds = if wire.len() > 4096 { 20 } else { 600 };
        for _ in 0..rounds {
            let mut data = wire.clone();
            mutate(&mut data, &mut rng);
            // Decode with the sample's own version and the other one, with and without limit.
            for version in [*v, other(*v)] {
                decode_all(&data, version, u32::MAX, &mut tally);
            }
            decode_all(&data, *v, 64, &mut tally);
            cases += 1;
        }
    }
    assert!(cases >= 20_000, "only {cases} cases");
    // The corpus exercises every outcome.
    assert!(
        tally.ok > 1000 && tally.malformed > 1000 && tally.incomplete > 1000,
        "{tally:?}"
    );
    assert!(tally.too_large > 100, "{tally:?}");
}

#[test]
fn seeded_byte_flips_at_every_position() {
    // Each byte of each (small) sample, set to a handful of values.
    let mut tally = Tally::default();
    for (v, wire) in sample_encodings()
        .into_iter()
        .filter(|(_, w)| w.len() <= 256)
    {
        for i in 0..wire.len() {
            for val in [0x00, 0x01, 0x7F, 0x80, 0xFF, wire[i] ^ 0x01, wire[i] ^ 0x40] {
                let mut data = wire.clone();
                data[i] = val;
                decode_all(&data, v, u32::MAX, &mut tally);
            }
        }
    }
    assert!(tally.malformed > 500 && tally.ok > 500, "{tally:?}");
}

#[test]
fn concatenated_packets_with_garbage_between() {
    let samples = sample_encodings();
    let mut rng = Xoshiro256::seed_from_u64(42);
    let mut tally = Tally::default();
    for _ in 0..3000 {
        let mut stream = Vec::new();
        let v = if rng.below(2) == 0 {
            ProtocolVersion::V311
        } else {
            ProtocolVersion::V5
        };
        for _ in 0..1 + rng.below(4) {
            let (_, w) = &samples[rng.below(samples.len() as u64) as usize];
            if w.len() > 4096 {
                continue;
            }
            stream.extend_from_slice(w);
            if rng.below(3) == 0 {
                let mut junk = vec![0u8; rng.below(6) as usize];
                rng.fill_bytes(&mut junk);
                stream.extend_from_slice(&junk);
            }
        }
        decode_all(&stream, v, u32::MAX, &mut tally);
    }
    assert!(tally.ok > 1000, "{tally:?}");
}

#[test]
fn pure_garbage() {
    let mut rng = Xoshiro256::seed_from_u64(7);
    let mut tally = Tally::default();
    for _ in 0..20_000 {
        let mut data = vec![0u8; rng.below(48) as usize];
        rng.fill_bytes(&mut data);
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            decode_all(&data, v, 1024, &mut tally);
        }
    }
    assert!(tally.malformed > 10_000, "{tally:?}");
}

fn other(v: ProtocolVersion) -> ProtocolVersion {
    match v {
        ProtocolVersion::V311 => ProtocolVersion::V5,
        ProtocolVersion::V5 => ProtocolVersion::V311,
    }
}
