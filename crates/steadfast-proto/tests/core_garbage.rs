//! Spec "broker misbehaved": random bytes after CONNACK never panic; the link either stays up
//! (incomplete or harmless input) or ends in a protocol violation; a huge length is refused from
//! the fixed header without buffering the body.

mod support;

use bytes::BytesMut;
use proptest::prelude::*;
use steadfast_proto::{
    DecodeError, Event, Lifecycle, Packet, ProtocolVersion, Reason, ReasonCode, State,
};
use support::*;

fn connected(version: ProtocolVersion) -> Harness {
    let mut h = Harness::v(version);
    h.connected();
    h
}

/// What the codec alone makes of `bytes`: the packets decoded before the first error, and the
/// error (`None` when the bytes end cleanly or incomplete).
fn codec_view(version: ProtocolVersion, bytes: &[u8]) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::from(bytes);
    let mut out = vec![];
    loop {
        match Packet::decode(&mut buf, version, 16 << 20) {
            Ok(p) => out.push(p),
            Err(DecodeError::Incomplete { .. }) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn check_garbage(version: ProtocolVersion, bytes: &[u8], chunk: usize) {
    let mut h = connected(version);
    for c in bytes.chunks(chunk.max(1)) {
        h.reply_bytes(c);
        h.sent(); // whatever the client answers must decode on the broker's side
    }
    let ev = h.events();
    let lost: Vec<Reason> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Lifecycle {
                event: Lifecycle::ConnectionLost { reason, .. },
                ..
            } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert!(lost.len() <= 1, "{lost:?}");
    let (packets, err) = codec_view(version, bytes);
    match lost.first() {
        None => {
            assert_eq!(h.conn.state(), State::Connected);
            assert!(
                err.is_none(),
                "the codec found {err:?} but the client kept the link"
            );
        }
        Some(Reason::ProtocolViolation { .. }) => {}
        Some(Reason::ServerDisconnect { .. }) => {
            assert!(
                packets.iter().any(|p| matches!(p, Packet::Disconnect(_))),
                "{packets:?}"
            );
        }
        Some(other) => panic!("unexpected reason {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_after_connack(bytes in proptest::collection::vec(any::<u8>(), 0..200), chunk in 1usize..64, v5 in any::<bool>()) {
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
        check_garbage(version, &bytes, chunk);
    }

    /// Random bytes behind a plausible first byte, so the fixed header parses more often.
    #[test]
    fn random_bodies_after_connack(first in 0x20u8..0xF0, len in 0u8..60, body in proptest::collection::vec(any::<u8>(), 0..60), v5 in any::<bool>()) {
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
        let mut bytes = vec![first, len];
        bytes.extend_from_slice(&body);
        check_garbage(version, &bytes, 7);
    }

    #[test]
    fn random_bytes_instead_of_connack(bytes in proptest::collection::vec(any::<u8>(), 1..100), v5 in any::<bool>()) {
        let version = if v5 { ProtocolVersion::V5 } else { ProtocolVersion::V311 };
        let mut h = Harness::v(version);
        h.start();
        h.expect_connect_action();
        h.open();
        h.sent();
        h.reply_bytes(&bytes);
        h.sent();
        let state = h.conn.state();
        prop_assert!(matches!(state, State::Connecting | State::Connected | State::Backoff | State::Failed), "{state:?}");
    }
}

#[test]
fn huge_remaining_length_is_refused_from_the_header() {
    for v in VERSIONS {
        let mut h = connected(v);
        // PUBLISH claiming 268,435,455 bytes; only the header arrives.
        h.reply_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
        let ev = h.lifecycle();
        match &ev[0] {
            Lifecycle::ConnectionLost {
                reason: Reason::ProtocolViolation { code, .. },
                ..
            } => {
                assert_eq!(*code, ReasonCode::PacketTooLarge)
            }
            other => panic!("{other:?}"),
        }
        assert!(h.conn.read_buffer().is_empty());
        assert!(
            h.conn.read_buffer().capacity() < 1 << 16,
            "nothing was reserved for the claimed length"
        );
        if v == ProtocolVersion::V5 {
            assert!(
                matches!(h.sent().as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::PacketTooLarge)
            );
        }
        // Bytes that follow on the dead link are ignored.
        h.reply_bytes(&[0u8; 1024]);
        assert_eq!(h.conn.state(), State::Backoff);
    }
}

#[test]
fn our_maximum_packet_size_is_enforced_before_the_body() {
    let mut c = config(ProtocolVersion::V5);
    c.maximum_packet_size = 1000;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    let connect = h.connect(false);
    assert_eq!(
        connect.properties.maximum_packet_size,
        Some(1000),
        "advertised in CONNECT"
    );
    h.events();
    // PUBLISH of 2000 bytes: the header alone is refused.
    h.reply_bytes(&[0x30, 0xD0, 0x0F]);
    let ev = h.lifecycle();
    assert!(
        matches!(
            &ev[0],
            Lifecycle::ConnectionLost {
                reason: Reason::ProtocolViolation {
                    code: ReasonCode::PacketTooLarge,
                    ..
                },
                ..
            }
        ),
        "{ev:?}"
    );
    // The same limit applies before CONNACK.
    let mut c = config(ProtocolVersion::V311);
    c.maximum_packet_size = 1000;
    let mut h = Harness::with_backoff(c, no_jitter());
    h.start();
    h.expect_connect_action();
    h.open();
    h.sent();
    h.events();
    h.reply_bytes(&[0x20, 0xD0, 0x0F]);
    let ev = h.lifecycle();
    assert!(
        matches!(
            &ev[0],
            Lifecycle::ConnectFailed {
                reason: Reason::ProtocolViolation { .. },
                ..
            }
        ),
        "{ev:?}"
    );
}

#[test]
fn a_valid_packet_split_byte_by_byte_is_reassembled() {
    for v in VERSIONS {
        let mut h = connected(v);
        let mut p = message("a/b", steadfast_proto::QoS::AtLeastOnce, "payload");
        p.pkid = 5;
        let bytes = h.encode(&Packet::Publish(p));
        for b in bytes.iter() {
            h.reply_bytes(&[*b]);
        }
        let ev = h.events();
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::Message { .. }))
                .count(),
            1
        );
        assert_eq!(
            h.sent(),
            vec![Packet::PubAck(steadfast_proto::PubAck::new(5))]
        );
    }
}
