//! `steadfast chaos`: the fault-injecting proxy for users' own tests, for TCP (MQTT) and, with
//! `--udp`, for UDP (MQTT over QUIC; see `udp.rs`).

mod udp;

use clap::error::ErrorKind;
use clap::{ArgAction, Args};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};
use steadfast_chaos::{Proxy, ProxyHandle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{broadcast, mpsc};

const COMMANDS: &str = "reset | cut | blackhole [DUR] | delay DUR | throttle BPS|off | \
refuse [DUR] | reject N RC | disconnect RC | clear | stats | sleep DUR | quit";

const AFTER_HELP: &str = "\
Commands (one per line on stdin, or the FAULT of --every / --at):
  reset            abort every live connection (TCP RST to the client, upstream closed)
  cut              silently kill every live connection: nothing forwarded, nothing closed,
                   for good (what a NAT rebinding does to TCP); new connections pass
  blackhole [DUR]  forward nothing either way, live and new connections, for DUR
                   (no DUR: until `clear`); sockets stay open, held bytes flow afterwards
  delay DUR        add DUR of latency to every chunk, both directions (`delay 0` ends it)
  throttle BPS     limit each direction to BPS bytes per second (`throttle off` ends it)
  refuse [DUR]     close new connections at once with a TCP RST, for DUR (no DUR: until `clear`)
  reject N RC      answer the next N CONNECTs with a CONNACK carrying reason code RC
                   (MQTT 5 code, decimal or 0x..; mapped for 3.1.1 clients), then close
  disconnect RC    send an MQTT 5 DISCONNECT with RC to every client at a packet boundary,
                   then close (3.1.1 clients are just closed)
  clear            end blackhole, refuse, delay, throttle and pending rejections
  stats            print the counters
  sleep DUR        (stdin only) wait before reading the next command
  quit             stop the proxy and exit 0
Durations are human: 100ms, 2s, 1m, 1h 30m.

With --udp (MQTT over QUIC, or any datagram protocol) the proxy is a UDP relay that maps each
client address to a flow of its own toward the upstream, as a NAT does, and the commands are:
  drop P           drop each datagram, either way, with probability P: 0.05 or 5% (`drop 0`
                   ends it); seeded (--seed), so a run can be repeated
  blackhole [up|down] [DUR]
                   drop every datagram (both ways, or only client->upstream / only
                   upstream->client) for DUR (no DUR: until `clear`); nothing is held back
  delay DUR [JITTER]
                   delay each datagram by DUR plus a random 0..JITTER, both ways (jitter
                   reorders them; `delay 0` ends it)
  rebind           a NAT rebinding: every flow moves to a new source port toward the
                   upstream, the clients stay put (QUIC migrates through it)
  clear, stats, sleep DUR, quit   as above

Output: every applied fault (and its effects: refused connections, rejected CONNECTs,
expiries) is one line on stdout, starting with an RFC 3339 timestamp. The first line
says where the proxy listens (useful with --listen 127.0.0.1:0). A bad command prints
an error line on stderr and the proxy goes on.

End of stdin: with --every or --at given, the proxy keeps running (until a scheduled
`quit`, SIGINT or SIGTERM); without them it exits 0, so a script piped in is a complete
run. --no-stdin ignores stdin and runs until killed.

Examples:
  # A proxy on 1884 in front of the local broker; type faults as you go
  steadfast chaos --listen 127.0.0.1:1884 --upstream 127.0.0.1:1883

  # Drop every connection every 5 s, and black-hole for 3 s at the 10 s mark
  steadfast chaos --listen 127.0.0.1:1884 --upstream 127.0.0.1:1883 \\
      --every 5s reset --at 10s \"blackhole 3s\"

  # Run a script: refuse the next 2 logins as not authorized, then drop everyone
  printf 'reject 2 0x87\\nsleep 5s\\ndisconnect 0x8b\\nsleep 1s\\n' | \\
      steadfast chaos --listen 127.0.0.1:1884 --upstream 127.0.0.1:1883

  # A 30 s soak with a slow, lossy-feeling link
  steadfast chaos --listen 127.0.0.1:1884 --upstream 127.0.0.1:1883 --no-stdin \\
      --at 0s \"delay 200ms\" --every 7s reset --at 30s quit

  # MQTT over QUIC: 5% loss, 40 to 60 ms each way, a NAT rebinding every 10 s
  steadfast chaos --udp --listen 127.0.0.1:14568 --upstream 127.0.0.1:14567 --no-stdin \\
      --at 0s \"drop 5%\" --at 0s \"delay 40ms 20ms\" --every 10s rebind";

/// Arguments of `steadfast chaos`.
#[derive(Args, Debug)]
#[command(after_long_help = AFTER_HELP, after_help = "Commands, output and examples: see --help.")]
pub struct ChaosArgs {
    /// Address to listen on for clients, e.g. 127.0.0.1:1884 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// The broker to forward to, e.g. 127.0.0.1:1883.
    #[arg(long, value_name = "ADDR")]
    pub upstream: String,
    /// Apply FAULT every DUR, the first time DUR after start (repeatable).
    #[arg(long, num_args = 2, value_names = ["DUR", "FAULT"], action = ArgAction::Append)]
    pub every: Vec<String>,
    /// Apply FAULT once, DUR after start (repeatable).
    #[arg(long, num_args = 2, value_names = ["DUR", "FAULT"], action = ArgAction::Append)]
    pub at: Vec<String>,
    /// Do not read commands from stdin; run until killed (or a scheduled quit).
    #[arg(long)]
    pub no_stdin: bool,
    /// Relay UDP datagrams (MQTT over QUIC) instead of TCP connections; the commands are
    /// then drop, blackhole [up|down], delay DUR [JITTER], rebind (see --help).
    #[arg(long)]
    pub udp: bool,
    /// With --udp: the seed of the loss and jitter generator (default: a fixed one).
    #[arg(long, value_name = "N", requires = "udp")]
    pub seed: Option<u64>,
}

/// One command of the fault language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// `reset`
    Reset,
    /// `cut`
    Cut,
    /// `blackhole [DUR]`
    Blackhole(Option<Duration>),
    /// `delay DUR`
    Delay(Duration),
    /// `throttle BPS|off`
    Throttle(Option<u64>),
    /// `refuse [DUR]`
    Refuse(Option<Duration>),
    /// `reject N RC`
    Reject(u32, u8),
    /// `disconnect RC`
    Disconnect(u8),
    /// `clear`
    Clear,
    /// `stats`
    Stats,
    /// `sleep DUR`
    Sleep(Duration),
    /// `quit`
    Quit,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s).map_err(|e| format!("bad duration {s:?} ({e}); try 100ms, 2s, 1m"))
}

fn parse_code(s: &str) -> Result<u8, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse::<u8>(),
    };
    parsed.map_err(|_| format!("bad reason code {s:?}: expected 0..255 or 0x00..0xff"))
}

/// Parses one command line (`None` for a blank line or a `#` comment).
pub fn parse_command(line: &str) -> Result<Option<Cmd>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let opt_dur = |rest: &str| -> Result<Option<Duration>, String> {
        if rest.is_empty() {
            Ok(None)
        } else {
            parse_duration(rest).map(Some)
        }
    };
    let no_args = |cmd: Cmd| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("`{word}` takes no argument"))
        }
    };
    let cmd = match word.to_ascii_lowercase().as_str() {
        "reset" => no_args(Cmd::Reset)?,
        "cut" => no_args(Cmd::Cut)?,
        "drop" | "rebind" => return Err(format!("`{word}` is a UDP fault: start with --udp")),
        "clear" => no_args(Cmd::Clear)?,
        "stats" => no_args(Cmd::Stats)?,
        "quit" | "exit" => no_args(Cmd::Quit)?,
        "blackhole" => Cmd::Blackhole(opt_dur(rest)?),
        "refuse" => Cmd::Refuse(opt_dur(rest)?),
        "delay" | "sleep" if rest.is_empty() => return Err(format!("`{word}` needs a duration")),
        "delay" => match rest {
            "off" => Cmd::Delay(Duration::ZERO),
            _ => Cmd::Delay(parse_duration(rest)?),
        },
        "sleep" => Cmd::Sleep(parse_duration(rest)?),
        "throttle" => match rest {
            "" => return Err("`throttle` needs bytes per second (or `off`)".into()),
            "off" | "0" => Cmd::Throttle(None),
            _ => Cmd::Throttle(Some(rest.parse::<u64>().map_err(|_| {
                format!("bad rate {rest:?}: expected bytes per second, e.g. 10000")
            })?)),
        },
        "reject" => {
            let mut it = rest.split_whitespace();
            let (Some(n), Some(rc), None) = (it.next(), it.next(), it.next()) else {
                return Err("usage: reject N RC (e.g. reject 3 0x87)".into());
            };
            let n = n
                .parse::<u32>()
                .map_err(|_| format!("bad count {n:?}: expected a whole number"))?;
            Cmd::Reject(n, parse_code(rc)?)
        }
        "disconnect" => {
            if rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err("usage: disconnect RC (e.g. disconnect 0x8b)".into());
            }
            Cmd::Disconnect(parse_code(rest)?)
        }
        _ => return Err(format!("unknown command `{word}`")),
    };
    Ok(Some(cmd))
}

fn ts(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

fn usage_error(msg: String) -> ! {
    clap::Error::raw(ErrorKind::InvalidValue, format!("{msg}\n")).exit()
}

fn resolve(what: &str, s: &str) -> SocketAddr {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return a;
    }
    match s.to_socket_addrs() {
        Ok(mut addrs) => match addrs.next() {
            Some(a) => a,
            None => usage_error(format!("--{what} {s:?}: no address")),
        },
        Err(e) => usage_error(format!("--{what} {s:?}: expected HOST:PORT ({e})")),
    }
}

/// A fault language: TCP's [`Cmd`] or UDP's [`udp::UdpCmd`].
trait Lang: Clone + Send + 'static {
    /// One line listing the commands, for error messages.
    const COMMANDS: &'static str;
    /// Parses one command line (`None` for a blank line or a `#` comment).
    fn parse(line: &str) -> Result<Option<Self>, String>;
    /// The pause of a `sleep` command.
    fn sleep(&self) -> Option<Duration>;
}

impl Lang for Cmd {
    const COMMANDS: &'static str = COMMANDS;

    fn parse(line: &str) -> Result<Option<Cmd>, String> {
        parse_command(line)
    }

    fn sleep(&self) -> Option<Duration> {
        match self {
            Cmd::Sleep(d) => Some(*d),
            _ => None,
        }
    }
}

struct Schedule<C> {
    first: Duration,
    every: Option<Duration>,
    cmd: C,
}

fn schedules<C: Lang>(args: &ChaosArgs) -> Vec<Schedule<C>> {
    let mut out = Vec::new();
    for (flag, values, repeat) in [("every", &args.every, true), ("at", &args.at, false)] {
        for pair in values.chunks(2) {
            let [dur, fault] = pair else {
                usage_error(format!("--{flag} needs DUR and FAULT"));
            };
            let d = parse_duration(dur).unwrap_or_else(|e| usage_error(format!("--{flag}: {e}")));
            if repeat && d.is_zero() {
                usage_error(format!("--{flag}: the period must be more than 0"));
            }
            let cmd = match C::parse(fault) {
                Ok(Some(c)) if c.sleep().is_some() => {
                    usage_error(format!("--{flag}: `sleep` is for stdin"))
                }
                Ok(Some(c)) => c,
                Ok(None) => usage_error(format!("--{flag} {dur}: empty FAULT")),
                Err(e) => usage_error(format!(
                    "--{flag} {dur} {fault:?}: {e}\n  commands: {}",
                    C::COMMANDS
                )),
            };
            out.push(Schedule {
                first: d,
                every: repeat.then_some(d),
                cmd,
            });
        }
    }
    out
}

/// Runs `steadfast chaos`.
pub fn run(args: ChaosArgs) -> ExitCode {
    let listen = resolve("listen", &args.listen);
    let upstream = resolve("upstream", &args.upstream);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("steadfast chaos: cannot start the runtime: {e}");
            return ExitCode::from(crate::exit::RUNTIME);
        }
    };
    let code = if args.udp {
        let plan = schedules::<udp::UdpCmd>(&args);
        rt.block_on(udp::serve(
            listen,
            upstream,
            plan,
            !args.no_stdin,
            args.seed,
        ))
    } else {
        let plan = schedules::<Cmd>(&args);
        rt.block_on(serve(listen, upstream, plan, !args.no_stdin))
    };
    // The stdin reader sits in a blocking read: do not wait for it.
    rt.shutdown_background();
    code
}

enum Input<C> {
    Line(String),
    Scheduled(C),
    StdinEof,
    Signal(&'static str),
}

async fn serve(
    listen: SocketAddr,
    upstream: SocketAddr,
    plan: Vec<Schedule<Cmd>>,
    use_stdin: bool,
) -> ExitCode {
    let proxy = match Proxy::start(listen, upstream).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("steadfast chaos: cannot listen on {listen}: {e}");
            return ExitCode::from(crate::exit::RUNTIME);
        }
    };
    let h = proxy.handle();
    let events = h.subscribe();
    println!(
        "{} listening on {} forwarding to {}",
        ts(SystemTime::now()),
        proxy.local_addr(),
        upstream
    );
    let code = command_loop(events, plan, use_stdin, |cmd: &Cmd| {
        if *cmd == Cmd::Stats {
            let s = h.stats();
            println!(
                "{} stats accepted={} live={} connects={} refused={} rejected={} bytes_up={} bytes_down={}",
                ts(SystemTime::now()),
                s.accepted,
                s.live,
                s.connects_seen,
                s.refused,
                s.rejected,
                s.bytes_up,
                s.bytes_down
            );
            return false;
        }
        apply(&h, cmd)
    })
    .await;
    proxy.shutdown().await;
    ExitCode::from(code)
}

/// Reads commands from the schedule, stdin and signals, applies each with `apply` (true:
/// quit) and prints the proxy's log lines as they come; returns the exit code.
async fn command_loop<C: Lang>(
    mut events: broadcast::Receiver<steadfast_chaos::FaultRecord>,
    plan: Vec<Schedule<C>>,
    use_stdin: bool,
    mut apply: impl FnMut(&C) -> bool,
) -> u8 {
    let (tx, mut rx) = mpsc::unbounded_channel::<Input<C>>();
    let scheduled = !plan.is_empty();
    for s in plan {
        let tx = tx.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + s.first;
            tokio::time::sleep_until(start).await;
            if tx.send(Input::Scheduled(s.cmd.clone())).is_err() {
                return;
            }
            if let Some(period) = s.every {
                let mut tick = tokio::time::interval_at(start + period, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if tx.send(Input::Scheduled(s.cmd.clone())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    if use_stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        // `sleep` pauses the reading of stdin, nothing else.
                        if let Some(d) = C::parse(&line).ok().flatten().and_then(|c| c.sleep()) {
                            tokio::time::sleep(d).await;
                            continue;
                        }
                        if tx.send(Input::Line(line)).is_err() {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => {
                        let _ = tx.send(Input::StdinEof);
                        return;
                    }
                }
            }
        });
    }
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            let name = wait_signal().await;
            let _ = tx.send(Input::Signal(name));
        });
    }
    drop(tx);

    loop {
        let input = tokio::select! {
            i = rx.recv() => i,
            ev = events.recv() => {
                print_event(ev);
                continue;
            }
        };
        let cmd = match input {
            None => break crate::exit::OK,
            Some(Input::StdinEof) => {
                if scheduled {
                    continue;
                }
                break crate::exit::OK;
            }
            Some(Input::Signal(name)) => {
                println!("{} {name}: shutting down", ts(SystemTime::now()));
                break crate::exit::OK;
            }
            Some(Input::Line(line)) => match C::parse(&line) {
                Ok(Some(cmd)) => cmd,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("error: {e} in {:?}; commands: {}", line.trim(), C::COMMANDS);
                    continue;
                }
            },
            Some(Input::Scheduled(cmd)) => cmd,
        };
        // What a command did is printed before anything else happens (and a stats line
        // after the faults it follows).
        drain_events(&mut events);
        let quit = apply(&cmd);
        drain_events(&mut events);
        if quit {
            break crate::exit::OK;
        }
    }
}

/// Applies a command; true for `quit`.
fn apply(h: &ProxyHandle, cmd: &Cmd) -> bool {
    match *cmd {
        Cmd::Reset => {
            h.reset();
        }
        Cmd::Cut => {
            h.cut();
        }
        Cmd::Blackhole(d) => h.blackhole(d),
        Cmd::Delay(d) => h.delay(d),
        Cmd::Throttle(r) => h.throttle(r),
        Cmd::Refuse(d) => h.refuse(d),
        Cmd::Reject(n, rc) => h.reject_next_connects(n, rc),
        Cmd::Disconnect(rc) => {
            h.send_disconnect(rc);
        }
        Cmd::Clear => h.clear(),
        Cmd::Stats | Cmd::Sleep(_) => {}
        Cmd::Quit => {
            println!("{} quit", ts(SystemTime::now()));
            return true;
        }
    }
    false
}

fn print_event(ev: Result<steadfast_chaos::FaultRecord, broadcast::error::RecvError>) {
    match ev {
        Ok(rec) => println!("{} {}", ts(rec.at), rec.fault),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            println!("{} ({n} log lines dropped)", ts(SystemTime::now()))
        }
        Err(broadcast::error::RecvError::Closed) => {}
    }
}

fn drain_events(events: &mut broadcast::Receiver<steadfast_chaos::FaultRecord>) {
    loop {
        match events.try_recv() {
            Ok(rec) => print_event(Ok(rec)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                print_event(Err(broadcast::error::RecvError::Lagged(n)))
            }
            Err(_) => return,
        }
    }
}

async fn wait_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_language() {
        let ok = |s: &str| parse_command(s).unwrap().unwrap();
        assert_eq!(ok("reset"), Cmd::Reset);
        assert_eq!(ok("  RESET  "), Cmd::Reset);
        assert_eq!(ok("cut"), Cmd::Cut);
        assert_eq!(
            ok("blackhole 3s"),
            Cmd::Blackhole(Some(Duration::from_secs(3)))
        );
        assert_eq!(ok("blackhole"), Cmd::Blackhole(None));
        assert_eq!(ok("delay 100ms"), Cmd::Delay(Duration::from_millis(100)));
        assert_eq!(ok("delay 0"), Cmd::Delay(Duration::ZERO));
        assert_eq!(ok("delay 1m 30s"), Cmd::Delay(Duration::from_secs(90)));
        assert_eq!(ok("throttle 1000"), Cmd::Throttle(Some(1000)));
        assert_eq!(ok("throttle off"), Cmd::Throttle(None));
        assert_eq!(ok("refuse 2s"), Cmd::Refuse(Some(Duration::from_secs(2))));
        assert_eq!(ok("reject 3 0x87"), Cmd::Reject(3, 0x87));
        assert_eq!(ok("reject 1 135"), Cmd::Reject(1, 135));
        assert_eq!(ok("disconnect 0x8B"), Cmd::Disconnect(0x8b));
        assert_eq!(ok("clear"), Cmd::Clear);
        assert_eq!(ok("stats"), Cmd::Stats);
        assert_eq!(ok("sleep 1s"), Cmd::Sleep(Duration::from_secs(1)));
        assert_eq!(ok("quit"), Cmd::Quit);
        assert_eq!(parse_command("").unwrap(), None);
        assert_eq!(parse_command("# comment").unwrap(), None);
        for bad in [
            "explode",
            "reset now",
            "blackhole 3x",
            "delay",
            "throttle fast",
            "reject 1",
            "reject x 0x87",
            "reject 1 0x187",
            "reject 1 2 3",
            "disconnect",
            "disconnect 256",
            "sleep",
            "cut now",
            "drop 5%",
            "rebind",
        ] {
            assert!(parse_command(bad).is_err(), "{bad}");
        }
    }
}
