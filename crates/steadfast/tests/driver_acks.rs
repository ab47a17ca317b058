//! Manual acknowledgements through the driver, under tokio's paused clock against a scripted
//! broker (see `mock`): the PUBACK / PUBREC goes out only when the application acks, a late ack
//! from a closed link sends nothing, and a message nobody can receive is acknowledged.

mod mock;

use std::time::Duration;

use mock::{builder, publish, MockConnector, Peer};
use steadfast::{AckError, ClientError, ClientEvent, ProtocolVersion, QoS, State};
use steadfast_proto::{Packet, PubAck, PubRec, PubRel};

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The next packet other than PINGREQ (answered) within `within` of virtual time.
async fn next_within(peer: &mut Peer, within: Duration) -> Option<Packet> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match peer.recv_within(left).await {
            Ok(Some(Packet::PingReq)) => peer.send(Packet::PingResp).await,
            Ok(p) => return p,
            Err(()) => return None,
        }
    }
}

fn dup(p: Packet) -> Packet {
    match p {
        Packet::Publish(mut p) => {
            p.dup = true;
            Packet::Publish(p)
        }
        other => other,
    }
}

#[tokio::test(start_paused = true)]
async fn the_puback_waits_for_the_application() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let (client, _events) = builder(connector, secs(10))
            .manual_acks(true)
            .build()
            .unwrap();
        let mut peer = broker.accept().await;
        peer.handshake().await;
        let sub = client.subscribe_stream("jobs/#", QoS::AtLeastOnce);
        let (sub, ()) = tokio::join!(sub, peer.grant_subscribe());
        let mut sub = sub.unwrap();
        peer.send(publish("jobs/1", QoS::AtLeastOnce, 5, b"one"))
            .await;
        let m = sub.recv().await.unwrap();
        assert!(m.ack_token().is_some(), "{v}");
        // A minute of virtual time: no PUBACK while the application holds the message.
        assert_eq!(next_within(&mut peer, secs(60)).await, None, "{v}");
        client.ack(&m).await.unwrap();
        assert_eq!(
            next_within(&mut peer, secs(1)).await,
            Some(Packet::PubAck(PubAck::new(5))),
            "{v}"
        );
        // A second ack is harmless and sends nothing.
        client.ack(&m).await.unwrap();
        assert_eq!(next_within(&mut peer, secs(5)).await, None, "{v}");
        // QoS 2: the PUBREC waits too.
        peer.send(publish("jobs/2", QoS::ExactlyOnce, 6, b"two"))
            .await;
        let m2 = sub.recv().await.unwrap();
        assert_eq!(next_within(&mut peer, secs(30)).await, None, "{v}");
        client.ack(&m2).await.unwrap();
        assert_eq!(
            next_within(&mut peer, secs(1)).await,
            Some(Packet::PubRec(PubRec::new(6))),
            "{v}"
        );
        peer.send(Packet::PubRel(PubRel::new(6))).await;
        assert!(
            matches!(next_within(&mut peer, secs(1)).await, Some(Packet::PubComp(c)) if c.pkid == 6),
            "{v}"
        );
    }
}

/// The link drops before the application acks; the broker resumes the session and resends
/// the message. The late ack of the first delivery fails and sends nothing; the redelivery is
/// acknowledged by its own ack.
#[tokio::test(start_paused = true)]
async fn a_late_ack_fails_and_the_redelivery_needs_its_own() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let (client, mut events) = builder(connector, secs(10))
            .manual_acks(true)
            .build()
            .unwrap();
        let mut peer = broker.accept().await;
        peer.handshake().await;
        client.wait_for_state(|s| s == State::Connected).await;
        let msg = publish("in", QoS::AtLeastOnce, 9, b"job");
        peer.send(msg.clone()).await;
        let first = loop {
            if let Some(ClientEvent::Message(m)) = events.recv().await {
                break m;
            }
        };
        peer.close().await;
        let mut peer = broker.accept().await;
        peer.expect_connect().await;
        peer.connack(true).await;
        client.wait_for_state(|s| s == State::Connected).await;
        assert_eq!(
            client.ack(&first).await,
            Err(ClientError::Ack(AckError::ConnectionClosed)),
            "{v}"
        );
        peer.send(dup(msg)).await;
        let again = loop {
            if let Some(ClientEvent::Message(m)) = events.recv().await {
                break m;
            }
        };
        assert!(again.dup() && again.payload() == &b"job"[..], "{v}");
        assert_ne!(again.ack_token(), first.ack_token());
        assert_eq!(
            next_within(&mut peer, secs(20)).await,
            None,
            "{v}: the stale ack sent nothing"
        );
        client.ack(&again).await.unwrap();
        assert_eq!(
            next_within(&mut peer, secs(1)).await,
            Some(Packet::PubAck(PubAck::new(9))),
            "{v}"
        );
    }
}

/// A message nobody can receive (the application dropped its `Events`) is acknowledged by
/// the client, so it does not hold back the acknowledgements after it.
#[tokio::test(start_paused = true)]
async fn a_message_nobody_can_receive_is_acknowledged() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let (client, events) = builder(connector, secs(10))
            .manual_acks(true)
            .build()
            .unwrap();
        let mut peer = broker.accept().await;
        peer.handshake().await;
        client.wait_for_state(|s| s == State::Connected).await;
        drop(events);
        peer.send(publish("unrouted", QoS::AtLeastOnce, 3, b"x"))
            .await;
        assert_eq!(
            next_within(&mut peer, secs(1)).await,
            Some(Packet::PubAck(PubAck::new(3))),
            "{v}"
        );
        // A Subscription handle dropped while the client runs: its messages too.
        let sub = client.subscribe_stream("gone/#", QoS::AtLeastOnce);
        let (sub, ()) = tokio::join!(sub, peer.grant_subscribe());
        drop(sub.unwrap());
        peer.send(publish("gone/1", QoS::AtLeastOnce, 4, b"y"))
            .await;
        assert_eq!(
            next_within(&mut peer, secs(1)).await,
            Some(Packet::PubAck(PubAck::new(4))),
            "{v}"
        );
    }
}

/// An ack after the client closed fails with `Closed`; a message without a
/// token (QoS 0) is acknowledged trivially.
#[tokio::test(start_paused = true)]
async fn an_ack_after_the_client_closed_fails_and_qos0_needs_none() {
    let (connector, mut broker) = MockConnector::new(ProtocolVersion::V5);
    let (client, mut events) = builder(connector, secs(10))
        .manual_acks(true)
        .build()
        .unwrap();
    let mut peer = broker.accept().await;
    peer.handshake().await;
    client.wait_for_state(|s| s == State::Connected).await;
    peer.send(publish("a", QoS::AtMostOnce, 0, b"0")).await;
    peer.send(publish("a", QoS::ExactlyOnce, 1, b"2")).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Some(ClientEvent::Message(m)) = events.recv().await {
            got.push(m);
        }
    }
    assert!(got[0].ack_token().is_none());
    client.ack(&got[0]).await.unwrap();
    client.disconnect().await.unwrap();
    assert_eq!(client.ack(&got[1]).await, Err(ClientError::Closed));
}
