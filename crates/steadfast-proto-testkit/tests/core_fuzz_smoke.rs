//! A bounded, seeded run of the state-machine fuzz interpreter (`steadfast_proto_testkit::fuzz_sm`):
//! the same operations and invariants as `fuzz/fuzz_targets/state_machine.rs`, on ~20,000
//! pseudo-random operation sequences, in a few seconds.

use steadfast_proto_testkit::fuzz_sm::{run, seeded_input};

fn smoke(seeds: std::ops::Range<u64>, len: usize) {
    for seed in seeds {
        let data = seeded_input(seed, len);
        let r = std::panic::catch_unwind(|| run(&data));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("seed {seed} (len {len}) broke an invariant: {msg}\ninput: {data:02x?}");
        }
    }
}

#[test]
fn short_sequences() {
    smoke(0..12_000, 96);
}

#[test]
fn long_sequences() {
    smoke(1_000_000..1_008_000, 480);
}

#[test]
fn edge_inputs() {
    run(&[]);
    run(&[0]);
    run(&[0xFF; 64]);
    run(&[0x00; 512]);
    run(&(0..=255).collect::<Vec<u8>>());
}

// To replay a failing input with a trace of every call, see examples/fuzz_sm_repro.rs.
