//! PUBLISH QoS 1 encode/decode, 64 B and 4 KiB payloads: steadfast (MQTT 5 and 3.1.1) against
//! rumqttc's mqttbytes (v4 and v5), same topic, payload and packet identifier.
//!
//! Fairness: every encoder writes into one reused `BytesMut` (cleared each iteration, so no
//! allocation after the first); every decoder gets a fresh `BytesMut` holding exactly one packet
//! (built outside the timed region) and the decoded packet is dropped inside the timed region,
//! so freeing what decoding allocated counts too. rumqttc encodes with `Publish::write`, its
//! fastest path (no validation at all), and, for reference, with `Packet::write`, the entry
//! point its event loop uses (with a size check); it decodes with `Packet::read`, its only
//! framing entry point. steadfast always validates (topic, properties, identifiers).
//!
//! Run: `cargo bench -p steadfast-proto --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rumqttc::mqttbytes::v4 as rv4;
use rumqttc::v5::mqttbytes::v5 as rv5;
use steadfast_proto::{Packet, Properties, ProtocolVersion, Publish, QoS};

const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";
const PKID: u16 = 4242;

fn steadfast_publish(payload: &Bytes) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TOPIC.into(),
        pkid: PKID,
        properties: Properties::default(),
        payload: payload.clone(),
    })
}

fn rumqttc_v4_publish(payload: &Bytes) -> rv4::Publish {
    let mut p =
        rv4::Publish::from_bytes(TOPIC, rumqttc::mqttbytes::QoS::AtLeastOnce, payload.clone());
    p.pkid = PKID;
    p
}

fn rumqttc_v5_publish(payload: &Bytes) -> rv5::Publish {
    let mut p = rv5::Publish::new(
        TOPIC,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        payload.clone(),
        None,
    );
    p.pkid = PKID;
    p
}

fn encode(c: &mut Criterion) {
    for (label, size) in [("64B", 64usize), ("4KiB", 4096)] {
        let payload = Bytes::from(vec![0xA5u8; size]);
        let mut g = c.benchmark_group(format!("encode_publish_qos1_{label}"));
        g.throughput(Throughput::Elements(1));

        let p = steadfast_publish(&payload);
        for (name, v) in [
            ("steadfast_v5", ProtocolVersion::V5),
            ("steadfast_v311", ProtocolVersion::V311),
        ] {
            let mut buf = BytesMut::with_capacity(8192);
            g.bench_function(name, |b| {
                b.iter(|| {
                    buf.clear();
                    black_box(&p).encode(v, &mut buf).unwrap();
                    black_box(&buf);
                })
            });
        }

        let r4 = rumqttc_v4_publish(&payload);
        let mut buf = BytesMut::with_capacity(8192);
        g.bench_function("rumqttc_v4", |b| {
            b.iter(|| {
                buf.clear();
                black_box(&r4).write(&mut buf).unwrap();
                black_box(&buf);
            })
        });

        // rumqttc's codec entry point (what its event loop calls), with its size check.
        let r4p = rv4::Packet::Publish(rumqttc_v4_publish(&payload));
        let mut buf = BytesMut::with_capacity(8192);
        g.bench_function("rumqttc_v4_packet", |b| {
            b.iter(|| {
                buf.clear();
                black_box(&r4p).write(&mut buf, usize::MAX).unwrap();
                black_box(&buf);
            })
        });

        let r5 = rumqttc_v5_publish(&payload);
        let mut buf = BytesMut::with_capacity(8192);
        g.bench_function("rumqttc_v5", |b| {
            b.iter(|| {
                buf.clear();
                black_box(&r5).write(&mut buf).unwrap();
                black_box(&buf);
            })
        });
        g.finish();
    }
}

fn decode(c: &mut Criterion) {
    for (label, size) in [("64B", 64usize), ("4KiB", 4096)] {
        let payload = Bytes::from(vec![0xA5u8; size]);
        let mut g = c.benchmark_group(format!("decode_publish_qos1_{label}"));
        g.throughput(Throughput::Elements(1));

        let p = steadfast_publish(&payload);
        for (name, v) in [
            ("steadfast_v5", ProtocolVersion::V5),
            ("steadfast_v311", ProtocolVersion::V311),
        ] {
            let mut wire = BytesMut::new();
            p.encode(v, &mut wire).unwrap();
            let wire = wire.freeze();
            g.bench_function(name, |b| {
                b.iter_batched_ref(
                    || BytesMut::from(&wire[..]),
                    |buf| {
                        let packet = Packet::decode(buf, v, u32::MAX).unwrap();
                        black_box(&packet);
                    },
                    BatchSize::SmallInput,
                )
            });
        }

        let mut wire = BytesMut::new();
        rumqttc_v4_publish(&payload).write(&mut wire).unwrap();
        let wire = wire.freeze();
        g.bench_function("rumqttc_v4", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| {
                    let packet = rv4::Packet::read(buf, usize::MAX).unwrap();
                    black_box(&packet);
                },
                BatchSize::SmallInput,
            )
        });

        let mut wire = BytesMut::new();
        rumqttc_v5_publish(&payload).write(&mut wire).unwrap();
        let wire = wire.freeze();
        g.bench_function("rumqttc_v5", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| {
                    let packet = rv5::Packet::read(buf, None).unwrap();
                    black_box(&packet);
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

/// Both codecs must produce the same bytes for the same 3.1.1 packet, and read each other's.
fn sanity() {
    let payload = Bytes::from_static(b"hello");
    let mut ours = BytesMut::new();
    steadfast_publish(&payload)
        .encode(ProtocolVersion::V311, &mut ours)
        .unwrap();
    let mut theirs = BytesMut::new();
    rumqttc_v4_publish(&payload).write(&mut theirs).unwrap();
    assert_eq!(ours, theirs, "3.1.1 encodings differ");
    let mut ours5 = BytesMut::new();
    steadfast_publish(&payload)
        .encode(ProtocolVersion::V5, &mut ours5)
        .unwrap();
    let mut theirs5 = BytesMut::new();
    rumqttc_v5_publish(&payload).write(&mut theirs5).unwrap();
    assert_eq!(ours5, theirs5, "5.0 encodings differ");
}

fn benches(c: &mut Criterion) {
    sanity();
    encode(c);
    decode(c);
}

criterion_group!(codec, benches);
criterion_main!(codec);
