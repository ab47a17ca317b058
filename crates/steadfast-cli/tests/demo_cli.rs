//! `steadfast demo` as a user runs it: the built binary, end to end, with the embedded broker
//! and against a private Mosquitto (`--url`). Both use `--fast` (about 12 s instead of 30 s).
//!
//! Feature `demo` (on by default): the embedded broker.
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

/// Checks the run and returns its JSON report (the last stdout line).
fn report(out: &Output) -> Value {
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
    // Three faults hit both clients, the restart hits the subscriber.
    assert!(n("reconnects") >= 7, "{context}");
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
            "client_restart"
        ],
        "{context}"
    );
    for f in faults {
        let detect = f["detect_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("detect_ms of {f}; {context}"));
        let recover = f["recover_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("recover_ms of {f}; {context}"));
        assert!(detect <= recover, "{f}; {context}");
        assert!(recover < 15_000, "{f}; {context}");
    }
    // The silent link is found by the keep-alive (1 s with --fast): not at once, and within
    // 1.5 x keep-alive plus scheduling slack.
    let half_open = faults[1]["detect_ms"].as_u64().unwrap();
    assert!(
        (500..=4_000).contains(&half_open),
        "half-open detected after {half_open} ms; {context}"
    );
    // A reset and an injected DISCONNECT are seen at once.
    assert!(
        faults[0]["detect_ms"].as_u64().unwrap() < 1_000,
        "{context}"
    );
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
    // The human report comes first.
    assert!(stdout.contains("PASS: lost 0 of"), "{context}");
    r
}

#[test]
fn demo_with_the_embedded_broker_loses_nothing() {
    let r = report(&demo(&[]));
    assert!(r["broker"].as_str().unwrap().contains("rmqtt"), "{r}");
}

#[test]
fn demo_against_a_real_broker_with_url() {
    let broker = Mosquitto::start().expect("start a private mosquitto");
    let r = report(&demo(&["--url", &broker.url()]));
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
}

#[test]
fn demo_rejects_a_url_the_proxy_cannot_carry() {
    let out = Command::new(BIN)
        .args(["demo", "--url", "wss://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
