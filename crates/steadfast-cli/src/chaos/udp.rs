//! `steadfast chaos --udp`: the UDP relay (`steadfast_chaos::udp`) for MQTT over QUIC, with its
//! own fault language: drop, blackhole [up|down], delay with jitter, rebind.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use steadfast_chaos::udp::{Direction, UdpProxy, UdpProxyHandle};

use super::{command_loop, parse_duration, ts, Lang, Schedule};

const COMMANDS: &str = "drop P | blackhole [up|down] [DUR] | delay DUR [JITTER] | rebind | \
clear | stats | sleep DUR | quit";

/// One command of the UDP fault language.
#[derive(Debug, Clone, PartialEq)]
pub enum UdpCmd {
    /// `drop P` (a probability, 0 to 1).
    Drop(f64),
    /// `blackhole [up|down|both] [DUR]`
    Blackhole(Direction, Option<Duration>),
    /// `delay DUR [JITTER]`
    Delay(Duration, Duration),
    /// `rebind`
    Rebind,
    /// `clear`
    Clear,
    /// `stats`
    Stats,
    /// `sleep DUR`
    Sleep(Duration),
    /// `quit`
    Quit,
}

/// `0.05`, `5%`, `0`: a probability from 0 to 1.
fn parse_rate(s: &str) -> Result<f64, String> {
    let bad = || format!("bad loss {s:?}: expected 0..1 or a percentage, e.g. 0.05 or 5%");
    let p = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..=1.0).contains(&p) {
        return Err(bad());
    }
    Ok(p)
}

/// Parses one command line (`None` for a blank line or a `#` comment).
pub fn parse_udp_command(line: &str) -> Result<Option<UdpCmd>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    let no_args = |cmd: UdpCmd| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("`{word}` takes no argument"))
        }
    };
    let cmd = match word.to_ascii_lowercase().as_str() {
        "rebind" => no_args(UdpCmd::Rebind)?,
        "clear" => no_args(UdpCmd::Clear)?,
        "stats" => no_args(UdpCmd::Stats)?,
        "quit" | "exit" => no_args(UdpCmd::Quit)?,
        "drop" => match rest {
            "" => return Err("`drop` needs a loss, e.g. drop 5% (drop 0 ends it)".into()),
            "off" => UdpCmd::Drop(0.0),
            _ => UdpCmd::Drop(parse_rate(rest)?),
        },
        "blackhole" => {
            let (dir, dur) = match rest.split_once(char::is_whitespace) {
                Some((w, d)) => (w, d.trim()),
                None => (rest, ""),
            };
            let (dir, dur) = match dir.to_ascii_lowercase().as_str() {
                "up" => (Direction::Up, dur),
                "down" => (Direction::Down, dur),
                "both" => (Direction::Both, dur),
                // No direction: the whole rest is the duration (or nothing).
                _ => (Direction::Both, rest),
            };
            let dur = if dur.is_empty() {
                None
            } else {
                Some(parse_duration(dur)?)
            };
            UdpCmd::Blackhole(dir, dur)
        }
        "delay" | "sleep" if rest.is_empty() => return Err(format!("`{word}` needs a duration")),
        "delay" => {
            let mut it = rest.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some("off"), None, None) => UdpCmd::Delay(Duration::ZERO, Duration::ZERO),
                (Some(d), None, None) => UdpCmd::Delay(parse_duration(d)?, Duration::ZERO),
                (Some(d), Some(j), None) => UdpCmd::Delay(parse_duration(d)?, parse_duration(j)?),
                _ => return Err("usage: delay DUR [JITTER] (e.g. delay 40ms 10ms)".into()),
            }
        }
        "sleep" => UdpCmd::Sleep(parse_duration(rest)?),
        "reset" | "cut" | "throttle" | "refuse" | "reject" | "disconnect" => {
            return Err(format!(
                "`{word}` is a TCP fault; over UDP there is no connection to {word}"
            ))
        }
        _ => return Err(format!("unknown command `{word}`")),
    };
    Ok(Some(cmd))
}

impl Lang for UdpCmd {
    const COMMANDS: &'static str = COMMANDS;

    fn parse(line: &str) -> Result<Option<UdpCmd>, String> {
        parse_udp_command(line)
    }

    fn sleep(&self) -> Option<Duration> {
        match self {
            UdpCmd::Sleep(d) => Some(*d),
            _ => None,
        }
    }
}

/// Runs the UDP relay until `quit`, the end of stdin (without a schedule) or a signal.
pub(super) async fn serve(
    listen: SocketAddr,
    upstream: SocketAddr,
    plan: Vec<Schedule<UdpCmd>>,
    use_stdin: bool,
    seed: Option<u64>,
) -> ExitCode {
    let proxy = match UdpProxy::start(listen, upstream).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("steadfast chaos: cannot listen on UDP {listen}: {e}");
            return ExitCode::from(crate::exit::RUNTIME);
        }
    };
    let h = proxy.handle();
    let events = h.subscribe();
    println!(
        "{} listening on {} (UDP) forwarding to {}",
        ts(SystemTime::now()),
        proxy.local_addr(),
        upstream
    );
    if let Some(seed) = seed {
        h.seed(seed);
    }
    let code = command_loop(events, plan, use_stdin, |cmd| apply(&h, cmd)).await;
    drop(proxy);
    ExitCode::from(code)
}

/// Applies a command; true for `quit`.
fn apply(h: &UdpProxyHandle, cmd: &UdpCmd) -> bool {
    match *cmd {
        UdpCmd::Drop(p) => h.drop_rate(p),
        UdpCmd::Blackhole(dir, d) => h.blackhole(dir, d),
        UdpCmd::Delay(d, j) => h.delay(d, j),
        UdpCmd::Rebind => {
            if let Err(e) = h.rebind() {
                eprintln!("error: rebind failed: {e}");
            }
        }
        UdpCmd::Clear => h.clear(),
        UdpCmd::Stats => {
            let s = h.stats();
            println!(
                "{} stats flows={} flows_opened={} rebinds={} datagrams_up={} datagrams_down={} \
dropped_up={} dropped_down={} bytes_up={} bytes_down={}",
                ts(SystemTime::now()),
                s.flows,
                s.flows_opened,
                s.rebinds,
                s.datagrams_up,
                s.datagrams_down,
                s.dropped_up,
                s.dropped_down,
                s.bytes_up,
                s.bytes_down
            );
        }
        UdpCmd::Sleep(_) => {}
        UdpCmd::Quit => {
            println!("{} quit", ts(SystemTime::now()));
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_udp_command_language() {
        let ok = |s: &str| parse_udp_command(s).unwrap().unwrap();
        assert_eq!(ok("drop 5%"), UdpCmd::Drop(0.05));
        assert_eq!(ok("drop 0.25"), UdpCmd::Drop(0.25));
        assert_eq!(ok("drop 0"), UdpCmd::Drop(0.0));
        assert_eq!(ok("DROP off"), UdpCmd::Drop(0.0));
        assert_eq!(ok("blackhole"), UdpCmd::Blackhole(Direction::Both, None));
        assert_eq!(
            ok("blackhole 3s"),
            UdpCmd::Blackhole(Direction::Both, Some(Duration::from_secs(3)))
        );
        assert_eq!(ok("blackhole up"), UdpCmd::Blackhole(Direction::Up, None));
        assert_eq!(
            ok("blackhole down 1m 30s"),
            UdpCmd::Blackhole(Direction::Down, Some(Duration::from_secs(90)))
        );
        assert_eq!(
            ok("delay 40ms"),
            UdpCmd::Delay(Duration::from_millis(40), Duration::ZERO)
        );
        assert_eq!(
            ok("delay 40ms 10ms"),
            UdpCmd::Delay(Duration::from_millis(40), Duration::from_millis(10))
        );
        assert_eq!(ok("delay 0"), UdpCmd::Delay(Duration::ZERO, Duration::ZERO));
        assert_eq!(ok("rebind"), UdpCmd::Rebind);
        assert_eq!(ok("clear"), UdpCmd::Clear);
        assert_eq!(ok("stats"), UdpCmd::Stats);
        assert_eq!(ok("sleep 1s"), UdpCmd::Sleep(Duration::from_secs(1)));
        assert_eq!(ok("quit"), UdpCmd::Quit);
        assert_eq!(parse_udp_command("  ").unwrap(), None);
        assert_eq!(parse_udp_command("# x").unwrap(), None);
        for bad in [
            "drop",
            "drop 150%",
            "drop -0.1",
            "drop lots",
            "blackhole sideways",
            "blackhole up 3x",
            "delay",
            "delay 1s 2s 3s",
            "rebind now",
            "reset",
            "disconnect 0x8b",
            "explode",
        ] {
            assert!(parse_udp_command(bad).is_err(), "{bad}");
        }
        assert!(parse_udp_command("reset")
            .unwrap_err()
            .contains("TCP fault"));
    }
}
