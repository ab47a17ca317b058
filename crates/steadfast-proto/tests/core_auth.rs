//! MQTT 5 enhanced authentication (AUTH exchange, re-authentication) and the credentials
//! provider that replaces expired tokens before a reconnect, on virtual time.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use steadfast_proto::connection::Authenticator;
use steadfast_proto::{
    Auth, ByteStr, Event, Lifecycle, Packet, Properties, ProtocolVersion, Reason, ReasonCode, State,
};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A toy challenge-response: answers each challenge with "re:" + challenge, and records what
/// it was told.
#[derive(Clone, Default)]
struct Echo {
    log: Arc<Mutex<Vec<String>>>,
    refuse: bool,
}

impl Authenticator for Echo {
    fn method(&self) -> ByteStr {
        ByteStr::from("ECHO")
    }
    fn start(&mut self) -> Option<Bytes> {
        self.log.lock().unwrap().push("start".into());
        Some(Bytes::from_static(b"hello"))
    }
    fn challenge(&mut self, data: Option<&Bytes>) -> Result<Option<Bytes>, String> {
        let d = data
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        self.log.lock().unwrap().push(format!("challenge:{d}"));
        if self.refuse {
            return Err("unexpected challenge".into());
        }
        Ok(Some(Bytes::from(format!("re:{d}"))))
    }
    fn success(&mut self, data: Option<&Bytes>) {
        let d = data
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        self.log.lock().unwrap().push(format!("success:{d}"));
    }
}

fn auth_packet(reason: ReasonCode, data: &'static [u8]) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: Some(ByteStr::from("ECHO")),
            authentication_data: Some(Bytes::from_static(data)),
            ..Properties::default()
        }
        .into(),
    })
}

#[test]
fn connect_carries_the_method_and_the_challenge_is_answered() {
    let mut h = Harness::new(config(V5));
    let echo = Echo::default();
    h.conn.set_authenticator(Box::new(echo.clone()));
    h.start();
    h.expect_connect_action();
    h.open();
    let connect = match h.sent().as_slice() {
        [Packet::Connect(c)] => c.clone(),
        other => panic!("expected CONNECT, got {other:?}"),
    };
    assert_eq!(
        connect.properties.authentication_method.as_deref(),
        Some("ECHO")
    );
    assert_eq!(
        connect.properties.authentication_data.as_deref(),
        Some(&b"hello"[..])
    );

    h.reply(auth_packet(ReasonCode::ContinueAuthentication, b"nonce-1"));
    match h.sent().as_slice() {
        [Packet::Auth(a)] => {
            assert_eq!(a.reason, ReasonCode::ContinueAuthentication);
            assert_eq!(a.properties.authentication_method.as_deref(), Some("ECHO"));
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(&b"re:nonce-1"[..])
            );
        }
        other => panic!("expected AUTH, got {other:?}"),
    }
    assert_eq!(h.conn.state(), State::Connecting);

    let props = Properties {
        authentication_method: Some(ByteStr::from("ECHO")),
        authentication_data: Some(Bytes::from_static(b"final")),
        ..Properties::default()
    };
    h.connack(false, ReasonCode::Success, props);
    assert_eq!(h.conn.state(), State::Connected);
    assert_eq!(
        *echo.log.lock().unwrap(),
        vec!["start", "challenge:nonce-1", "success:final"]
    );
}

#[test]
fn reauthentication_sends_auth_0x19_and_reports_success() {
    let mut h = Harness::new(config(V5));
    let echo = Echo::default();
    h.conn.set_authenticator(Box::new(echo.clone()));
    h.connected();

    h.conn
        .reauthenticate(h.now)
        .expect("connected with an authenticator");
    match h.sent().as_slice() {
        [Packet::Auth(a)] => {
            assert_eq!(a.reason, ReasonCode::ReAuthenticate);
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(&b"hello"[..])
            );
        }
        other => panic!("expected AUTH 0x19, got {other:?}"),
    }
    h.reply(auth_packet(ReasonCode::ContinueAuthentication, b"nonce-2"));
    assert!(
        matches!(h.sent().as_slice(), [Packet::Auth(a)] if a.reason == ReasonCode::ContinueAuthentication)
    );
    h.reply(auth_packet(ReasonCode::Success, b"ok"));
    assert!(h.events().contains(&Event::Reauthenticated));
    assert_eq!(h.conn.state(), State::Connected);
    assert_eq!(
        echo.log.lock().unwrap().last().map(String::as_str),
        Some("success:ok")
    );
}

#[test]
fn reauthentication_is_refused_clearly_without_mqtt5_or_authenticator() {
    let mut h = Harness::new(config(V5));
    h.connected();
    assert!(
        h.conn.reauthenticate(h.now).is_err(),
        "no authenticator installed"
    );
    let mut h = Harness::new(config(ProtocolVersion::V311));
    h.connected();
    assert!(h.conn.reauthenticate(h.now).is_err(), "3.1.1 has no AUTH");
}

#[test]
fn an_authenticator_that_refuses_is_fatal() {
    let mut h = Harness::new(config(V5));
    h.conn.set_authenticator(Box::new(Echo {
        refuse: true,
        ..Echo::default()
    }));
    h.start();
    h.expect_connect_action();
    h.open();
    h.sent();
    h.reply(auth_packet(ReasonCode::ContinueAuthentication, b"nonce"));
    let events = h.lifecycle();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Lifecycle::Fatal {
                reason: Reason::Authentication(_)
            }
        )),
        "{events:?}"
    );
    assert_eq!(h.conn.state(), State::Failed);
    h.advance(secs(3600));
    assert!(!h.any_connect_action(), "a fatal refusal is not retried");
}

#[test]
fn auth_without_an_authenticator_is_a_protocol_error() {
    let mut h = Harness::new(config(V5));
    h.connected();
    h.reply(auth_packet(ReasonCode::ContinueAuthentication, b"x"));
    let events = h.lifecycle();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Lifecycle::ConnectionLost {
                reason: Reason::ProtocolViolation {
                    code: ReasonCode::ProtocolError,
                    ..
                },
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn credentials_provider_is_asked_before_every_connect() {
    let mut h = Harness::new(config(V5));
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    h.conn.set_credentials_provider(Box::new(move || {
        let mut n = c.lock().unwrap();
        *n += 1;
        (
            Some(ByteStr::from("device")),
            Some(Bytes::from(format!("token-{n}"))),
        )
    }));
    h.start();
    let first = h.connect(false);
    assert_eq!(first.password.as_deref(), Some(&b"token-1"[..]));
    h.io_error();
    h.advance_to_next_timeout();
    let second = h.connect(false);
    assert_eq!(second.username.as_deref(), Some("device"));
    assert_eq!(second.password.as_deref(), Some(&b"token-2"[..]));
    assert_eq!(*calls.lock().unwrap(), 2);
}

#[test]
fn an_expired_token_is_replaced_not_fatal() {
    // The token expired while offline: the broker refuses it once; the provider's next token
    // is accepted. Without the provider the same refusal is fatal.
    for code in [ReasonCode::BadUserNameOrPassword, ReasonCode::NotAuthorized] {
        let mut h = Harness::new(config(V5));
        let n = Arc::new(Mutex::new(0u32));
        let c = n.clone();
        h.conn.set_credentials_provider(Box::new(move || {
            let mut n = c.lock().unwrap();
            *n += 1;
            (
                Some(ByteStr::from("device")),
                Some(Bytes::from(format!("token-{n}"))),
            )
        }));
        h.start();
        h.expect_connect_action();
        h.open();
        h.sent();
        h.connack(false, code, Properties::default());
        assert_eq!(h.conn.state(), State::Backoff, "{:?}", h.lifecycle());
        h.advance_to_next_timeout();
        let connect = h.connect(false);
        assert_eq!(connect.password.as_deref(), Some(&b"token-2"[..]));

        // A second refusal in a row, with a fresh token, is fatal after all.
        h.io_error();
        h.advance_to_next_timeout();
        h.expect_connect_action();
        h.open();
        h.sent();
        h.connack(false, code, Properties::default());
        assert_eq!(
            h.conn.state(),
            State::Backoff,
            "one retry per successful connect"
        );
        h.advance_to_next_timeout();
        h.expect_connect_action();
        h.open();
        h.sent();
        h.connack(false, code, Properties::default());
        assert_eq!(h.conn.state(), State::Failed);
    }
    let mut h = Harness::new(config(V5));
    h.start();
    h.expect_connect_action();
    h.open();
    h.sent();
    h.connack(
        false,
        ReasonCode::BadUserNameOrPassword,
        Properties::default(),
    );
    assert_eq!(
        h.conn.state(),
        State::Failed,
        "without a provider the refusal is fatal"
    );
}

fn reauth_failures(events: &[Event]) -> Vec<Reason> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ReauthenticationFailed { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// Connected with an authenticator, a re-authentication started and its AUTH 0x19 taken.
fn reauthenticating(echo: Echo) -> Harness {
    let mut h = Harness::new(config(V5));
    h.conn.set_authenticator(Box::new(echo));
    h.connected();
    h.conn.reauthenticate(h.now).expect("started");
    assert!(matches!(h.sent().as_slice(), [Packet::Auth(_)]));
    h
}

#[test]
fn a_reauthentication_the_broker_refuses_is_reported_with_its_reason() {
    let mut h = reauthenticating(Echo::default());
    h.server_disconnect(
        ReasonCode::NotAuthorized,
        Properties {
            reason_string: Some("token revoked".into()),
            ..Properties::default()
        },
    );
    let events = h.events();
    assert_eq!(
        reauth_failures(&events),
        [Reason::ServerDisconnect {
            code: ReasonCode::NotAuthorized,
            reason_string: Some("token revoked".into()),
        }],
        "{events:?}"
    );
    assert!(!events.contains(&Event::Reauthenticated));
}

#[test]
fn a_reauthentication_the_authenticator_abandons_is_reported() {
    let mut h = reauthenticating(Echo {
        refuse: true,
        ..Echo::default()
    });
    h.reply(auth_packet(ReasonCode::ContinueAuthentication, b"odd"));
    let events = h.events();
    assert!(
        matches!(
            reauth_failures(&events).as_slice(),
            [Reason::Authentication(e)] if e == "unexpected challenge"
        ),
        "{events:?}"
    );
}

#[test]
fn a_reauthentication_cut_short_by_the_link_or_the_application_is_reported() {
    let mut h = reauthenticating(Echo::default());
    h.io_error();
    let failures = reauth_failures(&h.events());
    assert!(
        matches!(failures.as_slice(), [Reason::Transport(_)]),
        "{failures:?}"
    );

    let mut h = reauthenticating(Echo::default());
    h.conn.disconnect(Default::default(), h.now);
    assert_eq!(reauth_failures(&h.events()), [Reason::Local]);
}

#[test]
fn one_reauthentication_at_a_time_and_no_failure_without_one() {
    let mut h = reauthenticating(Echo::default());
    assert!(
        matches!(
            h.conn.reauthenticate(h.now),
            Err(steadfast_proto::CommandError::Invalid(
                steadfast_proto::InvalidCommand::ReauthenticationInProgress
            ))
        ),
        "a second one waits for the first"
    );
    assert!(h.sent().is_empty());
    h.reply(auth_packet(ReasonCode::Success, b"ok"));
    assert!(h.events().contains(&Event::Reauthenticated));
    // Finished: a later connection loss is not a failed re-authentication, and a new one may
    // start.
    h.conn
        .reauthenticate(h.now)
        .expect("the first one finished");
    h.reply(auth_packet(ReasonCode::Success, b"ok"));
    assert!(h.events().contains(&Event::Reauthenticated));
    h.io_error();
    assert_eq!(reauth_failures(&h.events()), []);
}
