//! Properties shared by the cargo-fuzz targets (`fuzz/`) and the stable-toolchain smoke tests.
//! Not part of the supported API.
//!
//! Every function panics when the codec breaks one of its promises, and returns normally for
//! any input the codec handles correctly (whether it decodes or not).

use bytes::{Bytes, BytesMut};

use super::{DecodeError, Malformed};
use crate::packet::*;
use crate::rng::{Draw, Rng, Xoshiro256};

const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

/// Decodes `data` as a stream of packets with both protocol versions and two packet size
/// limits. Every packet that decodes must re-encode, and the re-encoding must decode to an
/// equal packet (see [`check_packet_roundtrip`]). `Incomplete` must leave the buffer untouched,
/// `TooLarge` must report a size above the limit.
pub fn check_decode_roundtrip(data: &[u8]) {
    let small_max = 2 + u32::from(data.first().copied().unwrap_or(0) % 128);
    for version in VERSIONS {
        for max in [u32::MAX, small_max] {
            let mut buf = BytesMut::from(data);
            loop {
                let before = buf.len();
                match Packet::decode(&mut buf, version, max) {
                    Ok(p) => {
                        let consumed = before - buf.len();
                        assert!(
                            consumed >= 2 && consumed <= max as usize,
                            "consumed {consumed}"
                        );
                        check_packet_roundtrip(&p, version);
                    }
                    Err(DecodeError::Incomplete { needed }) => {
                        assert!(needed >= 1);
                        assert_eq!(buf.len(), before, "Incomplete must not consume");
                        assert_eq!(&buf[..], &data[data.len() - before..]);
                        break;
                    }
                    Err(DecodeError::TooLarge { size, max: m }) => {
                        assert_eq!(m, max);
                        assert!(size > max as usize);
                        assert_eq!(buf.len(), before, "TooLarge must not consume");
                        break;
                    }
                    Err(DecodeError::Malformed(m)) => {
                        assert!(!m.message().is_empty());
                        let _ = m.reason_code();
                        break;
                    }
                }
            }
        }
    }
}

/// `p` (a decoded packet) must encode for `version`, `encoded_len` must agree, the encoding
/// must decode to `p` consuming exactly its bytes, and re-encoding must give the same bytes.
pub fn check_packet_roundtrip(p: &Packet, version: ProtocolVersion) {
    let len = match p.encoded_len(version) {
        Ok(len) => len,
        Err(e) => panic!("decoded packet does not re-encode: {e}\n{p:?}"),
    };
    let mut out = BytesMut::new();
    if let Err(e) = p.encode(version, &mut out) {
        panic!("encoded_len succeeded but encode failed: {e}\n{p:?}");
    }
    assert_eq!(
        out.len(),
        len,
        "encoded_len disagrees with encode for {p:?}"
    );
    let bytes = out.clone().freeze();
    match Packet::decode(&mut out, version, u32::MAX) {
        Ok(q) => {
            assert_eq!(&q, p, "round trip changed the packet");
            assert!(
                out.is_empty(),
                "decode left {} byte(s) of its own encoding",
                out.len()
            );
            let mut again = BytesMut::new();
            if let Err(e) = q.encode(version, &mut again) {
                panic!("second encode failed: {e}");
            }
            assert_eq!(again.freeze(), bytes, "encoding is not deterministic");
        }
        Err(e) => panic!("re-encoded packet does not decode: {e}\n{p:?}\n{bytes:02x?}"),
    }
}

/// How a stream of packets ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Incomplete,
    TooLarge { size: usize, max: u32 },
    Malformed(Malformed),
}

fn decode_stream(
    chunks: impl Iterator<Item = Bytes>,
    version: ProtocolVersion,
    max: u32,
) -> (Vec<Packet>, End) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(&chunk);
        loop {
            match Packet::decode(&mut buf, version, max) {
                Ok(p) => packets.push(p),
                Err(DecodeError::Incomplete { .. }) => break,
                Err(DecodeError::TooLarge { size, max }) => {
                    return (packets, End::TooLarge { size, max })
                }
                Err(DecodeError::Malformed(m)) => return (packets, End::Malformed(m)),
            }
        }
    }
    (packets, End::Incomplete)
}

/// Decoding `data[1..]` fed in chunks (sizes drawn from a generator seeded by `data[0]`, from 1
/// byte up) must give the same packets and the same final outcome as decoding it whole.
pub fn check_chunked(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let stream = Bytes::copy_from_slice(stream);
    let max = if seed & 0x80 != 0 {
        16 + u32::from(seed)
    } else {
        u32::MAX
    };
    for version in VERSIONS {
        let whole = decode_stream(core::iter::once(stream.clone()), version, max);
        let mut rng = Xoshiro256::seed_from_u64(u64::from(seed) + 1);
        let mut rest = stream.clone();
        let chunks = core::iter::from_fn(|| {
            if rest.is_empty() {
                return None;
            }
            // Mostly tiny chunks, sometimes large ones.
            let n = if rng.below(4) == 0 {
                rng.below(64)
            } else {
                rng.below(4)
            } + 1;
            let n = (n as usize).min(rest.len());
            Some(rest.split_to(n))
        });
        let chunked = decode_stream(chunks, version, max);
        assert_eq!(whole, chunked, "chunked decoding differs ({version})");
    }
}

/// Applies one to four random edits to `data`: flip bits, overwrite, insert or remove bytes,
/// set interesting values (0, 0xFF, 0x80, 0x7F).
pub fn mutate(data: &mut Vec<u8>, rng: &mut Xoshiro256) {
    let edits = 1 + rng.below(4);
    for _ in 0..edits {
        let len = data.len() as u64;
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len) as usize;
                if let Some(b) = data.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
            1 if len > 0 => {
                let i = rng.below(len) as usize;
                if let Some(b) = data.get_mut(i) {
                    *b = rng.next_u64() as u8;
                }
            }
            2 => {
                let i = rng.below(len + 1) as usize;
                data.insert(i, rng.next_u64() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len) as usize;
                data.remove(i);
            }
            4 if len > 0 => {
                let i = rng.below(len) as usize;
                if let Some(b) = data.get_mut(i) {
                    *b = [0x00, 0xFF, 0x80, 0x7F][rng.below(4) as usize];
                }
            }
            _ => {
                let n = rng.below(8) as usize;
                let mut extra = vec![0u8; n];
                rng.fill_bytes(&mut extra);
                data.extend_from_slice(&extra);
            }
        }
    }
}

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
