//! Property tests: every generated packet that is valid for its protocol version encodes, and
//! decodes back to the same packet, consuming exactly the encoded bytes, whether the bytes come
//! all at once or one at a time.
//!
//! The generators only produce packets valid for their version: for MQTT 3.1.1 no properties,
//! acknowledgements with reason Success, 3.1.1 return codes; for MQTT 5 random properties from
//! the set the specification allows in that packet (table 2.2.2.2, written out here again
//! independently of the codec's own table) and reason codes from the packet's own list.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use steadfast_proto::*;

// ---------------------------------------------------------------------------------------------
// Leaf strategies

fn text(max: usize) -> impl Strategy<Value = ByteStr> {
    // Letters, digits, punctuation and multi-byte characters; never U+0000.
    prop::string::string_regex(&format!("[a-zA-Z0-9 ./_:=é€😀-]{{0,{max}}}"))
        .expect("regex")
        .prop_map(ByteStr::from)
}

fn topic_name() -> impl Strategy<Value = ByteStr> {
    prop_oneof![
        prop::string::string_regex("[a-z0-9/é]{1,24}").expect("regex"),
        prop::string::string_regex("\\$SYS/[a-z/]{0,8}").expect("regex"),
        Just("/".to_string()),
    ]
    .prop_map(ByteStr::from)
}

fn topic_filter() -> impl Strategy<Value = ByteStr> {
    let level = prop_oneof![
        3 => prop::string::string_regex("[a-z0-9é]{0,5}").expect("regex"),
        1 => Just("+".to_string()),
    ];
    (
        prop::collection::vec(level, 1..5),
        any::<bool>(),
        prop::option::of(prop::string::string_regex("[a-z0-9]{1,6}").expect("regex")),
    )
        .prop_map(|(levels, hash, share)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str(if f.is_empty() { "#" } else { "/#" });
            }
            if f.is_empty() {
                f.push('x');
            }
            match share {
                Some(name) => format!("$share/{name}/{f}"),
                None => f,
            }
        })
        .prop_map(ByteStr::from)
}

fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pkid() -> impl Strategy<Value = u16> {
    prop_oneof![Just(1u16), Just(u16::MAX), 1..=u16::MAX]
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(codes).prop_map(|c| ReasonCode::try_from(c).expect("listed code"))
}

// Reason codes per packet, from the MQTT 5.0 specification.
const CONNACK_RC: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const PUBACK_RC: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_RC: &[u8] = &[0x00, 0x92];
const SUBACK_RC: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_RC: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_RC: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_RC: &[u8] = &[0x00, 0x18, 0x19];
const V311_CONNACK_RC: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const V311_SUBACK_RC: &[u8] = &[0x00, 0x01, 0x02, 0x80];

// ---------------------------------------------------------------------------------------------
// Properties: generate every property, then keep those allowed in the packet.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ctx {
    Connect,
    ConnAck,
    Publish,
    Will,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

fn any_properties() -> impl Strategy<Value = Properties> {
    let flag = || prop::option::of(0u8..=1);
    let a = (
        flag(),
        prop::option::of(any::<u32>()),
        prop::option::of(text(12)),
        prop::option::of(topic_name()),
        prop::option::of(binary(12)),
        prop::collection::vec(1u32..=268_435_455, 0..3),
        prop::option::of(any::<u32>()),
        prop::option::of(text(12)),
        prop::option::of(any::<u16>()),
        prop::option::of(text(12)),
        prop::option::of(binary(12)),
        flag(),
    );
    let b = (
        prop::option::of(any::<u32>()),
        flag(),
        prop::option::of(text(12)),
        prop::option::of(text(12)),
        prop::option::of(text(12)),
        prop::option::of(1..=u16::MAX),
        prop::option::of(any::<u16>()),
        prop::option::of(1..=u16::MAX),
        flag(),
        flag(),
        prop::collection::vec((text(6), text(6)), 0..3),
        prop::option::of(1..=u32::MAX),
    );
    let c = (flag(), flag(), flag());
    (a, b, c).prop_map(|(a, b, c)| Properties {
        payload_format_indicator: a.0,
        message_expiry_interval: a.1,
        content_type: a.2,
        response_topic: a.3,
        correlation_data: a.4,
        subscription_identifiers: a.5,
        session_expiry_interval: a.6,
        assigned_client_identifier: a.7,
        server_keep_alive: a.8,
        authentication_method: a.9,
        authentication_data: a.10,
        request_problem_information: a.11,
        will_delay_interval: b.0,
        request_response_information: b.1,
        response_information: b.2,
        server_reference: b.3,
        reason_string: b.4,
        receive_maximum: b.5,
        topic_alias_maximum: b.6,
        topic_alias: b.7,
        maximum_qos: b.8,
        retain_available: b.9,
        user_properties: b.10,
        maximum_packet_size: b.11,
        wildcard_subscription_available: c.0,
        subscription_identifier_available: c.1,
        shared_subscription_available: c.2,
    })
}

/// Clears what `ctx` may not carry (MQTT 5.0 table 2.2.2.2).
fn restrict(mut p: Properties, ctx: Ctx) -> Properties {
    use Ctx::*;
    let publish_like = matches!(ctx, Publish | Will);
    if !publish_like {
        p.payload_format_indicator = None;
        p.message_expiry_interval = None;
        p.content_type = None;
        p.response_topic = None;
        p.correlation_data = None;
    }
    match ctx {
        Publish => {}
        Subscribe => p.subscription_identifiers.truncate(1),
        _ => p.subscription_identifiers.clear(),
    }
    if !matches!(ctx, Connect | ConnAck | Disconnect) {
        p.session_expiry_interval = None;
    }
    if ctx != ConnAck {
        p.assigned_client_identifier = None;
        p.server_keep_alive = None;
        p.response_information = None;
        p.maximum_qos = None;
        p.retain_available = None;
        p.wildcard_subscription_available = None;
        p.subscription_identifier_available = None;
        p.shared_subscription_available = None;
    }
    if !matches!(ctx, Connect | ConnAck | Auth) {
        p.authentication_method = None;
        p.authentication_data = None;
    }
    if p.authentication_method.is_none() {
        p.authentication_data = None;
    }
    if ctx != Connect {
        p.request_problem_information = None;
        p.request_response_information = None;
    }
    if ctx != Will {
        p.will_delay_interval = None;
    }
    if !matches!(ctx, ConnAck | Disconnect) {
        p.server_reference = None;
    }
    if !matches!(ctx, ConnAck | Ack | SubAck | UnsubAck | Disconnect | Auth) {
        p.reason_string = None;
    }
    if !matches!(ctx, Connect | ConnAck) {
        p.receive_maximum = None;
        p.topic_alias_maximum = None;
        p.maximum_packet_size = None;
    }
    if ctx != Publish {
        p.topic_alias = None;
    }
    p
}

fn props(v: ProtocolVersion, ctx: Ctx) -> BoxedStrategy<Properties> {
    match v {
        ProtocolVersion::V311 => Just(Properties::default()).boxed(),
        // Half the time no properties at all, to exercise the short forms.
        ProtocolVersion::V5 => prop_oneof![
            Just(Properties::default()),
            any_properties().prop_map(move |p| restrict(p, ctx)),
        ]
        .boxed(),
    }
}

// ---------------------------------------------------------------------------------------------
// Packets

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(24),
        qos(),
        any::<bool>(),
        props(v, Ctx::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties: properties.into(),
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(23),
        prop::option::of(will),
        prop::option::of(text(12)),
        prop::option::of(binary(12)),
        props(v, Ctx::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // MQTT 3.1.1 has no password without a user name.
                let password = if v == ProtocolVersion::V311 && username.is_none() {
                    None
                } else {
                    password
                };
                Packet::Connect(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties: properties.into(),
                })
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = match v {
        ProtocolVersion::V311 => V311_CONNACK_RC,
        ProtocolVersion::V5 => CONNACK_RC,
    };
    (any::<bool>(), reason(codes), props(v, Ctx::ConnAck)).prop_map(
        |(session_present, reason, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties: properties.into(),
            })
        },
    )
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        pkid(),
        props(v, Ctx::Publish),
        binary(64),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, topic, pkid, properties, payload, empty_topic)| {
                let at_most_once = qos == QoS::AtMostOnce;
                // An empty topic is allowed in MQTT 5 when a topic alias stands in for it.
                let topic = if empty_topic && properties.topic_alias.is_some() {
                    ByteStr::new()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    pkid: if at_most_once { 0 } else { pkid },
                    properties: properties.into(),
                    payload,
                })
            },
        )
}

fn ack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let pub_codes = match v {
        ProtocolVersion::V311 => &[0x00u8][..],
        ProtocolVersion::V5 => PUBACK_RC,
    };
    let rel_codes = match v {
        ProtocolVersion::V311 => &[0x00u8][..],
        ProtocolVersion::V5 => PUBREL_RC,
    };
    (
        0u8..4,
        pkid(),
        reason(pub_codes),
        reason(rel_codes),
        props(v, Ctx::Ack),
    )
        .prop_map(
            |(kind, pkid, pub_reason, rel_reason, properties)| match kind {
                0 => Packet::PubAck(PubAck {
                    pkid,
                    reason: pub_reason,
                    properties: properties.into(),
                }),
                1 => Packet::PubRec(PubRec {
                    pkid,
                    reason: pub_reason,
                    properties: properties.into(),
                }),
                2 => Packet::PubRel(PubRel {
                    pkid,
                    reason: rel_reason,
                    properties: properties.into(),
                }),
                _ => Packet::PubComp(PubComp {
                    pkid,
                    reason: rel_reason,
                    properties: properties.into(),
                }),
            },
        )
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let options =
        (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| match v {
            ProtocolVersion::V311 => SubscriptionOptions::qos(qos),
            ProtocolVersion::V5 => SubscriptionOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: match rh {
                    0 => RetainHandling::SendAtSubscribe,
                    1 => RetainHandling::SendAtSubscribeIfNew,
                    _ => RetainHandling::DoNotSend,
                },
            },
        });
    let filter = (topic_filter(), options).prop_map(|(filter, mut options)| {
        // No Local is a protocol error on a shared subscription.
        if filter.starts_with("$share/") {
            options.no_local = false;
        }
        SubscribeFilter { filter, options }
    });
    (
        pkid(),
        prop::collection::vec(filter, 1..5),
        props(v, Ctx::Subscribe),
    )
        .prop_map(|(pkid, filters, properties)| {
            Packet::Subscribe(Subscribe {
                pkid,
                filters,
                properties: properties.into(),
            })
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = match v {
        ProtocolVersion::V311 => V311_SUBACK_RC,
        ProtocolVersion::V5 => SUBACK_RC,
    };
    (
        pkid(),
        prop::collection::vec(reason(codes), 1..6),
        props(v, Ctx::SubAck),
    )
        .prop_map(|(pkid, reasons, properties)| {
            Packet::SubAck(SubAck {
                pkid,
                reasons,
                properties: properties.into(),
            })
        })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        pkid(),
        prop::collection::vec(topic_filter(), 1..5),
        props(v, Ctx::Unsubscribe),
    )
        .prop_map(|(pkid, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters,
                properties: properties.into(),
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = match v {
        ProtocolVersion::V311 => Just(Vec::new()).boxed(),
        ProtocolVersion::V5 => prop::collection::vec(reason(UNSUBACK_RC), 1..6).boxed(),
    };
    (pkid(), reasons, props(v, Ctx::UnsubAck)).prop_map(|(pkid, reasons, properties)| {
        Packet::UnsubAck(UnsubAck {
            pkid,
            reasons,
            properties: properties.into(),
        })
    })
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = match v {
        ProtocolVersion::V311 => &[0x00u8][..],
        ProtocolVersion::V5 => DISCONNECT_RC,
    };
    (reason(codes), props(v, Ctx::Disconnect)).prop_map(|(reason, properties)| {
        Packet::Disconnect(Disconnect {
            reason,
            properties: properties.into(),
        })
    })
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason(AUTH_RC), props(ProtocolVersion::V5, Ctx::Auth)).prop_map(|(reason, properties)| {
        Packet::Auth(Auth {
            reason,
            properties: properties.into(),
        })
    })
}

fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        1 => connect(v),
        1 => connack(v),
        3 => publish(v),
        2 => ack(v),
        1 => subscribe(v),
        1 => suback(v),
        1 => unsubscribe(v),
        1 => unsuback(v),
        1 => Just(Packet::PingReq),
        1 => Just(Packet::PingResp),
        1 => disconnect(v),
    ];
    match v {
        ProtocolVersion::V311 => common.boxed(),
        ProtocolVersion::V5 => prop_oneof![10 => common, 1 => auth()].boxed(),
    }
}

// ---------------------------------------------------------------------------------------------
// The properties

fn check_roundtrip(p: &Packet, v: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf)
        .map_err(|e| TestCaseError::fail(format!("encode failed: {e}")))?;
    prop_assert_eq!(p.encoded_len(v).ok(), Some(buf.len()));
    let wire = buf.clone().freeze();

    // Whole buffer, followed by another packet's bytes: exactly one packet is consumed.
    let mut stream = buf.clone();
    stream.extend_from_slice(&[0xC0, 0x00]);
    let decoded = Packet::decode(&mut stream, v, u32::MAX);
    prop_assert_eq!(decoded.as_ref(), Ok(p));
    prop_assert_eq!(
        &stream[..],
        &[0xC0, 0x00][..],
        "decoder consumed the wrong number of bytes"
    );

    // A limit of exactly the packet's size accepts it; one less rejects it up front.
    let size = u32::try_from(wire.len()).expect("small packet");
    let mut exact = BytesMut::from(&wire[..]);
    let decoded = Packet::decode(&mut exact, v, size);
    prop_assert_eq!(decoded.as_ref(), Ok(p));
    let mut short = BytesMut::from(&wire[..]);
    prop_assert_eq!(
        Packet::decode(&mut short, v, size - 1),
        Err(DecodeError::TooLarge {
            size: wire.len(),
            max: size - 1
        })
    );

    // One byte at a time: Incomplete (buffer untouched) until the last byte.
    let mut trickle = BytesMut::new();
    for (i, &b) in wire.iter().enumerate() {
        trickle.extend_from_slice(&[b]);
        let res = Packet::decode(&mut trickle, v, u32::MAX);
        let res = res.as_ref();
        if i + 1 < wire.len() {
            match res {
                Err(DecodeError::Incomplete { needed }) => {
                    prop_assert!(*needed >= 1);
                    prop_assert!(
                        *needed <= wire.len() - (i + 1),
                        "needed {} overshoots",
                        needed
                    );
                    prop_assert_eq!(trickle.len(), i + 1);
                }
                other => prop_assert!(false, "byte {}: expected Incomplete, got {:?}", i, other),
            }
        } else {
            prop_assert_eq!(res, Ok(p));
            prop_assert!(trickle.is_empty());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn v311_packets_round_trip(p in packet(ProtocolVersion::V311)) {
        check_roundtrip(&p, ProtocolVersion::V311)?;
    }

    #[test]
    fn v5_packets_round_trip(p in packet(ProtocolVersion::V5)) {
        check_roundtrip(&p, ProtocolVersion::V5)?;
    }

    /// A packet valid for 3.1.1 is valid for 5.0 too (a CONNECT carries its own level), except
    /// an UNSUBACK, which has reason codes in 5.0 only; it round trips there as well.
    #[test]
    fn v311_packets_also_round_trip_as_v5(p in packet(ProtocolVersion::V311)) {
        prop_assume!(!matches!(&p, Packet::UnsubAck(u) if u.reasons.is_empty()));
        check_roundtrip(&p, ProtocolVersion::V5)?;
    }

    /// The decoder's zero-copy promise: the payload of a decoded PUBLISH points into the
    /// buffer that was decoded.
    #[test]
    fn publish_payload_is_zero_copy(p in publish(ProtocolVersion::V5)) {
        let mut buf = BytesMut::new();
        p.encode(ProtocolVersion::V5, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        match Packet::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
            Ok(Packet::Publish(d)) => {
                if !d.payload.is_empty() {
                    prop_assert!(range.contains(&(d.payload.as_ptr() as usize)));
                }
                if !d.topic.is_empty() {
                    prop_assert!(range.contains(&(d.topic.as_ptr() as usize)));
                }
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// Several packets back to back decode in order.
    #[test]
    fn streams_of_packets_decode_in_order(ps in prop::collection::vec(packet(ProtocolVersion::V5), 1..8)) {
        let mut buf = BytesMut::new();
        for p in &ps {
            p.encode(ProtocolVersion::V5, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        for p in &ps {
            let decoded = Packet::decode(&mut buf, ProtocolVersion::V5, u32::MAX);
            prop_assert_eq!(decoded.as_ref(), Ok(p));
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(
            Packet::decode(&mut buf, ProtocolVersion::V5, u32::MAX),
            Err(DecodeError::Incomplete { needed: 2 })
        );
    }
}
