//! `steadfast bench` smoke tests (the benchmarks themselves are not run by the test command):
//! a short throughput run against a private Mosquitto, and a 50-client fleet with a short
//! broker outage, so that the code cannot rot.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use steadfast_chaos::mosquitto::Mosquitto;

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");

fn last_json_line(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {text}"))
}

fn run(args: &[&str], limit: Duration) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run steadfast");
    let deadline = std::time::Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "steadfast {args:?} did not finish within {limit:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn throughput_json_has_the_contract_keys_and_loses_nothing() {
    let broker = Mosquitto::start().expect("start mosquitto");
    for qos in ["0", "1", "2"] {
        let out = run(
            &[
                "bench",
                "-L",
                &broker.url(),
                "-q",
                qos,
                "--count",
                "200",
                "--json",
            ],
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = last_json_line(&out.stdout);
        for key in [
            "qos",
            "count",
            "payload_size",
            "elapsed_s",
            "msgs_per_s",
            "lost",
            "duplicates",
            "p50_us",
            "p99_us",
            "p999_us",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert_eq!(v["qos"].as_u64(), qos.parse::<u64>().ok());
        assert_eq!(v["count"], 200);
        assert_eq!(v["payload_size"], 64);
        assert_eq!(v["lost"], 0, "{v}");
        assert_eq!(v["duplicates"], 0, "{v}");
        assert_eq!(v["received"], 200, "{v}");
        assert!(v["msgs_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
        assert!(v["elapsed_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
        assert!(v["p99_us"].as_f64() >= v["p50_us"].as_f64(), "{v}");
    }
}

#[test]
fn several_publishers_and_subscribers() {
    let broker = Mosquitto::start().expect("start mosquitto");
    let out = run(
        &[
            "bench",
            "-L",
            &broker.url(),
            "-q",
            "1",
            "--count",
            "300",
            "--publishers",
            "3",
            "--subscribers",
            "2",
            "--payload-size",
            "100",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json_line(&out.stdout);
    assert_eq!(v["expected"], 600, "{v}");
    assert_eq!(v["received"], 600, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    // Not a terminal: no progress line, so the output is the report only.
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\r'));
}

#[test]
fn too_small_payload_is_a_usage_error() {
    let out = run(&["bench", "--payload-size", "8"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn fleet_with_a_short_outage() {
    let out = run(
        &[
            "bench",
            "--spawn-broker",
            "--clients",
            "50",
            "--outage",
            "1s",
            "--reconnect-min",
            "100ms",
            "--reconnect-max",
            "1s",
            "--fixed-interval",
            "200ms",
            "--json",
        ],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = last_json_line(&out.stdout);
    assert_eq!(v["clients"], 50, "{v}");
    assert!(v["memory_per_client_bytes"].as_f64().is_some(), "{v}");
    let policies = v["policies"].as_array().expect("policies");
    let names: Vec<&str> = policies
        .iter()
        .filter_map(|p| p["policy"].as_str())
        .collect();
    assert_eq!(names, ["default", "none", "fixed"], "{v}");
    for p in policies {
        assert_eq!(p["resubscribed"], 50, "{p}");
        assert_eq!(p["verified"], true, "{p}");
        // Every client came back, so the proxies saw at least one CONNECT per client.
        assert!(
            p["attempts_after_restart"].as_u64().unwrap_or(0) >= 50,
            "{p}"
        );
        assert!(p["peak_attempts_per_s"].as_u64().unwrap_or(0) >= 1, "{p}");
        assert!(p["recovery_s"].as_f64().is_some(), "{p}");
    }
    // No backoff hammers the broker while it is down; a backoff does not.
    let attempts = |name: &str| {
        policies
            .iter()
            .find(|p| p["policy"] == name)
            .and_then(|p| p["attempts_while_down"].as_u64())
            .unwrap_or(0)
    };
    assert!(attempts("none") > attempts("default"), "{v}");
}
