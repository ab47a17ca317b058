#[test]
fn stats() {
    for seed in 0..300u64 {
        steadfast_proto::fuzz_sm::run_traced(&steadfast_proto::fuzz_sm::seeded_input(seed, 480));
    }
}
