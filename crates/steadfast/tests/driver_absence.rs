//! What the client must *not* do, proved on tokio's paused clock against scripted in-memory
//! brokers (see `mock`): no retry after a fatal verdict, no attempt while dormant, no
//! reconnect storm when kicked at once, no publish that completes while offline, no expired
//! message sent.
//!
//! Virtual time makes "nothing in 600 s" exact and instant; the real-broker tests in
//! `engine_*.rs` and `transport_*.rs` keep the positive side of each rule.

mod mock;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mock::{builder, connack, puback, MockConnector, Peer, Plan};
use steadfast::{
    ClientBuilder, ClientEvent, Events, Exponential, Message, ProtocolVersion, QoS, ReasonClass,
    State,
};
use steadfast_proto::{Disconnect, Lifecycle, Packet, Props, Reason, ReasonCode, TransportError};

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The engine tests' backoff (exponential 50 ms .. 500 ms): a client that retried when it
/// must not would be back within a second.
fn quick(b: ClientBuilder) -> ClientBuilder {
    b.backoff(Exponential::new(ms(50), ms(500))).rng_seed(7)
}

/// The next lifecycle event that matches `pred`, within `within` of virtual time.
async fn lifecycle(
    events: &mut Events,
    within: Duration,
    what: &str,
    pred: impl Fn(&Lifecycle) -> bool,
) -> Lifecycle {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Some(ClientEvent::Lifecycle { event, .. }) if pred(&event) => return event,
                Some(_) => {}
                None => panic!("the events ended before {what}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within {within:?}"))
}

/// Keeps every lifecycle event, in order, as it comes.
fn record(mut events: Events) -> Arc<Mutex<Vec<Lifecycle>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let ClientEvent::Lifecycle { event, .. } = ev {
                l.lock().unwrap().push(event);
            }
        }
    });
    log
}

fn reconnect_delays(log: &Mutex<Vec<Lifecycle>>) -> Vec<Duration> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Lifecycle::Reconnecting { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect()
}

/// A fatal CONNACK refusal (0x86 bad user name or password, 0x87 not authorized; 3.1.1
/// return codes 4 and 5) is reported as `Fatal` and never retried: no second connect attempt
/// in 600 s. (Real broker: `engine_broker::bad_credentials_are_fatal_with_one_attempt`.)
#[tokio::test(start_paused = true)]
async fn a_fatal_connack_refusal_is_never_retried() {
    for v in VERSIONS {
        for code in [ReasonCode::BadUserNameOrPassword, ReasonCode::NotAuthorized] {
            let (connector, mut broker) = MockConnector::new(v);
            let (client, mut events) = quick(builder(connector, secs(5))).build().unwrap();
            let mut peer = broker.accept().await;
            peer.expect_connect().await;
            peer.send(connack(false, code)).await;
            let fatal = lifecycle(&mut events, secs(5), "Fatal", |e| {
                matches!(e, Lifecycle::Fatal { .. })
            })
            .await;
            assert!(
                matches!(&fatal, Lifecycle::Fatal { reason: Reason::Refused { code: c, .. } } if *c == code),
                "{v} {code:?}: {fatal:?}"
            );
            client.wait_for_state(|s| s == State::Failed).await;
            assert!(
                broker.accept_within(secs(600)).await.is_none(),
                "{v} {code:?}: a fatal refusal was retried"
            );
            assert_eq!(broker.attempts().len(), 1, "{v} {code:?}");
            assert_eq!(client.state(), State::Failed, "{v} {code:?}");
        }
    }
}

/// A TLS certificate rejection is `Fatal` and never retried: one connect attempt in 600 s.
/// (Real broker: every `*_is_fatal*` test in `transport_tls.rs` and `transport_ws.rs`.)
#[tokio::test(start_paused = true)]
async fn a_tls_certificate_rejection_is_never_retried() {
    for v in VERSIONS {
        let (connector, broker) = MockConnector::new(v);
        broker.plan(Plan::Fail(TransportError::TlsFatal(
            "invalid peer certificate: Expired".into(),
        )));
        let (client, mut events) = quick(builder(connector, secs(5))).build().unwrap();
        let fatal = lifecycle(&mut events, secs(5), "Fatal", |e| {
            matches!(e, Lifecycle::Fatal { .. })
        })
        .await;
        assert!(
            matches!(
                &fatal,
                Lifecycle::Fatal {
                    reason: Reason::Transport(TransportError::TlsFatal(_))
                }
            ),
            "{v}: {fatal:?}"
        );
        tokio::time::sleep(secs(600)).await;
        assert_eq!(
            broker.attempts().len(),
            1,
            "{v}: a TLS rejection was retried"
        );
        assert_eq!(client.state(), State::Failed, "{v}");
    }
}

/// `max_attempts` reached: `Dormant`, and no attempt at all until `wake()` (600 s of virtual
/// time); `wake()` connects at once, with the attempt count reset. (Real broker:
/// `engine_broker::max_attempts_goes_dormant_and_wake_connects`.)
#[tokio::test(start_paused = true)]
async fn a_dormant_client_makes_no_attempt_until_woken() {
    for v in VERSIONS {
        let (connector, mut broker) = MockConnector::new(v);
        for _ in 0..3 {
            broker.plan(Plan::Fail(TransportError::Io("connection refused".into())));
        }
        let (client, mut events) = quick(builder(connector, secs(5)))
            .max_attempts(3)
            .build()
            .unwrap();
        let dormant = lifecycle(&mut events, secs(10), "Dormant", |e| {
            matches!(e, Lifecycle::Dormant { .. })
        })
        .await;
        assert_eq!(dormant, Lifecycle::Dormant { attempts: 3 }, "{v}");
        client.wait_for_state(|s| s == State::Dormant).await;
        assert!(
            broker.accept_within(secs(600)).await.is_none(),
            "{v}: a dormant client tried again by itself"
        );
        assert_eq!(broker.attempts().len(), 3, "{v}");
        assert_eq!(client.state(), State::Dormant, "{v}");

        let woken = tokio::time::Instant::now();
        client.wake();
        let mut peer = broker.accept().await;
        assert!(
            woken.elapsed() < ms(10),
            "{v}: wake() waited {:?}",
            woken.elapsed()
        );
        peer.handshake().await;
        let up = lifecycle(&mut events, secs(5), "Connected", |e| {
            matches!(e, Lifecycle::Connected { .. })
        })
        .await;
        assert!(
            matches!(up, Lifecycle::Connected { attempt: 1, .. }),
            "{v}: wake() resets the attempt count: {up:?}"
        );
    }
}

/// The broker's side of two clients that share one client id, as Mosquitto plays it: each
/// CONNECT is accepted and the other client's connection is closed without a DISCONNECT.
/// Returns the virtual times of each client's connections within `window`.
async fn twins(
    v: ProtocolVersion,
    window: Duration,
    policy: impl Fn(ClientBuilder) -> ClientBuilder,
) -> [Vec<Duration>; 2] {
    let (ca, mut ba) = MockConnector::new(v);
    let (cb, mut bb) = MockConnector::new(v);
    // A keep-alive beyond the window: the links die of the takeover only.
    let (a, _ea) = policy(builder(ca, window * 2)).rng_seed(1).build().unwrap();
    let (b, _eb) = policy(builder(cb, window * 2)).rng_seed(2).build().unwrap();
    let start = tokio::time::Instant::now();
    let end = start + window;
    let mut live: [Option<Peer>; 2] = [None, None];
    let mut at: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    loop {
        let (k, mut peer) = tokio::select! {
            p = ba.accept() => (0, p),
            p = bb.accept() => (1, p),
            _ = tokio::time::sleep_until(end) => break,
        };
        peer.handshake().await;
        at[k].push(start.elapsed());
        if let Some(old) = live[1 - k].take() {
            old.close().await;
        }
        live[k] = Some(peer);
    }
    drop((a, b));
    at
}

/// Two clients sharing one client id do not ping-pong: each connection is lost at once, the
/// backoff keeps growing (a connection lost before `stable_after` does not reset it), and
/// with the default policy (1 s .. 60 s) they settle into a few connects a minute. Over ten
/// minutes of virtual time; a backoff reset on every connect makes this a storm of hundreds.
/// (Real broker: `engine_takeover::shared_client_id_does_not_ping_pong_with_mosquitto`.)
#[tokio::test(start_paused = true)]
async fn twins_sharing_a_client_id_settle_into_a_few_connects_a_minute() {
    for v in VERSIONS {
        let at = twins(v, secs(600), |b| b).await;
        for (k, times) in at.iter().enumerate() {
            assert!(
                times.len() >= 2,
                "{v}: client {k} was never kicked: {times:?}"
            );
            let late = times.iter().filter(|t| **t >= secs(300)).count();
            assert!(
                late <= 15,
                "{v}: client {k} connected {late} times in the last 5 minutes: {times:?}"
            );
            assert!(
                times.len() <= 40,
                "{v}: client {k} connected {} times in 10 minutes: {times:?}",
                times.len()
            );
        }
        eprintln!(
            "{v}: connects in 10 min: {} and {}",
            at[0].len(),
            at[1].len()
        );
    }
}

/// The engine tests' twin setting (exponential 100 ms .. 4 s): well under 15 connects each
/// in 10 s, as the real-broker test allows.
#[tokio::test(start_paused = true)]
async fn twins_with_a_short_backoff_stay_under_fifteen_connects_in_ten_seconds() {
    for v in VERSIONS {
        let at = twins(v, secs(10), |b| {
            b.backoff(Exponential::new(ms(100), secs(4)))
        })
        .await;
        for (k, times) in at.iter().enumerate() {
            assert!(
                (2..=14).contains(&times.len()),
                "{v}: client {k} connected {} times in 10 s: {times:?}",
                times.len()
            );
        }
    }
}

/// A broker that accepts, then takes the session over (DISCONNECT 0x8E) after 50 ms.
async fn take_over(peer: &mut Peer) {
    peer.handshake().await;
    tokio::time::sleep(ms(50)).await;
    peer.send(Packet::Disconnect(Disconnect {
        reason: ReasonCode::SessionTakenOver,
        properties: Props::new(),
    }))
    .await;
}

/// DISCONNECT 0x8E on every connection: the delays jump to at least max/4 (1 s) and grow,
/// so 10 s of virtual time see only 3 to 5 connections (floors 1 s, 2 s, 4 s: at about 0,
/// 1, 3 and 7 s), not a ping-pong. (Scripted peer over TCP:
/// `engine_takeover::takeover_0x8e_backs_off_instead_of_ping_pong`.)
#[tokio::test(start_paused = true)]
async fn a_takeover_0x8e_backs_off_instead_of_ping_pong() {
    let v = ProtocolVersion::V5;
    let (connector, mut broker) = MockConnector::new(v);
    let (_client, events) = builder(connector, secs(30))
        .backoff(Exponential::new(ms(100), secs(4)))
        .rng_seed(3)
        .build()
        .unwrap();
    let log = record(events);
    let end = tokio::time::Instant::now() + secs(10);
    let mut peers = Vec::new();
    while let Some(mut peer) = broker
        .accept_within(end.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        take_over(&mut peer).await;
        peers.push(peer);
    }
    let n = peers.len();
    assert!((3..=5).contains(&n), "{n} connections in 10 s");
    let delays = reconnect_delays(&log);
    assert!(delays.iter().all(|d| *d >= secs(1)), "{delays:?}");
    assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
    let losses: Vec<Reason> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Lifecycle::ConnectionLost { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(losses.len(), n, "{losses:?}");
    for r in &losses {
        assert_eq!(r.reason_code(), Some(ReasonCode::SessionTakenOver), "{r:?}");
    }
}

/// A reason hook that makes the takeover fatal stops the client: `Fatal` and no second
/// connect in 600 s.
#[tokio::test(start_paused = true)]
async fn a_takeover_made_fatal_by_the_hook_is_not_retried() {
    let v = ProtocolVersion::V5;
    let (connector, mut broker) = MockConnector::new(v);
    let (client, mut events) = quick(builder(connector, secs(30)))
        .reason_hook(|_, class| {
            if class == ReasonClass::Takeover {
                ReasonClass::Fatal
            } else {
                class
            }
        })
        .build()
        .unwrap();
    let mut peer = broker.accept().await;
    take_over(&mut peer).await;
    let fatal = lifecycle(&mut events, secs(5), "Fatal", |e| {
        matches!(e, Lifecycle::Fatal { .. })
    })
    .await;
    let Lifecycle::Fatal { reason } = &fatal else {
        unreachable!()
    };
    assert_eq!(reason.reason_code(), Some(ReasonCode::SessionTakenOver));
    client.wait_for_state(|s| s == State::Failed).await;
    assert!(
        broker.accept_within(secs(600)).await.is_none(),
        "the stopped client connected again"
    );
    assert_eq!(broker.attempts().len(), 1);
}

/// The client's part of the MQTT 5 will delay: the CONNECT carries the delay and a session
/// expiry, and after an abrupt loss the client is back within the delay, resuming the
/// session (Clean Start 0, same id, same will), which is what lets the broker cancel the
/// will. (Whether the broker then holds it back is Mosquitto's part:
/// `engine_v5::will_delay_holds_the_will_and_a_quick_reconnect_resumes_the_session` checks it comes after the delay.)
#[tokio::test(start_paused = true)]
async fn a_reconnect_after_a_loss_comes_within_the_will_delay_and_resumes_the_session() {
    let v = ProtocolVersion::V5;
    let (connector, mut broker) = MockConnector::new(v);
    let (_client, _events) = quick(builder(connector, secs(30)))
        .clean_start(true)
        .session_expiry(secs(30))
        .will("wd/mock", "will", QoS::AtLeastOnce, false, Some(secs(2)))
        .build()
        .unwrap();
    let mut peer = broker.accept().await;
    let first = peer.expect_connect().await;
    peer.connack(false).await;
    let will = first.will.as_ref().expect("a will");
    assert_eq!(will.properties.will_delay_interval, Some(2));
    assert_eq!(first.properties.session_expiry_interval, Some(30));
    assert!(first.clean_start);

    // The link drops without a DISCONNECT.
    peer.close().await;
    let lost = tokio::time::Instant::now();
    let mut peer = broker
        .accept_within(secs(2))
        .await
        .expect("no reconnect within the 2 s will delay");
    let again = peer.expect_connect().await;
    assert!(lost.elapsed() < secs(2), "back after {:?}", lost.elapsed());
    assert!(!again.clean_start, "the reconnect must resume the session");
    assert_eq!(again.client_id, first.client_id);
    assert_eq!(again.properties.session_expiry_interval, Some(30));
    assert_eq!(
        again
            .will
            .as_ref()
            .map(|w| w.properties.will_delay_interval),
        Some(Some(2))
    );
    peer.send(connack(true, ReasonCode::Success)).await;
}

fn expiring(topic: &str, payload: &'static str, expiry: Option<u32>) -> Message {
    let m = Message::new(topic, payload).qos(QoS::AtLeastOnce);
    match expiry {
        Some(secs) => m.message_expiry(Duration::from_secs(secs.into())),
        None => m,
    }
}

/// Publishes queued offline do not complete while the client is offline (2.1 s of failing
/// attempts); one whose Message Expiry Interval (1 s) ran out meanwhile is never sent and
/// fails with `Expired`; the others go out in order after the reconnect, their expiry
/// reduced by the time queued. (Real broker: `engine_v5::message_expiry_passes_through`.)
#[tokio::test(start_paused = true)]
async fn an_offline_message_that_expires_is_never_sent_and_the_rest_wait() {
    let v = ProtocolVersion::V5;
    let (connector, mut broker) = MockConnector::new(v);
    let (client, mut events) = quick(builder(connector, secs(30))).build().unwrap();
    let mut peer = broker.accept().await;
    peer.handshake().await;
    client.wait_for_state(|s| s == State::Connected).await;
    for _ in 0..1000 {
        broker.plan(Plan::Fail(TransportError::Io("connection refused".into())));
    }
    peer.close().await;
    lifecycle(&mut events, secs(5), "ConnectionLost", |e| {
        matches!(e, Lifecycle::ConnectionLost { .. })
    })
    .await;
    let publish = |body: &'static str, expiry: Option<u32>| {
        let c = client.clone();
        tokio::spawn(async move { c.send(expiring("exp", body, expiry)).await })
    };
    let short = publish("short", Some(1));
    tokio::time::sleep(ms(20)).await;
    let longer = publish("longer", Some(10));
    tokio::time::sleep(ms(20)).await;
    let forever = publish("forever", None);
    tokio::time::sleep(ms(2100)).await;
    assert!(
        !short.is_finished() && !longer.is_finished() && !forever.is_finished(),
        "a publish completed while offline"
    );
    assert!(broker.attempts().len() > 2, "{:?}", broker.attempts());

    broker.clear_plans();
    let mut peer = broker.accept_within(secs(1)).await.expect("a reconnect");
    peer.handshake().await;
    let mut sent = Vec::new();
    while sent.len() < 2 {
        match peer.recv_answering_pings().await {
            Some(Packet::Publish(p)) => {
                peer.send(puback(p.pkid)).await;
                sent.push((
                    String::from_utf8_lossy(&p.payload).into_owned(),
                    p.properties.message_expiry_interval,
                ));
            }
            Some(_) => {}
            None => panic!("the client closed the link; sent {sent:?}"),
        }
    }
    assert_eq!(sent[0].0, "longer", "{sent:?}");
    let left = sent[0].1.expect("expiry");
    assert!(
        (1..=8).contains(&left),
        "expiry {left} not reduced: {sent:?}"
    );
    assert_eq!(sent[1], ("forever".to_string(), None), "{sent:?}");
    assert_eq!(
        short.await.unwrap(),
        Err(steadfast::ClientError::Publish(
            steadfast::PublishError::Expired
        ))
    );
    assert!(longer.await.unwrap().is_ok());
    assert!(forever.await.unwrap().is_ok());
    // And the expired one never comes later either.
    let until = tokio::time::Instant::now() + secs(120);
    while let Ok(p) = tokio::time::timeout_at(until, peer.recv()).await {
        match p {
            Some(Packet::PingReq) => peer.send(Packet::PingResp).await,
            Some(Packet::Publish(p)) => panic!("sent after expiring: {p:?}"),
            Some(_) => {}
            None => panic!("the client closed the link"),
        }
    }
    assert_eq!(client.state(), State::Connected);
}
