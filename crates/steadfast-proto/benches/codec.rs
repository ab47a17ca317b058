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
//! (with `CODEC_AB=1` to also print an interleaved comparison, see [`interleaved`]).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rumqttc::mqttbytes::v4 as rv4;
use rumqttc::v5::mqttbytes::v5 as rv5;
use steadfast_proto::{Packet, Props, ProtocolVersion, Publish, QoS};

const TOPIC: &str = "sensors/building-7/floor-3/room-12/temperature";
const PKID: u16 = 4242;

fn steadfast_publish(payload: &Bytes) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: TOPIC.into(),
        pkid: PKID,
        properties: Props::new(),
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
    if std::env::var_os("CODEC_AB").is_some() {
        interleaved();
    }
    encode(c);
    decode(c);
}

/// `CODEC_AB=1`: alternates short bursts of every codec, many rounds, and prints each one's
/// fastest and median burst (ns per packet). Criterion runs one benchmark after the other, so
/// on a shared, busy machine load changes between them skew the comparison; interleaving
/// exposes every codec to the same load.
fn interleaved() {
    type Run = Box<dyn FnMut(usize)>;
    const BURST: usize = 2000;
    const ROUNDS: usize = 300;
    for (label, size) in [("64B", 64usize), ("4KiB", 4096)] {
        let payload = Bytes::from(vec![0xA5u8; size]);
        let mut runs: Vec<(&str, Run)> = Vec::new();
        for (name, v) in [
            ("encode steadfast_v5", ProtocolVersion::V5),
            ("encode steadfast_v311", ProtocolVersion::V311),
        ] {
            let p = steadfast_publish(&payload);
            let mut buf = BytesMut::with_capacity(8192);
            runs.push((
                name,
                Box::new(move |n| {
                    for _ in 0..n {
                        buf.clear();
                        black_box(&p).encode(black_box(v), &mut buf).unwrap();
                        black_box(&buf);
                    }
                }),
            ));
        }
        let r4 = rumqttc_v4_publish(&payload);
        let mut buf = BytesMut::with_capacity(8192);
        runs.push((
            "encode rumqttc_v4",
            Box::new(move |n| {
                for _ in 0..n {
                    buf.clear();
                    black_box(&r4).write(&mut buf).unwrap();
                    black_box(&buf);
                }
            }),
        ));
        let r4p = rv4::Packet::Publish(rumqttc_v4_publish(&payload));
        let mut buf = BytesMut::with_capacity(8192);
        runs.push((
            "encode rumqttc_v4_packet",
            Box::new(move |n| {
                for _ in 0..n {
                    buf.clear();
                    black_box(&r4p).write(&mut buf, usize::MAX).unwrap();
                    black_box(&buf);
                }
            }),
        ));
        for (name, v) in [
            ("decode steadfast_v5", ProtocolVersion::V5),
            ("decode steadfast_v311", ProtocolVersion::V311),
        ] {
            let mut wire = BytesMut::new();
            steadfast_publish(&payload).encode(v, &mut wire).unwrap();
            let wire = wire.freeze();
            let mut inputs: Vec<BytesMut> = Vec::new();
            runs.push((
                name,
                Box::new(move |n| {
                    // Inputs are built outside the timed region (see below).
                    if inputs.is_empty() {
                        inputs = (0..n).map(|_| BytesMut::from(&wire[..])).collect();
                        return;
                    }
                    for b in inputs.iter_mut() {
                        let p = Packet::decode(b, black_box(v), u32::MAX).unwrap();
                        black_box(&p);
                    }
                    inputs.clear();
                }),
            ));
        }
        let mut wire = BytesMut::new();
        rumqttc_v4_publish(&payload).write(&mut wire).unwrap();
        let wire = wire.freeze();
        let mut inputs: Vec<BytesMut> = Vec::new();
        runs.push((
            "decode rumqttc_v4",
            Box::new(move |n| {
                if inputs.is_empty() {
                    inputs = (0..n).map(|_| BytesMut::from(&wire[..])).collect();
                    return;
                }
                for b in inputs.iter_mut() {
                    let p = rv4::Packet::read(b, usize::MAX).unwrap();
                    black_box(&p);
                }
                inputs.clear();
            }),
        ));

        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); runs.len()];
        for _ in 0..ROUNDS {
            for ((name, run), out) in runs.iter_mut().zip(samples.iter_mut()) {
                if name.starts_with("decode") {
                    run(BURST); // build the inputs, untimed
                }
                let t = std::time::Instant::now();
                run(BURST);
                out.push(t.elapsed().as_nanos() as f64 / BURST as f64);
            }
        }
        println!("interleaved A/B, PUBLISH QoS 1, {label} payload ({ROUNDS} rounds of {BURST}):");
        for ((name, _), mut v) in runs.iter().zip(samples) {
            v.sort_by(f64::total_cmp);
            println!(
                "  {name:26} min {:7.2} ns   median {:7.2} ns",
                v[0],
                v[v.len() / 2]
            );
        }
    }
}

criterion_group!(codec, benches);
criterion_main!(codec);
