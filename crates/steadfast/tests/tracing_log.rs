//! The library's `tracing` log, captured with a fmt subscriber at TRACE level: a span per
//! connection attempt and the lifecycle events in it (attempt, connected, lost with its reason,
//! backoff delay, resubscription, refusal) against a real Mosquitto, and never a secret: not a URL password, not
//! explicit credentials, not MQTT 5 authentication data, whatever the outcome.
//!
//! The subscriber is the process's global one (the driver runs on runtime worker threads), so
//! both tests share the one buffer; neither may find a secret of either in it.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use steadfast::proto::{ConnAck, Packet, Reason};
use steadfast::{
    Authenticator, ByteStr, Lifecycle, Properties, ProtocolVersion, QoS, ReasonCode, State,
};
use steadfast_chaos::fake::FakeBroker;
use steadfast_chaos::mosquitto::Mosquitto;
use support::*;

const SECRETS: [&str; 4] = [
    "url-S3CRET-pw",
    "explicit-S3CRET-pw",
    "right-S3CRET-pw",
    "auth-S3CRET-data",
];

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured log so far (the subscriber is installed at the first call).
fn log() -> String {
    static BUF: OnceLock<Capture> = OnceLock::new();
    let buf = BUF.get_or_init(|| {
        let buf = Capture(Arc::default());
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .init();
        buf
    });
    String::from_utf8_lossy(&buf.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

fn assert_no_secret(log: &str) {
    for s in SECRETS {
        assert!(!log.contains(s), "the log contains {s:?}:\n{log}");
    }
}

/// The lines of the log that contain `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn refusals_and_reconnects_are_logged_without_passwords() {
    run(Duration::from_secs(60), async {
        let _ = log();
        let mut broker = mosquitto_with(Mosquitto::builder().password("device", "right-S3CRET-pw"));
        let port = broker.port();

        // A wrong password in the URL: refused, fatal.
        let id = uid("log-url");
        let url = format!("mqtt://device:url-S3CRET-pw@127.0.0.1:{port}");
        let (_c, mut r) = start(fast(&url, ProtocolVersion::V5, &id), &id);
        r.next("fatal", T, |e| matches!(e, Lifecycle::Fatal { .. }))
            .await;

        // A wrong explicit password (3.1.1): refused, fatal.
        let id = uid("log-explicit");
        let b = fast(&broker.url(), ProtocolVersion::V311, &id)
            .credentials("device", "explicit-S3CRET-pw");
        let (_c, mut r) = start(b, &id);
        r.next("fatal", T, |e| matches!(e, Lifecycle::Fatal { .. }))
            .await;

        // The right one: connected, subscribed; the broker is killed and restarted, so the
        // connection is lost, the client backs off, reconnects and resubscribes.
        let id = uid("log-right");
        let url = format!("mqtt://device:right-S3CRET-pw@127.0.0.1:{port}");
        let (client, mut r) = start(fast(&url, ProtocolVersion::V5, &id), &id);
        r.connected(T).await;
        client
            .subscribe("log/+/x", QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        tokio::task::block_in_place(|| {
            broker.kill9();
            broker.restart().expect("restart");
        });
        r.next("resubscribed", T, |e| {
            matches!(e, Lifecycle::Resubscribed { .. })
        })
        .await;
        client.disconnect().await.expect("disconnect");
        assert_eq!(client.state(), State::Closed);

        let log = log();
        assert_no_secret(&log);
        // Each attempt has its span, with the server as shown everywhere (user, no password).
        let spans = lines_with(&log, &format!("server=mqtt://device:***@127.0.0.1:{port}"));
        assert!(
            spans.iter().any(|l| l.contains("connection{attempt=1")),
            "{log}"
        );
        // Mosquitto refuses a wrong password with "not authorized".
        let refused: Vec<_> = lines_with(&log, "reason=not authorized");
        assert!(
            refused
                .iter()
                .any(|l| l.contains("WARN") && l.contains("connect attempt failed")),
            "{log}"
        );
        assert!(
            refused
                .iter()
                .any(|l| l.contains("ERROR") && l.contains("fatal")),
            "{log}"
        );
        for (level, what) in [
            ("INFO", "connecting"),
            ("INFO", "connected session_present=false"),
            ("WARN", "connection lost"),
            ("INFO", "reconnecting after the backoff delay"),
            ("INFO", "resubscribed"),
            ("DEBUG", "subscribe"),
            ("INFO", "disconnected"),
        ] {
            assert!(
                log.lines().any(|l| l.contains(level) && l.contains(what)),
                "no {level} line with {what:?}:\n{log}"
            );
        }
        assert!(
            lines_with(&log, "connection lost")
                .iter()
                .any(|l| l.contains("reason=")
                    && l.contains("initiator=")
                    && l.contains("uptime_ms=")),
            "{log}"
        );
        assert!(
            lines_with(&log, "reconnecting after")
                .iter()
                .any(|l| l.contains("delay_ms=")),
            "{log}"
        );
        assert!(
            lines_with(&log, "resubscribed")
                .iter()
                .any(|l| l.contains("log/+/x")),
            "{log}"
        );
    });
}

/// Sends secret authentication data in CONNECT; the broker refuses it.
struct SecretAuth;

impl Authenticator for SecretAuth {
    fn method(&self) -> ByteStr {
        ByteStr::from("SECRET")
    }
    fn start(&mut self) -> Option<Bytes> {
        Some(Bytes::from_static(b"auth-S3CRET-data"))
    }
    fn challenge(&mut self, _data: Option<&Bytes>) -> Result<Option<Bytes>, String> {
        Ok(Some(Bytes::from_static(b"auth-S3CRET-data")))
    }
}

#[test]
fn authentication_data_is_not_logged() {
    run(Duration::from_secs(30), async {
        let _ = log();
        let broker = FakeBroker::bind().await.expect("fake broker");
        let id = uid("log-auth");
        let b = fast(&broker.url(), ProtocolVersion::V5, &id)
            .credentials("auth-user", "explicit-S3CRET-pw")
            .authenticator(SecretAuth);
        let (_client, mut r) = start(b, &id);
        let mut conn = broker.accept_timeout(T).await.expect("a connection");
        let frame = conn
            .read_frame_timeout(T)
            .await
            .expect("read")
            .expect("CONNECT");
        // The secret is on the wire (that is its purpose) ...
        assert!(frame
            .windows(SECRETS[3].len())
            .any(|w| w == SECRETS[3].as_bytes()));
        let mut refusal = bytes::BytesMut::new();
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: ReasonCode::NotAuthorized,
            properties: Properties::default().into(),
        })
        .encode(ProtocolVersion::V5, &mut refusal)
        .expect("encode");
        conn.write_all(&refusal).await.expect("write");
        let fatal = r
            .next("fatal", T, |e| matches!(e, Lifecycle::Fatal { .. }))
            .await;
        assert!(
            matches!(
                &fatal.event,
                Lifecycle::Fatal {
                    reason: Reason::Refused {
                        code: ReasonCode::NotAuthorized,
                        ..
                    }
                }
            ),
            "{fatal:?}"
        );
        // ... and nowhere in the log.
        let log = log();
        assert_no_secret(&log);
        assert!(
            lines_with(&log, "not authorized")
                .iter()
                .any(|l| l.contains("ERROR")),
            "{log}"
        );
    });
}
