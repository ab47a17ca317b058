//! Sample packets of every kind and both protocol versions, with rich properties: the fixture
//! of the codec's own unit tests and of `steadfast-proto-testkit` (feature `testkit`). Not part
//! of the supported API.

use bytes::{Bytes, BytesMut};

use crate::packet::*;

/// A fixed set of valid packets of every type, each with the version to encode it for;
/// a seed corpus for the tests.
pub fn sample_packets() -> Vec<(ProtocolVersion, Packet)> {
    use ProtocolVersion::{V311, V5};
    let s = |x: &'static str| crate::ByteStr::from_static(x);
    let rich = Properties {
        reason_string: Some(s("because")),
        user_properties: vec![(s("k"), s("v")), (s("k"), s("w"))],
        ..Properties::default()
    };
    let connect_props = Properties {
        session_expiry_interval: Some(3600),
        receive_maximum: Some(20),
        maximum_packet_size: Some(65_536),
        topic_alias_maximum: Some(10),
        request_response_information: Some(1),
        request_problem_information: Some(0),
        authentication_method: Some(s("SCRAM-SHA-1")),
        authentication_data: Some(Bytes::from_static(b"client-first")),
        user_properties: vec![(s("a"), s("b"))],
        ..Properties::default()
    };
    let will_props = Properties {
        will_delay_interval: Some(5),
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some(s("text/plain")),
        response_topic: Some(s("reply/here")),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        ..Properties::default()
    };
    let connack_props = Properties {
        session_expiry_interval: Some(0),
        receive_maximum: Some(100),
        maximum_qos: Some(1),
        retain_available: Some(0),
        maximum_packet_size: Some(1 << 20),
        assigned_client_identifier: Some(s("auto-1234")),
        topic_alias_maximum: Some(5),
        reason_string: Some(s("ok")),
        wildcard_subscription_available: Some(1),
        subscription_identifier_available: Some(1),
        shared_subscription_available: Some(0),
        server_keep_alive: Some(30),
        response_information: Some(s("resp/")),
        server_reference: Some(s("other:1883")),
        ..Properties::default()
    };
    let publish_props = Properties {
        payload_format_indicator: Some(0),
        message_expiry_interval: Some(10),
        topic_alias: Some(2),
        response_topic: Some(s("r")),
        correlation_data: Some(Bytes::from_static(b"cd")),
        subscription_identifiers: vec![1, 300, 268_435_455],
        content_type: Some(s("json")),
        user_properties: vec![(s("x"), s("y"))],
        ..Properties::default()
    };
    let connect = |protocol, props: Properties, will_props: Properties| Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: s("client-1"),
        will: Some(LastWill {
            topic: s("will/topic"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: will_props.into(),
        }),
        username: Some(s("user")),
        password: Some(Bytes::from_static(b"secret")),
        properties: props.into(),
    };
    let publish = |qos, pkid, topic: &'static str, props: Properties| Publish {
        dup: qos != QoS::AtMostOnce,
        qos,
        retain: true,
        topic: s(topic),
        pkid,
        properties: props.into(),
        payload: Bytes::from_static(b"payload bytes"),
    };
    let filters = vec![
        SubscribeFilter::new(s("a/+/c"), QoS::AtLeastOnce),
        SubscribeFilter::new(s("sport/#"), QoS::ExactlyOnce),
        SubscribeFilter::new(s("$share/g/x"), QoS::AtMostOnce),
    ];
    let v5_filters = vec![SubscribeFilter {
        filter: s("a/b"),
        options: SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: RetainHandling::DoNotSend,
        },
    }];
    let mut v = vec![
        (
            V311,
            Packet::Connect(connect(V311, Properties::default(), Properties::default())),
        ),
        (V5, Packet::Connect(connect(V5, connect_props, will_props))),
        (
            V311,
            Packet::Connect(Connect {
                protocol: V311,
                clean_start: false,
                keep_alive: 0,
                client_id: s(""),
                will: None,
                username: None,
                password: None,
                properties: Props::new(),
            }),
        ),
        (
            V311,
            Packet::ConnAck(ConnAck {
                session_present: true,
                reason: ReasonCode::Success,
                properties: Props::new(),
            }),
        ),
        (
            V311,
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::NotAuthorized,
                properties: Props::new(),
            }),
        ),
        (
            V5,
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason: ReasonCode::Success,
                properties: connack_props.into(),
            }),
        ),
        (
            V311,
            Packet::Publish(publish(QoS::AtMostOnce, 0, "a/b", Properties::default())),
        ),
        (
            V311,
            Packet::Publish(publish(QoS::AtLeastOnce, 7, "a/b", Properties::default())),
        ),
        (
            V5,
            Packet::Publish(publish(QoS::ExactlyOnce, 65_535, "", publish_props)),
        ),
        (
            V5,
            Packet::Publish(publish(QoS::AtMostOnce, 0, "t", Properties::default())),
        ),
        (V311, Packet::PubAck(PubAck::new(1))),
        (V5, Packet::PubAck(PubAck::new(2))),
        (
            V5,
            Packet::PubAck(PubAck {
                pkid: 3,
                reason: ReasonCode::NoMatchingSubscribers,
                properties: Props::new(),
            }),
        ),
        (
            V5,
            Packet::PubRec(PubRec {
                pkid: 4,
                reason: ReasonCode::QuotaExceeded,
                properties: rich.clone().into(),
            }),
        ),
        (V311, Packet::PubRec(PubRec::new(4))),
        (V311, Packet::PubRel(PubRel::new(5))),
        (
            V5,
            Packet::PubRel(PubRel {
                pkid: 5,
                reason: ReasonCode::PacketIdentifierNotFound,
                properties: Props::new(),
            }),
        ),
        (V311, Packet::PubComp(PubComp::new(6))),
        (
            V5,
            Packet::PubComp(PubComp {
                pkid: 6,
                reason: ReasonCode::Success,
                properties: rich.clone().into(),
            }),
        ),
        (
            V311,
            Packet::Subscribe(Subscribe {
                pkid: 8,
                filters,
                properties: Props::new(),
            }),
        ),
        (
            V5,
            Packet::Subscribe(Subscribe {
                pkid: 9,
                filters: v5_filters,
                properties: Properties {
                    subscription_identifiers: vec![42],
                    user_properties: vec![(s("u"), s("p"))],
                    ..Properties::default()
                }
                .into(),
            }),
        ),
        (
            V311,
            Packet::SubAck(SubAck {
                pkid: 8,
                reasons: vec![
                    ReasonCode::Success,
                    ReasonCode::GrantedQoS1,
                    ReasonCode::GrantedQoS2,
                    ReasonCode::UnspecifiedError,
                ],
                properties: Props::new(),
            }),
        ),
        (
            V5,
            Packet::SubAck(SubAck {
                pkid: 9,
                reasons: vec![ReasonCode::GrantedQoS1, ReasonCode::NotAuthorized],
                properties: rich.clone().into(),
            }),
        ),
        (
            V311,
            Packet::Unsubscribe(Unsubscribe {
                pkid: 10,
                filters: vec![s("a/+"), s("#")],
                properties: Props::new(),
            }),
        ),
        (
            V5,
            Packet::Unsubscribe(Unsubscribe {
                pkid: 11,
                filters: vec![s("x/y")],
                properties: Properties {
                    user_properties: vec![(s("k"), s(""))],
                    ..Properties::default()
                }
                .into(),
            }),
        ),
        (
            V311,
            Packet::UnsubAck(UnsubAck {
                pkid: 10,
                reasons: Vec::new(),
                properties: Props::new(),
            }),
        ),
        (
            V5,
            Packet::UnsubAck(UnsubAck {
                pkid: 11,
                reasons: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
                properties: rich.clone().into(),
            }),
        ),
        (V311, Packet::PingReq),
        (V311, Packet::PingResp),
        (V5, Packet::PingReq),
        (
            V311,
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::Success,
                properties: Props::new(),
            }),
        ),
        (
            V5,
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::Success,
                properties: Props::new(),
            }),
        ),
        (
            V5,
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::ServerShuttingDown,
                properties: Properties {
                    session_expiry_interval: Some(0),
                    server_reference: Some(s("elsewhere")),
                    ..rich.clone()
                }
                .into(),
            }),
        ),
        (
            V5,
            Packet::Auth(Auth {
                reason: ReasonCode::Success,
                properties: Props::new(),
            }),
        ),
        (
            V5,
            Packet::Auth(Auth {
                reason: ReasonCode::ContinueAuthentication,
                properties: Properties {
                    authentication_method: Some(s("SCRAM-SHA-1")),
                    authentication_data: Some(Bytes::from_static(b"server-first")),
                    ..rich
                }
                .into(),
            }),
        ),
    ];
    // A large PUBLISH, so multi-byte remaining lengths are covered.
    v.push((
        V5,
        Packet::Publish(Publish {
            payload: Bytes::from(vec![0xA5; 20_000]),
            ..publish(QoS::AtLeastOnce, 99, "big", Properties::default())
        }),
    ));
    v
}

/// [`sample_packets`], encoded.
pub fn sample_encodings() -> Vec<(ProtocolVersion, Vec<u8>)> {
    sample_packets()
        .into_iter()
        .filter_map(|(v, p)| {
            let mut out = BytesMut::new();
            p.encode(v, &mut out).ok().map(|()| (v, out.to_vec()))
        })
        .collect()
}
