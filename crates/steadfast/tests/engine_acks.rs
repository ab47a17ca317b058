//! Manual acknowledgements against a real (private) Mosquitto: a consumer that ends without
//! acknowledging a message gets it again from its session, one that acknowledged it does not.
//! (The crash of a consumer with a durable store, SIGKILL included, is in `store_crash.rs`.)

mod support;

use steadfast::Message;
use support::*;

/// For QoS 1 and 2, both protocol versions: consumer 1 receives a job and ends without
/// acknowledging it; consumer 2 (same client id, resumed session) gets it again, marked DUP,
/// and acknowledges it; consumer 3 gets the next message and not the job. Nothing is proved
/// by waiting: consumer 3's first message must be the marker published after the job.
#[test]
fn an_unacknowledged_message_comes_again_and_an_acknowledged_one_does_not() {
    run(Duration::from_secs(120), async {
        let broker = mosquitto();
        let url = broker.url();
        for v in VERSIONS {
            for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let id = uid("acker");
                let topic = format!("acks/{id}");
                let consumer = |first: bool| {
                    let b = persistent(fast(&url, v, &id), v).manual_acks(true);
                    // Consumers after the first resume the session.
                    if first {
                        b
                    } else {
                        b.clean_start(false)
                    }
                };
                let (publisher, _pr) =
                    start_connected(fast(&url, v, &uid("acks-pub")), "publisher").await;

                let (c1, mut r1) = start_connected(consumer(true), "consumer-1").await;
                c1.subscribe(topic.as_str(), qos).await.expect("subscribe");
                publisher
                    .send(Message::new(topic.as_str(), "job").qos(qos))
                    .await
                    .expect("publish");
                let m = r1.message(T).await;
                assert_eq!((m.payload_str(), m.qos()), (Some("job"), qos));
                assert!(m.ack_token().is_some());
                // Ends without acknowledging it (processing interrupted).
                c1.disconnect().await.expect("disconnect");
                drop(c1);

                let (c2, mut r2) = start(consumer(false), "consumer-2");
                let conn = r2.connected(T).await;
                assert!(
                    matches!(
                        conn.event,
                        Lifecycle::Connected {
                            session_present: true,
                            ..
                        }
                    ),
                    "{}: the session was resumed",
                    vname(v)
                );
                let again = r2.message(T).await;
                assert_eq!(again.payload_str(), Some("job"), "{} {qos:?}", vname(v));
                assert!(again.dup(), "{} {qos:?}: a redelivery", vname(v));
                c2.ack(&again).await.expect("ack");
                c2.disconnect().await.expect("disconnect");
                drop(c2);

                publisher
                    .send(Message::new(topic.as_str(), "marker").qos(qos))
                    .await
                    .expect("publish");
                let (c3, mut r3) = start_connected(consumer(false), "consumer-3").await;
                let next = r3.message(T).await;
                assert_eq!(
                    next.payload_str(),
                    Some("marker"),
                    "{} {qos:?}: the acknowledged job did not come again",
                    vname(v)
                );
                assert!(!next.dup());
                c3.ack(&next).await.expect("ack");
                c3.disconnect().await.expect("disconnect");
                publisher.disconnect().await.expect("disconnect");
            }
        }
    });
}

/// Acknowledgements out of order against a real broker with a small in-flight window
/// (`max_inflight_messages` 4: it sends no more until acknowledgements come): the first message
/// is held while the next three are acknowledged, and once it is acknowledged every message
/// completes, in order.
#[test]
fn an_early_ack_waits_for_the_earlier_message_then_all_complete() {
    run(Duration::from_secs(60), async {
        let broker = mosquitto_with(Mosquitto::builder().max_inflight_messages(4));
        let url = broker.url();
        for v in VERSIONS {
            let id = uid("acker-order");
            let topic = format!("acks/{id}");
            let (publisher, _pr) =
                start_connected(fast(&url, v, &uid("acks-pub")), "publisher").await;
            let (c, mut r) =
                start_connected(fast(&url, v, &id).manual_acks(true), "consumer").await;
            c.subscribe(topic.as_str(), QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            for i in 0..8u32 {
                publisher
                    .send(Message::new(topic.as_str(), num_payload(i)).qos(QoS::AtLeastOnce))
                    .await
                    .expect("publish");
            }
            // The broker sends 4 (its window); 1..3 are acknowledged, 0 is held.
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(r.message(T).await);
            }
            let got: Vec<u32> = held.iter().map(|m| parse_num(m.payload())).collect();
            assert_eq!(got, vec![0, 1, 2, 3], "{}", vname(v));
            for m in &held[1..] {
                c.ack(m).await.expect("ack");
            }
            // Acknowledging 0 releases all four PUBACKs, in order; the rest flows.
            c.ack(&held[0]).await.expect("ack");
            for i in 4..8u32 {
                let m = r.message(T).await;
                assert_eq!(parse_num(m.payload()), i, "{}", vname(v));
                c.ack(&m).await.expect("ack");
            }
            c.disconnect().await.expect("disconnect");
            publisher.disconnect().await.expect("disconnect");
        }
    });
}
