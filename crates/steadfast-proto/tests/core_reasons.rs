//! Spec "What a refusal or a disconnect means": every row of the table, through CONNACK and
//! through a server DISCONNECT, for both protocol versions where the version can express it.
//!
//! The codec accepts only the reason codes MQTT 5 allows in each packet, so a row is tested
//! through CONNACK for the codes valid in CONNACK, and through DISCONNECT for those valid in
//! DISCONNECT (MQTT 3.1.1 has no server DISCONNECT and only return codes 1..5).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_proto::policy::ReasonClass;
use steadfast_proto::{
    Action, Lifecycle, Packet, PacketType, Properties, Props, ProtocolVersion, Reason, ReasonCode,
    State, TransportError,
};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

fn rc(code: u8) -> ReasonCode {
    ReasonCode::try_from(code).expect("defined code")
}

fn in_connack(code: u8) -> bool {
    rc(code).is_valid_for(PacketType::ConnAck)
}

fn in_disconnect(code: u8) -> bool {
    rc(code).is_valid_for(PacketType::Disconnect)
}

/// How a refusal or disconnect is delivered.
#[derive(Debug, Clone, Copy)]
enum Via {
    Connack,
    Disconnect,
}

/// Starts, and refuses the first attempt (or accepts it and then disconnects) with `code`.
/// Returns the lifecycle events of the failure.
fn refuse(h: &mut Harness, via: Via, code: ReasonCode, props: Properties) -> Vec<Lifecycle> {
    match via {
        Via::Connack => {
            h.expect_connect_action();
            h.open();
            h.sent();
            h.connack(false, code, props);
        }
        Via::Disconnect => {
            h.connect(false);
            h.events();
            h.sent();
            h.server_disconnect(code, props);
        }
    }
    h.lifecycle()
}

fn new(version: ProtocolVersion) -> Harness {
    let mut h = Harness::v(version);
    h.start();
    h.events();
    h
}

fn reason_of(ev: &[Lifecycle]) -> Reason {
    ev.iter()
        .find_map(|e| match e {
            Lifecycle::ConnectFailed { reason, .. } | Lifecycle::ConnectionLost { reason, .. } => {
                Some(reason.clone())
            }
            _ => None,
        })
        .expect("a failure event")
}

fn assert_no_retry(h: &mut Harness, what: &str) {
    assert_eq!(h.conn.state(), State::Failed, "{what}");
    assert_eq!(
        h.conn.poll_timeout(),
        None,
        "{what}: no deadline after a fatal refusal"
    );
    h.advance(Duration::from_secs(24 * 3600));
    assert!(
        !h.any_connect_action(),
        "{what}: no Connect action after Fatal"
    );
    assert!(h.lifecycle().is_empty());
}

// ----------------------------------------------------------------------------------------
// Fatal

const FATAL: [u8; 6] = [0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C];

fn check_fatal(h: &mut Harness, via: Via, code: ReasonCode) {
    let what = format!("{via:?} {code:?} {}", h.version);
    let ev = refuse(h, via, code, Properties::default());
    let reason = match via {
        Via::Connack => Reason::Refused {
            code,
            reason_string: None,
        },
        Via::Disconnect => Reason::ServerDisconnect {
            code,
            reason_string: None,
        },
    };
    let fail = match via {
        Via::Connack => Lifecycle::ConnectFailed {
            attempt: 1,
            reason: reason.clone(),
        },
        Via::Disconnect => Lifecycle::ConnectionLost {
            reason: reason.clone(),
            uptime: Duration::ZERO,
        },
    };
    assert_eq!(
        ev,
        vec![
            fail,
            Lifecycle::Fatal {
                reason: reason.clone()
            }
        ],
        "{what}"
    );
    // The reason's name is reported.
    assert!(
        reason
            .to_string()
            .to_lowercase()
            .contains(&code.name().to_lowercase()),
        "{what}: {reason}"
    );
    assert_eq!(reason.reason_code(), Some(code));
    assert!(h.actions().contains(&Action::Close));
    assert_no_retry(h, &what);
}

#[test]
fn fatal_connack_v5() {
    for code in FATAL {
        assert!(in_connack(code));
        check_fatal(&mut new(V5), Via::Connack, rc(code));
    }
}

#[test]
fn fatal_connack_v311_return_codes() {
    for (ret, code) in [(1u8, 0x84u8), (2, 0x85), (4, 0x86), (5, 0x87)] {
        let mapped = ReasonCode::from_v311_connack(ret).unwrap();
        assert_eq!(mapped, rc(code));
        let mut h = new(V311);
        // Send the raw 3.1.1 CONNACK bytes to be sure of the wire form.
        h.expect_connect_action();
        h.open();
        h.sent();
        h.reply_bytes(&[0x20, 0x02, 0x00, ret]);
        let ev = h.lifecycle();
        assert_eq!(
            ev[1],
            Lifecycle::Fatal {
                reason: Reason::Refused {
                    code: mapped,
                    reason_string: None
                }
            },
            "return code {ret}"
        );
        assert_no_retry(&mut h, &format!("3.1.1 return code {ret}"));
        // Also through the codec.
        check_fatal(&mut new(V311), Via::Connack, mapped);
    }
}

#[test]
fn fatal_disconnect_v5() {
    let mut n = 0;
    for code in FATAL.into_iter().filter(|c| in_disconnect(*c)) {
        check_fatal(&mut new(V5), Via::Disconnect, rc(code));
        n += 1;
    }
    assert!(n >= 1, "0x87 Not authorized is valid in DISCONNECT");
}

#[test]
fn reason_string_is_reported() {
    let mut h = new(V5);
    let props = Properties {
        reason_string: Some("go away".into()),
        ..Properties::default()
    };
    let ev = refuse(&mut h, Via::Connack, ReasonCode::Banned, props);
    let reason = reason_of(&ev);
    assert_eq!(
        reason,
        Reason::Refused {
            code: ReasonCode::Banned,
            reason_string: Some("go away".into())
        }
    );
    assert!(reason.to_string().contains("go away"));
}

#[test]
fn tls_certificate_rejection_is_fatal() {
    for v in VERSIONS {
        let mut h = new(v);
        h.expect_connect_action();
        h.transport_error(TransportError::TlsFatal("unknown issuer".into()));
        let reason = Reason::Transport(TransportError::TlsFatal("unknown issuer".into()));
        assert_eq!(
            h.lifecycle(),
            [
                Lifecycle::ConnectFailed {
                    attempt: 1,
                    reason: reason.clone()
                },
                Lifecycle::Fatal { reason }
            ]
        );
        assert_no_retry(&mut h, "tls");
        // Any other TLS failure is transient.
        let mut h = new(v);
        h.expect_connect_action();
        h.transport_error(TransportError::Tls("handshake eof".into()));
        assert_eq!(delays(&h.lifecycle()), [secs(1)]);
    }
}

#[test]
fn fatal_can_be_overridden_by_the_reason_hook() {
    for v in VERSIONS {
        let mut h = new(v);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        h.conn.set_reason_hook(Box::new(move |reason, class| {
            log.lock().unwrap().push((reason.clone(), class));
            if class == ReasonClass::Fatal {
                ReasonClass::Transient
            } else {
                class
            }
        }));
        let ev = refuse(
            &mut h,
            Via::Connack,
            ReasonCode::BadUserNameOrPassword,
            Properties::default(),
        );
        assert_eq!(delays(&ev), [secs(1)], "{v}: retried with backoff");
        assert!(!ev.iter().any(|e| matches!(e, Lifecycle::Fatal { .. })));
        assert_eq!(h.conn.state(), State::Backoff);
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [(
                Reason::Refused {
                    code: ReasonCode::BadUserNameOrPassword,
                    reason_string: None
                },
                ReasonClass::Fatal
            )]
        );
        h.advance(secs(1));
        assert_eq!(h.expect_connect_action(), SERVER);
    }
}

#[test]
fn the_hook_can_make_a_takeover_fatal() {
    let mut h = new(V5);
    h.conn.set_reason_hook(Box::new(|_, class| {
        if class == ReasonClass::Takeover {
            ReasonClass::Fatal
        } else {
            class
        }
    }));
    let ev = refuse(
        &mut h,
        Via::Disconnect,
        ReasonCode::SessionTakenOver,
        Properties::default(),
    );
    assert!(matches!(ev.last(), Some(Lifecycle::Fatal { .. })));
    assert_no_retry(&mut h, "takeover made fatal");
}

// ----------------------------------------------------------------------------------------
// Slow down and takeover: delay >= max / 4 and growing

const SLOW_DOWN: [u8; 3] = [0x89, 0x97, 0x9F];

/// Four refusals in a row with `code`: returns the delays.
fn repeated(version: ProtocolVersion, via: Via, code: ReasonCode, times: usize) -> Vec<Duration> {
    let mut h = new(version);
    let mut out = vec![];
    for _ in 0..times {
        let ev = refuse(&mut h, via, code, Properties::default());
        let d = delays(&ev);
        assert_eq!(d.len(), 1, "{ev:?}");
        out.push(d[0]);
        h.advance(d[0]);
    }
    out
}

#[test]
fn slow_down_jumps_to_a_quarter_of_max_and_grows() {
    for code in SLOW_DOWN {
        for via in [Via::Connack, Via::Disconnect] {
            let ok = match via {
                Via::Connack => in_connack(code),
                Via::Disconnect => in_disconnect(code),
            };
            assert!(ok, "{code:#x} {via:?}");
            let d = repeated(V5, via, rc(code), 4);
            // max 60 s: 15, 30, 60, 60 (the plain backoff would be 1, 2, 4, 8).
            assert_eq!(d, [15, 30, 60, 60].map(secs), "{code:#x} {via:?}");
        }
    }
}

#[test]
fn slow_down_floor_applies_with_jitter_too() {
    let mut c = config(V5);
    c.rng_seed = 99;
    let mut h = Harness::new(c); // default: rising decorrelated, 1 s .. 60 s
    h.start();
    let mut prev = Duration::ZERO;
    for i in 0..3 {
        let ev = refuse(
            &mut h,
            Via::Connack,
            ReasonCode::ServerBusy,
            Properties::default(),
        );
        let d = delays(&ev)[0];
        assert!(d >= secs(15), "{i}: {d:?}");
        assert!(d >= prev, "{i}: still growing");
        prev = d;
        h.advance(d);
    }
}

#[test]
fn takeover_is_reported_then_retried_as_slow_down() {
    let mut h = new(V5);
    let ev = refuse(
        &mut h,
        Via::Disconnect,
        ReasonCode::SessionTakenOver,
        Properties::default(),
    );
    let reason = reason_of(&ev);
    assert_eq!(
        reason,
        Reason::ServerDisconnect {
            code: ReasonCode::SessionTakenOver,
            reason_string: None
        }
    );
    assert_eq!(reason.reason_code(), Some(ReasonCode::SessionTakenOver));
    assert_eq!(reason.initiator(), steadfast_proto::Initiator::Remote);
    assert!(matches!(ev[0], Lifecycle::ConnectionLost { .. }));
    assert_eq!(delays(&ev), [secs(15)]);
    // Taken over again right after every reconnect: the delay keeps growing.
    assert_eq!(
        repeated(V5, Via::Disconnect, ReasonCode::SessionTakenOver, 4),
        [15, 30, 60, 60].map(secs)
    );
}

#[test]
fn slow_down_floor_resets_after_a_stable_connection() {
    let mut h = new(V5);
    let ev = refuse(
        &mut h,
        Via::Connack,
        ReasonCode::ServerBusy,
        Properties::default(),
    );
    h.advance(delays(&ev)[0]);
    h.connect(false);
    h.advance_answering_pings(secs(31));
    h.events();
    h.io_error();
    assert_eq!(delays(&h.lifecycle()), [secs(1)]);
}

// ----------------------------------------------------------------------------------------
// Redirect

fn reference(server: &str) -> Properties {
    Properties {
        server_reference: Some(server.into()),
        ..Properties::default()
    }
}

#[test]
fn temporary_redirect_goes_to_the_reference_once() {
    for via in [Via::Connack, Via::Disconnect] {
        let mut h = new(V5);
        let ev = refuse(
            &mut h,
            via,
            ReasonCode::UseAnotherServer,
            reference("mqtt://other:1883"),
        );
        assert!(
            delays(&ev).is_empty(),
            "{via:?}: a redirect is followed at once: {ev:?}"
        );
        assert!(
            matches!(ev.last(), Some(Lifecycle::Connecting { server, .. }) if server == "mqtt://other:1883")
        );
        assert_eq!(h.expect_connect_action(), "mqtt://other:1883");
        // That attempt fails: later attempts go back to the configured server.
        h.io_error();
        h.advance_to_next_timeout();
        assert_eq!(
            h.expect_connect_action(),
            SERVER,
            "{via:?}: 0x9C does not replace the server"
        );
    }
}

#[test]
fn permanent_redirect_replaces_the_configured_server() {
    for via in [Via::Connack, Via::Disconnect] {
        let mut h = new(V5);
        let ev = refuse(
            &mut h,
            via,
            ReasonCode::ServerMoved,
            reference("mqtt://new:1883"),
        );
        assert!(delays(&ev).is_empty());
        assert_eq!(h.expect_connect_action(), "mqtt://new:1883");
        h.io_error();
        h.advance_to_next_timeout();
        assert_eq!(
            h.expect_connect_action(),
            "mqtt://new:1883",
            "{via:?}: 0x9D replaces the server"
        );
        h.open();
        h.sent();
        h.connack(false, ReasonCode::Success, Properties::default());
        let ev = h.lifecycle();
        assert!(ev.iter().any(
            |e| matches!(e, Lifecycle::Connected { server, .. } if server == "mqtt://new:1883")
        ));
        h.io_error();
        h.advance_to_next_timeout();
        assert_eq!(h.expect_connect_action(), "mqtt://new:1883");
    }
}

#[test]
fn at_most_three_redirects_in_a_row() {
    let mut h = new(V5);
    let mut servers = vec![h.expect_connect_action()];
    for i in 1..=4 {
        h.open();
        h.sent();
        h.connack(
            false,
            ReasonCode::UseAnotherServer,
            reference(&format!("mqtt://r{i}:1883")),
        );
        let ev = h.lifecycle();
        if i <= 3 {
            assert!(delays(&ev).is_empty(), "redirect {i} followed at once");
        } else {
            assert_eq!(delays(&ev), [secs(1)], "the fourth is treated as transient");
            h.advance(secs(1));
        }
        servers.push(h.expect_connect_action());
    }
    assert_eq!(
        servers,
        [
            SERVER,
            "mqtt://r1:1883",
            "mqtt://r2:1883",
            "mqtt://r3:1883",
            SERVER
        ]
    );
}

#[test]
fn redirect_without_a_server_reference_is_transient() {
    for code in [ReasonCode::UseAnotherServer, ReasonCode::ServerMoved] {
        for via in [Via::Connack, Via::Disconnect] {
            let mut h = new(V5);
            let ev = refuse(&mut h, via, code, Properties::default());
            assert_eq!(delays(&ev), [secs(1)], "{code:?} {via:?}");
            h.advance(secs(1));
            assert_eq!(h.expect_connect_action(), SERVER);
        }
    }
}

/// A harness whose one configured server is `url`, started.
fn new_with_server(url: &str) -> Harness {
    let mut c = config(V5);
    c.servers = vec![server(url)];
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    h.events();
    h
}

/// The user name and password of the CONNECT the client sends on the next transport.
fn connect_credentials(h: &mut Harness) -> (Option<String>, Option<Vec<u8>>) {
    h.open();
    let sent = h.sent();
    let Some(Packet::Connect(c)) = sent.first() else {
        panic!("expected CONNECT, got {sent:?}");
    };
    (
        c.username.as_ref().map(|u| u.to_string()),
        c.password.as_ref().map(|p| p.to_vec()),
    )
}

#[test]
fn every_reference_form_is_followed_and_inherits_from_the_redirecting_server() {
    // MQTT 5.0 section 4.11: the format is the implementation's; brokers send these.
    let cases = [
        ("broker2.example", "mqtts://user:***@broker2.example:8883"),
        (
            "broker2.example:8883",
            "mqtts://user:***@broker2.example:8883",
        ),
        ("10.10.151.22:8883", "mqtts://user:***@10.10.151.22:8883"),
        ("10.10.151.22", "mqtts://user:***@10.10.151.22:8883"),
        ("[::1]:1884", "mqtts://user:***@[::1]:1884"),
        ("[::1]", "mqtts://user:***@[::1]:8883"),
        ("::1", "mqtts://user:***@[::1]:8883"),
        // A URL keeps its own scheme; without user info it keeps the credentials.
        ("mqtt://other:1999", "mqtt://user:***@other:1999"),
        (
            "wss://ws.example/mqtt",
            "wss://user:***@ws.example:443/mqtt",
        ),
    ];
    for code in [ReasonCode::UseAnotherServer, ReasonCode::ServerMoved] {
        for via in [Via::Connack, Via::Disconnect] {
            for (reference_text, expected) in cases {
                let mut h = new_with_server("mqtts://user:pw@broker:8883");
                let ev = refuse(&mut h, via, code, reference(reference_text));
                assert!(delays(&ev).is_empty(), "{reference_text}: followed at once");
                assert!(
                    matches!(ev.last(), Some(Lifecycle::Connecting { server, .. }) if server == expected),
                    "{code:?} {via:?} {reference_text}: {ev:?}"
                );
                let target = h.expect_connect_action();
                assert_eq!(target, expected, "{code:?} {via:?} {reference_text}");
                assert_eq!(
                    connect_credentials(&mut h),
                    (Some("user".into()), Some(b"pw".to_vec())),
                    "{reference_text}: the credentials of the server that redirected"
                );
            }
        }
    }
}

#[test]
fn a_reference_url_with_its_own_credentials_uses_them() {
    let mut h = new_with_server("mqtts://user:pw@broker:8883");
    refuse(
        &mut h,
        Via::Connack,
        ReasonCode::UseAnotherServer,
        reference("mqtt://other%40x:s3cret@b3:1"),
    );
    let target = h.expect_connect_action();
    assert_eq!(target, "mqtt://other%40x:***@b3:1");
    assert!(!format!("{target:?} {target}").contains("s3cret"));
    assert_eq!(
        connect_credentials(&mut h),
        (Some("other@x".into()), Some(b"s3cret".to_vec()))
    );
}

#[test]
fn a_reference_list_is_tried_in_order_then_the_configured_server() {
    for via in [Via::Connack, Via::Disconnect] {
        let mut h = new(V5);
        refuse(
            &mut h,
            via,
            ReasonCode::UseAnotherServer,
            reference("  b1.example:1884 [::1]:1885\tmqtts://b3.example "),
        );
        let mut tried = vec![];
        for _ in 0..4 {
            tried.push(h.expect_connect_action().to_string());
            h.io_error();
            h.advance_to_next_timeout();
        }
        assert_eq!(
            tried,
            [
                "mqtt://b1.example:1884",
                "mqtt://[::1]:1885",
                "mqtts://b3.example:8883",
                SERVER
            ],
            "{via:?}"
        );
        assert_eq!(h.expect_connect_action(), SERVER, "{via:?}: not stored");
    }
}

#[test]
fn a_permanent_redirect_to_a_list_replaces_the_server_with_the_list() {
    let mut h = new(V5);
    refuse(
        &mut h,
        Via::Connack,
        ReasonCode::ServerMoved,
        reference("n1:1884 n2:1885"),
    );
    let mut tried = vec![];
    for _ in 0..3 {
        tried.push(h.expect_connect_action().to_string());
        h.io_error();
        h.advance_to_next_timeout();
    }
    assert_eq!(
        tried,
        ["mqtt://n1:1884", "mqtt://n2:1885", "mqtt://n1:1884"],
        "the configured server is gone"
    );
}

#[test]
fn a_reference_that_does_not_parse_is_reported_ignored_and_transient() {
    let garbage = [
        "not a server!",
        "mqtt://",
        "http://elsewhere:80",
        "[::1",
        "[::1]x",
        "host:",
        "host:99999",
        "host:0",
        "b1:1884 b2:notaport",
        "mqtt://u:hunter2@h:0",
    ];
    for code in [ReasonCode::UseAnotherServer, ReasonCode::ServerMoved] {
        for via in [Via::Connack, Via::Disconnect] {
            for text in garbage {
                let mut h = new(V5);
                let ev = refuse(&mut h, via, code, reference(text));
                let reported = ev.iter().find_map(|e| match e {
                    Lifecycle::BadServerReference { reference, error } => {
                        Some(format!("{reference} {error} {e:?}"))
                    }
                    _ => None,
                });
                let reported = reported.unwrap_or_else(|| panic!("{text:?} not reported: {ev:?}"));
                assert!(!reported.contains("hunter2"), "{reported}");
                assert_eq!(
                    delays(&ev),
                    [secs(1)],
                    "{code:?} {via:?} {text:?}: transient"
                );
                h.advance(secs(1));
                assert_eq!(h.expect_connect_action(), SERVER, "{text:?}: not stored");
                h.io_error();
                h.advance_to_next_timeout();
                assert_eq!(h.expect_connect_action(), SERVER, "{text:?}: never stored");
            }
        }
    }
}

#[test]
fn garbage_from_a_redirect_target_goes_back_to_the_configured_server() {
    let mut h = new(V5);
    refuse(
        &mut h,
        Via::Connack,
        ReasonCode::UseAnotherServer,
        reference("b1:1884 b2:1885"),
    );
    assert_eq!(h.expect_connect_action(), "mqtt://b1:1884");
    h.open();
    h.sent();
    h.connack(false, ReasonCode::UseAnotherServer, reference("%%%"));
    let ev = h.lifecycle();
    assert!(names(&ev).contains(&"bad_server_reference"), "{ev:?}");
    h.advance_to_next_timeout();
    assert_eq!(h.expect_connect_action(), SERVER);
}

#[test]
fn a_server_url_credentials_go_into_connect_unless_explicit_ones_are_set() {
    let mut h = new_with_server("mqtt://url%2Duser:url%3Apass@broker");
    h.expect_connect_action();
    assert_eq!(
        connect_credentials(&mut h),
        (Some("url-user".into()), Some(b"url:pass".to_vec()))
    );
    let mut c = config(V5);
    c.servers = vec![server("mqtt://url-user:url-pass@broker")];
    c.username = Some("explicit".into());
    c.password = Some(bytes::Bytes::from_static(b"explicit-pass"));
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    h.expect_connect_action();
    assert_eq!(
        connect_credentials(&mut h),
        (Some("explicit".into()), Some(b"explicit-pass".to_vec()))
    );
}

#[test]
fn passwords_never_show_in_connect_events() {
    let mut h = new_with_server("mqtt://user:hunter2@broker");
    h.expect_connect_action();
    h.open();
    h.sent();
    h.connack(false, ReasonCode::Success, Properties::default());
    let events = h.events();
    let shown = format!("{events:?}");
    assert!(shown.contains("mqtt://user:***@broker:1883"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    for e in h.conn.config().servers.iter() {
        assert!(!format!("{e} {e:?}").contains("hunter2"));
    }
    assert!(!format!("{:?}", h.conn.config()).contains("hunter2"));
}

// ----------------------------------------------------------------------------------------
// Transient

const TRANSIENT: [u8; 6] = [0x80, 0x83, 0x88, 0x8B, 0x8D, 0x98];

#[test]
fn transient_codes_use_the_normal_backoff() {
    let mut covered = std::collections::HashSet::new();
    for code in TRANSIENT {
        for via in [Via::Connack, Via::Disconnect] {
            let ok = match via {
                Via::Connack => in_connack(code),
                Via::Disconnect => in_disconnect(code),
            };
            if !ok {
                continue;
            }
            covered.insert(code);
            let d = repeated(V5, via, rc(code), 4);
            assert_eq!(d, [1, 2, 4, 8].map(secs), "{code:#x} {via:?}");
        }
    }
    assert_eq!(
        covered.len(),
        TRANSIENT.len(),
        "every transient code is tested one way or the other"
    );
}

#[test]
fn v311_server_unavailable_is_transient() {
    let mut h = new(V311);
    h.expect_connect_action();
    h.open();
    h.sent();
    h.reply_bytes(&[0x20, 0x02, 0x00, 0x03]);
    let ev = h.lifecycle();
    assert_eq!(
        reason_of(&ev),
        Reason::Refused {
            code: ReasonCode::ServerUnavailable,
            reason_string: None
        }
    );
    assert_eq!(delays(&ev), [secs(1)]);
}

#[test]
fn io_errors_dns_and_eof_are_transient() {
    for v in VERSIONS {
        for e in [
            TransportError::Io("refused".into()),
            TransportError::Dns("nxdomain".into()),
            TransportError::Closed,
        ] {
            // While connecting.
            let mut h = new(v);
            h.expect_connect_action();
            h.transport_error(e.clone());
            let ev = h.lifecycle();
            assert_eq!(reason_of(&ev), Reason::Transport(e.clone()));
            assert_eq!(delays(&ev), [secs(1)]);
            // Once connected.
            let mut h = new(v);
            h.connect(false);
            h.lifecycle();
            h.advance(secs(3));
            h.transport_error(e.clone());
            let ev = h.lifecycle();
            assert_eq!(
                ev[0],
                Lifecycle::ConnectionLost {
                    reason: Reason::Transport(e.clone()),
                    uptime: secs(3)
                }
            );
            assert_eq!(
                reason_of(&ev).initiator(),
                steadfast_proto::Initiator::Remote
            );
            assert_eq!(delays(&ev), [secs(1)]);
        }
    }
}

#[test]
fn normal_server_disconnect_is_transient() {
    let mut h = new(V5);
    let ev = refuse(
        &mut h,
        Via::Disconnect,
        ReasonCode::Success,
        Properties::default(),
    );
    assert_eq!(delays(&ev), [secs(1)]);
}

// ----------------------------------------------------------------------------------------
// Broker misbehaved

#[test]
fn malformed_bytes_after_connack() {
    for v in VERSIONS {
        let mut h = new(v);
        h.connect(false);
        h.events();
        h.actions();
        // PUBLISH QoS 1 whose topic length runs past the packet.
        h.reply_bytes(&[0x32, 0x04, 0x00, 0x10, b'a', b'b']);
        let sent = h.sent();
        if v == V5 {
            assert_eq!(
                sent,
                vec![steadfast_proto::Packet::Disconnect(
                    steadfast_proto::Disconnect {
                        reason: ReasonCode::MalformedPacket,
                        properties: Props::new()
                    }
                )],
                "DISCONNECT 0x81 is sent first"
            );
        } else {
            assert!(
                sent.is_empty(),
                "3.1.1 has no reason codes in DISCONNECT: {sent:?}"
            );
        }
        assert_eq!(h.actions(), [Action::Close]);
        let ev = h.lifecycle();
        match reason_of(&ev) {
            Reason::ProtocolViolation { code, .. } => assert_eq!(code, ReasonCode::MalformedPacket),
            other => panic!("{other:?}"),
        }
        assert!(matches!(ev[0], Lifecycle::ConnectionLost { .. }));
        assert_eq!(
            reason_of(&ev).initiator(),
            steadfast_proto::Initiator::Library
        );
        assert_eq!(delays(&ev), [secs(1)]);
        h.advance(secs(1));
        assert_eq!(h.expect_connect_action(), SERVER);
    }
}

#[test]
fn malformed_connack() {
    for v in VERSIONS {
        let mut h = new(v);
        h.expect_connect_action();
        h.open();
        h.sent();
        // Reserved bits set in the acknowledge flags.
        h.reply_bytes(&[0x20, 0x02, 0xFE, 0x00]);
        let ev = h.lifecycle();
        assert!(
            matches!(
                ev[0],
                Lifecycle::ConnectFailed {
                    attempt: 1,
                    reason: Reason::ProtocolViolation { .. }
                }
            ),
            "{ev:?}"
        );
        assert_eq!(delays(&ev), [secs(1)]);
        if v == V5 {
            assert!(
                matches!(h.sent().as_slice(), [steadfast_proto::Packet::Disconnect(d)] if d.reason == ReasonCode::MalformedPacket)
            );
        }
    }
}

#[test]
fn out_of_order_packets_are_protocol_errors() {
    for v in VERSIONS {
        // Anything but CONNACK first.
        let mut h = new(v);
        h.expect_connect_action();
        h.open();
        h.sent();
        h.reply(steadfast_proto::Packet::PingResp);
        let ev = h.lifecycle();
        assert!(
            matches!(
                &ev[0],
                Lifecycle::ConnectFailed {
                    reason: Reason::ProtocolViolation {
                        code: ReasonCode::ProtocolError,
                        ..
                    },
                    ..
                }
            ),
            "{ev:?}"
        );
        assert_eq!(delays(&ev), [secs(1)]);
        // A second CONNACK.
        let mut h = new(v);
        h.connect(false);
        h.events();
        h.connack(false, ReasonCode::Success, Properties::default());
        let ev = h.lifecycle();
        assert!(
            matches!(
                &ev[0],
                Lifecycle::ConnectionLost {
                    reason: Reason::ProtocolViolation {
                        code: ReasonCode::ProtocolError,
                        ..
                    },
                    ..
                }
            ),
            "{ev:?}"
        );
    }
}

#[test]
fn a_url_with_only_a_password_sends_an_empty_user_name_in_both_versions() {
    for v in [ProtocolVersion::V311, V5] {
        let mut c = config(v);
        c.servers = vec![server("mqtt://:token@broker")];
        let mut h = Harness::with_backoff(c, no_jitter());
        h.start();
        h.expect_connect_action();
        assert_eq!(
            connect_credentials(&mut h),
            (Some(String::new()), Some(b"token".to_vec())),
            "{v}"
        );
    }
}

/// One attempt that the broker closes (EOF) after the CONNECT, before CONNACK.
fn closed_before_connack(h: &mut Harness) {
    h.expect_connect_action();
    h.open();
    assert!(
        matches!(h.sent().as_slice(), [steadfast_proto::Packet::Connect(_)]),
        "the CONNECT went out"
    );
    h.transport_error(TransportError::Closed);
}

fn closed_before_connack_reasons(events: &[Lifecycle]) -> Vec<(ProtocolVersion, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Lifecycle::ConnectFailed {
                reason:
                    Reason::ClosedBeforeConnack {
                        protocol,
                        consecutive,
                    },
                ..
            } => Some((*protocol, *consecutive)),
            _ => None,
        })
        .collect()
}

/// A broker that closes every MQTT 5 CONNECT without CONNACK (RabbitMQ 3.10) and has never
/// accepted this client: each attempt fails with `ClosedBeforeConnack` (counted, and saying
/// that the broker may not speak MQTT 5), and the third in a row is `Fatal`, not a loop.
#[test]
fn v5_closed_before_connack_three_times_on_a_new_client_is_fatal() {
    let mut h = Harness::with_backoff(config(V5), no_jitter());
    h.start();
    for i in 0..steadfast_proto::CLOSED_BEFORE_CONNACK_FATAL {
        if i > 0 {
            h.advance_to_next_timeout();
        }
        closed_before_connack(&mut h);
    }
    let ev = h.lifecycle();
    assert_eq!(
        closed_before_connack_reasons(&ev),
        [(V5, 1), (V5, 2), (V5, 3)]
    );
    let fatal: Vec<&Reason> = ev
        .iter()
        .filter_map(|e| match e {
            Lifecycle::Fatal { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(fatal.len(), 1, "{ev:?}");
    let text = fatal[0].to_string();
    assert!(
        text.contains("before CONNACK") && text.contains("MQTT 5"),
        "{text}"
    );
    assert_eq!(h.conn.state(), State::Failed);
    assert!(!h.any_connect_action(), "no attempt after Fatal");
}

/// The same closes are retried for ever (with backoff) when the client has been connected
/// before (a broker restarting), with MQTT 3.1.1 (nothing to fall back to), and when another
/// kind of failure (connection refused while the broker is down) breaks the series.
#[test]
fn closed_before_connack_is_transient_after_a_connection_or_with_v311() {
    // Connected once, then the broker keeps closing before CONNACK.
    let mut h = Harness::with_backoff(config(V5), no_jitter());
    h.connected();
    h.io_error();
    h.advance_to_next_timeout();
    for _ in 0..6 {
        closed_before_connack(&mut h);
        h.advance_to_next_timeout();
    }
    let ev = h.lifecycle();
    assert_eq!(closed_before_connack_reasons(&ev).len(), 6);
    assert!(
        !ev.iter().any(|e| matches!(e, Lifecycle::Fatal { .. })),
        "{ev:?}"
    );
    assert_eq!(h.conn.state(), State::Connecting);

    // MQTT 3.1.1 on a new client.
    let mut h = Harness::with_backoff(config(V311), no_jitter());
    h.start();
    for _ in 0..6 {
        closed_before_connack(&mut h);
        h.advance_to_next_timeout();
    }
    let ev = h.lifecycle();
    assert_eq!(closed_before_connack_reasons(&ev).last(), Some(&(V311, 6)));
    assert!(!ev.iter().any(|e| matches!(e, Lifecycle::Fatal { .. })));
    assert!(!ev
        .iter()
        .any(|e| matches!(e, Lifecycle::ConnectFailed { reason, .. }
        if reason.to_string().contains("MQTT 5"))));

    // MQTT 5, new client: two closes, a refused connect, two closes: never three in a row.
    let mut h = Harness::with_backoff(config(V5), no_jitter());
    h.start();
    for round in 0..2 {
        for _ in 0..2 {
            closed_before_connack(&mut h);
            h.advance_to_next_timeout();
        }
        if round == 0 {
            h.expect_connect_action();
            h.transport_error(TransportError::Io("connection refused".into()));
            h.advance_to_next_timeout();
        }
    }
    let ev = h.lifecycle();
    assert_eq!(
        closed_before_connack_reasons(&ev),
        [(V5, 1), (V5, 2), (V5, 1), (V5, 2)]
    );
    assert!(!ev.iter().any(|e| matches!(e, Lifecycle::Fatal { .. })));
}
