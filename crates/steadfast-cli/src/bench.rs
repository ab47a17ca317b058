//! `steadfast bench`: throughput and latency of publishers and subscribers through a broker,
//! or (`--clients N`) a fleet of idle connections: memory per connection, fleet connect time,
//! and a reconnect storm after a broker crash, compared across backoff policies.
//!
//! - [`throughput`]: `--publishers` x `--subscribers` in one process; every payload carries
//!   the publisher, a sequence number and a send timestamp (monotonic ns since a shared start),
//!   so loss, duplicates and latency come from the payloads themselves.
//! - [`fleet`]: N idle clients; the broker (`--spawn-broker`) is killed with SIGKILL and
//!   restarted after `--outage`, and fault proxies in front of it record every CONNECT.
//! - [`shard`]: the proxy shard, a child process of the bench (each process may hold only
//!   `RLIMIT_NOFILE` sockets, and a proxied connection costs two).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::conn::{parse_duration, parse_qos, usage_exit, ConnArgs, UsageError};

mod fleet;
mod plot;
mod shard;
mod sim;
mod throughput;
mod util;

const AFTER_HELP: &str = "\
Throughput mode (the default): --publishers clients publish --count messages in all (split
evenly) to <topic>/<run>/<publisher>; --subscribers clients subscribe to <topic>/<run>/# and
each should receive every message. elapsed_s runs from the first publish to the last message
received; msgs_per_s = messages received / elapsed_s. Latency is measured per message from a
timestamp in its payload. With --json the last stdout line is one JSON object:
  {\"qos\",\"count\",\"payload_size\",\"publishers\",\"subscribers\",\"elapsed_s\",\"msgs_per_s\",
   \"sent\",\"received\",\"expected\",\"lost\",\"duplicates\",\"p50_us\",\"p99_us\",\"p999_us\",\"max_us\"}

Fleet mode (--clients N): N idle clients, each subscribed to one filter, report memory per
connection (VmRSS delta / N) and the fleet's connect time. With --spawn-broker the bench runs
its own Mosquitto, puts fault proxies in front of it, and for each --policy (default: all three,
one fleet after the other in the same run) kills the broker (SIGKILL), restarts it after
--outage on the same port, and reports every CONNECT the broker side saw: the peak per second
(in any one-second window) against the ideal uniform spread N / --reconnect-max, and the time
until the whole fleet is back and resubscribed.
  default  the --backoff/--jitter flags with --reconnect-min/--reconnect-max (by default the
           library's: exponential, rising decorrelated jitter)
  none     no backoff: reconnect at once (Constant 0)
  fixed    a fixed interval, --fixed-interval (Constant; what a hand-written loop does)
  rising   exponential, rising decorrelated jitter (the library's default_policy())
  uniform  uniform random in [--reconnect-min, --reconnect-max] on every attempt
  full     exponential with full jitter

Simulated fleet (--simulate N): N real connection cores on one virtual clock against a broker
model, no sockets: the fleet connects and subscribes, the broker dies (EOF, connects refused),
comes back after --outage and admits at most --admit-rate CONNECTs in any one-second window,
refusing the rest (MQTT 5: CONNACK 0x9F, then close; 3.1.1: close). For each --policy (default:
all six) it reports attempts and refusals per client, the time until 50%, 99% and 100% of the
fleet is back (resubscribed), and the peak attempts per second against R; --storm-json and
--storm-svg as above, --compare-json to draw a real run's curves next to the simulated ones.

Examples:
  steadfast bench --spawn-broker -q 1 --count 200000 --payload-size 64
  steadfast bench -L mqtt://127.0.0.1:1884 --publishers 4 --subscribers 2 -q 2 --json
  steadfast bench --spawn-broker --clients 10000 --outage 5s --reconnect-max 10s \\
      --storm-json storm.json --storm-svg docs/img/storm.svg
  steadfast bench --simulate 1000000 --admit-rate 10000 --outage 60s --storm-svg sim.svg";

/// Which backoff policy a fleet uses (`--policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyKind {
    /// The --backoff / --jitter flags (by default the library's: exponential with rising
    /// decorrelated jitter).
    Default,
    /// No backoff: reconnect at once.
    None,
    /// A fixed interval (--fixed-interval).
    Fixed,
    /// Uniform random in [--reconnect-min, --reconnect-max] on every attempt (Paho's style).
    Uniform,
    /// Exponential with full jitter: uniform in [min, min x 2^(attempt - 1)], capped at max.
    Full,
    /// Exponential with rising decorrelated jitter: uniform in [prev, 3 x prev], capped at max
    /// (the first draw as the default's, then never shrinking).
    Rising,
}

impl PolicyKind {
    /// Every policy, in the order the simulator runs them.
    pub const ALL: [PolicyKind; 6] = [
        PolicyKind::Default,
        PolicyKind::Rising,
        PolicyKind::Uniform,
        PolicyKind::Full,
        PolicyKind::Fixed,
        PolicyKind::None,
    ];

    fn name(self) -> &'static str {
        match self {
            PolicyKind::Default => "default",
            PolicyKind::None => "none",
            PolicyKind::Fixed => "fixed",
            PolicyKind::Uniform => "uniform",
            PolicyKind::Full => "full",
            PolicyKind::Rising => "rising",
        }
    }
}

/// Arguments of `steadfast bench`.
#[derive(Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Topic prefix.
    #[arg(
        short = 't',
        long = "topic",
        value_name = "PREFIX",
        default_value = "steadfast/bench"
    )]
    pub topic: String,
    /// QoS: 0, 1 or 2.
    #[arg(short = 'q', long = "qos", value_name = "QOS", default_value = "0", value_parser = parse_qos)]
    pub qos: steadfast::QoS,
    /// Messages to publish in all (split among the publishers).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub count: u64,
    /// Payload size in bytes (at least 20: publisher, sequence number and timestamp).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    pub payload_size: usize,
    /// Publishing clients.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub publishers: usize,
    /// Subscribing clients (each receives every message).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub subscribers: usize,
    /// Messages per second in all (0: as fast as possible).
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub rate: f64,
    /// Publishes awaiting their acknowledgement per publisher, at most.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub window: usize,
    /// Give up when no message arrived for this long.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Print the result as one JSON object on the last stdout line.
    #[arg(long)]
    pub json: bool,
    /// Start a private Mosquitto on a free loopback port for the run (and, in fleet mode,
    /// kill and restart it for the reconnect storm).
    #[arg(long)]
    pub spawn_broker: bool,

    /// Fleet mode: open N idle connections.
    #[arg(long, value_name = "N", help_heading = "Fleet")]
    pub clients: Option<usize>,
    /// How long the broker stays down (needs --spawn-broker; 0 skips the storm).
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration,
          help_heading = "Fleet")]
    pub outage: Duration,
    /// Backoff policies to compare, one fleet each (repeatable) [default: default, none, fixed].
    #[arg(long, value_name = "POLICY", value_enum, help_heading = "Fleet")]
    pub policy: Vec<PolicyKind>,
    /// The interval of --policy fixed.
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration,
          help_heading = "Fleet")]
    pub fixed_interval: Duration,
    /// Connection attempts in progress at once while the fleet is being opened.
    #[arg(long, value_name = "N", default_value_t = 500, help_heading = "Fleet")]
    pub connect_concurrency: usize,
    /// How long to wait for the fleet to connect, and again to recover after the restart.
    #[arg(long, value_name = "DUR", default_value = "180s", value_parser = parse_duration,
          help_heading = "Fleet")]
    pub fleet_timeout: Duration,
    /// Write the full storm report (per-second curves included) as JSON to FILE.
    #[arg(long, value_name = "FILE", help_heading = "Fleet")]
    pub storm_json: Option<std::path::PathBuf>,
    /// Render the connection attempts per second of each policy as an SVG plot to FILE.
    #[arg(long, value_name = "FILE", help_heading = "Fleet")]
    pub storm_svg: Option<std::path::PathBuf>,

    /// Simulated fleet flags (boxed: they are rarely used, and keep the command small).
    #[command(flatten)]
    pub sim: Box<SimArgs>,
    /// Internal: run as a proxy shard in front of ADDR (a child process of the bench).
    #[arg(long, value_name = "ADDR", hide = true)]
    pub proxy_shard: Option<std::net::SocketAddr>,
    /// Connection flags (listed last in --help, under their own heading).
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Flags of `steadfast bench --simulate N`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Simulate a fleet of N clients on virtual time instead of opening sockets: N real
    /// connection cores against a broker model (see "Simulated fleet" below).
    #[arg(
        long,
        value_name = "N",
        help_heading = "Simulated fleet",
        conflicts_with = "clients"
    )]
    pub simulate: Option<usize>,
    /// After the restart the simulated broker admits at most R CONNECTs in any one-second
    /// window and refuses the rest (0: no limit).
    #[arg(
        long,
        value_name = "R",
        default_value_t = 0,
        help_heading = "Simulated fleet"
    )]
    pub admit_rate: u32,
    /// From a CONNECT's arrival at the simulated broker to its CONNACK (or refusal).
    #[arg(long, value_name = "DUR", default_value = "5ms", value_parser = parse_duration,
          help_heading = "Simulated fleet")]
    pub connack_latency: Duration,
    /// The simulated network's round trip (a TCP connect takes one).
    #[arg(long, value_name = "DUR", default_value = "1ms", value_parser = parse_duration,
          help_heading = "Simulated fleet")]
    pub rtt: Duration,
    /// Seed of the simulated clients' generators.
    #[arg(
        long,
        value_name = "SEED",
        default_value_t = 1,
        help_heading = "Simulated fleet"
    )]
    pub sim_seed: u64,
    /// Stop a policy's run once the fleet made this many attempts per client on average.
    #[arg(
        long,
        value_name = "A",
        default_value_t = 40.0,
        help_heading = "Simulated fleet"
    )]
    pub sim_max_attempts: f64,
    /// How slow-down refusals (0x89, 0x97, 0x9F) raise the delay: `core` (the library's rule)
    /// or `jittered` (the same floors, drawn over [floor, 2 x floor]; applied by the simulator).
    #[arg(long, value_name = "RULE", default_value = "core", value_parser = parse_floor,
          help_heading = "Simulated fleet")]
    pub slow_floor: sim::FloorRule,
    /// A real storm's --storm-json to draw next to the simulated curves in --storm-svg.
    #[arg(long, value_name = "FILE", help_heading = "Simulated fleet")]
    pub compare_json: Option<std::path::PathBuf>,
}

/// Runs `steadfast bench`.
pub fn run(args: BenchArgs) -> ExitCode {
    if let Some(upstream) = args.proxy_shard {
        return shard::run(upstream);
    }
    if let Err(e) = check(&args) {
        return usage_exit(e);
    }
    if let Some(n) = args.sim.simulate {
        return match sim::run(&args, n) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("steadfast bench: {e}");
                ExitCode::from(crate::exit::RUNTIME)
            }
        };
    }
    util::raise_nofile_limit();
    let rt = match crate::conn::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("steadfast bench: cannot start the runtime: {e}");
            return ExitCode::from(crate::exit::RUNTIME);
        }
    };
    let result = match args.clients {
        Some(n) => rt.block_on(fleet::run(&args, n)),
        None => rt.block_on(throughput::run(&args)),
    };
    // Fleet mode leaves many driver tasks winding down; do not wait for them.
    rt.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("steadfast bench: {e}");
            ExitCode::from(crate::exit::RUNTIME)
        }
    }
}

fn parse_floor(s: &str) -> Result<sim::FloorRule, String> {
    match s {
        "core" => Ok(sim::FloorRule::Core),
        "jittered" => Ok(sim::FloorRule::Jittered),
        _ => Err(format!(
            "unknown slow-down floor rule {s:?} (core, jittered)"
        )),
    }
}

fn check(args: &BenchArgs) -> Result<(), UsageError> {
    // The connection flags are checked (and the builder made) once up front.
    args.conn.builder()?;
    if args.payload_size < util::HEADER_LEN {
        return Err(UsageError(format!(
            "--payload-size must be at least {} (publisher, sequence number, timestamp)",
            util::HEADER_LEN
        )));
    }
    if args.publishers == 0 || args.subscribers == 0 {
        return Err(UsageError(
            "--publishers and --subscribers must be at least 1".into(),
        ));
    }
    if args.count == 0 {
        return Err(UsageError("--count must be at least 1".into()));
    }
    if args.window == 0 {
        return Err(UsageError("--window must be at least 1".into()));
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err(UsageError(
            "--rate must be a number of messages per second (0: no limit)".into(),
        ));
    }
    if args.clients == Some(0) {
        return Err(UsageError("--clients must be at least 1".into()));
    }
    if args.sim.simulate == Some(0) {
        return Err(UsageError("--simulate must be at least 1".into()));
    }
    if args.sim.simulate.is_some() && args.sim.rtt.is_zero() {
        return Err(UsageError(
            "--rtt must be above zero (an attempt takes time)".into(),
        ));
    }
    if !(args.sim.sim_max_attempts.is_finite() && args.sim.sim_max_attempts >= 1.0) {
        return Err(UsageError("--sim-max-attempts must be at least 1".into()));
    }
    if args.connect_concurrency == 0 {
        return Err(UsageError(
            "--connect-concurrency must be at least 1".into(),
        ));
    }
    Ok(())
}
