#[test]
fn heavy() {
    let start: u64 = std::env::var("START").unwrap_or("0".into()).parse().unwrap();
    let n: u64 = std::env::var("N").unwrap_or("100000".into()).parse().unwrap();
    for len in [64usize, 200, 800] {
        for seed in start..start + n {
            let data = steadfast_proto::fuzz_sm::seeded_input(seed, len);
            if std::panic::catch_unwind(|| steadfast_proto::fuzz_sm::run(&data)).is_err() {
                panic!("SEED={seed} LEN={len}");
            }
        }
    }
}
