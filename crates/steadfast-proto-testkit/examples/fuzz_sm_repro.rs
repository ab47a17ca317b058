//! Replays a state-machine fuzz input with a trace of every call.
//!
//! ```sh
//! cargo run -p steadfast-proto-testkit --example fuzz_sm_repro -- path/to/crash-file
//! cargo run -p steadfast-proto-testkit --example fuzz_sm_repro -- --seed 49 --len 96
//! ```
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let data = match args.as_slice() {
        [flag, seed, rest @ ..] if flag == "--seed" => {
            let len = match rest {
                [l, n] if l == "--len" => n.parse().unwrap_or(96),
                _ => 96,
            };
            match seed.parse() {
                Ok(seed) => steadfast_proto_testkit::fuzz_sm::seeded_input(seed, len),
                Err(_) => {
                    eprintln!("bad seed {seed:?}");
                    return ExitCode::from(2);
                }
            }
        }
        [path] => match std::fs::read(path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("cannot read {path}: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: fuzz_sm_repro FILE | --seed N [--len N]");
            return ExitCode::from(2);
        }
    };
    steadfast_proto_testkit::fuzz_sm::run_traced(&data);
    ExitCode::SUCCESS
}
