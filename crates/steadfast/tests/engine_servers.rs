//! Servers end to end: a scripted broker redirects (0x9C / 0x9D) with a spec-style Server
//! Reference (`127.0.0.1:<port>`, no scheme) to a real private Mosquitto and the client ends up
//! connected there, with the credentials of the server that redirected; a server URL's user
//! info logs in to a password-protected Mosquitto; and the password shows in no Debug, no
//! event and no error.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use steadfast::proto::{ConnAck, Packet};
use steadfast::Message;
use steadfast::{ClientBuilder, Lifecycle, Properties, ProtocolVersion, QoS, ReasonCode, State};
use steadfast_chaos::fake::FakeBroker;
use steadfast_chaos::mosquitto::Mosquitto;
use support::*;

const T: Duration = Duration::from_secs(10);
const SECRET: &str = "pw-s3cr3t-91";

fn connack_redirect(code: ReasonCode, reference: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    Packet::ConnAck(ConnAck {
        session_present: false,
        reason: code,
        properties: Properties {
            server_reference: Some(reference.into()),
            ..Properties::default()
        }
        .into(),
    })
    .encode(ProtocolVersion::V5, &mut b)
    .expect("encode");
    b.to_vec()
}

#[test]
fn a_host_port_reference_leads_to_the_broker_with_the_redirecting_servers_credentials() {
    run(Duration::from_secs(40), async {
        let broker = mosquitto_with(Mosquitto::builder().password("alice", SECRET));
        let reference = format!("127.0.0.1:{}", broker.port());
        for code in [ReasonCode::UseAnotherServer, ReasonCode::ServerMoved] {
            let fake = Arc::new(FakeBroker::bind().await.expect("bind"));
            let answer = connack_redirect(code, &reference);
            let script = serve(fake.clone(), move |_, mut conn| {
                let answer = answer.clone();
                async move {
                    if read_connect(&mut conn).await.is_some() {
                        let _ = conn.write_all(&answer).await;
                    }
                    let _ = conn.wait_closed(T).await;
                }
            });
            let id = uid("redirect");
            let url = format!("mqtt://alice:{SECRET}@{}", fake.addr());
            let b = fast(&url, ProtocolVersion::V5, &id);
            let (client, mut r) = start(b, &id);
            let rec = r.connected(T).await;
            let Lifecycle::Connected { server, .. } = &rec.event else {
                unreachable!()
            };
            assert_eq!(
                server.to_string(),
                format!("mqtt://alice:***@127.0.0.1:{}", broker.port()),
                "{code:?}"
            );
            assert_eq!(fake.accept_count(), 1, "{code:?}: redirected once");
            assert_eq!(r.count(|e| matches!(e, Lifecycle::Fatal { .. })), 0);
            // The connection to the real broker is usable.
            client
                .send(Message::new(format!("redirect/{id}"), "ok").qos(QoS::AtLeastOnce))
                .await
                .expect("publish at the redirect target");
            client.disconnect().await.expect("disconnect");
            let shown: Vec<String> = r.events().iter().map(|e| format!("{e:?}")).collect();
            for text in &shown {
                assert!(!text.contains(SECRET), "password printed: {text}");
            }
            script.abort();
        }
    });
}

#[test]
fn a_reference_that_does_not_parse_is_reported_and_the_configured_server_retried() {
    run(Duration::from_secs(20), async {
        let fake = Arc::new(FakeBroker::bind().await.expect("bind"));
        let answer = connack_redirect(ReasonCode::ServerMoved, "mqtt://u:hunter2@badhost:0");
        let script = serve(fake.clone(), move |_, mut conn| {
            let answer = answer.clone();
            async move {
                if read_connect(&mut conn).await.is_some() {
                    let _ = conn.write_all(&answer).await;
                }
                let _ = conn.wait_closed(T).await;
            }
        });
        let id = uid("badref");
        let (client, mut r) = start(fast(&url_of(fake.addr()), ProtocolVersion::V5, &id), &id);
        let rec = r
            .next("BadServerReference", T, |e| {
                matches!(e, Lifecycle::BadServerReference { .. })
            })
            .await;
        assert!(!format!("{:?}", rec.event).contains("hunter2"));
        // The configured server is tried again (the reference was not stored).
        r.next("a second Connecting", T, |e| {
            matches!(e, Lifecycle::Connecting { server, .. } if server.to_string() == url_of(fake.addr()))
        })
        .await;
        eventually("a second connection to the configured server", T, || {
            fake.accept_count() >= 2
        })
        .await;
        drop(client);
        script.abort();
    });
}

#[test]
fn a_server_url_with_credentials_logs_in_and_never_shows_the_password() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto_with(Mosquitto::builder().password("alice", SECRET));
        let id = uid("urlcreds");
        // server() (not from_url): the URL's user info is the only credentials given.
        let b = ClientBuilder::new()
            .server(format!("mqtt://alice:{SECRET}@127.0.0.1:{}", broker.port()))
            .client_id(&id)
            .connect_timeout(Duration::from_secs(2))
            .max_attempts(3);
        let mut printed = vec![format!("{b:?}"), format!("{:?}", b.config())];
        let (client, mut r) = start(b, &id);
        r.connected(T).await;
        assert_eq!(client.state(), State::Connected);
        client
            .send(Message::new(format!("creds/{id}"), "ok").qos(QoS::AtLeastOnce))
            .await
            .expect("publish");
        printed.push(format!("{client:?}"));
        client.disconnect().await.expect("disconnect");
        for e in r.events() {
            printed.push(format!("{e:?}"));
            if let Lifecycle::Connecting { server, .. } | Lifecycle::Connected { server, .. } = &e {
                printed.push(server.to_string());
                assert!(server.to_string().contains("alice:***@"), "{server}");
            }
        }
        assert!(printed.len() > 4);
        for text in &printed {
            assert!(!text.contains(SECRET), "password printed: {text}");
        }

        // The password is really used: a wrong one is refused (Mosquitto: not authorized).
        let id = uid("urlcreds-bad");
        let b = ClientBuilder::new()
            .server(format!("mqtt://alice:wrong@127.0.0.1:{}", broker.port()))
            .client_id(&id)
            .connect_timeout(Duration::from_secs(2));
        let (_client, mut r) = start(b, &id);
        r.next("Fatal", T, |e| matches!(e, Lifecycle::Fatal { .. }))
            .await;
    });
}

#[test]
fn explicit_credentials_win_over_the_urls() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto_with(Mosquitto::builder().password("alice", SECRET));
        let id = uid("explicit");
        let b = ClientBuilder::new()
            .server(format!("mqtt://alice:wrong@127.0.0.1:{}", broker.port()))
            .credentials("alice", SECRET)
            .client_id(&id)
            .connect_timeout(Duration::from_secs(2));
        let (client, mut r) = start(b, &id);
        r.connected(T).await;
        client.disconnect().await.expect("disconnect");
    });
}

#[test]
fn a_bad_server_url_is_an_error_at_build_without_the_password() {
    run(Duration::from_secs(10), async {
        for bad in [
            "10.10.151.22:8883".to_string(),
            format!("mqtt://alice:{SECRET}@host:99999"),
            format!("http://alice:{SECRET}@host"),
        ] {
            let e = ClientBuilder::new()
                .add_server(&bad)
                .build()
                .err()
                .unwrap_or_else(|| panic!("{bad}: accepted"));
            assert!(!e.to_string().contains(SECRET), "{e}");
            let e = ClientBuilder::new()
                .server(&bad)
                .client_id("x")
                .build()
                .err()
                .unwrap_or_else(|| panic!("{bad}: accepted"));
            assert!(e.to_string().contains("bad server"), "{e}");
        }
        let e = ClientBuilder::from_url(&format!("mqtt://alice:{SECRET}@host:0"))
            .expect_err("port 0 refused");
        assert!(!e.to_string().contains(SECRET), "{e}");
    });
}
