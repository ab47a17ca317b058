//! `steadfast::blocking` against a real Mosquitto: a program without an async runtime
//! publishes and receives, and the client reconnects and resubscribes on its own when the
//! broker is killed and restarted while the program makes no call at all.

use std::time::{Duration, Instant};

use steadfast::blocking::{Events, RecvTimeoutError};
use steadfast::{ClientBuilder, ClientError, ClientEvent, Lifecycle, Message, QoS, State};
use steadfast_chaos::mosquitto::Mosquitto;

const T: Duration = Duration::from_secs(20);

/// The next message on `topic`, skipping other events; panics after `T`.
fn message_on(events: &mut Events, topic: &str) -> steadfast::Received {
    let deadline = Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(ClientEvent::Message(m)) if m.topic() == topic => return m,
            Ok(_) => {}
            Err(e) => panic!("no message on {topic}: {e}"),
        }
    }
}

fn fast(url: &str) -> ClientBuilder {
    ClientBuilder::from_url(url)
        .unwrap()
        .backoff(steadfast::Constant::new(Duration::from_millis(100)))
}

#[test]
fn a_blocking_client_publishes_receives_and_survives_a_broker_restart() {
    let mut broker = Mosquitto::start().expect("mosquitto");
    let (sub, mut sub_events) = fast(&broker.url()).build_blocking().expect("build");
    let (publ, _pub_events) = fast(&broker.url()).build_blocking().expect("build");
    assert_eq!(
        sub.subscribe("blocking/t", QoS::AtLeastOnce).unwrap(),
        QoS::AtLeastOnce
    );
    publ.send(Message::new("blocking/t", "one").qos(QoS::AtLeastOnce))
        .expect("acknowledged");
    assert_eq!(
        &message_on(&mut sub_events, "blocking/t").payload()[..],
        b"one"
    );

    // The broker dies and comes back without the session; the program makes no call while
    // the client notices, reconnects and resubscribes by itself.
    broker.kill9();
    let lost = sub
        .wait_for_state(|s| s != State::Connected, T)
        .unwrap()
        .expect("the loss is noticed");
    assert_ne!(lost, State::Connected);
    broker.restart().expect("restart");
    let deadline = Instant::now() + T;
    let mut resubscribed = false;
    while !resubscribed {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub_events.recv_timeout(left) {
            Ok(ClientEvent::Lifecycle {
                event: Lifecycle::Resubscribed { filters, .. },
                ..
            }) => resubscribed = filters.iter().any(|f| f.as_str() == "blocking/t"),
            Ok(_) => {}
            Err(e) => panic!("no resubscription: {e}"),
        }
    }
    publ.send(Message::new("blocking/t", "two").qos(QoS::AtLeastOnce))
        .expect("acknowledged after the restart");
    assert_eq!(
        &message_on(&mut sub_events, "blocking/t").payload()[..],
        b"two"
    );

    sub.disconnect().unwrap();
    // After the disconnect the events end: `Disconnected`, then closed.
    let mut saw_disconnected = false;
    loop {
        match sub_events.recv_timeout(T) {
            Ok(ClientEvent::Lifecycle {
                event: Lifecycle::Disconnected,
                ..
            }) => saw_disconnected = true,
            Ok(_) => {}
            Err(RecvTimeoutError::Closed) => break,
            Err(RecvTimeoutError::Timeout) => panic!("events did not end"),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(saw_disconnected);
    assert_eq!(
        sub.publish("blocking/t", "late"),
        Err(ClientError::Closed),
        "a closed client refuses"
    );
    publ.disconnect().unwrap();
}

#[test]
fn blocking_calls_inside_a_runtime_are_refused_not_a_panic() {
    let broker = Mosquitto::start().expect("mosquitto");
    let (client, mut events) = fast(&broker.url()).build_blocking().expect("build");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let inside = rt.block_on(async { client.publish("blocking/x", "x") });
    assert_eq!(inside, Err(ClientError::BlockingInRuntime));
    let inside = rt.block_on(async { events.recv_timeout(Duration::from_millis(1)) });
    assert_eq!(inside.err(), Some(RecvTimeoutError::InRuntime));
    // Outside the runtime the same client works.
    client.publish("blocking/x", "x").expect("published");
    client.disconnect().unwrap();
    drop(rt);
}

#[test]
fn build_blocking_needs_no_runtime_and_checks_like_build() {
    let e = ClientBuilder::new()
        .servers([])
        .build_blocking()
        .unwrap_err();
    assert_eq!(e, steadfast::BuildError::NoServer);
}
