//! The `steadfast` binary. (Being built: see the CLI issue.)
fn main() {
    eprintln!("steadfast: the command line is not built yet");
    std::process::exit(1);
}
