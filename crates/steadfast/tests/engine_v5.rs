//! MQTT 5 features end to end against a private Mosquitto: request/response, subscription
//! identifiers routed to `subscribe_stream` handles, shared subscriptions (also 3.1.1),
//! message expiry, and the will delay.

mod support;

use bytes::Bytes;
use steadfast::{Message, PayloadFormat};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Request/response: the response topic and correlation data reach the responder intact,
/// and its reply (correlation data echoed) reaches the requester.
#[test]
fn request_response_round_trip() {
    run(Duration::from_secs(20), async {
        let broker = mosquitto();
        let id = uid("rr");
        let req_topic = format!("rr/{id}/req");
        let resp_topic = format!("rr/{id}/resp");
        let (responder, _rr) = start_connected(
            fast(&broker.url(), V5, &format!("{id}-responder")),
            "responder",
        )
        .await;
        let mut requests = responder
            .subscribe_stream(req_topic.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let serve = tokio::spawn(async move {
            let req = tokio::time::timeout(T, requests.recv())
                .await
                .expect("request")
                .expect("open");
            let to = req.response_topic().expect("response topic").to_string();
            let body = format!("re:{}", String::from_utf8_lossy(req.payload()));
            let mut reply = Message::new(to.as_str(), body).qos(QoS::AtLeastOnce);
            if let Some(data) = req.correlation_data().cloned() {
                reply = reply.correlation_data(data);
            }
            responder.send(reply).await.unwrap();
            req
        });

        let (requester, mut rq) = start_connected(
            fast(&broker.url(), V5, &format!("{id}-requester")),
            "requester",
        )
        .await;
        requester
            .subscribe(resp_topic.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let request = Message::new(req_topic.as_str(), "ping")
            .qos(QoS::AtLeastOnce)
            .response_topic(resp_topic.as_str())
            .correlation_data(Bytes::from_static(b"\x00corr-42\xff"))
            .content_type("text/plain")
            .payload_format(PayloadFormat::Utf8)
            .user_property("k", "v");
        requester.send(request).await.unwrap();

        let req = tokio::time::timeout(T, serve)
            .await
            .expect("responder")
            .unwrap();
        assert_eq!(req.response_topic(), Some(resp_topic.as_str()));
        assert_eq!(
            req.correlation_data().map(|b| &b[..]),
            Some(&b"\x00corr-42\xff"[..])
        );
        assert_eq!(req.content_type(), Some("text/plain"));
        assert_eq!(req.payload_format_indicator(), Some(1));
        assert_eq!(req.user_properties().len(), 1);
        assert_eq!(req.user_property("k"), Some("v"));

        let reply = rq.message(T).await;
        assert_eq!(reply.topic(), resp_topic.as_str());
        assert_eq!(&reply.payload()[..], b"re:ping");
        assert_eq!(
            reply.correlation_data().map(|b| &b[..]),
            Some(&b"\x00corr-42\xff"[..])
        );
    });
}

async fn next(h: &mut steadfast::Subscription) -> steadfast::Received {
    tokio::time::timeout(T, h.recv())
        .await
        .expect("message on stream")
        .expect("open")
}

/// Subscription identifiers route each message to the right `subscribe_stream` handle: with
/// overlapping filters the broker sends one copy per subscription, each with its own
/// identifier, and each handle gets exactly its copy (routing by filter would give both
/// handles both copies). Messages for a plain `subscribe` still go to `Events`.
#[test]
fn subscription_identifiers_route_to_the_right_stream() {
    run(Duration::from_secs(20), async {
        let broker = mosquitto();
        let id = uid("subid");
        let (c, mut r) = start_connected(fast(&broker.url(), V5, &id), &id).await;
        let a = format!("sid/{id}/+/x");
        let b = format!("sid/{id}/a/#");
        let mut ha = c
            .subscribe_stream(a.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let mut hb = c
            .subscribe_stream(b.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        c.subscribe(format!("sid/{id}/events"), QoS::AtLeastOnce)
            .await
            .unwrap();

        let (p, _pr) = start_connected(fast(&broker.url(), V5, &format!("{id}-pub")), "pub").await;
        for (t, body) in [
            ("a/x", "both"),
            ("b/x", "only-a"),
            ("a/y", "only-b"),
            ("events", "events"),
        ] {
            p.send(Message::new(format!("sid/{id}/{t}"), body).qos(QoS::AtLeastOnce))
                .await
                .unwrap();
        }
        let a1 = next(&mut ha).await;
        let a2 = next(&mut ha).await;
        let b1 = next(&mut hb).await;
        let b2 = next(&mut hb).await;
        let bodies = |ms: [&steadfast::Received; 2]| {
            ms.map(|m| String::from_utf8_lossy(m.payload()).into_owned())
        };
        assert_eq!(bodies([&a1, &a2]), ["both", "only-a"]);
        assert_eq!(bodies([&b1, &b2]), ["both", "only-b"]);
        // Each copy carries the identifier of the subscription it was routed by.
        assert_eq!(a1.subscription_identifiers().len(), 1);
        assert_eq!(b1.subscription_identifiers().len(), 1);
        assert_eq!(a1.subscription_identifiers(), a2.subscription_identifiers());
        assert_eq!(b1.subscription_identifiers(), b2.subscription_identifiers());
        assert_ne!(a1.subscription_identifiers(), b1.subscription_identifiers());
        let ev = r.message(T).await;
        assert_eq!(&ev.payload()[..], b"events");
        // Nothing else came to either stream: a last message for each is next in line.
        p.send(Message::new(format!("sid/{id}/c/x"), "end-a").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        p.send(Message::new(format!("sid/{id}/a/z"), "end-b").qos(QoS::AtLeastOnce))
            .await
            .unwrap();
        assert_eq!(&next(&mut ha).await.payload()[..], b"end-a");
        assert_eq!(&next(&mut hb).await.payload()[..], b"end-b");
    });
}

/// Two `subscribe_stream` handles for the same filter both receive every message of it, with
/// a real broker: MQTT 5 (subscription identifiers: the second SUBSCRIBE replaces the first
/// and its identifier) and MQTT 3.1.1 (routed by filter). Neither message reaches `Events`,
/// and once one handle is dropped the other still gets everything.
#[test]
fn two_streams_for_one_filter_both_receive() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto();
        for v in [ProtocolVersion::V311, V5] {
            let id = uid("dupstream");
            let filter = format!("dup/{id}/+");
            let (c, mut r) = start_connected(fast(&broker.url(), v, &id), &id).await;
            let mut first = c
                .subscribe_stream(filter.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            let mut second = c
                .subscribe_stream(filter.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            let (p, _pr) =
                start_connected(fast(&broker.url(), v, &format!("{id}-pub")), "pub").await;
            for n in 0..3 {
                p.send(Message::new(format!("dup/{id}/{n}"), n.to_string()).qos(QoS::AtLeastOnce))
                    .await
                    .unwrap();
            }
            for h in [&mut first, &mut second] {
                for n in 0..3 {
                    let m = next(h).await;
                    assert_eq!(*m.payload(), n.to_string(), "{v}");
                }
            }
            drop(first);
            p.send(Message::new(format!("dup/{id}/last"), "last").qos(QoS::AtLeastOnce))
                .await
                .unwrap();
            assert_eq!(&next(&mut second).await.payload()[..], b"last", "{v}");
            // Events saw none of them: a message of another subscription is the first there.
            c.subscribe(format!("other/{id}"), QoS::AtLeastOnce)
                .await
                .unwrap();
            p.send(Message::new(format!("other/{id}"), "other").qos(QoS::AtLeastOnce))
                .await
                .unwrap();
            assert_eq!(r.message(T).await.topic(), format!("other/{id}"), "{v}");
            c.disconnect().await.unwrap();
            p.disconnect().await.unwrap();
        }
    });
}

/// A shared subscription `$share/g/topic` held by two clients splits the messages between
/// them: together they get every message once, and both get some. One member uses
/// `subscribe_stream` (routing of a `$share` filter), the other `subscribe`.
#[test]
fn shared_subscription_splits_messages() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto();
        for v in VERSIONS {
            let id = uid(&format!("share-{}", vname(v)));
            let topic = format!("sh/{id}");
            let filter = format!("$share/g/{topic}");
            let (c1, _r1) = start_connected(fast(&broker.url(), v, &format!("{id}-1")), "m1").await;
            let (c2, mut r2) =
                start_connected(fast(&broker.url(), v, &format!("{id}-2")), "m2").await;
            let mut s1 = c1
                .subscribe_stream(filter.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            c2.subscribe(filter.as_str(), QoS::AtLeastOnce)
                .await
                .unwrap();
            let (p, _pr) =
                start_connected(fast(&broker.url(), v, &format!("{id}-pub")), "pub").await;
            let n = 20u32;
            for i in 0..n {
                p.send(Message::new(topic.as_str(), num_payload(i)).qos(QoS::AtLeastOnce))
                    .await
                    .unwrap();
            }
            let (mut got1, mut got2) = (Vec::new(), Vec::new());
            let deadline = Instant::now() + T;
            while got1.len() + got2.len() < n as usize {
                assert!(
                    Instant::now() < deadline,
                    "{}: only {:?} + {:?}",
                    vname(v),
                    got1,
                    got2
                );
                tokio::select! {
                    Some(m) = s1.recv() => got1.push(parse_num(m.payload())),
                    Some(m) = r2.try_message(ms(100)) => got2.push(parse_num(m.payload())),
                }
            }
            assert!(
                !got1.is_empty() && !got2.is_empty(),
                "{}: not split: {got1:?} / {got2:?}",
                vname(v)
            );
            let all: Vec<u32> = got1.iter().chain(&got2).copied().collect();
            check_sequence("shared", &all, n, true);
            eprintln!(
                "{}: member 1 got {}, member 2 got {}",
                vname(v),
                got1.len(),
                got2.len()
            );
        }
    });
}

/// The Message Expiry Interval passes through the broker (and through the offline queue,
/// reduced by the time spent there); a message that expires while queued offline is not
/// sent and its publish fails with `Expired`.
#[test]
fn message_expiry_passes_through() {
    run(Duration::from_secs(20), async {
        let broker = mosquitto();
        let id = uid("expiry");
        let topic = format!("exp/{id}");
        let (sub, mut sr) =
            start_connected(fast(&broker.url(), V5, &format!("{id}-sub")), "sub").await;
        sub.subscribe(topic.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let proxy = proxy_to(broker.addr()).await;
        let h = proxy.handle();
        let (c, mut r) = start_connected(fast(&url_of(proxy.local_addr()), V5, &id), &id).await;

        let live = Message::new(topic.as_str(), "live")
            .qos(QoS::AtLeastOnce)
            .message_expiry(Duration::from_secs(60));
        c.send(live).await.unwrap();
        let m = sr.message(T).await;
        assert_eq!(&m.payload()[..], b"live");
        let left = m
            .message_expiry()
            .map(|d| d.as_secs())
            .expect("expiry passed through");
        assert!((58..=60).contains(&left), "expiry {left}");

        // Offline: one message with a 1 s expiry, one with 10 s, one without.
        h.refuse(None);
        h.reset();
        r.next("ConnectionLost", T, |e| {
            matches!(e, Lifecycle::ConnectionLost { .. })
        })
        .await;
        let publish = |body: &'static str, exp: Option<u32>| {
            let c = c.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                let mut m = Message::new(topic, body).qos(QoS::AtLeastOnce);
                if let Some(secs) = exp {
                    m = m.message_expiry(Duration::from_secs(secs.into()));
                }
                c.send(m).await
            })
        };
        let short = publish("short", Some(1));
        tokio::time::sleep(ms(20)).await;
        let longer = publish("longer", Some(10));
        tokio::time::sleep(ms(20)).await;
        let forever = publish("forever", None);
        // Held offline for longer than the short expiry: this wait is what makes it expire.
        // (That nothing completes while offline, and that the expired message is never
        // sent, is proved on virtual time in driver_absence.rs.)
        tokio::time::sleep(ms(2100)).await;
        h.clear();
        r.connected(T).await;
        let short = tokio::time::timeout(T, short).await.unwrap().unwrap();
        assert_eq!(
            short,
            Err(steadfast::ClientError::Publish(
                steadfast::PublishError::Expired
            ))
        );
        assert!(tokio::time::timeout(T, longer)
            .await
            .unwrap()
            .unwrap()
            .is_ok());
        assert!(tokio::time::timeout(T, forever)
            .await
            .unwrap()
            .unwrap()
            .is_ok());
        let m = sr.message(T).await;
        assert_eq!(
            &m.payload()[..],
            b"longer",
            "the expired message must not be delivered"
        );
        let left = m
            .message_expiry()
            .map(|d| d.as_secs() as u32)
            .expect("expiry");
        assert!(
            (1..=8).contains(&left),
            "expiry {left} not reduced by the time queued"
        );
        let m = sr.message(T).await;
        assert_eq!(&m.payload()[..], b"forever");
        assert_eq!(m.message_expiry().map(|d| d.as_secs() as u32), None);
    });
}

/// Will delay (MQTT 5): a reset and a quick reconnect resume the session (the condition for
/// the broker to cancel the will; the client's side of it, back within the delay with Clean
/// Start 0, is pinned on virtual time in
/// `driver_absence::a_reconnect_after_a_loss_comes_within_the_will_delay_and_resumes_the_session`);
/// after a loss with no way back the will comes, but only after its delay.
#[test]
fn will_delay_holds_the_will_and_a_quick_reconnect_resumes_the_session() {
    run(Duration::from_secs(30), async {
        let broker = mosquitto();
        let id = uid("willdelay");
        let will_topic = format!("wd/{id}");
        let (sub, mut sr) =
            start_connected(fast(&broker.url(), V5, &format!("{id}-sub")), "sub").await;
        sub.subscribe(will_topic.as_str(), QoS::AtLeastOnce)
            .await
            .unwrap();
        let proxy = proxy_to(broker.addr()).await;
        let h = proxy.handle();
        let b = fast(&url_of(proxy.local_addr()), V5, &id)
            .session_expiry(Duration::from_secs(30))
            .will(
                will_topic.as_str(),
                "will",
                QoS::AtLeastOnce,
                false,
                Some(Duration::from_secs(2)),
            );
        let (c, mut r) = start_connected(b, &id).await;

        // 1. A reset and a quick reconnect (backoff <= 500 ms) within the 2 s delay.
        assert_eq!(h.reset(), 1);
        let up = r.connected(T).await;
        assert!(
            matches!(
                up.event,
                Lifecycle::Connected {
                    session_present: true,
                    ..
                }
            ),
            "{up:?}"
        );

        // 2. A reset with no way back: the will comes, but only after the delay.
        h.refuse(None);
        let cut = Instant::now();
        assert_eq!(h.reset(), 1);
        mosq_pub(broker.port(), V5, &will_topic, "sentinel-2", 1).await;
        let m = sr.message(T).await;
        assert_eq!(
            &m.payload()[..],
            b"sentinel-2",
            "the will came before its delay"
        );
        let m = sr.message(T).await;
        assert_eq!(&m.payload()[..], b"will");
        let after = cut.elapsed();
        assert!(
            after >= ms(900) && after <= ms(3500),
            "will after {after:?} with a 2 s delay"
        );
        assert_ne!(c.state(), State::Connected);
    });
}

/// An Assigned Client Identifier is reused on every reconnect, so the session resumes: a
/// client with an empty id and a session expiry gets one from Mosquitto, loses its connection
/// (proxy reset), and reconnects with session present, still subscribed.
#[test]
fn assigned_client_id_is_reused_to_resume_the_session() {
    run(Duration::from_secs(20), async {
        let broker = mosquitto();
        let proxy = proxy_to(broker.addr()).await;
        let h = proxy.handle();
        let topic = format!("aci/{}", uid("t"));
        let b = fast(&url_of(proxy.local_addr()), V5, "").session_expiry(Duration::from_secs(60));
        let (c, mut r) = start(b, "assigned");
        let first = r.connected(T).await;
        let Lifecycle::Connected { granted, .. } = &first.event else {
            unreachable!()
        };
        let assigned = granted.assigned_client_id.clone().expect("an assigned id");
        assert!(!assigned.is_empty());
        c.subscribe(topic.as_str(), QoS::AtLeastOnce).await.unwrap();
        assert_eq!(h.reset(), 1);
        let again = r.connected(T).await;
        let Lifecycle::Connected {
            session_present,
            granted,
            ..
        } = &again.event
        else {
            unreachable!()
        };
        assert!(
            *session_present,
            "the session under {assigned:?} was not resumed"
        );
        assert_eq!(
            granted.assigned_client_id, None,
            "the broker had to assign a new id"
        );
        assert_eq!(r.count(|e| matches!(e, Lifecycle::Resubscribed { .. })), 0);
        mosq_pub(broker.port(), V5, &topic, "still-subscribed", 1).await;
        assert_eq!(&r.message(T).await.payload()[..], b"still-subscribed");
        assert!(
            broker.log().matches(&format!("as {assigned} ")).count() >= 2,
            "{}",
            broker.log()
        );
    });
}
