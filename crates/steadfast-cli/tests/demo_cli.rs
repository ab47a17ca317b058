//! `steadfast demo` as a user runs it: the built binary, end to end, with the embedded broker,
//! against a private Mosquitto (`--url`), and over QUIC (`--transport quic`, the embedded QUIC
//! broker behind the UDP fault proxy). All use `--fast` (about 15 s instead of 35 s).
//!
//! Feature `demo` (on by default): the embedded brokers.
#![cfg(feature = "demo")]

use std::process::{Command, Output};

use serde_json::Value;
use steadfast_chaos::mosquitto::Mosquitto;

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");

fn demo(extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["demo", "--fast", "--json"])
        .args(extra)
        .output()
        .expect("run steadfast demo")
}

/// Checks the run (over TCP unless `quic`) and returns its JSON report (the last stdout
/// line).
fn report(out: &Output, quic: bool) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "exit code; {context}");
    assert!(
        !stdout.contains('\x1b'),
        "no ANSI codes when stdout is not a terminal; {context}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    let r: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}); {context}"));

    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing; {context}"))
    };
    assert_eq!(n("lost"), 0, "{context}");
    assert!(n("sent") > 0, "{context}");
    assert!(n("received") >= n("sent"), "{context}");
    assert_eq!(n("unique"), n("sent"), "{context}");
    assert_eq!(
        n("acked"),
        n("sent"),
        "every message acknowledged; {context}"
    );
    assert_eq!(r["passed"], Value::Bool(true), "{context}");
    assert_eq!(
        r["transport"].as_str(),
        Some(if quic { "quic" } else { "tcp" }),
        "{context}"
    );
    // Over TCP four faults hit both clients and the restart hits the subscriber; over QUIC
    // the short loss and the address change cost no reconnect.
    assert!(n("reconnects") >= if quic { 5 } else { 9 }, "{context}");
    assert!(!r["delays_ms"].as_array().unwrap().is_empty(), "{context}");

    let faults = r["faults"]
        .as_array()
        .unwrap_or_else(|| panic!("faults; {context}"));
    let ids: Vec<&str> = faults
        .iter()
        .map(|f| f["fault"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "network_drop",
            "half_open",
            "broker_close",
            "client_restart",
            "address_change"
        ],
        "{context}"
    );
    // Over QUIC the connections ride through the network drop (half a keep-alive of lost
    // datagrams) and the address change (the broker migrates them).
    let rides = |i: usize| quic && (i == 0 || i == 4);
    for (i, f) in faults.iter().enumerate() {
        let recover = f["recover_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("recover_ms of {f}; {context}"));
        assert!(recover < 15_000, "{f}; {context}");
        if rides(i) {
            assert_eq!(f["rode_through"], Value::Bool(true), "{f}; {context}");
            assert_eq!(f["reconnects"].as_u64(), Some(0), "{f}; {context}");
            assert_eq!(f["connections_lost"].as_u64(), Some(0), "{f}; {context}");
            assert_eq!(f["detect_ms"], Value::Null, "{f}; {context}");
            continue;
        }
        let detect = f["detect_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("detect_ms of {f}; {context}"));
        assert!(detect <= recover, "{f}; {context}");
        assert_eq!(f["rode_through"], Value::Bool(false), "{f}; {context}");
        let hit = if i == 3 { 1 } else { 2 };
        assert!(f["reconnects"].as_u64() >= Some(hit), "{f}; {context}");
    }
    // The silent link is found by the keep-alive (1 s with --fast): not at once, and within
    // 1.5 x keep-alive plus scheduling slack.
    let half_open = faults[1]["detect_ms"].as_u64().unwrap();
    assert!(
        (500..=4_000).contains(&half_open),
        "half-open detected after {half_open} ms; {context}"
    );
    // A reset (TCP) and a DISCONNECT are seen at once.
    if !quic {
        assert!(
            faults[0]["detect_ms"].as_u64().unwrap() < 1_000,
            "{context}"
        );
    }
    assert!(
        faults[2]["detect_ms"].as_u64().unwrap() < 1_000,
        "{context}"
    );
    // The restarted subscriber resumed its session and got what was published meanwhile.
    let restart = &faults[3];
    assert_eq!(
        restart["clients"]["subscriber"]["session_present"],
        Value::Bool(true),
        "{context}"
    );
    let away = restart["published_while_away"].as_u64().unwrap();
    assert!(away > 0, "{context}");
    assert_eq!(
        restart["delivered_after_restart"].as_u64(),
        Some(away),
        "{context}"
    );
    // The address change over TCP: the dead connections are found by the keep-alive.
    if !quic {
        let cut = faults[4]["detect_ms"].as_u64().unwrap();
        assert!(
            (500..=4_000).contains(&cut),
            "dead connections found after {cut} ms; {context}"
        );
        assert_eq!(faults[4]["connections_lost"].as_u64(), Some(2), "{context}");
    }
    // The human report comes first.
    assert!(stdout.contains("PASS: lost 0 of"), "{context}");
    assert!(stdout.contains("across 5 faults"), "{context}");
    r
}

#[test]
fn demo_with_the_embedded_broker_loses_nothing() {
    let r = report(&demo(&[]), false);
    assert!(r["broker"].as_str().unwrap().contains("rmqtt"), "{r}");
}

#[test]
fn demo_over_quic_survives_the_address_change_without_a_reconnect() {
    let out = demo(&["--transport", "quic"]);
    let r = report(&out, true);
    assert!(r["broker"].as_str().unwrap().contains("QUIC"), "{r}");
    // The broker restart kept the sessions: both clients resumed.
    let close = &r["faults"][2]["clients"];
    for role in ["publisher", "subscriber"] {
        assert_eq!(close[role]["session_present"], Value::Bool(true), "{r}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("MQTT 5 over QUIC"), "{stdout}");
    assert!(stdout.contains("QUIC migration"), "{stdout}");
}

#[test]
fn demo_against_a_real_broker_with_url() {
    let broker = Mosquitto::start().expect("start a private mosquitto");
    let r = report(&demo(&["--url", &broker.url()]), false);
    assert_eq!(
        r["broker_addr"].as_str(),
        Some(broker.addr().to_string().as_str()),
        "{r}"
    );
    assert!(r["broker"].as_str().unwrap().contains("external"), "{r}");
}

#[test]
fn demo_help_has_examples() {
    let out = Command::new(BIN).args(["demo", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("--url"), "{help}");
    assert!(help.contains("--json"), "{help}");
    assert!(help.contains("--transport"), "{help}");
}

#[test]
fn demo_rejects_a_url_the_proxy_cannot_carry() {
    for args in [
        &["demo", "--url", "wss://127.0.0.1:1"][..],
        &["demo", "--transport", "quic", "--url", "mqtt://127.0.0.1:1"],
        &["demo", "--transport", "sctp"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
