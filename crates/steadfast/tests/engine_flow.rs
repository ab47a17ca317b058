//! Scripted peers for refusals a real broker here will not make on demand: SUBACK 0x87 / 0x80
//! on a resubscription (an ACL change), a broker that closes the connection on one PUBLISH
//! every time (a poison message), and one that accepts every CONNECT and drops it at once.

mod support;

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use steadfast::proto::{CommandError, Packet, Props, PubAck, PublishError, SubAck};
use steadfast::ClientError;
use steadfast::Message;
use support::*;

/// A raw frame from the client, decoded with the project's codec.
fn decode(frame: &[u8], v: ProtocolVersion) -> Option<Packet> {
    Packet::decode(&mut BytesMut::from(frame), v, u32::MAX).ok()
}

/// A packet as the broker writes it.
fn encode(p: Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out).expect("encode");
    out.to_vec()
}

fn suback(pkid: u16, reasons: Vec<ReasonCode>, v: ProtocolVersion) -> Vec<u8> {
    encode(
        Packet::SubAck(SubAck {
            pkid,
            reasons,
            properties: Props::new(),
        }),
        v,
    )
}

/// The broker grants both filters on the first connection, drops it, comes back without the
/// session and refuses one filter of the restore: the application is told, with the code,
/// and only after the SUBACK.
#[test]
fn a_refused_resubscription_is_reported() {
    run(Duration::from_secs(30), async {
        for v in VERSIONS {
            let level = level_of(v);
            // 3.1.1 has a single failure code, 0x80.
            let code = if level == 5 {
                ReasonCode::NotAuthorized
            } else {
                ReasonCode::UnspecifiedError
            };
            let broker = Arc::new(FakeBroker::bind().await.unwrap());
            // The first link is cut once the application has its SUBACK.
            let subscribed = Arc::new(tokio::sync::Notify::new());
            let granted_seen = subscribed.clone();
            serve(broker.clone(), move |n, mut conn| {
                let granted_seen = granted_seen.clone();
                async move {
                    if read_connect(&mut conn).await.is_none() {
                        return;
                    }
                    let _ = conn.write_all(&connack_ok(level)).await;
                    while let Ok(Some(f)) = conn.read_frame_timeout(T).await {
                        let Some(Packet::Subscribe(sub)) = decode(&f, v) else {
                            continue;
                        };
                        if n == 1 {
                            let granted = vec![ReasonCode::GrantedQoS1; sub.filters.len()];
                            let _ = conn.write_all(&suback(sub.pkid, granted, v)).await;
                            granted_seen.notified().await;
                            conn.reset();
                            return;
                        }
                        let codes = sub
                            .filters
                            .iter()
                            .map(|f| {
                                if f.filter.starts_with("denied") {
                                    code
                                } else {
                                    ReasonCode::GrantedQoS1
                                }
                            })
                            .collect();
                        let _ = conn.write_all(&suback(sub.pkid, codes, v)).await;
                    }
                }
            });
            let id = uid(&format!("resub-{}", vname(v)));
            let (c, mut r) = start(fast(&broker.url(), v, &id), &id);
            r.connected(T).await;
            let granted = c
                .subscribe_with(
                    vec![
                        steadfast::SubscribeFilter::new("allowed/#", QoS::AtLeastOnce),
                        steadfast::SubscribeFilter::new("denied/#", QoS::AtLeastOnce),
                    ],
                    steadfast::Properties::default(),
                )
                .await
                .unwrap();
            assert_eq!(granted.len(), 2);
            subscribed.notify_one();
            let failed = r
                .next("ResubscribeFailed", T, |e| {
                    matches!(e, Lifecycle::ResubscribeFailed { .. })
                })
                .await;
            let Lifecycle::ResubscribeFailed { filter, error } = failed.event else {
                unreachable!()
            };
            assert_eq!(filter.as_str(), "denied/#");
            assert_eq!(error, CommandError::Refused(code), "{}", vname(v));
            let ok = r
                .next("Resubscribed", T, |e| {
                    matches!(e, Lifecycle::Resubscribed { .. })
                })
                .await;
            let Lifecycle::Resubscribed { filters, granted } = ok.event else {
                unreachable!()
            };
            assert_eq!(filters, ["allowed/#"]);
            assert_eq!(granted, [ReasonCode::GrantedQoS1]);
            // Resubscribed came after the refusal, i.e. after the SUBACK: one event each.
            assert_eq!(r.count(|e| matches!(e, Lifecycle::Resubscribed { .. })), 1);
            c.disconnect().await.unwrap();
        }
    });
}

/// A 3.1.1 broker that closes the connection on every PUBLISH to `poison/...` (as NATS does for
/// QoS 2, or a 3.1.1 ACL denial): after three closes that message fails with a typed error,
/// and the one behind it is delivered.
#[test]
fn a_poison_message_is_given_up_and_the_rest_goes_on() {
    run(Duration::from_secs(30), async {
        let broker = Arc::new(FakeBroker::bind().await.unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        serve(broker.clone(), move |n, mut conn| {
            let s2 = s2.clone();
            async move {
                if read_connect(&mut conn).await.is_none() {
                    return;
                }
                let _ = conn.write_all(&connack_ok(4)).await;
                while let Ok(Some(f)) = conn.read_frame_timeout(T).await {
                    let Some(Packet::Publish(p)) = decode(&f, ProtocolVersion::V311) else {
                        continue;
                    };
                    s2.lock().unwrap().push((n, p.topic.to_string()));
                    if p.topic.starts_with("poison/") {
                        drop(conn);
                        return;
                    }
                    let ack = encode(Packet::PubAck(PubAck::new(p.pkid)), ProtocolVersion::V311);
                    let _ = conn.write_all(&ack).await;
                }
            }
        });
        let id = uid("poison");
        // One message in flight, so every close has the same suspect (with more, the first
        // cuts shrink the window instead: core_flow.rs).
        let b = fast(&broker.url(), ProtocolVersion::V311, &id).max_inflight(1);
        let (c, mut r) = start(b, &id);
        r.connected(T).await;
        let poison = {
            let c = c.clone();
            tokio::spawn(async move {
                c.send(Message::new("poison/1", "x").qos(QoS::AtLeastOnce))
                    .await
            })
        };
        // Behind it in the queue (published once the first is on its way).
        eventually("the poison message sent", T, || {
            !seen.lock().unwrap().is_empty()
        })
        .await;
        let good = c.send(Message::new("good/1", "y").qos(QoS::AtLeastOnce));
        let good = tokio::time::timeout(T, good)
            .await
            .expect("the rest goes on");
        assert!(good.is_ok(), "{good:?}");
        let poison = poison.await.unwrap();
        assert!(
            matches!(
                poison,
                Err(ClientError::Publish(PublishError::Poison { closes: 3 }))
            ),
            "{poison:?}"
        );
        let seen = seen.lock().unwrap().clone();
        let tries = seen.iter().filter(|(_, t)| t == "poison/1").count();
        assert_eq!(tries, 3, "{seen:?}");
        c.disconnect().await.unwrap();
    });
}

/// A broker that accepts every CONNECT and drops the connection at once: each connect
/// succeeds, yet with `max_attempts` the client goes dormant instead of cycling for ever, and
/// the attempt numbers go on.
#[test]
fn a_flapping_connection_goes_dormant_after_max_attempts() {
    run(Duration::from_secs(30), async {
        for v in VERSIONS {
            let level = level_of(v);
            let broker = Arc::new(FakeBroker::bind().await.unwrap());
            serve(broker.clone(), move |_, mut conn| async move {
                if read_connect(&mut conn).await.is_none() {
                    return;
                }
                let _ = conn.write_all(&connack_ok(level)).await;
                conn.reset();
            });
            let id = uid(&format!("flap-{}", vname(v)));
            let (_c, mut r) = start(fast(&broker.url(), v, &id).max_attempts(3), &id);
            let dormant = r
                .next("Dormant", T, |e| matches!(e, Lifecycle::Dormant { .. }))
                .await;
            assert_eq!(dormant.event, Lifecycle::Dormant { attempts: 3 });
            let attempts: Vec<u32> = r
                .events()
                .iter()
                .filter_map(|e| match e {
                    Lifecycle::Connected { attempt, .. } => Some(*attempt),
                    _ => None,
                })
                .collect();
            assert_eq!(attempts, [1, 2, 3], "{}", vname(v));
            assert_eq!(broker.accept_count(), 3);
        }
    });
}
