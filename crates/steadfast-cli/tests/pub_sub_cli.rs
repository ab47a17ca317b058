//! `steadfast pub` and `steadfast sub` as scripts run them: the built binary against private
//! Mosquitto brokers on free ports (never the system broker on 1883), with network faults
//! from the fault proxy. The JSON formats are checked field by field.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use steadfast_chaos::mosquitto::Mosquitto;
use steadfast_chaos::Proxy;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");
/// The longest any single wait may take.
const T: Duration = Duration::from_secs(15);
/// Fast reconnects for tests.
const FAST: [&str; 4] = ["--reconnect-min", "50ms", "--reconnect-max", "200ms"];

/// A running `steadfast` process with its output read line by line.
struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Lines<BufReader<ChildStdout>>,
    err: Lines<BufReader<ChildStderr>>,
    /// Every event line read from stderr so far.
    events: Vec<Value>,
    /// Every other stderr line.
    errors: Vec<String>,
    err_done: bool,
    /// How many events of each name `event` has returned.
    returned: HashMap<String, usize>,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn steadfast");
        Run {
            stdin: child.stdin.take(),
            out: BufReader::new(child.stdout.take().unwrap()).lines(),
            err: BufReader::new(child.stderr.take().unwrap()).lines(),
            child,
            events: Vec::new(),
            errors: Vec::new(),
            err_done: false,
            returned: HashMap::new(),
        }
    }

    /// Reads one stderr line (None at EOF); event lines are checked and kept.
    async fn read_err(&mut self, deadline: Instant) -> Option<()> {
        if self.err_done {
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(left, self.err.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out; events so far: {:#?}; other stderr: {:?}",
                    self.events, self.errors
                )
            })
            .unwrap();
        match line {
            None => {
                self.err_done = true;
                None
            }
            Some(l) if l.starts_with('{') => {
                let v: Value =
                    serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"));
                check_event(&v);
                self.events.push(v);
                Some(())
            }
            Some(l) => {
                self.errors.push(l);
                Some(())
            }
        }
    }

    /// Waits for the next event called `name` (after those already returned).
    async fn event(&mut self, name: &str) -> Value {
        let deadline = Instant::now() + T;
        let idx = self.returned.get(name).copied().unwrap_or(0);
        loop {
            if let Some(v) = self.events.iter().filter(|e| e["event"] == name).nth(idx) {
                let v = v.clone();
                self.returned.insert(name.to_string(), idx + 1);
                return v;
            }
            if self.read_err(deadline).await.is_none() {
                panic!(
                    "no {name:?} event before EOF: {:#?} {:?}",
                    self.events, self.errors
                );
            }
        }
    }

    /// The next stdout line.
    async fn line(&mut self) -> String {
        tokio::time::timeout(T, self.out.next_line())
            .await
            .expect("timed out waiting for a stdout line")
            .unwrap()
            .expect("stdout closed")
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the exit (reading the rest of stderr) and returns the exit code.
    async fn exit(&mut self) -> i32 {
        let deadline = Instant::now() + T;
        while self.read_err(deadline).await.is_some() {}
        let status = tokio::time::timeout(T, self.child.wait())
            .await
            .expect("no exit")
            .unwrap();
        status.code().expect("exited by a signal")
    }

    fn count(&self, name: &str) -> usize {
        self.events.iter().filter(|e| e["event"] == name).count()
    }
}

/// Checks one event object against the contract: exact key set and types.
fn check_event(v: &Value) {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let name = o["event"].as_str().expect("event is a string");
    let ts = o["ts"].as_u64().expect("ts is an integer");
    assert!(ts > 1_600_000_000_000, "ts in Unix ms: {v}");
    let (required, optional): (&[&str], &[&str]) = match name {
        "connecting" => (&["attempt", "server"], &[]),
        "connected" => (&["attempt", "server", "session_present"], &[]),
        "connect_failed" => (&["attempt", "reason"], &["reason_code"]),
        "connection_lost" => (&["reason", "initiator"], &["reason_code"]),
        "reconnecting" => (&["attempt", "delay_ms"], &[]),
        "resubscribed" => (&["filters"], &[]),
        "session_lost" => (&["republished"], &[]),
        "dormant" => (&["attempts"], &[]),
        "fatal" => (&["reason"], &["reason_code"]),
        "disconnected" => (&[], &[]),
        other => panic!("unknown event {other:?}: {v}"),
    };
    for k in o.keys() {
        assert!(
            k == "event"
                || k == "ts"
                || required.contains(&k.as_str())
                || optional.contains(&k.as_str()),
            "unexpected key {k:?} in {v}"
        );
    }
    for k in required {
        assert!(o.contains_key(*k), "missing {k:?} in {v}");
    }
    for (k, val) in o {
        match k.as_str() {
            "attempt" => assert!(val.as_u64().is_some_and(|n| n >= 1), "{v}"),
            "delay_ms" | "republished" => assert!(val.is_u64(), "{v}"),
            // `dormant` only follows --max-attempts failed attempts.
            "attempts" => assert!(val.as_u64().is_some_and(|n| n >= 1), "{v}"),
            "server" => assert!(
                val.as_str()
                    .is_some_and(|s| s.starts_with("mqtt") || s.starts_with("quic")),
                "{v}"
            ),
            "session_present" => assert!(val.is_boolean(), "{v}"),
            "reason" => assert!(val.as_str().is_some_and(|s| !s.is_empty()), "{v}"),
            "reason_code" => assert!(val.as_u64().is_some_and(|n| n <= 255), "{v}"),
            "initiator" => assert!(
                matches!(val.as_str(), Some("local" | "library" | "remote")),
                "{v}"
            ),
            "filters" => assert!(
                val.as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string)),
                "{v}"
            ),
            _ => {}
        }
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(k: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = k.iter().map(|s| s.to_string()).collect();
    k.sort();
    k
}

/// Runs to completion with stdin closed; returns (code, stdout, stderr).
async fn output(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        T,
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("no exit")
    .unwrap();
    (
        out.status.code().expect("exited by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// mosquitto_pub against a private broker.
fn mosquitto_pub(port: u16, args: &[&str]) {
    let st = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "mosquitto_pub {args:?}");
}

fn port_s(p: u16) -> String {
    p.to_string()
}

#[tokio::test]
async fn usage_errors_exit_2_with_one_line() {
    let cases: &[&[&str]] = &[
        &["pub", "--frobnicate"],
        &["sub", "-t", "a", "-q", "3"],
        &["pub", "-t", "a"],
        &["pub", "-t", "a", "-m", "x", "-l"],
        &["pub", "-t", "a/#", "-m", "x"],
        &["sub"],
        &["sub", "-t", "a/#/b"],
        &["sub", "-t", "a", "-L", "http://127.0.0.1:1"],
        &["sub", "-t", "a", "-L", "mqtt://alice:s3cr3t@:1883"],
        &[
            "sub",
            "-t",
            "a",
            "-L",
            "mqtt://alice:s3cr3t@127.0.0.1:notaport",
        ],
        &["sub", "-t", "a", "-L", "mqtt://127.0.0.1:1", "-p", "1"],
        &["sub", "-t", "a", "-V", "4"],
        &["sub", "-t", "a", "-V", "311", "-x", "10"],
        &["sub", "-t", "a", "--backoff", "fibonacci"],
        &["sub", "-t", "a", "--jitter", "lots"],
        &[
            "sub",
            "-t",
            "a",
            "--backoff",
            "constant",
            "--jitter",
            "full",
        ],
        &[
            "sub",
            "-t",
            "a",
            "--reconnect-min",
            "5s",
            "--reconnect-max",
            "1s",
        ],
        &["sub", "-t", "a", "--reconnect-min", "soon"],
        &["sub", "-t", "a", "-P", "s3cr3t"],
        &["sub", "-t", "a", "-v", "--json"],
        &[
            "sub",
            "-t",
            "a",
            "--server",
            "mqtt://bob:s3cr3t@127.0.0.1:99999",
        ],
        &["sub", "-t", "a", "--server", "10.10.151.22:8883"],
        &["sub", "-t", "a", "-L", "mqtt://bob:s3cr3t@bad_host!:1"],
        &["pub", "-t", "a", "--rate", "5", "-m", "x"],
        &[
            "pub", "-t", "a", "-m", "x", "-D", "publish", "colour", "red",
        ],
        &[
            "pub",
            "-t",
            "a",
            "-m",
            "x",
            "-V",
            "311",
            "-D",
            "publish",
            "content-type",
            "x",
        ],
        &["sub", "-t", "a", "--cert", "c.pem"],
        &["sub", "-t", "a", "--cafile", "ca.pem"],
        &["sub", "-t", "a", "-V", "311", "-c"],
        // --no-reconnect stops at the first failure: a cap on attempts makes no sense with it.
        &[
            "sub",
            "-t",
            "a",
            "-p",
            "1",
            "--no-reconnect",
            "--max-attempts",
            "3",
        ],
    ];
    // Never the system broker: should a case be accepted, it must not reach 127.0.0.1:1883.
    let dead = steadfast_chaos::free_port().to_string();
    for args in cases {
        let mut args: Vec<&str> = args.to_vec();
        if !args.iter().any(|a| *a == "-L" || *a == "-p") {
            args.extend(["-p", &dead, "--no-reconnect"]);
        }
        let (code, stdout, stderr) = output(&args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, got {stderr:?}"
        );
        assert!(
            !stderr.contains("s3cr3t"),
            "{args:?} printed a secret: {stderr}"
        );
    }
    let (code, _, stderr) = output(&["sub", "-t", "a", "-L", "http://127.0.0.1:1"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("URL"), "{stderr}");
    for cmd in ["pub", "sub"] {
        let (code, help, _) = output(&[cmd, "--help"]).await;
        assert_eq!(code, 0);
        for needle in [
            "Examples",
            "--url",
            "--events",
            "--max-attempts",
            "--no-reconnect",
            "Exit codes",
        ] {
            assert!(help.contains(needle), "{cmd} --help lacks {needle}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_through_drops_and_restored_subscriptions() {
    let broker = Mosquitto::start().unwrap();
    // A retained message shows when the subscription is in place.
    mosquitto_pub(broker.port(), &["-t", "ev/retained", "-m", "r", "-r"]);
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), broker.addr())
        .await
        .unwrap();
    let faults = proxy.handle();
    let pport = port_s(proxy.local_addr().port());
    let mut args = vec!["sub", "-p", &pport, "-t", "ev/#", "-q", "1", "--events"];
    args.extend(FAST);
    let mut sub = Run::start(&args);

    let c = sub.event("connecting").await;
    assert_eq!(keys(&c), sorted(&["event", "ts", "attempt", "server"]));
    assert_eq!(c["attempt"], 1);
    assert_eq!(c["server"], format!("mqtt://127.0.0.1:{pport}"));
    let c = sub.event("connected").await;
    assert_eq!(
        keys(&c),
        sorted(&["event", "ts", "attempt", "server", "session_present"])
    );
    assert_eq!(c["session_present"], false);

    assert_eq!(sub.line().await, "r");

    // A network drop: connection_lost (no code, remote), reconnecting, resubscribed.
    assert_eq!(faults.reset(), 1);
    let lost = sub.event("connection_lost").await;
    assert_eq!(keys(&lost), sorted(&["event", "ts", "reason", "initiator"]));
    assert_eq!(lost["initiator"], "remote");
    let r = sub.event("reconnecting").await;
    assert_eq!(keys(&r), sorted(&["event", "ts", "attempt", "delay_ms"]));
    let delay = r["delay_ms"].as_u64().unwrap();
    assert!((50..=200).contains(&delay), "{r}");
    let rs = sub.event("resubscribed").await;
    assert_eq!(keys(&rs), sorted(&["event", "ts", "filters"]));
    assert_eq!(rs["filters"], serde_json::json!(["ev/#"]));
    assert_eq!(sub.count("connected"), 2);
    // The restored subscription works (the retained message comes again with it).
    assert_eq!(sub.line().await, "r");

    // The broker sends DISCONNECT 0x8B: connection_lost carries the reason code.
    faults
        .wait_until(T, |s| s.live == 1)
        .await
        .expect("connected again");
    assert_eq!(faults.send_disconnect(0x8B), 1);
    let lost = sub.event("connection_lost").await;
    assert_eq!(
        keys(&lost),
        sorted(&["event", "ts", "reason", "reason_code", "initiator"])
    );
    assert_eq!(lost["reason_code"], 0x8B);
    assert_eq!(lost["initiator"], "remote");
    assert!(
        lost["reason"]
            .as_str()
            .unwrap()
            .contains("server shutting down"),
        "{lost}"
    );
    sub.event("connected").await;

    // Ctrl-C: a graceful disconnect, the `disconnected` event, exit 0.
    sub.signal("-INT");
    let d = sub.event("disconnected").await;
    assert_eq!(keys(&d), sorted(&["event", "ts"]));
    assert_eq!(sub.exit().await, 0);
    proxy.shutdown().await;
}

/// Runs `sub` until its fatal refusal and checks the events, the line and the exit code.
async fn expect_refusal(args: &[&str], reason: &str, code: u64) {
    let mut sub = Run::start(args);
    let f = sub.event("connect_failed").await;
    assert_eq!(
        keys(&f),
        sorted(&["event", "ts", "attempt", "reason", "reason_code"])
    );
    assert_eq!(f["attempt"], 1);
    assert_eq!(f["reason"], reason, "{args:?}");
    assert_eq!(f["reason_code"], code, "{args:?}");
    let fatal = sub.event("fatal").await;
    assert_eq!(
        keys(&fatal),
        sorted(&["event", "ts", "reason", "reason_code"])
    );
    assert_eq!(fatal["reason"], reason);
    assert_eq!(fatal["reason_code"], code);
    assert_eq!(sub.exit().await, 3, "{args:?}");
    assert_eq!(
        sub.errors,
        vec![format!("steadfast: connection refused: {reason}")]
    );
    assert_eq!(sub.count("reconnecting"), 0);
    for e in &sub.events {
        assert!(!e.to_string().contains("wrong-pw"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_server_urls_log_in_with_their_credentials_and_never_print_them() {
    const SECRET: &str = "failover-s3cr3t";
    let broker = Mosquitto::builder()
        .password("alice", SECRET)
        .start()
        .unwrap();
    // The first server is dead; the failover URL carries the only credentials.
    let dead = steadfast_chaos::free_port().to_string();
    let failover = format!("mqtt://alice:{SECRET}@127.0.0.1:{}", broker.port());
    let (code, stdout, stderr) = output(&[
        "pub",
        "-p",
        &dead,
        "--server",
        &failover,
        "--reconnect-min",
        "50ms",
        "--reconnect-max",
        "100ms",
        "-t",
        "x",
        "-m",
        "y",
        "-q",
        "1",
        "--events",
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    let shown = format!("mqtt://alice:***@127.0.0.1:{}", broker.port());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("\"connected\"") && l.contains(&shown)),
        "connected through the failover server: {stderr}"
    );
    assert!(!stderr.contains(SECRET), "password printed: {stderr}");
    assert!(!stdout.contains(SECRET), "password printed: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusals_are_fatal_exit_3() {
    let broker = Mosquitto::builder()
        .password("alice", "good-pw")
        .start()
        .unwrap();
    let port = port_s(broker.port());
    // Mosquitto 2.0 answers a wrong password with "not authorized" (0x87; 3.1.1: 5).
    for (version, code) in [("5", 0x87), ("311", 5)] {
        let args = [
            "sub", "-p", &port, "-V", version, "-t", "x", "-u", "alice", "-P", "wrong-pw",
            "--events",
        ];
        expect_refusal(&args, "not authorized", code).await;
    }
    // "Bad user name or password" (0x86; 3.1.1: 4), from the fault proxy.
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), broker.addr())
        .await
        .unwrap();
    let pport = port_s(proxy.local_addr().port());
    for (version, code) in [("5", 0x86), ("311", 4)] {
        proxy.handle().reject_next_connects(1, 0x86);
        let args = [
            "sub", "-p", &pport, "-V", version, "-t", "x", "-u", "alice", "-P", "wrong-pw",
            "--events",
        ];
        expect_refusal(&args, "bad user name or password", code).await;
    }
    // Through the URL, without --events: one line, no secret.
    proxy.handle().reject_next_connects(1, 0x86);
    let url = format!("mqtt://alice:wrong-pw@127.0.0.1:{pport}");
    let (code, _, stderr) = output(&["pub", "-L", &url, "-t", "x", "-m", "y"]).await;
    assert_eq!(code, 3);
    assert_eq!(
        stderr,
        "steadfast: connection refused: bad user name or password\n"
    );
    // The right password works.
    let url = format!("mqtt://alice:good-pw@127.0.0.1:{port}");
    let (code, _, stderr) = output(&["pub", "-L", &url, "-t", "x", "-m", "y", "-q", "1"]).await;
    assert_eq!(code, 0, "{stderr}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_goes_dormant_exit_4_and_no_reconnect_exits_1() {
    // Nothing listens on this port.
    let dead = steadfast_chaos::free_port().to_string();
    let mut args = vec![
        "pub",
        "-p",
        &dead,
        "-t",
        "x",
        "-m",
        "y",
        "-q",
        "1",
        "--events",
        "--max-attempts",
        "3",
    ];
    args.extend(FAST);
    let mut p = Run::start(&args);
    let d = p.event("dormant").await;
    assert_eq!(keys(&d), sorted(&["event", "ts", "attempts"]));
    assert_eq!(d["attempts"], 3);
    assert_eq!(p.exit().await, 4);
    assert_eq!(p.count("connect_failed"), 3);
    assert_eq!(p.count("reconnecting"), 2);
    let f = &p
        .events
        .iter()
        .find(|e| e["event"] == "connect_failed")
        .unwrap();
    assert_eq!(keys(f), sorted(&["event", "ts", "attempt", "reason"]));
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(
        p.errors[0].starts_with("steadfast: gave up after 3 attempts"),
        "{:?}",
        p.errors
    );

    // --no-reconnect: the first failure ends it.
    let (code, _, stderr) = output(&["sub", "-p", &dead, "-t", "x", "--no-reconnect"]).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("steadfast: connection failed")
            && stderr.trim_end().ends_with("(--no-reconnect)"),
        "{stderr}"
    );
    // With --events: `connect_failed` is the last event; not `dormant`, which means "gave up
    // after --max-attempts".
    let mut p = Run::start(&[
        "pub",
        "-p",
        &dead,
        "-t",
        "x",
        "-m",
        "y",
        "--no-reconnect",
        "--events",
    ]);
    assert_eq!(p.exit().await, 1);
    let names: Vec<&str> = p
        .events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["connecting", "connect_failed"], "{:?}", p.events);
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert!(
        p.errors[0].starts_with("steadfast: connection failed: "),
        "{:?}",
        p.errors
    );

    // --no-reconnect: the first loss ends it too, with `connection_lost` as the last event.
    let broker = Mosquitto::start().unwrap();
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), broker.addr())
        .await
        .unwrap();
    let pport = port_s(proxy.local_addr().port());
    let mut sub = Run::start(&["sub", "-p", &pport, "-t", "x", "--no-reconnect", "--events"]);
    sub.event("connected").await;
    proxy.handle().wait_until(T, |s| s.live == 1).await.unwrap();
    proxy.handle().reset();
    sub.event("connection_lost").await;
    assert_eq!(sub.exit().await, 1);
    assert_eq!(sub.count("connecting"), 1);
    assert_eq!(sub.count("dormant"), 0, "{:?}", sub.events);
    assert_eq!(
        sub.events.last().map(|e| e["event"].clone()),
        Some(Value::from("connection_lost")),
        "{:?}",
        sub.events
    );
    assert_eq!(sub.errors.len(), 1, "{:?}", sub.errors);
    assert!(
        sub.errors[0].starts_with("steadfast: connection lost: ")
            && sub.errors[0].ends_with("(--no-reconnect)"),
        "{:?}",
        sub.errors
    );

    // A fatal refusal with --no-reconnect is still exit 3, after `fatal`.
    proxy.handle().reject_next_connects(1, 0x86);
    let mut sub = Run::start(&["sub", "-p", &pport, "-t", "x", "--no-reconnect", "--events"]);
    assert_eq!(sub.exit().await, 3);
    let names: Vec<&str> = sub
        .events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["connecting", "connect_failed", "fatal"],
        "{:?}",
        sub.events
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_output_formats() {
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let ps = port_s(port);
    // Retained messages arrive right after the SUBACK, so no race with the subscription.
    mosquitto_pub(port, &["-t", "f/a", "-m", "one", "-r"]);
    mosquitto_pub(port, &["-t", "f/b", "-m", "two", "-r"]);
    mosquitto_pub(port, &["-t", "g/c", "-m", "three", "-r"]);
    mosquitto_pub(port, &["-t", "h/d", "-m", "not subscribed", "-r"]);

    // Default: one payload per line; -t repeatable; -C 3 exits 0.
    let (code, out, err) = output(&["sub", "-p", &ps, "-t", "f/#", "-t", "g/+", "-C", "3"]).await;
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["one", "three", "two"]);
    assert!(err.is_empty(), "{err}");

    // -v: "topic payload".
    let (code, out, _) = output(&["sub", "-p", &ps, "-t", "f/a", "-v", "-C", "1"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "f/a one\n");

    // --json, field by field; then a live message with MQTT 5 properties, then bytes that
    // are not UTF-8.
    let mut sub = Run::start(&[
        "sub", "-p", &ps, "-t", "f/a", "-t", "j/#", "--json", "-q", "2", "-C", "4",
    ]);
    let retained: Value = serde_json::from_str(&sub.line().await).unwrap();
    assert_eq!(
        retained,
        serde_json::json!({"topic": "f/a", "qos": 0, "retain": true, "dup": false, "payload": "one"})
    );
    mosquitto_pub(
        port,
        &[
            "-t",
            "j/props",
            "-m",
            "{\"on\":true}",
            "-q",
            "2",
            "-D",
            "publish",
            "content-type",
            "application/json",
            "-D",
            "publish",
            "user-property",
            "origin",
            "test",
            "-D",
            "publish",
            "user-property",
            "origin",
            "again",
            "-D",
            "publish",
            "response-topic",
            "j/reply",
            "-D",
            "publish",
            "correlation-data",
            "abc",
            "-D",
            "publish",
            "message-expiry-interval",
            "300",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
        ],
    );
    let m: Value = serde_json::from_str(&sub.line().await).unwrap();
    assert_eq!(
        keys(&m),
        sorted(&["topic", "qos", "retain", "dup", "payload", "properties"])
    );
    assert_eq!(m["topic"], "j/props");
    assert_eq!(m["qos"], 2);
    assert_eq!(m["retain"], false);
    assert_eq!(m["dup"], false);
    assert_eq!(m["payload"], "{\"on\":true}");
    let p = &m["properties"];
    assert_eq!(p["content_type"], "application/json");
    assert_eq!(
        p["user_properties"],
        serde_json::json!([["origin", "test"], ["origin", "again"]])
    );
    assert_eq!(p["response_topic"], "j/reply");
    assert_eq!(p["correlation_data"], "YWJj"); // base64 of "abc"
    assert_eq!(p["payload_format_indicator"], 1);
    let expiry = p["message_expiry_interval"].as_u64().unwrap();
    assert!((290..=300).contains(&expiry), "{p}");
    assert_eq!(
        keys(p),
        sorted(&[
            "content_type",
            "user_properties",
            "response_topic",
            "correlation_data",
            "payload_format_indicator",
            "message_expiry_interval"
        ])
    );

    // Bytes that are not UTF-8: payload_b64 instead of payload. (steadfast pub -f sends them.)
    let file = std::env::temp_dir().join(format!("steadfast-bin-{}", std::process::id()));
    std::fs::write(&file, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let (code, _, err) = output(&[
        "pub",
        "-p",
        &ps,
        "-t",
        "j/bin",
        "-f",
        file.to_str().unwrap(),
        "-q",
        "1",
    ])
    .await;
    std::fs::remove_file(&file).ok();
    assert_eq!(code, 0, "{err}");
    let b: Value = serde_json::from_str(&sub.line().await).unwrap();
    assert_eq!(
        b,
        serde_json::json!({"topic": "j/bin", "qos": 1, "retain": false, "dup": false, "payload_b64": "//4AQQ=="})
    );

    // steadfast pub -D sets properties too.
    let (code, _, err) = output(&[
        "pub",
        "-p",
        &ps,
        "-t",
        "j/own",
        "-m",
        "x",
        "-q",
        "1",
        "-D",
        "publish",
        "user-property",
        "k",
        "v",
        "-D",
        "publish",
        "content-type",
        "text/plain",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let o: Value = serde_json::from_str(&sub.line().await).unwrap();
    assert_eq!(
        o["properties"],
        serde_json::json!({"content_type": "text/plain", "user_properties": [["k", "v"]]})
    );
    assert_eq!(sub.exit().await, 0);

    // -W: exits 0 after SECS without a message (the retained one resets the clock once).
    let started = Instant::now();
    let (code, out, _) = output(&["sub", "-p", &ps, "-t", "f/a", "-W", "1"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "one\n");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_lines_lose_nothing_through_outages() {
    const N: usize = 2000;
    let broker = Mosquitto::start().unwrap();
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), broker.addr())
        .await
        .unwrap();
    let faults = proxy.handle();
    let pport = port_s(proxy.local_addr().port());

    // The reference subscriber: mosquitto_sub straight to the broker. -d prints "...SUBACK".
    let mut reference = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port_s(broker.port()),
            "-t",
            "load",
            "-q",
            "1",
            "-d",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut ref_out = BufReader::new(reference.stdout.take().unwrap()).lines();
    loop {
        let l = tokio::time::timeout(T, ref_out.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if l.contains("SUBACK") {
            break;
        }
    }

    let mut args = vec![
        "pub", "-p", &pport, "-t", "load", "-l", "-q", "1", "--events",
    ];
    args.extend(FAST);
    let mut publisher = Run::start(&args);
    publisher.event("connected").await;
    faults.wait_until(T, |s| s.live == 1).await.unwrap();
    let mut stdin = publisher.stdin.take().unwrap();
    let mut outages = 0;
    for chunk in 0..20 {
        let mut text = String::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            text.push_str(&format!("L{i:05}\n"));
        }
        stdin.write_all(text.as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
        match chunk % 4 {
            1 => {
                // Drop the link and keep it down for a moment; the next chunks are written
                // while it is down.
                faults.refuse(Some(Duration::from_millis(300)));
                faults.reset();
                publisher.event("connection_lost").await;
                outages += 1;
            }
            3 => {
                publisher.event("connected").await;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    drop(stdin); // EOF
    let code = publisher.exit().await;
    assert_eq!(code, 0, "{:?}", publisher.errors);
    assert!(publisher.errors.is_empty(), "{:?}", publisher.errors);
    assert_eq!(
        publisher.count("connection_lost"),
        outages,
        "{:#?}",
        publisher.events
    );
    assert!(outages >= 5);
    assert_eq!(publisher.count("disconnected"), 1);

    // Everything arrived (QoS 1: duplicates are allowed, losses are not).
    let mut got = HashSet::new();
    let deadline = Instant::now() + T;
    while got.len() < N {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = match tokio::time::timeout(left, ref_out.next_line()).await {
            Ok(Ok(Some(l))) => l,
            _ => break,
        };
        if l.starts_with('L') {
            got.insert(l);
        }
    }
    let missing: Vec<String> = (0..N)
        .map(|i| format!("L{i:05}"))
        .filter(|l| !got.contains(l))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {N} missing, e.g. {missing:?}",
        N - got.len()
    );
    reference.kill().await.ok();
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_pub_lines_gracefully() {
    let broker = Mosquitto::start().unwrap();
    let ps = port_s(broker.port());
    let mut reference = Run::start(&["sub", "-p", &ps, "-t", "s", "-q", "1", "--events"]);
    reference.event("connected").await;
    let mut publisher = Run::start(&["pub", "-p", &ps, "-t", "s", "-l", "-q", "1", "--events"]);
    publisher.event("connected").await;
    let stdin = publisher.stdin.as_mut().unwrap();
    // Repeat until the reference sees one (its SUBACK may still be on its way).
    let deadline = Instant::now() + T;
    loop {
        stdin.write_all(b"hello\n").await.unwrap();
        stdin.flush().await.unwrap();
        if let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_millis(300), reference.out.next_line()).await
        {
            assert_eq!(l, "hello");
            break;
        }
        assert!(Instant::now() < deadline, "nothing arrived");
    }
    // stdin stays open: only the signal ends it.
    publisher.signal("-INT");
    publisher.event("disconnected").await;
    assert_eq!(publisher.exit().await, 0, "{:?}", publisher.errors);
    reference.signal("-TERM");
    reference.event("disconnected").await;
    assert_eq!(reference.exit().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_count_generates_paced_messages() {
    let broker = Mosquitto::start().unwrap();
    let ps = port_s(broker.port());
    mosquitto_pub(broker.port(), &["-t", "gen/marker", "-m", "ready", "-r"]);
    let mut sub = Run::start(&["sub", "-p", &ps, "-t", "gen/#", "-q", "1", "-C", "6"]);
    assert_eq!(sub.line().await, "ready");
    let started = Instant::now();
    let (code, _, err) = output(&[
        "pub",
        "-p",
        &ps,
        "-t",
        "gen/x",
        "--count",
        "5",
        "--payload-size",
        "8",
        "--rate",
        "50",
        "-q",
        "1",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    // 5 messages at 50 per second: the last one 80 ms after the first.
    assert!(started.elapsed() >= Duration::from_millis(80));
    for i in 1..=5 {
        assert_eq!(sub.line().await, format!("{i:.<8}"));
    }
    assert_eq!(sub.exit().await, 0);
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl tool, in a directory
/// Mosquitto (which drops to its own user) can read.
fn make_certs(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = |f: &str| dir.join(f).to_str().unwrap().to_string();
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<String>> = vec![
        [
            &["req", "-x509"][..],
            &ec[..],
            &[
                "-keyout",
                &d("ca.key"),
                "-out",
                &d("ca.pem"),
                "-days",
                "2",
                "-subj",
                "/CN=steadfast-test-ca",
            ],
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect(),
        [
            &["req"][..],
            &ec[..],
            &[
                "-keyout",
                &d("server.key"),
                "-out",
                &d("server.csr"),
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect(),
        [
            "x509",
            "-req",
            "-in",
            &d("server.csr"),
            "-CA",
            &d("ca.pem"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-out",
            &d("server.pem"),
            "-days",
            "2",
            "-extfile",
            &d("ext"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    ];
    for args in steps {
        let out = std::process::Command::new("openssl")
            .args(&args)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_flags() {
    let dir = std::env::temp_dir().join(format!("steadfast-cli-tls-{}", std::process::id()));
    make_certs(&dir);
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let tls_port = steadfast_chaos::free_port();
    let broker = Mosquitto::builder()
        .extra_config(format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}",
            f("ca.pem"),
            f("server.pem"),
            f("server.key")
        ))
        .start()
        .unwrap();
    mosquitto_pub(broker.port(), &["-t", "tls", "-m", "secret-ish", "-r"]);
    let tp = tls_port.to_string();
    let url = format!("mqtts://127.0.0.1:{tp}");
    let ca = f("ca.pem");
    // --cafile with a URL, and with -p (TLS flags turn -h/-p into mqtts).
    for args in [
        vec!["sub", "-L", &url, "--cafile", &ca, "-t", "tls", "-C", "1"],
        vec!["sub", "-p", &tp, "--cafile", &ca, "-t", "tls", "-C", "1"],
    ] {
        let (code, out, err) = output(&args).await;
        assert_eq!((code, out.as_str()), (0, "secret-ish\n"), "{args:?}: {err}");
    }
    // --insecure: works, with a warning.
    let (code, out, err) = output(&["sub", "-L", &url, "--insecure", "-t", "tls", "-C", "1"]).await;
    assert_eq!((code, out.as_str()), (0, "secret-ish\n"), "{err}");
    assert!(err.contains("WARNING"), "{err}");
    // No CA: the certificate is rejected, which is fatal (exit 3).
    let mut sub = Run::start(&["sub", "-L", &url, "-t", "tls", "--events"]);
    let fatal = sub.event("fatal").await;
    assert!(
        fatal["reason"].as_str().unwrap().contains("certificate"),
        "{fatal}"
    );
    assert_eq!(sub.exit().await, 3);
    // A CA file that is not there: usage error.
    let (code, _, err) = output(&[
        "sub",
        "-L",
        &url,
        "--cafile",
        "/nonexistent/ca.pem",
        "-t",
        "tls",
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_keeps_messages_across_runs() {
    let broker = Mosquitto::start().unwrap();
    let ps = port_s(broker.port());
    let dir = std::env::temp_dir().join(format!("steadfast-cli-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = dir.to_str().unwrap();
    mosquitto_pub(broker.port(), &["-t", "st/marker", "-m", "ready", "-r"]);
    let mut sub = Run::start(&["sub", "-p", &ps, "-t", "st/#", "-q", "1", "-C", "3"]);
    assert_eq!(sub.line().await, "ready");
    // First run: the broker is unreachable; the message is accepted into the store, then
    // pub gives up (exit 4).
    let dead = steadfast_chaos::free_port().to_string();
    let (code, _, err) = output(&[
        "pub",
        "-p",
        &dead,
        "-t",
        "st/a",
        "-m",
        "first",
        "-q",
        "1",
        "-i",
        "store-client",
        "--store",
        store,
        "--max-attempts",
        "2",
        "--reconnect-min",
        "300ms",
        "--reconnect-max",
        "300ms",
    ])
    .await;
    assert_eq!(code, 4, "{err}");
    // Second run, broker reachable: the stored message goes out too.
    let (code, _, err) = output(&[
        "pub",
        "-p",
        &ps,
        "-t",
        "st/a",
        "-m",
        "second",
        "-q",
        "1",
        "-i",
        "store-client",
        "--store",
        store,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let mut got = vec![sub.line().await, sub.line().await];
    got.sort();
    assert_eq!(got, ["first", "second"]);
    assert_eq!(sub.exit().await, 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_publish_exits_1_after_sending_the_rest() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("steadfast-cli-acl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic readwrite ok/#\n").unwrap();
    std::fs::set_permissions(&acl, std::fs::Permissions::from_mode(0o644)).unwrap();
    let broker = Mosquitto::builder()
        .extra_config(format!("acl_file {}", acl.display()))
        .start()
        .unwrap();
    let ps = port_s(broker.port());
    // MQTT 5: Mosquitto answers PUBACK 0x87 for a denied topic.
    let mut p = Run::start(&["pub", "-p", &ps, "-t", "denied", "-l", "-q", "1"]);
    p.stdin
        .take()
        .unwrap()
        .write_all(b"a\nb\nc\n")
        .await
        .unwrap();
    assert_eq!(p.exit().await, 1);
    assert_eq!(
        p.errors,
        ["steadfast: 3 of 3 messages were not delivered; first: rejected by the broker: not authorized"]
    );
    let (code, _, err) = output(&["pub", "-p", &ps, "-t", "ok/1", "-m", "fine", "-q", "1"]).await;
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `quic://` and `mqtt-quic://` with the TLS flags, through the QUIC-to-TCP bridge of
/// steadfast-chaos in front of a private Mosquitto: --cafile (with a topic in the URL's path
/// too), `pub` over QUIC, --insecure with its warning, and a certificate that no trusted CA
/// signed (fatal, exit 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_flags() {
    let dir = std::env::temp_dir().join(format!("steadfast-cli-quic-{}", std::process::id()));
    make_certs(&dir);
    let f = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    let broker = Mosquitto::start().unwrap();
    let bridge = steadfast_chaos::quic::QuicBridge::start(
        0,
        broker.addr(),
        &read("server.pem"),
        &read("server.key"),
    )
    .await
    .unwrap();
    mosquitto_pub(broker.port(), &["-t", "quic", "-m", "over-quic", "-r"]);
    let url = bridge.url();
    let nanosdk = format!("mqtt-quic://127.0.0.1:{}/quic", bridge.port());
    let ca = f("ca.pem");
    for args in [
        vec!["sub", "-L", &url, "--cafile", &ca, "-t", "quic", "-C", "1"],
        vec!["sub", "-L", &nanosdk, "--cafile", &ca, "-C", "1"],
    ] {
        let (code, out, err) = output(&args).await;
        assert_eq!((code, out.as_str()), (0, "over-quic\n"), "{args:?}: {err}");
    }
    // pub over QUIC; a plain-TCP subscriber gets it from the broker.
    let (code, _, err) = output(&[
        "pub", "-L", &url, "--cafile", &ca, "-t", "quic/pub", "-m", "hello", "-q", "1", "-r",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let ps = port_s(broker.port());
    let (code, out, err) = output(&["sub", "-p", &ps, "-t", "quic/pub", "-C", "1"]).await;
    assert_eq!((code, out.as_str()), (0, "hello\n"), "{err}");
    // --insecure: works, with a warning.
    let (code, out, err) =
        output(&["sub", "-L", &url, "--insecure", "-t", "quic", "-C", "1"]).await;
    assert_eq!((code, out.as_str()), (0, "over-quic\n"), "{err}");
    assert!(err.contains("WARNING"), "{err}");
    // No CA: the system roots do not know the test CA; fatal (exit 3), the cause named.
    let mut sub = Run::start(&["sub", "-L", &url, "-t", "quic", "--events"]);
    let fatal = sub.event("fatal").await;
    assert!(
        fatal["reason"].as_str().unwrap().contains("unknown issuer"),
        "{fatal}"
    );
    assert_eq!(sub.exit().await, 3);
    drop(bridge);
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------------
// mosquitto_sub / mosquitto_pub flags: -F, -N, -T, -R, --retained-only, -E, -U, the will, -d

#[tokio::test]
async fn mosquitto_flags_usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &["sub", "-U", "a/#/b"],
        &["sub", "-t", "a", "-T", "a/#/b"],
        &["sub", "-t", "a", "-F", "%m"],
        &["sub", "-t", "a", "-F", "100%"],
        &["sub", "-t", "a", "-F", "\\q"],
        &["sub", "-t", "a", "-F", "%t", "--json"],
        &["sub", "-t", "a", "-F", "%t", "-v"],
        &["sub", "-t", "a", "-R", "--retained-only"],
        &["pub", "-t", "a", "-m", "x", "--will-payload", "p"],
        &["pub", "-t", "a", "-m", "x", "--will-retain"],
        &["pub", "-t", "a", "-m", "x", "--will-topic", "w/+"],
        &["sub", "-t", "a", "--will-topic", "w", "--will-qos", "3"],
    ];
    let dead = steadfast_chaos::free_port().to_string();
    for args in cases {
        let mut args: Vec<&str> = args.to_vec();
        args.extend(["-p", &dead, "--no-reconnect"]);
        let (code, stdout, stderr) = output(&args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_selects_and_formats_messages_like_mosquitto_sub() {
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let ps = port_s(port);
    mosquitto_pub(port, &["-t", "m/a", "-m", "one", "-r"]);
    mosquitto_pub(port, &["-t", "m/b", "-m", "two", "-r", "-q", "1"]);

    // -F: the % codes; the newline follows each message.
    let (code, out, err) = output(&[
        "sub",
        "-p",
        &ps,
        "-t",
        "m/#",
        "-q",
        "1",
        "-C",
        "2",
        "-F",
        "%t|%p|%q|%r|%l|%x|100%%",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["m/a|one|0|1|3|6f6e65|100%", "m/b|two|1|1|3|74776f|100%"]
    );
    assert!(out.ends_with('\n'));

    // %j: mosquitto_sub's JSON fields.
    let (code, out, err) = output(&["sub", "-p", &ps, "-t", "m/a", "-C", "1", "-F", "%j"]).await;
    assert_eq!(code, 0, "{err}");
    let j: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(
        keys(&j),
        sorted(&["tst", "topic", "qos", "retain", "payloadlen", "payload"])
    );
    assert_eq!(j["topic"], "m/a");
    assert_eq!(j["retain"], 1);
    assert_eq!(j["payloadlen"], 3);

    // -N: no newline.
    let (code, out, _) = output(&["sub", "-p", &ps, "-t", "m/a", "-C", "1", "-N"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "one");
    // -N with -F escapes: the format's own separator.
    let (code, out, _) = output(&[
        "sub", "-p", &ps, "-t", "m/#", "-C", "2", "-N", "-F", "%p\\t",
    ])
    .await;
    assert_eq!(code, 0);
    assert!(out == "one\ttwo\t" || out == "two\tone\t", "{out:?}");

    // -T: m/b is left out (and not counted for -C).
    let (code, out, _) = output(&["sub", "-p", &ps, "-t", "m/#", "-T", "m/b", "-C", "1"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "one\n");
    let (code, out, _) = output(&["sub", "-p", &ps, "-t", "m/#", "-T", "m/+", "-W", "1"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "");

    // -R: retained messages are left out; a live one is printed.
    let mut sub = Run::start(&["sub", "-p", &ps, "-t", "m/#", "-R", "-C", "1"]);
    let printed = {
        let line = sub.line();
        tokio::pin!(line);
        loop {
            tokio::select! {
                l = &mut line => break l,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    mosquitto_pub(port, &["-t", "m/live", "-m", "live"]);
                }
            }
        }
    };
    assert_eq!(printed, "live");
    assert_eq!(sub.exit().await, 0);

    // --retained-only: both retained ones, then exit 0 at the first live message, unprinted.
    let mut sub = Run::start(&["sub", "-p", &ps, "-t", "m/#", "--retained-only"]);
    let mut got = vec![sub.line().await, sub.line().await];
    got.sort();
    assert_eq!(got, ["one", "two"]);
    mosquitto_pub(port, &["-t", "m/live", "-m", "live"]);
    assert_eq!(sub.exit().await, 0);
    assert_eq!(
        tokio::time::timeout(T, sub.out.next_line())
            .await
            .unwrap()
            .unwrap(),
        None,
        "nothing after the retained messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_exits_once_subscribed_and_unsubscribes_a_stored_session() {
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();
    let ps = port_s(port);
    let id = format!("stf-e-{}", std::process::id());

    // -E: subscribes (into a persistent session: -c) and exits 0 once the SUBACK is in.
    let (code, out, err) = output(&[
        "sub", "-p", &ps, "-i", &id, "-c", "-q", "1", "-t", "e/#", "-E",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    // The session holds the subscription: a message published now waits for the client.
    mosquitto_pub(port, &["-t", "e/x", "-m", "queued", "-q", "1"]);
    let (code, out, err) = output(&[
        "sub", "-p", &ps, "-i", &id, "-c", "-q", "1", "-t", "e/#", "-C", "1",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "queued\n");

    // -U with -E: unsubscribes from the stored session and exits.
    let (code, out, err) = output(&["sub", "-p", &ps, "-i", &id, "-c", "-U", "e/#", "-E"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    mosquitto_pub(port, &["-t", "e/x", "-m", "after", "-q", "1"]);
    let (code, out, err) = output(&[
        "sub",
        "-p",
        &ps,
        "-i",
        &id,
        "-c",
        "-q",
        "1",
        "-t",
        "unrelated/t",
        "-W",
        "1",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "", "the unsubscribed filter no longer gets messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_is_published_when_the_client_dies_not_when_it_disconnects() {
    let broker = Mosquitto::start().unwrap();
    let ps = port_s(broker.port());
    let will = |topic: &'static str| {
        vec![
            "--will-topic",
            topic,
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
            "--will-retain",
        ]
    };
    // SIGKILL: the connection ends without DISCONNECT, so the broker publishes the (retained)
    // will.
    let mut args = vec!["sub", "-p", &ps, "-t", "w/in", "--events"];
    args.extend(will("w/killed"));
    let mut sub = Run::start(&args);
    sub.event("connected").await;
    sub.signal("-KILL");
    let (code, out, err) = output(&[
        "sub", "-p", &ps, "-t", "w/killed", "-q", "1", "-v", "-C", "1",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "w/killed gone\n");

    // Ctrl-C: a graceful DISCONNECT, and no will.
    let mut args = vec!["sub", "-p", &ps, "-t", "w/in", "--events"];
    args.extend(will("w/clean"));
    let mut sub = Run::start(&args);
    sub.event("connected").await;
    sub.signal("-INT");
    sub.event("disconnected").await;
    assert_eq!(sub.exit().await, 0);
    let (code, out, _) = output(&["sub", "-p", &ps, "-t", "w/clean", "-W", "1"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "", "no will after a clean disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_prints_the_library_log_without_secrets() {
    const SECRET: &str = "dbg-S3CRET-pw";
    let broker = Mosquitto::builder()
        .password("alice", SECRET)
        .start()
        .unwrap();
    let url = format!("mqtt://alice:{SECRET}@127.0.0.1:{}", broker.port());
    let (code, out, err) = output(&["sub", "-L", &url, "-t", "d/x", "-E", "-d"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    assert!(!err.contains(SECRET), "{err}");
    assert!(
        !err.contains('\x1b'),
        "no colours when stderr is not a terminal: {err:?}"
    );
    let span = format!(
        "connection{{attempt=1 server=mqtt://alice:***@127.0.0.1:{}}}",
        broker.port()
    );
    for needle in [
        " INFO ",
        "connecting",
        "connected",
        "subscribe",
        "disconnected",
        &span,
    ] {
        assert!(err.contains(needle), "no {needle:?} in:\n{err}");
    }
    // A refusal is logged with its reason (and still ends the run with exit 3).
    let bad = format!("mqtt://alice:wrong-{SECRET}@127.0.0.1:{}", broker.port());
    let (code, _, err) = output(&["sub", "-L", &bad, "-t", "d/x", "-d"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(!err.contains(SECRET), "{err}");
    assert!(
        err.contains("WARN") && err.contains("not authorized"),
        "{err}"
    );
    // Without -d, nothing of it.
    let (code, _, err) = output(&["sub", "-L", &url, "-t", "d/x", "-E"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
}

#[tokio::test]
async fn completions_man_page_and_help_come_from_the_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = output(&["completions", shell]).await;
        assert_eq!(code, 0, "{shell}: {err}");
        for flag in ["will-topic", "retained-only", "filter-out", "no-reconnect"] {
            assert!(out.contains(flag), "{shell} completions lack {flag}");
        }
    }
    let (code, out, err) = output(&["man"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(".ie") || out.contains(".TH steadfast 1"),
        "{out}"
    );
    for word in ["pub", "sub", "chaos", "completions"] {
        assert!(out.contains(word), "man page lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = output(&["man", "--dir", dir.path().to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let sub = std::fs::read_to_string(dir.path().join("steadfast-sub.1")).unwrap();
    assert!(
        sub.contains("retained\\-only") || sub.contains("retained-only"),
        "{sub}"
    );

    // Every subcommand's one-line help is current (no "not implemented").
    let (code, help, _) = output(&["--help"]).await;
    assert_eq!(code, 0);
    assert!(!help.contains("not implemented"), "{help}");
    for cmd in [
        "pub",
        "sub",
        "rr",
        "bench",
        "demo",
        "chaos",
        "completions",
        "man",
    ] {
        assert!(help.contains(cmd), "--help lacks {cmd}");
    }
    assert!(
        !help.lines().any(|l| l.trim_start().starts_with("broker ")),
        "the hidden broker stays hidden: {help}"
    );
}

/// A responder (the library): answers each request on `rr/req` on its Response Topic with
/// "re:" + payload, first with a decoy of other Correlation Data, then with the request's.
async fn responder(url: &str) -> steadfast::Client {
    use steadfast::{ClientBuilder, ClientEvent, Message, QoS};
    let (client, mut events) = ClientBuilder::from_url(url).unwrap().build().unwrap();
    client
        .subscribe("rr/req", QoS::AtLeastOnce)
        .await
        .expect("responder subscribed");
    let c = client.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let ClientEvent::Message(m) = ev else {
                continue;
            };
            let Some(to) = m.response_topic().map(str::to_string) else {
                continue;
            };
            let reply = |corr: Option<bytes::Bytes>, payload: Vec<u8>| {
                let reply = Message::new(to.as_str(), payload).qos(QoS::AtLeastOnce);
                match corr {
                    Some(corr) => reply.correlation_data(corr),
                    None => reply,
                }
            };
            let decoy = reply(Some(bytes::Bytes::from_static(b"nope")), b"decoy".to_vec());
            let _ = c.send(decoy).await;
            let mut answer = b"re:".to_vec();
            answer.extend_from_slice(m.payload());
            let _ = c.send(reply(m.correlation_data().cloned(), answer)).await;
        }
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rr_prints_the_matching_response() {
    let broker = Mosquitto::start().unwrap();
    let ps = port_s(broker.port());
    let _responder = responder(&broker.url()).await;
    let resp = format!("rr/resp/{}", std::process::id());

    let (code, out, err) = output(&[
        "rr", "-p", &ps, "-t", "rr/req", "-e", &resp, "-m", "ping", "-q", "1", "-W", "10",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out, "re:ping\n",
        "the decoy (other correlation data) is ignored"
    );

    let (code, out, err) = output(&[
        "rr", "-p", &ps, "-t", "rr/req", "-e", &resp, "-m", "json", "--json", "-W", "10",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let m: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(m["topic"], resp.as_str());
    assert_eq!(m["payload"], "re:json");
    // 16 hex digits, base64.
    assert_eq!(
        m["properties"]["correlation_data"].as_str().map(str::len),
        Some(24)
    );

    // Nobody answers: exit 1 after -W.
    let (code, out, err) = output(&[
        "rr",
        "-p",
        &ps,
        "-t",
        "rr/nobody",
        "-e",
        &resp,
        "-m",
        "x",
        "-W",
        "500ms",
    ])
    .await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "");
    assert!(err.contains("no response within 500ms"), "{err}");

    // MQTT 3.1.1 has no Response Topic; -e is a topic name, not a filter.
    for args in [
        &[
            "rr", "-p", &ps, "-t", "rr/req", "-e", "r", "-m", "x", "-V", "311",
        ][..],
        &["rr", "-p", &ps, "-t", "rr/req", "-e", "r/#", "-m", "x"][..],
        &["rr", "-p", &ps, "-t", "rr/req", "-m", "x"][..],
    ] {
        let (code, _, err) = output(args).await;
        assert_eq!(code, 2, "{args:?}: {err}");
    }
}
