//! The driver under tokio's paused clock, against scripted in-memory brokers (see `mock`).
//!
//! Each test here is a path on which the client once went deaf or stalled; virtual time makes
//! "within 1.5 x keep-alive" and "never in 600 s" exact, and absence is proved without
//! sleeping.

mod mock;

use std::future::Future;
use std::time::Duration;

use mock::{builder, builder_with, puback, publish, FloodConnector, MockConnector};
use steadfast::Message;
use steadfast::{ClientEvent, ProtocolVersion, QoS, State};
use steadfast_proto::{Lifecycle, Packet, Props, Reason, ReasonCode, SubAck, UnsubAck};

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
                client.publish("out", "during the flood").await.unwrap();
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

/// A connected client whose application channel holds only 8 events (so a test's unread
/// messages make the client hold input back), with its broker and the peer of the link.
async fn connected_slow_app(
    v: ProtocolVersion,
    keep_alive: Duration,
) -> (
    steadfast::Client,
    steadfast::Events,
    mock::MockBroker,
    mock::Peer,
) {
    let (connector, mut broker) = MockConnector::new(v);
    let (client, events) = builder(connector, keep_alive)
        .event_capacity(8)
        .build()
        .unwrap();
    let mut peer = broker.accept().await;
    peer.handshake().await;
    client.wait_for_state(|s| s == State::Connected).await;
    (client, events, broker, peer)
}

/// Defect: with the application not reading its events, the driver stopped reading and
/// suspended the ping timeout, so 600 s of total silence still read `Connected`.
#[tokio::test(start_paused = true)]
async fn a_dead_link_is_found_while_the_application_is_not_reading() {
    for v in VERSIONS {
        let (client, mut events, _broker, mut peer) = connected_slow_app(v, secs(10)).await;
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
                    let n = u32::from_be_bytes(m.payload()[..4].try_into().unwrap());
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
                let n = u32::from_be_bytes(m.payload()[..4].try_into().unwrap());
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
        let (client, mut events, broker, mut peer) = connected_slow_app(v, secs(10)).await;
        // The broker sends a message a second for 100 s; the application reads nothing for
        // the first 100 s.
        for i in 0..100u32 {
            peer.send(publish("in", QoS::AtMostOnce, 0, &[b'y'; 512]))
                .await;
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
                    .send(Message::new("out", "still here").qos(QoS::AtLeastOnce))
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

/// Every lifecycle event until `pred` matches one (the test's own reader).
async fn lifecycle_until(
    events: &mut steadfast::Events,
    mut pred: impl FnMut(&Lifecycle) -> bool,
) -> Vec<Lifecycle> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(secs(600), events.recv()).await {
            Ok(Some(ClientEvent::Lifecycle { event, .. })) => {
                let done = pred(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the awaited event never came; saw {seen:?}"),
        }
    }
}

/// Defect: a refused resubscription was ignored and `Resubscribed` came before the SUBACK.
/// Now `Resubscribed` follows the SUBACK with what was granted, and each refused filter gets
/// `ResubscribeFailed` with the broker's code (3.1.1: 0x80).
#[tokio::test(start_paused = true)]
async fn a_refused_resubscription_is_reported_after_the_suback() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let (client, mut events) = builder(connector, secs(30)).build().unwrap();
        let mut peer = broker.accept().await;
        peer.handshake().await;
        let sub = {
            let client = client.clone();
            tokio::spawn(async move {
                client.subscribe("a/#", QoS::AtLeastOnce).await.unwrap();
                client.subscribe("b/#", QoS::AtLeastOnce).await.unwrap();
            })
        };
        peer.grant_subscribe().await;
        peer.grant_subscribe().await;
        sub.await.unwrap();
        peer.close().await;

        // The broker lost the session, and its ACL now denies b/#.
        let mut peer = broker.accept().await;
        peer.expect_connect().await;
        peer.connack(false).await;
        // The resubscription: one SUBSCRIBE (MQTT 5: one per subscription identifier).
        let mut subscribes = Vec::new();
        let mut names = Vec::new();
        while names.len() < 2 {
            match peer.recv_answering_pings().await {
                Some(Packet::Subscribe(s)) => {
                    names.extend(s.filters.iter().map(|f| f.filter.to_string()));
                    subscribes.push(s);
                }
                other => panic!("{v}: expected the resubscription, got {other:?}"),
            }
        }
        assert_eq!(names, ["a/#", "b/#"], "{v}");
        // Up to this connection's `Connected`; no `Resubscribed` yet: the broker has not
        // answered.
        lifecycle_until(&mut events, |e| matches!(e, Lifecycle::Connected { .. })).await;
        lifecycle_until(&mut events, |e| matches!(e, Lifecycle::Connected { .. })).await;
        assert!(
            tokio::time::timeout(secs(5), async {
                loop {
                    if let Some(ClientEvent::Lifecycle {
                        event: Lifecycle::Resubscribed { .. },
                        ..
                    }) = events.recv().await
                    {
                        return;
                    }
                }
            })
            .await
            .is_err(),
            "{v}: Resubscribed before the SUBACK"
        );
        let refused = match v {
            ProtocolVersion::V311 => steadfast::ReasonCode::UnspecifiedError,
            _ => steadfast::ReasonCode::NotAuthorized,
        };
        for s in subscribes {
            let reasons = s
                .filters
                .iter()
                .map(|f| match f.filter.as_str() {
                    "a/#" => steadfast::ReasonCode::GrantedQoS1,
                    _ => refused,
                })
                .collect();
            peer.send(Packet::SubAck(steadfast_proto::SubAck {
                pkid: s.pkid,
                reasons,
                properties: steadfast_proto::Props::new(),
            }))
            .await;
        }
        let seen =
            lifecycle_until(&mut events, |e| matches!(e, Lifecycle::Resubscribed { .. })).await;
        let failed: Vec<_> = seen
            .iter()
            .filter_map(|e| match e {
                Lifecycle::ResubscribeFailed { filter, error } => {
                    Some((filter.to_string(), error.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            failed,
            [(
                "b/#".to_string(),
                steadfast_proto::CommandError::Refused(refused)
            )],
            "{v}: {seen:?}"
        );
        match seen.last() {
            Some(Lifecycle::Resubscribed { filters, granted }) => {
                assert_eq!(
                    filters.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                    ["a/#"]
                );
                assert_eq!(granted, &[steadfast::ReasonCode::GrantedQoS1]);
            }
            other => panic!("{v}: {other:?}"),
        }
    }
}

/// Defect: a Server Reference in the spec's own `host:port` form failed to parse and, after
/// a 0x9D, replaced the configured server for ever. Now it is followed (keeping the scheme),
/// and a reference that does not parse is reported and the configured server tried again.
#[tokio::test(start_paused = true)]
async fn server_references_in_the_specs_forms_are_followed_and_garbage_is_not_stored() {
    let v = ProtocolVersion::V5;
    let (connector, mut broker) = MockConnector::new(v);
    let (client, mut events) = builder(connector, secs(30)).build().unwrap();
    let refuse = |code, reference: &str| {
        let props = steadfast_proto::Properties {
            server_reference: Some(reference.into()),
            ..Default::default()
        };
        Packet::ConnAck(steadfast_proto::ConnAck {
            session_present: false,
            reason: code,
            properties: props.into(),
        })
    };
    let mut peer = broker.accept().await;
    peer.expect_connect().await;
    peer.send(refuse(
        steadfast::ReasonCode::ServerMoved,
        "10.10.151.22:8883",
    ))
    .await;
    let mut peer = broker.accept().await;
    peer.expect_connect().await;
    // Moved there for good; and that server sends garbage as its next reference.
    peer.send(refuse(
        steadfast::ReasonCode::UseAnotherServer,
        "::::not a server",
    ))
    .await;
    let seen = lifecycle_until(&mut events, |e| {
        matches!(e, Lifecycle::BadServerReference { .. })
    })
    .await;
    assert!(seen
        .iter()
        .any(|e| matches!(e, Lifecycle::ConnectFailed { .. })));
    let mut peer = broker.accept().await;
    peer.handshake().await;
    client.wait_for_state(|s| s == State::Connected).await;
    assert_eq!(
        broker.attempts(),
        [
            "mqtt://mock:1883",
            "mqtt://10.10.151.22:8883",
            "mqtt://10.10.151.22:8883"
        ],
        "the reference kept the scheme, replaced the server (0x9D), and the garbage was not stored"
    );
}

/// Defect: credentials in a server URL were ignored when connecting and shown in Debug and
/// events. Now they go into CONNECT and never show.
#[tokio::test(start_paused = true)]
async fn url_credentials_are_sent_and_never_shown() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let b = builder(connector, secs(30)).server("mqtt://alice:s3cr3t-pw@mock:1883");
        let shown = format!("{b:?}");
        assert!(!shown.contains("s3cr3t"), "{v}: builder Debug: {shown}");
        let (client, mut events) = b.build().unwrap();
        let mut peer = broker.accept().await;
        let c = peer.handshake().await;
        assert_eq!(c.username.as_deref(), Some("alice"), "{v}");
        assert_eq!(c.password.as_deref(), Some(&b"s3cr3t-pw"[..]), "{v}");
        let seen = lifecycle_until(&mut events, |e| matches!(e, Lifecycle::Connected { .. })).await;
        for e in &seen {
            let text = format!("{e:?}");
            assert!(!text.contains("s3cr3t"), "{v}: {text}");
        }
        assert!(!format!("{client:?}").contains("s3cr3t"));
    }
}

/// Defect: MQTT 3.1.1 has no Receive Maximum, and the client sent everything at once, so a
/// broker with a small window (rmqtt: 16 QoS 2) cut it, and the resend looped. Now 3.1.1 has
/// a bounded window of its own (default 10), and nothing more goes out until acknowledgements
/// make room.
#[tokio::test(start_paused = true)]
async fn mqtt_311_keeps_a_bounded_in_flight_window() {
    let v = ProtocolVersion::V311;
    let (connector, mut broker) = MockConnector::new(v);
    let (client, _events) = builder(connector, secs(30)).build().unwrap();
    let mut peer = broker.accept().await;
    peer.handshake().await;
    let mut done = Vec::new();
    for i in 0..40u32 {
        let client = client.clone();
        done.push(tokio::spawn(async move {
            client
                .send(Message::new("out", i.to_string()).qos(QoS::AtLeastOnce))
                .await
        }));
    }
    let mut in_flight = Vec::new();
    while let Ok(Some(p)) = peer.recv_within(secs(10)).await {
        match p {
            Packet::Publish(p) => in_flight.push(p.pkid),
            Packet::PingReq => peer.send(Packet::PingResp).await,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(in_flight.len(), 10, "10 in flight, then nothing for 10 s");
    // Acknowledgements make room, one for one.
    let mut acked = 0;
    while acked < 40 {
        let pkid = in_flight.remove(0);
        peer.send(puback(pkid)).await;
        acked += 1;
        if acked <= 30 {
            match peer.recv_answering_pings().await {
                Some(Packet::Publish(p)) => in_flight.push(p.pkid),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(in_flight.len() <= 10);
    }
    for d in done {
        d.await.unwrap().unwrap();
    }
}

/// Defect: a message the broker answers by closing the connection was resent on every
/// reconnect for ever. Now, the oldest unacknowledged message when the broker closed 3 times
/// in a row is failed back as poison, and the rest of the queue goes on.
#[tokio::test(start_paused = true)]
async fn a_poison_message_is_failed_back_and_the_queue_goes_on() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        // On 3.1.1 a cut with several messages in flight is blamed on the in-flight window
        // first (see `mqtt_311_keeps_a_bounded_in_flight_window`): with a window of one, each
        // cut has only the poison in flight.
        let b = builder(connector, secs(30));
        let b = match v {
            ProtocolVersion::V311 => b.max_inflight(1),
            _ => b,
        };
        let (client, _events) = b.build().unwrap();
        let publish = |payload: &'static str| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .send(Message::new("out", payload).qos(QoS::AtLeastOnce))
                    .await
            })
        };
        let poison = publish("poison");
        let mut peer = broker.accept().await;
        peer.handshake().await;
        let fine = publish("fine");
        let mut closes = 0;
        // The broker closes the connection whenever the poison arrives and acknowledges the
        // rest.
        loop {
            match peer.recv_answering_pings().await {
                Some(Packet::Publish(p)) if &p.payload[..] == b"poison" => {
                    closes += 1;
                    assert!(closes <= 3, "{v}: the poison was sent a 4th time");
                    peer.close().await;
                    peer = broker.accept().await;
                    peer.handshake().await;
                }
                Some(Packet::Publish(p)) => {
                    peer.send(puback(p.pkid)).await;
                    if poison.is_finished() {
                        break;
                    }
                }
                Some(other) => panic!("{v}: unexpected {other:?}"),
                None => panic!("{v}: the client closed"),
            }
        }
        let res = poison.await.unwrap();
        assert!(
            matches!(
                res,
                Err(steadfast::ClientError::Publish(
                    steadfast::PublishError::Poison { closes: 3 }
                ))
            ),
            "{v}: {res:?}"
        );
        fine.await.unwrap().unwrap();
        assert_eq!(client.state(), State::Connected, "{v}");
    }
}

/// Defect: a connection the broker accepts and drops at once reset the attempt count, so
/// `max_attempts` never bounded a flapping client. Now a connection lost before
/// `stable_after` is a failed attempt, and the client goes dormant.
#[tokio::test(start_paused = true)]
async fn a_flapping_client_goes_dormant_after_max_attempts() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let (client, mut events) = builder(connector, secs(30))
            .max_attempts(3)
            .build()
            .unwrap();
        for _ in 0..3 {
            let mut peer = broker.accept().await;
            peer.handshake().await;
            peer.close().await;
        }
        let seen = lifecycle_until(&mut events, |e| matches!(e, Lifecycle::Dormant { .. })).await;
        let attempts: Vec<u32> = seen
            .iter()
            .filter_map(|e| match e {
                Lifecycle::Connecting { attempt, .. } => Some(*attempt),
                _ => None,
            })
            .collect();
        assert_eq!(attempts, [1, 2, 3], "{v}: {seen:?}");
        assert_eq!(client.state(), State::Dormant);
        assert!(
            broker.accept_within(secs(3600)).await.is_none(),
            "{v}: no attempt in an hour once dormant"
        );
    }
}

/// `reconnect_now()` is never dropped, even when the command channel is full of other
/// commands: the client skips its (here one hour) backoff at once.
#[tokio::test(start_paused = true)]
async fn reconnect_now_is_not_lost_when_the_command_channel_is_full() {
    let v = ProtocolVersion::V5;
    let (connector, mut broker) = MockConnector::new(v);
    broker.plan(mock::Plan::Fail(steadfast_proto::TransportError::Io(
        "refused".into(),
    )));
    let (client, _events) = builder(connector, secs(30))
        .backoff(steadfast::Constant::new(secs(3600)))
        .build()
        .unwrap();
    client.wait_for_state(|s| s == State::Backoff).await;
    // Fill the command channel with publishes (each future polled once puts its command in),
    // without letting the driver run.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut pending = Vec::new();
    for i in 0..1024u32 {
        let mut f = Box::pin(client.send(Message::new("out", i.to_string()).qos(QoS::AtLeastOnce)));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        pending.push(f);
    }
    client.reconnect_now();
    let peer = broker.accept_within(secs(5)).await;
    assert!(
        peer.is_some(),
        "the reconnect_now() was dropped: still backing off"
    );
    drop(pending);
}

/// A broker's DISCONNECT that arrives while the client holds input back for a slow
/// application is still read before the end of the stream: the loss carries the broker's
/// reason (here 0x8E, session taken over, which slows reconnects down), not "closed by peer".
#[tokio::test(start_paused = true)]
async fn a_disconnect_behind_held_input_keeps_its_reason() {
    let v = ProtocolVersion::V5;
    let (_client, mut events, _broker, mut peer) = connected_slow_app(v, secs(30)).await;
    for i in 0..400u32 {
        peer.send(publish("in", QoS::AtMostOnce, 0, &i.to_be_bytes()))
            .await;
    }
    peer.send(Packet::Disconnect(steadfast_proto::Disconnect {
        reason: steadfast::ReasonCode::SessionTakenOver,
        properties: steadfast_proto::Props::new(),
    }))
    .await;
    peer.close().await;
    let seen = lifecycle_until(&mut events, |e| {
        matches!(e, Lifecycle::ConnectionLost { .. })
    })
    .await;
    match seen.last() {
        Some(Lifecycle::ConnectionLost { reason, .. }) => assert_eq!(
            reason.reason_code(),
            Some(steadfast::ReasonCode::SessionTakenOver),
            "{reason:?}"
        ),
        other => panic!("{other:?}"),
    }
}

/// Answers the next SUBSCRIBE (granting its QoS) and returns its subscription identifier.
async fn grant_subscribe_id(peer: &mut mock::Peer) -> Option<u32> {
    match peer.recv_answering_pings().await {
        Some(Packet::Subscribe(s)) => {
            let reasons = s
                .filters
                .iter()
                .map(|f| match f.options.qos {
                    QoS::AtMostOnce => ReasonCode::Success,
                    QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                    QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
                })
                .collect();
            let id = s.properties.subscription_identifiers.first().copied();
            peer.send(Packet::SubAck(SubAck {
                pkid: s.pkid,
                reasons,
                properties: Props::new(),
            }))
            .await;
            id
        }
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    }
}

/// A QoS 0 PUBLISH from the broker carrying subscription identifier `id` (MQTT 5).
fn publish_for(topic: &str, payload: &[u8], id: Option<u32>) -> Packet {
    let mut p = publish(topic, QoS::AtMostOnce, 0, payload);
    if let (Packet::Publish(p), Some(id)) = (&mut p, id) {
        p.properties.subscription_identifiers.push(id);
    }
    p
}

/// The messages that reach `events` within `within` of virtual time (lifecycle events are
/// skipped). Under the paused clock the wait costs no wall time.
async fn messages_on_events(events: &mut steadfast::Events, within: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(within, async {
        while let Some(ev) = events.recv().await {
            if let ClientEvent::Message(m) = ev {
                got.push(m.topic().to_string());
            }
        }
    })
    .await;
    got
}

async fn next_payload(s: &mut steadfast::Subscription) -> Option<Vec<u8>> {
    tokio::time::timeout(secs(5), s.recv())
        .await
        .expect("a message or the end within 5 s")
        .map(|m| m.payload().to_vec())
}

/// Defect: a second `subscribe_stream` for a filter replaced the first handle's route, so the
/// first handle silently stopped receiving. Now every handle of a filter receives every
/// message of it: with MQTT 5 whether the broker tags it with the latest SUBSCRIBE's
/// identifier or (sent before it took that SUBSCRIBE) the one before; a plain `subscribe` of
/// the same filter keeps the handles fed; a dropped handle leaves the others alone;
/// `unsubscribe` ends them all. Nothing of the filter leaks to `Events` meanwhile.
#[tokio::test(start_paused = true)]
async fn a_second_stream_for_a_filter_shares_its_messages() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        let (client, mut events) = builder(connector, secs(30)).build().unwrap();
        let mut peer = broker.accept().await;
        peer.handshake().await;
        client.wait_for_state(|s| s == State::Connected).await;

        let c = client.clone();
        let first =
            tokio::spawn(async move { c.subscribe_stream("dup/+", QoS::AtLeastOnce).await });
        let id1 = grant_subscribe_id(&mut peer).await;
        let mut a = first.await.unwrap().unwrap();
        let c = client.clone();
        let second =
            tokio::spawn(async move { c.subscribe_stream("dup/+", QoS::AtLeastOnce).await });
        let id2 = grant_subscribe_id(&mut peer).await;
        let mut b = second.await.unwrap().unwrap();
        assert_eq!(a.filter().as_str(), "dup/+");
        assert_eq!(b.granted_qos(), QoS::AtLeastOnce);
        if v == ProtocolVersion::V5 {
            assert!(
                id1.is_some() && id2.is_some() && id1 != id2,
                "{id1:?} {id2:?}"
            );
        }

        // Tagged with the latest identifier, and with the one before.
        peer.send(publish_for("dup/1", b"new", id2)).await;
        peer.send(publish_for("dup/2", b"old", id1)).await;
        for h in [&mut a, &mut b] {
            assert_eq!(next_payload(h).await.as_deref(), Some(&b"new"[..]), "{v}");
            assert_eq!(next_payload(h).await.as_deref(), Some(&b"old"[..]), "{v}");
        }

        // A plain subscribe of the filter: the handles keep its messages.
        let c = client.clone();
        let plain = tokio::spawn(async move { c.subscribe("dup/+", QoS::AtMostOnce).await });
        let id3 = grant_subscribe_id(&mut peer).await;
        assert_eq!(plain.await.unwrap(), Ok(QoS::AtMostOnce));
        peer.send(publish_for("dup/3", b"plain", id3)).await;
        for h in [&mut a, &mut b] {
            assert_eq!(next_payload(h).await.as_deref(), Some(&b"plain"[..]), "{v}");
        }

        // The first handle goes away: the second one still gets everything.
        drop(a);
        peer.send(publish_for("dup/4", b"after drop", id3)).await;
        assert_eq!(
            next_payload(&mut b).await.as_deref(),
            Some(&b"after drop"[..])
        );
        assert_eq!(
            messages_on_events(&mut events, secs(5)).await,
            Vec::<String>::new(),
            "{v}: nothing of the filter reaches Events while a handle is open"
        );

        // Unsubscribe ends the handle; the filter's messages then go to Events.
        let c = client.clone();
        let unsub = tokio::spawn(async move { c.unsubscribe("dup/+").await });
        match peer.recv_answering_pings().await {
            Some(Packet::Unsubscribe(u)) => {
                assert_eq!(u.filters.len(), 1);
                peer.send(Packet::UnsubAck(UnsubAck {
                    pkid: u.pkid,
                    reasons: if v == ProtocolVersion::V5 {
                        vec![ReasonCode::Success]
                    } else {
                        Vec::new()
                    },
                    properties: Props::new(),
                }))
                .await;
            }
            other => panic!("expected UNSUBSCRIBE, got {other:?}"),
        }
        assert_eq!(unsub.await.unwrap(), Ok(()));
        assert_eq!(next_payload(&mut b).await, None, "{v}: the handle ended");
        peer.send(publish_for("dup/5", b"late", id3)).await;
        assert_eq!(
            messages_on_events(&mut events, secs(5)).await,
            vec!["dup/5".to_string()]
        );
        client.disconnect().await.unwrap();
    }
}

/// An invalid topic or filter is an error at the call, typed, and nothing reaches the broker:
/// the next packet the broker sees is the valid publish that follows.
#[tokio::test(start_paused = true)]
async fn invalid_topics_fail_at_the_call_and_send_nothing() {
    use steadfast::proto::topic::TopicError;
    use steadfast::ClientError;
    let (connector, mut broker) = MockConnector::new(ProtocolVersion::V5);
    let (client, _events) = builder(connector, secs(30)).build().unwrap();
    let mut peer = broker.accept().await;
    peer.handshake().await;
    client.wait_for_state(|s| s == State::Connected).await;

    let invalid = Err(ClientError::InvalidTopic(TopicError::WildcardInName));
    assert_eq!(client.publish("a/+", "x").await.map(|_| ()), invalid);
    assert_eq!(
        client
            .send(Message::new("a/#", "x").qos(QoS::AtLeastOnce))
            .await
            .map(|_| ()),
        invalid
    );
    assert_eq!(
        client
            .send(Message::new("a", "x").response_topic("r/+"))
            .await
            .map(|_| ()),
        invalid
    );
    assert!(matches!(
        client
            .publish_accepted(Message::new(String::new(), "x"))
            .await,
        Err(ClientError::InvalidTopic(TopicError::Empty))
    ));
    let misplaced = Err(ClientError::InvalidTopic(
        TopicError::MisplacedMultiLevelWildcard,
    ));
    assert_eq!(
        client
            .subscribe("a/#/b", QoS::AtLeastOnce)
            .await
            .map(|_| ()),
        misplaced
    );
    assert_eq!(
        client
            .subscribe_many(["ok/+", "a/#/b"], QoS::AtLeastOnce)
            .await
            .map(|_| ()),
        misplaced
    );
    assert_eq!(
        client
            .subscribe_stream("x+", QoS::AtMostOnce)
            .await
            .map(|_| ()),
        Err(ClientError::InvalidTopic(
            TopicError::MisplacedSingleLevelWildcard
        ))
    );
    assert_eq!(client.unsubscribe("a/#/b").await, misplaced);
    assert_eq!(
        client.unsubscribe_many(vec!["ok", "a\0"]).await.map(|_| ()),
        Err(ClientError::InvalidTopic(TopicError::NullCharacter))
    );
    let e = client.publish("a/+", "x").await.unwrap_err();
    let source = std::error::Error::source(&e).expect("the topic error is the source");
    assert_eq!(
        source.downcast_ref::<TopicError>(),
        Some(&TopicError::WildcardInName)
    );

    // None of those reached the broker: the next packet is this valid publish.
    let c = client.clone();
    let valid = tokio::spawn(async move { c.publish(String::from("a/b"), "ok").await });
    match peer.recv_answering_pings().await {
        Some(Packet::Publish(p)) => assert_eq!(p.topic.as_str(), "a/b"),
        other => panic!("expected the valid PUBLISH, got {other:?}"),
    }
    assert!(valid.await.unwrap().is_ok());
    client.disconnect().await.unwrap();
}
