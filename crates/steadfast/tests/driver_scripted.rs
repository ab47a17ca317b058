//! The driver under tokio's paused clock, against scripted in-memory brokers (see `mock`).
//!
//! Each test here is a path on which the client once went deaf or stalled; virtual time makes
//! "within 1.5 x keep-alive" and "never in 600 s" exact, and absence is proved without
//! sleeping.

mod mock;

use std::time::Duration;

use mock::{builder, builder_with, puback, publish, FloodConnector, MockConnector};
use steadfast::{ClientEvent, ProtocolVersion, QoS, State};
use steadfast_proto::{Lifecycle, Packet, Reason};

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Defect: the driver's loop was biased to I/O and never re-checked expired deadlines, so a
/// broker flooding QoS 0 kept it reading and keep-alive starved (0-1 PINGREQ in 6 s at a 1 s
/// keep-alive); a publish issued during the flood waited behind the reads.
///
/// The transport here always has bytes to read, as a socket under a flood does; a test task
/// moves the clock 10 ms whenever the driver yields, for 6 s of virtual time.
#[tokio::test(start_paused = true)]
async fn keep_alive_and_commands_get_their_turn_under_an_inbound_flood() {
    for v in VERSIONS {
        let (connector, written) =
            FloodConnector::new(v, publish("flood", QoS::AtMostOnce, 0, &[b'x'; 100]));
        let (client, mut events) = builder_with(connector, v, secs(1)).build().unwrap();
        client.wait_for_state(|s| s == State::Connected).await;
        let start = tokio::time::Instant::now();

        // The application reads every event as fast as it comes (unconstrained by tokio's
        // budget, so it never falls behind and the client never holds input back).
        let reader = tokio::spawn(tokio::task::unconstrained(async move {
            let mut n = 0u64;
            while let Some(ev) = events.recv().await {
                if matches!(ev, ClientEvent::Message(_)) {
                    n += 1;
                }
            }
            n
        }));
        // During the flood the application publishes at QoS 0.
        let publisher = {
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(secs(2)).await;
                let asked = tokio::time::Instant::now();
                client
                    .publish("out", QoS::AtMostOnce, false, "during the flood")
                    .await
                    .unwrap();
                asked.elapsed()
            })
        };
        while start.elapsed() < secs(6) {
            tokio::time::advance(ms(10)).await;
        }
        // The clock only moves when this task moves it (the driver is never idle): wait for
        // the publish on the same 10 ms steps, up to a bound.
        while !publisher.is_finished() {
            assert!(
                start.elapsed() < secs(12),
                "{v}: a QoS 0 publish issued during the flood never completed"
            );
            tokio::time::advance(ms(10)).await;
        }
        let took = publisher.await.unwrap();
        let written = written.lock().unwrap().clone();
        let pings: Vec<Duration> = written
            .iter()
            .filter(|(_, p)| *p == Packet::PingReq)
            .map(|(at, _)| at.duration_since(start))
            .collect();
        assert!(
            pings.len() >= 5,
            "{v}: {} PINGREQ in 6 s of flood at a 1 s keep-alive: {pings:?}",
            pings.len()
        );
        assert!(
            written
                .iter()
                .any(|(_, p)| matches!(p, Packet::Publish(p) if &*p.topic == "out")),
            "{v}: the QoS 0 publish reached the transport"
        );
        assert!(
            took <= ms(50),
            "{v}: a QoS 0 publish during the flood took {took:?}"
        );
        assert_eq!(client.state(), State::Connected, "{v}");
        client.disconnect().await.unwrap();
        let got = reader.await.unwrap();
        assert!(got > 1000, "{v}: the flood was read ({got} messages)");
    }
}

/// Defect: with the application not reading its events, the driver stopped reading and
/// suspended the ping timeout, so 600 s of total silence still read `Connected`.
#[tokio::test(start_paused = true)]
async fn a_dead_link_is_found_while_the_application_is_not_reading() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let (client, mut events) = builder(connector, secs(10))
            .event_capacity(8)
            .build()
            .unwrap();
        let mut peer = broker.accept().await;
        peer.handshake().await;
        client.wait_for_state(|s| s == State::Connected).await;
        // Far more messages than the application's channel and the driver's backlog hold.
        for i in 0..2_000u32 {
            peer.send(publish("in", QoS::AtMostOnce, 0, &i.to_be_bytes()))
                .await;
        }
        // Then the link goes silent: nothing is answered, nothing arrives.
        let silent_at = tokio::time::Instant::now();
        let state =
            tokio::time::timeout(secs(600), client.wait_for_state(|s| s != State::Connected))
                .await
                .unwrap_or_else(|_| panic!("{v}: 600 s of silence still reads Connected"));
        let found = silent_at.elapsed();
        assert_ne!(state, State::Connected);
        assert!(
            found <= secs(15),
            "{v}: the dead link was found after {found:?} (keep-alive 10 s)"
        );
        // The lifecycle events did not wait behind the 2,000 unread messages: they come after
        // at most the 8 already in the application's channel, before those the client held
        // back.
        let mut before = 0u32;
        let first_lifecycle = loop {
            match events.recv().await.expect("events") {
                ClientEvent::Lifecycle { event, .. } => break event,
                ClientEvent::Message(_) => before += 1,
                _ => {}
            }
        };
        assert!(
            before <= 8,
            "{v}: {before} messages before the first lifecycle event"
        );
        assert!(
            matches!(first_lifecycle, Lifecycle::Connecting { .. }),
            "{v}: {first_lifecycle:?}"
        );
        let mut lost = None;
        while lost.is_none() {
            match events.recv().await.expect("events") {
                ClientEvent::Lifecycle {
                    event: Lifecycle::ConnectionLost { reason, .. },
                    ..
                } => lost = Some(reason),
                ClientEvent::Message(m) => {
                    let n = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                    assert_eq!(n, before, "{v}: in order");
                    before += 1;
                }
                _ => {}
            }
        }
        assert!(
            before <= 8,
            "{v}: ConnectionLost came after {before} messages, not after the 8 in the channel"
        );
        assert!(
            matches!(lost, Some(Reason::KeepAliveTimeout(_))),
            "{v}: {lost:?}"
        );
        // The messages that were decoded are all there, in order, after the lifecycle
        // events: the backlog and the application's channel at least. (QoS 0 bytes still
        // undecoded when the link was declared dead go with it; QoS 1 and 2 would be resent.)
        let mut next = before;
        while let Ok(Some(ev)) = tokio::time::timeout(secs(1), events.recv()).await {
            if let ClientEvent::Message(m) = ev {
                let n = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                assert_eq!(n, next, "{v}");
                next += 1;
            }
        }
        assert!(next >= 256 + 8, "{v}: only {next} messages");
    }
}

/// A slow application is not a dead link: bytes that keep arriving while the driver holds
/// them undecoded keep the connection up.
#[tokio::test(start_paused = true)]
async fn a_slow_application_on_a_live_link_stays_connected() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let (client, mut events) = builder(connector, secs(10))
            .event_capacity(8)
            .build()
            .unwrap();
        let mut peer = broker.accept().await;
        peer.handshake().await;
        client.wait_for_state(|s| s == State::Connected).await;
        // The broker sends a message a second for 100 s; the application reads nothing for
        // the first 100 s.
        for i in 0..100u32 {
            peer.send(publish("in", QoS::AtMostOnce, 0, &[b'y'; 512]))
                .await;
            let _ = i;
            tokio::time::sleep(secs(1)).await;
            assert_eq!(client.state(), State::Connected, "{v}: at {i} s");
        }
        let mut got = 0;
        while got < 100 {
            if let ClientEvent::Message(_) = events.recv().await.unwrap() {
                got += 1;
            }
        }
        assert_eq!(broker.attempts().len(), 1, "{v}: never reconnected");
    }
}

/// Defect: the documented durable publisher bound `_events` and never read it; after enough
/// reconnects its undelivered lifecycle events stopped the driver reading, and publishing
/// stalled. A publisher that never reads its events keeps publishing and reconnecting.
#[tokio::test(start_paused = true)]
async fn a_publisher_that_never_reads_events_keeps_working_across_reconnects() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let (client, _events) = builder(connector, secs(30))
            .event_capacity(4)
            .build()
            .unwrap();
        // 300 links, each accepted and then cut by the broker: well over a thousand
        // lifecycle events that nobody reads.
        for _ in 0..300 {
            let mut peer = broker.accept().await;
            peer.handshake().await;
            peer.close().await;
        }
        let mut peer = broker.accept().await;
        peer.handshake().await;
        let publisher = {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .publish("out", QoS::AtLeastOnce, false, "still here")
                    .await
            })
        };
        let pkid = match peer.recv_answering_pings().await {
            Some(Packet::Publish(p)) => p.pkid,
            other => panic!("{v}: expected the PUBLISH, got {other:?}"),
        };
        peer.send(puback(pkid)).await;
        tokio::time::timeout(secs(5), publisher)
            .await
            .unwrap_or_else(|_| panic!("{v}: the publish never completed"))
            .unwrap()
            .unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}
