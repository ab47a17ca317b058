//! The broker's Maximum Packet Size (MQTT 5 section 3.2.2.3.6) binds every packet the client
//! sends, not only PUBLISH: SUBSCRIBE and UNSUBSCRIBE are refused at the command, split when a
//! reconnect meets a smaller limit, resubscriptions are split or reported, and AUTH and
//! DISCONNECT are never sent too large.

mod support;

use bytes::Bytes;
use steadfast_proto::connection::Authenticator;
use steadfast_proto::{
    ByteStr, CommandError, DisconnectOptions, Event, Lifecycle, Packet, PacketType, Properties,
    Props, ProtocolVersion, QoS, Reason, ReasonCode, State, Subscribe, SubscribeFilter, UnsubAck,
};
use support::*;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn limit(max: u32) -> Properties {
    Properties {
        maximum_packet_size: Some(max),
        ..Properties::default()
    }
}

fn connected_with_limit(max: u32) -> Harness {
    let mut h = Harness::v(V5);
    h.start();
    h.connect_with(false, limit(max));
    h.events();
    h.sent();
    h
}

/// A valid filter of exactly `len` bytes.
fn filter_of(len: usize, tag: char) -> String {
    let mut f = format!("{tag}/");
    while f.len() < len {
        f.push('x');
    }
    f
}

fn subs(filters: &[&str]) -> Vec<SubscribeFilter> {
    filters
        .iter()
        .map(|f| SubscribeFilter::new(*f, QoS::AtLeastOnce))
        .collect()
}

fn size(h: &Harness, p: &Packet) -> usize {
    p.encoded_len(h.version).expect("encodable")
}

fn names(s: &Subscribe) -> Vec<String> {
    s.filters.iter().map(|f| f.filter.to_string()).collect()
}

fn subscribe_done(
    ev: &[Event],
) -> Vec<(
    steadfast_proto::Token,
    Result<Vec<ReasonCode>, CommandError>,
)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::SubscribeDone { token, result } => Some((*token, result.clone())),
            _ => None,
        })
        .collect()
}

/// Every packet the client wrote fits in `max` bytes.
fn all_fit(h: &Harness, packets: &[Packet], max: usize) {
    for p in packets {
        let n = size(h, p);
        assert!(
            n <= max,
            "{:?} of {n} bytes above {max}: {p:?}",
            p.packet_type()
        );
    }
}

#[test]
fn an_oversized_subscribe_is_refused_at_the_command_and_not_sent() {
    let mut h = connected_with_limit(60);
    let long = filter_of(80, 'a');
    let err = h
        .conn
        .subscribe(subs(&[&long]), Properties::default(), h.now)
        .expect_err("too large");
    let CommandError::PacketTooLarge { packet, size, max } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*packet, PacketType::Subscribe);
    assert_eq!(*max, 60);
    assert!(*size > 80, "{size}");
    assert_eq!(
        err.to_string(),
        format!("SUBSCRIBE of {size} bytes exceeds the broker's maximum packet size of 60")
    );
    assert!(h.sent().is_empty(), "nothing is sent");
    assert!(h.events().is_empty());
    assert_eq!(h.conn.subscriptions().count(), 0, "nothing is registered");
    // Several filters that together exceed the limit are refused as well.
    let (a, b) = (filter_of(30, 'a'), filter_of(30, 'b'));
    assert!(matches!(
        h.conn
            .subscribe(subs(&[&a, &b]), Properties::default(), h.now),
        Err(CommandError::PacketTooLarge { .. })
    ));
    // One that fits goes out.
    h.conn
        .subscribe(subs(&[&a]), Properties::default(), h.now)
        .expect("fits");
    let sent = h.sent();
    assert_eq!(subscribes(&sent).len(), 1);
    all_fit(&h, &sent, 60);
}

#[test]
fn user_properties_count_towards_the_subscribe_size() {
    let mut h = connected_with_limit(60);
    let props = Properties {
        user_properties: vec![("k".into(), "v".repeat(60).into())],
        ..Properties::default()
    };
    assert!(matches!(
        h.conn.subscribe(subs(&["a/b"]), props, h.now),
        Err(CommandError::PacketTooLarge {
            packet: PacketType::Subscribe,
            max: 60,
            ..
        })
    ));
    assert!(h.sent().is_empty());
}

#[test]
fn an_oversized_unsubscribe_is_refused_and_the_filter_stays_registered() {
    let mut h = connected_with_limit(60);
    let a = filter_of(50, 'a');
    h.conn
        .subscribe(subs(&[&a]), Properties::default(), h.now)
        .expect("fits");
    let s = subscribes(&h.sent());
    h.suback(s[0].pkid, vec![ReasonCode::GrantedQoS1]);
    h.events();
    let b = filter_of(50, 'b');
    let err = h
        .conn
        .unsubscribe(
            vec![a.as_str().into(), b.into()],
            Properties::default(),
            h.now,
        )
        .expect_err("too large");
    assert!(
        matches!(
            err,
            CommandError::PacketTooLarge {
                packet: PacketType::Unsubscribe,
                max: 60,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("UNSUBSCRIBE of "), "{err}");
    assert!(h.sent().is_empty());
    assert_eq!(h.conn.subscriptions().count(), 1, "still subscribed");
}

#[test]
fn a_subscribe_made_offline_is_split_to_fit_and_completes_once() {
    let mut h = Harness::v(V5);
    h.start();
    let (a, b, c) = (filter_of(30, 'a'), filter_of(30, 'b'), filter_of(30, 'c'));
    let tok = h
        .conn
        .subscribe(subs(&[&a, &b, &c]), Properties::default(), h.now)
        .expect("queued while connecting");
    // Two 30-byte filters fit in 80 bytes, three do not.
    h.connect_with(false, limit(80));
    let sent = h.sent();
    all_fit(&h, &sent, 80);
    let s = subscribes(&sent);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(names(&s[0]), [a.clone(), b.clone()]);
    assert_eq!(names(&s[1]), [c.as_str()]);
    assert!(
        s.iter()
            .all(|p| p.properties.subscription_identifiers
                == s[0].properties.subscription_identifiers),
        "every part carries the request's subscription identifier"
    );
    h.events();
    // The token completes once, after the last part, with the codes in filter order.
    h.suback(s[1].pkid, vec![ReasonCode::GrantedQoS2]);
    assert!(
        subscribe_done(&h.events()).is_empty(),
        "one part still open"
    );
    h.suback(
        s[0].pkid,
        vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized],
    );
    assert_eq!(
        subscribe_done(&h.events()),
        [(
            tok,
            Ok(vec![
                ReasonCode::GrantedQoS1,
                ReasonCode::NotAuthorized,
                ReasonCode::GrantedQoS2
            ])
        )]
    );
    let mut registered: Vec<String> = h
        .conn
        .subscriptions()
        .map(|s| s.filter.to_string())
        .collect();
    registered.sort();
    assert_eq!(registered, [a, c], "the refused filter left the registry");
}

#[test]
fn a_subscribe_resent_to_a_broker_with_a_smaller_limit_is_split() {
    let mut h = Harness::v(V5);
    h.connected();
    let (a, b) = (filter_of(40, 'a'), filter_of(40, 'b'));
    let tok = h
        .conn
        .subscribe(subs(&[&a, &b]), Properties::default(), h.now)
        .expect("no limit yet");
    assert_eq!(subscribes(&h.sent()).len(), 1);
    // The link drops before the SUBACK; the next broker takes at most 60 bytes.
    h.io_error();
    h.advance_to_next_timeout();
    h.connect_with(true, limit(60));
    let sent = h.sent();
    all_fit(&h, &sent, 60);
    let s = subscribes(&sent);
    assert_eq!(s.len(), 2);
    h.suback(s[0].pkid, vec![ReasonCode::GrantedQoS1]);
    // The link drops again with one part answered: only the other part is sent again.
    h.io_error();
    h.advance_to_next_timeout();
    h.connect_with(true, limit(60));
    let s = subscribes(&h.sent());
    assert_eq!(s.len(), 1);
    assert_eq!(names(&s[0]), [b]);
    h.events();
    h.suback(s[0].pkid, vec![ReasonCode::GrantedQoS1]);
    assert_eq!(
        subscribe_done(&h.events()),
        [(tok, Ok(vec![ReasonCode::GrantedQoS1; 2]))]
    );
}

#[test]
fn a_pending_subscribe_whose_filter_cannot_fit_fails_with_the_sizes() {
    let mut h = Harness::v(V5);
    h.start();
    let (small, long) = (filter_of(10, 'a'), filter_of(100, 'b'));
    let tok = h
        .conn
        .subscribe(subs(&[&small, &long]), Properties::default(), h.now)
        .expect("queued while connecting");
    h.connect_with(false, limit(60));
    let sent = h.sent();
    assert!(
        subscribes(&sent).is_empty(),
        "no part of it is sent: {sent:?}"
    );
    let done = subscribe_done(&h.events());
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].0, tok);
    match &done[0].1 {
        Err(CommandError::PacketTooLarge {
            packet: PacketType::Subscribe,
            size,
            max: 60,
        }) => assert!(
            *size > 100,
            "the size of the filter that does not fit: {size}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.conn.subscriptions().count(),
        0,
        "nothing stays registered"
    );
    assert_eq!(h.conn.state(), State::Connected);
}

#[test]
fn an_unsubscribe_made_offline_is_split_and_completes_once() {
    let mut h = Harness::v(V5);
    h.start();
    let (a, b, c) = (filter_of(30, 'a'), filter_of(30, 'b'), filter_of(30, 'c'));
    let tok = h
        .conn
        .unsubscribe(
            vec![a.as_str().into(), b.as_str().into(), c.as_str().into()],
            Properties::default(),
            h.now,
        )
        .expect("queued");
    h.connect_with(false, limit(80));
    let sent = h.sent();
    all_fit(&h, &sent, 80);
    let u = unsubscribes(&sent);
    assert_eq!(u.len(), 2);
    assert_eq!(u[0].filters, [a.as_str(), b.as_str()]);
    assert_eq!(u[1].filters, [c.as_str()]);
    h.events();
    for (p, reasons) in [
        (
            u[0].pkid,
            vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
        ),
        (u[1].pkid, vec![ReasonCode::Success]),
    ] {
        h.reply(Packet::UnsubAck(UnsubAck {
            pkid: p,
            reasons,
            properties: Props::new(),
        }));
    }
    let done: Vec<Event> = h
        .events()
        .into_iter()
        .filter(|e| matches!(e, Event::UnsubscribeDone { .. }))
        .collect();
    assert_eq!(
        done,
        [Event::UnsubscribeDone {
            token: tok,
            result: Ok(vec![
                ReasonCode::Success,
                ReasonCode::NoSubscriptionExisted,
                ReasonCode::Success
            ])
        }]
    );
}

#[test]
fn closing_with_a_split_request_open_completes_its_token_once() {
    let mut h = Harness::v(V5);
    h.start();
    let (a, b) = (filter_of(40, 'a'), filter_of(40, 'b'));
    let tok = h
        .conn
        .subscribe(subs(&[&a, &b]), Properties::default(), h.now)
        .expect("queued");
    h.connect_with(false, limit(60));
    assert_eq!(subscribes(&h.sent()).len(), 2);
    h.events();
    h.conn.disconnect(DisconnectOptions::default(), h.now);
    assert_eq!(
        subscribe_done(&h.events()),
        [(tok, Err(CommandError::Closed))]
    );
}

#[test]
fn resubscribe_is_split_to_the_new_brokers_limit_and_reports_what_cannot_fit() {
    // Without subscription identifiers every subscription shares one resubscribe packet,
    // unless the broker's limit says otherwise.
    let mut c = config(V5);
    c.subscription_identifiers = false;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.connected();
    let short: Vec<String> = ['a', 'b', 'c', 'd']
        .iter()
        .map(|t| filter_of(30, *t))
        .collect();
    let long = filter_of(100, 'z');
    for f in short.iter().chain([&long]) {
        h.conn
            .subscribe(subs(&[f.as_str()]), Properties::default(), h.now)
            .expect("no limit yet");
    }
    let s = subscribes(&h.sent());
    for p in &s {
        h.suback(p.pkid, vec![ReasonCode::GrantedQoS1]);
    }
    h.events();
    h.io_error();
    h.advance_to_next_timeout();
    h.connect_with(false, limit(80));
    let sent = h.sent();
    all_fit(&h, &sent, 80);
    let s = subscribes(&sent);
    // Two 30-byte filters per packet.
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(names(&s[0]), short[..2]);
    assert_eq!(names(&s[1]), short[2..]);
    for p in &s {
        h.suback(p.pkid, vec![ReasonCode::Success; p.filters.len()]);
    }
    let ev = h.lifecycle();
    let restored: Vec<&ByteStr> = ev
        .iter()
        .filter_map(|e| match e {
            Lifecycle::Resubscribed { filters, .. } => Some(filters),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(restored.len(), 4, "{ev:?}");
    assert!(!restored.iter().any(|f| f.as_str() == long), "{ev:?}");
    let failed: Vec<(&ByteStr, &CommandError)> = ev
        .iter()
        .filter_map(|e| match e {
            Lifecycle::ResubscribeFailed { filter, error } => Some((filter, error)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{ev:?}");
    assert_eq!(failed[0].0.as_str(), long);
    assert!(
        matches!(
            failed[0].1,
            CommandError::PacketTooLarge {
                packet: PacketType::Subscribe,
                max: 80,
                ..
            }
        ),
        "{ev:?}"
    );
    assert_eq!(
        h.conn.subscriptions().count(),
        5,
        "the filter stays registered, for a later broker that takes it"
    );
}

/// Answers every challenge with `answer_len` bytes; starts with `start_len` bytes.
struct Sized {
    start_len: usize,
    answer_len: usize,
}

impl Authenticator for Sized {
    fn method(&self) -> ByteStr {
        ByteStr::from("SIZED")
    }
    fn start(&mut self) -> Option<Bytes> {
        Some(Bytes::from(vec![b's'; self.start_len]))
    }
    fn challenge(&mut self, _data: Option<&Bytes>) -> Result<Option<Bytes>, String> {
        Ok(Some(Bytes::from(vec![b'a'; self.answer_len])))
    }
}

fn auth_connected(start_len: usize, answer_len: usize, max: u32) -> Harness {
    let mut h = Harness::v(V5);
    h.conn.set_authenticator(Box::new(Sized {
        start_len,
        answer_len,
    }));
    h.start();
    h.connect_with(false, limit(max));
    h.events();
    h.sent();
    h
}

#[test]
fn a_reauthentication_that_cannot_fit_is_refused_at_the_call() {
    let mut h = auth_connected(100, 10, 60);
    match h.conn.reauthenticate(h.now) {
        Err(CommandError::PacketTooLarge {
            packet: PacketType::Auth,
            size,
            max: 60,
        }) => assert!(size > 100),
        other => panic!("{other:?}"),
    }
    assert!(h.sent().is_empty());
    assert_eq!(h.conn.state(), State::Connected);
}

#[test]
fn an_auth_answer_that_cannot_fit_ends_the_exchange_instead_of_being_sent() {
    let mut h = auth_connected(10, 100, 60);
    h.conn.reauthenticate(h.now).expect("fits");
    assert!(matches!(h.sent().as_slice(), [Packet::Auth(_)]));
    h.reply(Packet::Auth(steadfast_proto::Auth {
        reason: ReasonCode::ContinueAuthentication,
        properties: Properties {
            authentication_method: Some("SIZED".into()),
            ..Properties::default()
        }
        .into(),
    }));
    let sent = h.sent();
    all_fit(&h, &sent, 60);
    assert!(
        !sent.iter().any(|p| matches!(p, Packet::Auth(_))),
        "{sent:?}"
    );
    let ev = h.lifecycle();
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Lifecycle::ConnectionLost { reason: Reason::Authentication(m), .. }
                if m.contains("AUTH of") && m.contains("maximum packet size of 60")
        )),
        "{ev:?}"
    );
}

#[test]
fn a_disconnect_that_cannot_fit_is_not_sent() {
    // DISCONNECT with a Session Expiry Interval is 9 bytes; the client cannot drop that
    // property, so against an 8-byte limit the packet is discarded, and the close goes on.
    let mut h = connected_with_limit(8);
    h.conn.disconnect(
        DisconnectOptions {
            reason: ReasonCode::Success,
            session_expiry_interval: Some(60),
        },
        h.now,
    );
    assert!(h.sent().is_empty());
    assert_eq!(h.conn.state(), State::Closed);
    // A plain DISCONNECT (2 bytes) fits and goes out.
    let mut h = connected_with_limit(8);
    h.conn.disconnect(DisconnectOptions::default(), h.now);
    assert!(matches!(h.sent().as_slice(), [Packet::Disconnect(_)]));
}
