#[test]
fn repro() {
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let len: usize = std::env::var("LEN").unwrap().parse().unwrap();
    steadfast_proto::fuzz_sm::run_traced(&steadfast_proto::fuzz_sm::seeded_input(seed, len));
}
