//! Credentials refresh against a real password-protected Mosquitto: a token that expired while
//! the client was offline is replaced by the provider, not treated as a fatal refusal. And
//! MQTT 5 re-authentication against a scripted broker (Mosquitto has no enhanced
//! authentication): `reauthenticate()` resolves with the broker's verdict.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use steadfast::proto::{Auth, ConnAck, Disconnect, Packet};
use steadfast::Message;
use steadfast::{
    Authenticator, ByteStr, ClientError, Lifecycle, Properties, ProtocolVersion, QoS, State,
};
use steadfast_chaos::mosquitto::Mosquitto;
use support::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn expired_credentials_are_replaced_by_the_provider() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto_with(Mosquitto::builder().password("device", "token-2"));
        for v in [ProtocolVersion::V5, ProtocolVersion::V311] {
            let id = uid(&format!("creds-{}", vname(v)));
            let calls = Arc::new(AtomicU32::new(0));
            let c = calls.clone();
            // The first token the provider hands out has expired; the next one is valid.
            let b = fast(&broker.url(), v, &id).credentials_provider(move || {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                ("device".to_string(), format!("token-{n}").into_bytes())
            });
            let (client, mut r) = start(b, &id);
            r.connected(T).await;
            assert_eq!(client.state(), State::Connected);
            assert_eq!(
                calls.load(Ordering::SeqCst),
                2,
                "asked before each of the two connects"
            );
            assert_eq!(
                r.count(|e| matches!(e, Lifecycle::ConnectFailed { attempt: 1, .. })),
                1,
                "{}: the expired token was refused once",
                vname(v)
            );
            assert_eq!(r.count(|e| matches!(e, Lifecycle::Fatal { .. })), 0);
            // The connection is usable.
            client
                .send(Message::new(format!("creds/{id}"), "ok").qos(QoS::AtLeastOnce))
                .await
                .expect("publish with the refreshed credentials");
            client.disconnect().await.expect("disconnect");
        }
    });
}

/// Answers each challenge with "re:" + challenge.
struct Echo;

impl Authenticator for Echo {
    fn method(&self) -> ByteStr {
        ByteStr::from("ECHO")
    }
    fn start(&mut self) -> Option<Bytes> {
        Some(Bytes::from_static(b"hello"))
    }
    fn challenge(&mut self, data: Option<&Bytes>) -> Result<Option<Bytes>, String> {
        let mut answer = b"re:".to_vec();
        answer.extend_from_slice(data.map(|d| &d[..]).unwrap_or_default());
        Ok(Some(Bytes::from(answer)))
    }
}

fn encode(p: Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    p.encode(ProtocolVersion::V5, &mut b).expect("encode");
    b.to_vec()
}

fn auth(reason: ReasonCode, data: &'static [u8]) -> Vec<u8> {
    encode(Packet::Auth(Auth {
        reason,
        properties: Properties {
            authentication_method: Some(ByteStr::from("ECHO")),
            authentication_data: Some(Bytes::from_static(data)),
            ..Properties::default()
        }
        .into(),
    }))
}

/// The next packet from the client, answering PINGREQs on the way.
async fn next_packet(conn: &mut FakeConn) -> Packet {
    loop {
        let frame = conn
            .read_frame_timeout(T)
            .await
            .expect("a packet from the client")
            .expect("the client closed the connection");
        if fake::packet_type(&frame) == Some(12) {
            conn.write_all(&fake::pingresp()).await.expect("write");
            continue;
        }
        let mut b = BytesMut::from(&frame[..]);
        return Packet::decode(&mut b, ProtocolVersion::V5, u32::MAX).expect("decodable");
    }
}

/// A connected client with the `Echo` authenticator, and the broker side of its connection.
async fn connected_with_auth(tag: &str) -> (FakeBroker, FakeConn, steadfast::Client, Recorder) {
    let broker = FakeBroker::bind().await.expect("fake broker");
    let id = uid(tag);
    let b = fast(&broker.url(), ProtocolVersion::V5, &id).authenticator(Echo);
    let (client, mut r) = start(b, &id);
    let mut conn = broker.accept_timeout(T).await.expect("a connection");
    let Packet::Connect(connect) = next_packet(&mut conn).await else {
        panic!("expected CONNECT")
    };
    assert_eq!(
        connect.properties.authentication_method.as_deref(),
        Some("ECHO")
    );
    let connack = encode(Packet::ConnAck(ConnAck {
        session_present: false,
        reason: ReasonCode::Success,
        properties: Properties {
            authentication_method: Some(ByteStr::from("ECHO")),
            ..Properties::default()
        }
        .into(),
    }));
    conn.write_all(&connack).await.expect("write");
    r.connected(T).await;
    (broker, conn, client, r)
}

#[test]
fn reauthenticate_resolves_when_the_broker_accepts() {
    run(Duration::from_secs(30), async {
        let (_broker, mut conn, client, _r) = connected_with_auth("reauth-ok").await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.reauthenticate().await }
        });
        // AUTH 0x19 with the authenticator's first data, a challenge, its answer.
        match next_packet(&mut conn).await {
            Packet::Auth(a) => {
                assert_eq!(a.reason, ReasonCode::ReAuthenticate);
                assert_eq!(
                    a.properties.authentication_data.as_deref(),
                    Some(&b"hello"[..])
                );
            }
            other => panic!("expected AUTH 0x19, got {other:?}"),
        }
        conn.write_all(&auth(ReasonCode::ContinueAuthentication, b"nonce"))
            .await
            .expect("write");
        match next_packet(&mut conn).await {
            Packet::Auth(a) => {
                assert_eq!(a.reason, ReasonCode::ContinueAuthentication);
                assert_eq!(
                    a.properties.authentication_data.as_deref(),
                    Some(&b"re:nonce"[..])
                );
            }
            other => panic!("expected AUTH 0x18, got {other:?}"),
        }
        // Still under way: the call has not resolved before the broker's verdict, and a second
        // one is refused meanwhile.
        assert!(!call.is_finished());
        assert!(matches!(
            client.reauthenticate().await,
            Err(ClientError::Command(_))
        ));
        conn.write_all(&auth(ReasonCode::Success, b"welcome"))
            .await
            .expect("write");
        let outcome = tokio::time::timeout(T, call)
            .await
            .expect("reauthenticate() resolves")
            .expect("task");
        assert_eq!(outcome, Ok(()));
        assert_eq!(client.state(), State::Connected);
    });
}

#[test]
fn reauthenticate_fails_with_the_reason_when_the_broker_refuses() {
    run(Duration::from_secs(30), async {
        let (_broker, mut conn, client, _r) = connected_with_auth("reauth-refused").await;
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.reauthenticate().await }
        });
        assert!(matches!(
            next_packet(&mut conn).await,
            Packet::Auth(a) if a.reason == ReasonCode::ReAuthenticate
        ));
        let refusal = encode(Packet::Disconnect(Disconnect {
            reason: ReasonCode::NotAuthorized,
            properties: Properties {
                reason_string: Some(ByteStr::from("token revoked")),
                ..Properties::default()
            }
            .into(),
        }));
        conn.write_all(&refusal).await.expect("write");
        let outcome = tokio::time::timeout(T, call)
            .await
            .expect("reauthenticate() resolves")
            .expect("task");
        match outcome {
            Err(ClientError::Reauthentication(Reason::ServerDisconnect {
                code: ReasonCode::NotAuthorized,
                reason_string,
            })) => assert_eq!(reason_string.as_deref(), Some("token revoked")),
            other => panic!("{other:?}"),
        }
        let e = ClientError::Reauthentication(Reason::ServerDisconnect {
            code: ReasonCode::NotAuthorized,
            reason_string: None,
        });
        assert!(
            e.to_string().starts_with("re-authentication failed: "),
            "{e}"
        );
    });
}
