//! `steadfast chaos` as a user runs it: the built binary in front of a
//! private Mosquitto, driven through stdin and flags, checked with raw MQTT
//! clients and its log lines; and `--udp` in front of a UDP echo server.

use std::io;
use std::net::SocketAddr;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};
use steadfast_chaos::mosquitto::Mosquitto;
use steadfast_chaos::raw::{self, Connect, RawClient};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");
const T: Duration = Duration::from_secs(5);

struct Chaos {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Lines<BufReader<ChildStdout>>,
    err: Lines<BufReader<ChildStderr>>,
    addr: SocketAddr,
}

impl Chaos {
    async fn start(upstream: SocketAddr, extra: &[&str]) -> Chaos {
        let mut child = Command::new(BIN)
            .args([
                "chaos",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                &upstream.to_string(),
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        let err = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut c = Chaos {
            child,
            stdin,
            out,
            err,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let first = c.expect_line("listening on").await;
        let addr = first.split_whitespace().nth(3).unwrap();
        c.addr = addr.parse().unwrap();
        assert!(
            first.ends_with(&format!("forwarding to {upstream}")),
            "{first}"
        );
        c
    }

    async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    /// Reads stdout lines until one contains `needle`; every line must start
    /// with an RFC 3339 timestamp.
    async fn expect_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + T;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.out.next_line())
                .await
                .unwrap_or_else(|_| panic!("no stdout line with {needle:?}; got {seen:#?}"))
                .unwrap()
                .unwrap_or_else(|| panic!("stdout ended before a line with {needle:?}"));
            let (stamp, _) = line.split_once(' ').unwrap();
            assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");
            assert!(
                stamp.len() == 24 && stamp.ends_with('Z'),
                "millisecond stamp: {line}"
            );
            if line.contains(needle) {
                return line;
            }
            seen.push(line);
        }
    }

    async fn expect_err_line(&mut self, needle: &str) -> String {
        loop {
            let line = tokio::time::timeout(T, self.err.next_line())
                .await
                .unwrap()
                .unwrap()
                .expect("stderr open");
            if line.contains(needle) {
                return line;
            }
        }
    }
}

async fn connect(addr: SocketAddr, id: &str) -> (RawClient, u8) {
    let (c, connack) = RawClient::mqtt_connect(addr, &Connect::v5(id))
        .await
        .unwrap();
    assert_eq!(connack[0], 0x20);
    (c, connack[3])
}

#[tokio::test]
async fn stdin_commands_drive_the_proxy() {
    let broker = Mosquitto::start().unwrap();
    let mut chaos = Chaos::start(broker.addr(), &[]).await;

    // reset: the client gets a RST.
    let (mut c, rc) = connect(chaos.addr, "one").await;
    assert_eq!(rc, 0);
    chaos.send("reset").await;
    chaos.expect_line("reset (").await;
    let e = c.read_frame_timeout(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);

    // reject: the next CONNECT is refused by the proxy, the one after is not.
    chaos.send("reject 1 0x87").await;
    chaos.expect_line("reject next 1 CONNECTs with 0x87").await;
    let (mut c, rc) = connect(chaos.addr, "two").await;
    assert_eq!(rc, 0x87);
    assert!(c.read_frame_timeout(T).await.unwrap().is_none());
    chaos.expect_line("rejected CONNECT (MQTT 5)").await;
    let (mut c, rc) = connect(chaos.addr, "three").await;
    assert_eq!(rc, 0);

    // disconnect: an MQTT 5 DISCONNECT with the code, then the end.
    chaos.send("disconnect 0x8b").await;
    // (Counts are not pinned: on a shared machine a stray reconnecting
    // client may find a reused ephemeral port.)
    chaos.expect_line("disconnect 0x8b (").await;
    let f = c.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&f[..], &[0xe0, 0x02, 0x8b, 0x00]);
    assert!(c.read_frame_timeout(T).await.unwrap().is_none());

    // blackhole 1s: a ping is answered only when it ends, a second or more after the
    // command was sent.
    let (mut c, _) = connect(chaos.addr, "four").await;
    let asked = Instant::now();
    chaos.send("blackhole 1s").await;
    chaos.expect_line("blackhole 1s").await;
    c.send(&raw::pingreq()).await.unwrap();
    let f = c.read_frame_timeout(T).await.unwrap().unwrap();
    let held = asked.elapsed();
    assert_eq!(&f[..], &[0xd0, 0x00]);
    assert!(
        held >= Duration::from_millis(950),
        "answered after {held:?}"
    );
    chaos.expect_line("blackhole ended").await;

    // refuse: new connections are reset at once.
    chaos.send("refuse").await;
    chaos.expect_line("refuse until clear").await;
    // The RST may even beat the end of the TCP handshake on the client side.
    let e = match RawClient::connect(chaos.addr).await {
        Err(e) => e,
        Ok(mut r) => {
            let _ = r.send(&Connect::v5("five").to_bytes()).await;
            r.read_frame_timeout(T).await.unwrap_err()
        }
    };
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    chaos.expect_line("refused connection from").await;
    chaos.send("clear").await;
    chaos.expect_line(" clear").await;

    // A bad command is reported and the proxy goes on.
    chaos.send("explode now").await;
    let err = chaos.expect_err_line("explode").await;
    assert!(err.contains("unknown command"), "{err}");
    chaos.send("stats").await;
    let stats = chaos.expect_line(" stats ").await;
    let counter = |name: &str| -> u64 {
        let field = stats
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing: {stats}"));
        field.parse().unwrap()
    };
    assert!(counter("accepted") >= 5, "{stats}");
    assert!(counter("connects") >= 4, "{stats}");
    assert!(counter("refused") >= 1, "{stats}");
    assert_eq!(counter("rejected"), 1, "{stats}");
    assert!(counter("live") >= 1, "{stats}");
    assert!(
        counter("bytes_up") > 0 && counter("bytes_down") > 0,
        "{stats}"
    );

    chaos.send("quit").await;
    let status = tokio::time::timeout(T, chaos.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn flag_schedules_keep_running_after_stdin_ends() {
    let broker = Mosquitto::start().unwrap();
    let mut chaos = Chaos::start(
        broker.addr(),
        &["--every", "300ms", "reset", "--at", "1500ms", "quit"],
    )
    .await;
    drop(chaos.stdin.take()); // EOF at once: the schedules keep it alive.
    let t0 = Instant::now();
    let (mut c, rc) = connect(chaos.addr, "sched").await;
    assert_eq!(rc, 0);
    let e = c.read_frame_timeout(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    chaos.expect_line("reset (1 connection)").await;
    chaos.expect_line("reset (0 connections)").await;
    chaos.expect_line(" quit").await;
    let status = tokio::time::timeout(T, chaos.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        t0.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn scripted_stdin_with_sleep_runs_to_the_end() {
    let broker = Mosquitto::start().unwrap();
    let mut chaos = Chaos::start(broker.addr(), &[]).await;
    let (mut c, _) = connect(chaos.addr, "scripted").await;
    chaos
        .send("# a comment\n\ndelay 50ms\nsleep 200ms\ndisconnect 0x98\nstats")
        .await;
    drop(chaos.stdin.take());
    chaos.expect_line("delay 50ms").await;
    let f = c.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&f[..], &[0xe0, 0x02, 0x98, 0x00]);
    chaos.expect_line("disconnect 0x98").await;
    chaos.expect_line(" stats ").await;
    // No schedules: the end of stdin ends the run.
    let status = tokio::time::timeout(T, chaos.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn cut_silences_live_connections_and_lets_new_ones_pass() {
    let broker = Mosquitto::start().unwrap();
    let mut chaos = Chaos::start(broker.addr(), &[]).await;
    let (_old, rc) = connect(chaos.addr, "cut-old").await;
    assert_eq!(rc, 0);
    chaos.send("cut").await;
    chaos.expect_line("cut (1 connection)").await;
    // A new connection goes through at once.
    let (mut c, rc) = connect(chaos.addr, "cut-new").await;
    assert_eq!(rc, 0);
    c.send(&raw::pingreq()).await.unwrap();
    let f = c.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(&f[..], &[0xd0, 0x00]);
    chaos.send("quit").await;
    let status = tokio::time::timeout(T, chaos.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A UDP echo server that reports the source address of every datagram.
async fn udp_echo() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = tx.send((from, buf[..n].to_vec()));
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    (addr, rx)
}

async fn udp_ping(c: &tokio::net::UdpSocket, what: &[u8]) -> Duration {
    let t0 = Instant::now();
    c.send(what).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(T, c.recv(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&buf[..n], what);
    t0.elapsed()
}

#[tokio::test]
async fn udp_mode_relays_datagrams_with_its_faults() {
    let (upstream, mut seen) = udp_echo().await;
    let mut chaos = Chaos::start(upstream, &["--udp", "--seed", "7"]).await;
    chaos.expect_line("seed 7").await;
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(chaos.addr).await.unwrap();
    udp_ping(&c, b"one").await;
    chaos.expect_line("new flow").await;
    let (first_port, _) = seen.recv().await.unwrap();

    // rebind: the server sees the same client at a new port.
    chaos.send("rebind").await;
    chaos.expect_line("rebind (1 flow)").await;
    udp_ping(&c, b"two").await;
    let (moved, payload) = seen.recv().await.unwrap();
    assert_eq!(payload, b"two");
    assert_ne!(moved, first_port);

    // blackhole up: the datagram never reaches the server.
    chaos.send("blackhole up").await;
    chaos
        .expect_line("blackhole client to server until clear")
        .await;
    c.send(b"lost").await.unwrap();
    chaos.send("stats").await;
    let mut stats = chaos.expect_line(" stats ").await;
    while !stats.contains("dropped_up=1") {
        chaos.send("stats").await;
        stats = chaos.expect_line(" stats ").await;
    }
    chaos.send("clear").await;
    chaos.expect_line(" clear").await;
    udp_ping(&c, b"three").await;
    // The next datagram the server saw is "three": "lost" never arrived.
    assert_eq!(seen.recv().await.unwrap().1, b"three");

    // drop 100%: everything lost, both ways; drop 0 ends it.
    chaos.send("drop 100%").await;
    chaos.expect_line("drop 100.0%").await;
    chaos.send("drop 0").await;
    chaos.expect_line("drop off").await;

    // delay: the round trip takes both ways' delay.
    chaos.send("delay 150ms 20ms").await;
    chaos.expect_line("delay 150ms jitter 20ms").await;
    let rtt = udp_ping(&c, b"slow").await;
    assert!(rtt >= Duration::from_millis(300), "{rtt:?}");
    chaos.send("delay 0").await;
    chaos.expect_line("delay off").await;

    // TCP faults are refused with a reason, and the relay goes on.
    chaos.send("reset").await;
    let err = chaos.expect_err_line("reset").await;
    assert!(err.contains("TCP fault"), "{err}");
    chaos.send("stats").await;
    let stats = chaos.expect_line(" stats ").await;
    for needle in ["flows=1", "flows_opened=1", "rebinds=1", "dropped_up=1"] {
        assert!(stats.contains(needle), "{needle}: {stats}");
    }

    chaos.send("quit").await;
    let status = tokio::time::timeout(T, chaos.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn udp_mode_runs_a_schedule() {
    let (upstream, mut seen) = udp_echo().await;
    let mut chaos = Chaos::start(
        upstream,
        &["--udp", "--every", "300ms", "rebind", "--at", "1s", "quit"],
    )
    .await;
    drop(chaos.stdin.take());
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    c.connect(chaos.addr).await.unwrap();
    udp_ping(&c, b"a").await;
    let (before, _) = seen.recv().await.unwrap();
    chaos.expect_line("rebind (1 flow)").await;
    udp_ping(&c, b"b").await;
    let (after, _) = seen.recv().await.unwrap();
    assert_ne!(before, after);
    chaos.expect_line(" quit").await;
    let status = tokio::time::timeout(T, chaos.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

fn run(args: &[&str]) -> std::process::Output {
    StdCommand::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn exit_codes_usage_and_help() {
    let up = ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"];
    let with = |extra: &[&'static str]| {
        let mut v: Vec<&str> = vec!["chaos"];
        v.extend(up);
        v.extend(extra);
        v
    };
    // Usage errors: 2.
    for args in [
        vec!["chaos", "--listen", "127.0.0.1:0"],
        vec!["chaos", "--listen", "nonsense", "--upstream", "127.0.0.1:1"],
        with(&["--every", "5x", "reset"]),
        with(&["--every", "0s", "reset"]),
        with(&["--at", "1s", "explode"]),
        with(&["--at", "1s", "reject 1"]),
        with(&["--every", "1s"]),
        with(&["--seed", "7"]),
        with(&["--udp", "--at", "1s", "reset"]),
        with(&["--udp", "--at", "1s", "drop 2"]),
        with(&["--at", "1s", "rebind"]),
        vec!["chaos", "-h"],
        vec!["-h"],
        vec!["frobnicate"],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
    // Help is --help only, with examples.
    let out = run(&["chaos", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "--upstream",
        "--every",
        "--at",
        "Examples",
        "End of stdin",
        "--udp",
        "rebind",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    // stdin at EOF and no schedules: a clean exit.
    let out = run(&with(&[]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Cannot listen: runtime error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = run(&["chaos", "--listen", &port, "--upstream", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}
