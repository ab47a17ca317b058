//! Scripted fake brokers for what a real broker will not do: garbage, absurd length fields,
//! truncated packets, silence, and DISCONNECT 0x8E (session taken over).

mod support;

use std::sync::{Arc, Mutex};

use steadfast::Message;
use support::*;
use tokio::io::AsyncWriteExt;

/// A small deterministic byte generator (xorshift).
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn garbage_builder(url: &str, v: ProtocolVersion, id: &str) -> ClientBuilder {
    fast(url, v, id).connect_timeout(ms(500))
}

fn is_violation(r: &Reason) -> bool {
    matches!(r, Reason::ProtocolViolation { .. })
}

/// Checks the Reconnecting delays between failures: within the policy, so attempts go on
/// with backoff rather than in a tight loop; and the fake saw the attempts that far apart.
fn check_backoff(r: &Recorder, times: &[Instant]) {
    let delays: Vec<Duration> = r
        .events()
        .iter()
        .filter_map(|e| match e {
            Lifecycle::Reconnecting { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    assert!(!delays.is_empty());
    assert!(
        delays.iter().all(|d| *d >= ms(50) && *d <= ms(500)),
        "{delays:?}"
    );
    for g in gaps(times) {
        assert!(g >= ms(45), "attempts only {g:?} apart: no backoff");
    }
}

/// (a) random bytes instead of CONNACK: every attempt fails with a protocol violation (or a
/// connect timeout, when the bytes happen to announce a long packet), attempts go on with
/// backoff, and once the peer behaves the client connects: the driver survived it all.
#[test]
fn garbage_instead_of_connack() {
    run(Duration::from_secs(30), async {
        let runs = VERSIONS.map(|v| async move {
            let broker = Arc::new(FakeBroker::bind().await.unwrap());
            let times = Arc::new(Mutex::new(Vec::new()));
            let t2 = times.clone();
            serve(broker.clone(), move |n, mut conn| {
                t2.lock().unwrap().push(Instant::now());
                async move {
                    let Some(level) = read_connect(&mut conn).await else {
                        return;
                    };
                    if n <= 4 {
                        let mut junk = random_bytes(n as u64, 64);
                        if n == 1 {
                            junk[0] = 0x00; // reserved packet type: certainly malformed
                        }
                        let _ = conn.write_all(&junk).await;
                    } else {
                        let _ = conn.write_all(&connack_ok(level)).await;
                    }
                    let _ = conn.wait_closed(T).await;
                }
            });
            let id = uid(&format!("junk-{}", vname(v)));
            let (c, mut r) = start(garbage_builder(&broker.url(), v, &id), &id);
            let first = r
                .next("ConnectFailed", T, |e| {
                    matches!(e, Lifecycle::ConnectFailed { .. })
                })
                .await;
            let Lifecycle::ConnectFailed { attempt: 1, reason } = &first.event else {
                panic!("{first:?}")
            };
            assert!(is_violation(reason), "{reason:?}");
            assert_eq!(reason.initiator(), steadfast::Initiator::Library);
            for _ in 2..=4 {
                let f = r
                    .next("ConnectFailed", T, |e| {
                        matches!(e, Lifecycle::ConnectFailed { .. })
                    })
                    .await;
                let Lifecycle::ConnectFailed { reason, .. } = &f.event else {
                    unreachable!()
                };
                assert!(
                    is_violation(reason) || matches!(reason, Reason::ConnectTimeout(_)),
                    "{reason:?}"
                );
            }
            let conn = r.connected(T).await;
            assert!(matches!(
                conn.event,
                Lifecycle::Connected { attempt: 5, .. }
            ));
            assert_eq!(broker.accept_count(), 5);
            check_backoff(&r, &times.lock().unwrap());
            assert_eq!(c.state(), State::Connected);
        });
        let [a, b] = runs;
        tokio::join!(a, b);
    });
}

/// (b) a valid CONNACK, then garbage: `ConnectionLost` with a protocol violation, then a
/// reconnect with backoff.
#[test]
fn valid_connack_then_garbage() {
    run(Duration::from_secs(30), async {
        let runs = VERSIONS.map(|v| async move {
            let broker = Arc::new(FakeBroker::bind().await.unwrap());
            let times = Arc::new(Mutex::new(Vec::new()));
            let t2 = times.clone();
            serve(broker.clone(), move |n, mut conn| {
                t2.lock().unwrap().push(Instant::now());
                async move {
                    let Some(level) = read_connect(&mut conn).await else {
                        return;
                    };
                    let _ = conn.write_all(&connack_ok(level)).await;
                    if n <= 2 {
                        // A PUBACK whose remaining length is wrong, then noise.
                        let mut junk = vec![0x40, 0x01, 0x00];
                        junk.extend(random_bytes(n as u64 + 10, 32));
                        let _ = conn.write_all(&junk).await;
                    }
                    let _ = conn.wait_closed(T).await;
                }
            });
            let id = uid(&format!("junk2-{}", vname(v)));
            let (_c, mut r) = start(garbage_builder(&broker.url(), v, &id), &id);
            for _ in 0..2 {
                r.connected(T).await;
                let lost = r
                    .next("ConnectionLost", T, |e| {
                        matches!(e, Lifecycle::ConnectionLost { .. })
                    })
                    .await;
                let Lifecycle::ConnectionLost { reason, .. } = &lost.event else {
                    unreachable!()
                };
                assert!(is_violation(reason), "{reason:?}");
                assert_eq!(
                    reason.reason_code(),
                    Some(ReasonCode::MalformedPacket),
                    "{reason:?}"
                );
            }
            r.connected(T).await;
            assert_eq!(broker.accept_count(), 3);
            check_backoff(&r, &times.lock().unwrap());
        });
        let [a, b] = runs;
        tokio::join!(a, b);
    });
}

/// Writes `header` then up to `total` bytes in 64 KiB chunks until a write fails; returns
/// the bytes written after the header.
async fn flood(conn: &mut FakeConn, header: &[u8], total: usize) -> usize {
    let s = conn.stream_mut();
    if s.write_all(header).await.is_err() {
        return 0;
    }
    let chunk = vec![0x5Au8; 64 * 1024];
    let mut written = 0;
    while written < total {
        match tokio::time::timeout(T, s.write(&chunk)).await {
            Ok(Ok(n)) if n > 0 => written += n,
            _ => break,
        }
    }
    written
}

/// (c) a fixed header claiming a 200 MB remaining length, followed by 50 MB of bytes, both
/// as the answer to CONNECT and after a valid CONNACK: the client drops the connection as
/// soon as it reads the header (its maximum packet size is 16 MiB), so the peer sees the
/// close before it could write more than a few MB; then it reconnects.
#[test]
fn huge_remaining_length_is_refused_before_buffering() {
    run(Duration::from_secs(40), async {
        let runs = VERSIONS.map(|v| async move {
            let broker = Arc::new(FakeBroker::bind().await.unwrap());
            let written = Arc::new(Mutex::new(Vec::new()));
            let w2 = written.clone();
            serve(broker.clone(), move |n, mut conn| {
                let w2 = w2.clone();
                async move {
                    let Some(level) = read_connect(&mut conn).await else {
                        return;
                    };
                    // 0x30 PUBLISH, remaining length 200,000,000 (varint 80 84 af 5f).
                    let mut header = Vec::new();
                    if n == 2 {
                        header.extend(connack_ok(level));
                    }
                    header.push(0x30);
                    steadfast_chaos::raw::encode_remaining_length(200_000_000, &mut header);
                    if n <= 2 {
                        let w = flood(&mut conn, &header, 50 << 20).await;
                        w2.lock().unwrap().push(w);
                    } else {
                        let _ = conn.write_all(&connack_ok(level)).await;
                        let _ = conn.wait_closed(T).await;
                    }
                }
            });
            let id = uid(&format!("huge-{}", vname(v)));
            let (_c, mut r) = start(garbage_builder(&broker.url(), v, &id), &id);
            let f = r
                .next("ConnectFailed", T, |e| {
                    matches!(e, Lifecycle::ConnectFailed { .. })
                })
                .await;
            let Lifecycle::ConnectFailed { reason, .. } = &f.event else {
                unreachable!()
            };
            assert_eq!(
                reason.reason_code(),
                Some(ReasonCode::PacketTooLarge),
                "{reason:?}"
            );
            r.connected(T).await;
            let lost = r
                .next("ConnectionLost", T, |e| {
                    matches!(e, Lifecycle::ConnectionLost { .. })
                })
                .await;
            let Lifecycle::ConnectionLost { reason, .. } = &lost.event else {
                unreachable!()
            };
            assert_eq!(
                reason.reason_code(),
                Some(ReasonCode::PacketTooLarge),
                "{reason:?}"
            );
            r.connected(T).await;
            eventually("both floods ended", T, || {
                written.lock().unwrap().len() == 2
            })
            .await;
            let w = written.lock().unwrap().clone();
            eprintln!(
                "{}: bytes written before the client's close was seen: {w:?}",
                vname(v)
            );
            for b in w {
                // Socket buffers on both ends hold a few MB at most on loopback.
                assert!(
                    b < 8 << 20,
                    "the peer wrote {b} bytes before noticing the close"
                );
            }
        });
        let [a, b] = runs;
        tokio::join!(a, b);
    });
}

/// (d) truncated packets and silence: half a CONNACK then silence and a silent peer are
/// connect timeouts; a truncated PUBLISH after CONNACK followed by silence is found by
/// keep-alive (the peer sees the PINGREQ); a truncated PUBLISH followed by FIN is a transport
/// error. Each is followed by a reconnect with backoff, and a good peer is connected at last.
#[test]
fn truncated_packets_and_silence() {
    run(Duration::from_secs(30), async {
        let runs = VERSIONS.map(|v| async move {
            let broker = Arc::new(FakeBroker::bind().await.unwrap());
            let pings = Arc::new(Mutex::new(0usize));
            let p2 = pings.clone();
            serve(broker.clone(), move |n, mut conn| {
                let p2 = p2.clone();
                async move {
                    let Some(level) = read_connect(&mut conn).await else {
                        return;
                    };
                    let ok = connack_ok(level);
                    // PUBLISH QoS 0 claiming 100 bytes, of which 6 arrive.
                    let truncated = [0x30, 100, 0x00, 0x03, b'a', b'/', b'b', b'x'];
                    match n {
                        1 => {
                            let _ = conn.write_all(&ok[..2]).await;
                        }
                        2 => {}
                        3 => {
                            let _ = conn.write_all(&ok).await;
                            let _ = conn.write_all(&truncated).await;
                            // The client's PINGREQ after a keep-alive of silence.
                            if let Ok(Some(f)) = conn.read_frame_timeout(T).await {
                                if fake::packet_type(&f) == Some(12) {
                                    *p2.lock().unwrap() += 1;
                                }
                            }
                        }
                        4 => {
                            let _ = conn.write_all(&ok).await;
                            let _ = conn.write_all(&truncated).await;
                            let _ = conn.shutdown().await;
                        }
                        _ => {
                            let _ = conn.write_all(&ok).await;
                        }
                    }
                    let _ = conn.wait_closed(T).await;
                }
            });
            let id = uid(&format!("trunc-{}", vname(v)));
            let b = garbage_builder(&broker.url(), v, &id).keep_alive(Duration::from_secs(1));
            let (c, mut r) = start(b, &id);
            for _ in 0..2 {
                let f = r
                    .next("ConnectFailed", T, |e| {
                        matches!(e, Lifecycle::ConnectFailed { .. })
                    })
                    .await;
                let Lifecycle::ConnectFailed { reason, .. } = &f.event else {
                    unreachable!()
                };
                assert_eq!(*reason, Reason::ConnectTimeout(ms(500)));
            }
            let up = r.connected(T).await;
            let lost = r
                .next("ConnectionLost", T, |e| {
                    matches!(e, Lifecycle::ConnectionLost { .. })
                })
                .await;
            let Lifecycle::ConnectionLost { reason, .. } = &lost.event else {
                unreachable!()
            };
            assert_eq!(*reason, Reason::KeepAliveTimeout(ms(500)));
            let took = lost.seen.duration_since(up.seen);
            assert!(
                took >= ms(1400) && took <= ms(1500 + 300),
                "keep-alive timeout after {took:?}"
            );
            assert_eq!(*pings.lock().unwrap(), 1, "the peer did not see a PINGREQ");
            r.connected(T).await;
            let lost = r
                .next("ConnectionLost", T, |e| {
                    matches!(e, Lifecycle::ConnectionLost { .. })
                })
                .await;
            let Lifecycle::ConnectionLost { reason, .. } = &lost.event else {
                unreachable!()
            };
            assert!(matches!(reason, Reason::Transport(_)), "{reason:?}");
            r.connected(T).await;
            assert_eq!(broker.accept_count(), 5);
            assert_eq!(c.state(), State::Connected);
        });
        let [a, b] = runs;
        tokio::join!(a, b);
    });
}

/// The broker's Server Keep Alive (MQTT 5) replaces the client's keep-alive: the client asks
/// for 60 s, the scripted CONNACK says 1 s (Mosquitto's `max_keepalive` cannot go below 10 s),
/// and the silent peer sees a PINGREQ after about 1 s; the dead link is noticed at 1.5 s.
#[test]
fn server_keep_alive_replaces_ours() {
    run(Duration::from_secs(20), async {
        let broker = Arc::new(FakeBroker::bind().await.unwrap());
        let ping_after = Arc::new(Mutex::new(Vec::new()));
        let p2 = ping_after.clone();
        serve(broker.clone(), move |_, mut conn| {
            let p2 = p2.clone();
            async move {
                if read_connect(&mut conn).await.is_none() {
                    return;
                }
                // CONNACK, properties: Server Keep Alive (0x13) = 1.
                let _ = conn
                    .write_all(&[0x20, 0x06, 0x00, 0x00, 0x03, 0x13, 0x00, 0x01])
                    .await;
                let t0 = Instant::now();
                if let Ok(Some(f)) = conn.read_frame_timeout(T).await {
                    if fake::packet_type(&f) == Some(12) {
                        p2.lock().unwrap().push(t0.elapsed());
                    }
                }
                let _ = conn.wait_closed(T).await;
            }
        });
        let id = uid("server-ka");
        let b = fast(&broker.url(), ProtocolVersion::V5, &id).keep_alive(Duration::from_secs(60));
        let (_c, mut r) = start(b, &id);
        let up = r.connected(T).await;
        let Lifecycle::Connected { granted, .. } = &up.event else {
            unreachable!()
        };
        assert_eq!(granted.keep_alive, Duration::from_secs(1));
        let lost = r
            .next("ConnectionLost", ms(3000), |e| {
                matches!(e, Lifecycle::ConnectionLost { .. })
            })
            .await;
        let Lifecycle::ConnectionLost { reason, .. } = &lost.event else {
            unreachable!()
        };
        assert_eq!(*reason, Reason::KeepAliveTimeout(ms(500)));
        let took = lost.seen.duration_since(up.seen);
        assert!(
            took >= ms(1400) && took <= ms(1800),
            "dead link noticed after {took:?}"
        );
        let pings = ping_after.lock().unwrap().clone();
        assert_eq!(pings.len(), 1);
        assert!(
            pings[0] >= ms(900) && pings[0] <= ms(1300),
            "PINGREQ after {:?}",
            pings[0]
        );
    });
}

/// (topic, packet id, payload) of a raw PUBLISH with QoS > 0.
fn parse_publish(f: &[u8], level: u8) -> (String, u16, Vec<u8>) {
    let mut i = 1;
    while f[i] & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let tl = usize::from(u16::from_be_bytes([f[i], f[i + 1]]));
    let topic = String::from_utf8_lossy(&f[i + 2..i + 2 + tl]).into_owned();
    let mut j = i + 2 + tl;
    let pkid = u16::from_be_bytes([f[j], f[j + 1]]);
    j += 2;
    if level == 5 {
        j += 1 + usize::from(f[j]); // short property blocks only
    }
    (topic, pkid, f[j..].to_vec())
}

/// KNOWN BUG (see the report): a QoS 2 message that got PUBREC, whose PUBCOMP never came
/// because the connection dropped, is completed as a *success* when the next CONNACK says
/// the session is gone, and it is never sent again. Mosquitto delivers a QoS 2 message
/// onward only on PUBREL, and discards it with a clean session, so the application is told
/// "acknowledged" for a message no subscriber ever gets (seen as an occasional missing number
/// with a clean-session QoS 2 publisher under resets). The spec promises that nothing
/// acknowledged as accepted is lost after a session loss.
///
/// This peer plays Mosquitto's part exactly: PUBREC, then the connection drops before
/// PUBCOMP, then a CONNACK without session. The message must come again (as a new PUBLISH)
/// or the publish must fail; today it succeeds and nothing is resent.
#[test]
fn qos2_after_pubrec_is_not_lost_when_the_session_is() {
    run(Duration::from_secs(20), async {
        for v in VERSIONS {
            let level = level_of(v);
            let broker = Arc::new(FakeBroker::bind().await.unwrap());
            let seen = Arc::new(Mutex::new(Vec::new()));
            let s2 = seen.clone();
            serve(broker.clone(), move |n, mut conn| {
                let s2 = s2.clone();
                async move {
                    if read_connect(&mut conn).await.is_none() {
                        return;
                    }
                    let _ = conn.write_all(&connack_ok(level)).await;
                    while let Ok(Some(f)) = conn.read_frame_timeout(ms(1500)).await {
                        if fake::packet_type(&f) != Some(3) {
                            continue;
                        }
                        let (_, pkid, payload) = parse_publish(&f, level);
                        s2.lock().unwrap().push((n, payload));
                        let [hi, lo] = pkid.to_be_bytes();
                        if n == 1 {
                            // PUBREC; the client's PUBREL is lost with the connection (it
                            // drops before the broker processed it): no PUBCOMP.
                            let _ = conn.write_all(&[0x50, 0x02, hi, lo]).await;
                            let _ = conn.read_frame_timeout(T).await;
                            conn.reset();
                            return;
                        }
                        let _ = conn.write_all(&[0x50, 0x02, hi, lo]).await;
                        let _ = conn.read_frame_timeout(T).await;
                        let _ = conn.write_all(&[0x70, 0x02, hi, lo]).await;
                    }
                    let _ = conn.wait_closed(T).await;
                }
            });
            let id = uid(&format!("q2loss-{}", vname(v)));
            let (c, mut r) = start(fast(&broker.url(), v, &id), &id);
            r.connected(T).await;
            let outcome = tokio::time::timeout(
                T,
                c.send(Message::new(format!("q2/{id}"), "precious").qos(QoS::ExactlyOnce)),
            )
            .await
            .expect("publish completes");
            r.next("second Connected", T, |e| {
                matches!(
                    e,
                    Lifecycle::Connected {
                        session_present: false,
                        ..
                    }
                )
            })
            .await;
            // Positive end marker: a second message through the new connection.
            c.send(Message::new(format!("q2/{id}"), "marker").qos(QoS::ExactlyOnce))
                .await
                .unwrap();
            let seen = seen.lock().unwrap().clone();
            let resent = seen
                .iter()
                .any(|(n, p)| *n >= 2 && p.as_slice() == b"precious");
            assert!(
                resent || outcome.is_err(),
                "{}: publish reported {outcome:?} but the message was never delivered \
                 (the broker lost it with the session); peer saw {seen:?}",
                vname(v)
            );
        }
    });
}
