//! Byte-exact vectors for every packet type in both versions, built by hand from the MQTT 3.1.1
//! and 5.0 specifications; varint boundaries; and one test per malformed-packet rule, asserting
//! the specific error kind.

use bytes::{Bytes, BytesMut};
use steadfast_proto::codec::{varint, MalformedKind as K};
use steadfast_proto::*;

use ProtocolVersion::{V311, V5};

// ---------------------------------------------------------------------------------------------
// Helpers

fn enc(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out)
        .unwrap_or_else(|e| panic!("encode {p:?}: {e}"));
    assert_eq!(p.encoded_len(v).unwrap(), out.len(), "encoded_len of {p:?}");
    out.to_vec()
}

fn dec(bytes: &[u8], v: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let res = Packet::decode(&mut buf, v, u32::MAX);
    if res.is_ok() {
        assert!(buf.is_empty(), "{} byte(s) left after {res:?}", buf.len());
    }
    res
}

/// `p` encodes to exactly `bytes` and `bytes` decode to exactly `p`.
#[track_caller]
fn vector(v: ProtocolVersion, p: Packet, bytes: &[u8]) {
    assert_eq!(enc(&p, v), bytes, "encoding of {p:?}");
    assert_eq!(dec(bytes, v), Ok(p), "decoding of {bytes:02x?}");
}

/// `bytes` decode (for `v`) to `p`, which re-encodes to `canonical` (e.g. the short form).
#[track_caller]
fn decodes_to(v: ProtocolVersion, bytes: &[u8], p: Packet, canonical: &[u8]) {
    assert_eq!(dec(bytes, v), Ok(p.clone()), "decoding of {bytes:02x?}");
    assert_eq!(enc(&p, v), canonical);
}

#[track_caller]
fn malformed(v: ProtocolVersion, bytes: &[u8]) -> Malformed {
    match dec(bytes, v) {
        Err(DecodeError::Malformed(m)) => {
            assert!(!m.to_string().is_empty());
            m
        }
        other => panic!("{bytes:02x?} ({v}): expected Malformed, got {other:?}"),
    }
}

#[track_caller]
fn rejects(v: ProtocolVersion, bytes: &[u8], kind: K) -> Malformed {
    let m = malformed(v, bytes);
    assert_eq!(m.kind(), kind, "{bytes:02x?} ({v}): {m}");
    m
}

#[track_caller]
fn enc_err(p: &Packet, v: ProtocolVersion) -> EncodeError {
    let mut out = BytesMut::from(&b"keep"[..]);
    let e = p.encode(v, &mut out).expect_err("encode must fail");
    assert_eq!(&out[..], b"keep", "a failed encode must not write");
    assert_eq!(p.encoded_len(v), Err(e.clone()));
    assert!(!e.to_string().is_empty());
    e
}

fn s(x: &'static str) -> ByteStr {
    ByteStr::from_static(x)
}

fn none() -> Properties {
    Properties::default()
}

fn publish(qos: QoS, topic: &'static str, pkid: u16, payload: &'static [u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: s(topic),
        pkid,
        properties: none().into(),
        payload: Bytes::from_static(payload),
    }
}

fn spec_connect(protocol: ProtocolVersion, properties: Properties) -> Packet {
    // MQTT 3.1.1 3.1.2.10 / MQTT 5.0 3.1.2.12 example flags: user name, password, will QoS 1,
    // will flag, clean session; keep alive 10.
    Packet::Connect(Connect {
        protocol,
        clean_start: true,
        keep_alive: 10,
        client_id: s("c1"),
        will: Some(LastWill {
            topic: s("w/t"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: none().into(),
        }),
        username: Some(s("u")),
        password: Some(Bytes::from_static(b"p")),
        properties: properties.into(),
    })
}

// ---------------------------------------------------------------------------------------------
// CONNECT / CONNACK

#[test]
fn connect_v311_spec_example() {
    vector(
        V311,
        spec_connect(V311, none()),
        &[
            0x10, 0x1E, // CONNECT, remaining length 30
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x04, // protocol level 4
            0xCE, // user name, password, will QoS 1, will flag, clean session
            0x00, 0x0A, // keep alive 10
            0x00, 0x02, b'c', b'1', // client identifier
            0x00, 0x03, b'w', b'/', b't', // will topic
            0x00, 0x03, b'b', b'y', b'e', // will payload
            0x00, 0x01, b'u', // user name
            0x00, 0x01, b'p', // password
        ],
    );
}

#[test]
fn connect_v5_spec_example() {
    let props = Properties {
        session_expiry_interval: Some(10),
        ..none()
    };
    vector(
        V5,
        spec_connect(V5, props),
        &[
            0x10, 0x25, // CONNECT, remaining length 37
            0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0xCE, 0x00, 0x0A, // as in 3.1.2.12
            0x05, 0x11, 0x00, 0x00, 0x00, 0x0A, // properties: session expiry interval 10
            0x00, 0x02, b'c', b'1', // client identifier
            0x00, // will properties: none
            0x00, 0x03, b'w', b'/', b't', 0x00, 0x03, b'b', b'y', b'e', // will
            0x00, 0x01, b'u', 0x00, 0x01, b'p', // user name, password
        ],
    );
}

#[test]
fn connect_minimal_both_versions() {
    let c = |protocol| {
        Packet::Connect(Connect {
            protocol,
            clean_start: false,
            keep_alive: 0,
            client_id: s(""),
            will: None,
            username: None,
            password: None,
            properties: none().into(),
        })
    };
    vector(
        V311,
        c(V311),
        &[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 0, 0, 0],
    );
    vector(
        V5,
        c(V5),
        &[
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0, 0, 0, 0,
        ],
    );
    // A CONNECT is decoded with the level it carries, whatever the connection's version.
    let v5_bytes = enc(&c(V5), V5);
    assert_eq!(dec(&v5_bytes, V311), Ok(c(V5)));
    let v311_bytes = enc(&c(V311), V311);
    assert_eq!(dec(&v311_bytes, V5), Ok(c(V311)));
}

#[test]
fn connect_password_without_username() {
    let p = Packet::Connect(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 30,
        client_id: s("x"),
        will: None,
        username: None,
        password: Some(Bytes::from_static(b"pw")),
        properties: none().into(),
    });
    // Allowed in 5.0 (flags 0x42).
    vector(
        V5,
        p,
        &[
            0x10, 0x12, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x42, 0, 30, 0, 0, 1, b'x', 0, 2, b'p',
            b'w',
        ],
    );
    // Malformed in 3.1.1.
    let m = rejects(
        V311,
        &[
            0x10, 0x11, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 30, 0, 1, b'x', 0, 2, b'p', b'w',
        ],
        K::ConnectFlags,
    );
    assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
    let c311 = Packet::Connect(Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 30,
        client_id: s("x"),
        will: None,
        username: None,
        password: Some(Bytes::from_static(b"pw")),
        properties: none().into(),
    });
    assert!(matches!(
        enc_err(&c311, V311),
        EncodeError::UnsupportedInV311 { .. }
    ));
}

#[test]
fn connack_vectors() {
    let ack = |session_present, reason, properties| {
        Packet::ConnAck(ConnAck {
            session_present,
            reason,
            properties,
        })
    };
    vector(
        V311,
        ack(true, ReasonCode::Success, none().into()),
        &[0x20, 0x02, 0x01, 0x00],
    );
    vector(
        V311,
        ack(false, ReasonCode::NotAuthorized, none().into()),
        &[0x20, 0x02, 0x00, 0x05],
    );
    vector(
        V311,
        ack(false, ReasonCode::UnsupportedProtocolVersion, none().into()),
        &[0x20, 2, 0, 1],
    );
    vector(
        V5,
        ack(false, ReasonCode::Success, none().into()),
        &[0x20, 0x03, 0x00, 0x00, 0x00],
    );
    vector(
        V5,
        ack(false, ReasonCode::Banned, none().into()),
        &[0x20, 0x03, 0x00, 0x8A, 0x00],
    );
    let props = Properties {
        receive_maximum: Some(10),
        maximum_qos: Some(1),
        ..none()
    };
    vector(
        V5,
        ack(true, ReasonCode::Success, props.into()),
        &[0x20, 0x08, 0x01, 0x00, 0x05, 0x21, 0x00, 0x0A, 0x24, 0x01],
    );
    // A 3.1.1-only server answers a 5.0 CONNECT with a 3.1.1 CONNACK: return code 1 maps onto
    // Unsupported Protocol Version.
    decodes_to(
        V5,
        &[0x20, 0x02, 0x00, 0x01],
        ack(false, ReasonCode::UnsupportedProtocolVersion, none().into()),
        &[0x20, 0x03, 0x00, 0x84, 0x00],
    );
    decodes_to(
        V5,
        &[0x20, 0x02, 0x00, 0x00],
        ack(false, ReasonCode::Success, none().into()),
        &[0x20, 0x03, 0x00, 0x00, 0x00],
    );
}

// ---------------------------------------------------------------------------------------------
// PUBLISH

#[test]
fn publish_v311_spec_example() {
    // 3.3.2.3: topic "a/b", packet identifier 10.
    vector(
        V311,
        Packet::Publish(publish(
            QoS::AtLeastOnce,
            "a/b",
            10,
            &[0xF1, 0xF2, 0xF3, 0xF4],
        )),
        &[
            0x32, 0x0B, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0xF1, 0xF2, 0xF3, 0xF4,
        ],
    );
    let mut p = publish(QoS::AtMostOnce, "a/b", 0, b"");
    p.retain = true;
    vector(
        V311,
        Packet::Publish(p),
        &[0x31, 0x05, 0x00, 0x03, b'a', b'/', b'b'],
    );
    let mut p = publish(QoS::ExactlyOnce, "a", 0xFFFF, b"x");
    p.dup = true;
    vector(
        V311,
        Packet::Publish(p),
        &[0x3C, 0x06, 0x00, 0x01, b'a', 0xFF, 0xFF, b'x'],
    );
}

#[test]
fn publish_v5_vectors() {
    vector(
        V5,
        Packet::Publish(publish(
            QoS::AtLeastOnce,
            "a/b",
            10,
            &[0xF1, 0xF2, 0xF3, 0xF4],
        )),
        &[
            0x32, 0x0C, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, 0x00, 0xF1, 0xF2, 0xF3, 0xF4,
        ],
    );
    // An empty topic with a topic alias.
    let mut p = publish(QoS::AtMostOnce, "", 0, b"x");
    p.properties.topic_alias = Some(5);
    vector(
        V5,
        Packet::Publish(p),
        &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05, b'x'],
    );
    // Properties in identifier order; subscription identifiers may repeat; user properties
    // keep their order.
    let mut p = publish(QoS::AtMostOnce, "t", 0, b"");
    p.properties = Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(0x0102_0304),
        content_type: Some(s("ct")),
        response_topic: Some(s("r")),
        correlation_data: Some(Bytes::from_static(&[9])),
        subscription_identifiers: vec![1, 300],
        user_properties: vec![(s("k"), s("1")), (s("k"), s("0"))],
        ..none()
    }
    .into();
    vector(
        V5,
        Packet::Publish(p),
        &[
            0x30, 0x2B, 0x00, 0x01, b't', // remaining length 43, topic "t"
            0x27, // property length 39
            0x01, 0x01, // payload format indicator 1
            0x02, 0x01, 0x02, 0x03, 0x04, // message expiry interval
            0x03, 0x00, 0x02, b'c', b't', // content type
            0x08, 0x00, 0x01, b'r', // response topic
            0x09, 0x00, 0x01, 0x09, // correlation data
            0x0B, 0x01, 0x0B, 0xAC, 0x02, // subscription identifiers 1 and 300
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'1', // user property k=1
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'0', // user property k=0
        ],
    );
}

#[test]
fn varint_boundaries_in_the_remaining_length() {
    // PUBLISH QoS 0, topic "t": remaining length = 3 + payload.
    for (rl, header) in [
        (3usize, &[0x30, 0x03][..]),
        (127, &[0x30, 0x7F][..]),
        (128, &[0x30, 0x80, 0x01][..]),
        (16_383, &[0x30, 0xFF, 0x7F][..]),
        (16_384, &[0x30, 0x80, 0x80, 0x01][..]),
        (2_097_151, &[0x30, 0xFF, 0xFF, 0x7F][..]),
        (2_097_152, &[0x30, 0x80, 0x80, 0x80, 0x01][..]),
    ] {
        let p = Packet::Publish(Publish {
            payload: Bytes::from(vec![0x5A; rl - 3]),
            ..publish(QoS::AtMostOnce, "t", 0, b"")
        });
        let bytes = enc(&p, V311);
        assert_eq!(&bytes[..header.len()], header, "remaining length {rl}");
        assert_eq!(&bytes[header.len()..header.len() + 3], b"\x00\x01t");
        assert_eq!(bytes.len(), header.len() + rl);
        assert_eq!(dec(&bytes, V311), Ok(p));
    }
}

#[test]
fn varint_maximum_and_beyond() {
    // 268,435,455 is the largest remaining length: a packet of exactly that size measures...
    let big = |payload_len: usize| {
        Packet::Publish(Publish {
            // Zeroed allocation: the pages are not touched by `encoded_len`.
            payload: Bytes::from(vec![0u8; payload_len]),
            ..publish(QoS::AtMostOnce, "t", 0, b"")
        })
    };
    assert_eq!(big(268_435_452).encoded_len(V311), Ok(1 + 4 + 268_435_455));
    // ...and one byte more is rejected on encode.
    assert_eq!(
        enc_err(&big(268_435_453), V311),
        EncodeError::PacketTooLarge {
            remaining_length: 268_435_456
        }
    );
    let mut out = BytesMut::new();
    assert_eq!(varint::encode(268_435_455, &mut out), Ok(4));
    assert_eq!(&out[..], &[0xFF, 0xFF, 0xFF, 0x7F]);
    assert!(matches!(
        varint::encode(268_435_456, &mut out),
        Err(EncodeError::VarIntTooLarge { .. })
    ));
    // A header announcing the maximum is waited for (no limit given), not rejected.
    assert_eq!(
        dec(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], V5),
        Err(DecodeError::Incomplete {
            needed: 268_435_455
        })
    );
}

#[test]
fn five_byte_varint_rejected_on_decode() {
    let m = rejects(V5, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], K::VarInt);
    assert_eq!(
        m.message(),
        "remaining length varint is longer than 4 bytes"
    );
    // Known to be bad as soon as the fourth byte has its continuation bit.
    rejects(V311, &[0x30, 0x80, 0x80, 0x80, 0x80], K::VarInt);
    // A property length varint.
    rejects(
        V5,
        &[0x30, 0x08, 0x00, 0x01, b't', 0x80, 0x80, 0x80, 0x80, 0x01],
        K::VarInt,
    );
}

#[test]
fn too_large_is_reported_from_the_header() {
    // A header announcing 200 MiB with only 5 bytes present: TooLarge now, not Incomplete.
    let header = [0x30, 0x80, 0x80, 0x80, 0x64];
    let mut buf = BytesMut::from(&header[..]);
    let res = Packet::decode(&mut buf, V5, 1 << 20);
    assert_eq!(
        res,
        Err(DecodeError::TooLarge {
            size: 5 + 200 * 1024 * 1024,
            max: 1 << 20
        })
    );
    assert_eq!(buf.len(), 5, "TooLarge must not consume");
    assert_eq!(
        res.unwrap_err().reason_code(),
        Some(ReasonCode::PacketTooLarge)
    );
    // The limit counts the whole packet, fixed header included.
    let ping = [0xC0, 0x00];
    assert_eq!(
        Packet::decode(&mut BytesMut::from(&ping[..]), V5, 1),
        Err(DecodeError::TooLarge { size: 2, max: 1 })
    );
    assert_eq!(
        Packet::decode(&mut BytesMut::from(&ping[..]), V5, 2),
        Ok(Packet::PingReq)
    );
}

#[test]
fn incomplete_reports_what_is_missing() {
    assert_eq!(dec(&[], V5), Err(DecodeError::Incomplete { needed: 2 }));
    assert_eq!(dec(&[0x30], V5), Err(DecodeError::Incomplete { needed: 1 }));
    assert_eq!(
        dec(&[0x30, 0x80], V5),
        Err(DecodeError::Incomplete { needed: 1 })
    );
    assert_eq!(
        dec(&[0x30, 0x05, 0x00], V5),
        Err(DecodeError::Incomplete { needed: 4 })
    );
    assert!(DecodeError::Incomplete { needed: 1 }
        .reason_code()
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// Acknowledgements

#[test]
fn pub_acks_v311() {
    vector(
        V311,
        Packet::PubAck(PubAck::new(10)),
        &[0x40, 0x02, 0x00, 0x0A],
    );
    vector(
        V311,
        Packet::PubRec(PubRec::new(10)),
        &[0x50, 0x02, 0x00, 0x0A],
    );
    vector(
        V311,
        Packet::PubRel(PubRel::new(10)),
        &[0x62, 0x02, 0x00, 0x0A],
    );
    vector(
        V311,
        Packet::PubComp(PubComp::new(10)),
        &[0x70, 0x02, 0x00, 0x0A],
    );
}

#[test]
fn pub_acks_v5_short_and_long_forms() {
    // Success without properties: the 2-byte short form, as brokers send it.
    vector(
        V5,
        Packet::PubAck(PubAck::new(10)),
        &[0x40, 0x02, 0x00, 0x0A],
    );
    vector(
        V5,
        Packet::PubRel(PubRel::new(10)),
        &[0x62, 0x02, 0x00, 0x0A],
    );
    // A reason code without properties: no property length.
    vector(
        V5,
        Packet::PubAck(PubAck {
            pkid: 10,
            reason: ReasonCode::NoMatchingSubscribers,
            properties: none().into(),
        }),
        &[0x40, 0x03, 0x00, 0x0A, 0x10],
    );
    vector(
        V5,
        Packet::PubComp(PubComp {
            pkid: 10,
            reason: ReasonCode::PacketIdentifierNotFound,
            properties: none().into(),
        }),
        &[0x70, 0x03, 0x00, 0x0A, 0x92],
    );
    vector(
        V5,
        Packet::PubRec(PubRec {
            pkid: 10,
            reason: ReasonCode::NoMatchingSubscribers,
            properties: Properties {
                reason_string: Some(s("")),
                ..none()
            }
            .into(),
        }),
        &[0x50, 0x07, 0x00, 0x0A, 0x10, 0x03, 0x1F, 0x00, 0x00],
    );
    // Long forms of a plain success decode too, and re-encode short.
    decodes_to(
        V5,
        &[0x40, 0x03, 0x00, 0x0A, 0x00],
        Packet::PubAck(PubAck::new(10)),
        &[0x40, 0x02, 0x00, 0x0A],
    );
    decodes_to(
        V5,
        &[0x40, 0x04, 0x00, 0x0A, 0x00, 0x00],
        Packet::PubAck(PubAck::new(10)),
        &[0x40, 0x02, 0x00, 0x0A],
    );
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK

fn sub(filter: &'static str, qos: QoS) -> SubscribeFilter {
    SubscribeFilter::new(s(filter), qos)
}

#[test]
fn subscribe_v311_spec_example() {
    // 3.8.3: "a/b" QoS 1, "c/d" QoS 2, packet identifier 10.
    vector(
        V311,
        Packet::Subscribe(Subscribe {
            pkid: 10,
            filters: vec![sub("a/b", QoS::AtLeastOnce), sub("c/d", QoS::ExactlyOnce)],
            properties: none().into(),
        }),
        &[
            0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c', b'/',
            b'd', 0x02,
        ],
    );
}

#[test]
fn subscribe_v5_vectors() {
    vector(
        V5,
        Packet::Subscribe(Subscribe {
            pkid: 10,
            filters: vec![sub("a/b", QoS::AtLeastOnce), sub("c/d", QoS::ExactlyOnce)],
            properties: none().into(),
        }),
        &[
            0x82, 0x0F, 0x00, 0x0A, 0x00, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x00, 0x03, b'c',
            b'/', b'd', 0x02,
        ],
    );
    // All options: QoS 1, No Local, Retain As Published, Retain Handling 2 = 0b0010_1101;
    // subscription identifier 300.
    vector(
        V5,
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![SubscribeFilter {
                filter: s("x/#"),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            }],
            properties: Properties {
                subscription_identifiers: vec![300],
                ..none()
            }
            .into(),
        }),
        &[
            0x82, 0x0C, 0x00, 0x01, 0x03, 0x0B, 0xAC, 0x02, 0x00, 0x03, b'x', b'/', b'#', 0x2D,
        ],
    );
}

#[test]
fn suback_vectors() {
    // 3.9.3: Success QoS 0, Success QoS 2, Failure.
    let reasons = vec![
        ReasonCode::Success,
        ReasonCode::GrantedQoS2,
        ReasonCode::UnspecifiedError,
    ];
    vector(
        V311,
        Packet::SubAck(SubAck {
            pkid: 10,
            reasons: reasons.clone(),
            properties: none().into(),
        }),
        &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x80],
    );
    vector(
        V5,
        Packet::SubAck(SubAck {
            pkid: 10,
            reasons,
            properties: none().into(),
        }),
        &[0x90, 0x06, 0x00, 0x0A, 0x00, 0x00, 0x02, 0x80],
    );
    vector(
        V5,
        Packet::SubAck(SubAck {
            pkid: 10,
            reasons: vec![
                ReasonCode::NotAuthorized,
                ReasonCode::WildcardSubscriptionsNotSupported,
            ],
            properties: none().into(),
        }),
        &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x87, 0xA2],
    );
}

#[test]
fn unsubscribe_and_unsuback_vectors() {
    // 3.10.3: "a/b", "c/d".
    let u = Packet::Unsubscribe(Unsubscribe {
        pkid: 10,
        filters: vec![s("a/b"), s("c/d")],
        properties: none().into(),
    });
    vector(
        V311,
        u.clone(),
        &[
            0xA2, 0x0C, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x03, b'c', b'/', b'd',
        ],
    );
    vector(
        V5,
        u,
        &[
            0xA2, 0x0D, 0x00, 0x0A, 0x00, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x03, b'c', b'/',
            b'd',
        ],
    );
    vector(
        V311,
        Packet::UnsubAck(UnsubAck {
            pkid: 10,
            reasons: vec![],
            properties: none().into(),
        }),
        &[0xB0, 0x02, 0x00, 0x0A],
    );
    vector(
        V5,
        Packet::UnsubAck(UnsubAck {
            pkid: 10,
            reasons: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
            properties: none().into(),
        }),
        &[0xB0, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x11],
    );
}

// ---------------------------------------------------------------------------------------------
// PINGREQ / PINGRESP / DISCONNECT / AUTH

#[test]
fn ping_vectors() {
    for v in [V311, V5] {
        vector(v, Packet::PingReq, &[0xC0, 0x00]);
        vector(v, Packet::PingResp, &[0xD0, 0x00]);
    }
}

#[test]
fn disconnect_vectors() {
    let d = |reason, properties| Packet::Disconnect(Disconnect { reason, properties });
    vector(V311, d(ReasonCode::Success, none().into()), &[0xE0, 0x00]);
    vector(V5, d(ReasonCode::Success, none().into()), &[0xE0, 0x00]);
    vector(
        V5,
        d(ReasonCode::DisconnectWithWillMessage, none().into()),
        &[0xE0, 0x01, 0x04],
    );
    vector(
        V5,
        d(
            ReasonCode::ServerShuttingDown,
            Properties {
                session_expiry_interval: Some(0),
                ..none()
            }
            .into(),
        ),
        &[0xE0, 0x07, 0x8B, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
    );
    decodes_to(
        V5,
        &[0xE0, 0x02, 0x00, 0x00],
        d(ReasonCode::Success, none().into()),
        &[0xE0, 0x00],
    );
}

#[test]
fn auth_vectors() {
    let a = |reason, properties| Packet::Auth(Auth { reason, properties });
    vector(V5, a(ReasonCode::Success, none().into()), &[0xF0, 0x00]);
    vector(
        V5,
        a(
            ReasonCode::ContinueAuthentication,
            Properties {
                authentication_method: Some(s("SCRAM")),
                ..none()
            }
            .into(),
        ),
        &[
            0xF0, 0x0A, 0x18, 0x08, 0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M',
        ],
    );
    vector(
        V5,
        a(ReasonCode::ReAuthenticate, none().into()),
        &[0xF0, 0x02, 0x19, 0x00],
    );
    decodes_to(
        V5,
        &[0xF0, 0x01, 0x19],
        a(ReasonCode::ReAuthenticate, none().into()),
        &[0xF0, 0x02, 0x19, 0x00],
    );
}

#[test]
fn utf8_strings_spec_example() {
    // 1.5.4: "A𪛔" is 0x41 0xF0 0xAA 0x9B 0x94.
    let bytes = [0x30, 0x07, 0x00, 0x05, 0x41, 0xF0, 0xAA, 0x9B, 0x94];
    vector(
        V311,
        Packet::Publish(publish(QoS::AtMostOnce, "A\u{2A6D4}", 0, b"")),
        &bytes,
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed: fixed header

#[test]
fn reserved_packet_types() {
    let m = rejects(V5, &[0x00, 0x00], K::PacketType);
    assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
    // AUTH does not exist in 3.1.1.
    rejects(V311, &[0xF0, 0x00], K::PacketType);
    // Rejected from the first byte alone.
    rejects(V5, &[0x00], K::PacketType);
}

#[test]
fn fixed_header_flags() {
    let m = rejects(V5, &[0x43, 0x02, 0x00, 0x01], K::FixedHeaderFlags);
    assert_eq!(m.message(), "reserved flags 0b0011 in PUBACK fixed header");
    assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
    // PUBREL, SUBSCRIBE and UNSUBSCRIBE need 0b0010.
    rejects(V311, &[0x60, 0x02, 0x00, 0x01], K::FixedHeaderFlags);
    rejects(
        V311,
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
        K::FixedHeaderFlags,
    );
    rejects(
        V311,
        &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
        K::FixedHeaderFlags,
    );
    // The others need 0.
    for first in [
        0x11, 0x21, 0x48, 0x52, 0x71, 0x91, 0xB1, 0xC1, 0xD2, 0xE4, 0xF8,
    ] {
        rejects(V5, &[first, 0x00], K::FixedHeaderFlags);
    }
}

#[test]
fn publish_qos3_and_dup_on_qos0() {
    let m = rejects(V5, &[0x36, 0x03, 0x00, 0x01, b't'], K::InvalidQoS);
    assert_eq!(m.message(), "QoS 3 in PUBLISH");
    assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
    // From the first byte alone.
    rejects(V311, &[0x37], K::InvalidQoS);
    let m = rejects(V5, &[0x38, 0x03, 0x00, 0x01, b't'], K::DupWithQoS0);
    assert_eq!(m.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn fixed_size_packets_with_wrong_remaining_length() {
    rejects(V5, &[0xC0, 0x01, 0x00], K::TrailingBytes);
    rejects(V311, &[0xD0, 0x01, 0x00], K::TrailingBytes);
    rejects(V311, &[0x40, 0x03, 0x00, 0x0A, 0x00], K::TrailingBytes);
    rejects(V311, &[0x40, 0x01, 0x00], K::Truncated);
    rejects(V311, &[0xE0, 0x01, 0x00], K::TrailingBytes);
    rejects(V311, &[0x20, 0x03, 0x00, 0x00, 0x00], K::TrailingBytes);
    rejects(V311, &[0xB0, 0x03, 0x00, 0x0A, 0x00], K::TrailingBytes);
    // Checked from the header: no need to wait for the body.
    rejects(V311, &[0x40, 0x7F], K::TrailingBytes);
}

// ---------------------------------------------------------------------------------------------
// Malformed: fields

#[test]
fn truncated_fields() {
    // A string whose length runs past the packet.
    rejects(V5, &[0x30, 0x03, 0x00, 0x05, b't'], K::Truncated);
    // A PUBLISH QoS 1 without its packet identifier.
    rejects(V5, &[0x32, 0x03, 0x00, 0x01, b't'], K::Truncated);
    // A property block longer than the packet.
    rejects(
        V5,
        &[0x30, 0x05, 0x00, 0x01, b't', 0x09, 0x01],
        K::Truncated,
    );
    // A property value cut short inside its block.
    rejects(
        V5,
        &[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x23, 0x00],
        K::Truncated,
    );
    // A body-less packet that needs one.
    rejects(V5, &[0x30, 0x00], K::Truncated);
    rejects(V5, &[0x10, 0x00], K::Truncated);
}

#[test]
fn trailing_bytes() {
    let m = rejects(
        V5,
        &[0x40, 0x05, 0x00, 0x0A, 0x00, 0x00, 0xFF],
        K::TrailingBytes,
    );
    assert!(
        m.message().starts_with("trailing bytes after PUBACK"),
        "{m}"
    );
    // After a CONNECT's last field.
    rejects(
        V311,
        &[
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 0, 0, 0, 0xAA,
        ],
        K::TrailingBytes,
    );
    // After a DISCONNECT's properties.
    rejects(V5, &[0xE0, 0x03, 0x00, 0x00, 0x01], K::TrailingBytes);
}

#[test]
fn invalid_utf8() {
    let m = rejects(V5, &[0x30, 0x03, 0x00, 0x01, 0xFF], K::InvalidUtf8);
    assert!(
        m.message().contains("string is not well-formed UTF-8"),
        "{m}"
    );
    assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
    // U+D800 encoded in three bytes (a surrogate).
    rejects(
        V5,
        &[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80],
        K::InvalidUtf8,
    );
    // An overlong encoding of '/'.
    rejects(V5, &[0x30, 0x04, 0x00, 0x02, 0xC0, 0xAF], K::InvalidUtf8);
    // In a property string (reason string in a PUBACK).
    rejects(
        V5,
        &[0x40, 0x08, 0x00, 0x01, 0x80, 0x04, 0x1F, 0x00, 0x01, 0xFE],
        K::InvalidUtf8,
    );
}

#[test]
fn null_character() {
    let m = rejects(
        V5,
        &[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'],
        K::NullCharacter,
    );
    assert!(m.message().contains("string contains U+0000"), "{m}");
    // In a client identifier.
    rejects(
        V311,
        &[
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 1, 0,
        ],
        K::NullCharacter,
    );
    // In a user property.
    rejects(
        V5,
        &[
            0x40, 0x0B, 0x00, 0x01, 0x00, 0x07, 0x26, 0x00, 0x01, 0x00, 0x00, 0x01, b'v',
        ],
        K::NullCharacter,
    );
}

#[test]
fn publish_topic_rules() {
    let m = rejects(
        V5,
        &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#'],
        K::InvalidTopicName,
    );
    assert_eq!(m.message(), "PUBLISH topic name contains a wildcard");
    assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
    rejects(
        V311,
        &[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'],
        K::InvalidTopicName,
    );
    rejects(V311, &[0x30, 0x03, 0x00, 0x01, b'+'], K::InvalidTopicName);
    // Empty topic: never in 3.1.1; in 5.0 only with a topic alias.
    rejects(V311, &[0x30, 0x02, 0x00, 0x00], K::InvalidTopicName);
    let m = rejects(V5, &[0x30, 0x03, 0x00, 0x00, 0x00], K::InvalidTopicName);
    assert_eq!(m.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn packet_identifier_zero() {
    let m = rejects(
        V311,
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00],
        K::PacketIdZero,
    );
    assert_eq!(m.message(), "packet identifier 0 in SUBSCRIBE");
    assert_eq!(m.reason_code(), ReasonCode::ProtocolError);
    rejects(
        V5,
        &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],
        K::PacketIdZero,
    );
    rejects(V311, &[0x40, 0x02, 0x00, 0x00], K::PacketIdZero);
    rejects(V5, &[0x62, 0x02, 0x00, 0x00], K::PacketIdZero);
    rejects(
        V311,
        &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a'],
        K::PacketIdZero,
    );
    rejects(V311, &[0x90, 0x03, 0x00, 0x00, 0x00], K::PacketIdZero);
    rejects(V311, &[0xB0, 0x02, 0x00, 0x00], K::PacketIdZero);
}

// ---------------------------------------------------------------------------------------------
// Malformed: CONNECT / CONNACK

const MQTT: [u8; 6] = [0, 4, b'M', b'Q', b'T', b'T'];

fn connect_bytes(level: u8, flags: u8, tail: &[u8]) -> Vec<u8> {
    let mut body = MQTT.to_vec();
    body.extend_from_slice(&[level, flags, 0, 60]);
    if level == 5 {
        body.push(0); // properties
    }
    body.extend_from_slice(tail);
    let mut out = vec![0x10, body.len() as u8];
    out.extend(body);
    out
}

#[test]
fn connect_flags() {
    // Reserved bit 0.
    let m = rejects(V311, &connect_bytes(4, 0x03, &[0, 0]), K::ConnectFlags);
    assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
    rejects(V5, &connect_bytes(5, 0x01, &[0, 0]), K::ConnectFlags);
    // Will QoS without the will flag; will retain without the will flag.
    rejects(V311, &connect_bytes(4, 0x08, &[0, 0]), K::ConnectFlags);
    rejects(V5, &connect_bytes(5, 0x20, &[0, 0]), K::ConnectFlags);
    // Will QoS 3.
    rejects(
        V5,
        &connect_bytes(5, 0x1C, &[0, 0, 0, 0, 1, b't', 0, 0]),
        K::InvalidQoS,
    );
    // A will topic with a wildcard.
    rejects(
        V311,
        &connect_bytes(4, 0x04, &[0, 0, 0, 1, b'#', 0, 0]),
        K::InvalidTopicName,
    );
    // Flags fine, fields missing.
    rejects(V311, &connect_bytes(4, 0x80, &[0, 0]), K::Truncated);
}

#[test]
fn connect_protocol_name_and_level() {
    // MQTT 3.1's "MQIsdp", level 3.
    let mqisdp = [
        0x10, 0x0E, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 0,
    ];
    let m = rejects(V311, &mqisdp, K::ProtocolName);
    assert_eq!(m.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    let m = rejects(V5, &connect_bytes(3, 0x02, &[0, 0]), K::ProtocolLevel);
    assert_eq!(m.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    rejects(V5, &connect_bytes(6, 0x02, &[0, 0]), K::ProtocolLevel);
    rejects(
        V5,
        &[0x10, 0x0A, 0, 4, b'm', b'q', b't', b't', 4, 2, 0, 0],
        K::ProtocolName,
    );
}

#[test]
fn connack_reserved_bits_and_codes() {
    rejects(V311, &[0x20, 0x02, 0x02, 0x00], K::ConnAckFlags);
    rejects(V5, &[0x20, 0x03, 0x80, 0x00, 0x00], K::ConnAckFlags);
    // 3.1.1 return codes stop at 5.
    rejects(V311, &[0x20, 0x02, 0x00, 0x06], K::ReasonCode);
    rejects(V311, &[0x20, 0x02, 0x00, 0x80], K::ReasonCode);
    // MQTT 5: unknown, and known but not a CONNACK code.
    rejects(V5, &[0x20, 0x03, 0x00, 0x03, 0x00], K::ReasonCode);
    rejects(V5, &[0x20, 0x03, 0x00, 0x8B, 0x00], K::ReasonCode);
}

// ---------------------------------------------------------------------------------------------
// Malformed: SUBSCRIBE family

#[test]
fn subscribe_options() {
    // 5.0: reserved bits 6-7.
    let m = rejects(
        V5,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0xC1],
        K::SubscriptionOptions,
    );
    assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
    // 5.0: Retain Handling 3 (a protocol error).
    let m = rejects(
        V5,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30],
        K::SubscriptionOptions,
    );
    assert_eq!(m.reason_code(), ReasonCode::ProtocolError);
    // 5.0: QoS 3.
    rejects(
        V5,
        &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x03],
        K::InvalidQoS,
    );
    // 5.0: No Local on a shared subscription.
    let shared = b"$share/g/a";
    let mut b = vec![0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0A];
    b.extend_from_slice(shared);
    b.push(0x04);
    rejects(V5, &b, K::SubscriptionOptions);
    // 3.1.1: the upper six bits must be zero (No Local is 5.0 only).
    rejects(
        V311,
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04],
        K::SubscriptionOptions,
    );
    rejects(
        V311,
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03],
        K::InvalidQoS,
    );
    // The options byte is missing.
    rejects(
        V311,
        &[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
        K::Truncated,
    );
}

#[test]
fn empty_subscribe_and_unsubscribe() {
    let m = rejects(V311, &[0x82, 0x02, 0x00, 0x01], K::EmptyPayload);
    assert_eq!(m.reason_code(), ReasonCode::ProtocolError);
    rejects(V5, &[0x82, 0x03, 0x00, 0x01, 0x00], K::EmptyPayload);
    rejects(V311, &[0xA2, 0x02, 0x00, 0x01], K::EmptyPayload);
    rejects(V5, &[0xA2, 0x03, 0x00, 0x01, 0x00], K::EmptyPayload);
    rejects(V311, &[0x90, 0x02, 0x00, 0x01], K::EmptyPayload);
    rejects(V5, &[0xB0, 0x03, 0x00, 0x01, 0x00], K::EmptyPayload);
}

#[test]
fn invalid_topic_filters() {
    for filter in [
        &b"a/#/b"[..],
        b"a#",
        b"a+/b",
        b"$share//x",
        b"$share/g",
        b"$share/g+/x",
        b"",
    ] {
        let mut b = vec![
            0x82,
            (5 + filter.len()) as u8,
            0x00,
            0x01,
            0x00,
            filter.len() as u8,
        ];
        b.extend_from_slice(filter);
        b.push(0x00);
        let m = rejects(V311, &b, K::InvalidTopicFilter);
        assert!(m.message().starts_with("SUBSCRIBE topic filter"), "{m}");
    }
    rejects(
        V311,
        &[0xA2, 0x06, 0x00, 0x01, 0x00, 0x02, b'#', b'a'],
        K::InvalidTopicFilter,
    );
}

#[test]
fn suback_codes() {
    // 3.1.1: only 0, 1, 2 and 0x80.
    rejects(V311, &[0x90, 0x03, 0x00, 0x01, 0x87], K::ReasonCode);
    rejects(V311, &[0x90, 0x03, 0x00, 0x01, 0x03], K::ReasonCode);
    // 5.0: unknown, and known but not a SUBACK code.
    rejects(V5, &[0x90, 0x04, 0x00, 0x01, 0x00, 0x03], K::ReasonCode);
    rejects(V5, &[0x90, 0x04, 0x00, 0x01, 0x00, 0x10], K::ReasonCode);
    rejects(V5, &[0xB0, 0x04, 0x00, 0x01, 0x00, 0x01], K::ReasonCode);
}

#[test]
fn ack_reason_codes_must_fit_the_packet() {
    // Granted QoS 1 is a SUBACK code, not a PUBACK one.
    let m = rejects(V5, &[0x40, 0x03, 0x00, 0x01, 0x01], K::ReasonCode);
    assert!(m.message().contains("PUBACK"), "{m}");
    // No matching subscribers is not a PUBREL code.
    rejects(V5, &[0x62, 0x03, 0x00, 0x01, 0x10], K::ReasonCode);
    // Unknown codes.
    rejects(V5, &[0x70, 0x03, 0x00, 0x01, 0xFF], K::ReasonCode);
    rejects(V5, &[0xE0, 0x01, 0x03], K::ReasonCode);
    rejects(V5, &[0xF0, 0x01, 0x87], K::ReasonCode);
    // Bad User Name or Password is a CONNACK code, not a DISCONNECT one.
    rejects(V5, &[0xE0, 0x01, 0x86], K::ReasonCode);
}

// ---------------------------------------------------------------------------------------------
// Malformed: properties

/// A v5 PUBLISH QoS 0 on topic "t" with the given property block content.
fn publish_with_props(props: &[u8]) -> Vec<u8> {
    let mut b = vec![
        0x30,
        (3 + 1 + props.len()) as u8,
        0x00,
        0x01,
        b't',
        props.len() as u8,
    ];
    b.extend_from_slice(props);
    b
}

#[test]
fn repeated_properties() {
    let m = rejects(
        V5,
        &publish_with_props(&[0x23, 0x00, 0x01, 0x23, 0x00, 0x02]),
        K::DuplicateProperty,
    );
    assert_eq!(
        m.message(),
        "property 0x23 (Topic Alias) repeated in PUBLISH"
    );
    assert_eq!(m.reason_code(), ReasonCode::ProtocolError);
    rejects(
        V5,
        &publish_with_props(&[0x01, 0x00, 0x01, 0x01]),
        K::DuplicateProperty,
    );
    // Subscription identifiers and user properties may repeat in a PUBLISH...
    let ok = dec(
        &publish_with_props(&[0x0B, 0x01, 0x0B, 0x02, 0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0]),
        V5,
    );
    match ok {
        Ok(Packet::Publish(p)) => {
            assert_eq!(p.properties.subscription_identifiers, vec![1, 2]);
            assert_eq!(p.properties.user_properties.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    // ...but a SUBSCRIBE carries at most one subscription identifier.
    rejects(
        V5,
        &[
            0x82, 0x0A, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00,
        ],
        K::DuplicateProperty,
    );
}

#[test]
fn properties_not_allowed_in_the_packet() {
    let m = rejects(
        V5,
        &publish_with_props(&[0x12, 0x00, 0x01, b'a']),
        K::PropertyNotAllowed,
    );
    assert_eq!(
        m.message(),
        "property 0x12 (Assigned Client Identifier) not allowed in PUBLISH"
    );
    assert_eq!(m.reason_code(), ReasonCode::MalformedPacket);
    // Will Delay Interval belongs to the will properties, not to CONNECT's own.
    let mut b = MQTT.to_vec();
    b.extend_from_slice(&[5, 0x02, 0, 60, 5, 0x18, 0, 0, 0, 1, 0, 0]);
    let mut c = vec![0x10, b.len() as u8];
    c.extend(b);
    rejects(V5, &c, K::PropertyNotAllowed);
    // Reason string in a PUBLISH; topic alias in a PUBACK; session expiry in a SUBSCRIBE.
    rejects(
        V5,
        &publish_with_props(&[0x1F, 0x00, 0x00]),
        K::PropertyNotAllowed,
    );
    rejects(
        V5,
        &[0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01],
        K::PropertyNotAllowed,
    );
    rejects(
        V5,
        &[
            0x82, 0x0B, 0x00, 0x01, 0x05, 0x11, 0, 0, 0, 1, 0x00, 0x01, b'a', 0x00,
        ][..],
        K::PropertyNotAllowed,
    );
}

#[test]
fn unknown_properties() {
    rejects(V5, &publish_with_props(&[0x05, 0x00]), K::UnknownProperty);
    // A two-byte identifier (no property has one).
    rejects(
        V5,
        &publish_with_props(&[0x81, 0x01, 0x00]),
        K::UnknownProperty,
    );
}

#[test]
fn property_values_out_of_range() {
    // Topic Alias 0, Payload Format Indicator 2, Subscription Identifier 0 (PUBLISH).
    for props in [&[0x23, 0x00, 0x00][..], &[0x01, 0x02], &[0x0B, 0x00]] {
        let m = rejects(V5, &publish_with_props(props), K::InvalidPropertyValue);
        assert_eq!(m.reason_code(), ReasonCode::ProtocolError);
    }
    // Receive Maximum 0, Maximum Packet Size 0, Request Problem Information 2 (CONNECT).
    for props in [&[0x21, 0x00, 0x00][..], &[0x27, 0, 0, 0, 0], &[0x17, 0x02]] {
        let mut b = MQTT.to_vec();
        b.extend_from_slice(&[5, 0x02, 0, 60, props.len() as u8]);
        b.extend_from_slice(props);
        b.extend_from_slice(&[0, 0]);
        let mut c = vec![0x10, b.len() as u8];
        c.extend(b);
        rejects(V5, &c, K::InvalidPropertyValue);
    }
    // Maximum QoS 2 (CONNACK).
    rejects(
        V5,
        &[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02],
        K::InvalidPropertyValue,
    );
    // Authentication Data without Authentication Method (AUTH).
    rejects(
        V5,
        &[0xF0, 0x05, 0x18, 0x03, 0x16, 0x00, 0x00],
        K::InvalidPropertyValue,
    );
    // Response Topic with a wildcard.
    rejects(
        V5,
        &publish_with_props(&[0x08, 0x00, 0x01, b'#']),
        K::InvalidTopicName,
    );
}

// ---------------------------------------------------------------------------------------------
// Encoding errors: fail clearly, never drop MQTT 5 fields silently

#[test]
fn v311_cannot_carry_v5_fields() {
    let mut p = publish(QoS::AtMostOnce, "t", 0, b"");
    p.properties.message_expiry_interval = Some(1);
    assert_eq!(
        enc_err(&Packet::Publish(p), V311),
        EncodeError::UnsupportedInV311 {
            packet: PacketType::Publish,
            field: "properties"
        }
    );
    let ack = PubAck {
        pkid: 1,
        reason: ReasonCode::NoMatchingSubscribers,
        properties: none().into(),
    };
    assert_eq!(
        enc_err(&Packet::PubAck(ack), V311),
        EncodeError::ReasonCodeNotInV311 {
            packet: PacketType::PubAck,
            reason: ReasonCode::NoMatchingSubscribers
        }
    );
    let ack = PubRel {
        pkid: 1,
        reason: ReasonCode::Success,
        properties: Properties {
            reason_string: Some(s("x")),
            ..none()
        }
        .into(),
    };
    assert!(matches!(
        enc_err(&Packet::PubRel(ack), V311),
        EncodeError::UnsupportedInV311 { .. }
    ));
    let u = UnsubAck {
        pkid: 1,
        reasons: vec![ReasonCode::Success],
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::UnsubAck(u), V311),
        EncodeError::UnsupportedInV311 { .. }
    ));
    let d = Disconnect {
        reason: ReasonCode::ServerBusy,
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::Disconnect(d), V311),
        EncodeError::ReasonCodeNotInV311 { .. }
    ));
    let d = Disconnect {
        reason: ReasonCode::Success,
        properties: Properties {
            session_expiry_interval: Some(1),
            ..none()
        }
        .into(),
    };
    assert!(matches!(
        enc_err(&Packet::Disconnect(d), V311),
        EncodeError::UnsupportedInV311 { .. }
    ));
    let a = Auth {
        reason: ReasonCode::Success,
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::Auth(a), V311),
        EncodeError::UnsupportedInV311 { .. }
    ));
    let c = ConnAck {
        session_present: false,
        reason: ReasonCode::ServerBusy,
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::ConnAck(c), V311),
        EncodeError::ReasonCodeNotInV311 { .. }
    ));
    let sa = SubAck {
        pkid: 1,
        reasons: vec![ReasonCode::QuotaExceeded],
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::SubAck(sa), V311),
        EncodeError::ReasonCodeNotInV311 { .. }
    ));
    let sub = Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter {
            filter: s("a"),
            options: SubscriptionOptions {
                no_local: true,
                ..SubscriptionOptions::qos(QoS::AtMostOnce)
            },
        }],
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::Subscribe(sub), V311),
        EncodeError::UnsupportedInV311 { .. }
    ));
    let Packet::Connect(mut c) = spec_connect(V311, none()) else {
        unreachable!()
    };
    if let Some(w) = c.will.as_mut() {
        w.properties.will_delay_interval = Some(3);
    }
    assert!(matches!(
        enc_err(&Packet::Connect(c), V311),
        EncodeError::UnsupportedInV311 { .. }
    ));
}

#[test]
fn invalid_packets_are_refused() {
    // Packet identifiers.
    assert_eq!(
        enc_err(&Packet::Publish(publish(QoS::AtLeastOnce, "t", 0, b"")), V5),
        EncodeError::PacketIdZero {
            packet: PacketType::Publish
        }
    );
    assert_eq!(
        enc_err(&Packet::Publish(publish(QoS::AtMostOnce, "t", 7, b"")), V5),
        EncodeError::UnexpectedPacketId
    );
    let mut dup = publish(QoS::AtMostOnce, "t", 0, b"");
    dup.dup = true;
    assert_eq!(
        enc_err(&Packet::Publish(dup), V311),
        EncodeError::DupWithQoS0
    );
    assert!(matches!(
        enc_err(&Packet::PubAck(PubAck::new(0)), V5),
        EncodeError::PacketIdZero { .. }
    ));
    // Topics.
    assert!(matches!(
        enc_err(
            &Packet::Publish(publish(QoS::AtMostOnce, "a/+", 0, b"")),
            V5
        ),
        EncodeError::InvalidTopic {
            error: TopicError::WildcardInName,
            ..
        }
    ));
    assert!(matches!(
        enc_err(&Packet::Publish(publish(QoS::AtMostOnce, "", 0, b"")), V5),
        EncodeError::InvalidTopic {
            error: TopicError::Empty,
            ..
        }
    ));
    assert!(matches!(
        enc_err(
            &Packet::Publish(publish(QoS::AtMostOnce, "a\0", 0, b"")),
            V311
        ),
        EncodeError::InvalidTopic {
            error: TopicError::NullCharacter,
            ..
        }
    ));
    let bad_filter = Subscribe {
        pkid: 1,
        filters: vec![sub("a/#/b", QoS::AtMostOnce)],
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::Subscribe(bad_filter), V5),
        EncodeError::InvalidTopic { .. }
    ));
    let shared_nl = Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter {
            filter: s("$share/g/a"),
            options: SubscriptionOptions {
                no_local: true,
                ..SubscriptionOptions::qos(QoS::AtMostOnce)
            },
        }],
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::Subscribe(shared_nl), V5),
        EncodeError::InvalidSubscriptionOptions { .. }
    ));
    // Empty SUBSCRIBE / UNSUBSCRIBE / SUBACK.
    let empty = Subscribe {
        pkid: 1,
        filters: vec![],
        properties: none().into(),
    };
    assert_eq!(
        enc_err(&Packet::Subscribe(empty), V311),
        EncodeError::EmptyPayload {
            packet: PacketType::Subscribe
        }
    );
    let empty = Unsubscribe {
        pkid: 1,
        filters: vec![],
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::Unsubscribe(empty), V5),
        EncodeError::EmptyPayload { .. }
    ));
    let empty = SubAck {
        pkid: 1,
        reasons: vec![],
        properties: none().into(),
    };
    assert!(matches!(
        enc_err(&Packet::SubAck(empty), V5),
        EncodeError::EmptyPayload { .. }
    ));
    // Strings.
    let long = ByteStr::from("x".repeat(65_536));
    let Packet::Connect(mut c) = spec_connect(V5, none()) else {
        unreachable!()
    };
    c.client_id = long;
    assert_eq!(
        enc_err(&Packet::Connect(c), V5),
        EncodeError::FieldTooLong {
            field: "client identifier",
            len: 65_536
        }
    );
    let Packet::Connect(mut c) = spec_connect(V5, none()) else {
        unreachable!()
    };
    c.username = Some(s("a\0b"));
    assert_eq!(
        enc_err(&Packet::Connect(c), V5),
        EncodeError::NullCharacter { field: "user name" }
    );
    // Reason codes that do not belong to the packet.
    let ack = PubRel {
        pkid: 1,
        reason: ReasonCode::NoMatchingSubscribers,
        properties: none().into(),
    };
    assert_eq!(
        enc_err(&Packet::PubRel(ack), V5),
        EncodeError::InvalidReasonCode {
            packet: PacketType::PubRel,
            reason: ReasonCode::NoMatchingSubscribers
        }
    );
    // Properties: not allowed, out of range.
    let mut p = publish(QoS::AtMostOnce, "t", 0, b"");
    p.properties.session_expiry_interval = Some(1);
    assert_eq!(
        enc_err(&Packet::Publish(p), V5),
        EncodeError::PropertyNotAllowed {
            packet: "PUBLISH",
            property: PropertyId::SessionExpiryInterval
        }
    );
    let mut p = publish(QoS::AtMostOnce, "t", 0, b"");
    p.properties.topic_alias = Some(0);
    assert!(matches!(
        enc_err(&Packet::Publish(p), V5),
        EncodeError::InvalidPropertyValue {
            property: PropertyId::TopicAlias,
            ..
        }
    ));
    let mut p = publish(QoS::AtMostOnce, "t", 0, b"");
    p.properties.subscription_identifiers = vec![268_435_456];
    assert!(matches!(
        enc_err(&Packet::Publish(p), V5),
        EncodeError::InvalidPropertyValue { .. }
    ));
    let sub2 = Subscribe {
        pkid: 1,
        filters: vec![sub("a", QoS::AtMostOnce)],
        properties: Properties {
            subscription_identifiers: vec![1, 2],
            ..none()
        }
        .into(),
    };
    assert!(matches!(
        enc_err(&Packet::Subscribe(sub2), V5),
        EncodeError::InvalidPropertyValue { .. }
    ));
    let Packet::Connect(mut c) = spec_connect(V5, none()) else {
        unreachable!()
    };
    if let Some(w) = c.will.as_mut() {
        w.properties.topic_alias = Some(1);
    }
    assert_eq!(
        enc_err(&Packet::Connect(c), V5),
        EncodeError::PropertyNotAllowed {
            packet: "will properties",
            property: PropertyId::TopicAlias
        }
    );
}

#[test]
fn error_display() {
    assert_eq!(
        DecodeError::TooLarge { size: 10, max: 5 }.to_string(),
        "packet of 10 bytes exceeds the maximum packet size of 5 bytes"
    );
    let m = malformed(V5, &[0x36]);
    assert_eq!(
        DecodeError::Malformed(m.clone()).to_string(),
        "malformed packet: QoS 3 in PUBLISH"
    );
    assert_eq!(
        DecodeError::Malformed(m).reason_code(),
        Some(ReasonCode::MalformedPacket)
    );
    assert_eq!(
        EncodeError::PropertyNotAllowed {
            packet: "PUBLISH",
            property: PropertyId::TopicAliasMaximum
        }
        .to_string(),
        "property 0x22 (Topic Alias Maximum) is not allowed in PUBLISH"
    );
    let e: &dyn std::error::Error = &EncodeError::InvalidTopic {
        field: "f",
        error: TopicError::Empty,
    };
    assert!(e.source().is_some());
}
