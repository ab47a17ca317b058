//! The `steadfast` binary: an MQTT client tool that stays connected, and a
//! fault-injecting proxy for testing clients.
//!
//! One file per subcommand. `-h` means `--host` (like mosquitto_pub and
//! mosquitto_sub), so help is `--help` only; `-V` is left free for
//! `--protocol-version`, so the version is `--version` only.
//!
//! Feature `demo` (on by default) builds `steadfast demo` and the hidden `steadfast broker`
//! with their embedded broker; without it, `steadfast demo` says how to get it.

use clap::{ArgAction, Parser, Subcommand};
use std::process::ExitCode;

mod bench;
#[cfg(feature = "demo")]
mod broker;
mod chaos;
mod conn;
mod debug;
#[cfg(feature = "demo")]
mod demo;
mod events;
mod generate;
mod output;
mod pub_cmd;
mod rr;
mod sub;

/// Exit codes shared by every subcommand (see the CLI contract).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Runtime error.
    pub const RUNTIME: u8 = 1;
    /// Usage error (clap exits with it too).
    #[allow(dead_code)] // clap exits with it
    pub const USAGE: u8 = 2;
    /// Fatal refusal by the broker.
    #[allow(dead_code)] // for pub / sub
    pub const REFUSED: u8 = 3;
    /// Dormant after `--max-attempts`.
    #[allow(dead_code)] // for pub / sub
    pub const DORMANT: u8 = 4;
}

/// steadfast: an MQTT 3.1.1 / 5.0 client that stays connected.
#[derive(Parser, Debug)]
#[command(
    name = "steadfast",
    version,
    disable_help_flag = true,
    disable_version_flag = true,
    after_help = "Each subcommand has its own --help. Reference: docs/cli.md; man pages: \
                  `steadfast man --help`; shell completions: `steadfast completions --help`."
)]
pub struct Cli {
    /// Print help (--help only: -h means --host).
    #[arg(long, action = ArgAction::Help, global = true)]
    help: Option<bool>,
    /// Print version.
    #[arg(long, action = ArgAction::Version)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish messages: one, each line of stdin, or generated ones; across outages.
    Pub(pub_cmd::PubArgs),
    /// Subscribe and print messages; across outages.
    Sub(sub::SubArgs),
    /// Send one MQTT 5 request and print its response (like mosquitto_rr).
    Rr(rr::RrArgs),
    /// Measure throughput and latency through a broker, or a fleet of idle connections and
    /// its reconnect storm after a broker crash.
    Bench(bench::BenchArgs),
    /// Run an embedded broker, a fault proxy, a publisher and a subscriber; inject four faults and watch them recover.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Not in this build (made without the `demo` feature); run it for how to get it.
    #[cfg(not(feature = "demo"))]
    Demo(NoDemoArgs),
    /// Run the fault-injecting proxy in front of a broker.
    Chaos(chaos::ChaosArgs),
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(generate::CompletionsArgs),
    /// Print the man page (roff); with --dir, write one page per subcommand too.
    Man(generate::ManArgs),
    /// Run the demo's embedded broker alone (for interoperability tests; not a supported
    /// product: no TLS, no authentication, sessions in memory).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    Broker(broker::BrokerArgs),
}

/// `steadfast demo` in a build without the `demo` feature: any arguments, one message.
#[cfg(not(feature = "demo"))]
#[derive(clap::Args, Debug)]
struct NoDemoArgs {
    /// Ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

#[cfg(not(feature = "demo"))]
fn no_demo() -> ExitCode {
    eprintln!(
        "steadfast: this build has no `demo` (it was built without the `demo` feature, which \
         embeds the demo's broker). Build it with the feature, which is on by default: \
         `cargo install steadfast-cli`, or in the source tree `cargo run -p steadfast-cli -- demo`."
    );
    ExitCode::from(exit::RUNTIME)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        Err(e) => {
            // A usage error is one line (clap's first), exit 2.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("error: bad arguments");
            eprintln!("{first} (see --help)");
            return ExitCode::from(exit::USAGE);
        }
    };
    match cli.command {
        Command::Pub(args) => pub_cmd::run(args),
        Command::Sub(args) => sub::run(args),
        Command::Rr(args) => rr::run(args),
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args),
        #[cfg(not(feature = "demo"))]
        Command::Demo(_) => no_demo(),
        Command::Chaos(args) => chaos::run(args),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
        #[cfg(feature = "demo")]
        Command::Broker(args) => broker::run(args),
    }
}
