//! A bounded, seeded, stable-toolchain run of the same properties as the cargo-fuzz targets in
//! `fuzz/` (see `steadfast_proto_testkit::codec`): about 200,000 inputs, half pseudo-random
//! bytes shaped like packets, half mutated valid encodings.

use std::time::Instant;

use steadfast_proto::rng::{Draw, Rng, Xoshiro256};
use steadfast_proto_testkit::codec::{
    check_chunked, check_decode_roundtrip, mutate, sample_encodings,
};

/// Random bytes, with a first byte that is usually a plausible packet type and flags, and a
/// small plausible remaining length, so that the decoder gets past the fixed header often.
fn shaped_random(rng: &mut Xoshiro256) -> Vec<u8> {
    let len = rng.below(40) as usize;
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    if let Some(first) = data.first_mut() {
        if rng.below(4) != 0 {
            let ptype = 1 + rng.below(15) as u8;
            let flags = match ptype {
                3 => rng.below(16) as u8,
                6 | 8 | 10 => 0b0010,
                _ => 0,
            };
            *first = ptype << 4 | flags;
        }
    }
    if let Some(second) = data.get_mut(1) {
        if rng.below(4) != 0 {
            *second = (len.saturating_sub(2) as u8).min(0x7F);
        }
    }
    data
}

#[test]
fn fuzz_smoke_200k() {
    let start = Instant::now();
    let samples: Vec<Vec<u8>> = sample_encodings()
        .into_iter()
        .map(|(_, w)| w)
        .filter(|w| w.len() <= 512)
        .collect();
    assert!(samples.len() > 30);
    let mut rng = Xoshiro256::seed_from_u64(0xF022_5EED);
    let mut inputs = 0usize;
    for i in 0..100_000u64 {
        let random = shaped_random(&mut rng);
        check_decode_roundtrip(&random);

        let mut mutated = samples[(i % samples.len() as u64) as usize].clone();
        mutate(&mut mutated, &mut rng);
        check_decode_roundtrip(&mutated);

        if i % 8 == 0 {
            // The chunked property: a seed byte, then the stream (two samples, mutated).
            let mut stream = vec![rng.next_u64() as u8];
            stream.extend_from_slice(&mutated);
            stream.extend_from_slice(&samples[rng.below(samples.len() as u64) as usize]);
            check_chunked(&stream);
        }
        inputs += 2;
    }
    assert_eq!(inputs, 200_000);
    eprintln!("fuzz smoke: {inputs} inputs in {:?}", start.elapsed());
}

#[test]
fn fuzz_smoke_unmutated_samples_round_trip() {
    // The seed corpus itself: every sample decodes and round trips through the same checks.
    for (_, w) in sample_encodings() {
        check_decode_roundtrip(&w);
        let mut chunked = vec![0x11];
        chunked.extend_from_slice(&w);
        check_chunked(&chunked);
    }
}
