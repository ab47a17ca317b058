//! State-machine fuzzing of [`Connection`]: an interpreter that turns arbitrary bytes into a
//! sequence of operations (application commands, transport events, time advances and broker
//! packets, well-formed or not) and checks invariants after every step.
//!
//! Used by the cargo-fuzz target `fuzz/fuzz_targets/state_machine.rs` and by the bounded smoke
//! run in `tests/core_fuzz_smoke.rs` of this crate.
//!
//! The interpreter plays the driver exactly as the [`Connection`] docs ask (drain events,
//! actions and output after every call; open a transport only after `Action::Connect`; stop
//! reading after `Action::Close`) and plays a broker that decodes everything the client writes.
//! Invariants checked after every call:
//!
//! - no panic;
//! - the packet ids of in-flight messages are unique, and no packet id is reused while the
//!   broker still holds it (PUBLISH, SUBSCRIBE, UNSUBSCRIBE);
//! - `inflight_sent() <= peer_receive_maximum()`, and, decoding the client's PUBLISH packets,
//!   the QoS 1/2 messages outstanding on the link never exceed the CONNACK's Receive Maximum;
//! - the client respects the broker's Maximum QoS, Retain Available, Maximum Packet Size
//!   (PUBLISH) and Topic Alias Maximum, writes CONNECT first and nothing before CONNACK;
//! - every publish / subscribe / unsubscribe token completes at most once, and only tokens the
//!   client handed out; accepted publications are conserved (queued + in flight + completed);
//!   once `Closed`, every token has completed;
//! - a received QoS 2 message is delivered at most once until its PUBREL;
//! - after `handle_timeout(now)` the next deadline is after `now` (no busy loop), and a client
//!   that is connecting, backing off or draining always has a deadline (no hang); a dormant,
//!   failed or closed client has none;
//! - `Action::Connect` never comes while a transport is open.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use steadfast_proto::backoff::{
    BackoffPolicy, Constant, Exponential, Jitter, Stepped, UniformRandom,
};
use steadfast_proto::session::offline::{Overflow, QueueLimits};
use steadfast_proto::{
    Action, Auth, ByteStr, Config, ConnAck, Connection, DecodeError, Disconnect, DisconnectOptions,
    Event, Lifecycle, Packet, Properties, Props, ProtocolVersion, PubAck, PubComp, PubRec, PubRel,
    Publish, QoS, ReasonCode, State, SubAck, SubscribeFilter, SubscriptionOptions, Token,
    TransportError, UnsubAck,
};

/// Reads the fuzzer's bytes; yields zeros once they run out.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// One in `n` (n >= 1).
    fn one_in(&mut self, n: u8) -> bool {
        self.u8() % n.max(1) == 0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n.max(1)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

const TOPICS: [&str; 5] = ["a", "a/b", "c/d/e", "sensor/1/temperature", "x"];
const FILTERS: [&str; 6] = ["a/#", "a/b", "+/x", "c/d/e", "#", "sensor/+/temperature"];
const ADVANCES_MS: [u64; 10] = [
    0, 1, 50, 1_000, 3_000, 10_000, 31_000, 120_000, 600_000, 3_600_000,
];

/// Runs one sequence of operations decoded from `data`. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    run_inner(data, false);
}

/// [`run`], printing every call and its outputs to stderr: to reproduce a failure.
pub fn run_traced(data: &[u8]) {
    run_inner(data, true);
}

fn run_inner(data: &[u8], trace: bool) {
    let mut input = Input { data, pos: 0 };
    let mut sm = Sm::new(&mut input, trace);
    let mut ops = 0;
    while !input.is_empty() && ops < 400 {
        sm.op(&mut input);
        ops += 1;
    }
    // Finally close: every token must complete.
    sm.conn.disconnect(DisconnectOptions::default(), sm.now);
    sm.after_call("final disconnect");
    let drain = sm.conn.config().drain_timeout;
    sm.advance(drain + Duration::from_secs(1));
    assert_eq!(
        sm.conn.state(),
        State::Closed,
        "disconnect did not close within the drain timeout"
    );
    sm.check_closed();
}

/// What the broker knows about the current link.
#[derive(Default)]
struct Link {
    /// Bytes from the client not yet decoded.
    from_client: BytesMut,
    /// Mirror of the client's read buffer (bytes fed, not yet decoded).
    to_client: BytesMut,
    connect_seen: bool,
    connack: Option<ConnAck>,
    receive_maximum: usize,
    /// QoS 1/2 PUBLISH sent on this link and not finished: pkid -> (QoS, PUBREC seen).
    outstanding: HashMap<u16, (QoS, bool)>,
    /// SUBSCRIBE / UNSUBSCRIBE awaiting their ack: pkid -> number of filters.
    subscribes: HashMap<u16, usize>,
    unsubscribes: HashMap<u16, usize>,
    /// Outgoing topic aliases the client set up.
    aliases: HashSet<u16>,
}

struct Sm {
    conn: Connection,
    version: ProtocolVersion,
    max_packet_size: u32,
    t0: Instant,
    now: Instant,
    /// The driver was told to connect and has not opened the transport yet.
    pending_connect: bool,
    /// The open transport, from the broker's point of view.
    link: Option<Link>,
    /// Packet ids the client used recently (for acks aimed at real ids).
    recent_pkids: Vec<u16>,
    /// Packet ids of QoS 2 PUBLISH the broker sent (for PUBREL).
    broker_qos2_ids: Vec<u16>,
    /// Incoming QoS 2 ids delivered to the application and not yet released.
    delivered_qos2: HashSet<u16>,
    issued: HashSet<Token>,
    done: HashSet<Token>,
    sub_issued: HashSet<Token>,
    sub_done: HashSet<Token>,
    last_state: State,
    /// Print every call and what came out (for reproducing a failure).
    trace: bool,
}

fn fuzz_server(host: &str) -> steadfast_proto::ServerAddr {
    steadfast_proto::ServerAddr::parse_url(&format!("mqtt://{host}"))
        .unwrap_or_else(|_| steadfast_proto::ServerAddr::local_default())
}

fn policy(input: &mut Input<'_>) -> Box<dyn BackoffPolicy> {
    let ms = Duration::from_millis;
    match input.below(7) {
        0 => Box::new(Exponential::new(ms(100), ms(5_000)).jitter(Jitter::None)),
        1 => Box::new(Exponential::new(ms(100), ms(5_000)).jitter(Jitter::Full)),
        2 => Box::new(Exponential::new(ms(100), ms(5_000)).jitter(Jitter::Equal)),
        3 => Box::new(steadfast_proto::backoff::default_policy()),
        4 => Box::new(UniformRandom::new(ms(0), ms(2_000))),
        5 => Box::new(Stepped::new(vec![ms(10), ms(500), ms(3_000)], 0.5).expect("valid")),
        _ => Box::new(Constant::new(ms(u64::from(input.u8() % 3) * 500))),
    }
}

impl Sm {
    fn new(input: &mut Input<'_>, trace: bool) -> Sm {
        let version = if input.bool() {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        let secs = Duration::from_secs;
        let overflow = input.pick(&[
            Overflow::Backpressure,
            Overflow::DropOldest,
            Overflow::Reject,
        ]);
        let config = Config {
            protocol: version,
            servers: if input.one_in(4) {
                vec![fuzz_server("s1"), fuzz_server("s2")]
            } else {
                vec![fuzz_server("s1")]
            },
            client_id: if input.one_in(4) {
                ByteStr::new()
            } else {
                "fuzz".into()
            },
            clean_start: input.bool(),
            keep_alive: secs(u64::from(input.pick(&[0u8, 1, 5, 60]))),
            ping_timeout: None,
            connect_timeout: secs(u64::from(input.pick(&[1u8, 5, 20]))),
            stable_after: secs(u64::from(input.pick(&[1u8, 30]))),
            max_attempts: input.pick(&[None, Some(1), Some(3)]),
            auto_reconnect: !input.one_in(8),
            receive_maximum: input.pick(&[1u16, 3, u16::MAX]),
            maximum_packet_size: input.pick(&[64u32, 1_000, 16 << 20]),
            topic_alias_maximum: input.pick(&[0u16, 2, 16]),
            outgoing_topic_aliases: input.bool(),
            session_expiry_interval: input.pick(&[0u32, 3_600]),
            queue: QueueLimits {
                max_messages: input.pick(&[2usize, 5, 10_000]),
                max_bytes: input.pick(&[64usize, 2_000, 64 << 20]),
                overflow,
                queue_qos0: !input.one_in(3),
            },
            republish_on_session_loss: !input.one_in(4),
            subscription_identifiers: input.bool(),
            drain_timeout: secs(u64::from(input.pick(&[0u8, 1, 5]))),
            rng_seed: input.u64(),
            ..Config::default()
        };
        let max_packet_size = config.maximum_packet_size;
        let backoff = policy(input);
        let t0 = Instant::now();
        let mut sm = Sm {
            conn: Connection::with_backoff(config, backoff),
            version,
            max_packet_size,
            t0,
            now: t0,
            pending_connect: false,
            link: None,
            recent_pkids: Vec::new(),
            broker_qos2_ids: Vec::new(),
            delivered_qos2: HashSet::new(),
            issued: HashSet::new(),
            done: HashSet::new(),
            sub_issued: HashSet::new(),
            sub_done: HashSet::new(),
            last_state: State::Idle,
            trace,
        };
        if trace {
            eprintln!("{:?}", sm.conn.config());
        }
        sm.conn.start(sm.now);
        sm.after_call("start");
        sm
    }

    fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    // ------------------------------------------------------------------------------------
    // Operations

    fn op(&mut self, input: &mut Input<'_>) {
        let op = input.u8() % 24;
        // A broker packet needs an open transport, and before CONNACK almost anything but a
        // CONNACK ends the attempt: steer towards a connection most of the time, so the
        // sequences spend their length on connected behaviour.
        if op >= 11 && self.pending_connect && !input.one_in(8) {
            self.pending_connect = false;
            self.link = Some(Link {
                receive_maximum: usize::from(u16::MAX),
                ..Link::default()
            });
            self.conn.handle_transport_open(self.now);
            self.after_call("open");
        }
        let awaiting_connack = self.link.as_ref().is_some_and(|l| l.connack.is_none());
        if op >= 12 && awaiting_connack && !input.one_in(8) {
            self.broker_connack(input);
            return;
        }
        let now = self.now;
        match op {
            0 | 1 => self.publish(input),
            2 => {
                let n = 1 + input.below(2);
                let filters = (0..n)
                    .map(|_| SubscribeFilter {
                        filter: input.pick(&FILTERS).into(),
                        options: SubscriptionOptions::qos(input.pick(&[
                            QoS::AtMostOnce,
                            QoS::AtLeastOnce,
                            QoS::ExactlyOnce,
                        ])),
                    })
                    .collect();
                if let Ok(t) = self.conn.subscribe(filters, Properties::default(), now) {
                    assert!(self.sub_issued.insert(t), "token {t:?} handed out twice");
                }
                self.after_call("subscribe");
            }
            3 => {
                let f: ByteStr = input.pick(&FILTERS).into();
                if let Ok(t) = self.conn.unsubscribe(vec![f], Properties::default(), now) {
                    assert!(self.sub_issued.insert(t), "token {t:?} handed out twice");
                }
                self.after_call("unsubscribe");
            }
            4 => {
                if input.one_in(4) {
                    let reason = if input.bool() {
                        ReasonCode::Success
                    } else {
                        ReasonCode::DisconnectWithWillMessage
                    };
                    self.conn.disconnect(
                        DisconnectOptions {
                            reason,
                            session_expiry_interval: None,
                        },
                        now,
                    );
                    self.after_call("disconnect");
                }
            }
            5 => {
                if input.bool() {
                    self.conn.wake(now);
                } else {
                    self.conn.reconnect_now(now);
                }
                self.after_call("wake");
            }
            6 | 7 => {
                if self.pending_connect {
                    self.pending_connect = false;
                    self.link = Some(Link {
                        receive_maximum: usize::from(u16::MAX),
                        ..Link::default()
                    });
                    self.conn.handle_transport_open(now);
                    self.after_call("open");
                }
            }
            8 => {
                if self.pending_connect || self.link.is_some() {
                    let e = match input.below(8) {
                        0 => TransportError::Dns("nxdomain".into()),
                        1 | 2 => TransportError::Closed,
                        3 => TransportError::Tls("eof".into()),
                        4 if input.one_in(4) => TransportError::TlsFatal("bad certificate".into()),
                        _ => TransportError::Io("reset".into()),
                    };
                    self.pending_connect = false;
                    self.link = None;
                    self.conn.handle_transport_error(e, now);
                    self.after_call("transport error");
                }
            }
            9 | 10 => {
                let mut d = Duration::from_millis(input.pick(&ADVANCES_MS));
                if matches!(self.conn.state(), State::Connecting | State::Backoff) {
                    // Hours of failed attempts add nothing but run time.
                    d = d.min(Duration::from_secs(60));
                }
                self.advance(d);
            }
            11 => self.broker_connack(input),
            12 => self.broker_ack(input, 0),
            13 => self.broker_ack(input, 1),
            14 => self.broker_ack(input, 2),
            15 => self.broker_suback(input),
            16 => self.broker_unsuback(input),
            17 | 18 => self.broker_publish(input),
            19 => {
                let pkid = self.pick_id(input, true);
                let mut p = PubRel::new(pkid);
                if self.version == ProtocolVersion::V5 && input.one_in(4) {
                    p.reason = ReasonCode::PacketIdentifierNotFound;
                }
                self.send_packet(input, Packet::PubRel(p));
            }
            20 => {
                let codes: &[u8] = &[
                    0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x93, 0x94, 0x95,
                    0x97, 0x98, 0x9C, 0x9D, 0x9F, 0xA0,
                ];
                let mut d = Disconnect {
                    reason: ReasonCode::Success,
                    properties: Props::new(),
                };
                if self.version == ProtocolVersion::V5 {
                    d.reason =
                        ReasonCode::try_from(input.pick(codes)).unwrap_or(ReasonCode::Success);
                    if input.bool() {
                        d.properties.server_reference =
                            Some(input.pick(&["s3", "s4 [::1]:1884", "", "bad ref!"]).into());
                    }
                }
                self.send_packet(input, Packet::Disconnect(d));
            }
            21 => self.send_packet(input, Packet::PingResp),
            22 => {
                let n = input.below(48);
                let raw = input.bytes(n);
                self.feed(&raw);
            }
            _ => {
                if self.version == ProtocolVersion::V5 && input.one_in(3) {
                    let a = Auth {
                        reason: ReasonCode::ContinueAuthentication,
                        properties: Props::new(),
                    };
                    self.send_packet(input, Packet::Auth(a));
                } else {
                    // Driver calls the core must shrug off: bytes with no transport open, an
                    // early timeout, a second start.
                    match input.below(5) {
                        0 if self.link.is_none() => {
                            self.conn.handle_input(&[0x20, 0x02, 0, 0], now)
                        }
                        1 => self.conn.handle_timeout(now),
                        2 | 3 => {
                            // The application is behind: the driver reads bytes it does not
                            // decode yet, and tells the core the link is alive.
                            self.conn.handle_liveness(now)
                        }
                        _ => self.conn.start(now),
                    }
                    self.after_call("misuse");
                }
            }
        }
    }

    fn publish(&mut self, input: &mut Input<'_>) {
        let qos = input.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
        let topic = if input.one_in(16) {
            "bad/+"
        } else {
            input.pick(&TOPICS)
        };
        let len = input.pick(&[0usize, 1, 10, 100, 300]);
        let mut properties = Properties::default();
        if input.one_in(4) {
            properties.message_expiry_interval = Some(u32::from(input.u8() % 5) + 1);
        }
        if input.one_in(8) {
            properties.user_properties.push(("k".into(), "v".into()));
        }
        if self.version == ProtocolVersion::V311 && !input.one_in(8) {
            properties = Properties::default();
        }
        let p = Publish {
            dup: input.one_in(8),
            qos,
            retain: input.one_in(4),
            topic: topic.into(),
            pkid: u16::from(input.u8()),
            properties: properties.into(),
            payload: Bytes::from(vec![b'p'; len]),
        };
        match self.conn.publish(p, self.now) {
            Ok(t) => assert!(self.issued.insert(t), "token {t:?} handed out twice"),
            Err((_, back)) => assert_eq!(
                back.topic.as_str(),
                topic,
                "the refused message is handed back"
            ),
        }
        self.after_call("publish");
    }

    /// A packet id: mostly one the client is using, sometimes a random one.
    fn pick_id(&mut self, input: &mut Input<'_>, broker_qos2: bool) -> u16 {
        let pool = if broker_qos2 {
            &self.broker_qos2_ids
        } else {
            &self.recent_pkids
        };
        if !pool.is_empty() && !input.one_in(5) {
            return pool[input.below(pool.len())];
        }
        match input.below(3) {
            0 => input.u16().max(1),
            _ => 1 + u16::from(input.u8() % 12),
        }
    }

    fn broker_connack(&mut self, input: &mut Input<'_>) {
        let mut ack = ConnAck {
            session_present: input.bool(),
            reason: ReasonCode::Success,
            properties: Props::new(),
        };
        if input.one_in(6) {
            let codes: &[u8] = match self.version {
                ProtocolVersion::V311 => &[0x84, 0x85, 0x86, 0x87, 0x88],
                ProtocolVersion::V5 => &[
                    0x80, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x95, 0x97, 0x9C,
                    0x9D, 0x9F,
                ],
            };
            ack.reason =
                ReasonCode::try_from(input.pick(codes)).unwrap_or(ReasonCode::UnspecifiedError);
            ack.session_present = false;
        }
        if self.version == ProtocolVersion::V5 {
            let p = &mut ack.properties;
            let flags = input.u16();
            if flags & 1 != 0 {
                p.receive_maximum = Some(1 + u16::from(input.u8() % 4));
            }
            if flags & 2 != 0 {
                p.server_keep_alive = Some(u16::from(input.u8() % 4));
            }
            if flags & 4 != 0 {
                p.assigned_client_identifier = Some("assigned".into());
            }
            if flags & 8 != 0 {
                p.maximum_qos = Some(input.u8() % 2);
            }
            if flags & 16 != 0 {
                p.retain_available = Some(0);
            }
            if flags & 32 != 0 {
                p.topic_alias_maximum = Some(u16::from(input.u8() % 4));
            }
            if flags & 64 != 0 {
                p.maximum_packet_size = Some(20 + u32::from(input.u8()));
            }
            if flags & 128 != 0 {
                p.server_reference = Some(input.pick(&["s3", "mqtt://u:p@s4:1", "%%"]).into());
            }
            if flags & 256 != 0 {
                p.subscription_identifier_available = Some(0);
            }
        }
        self.send_packet(input, Packet::ConnAck(ack));
    }

    fn ack_reason(&mut self, input: &mut Input<'_>, kind: u8) -> ReasonCode {
        if self.version == ProtocolVersion::V311 || !input.one_in(4) {
            return ReasonCode::Success;
        }
        let codes: &[u8] = if kind == 2 {
            &[0x92]
        } else {
            &[0x10, 0x80, 0x87, 0x97]
        };
        ReasonCode::try_from(input.pick(codes)).unwrap_or(ReasonCode::Success)
    }

    /// PUBACK (0), PUBREC (1) or PUBCOMP (2).
    fn broker_ack(&mut self, input: &mut Input<'_>, kind: u8) {
        let ids = self
            .link
            .as_ref()
            .map(|l| l.outstanding.keys().copied().collect())
            .unwrap_or_default();
        let pkid = self.pick_pending(input, ids);
        let reason = self.ack_reason(input, kind);
        let p = match kind {
            0 => Packet::PubAck(PubAck {
                reason,
                ..PubAck::new(pkid)
            }),
            1 => Packet::PubRec(PubRec {
                reason,
                ..PubRec::new(pkid)
            }),
            _ => Packet::PubComp(PubComp {
                reason,
                ..PubComp::new(pkid)
            }),
        };
        self.send_packet(input, p);
    }

    /// A packet id from `ids` (the link's pending requests of one kind) when there is one.
    fn pick_pending(&mut self, input: &mut Input<'_>, ids: Vec<u16>) -> u16 {
        if !ids.is_empty() && !input.one_in(4) {
            let mut ids = ids;
            ids.sort_unstable();
            return ids[input.below(ids.len())];
        }
        self.pick_id(input, false)
    }

    fn broker_suback(&mut self, input: &mut Input<'_>) {
        let ids = self
            .link
            .as_ref()
            .map(|l| l.subscribes.keys().copied().collect())
            .unwrap_or_default();
        let pkid = self.pick_pending(input, ids);
        let n = self
            .link
            .as_ref()
            .and_then(|l| l.subscribes.get(&pkid).copied())
            .unwrap_or(1 + input.below(3));
        let n = if input.one_in(16) { n + 1 } else { n };
        let reasons = (0..n)
            .map(|_| match input.below(6) {
                0 => ReasonCode::GrantedQoS1,
                1 => ReasonCode::GrantedQoS2,
                2 => ReasonCode::UnspecifiedError,
                3 if self.version == ProtocolVersion::V5 => ReasonCode::NotAuthorized,
                _ => ReasonCode::Success,
            })
            .collect();
        self.send_packet(
            input,
            Packet::SubAck(SubAck {
                pkid,
                reasons,
                properties: Props::new(),
            }),
        );
    }

    fn broker_unsuback(&mut self, input: &mut Input<'_>) {
        let ids = self
            .link
            .as_ref()
            .map(|l| l.unsubscribes.keys().copied().collect())
            .unwrap_or_default();
        let pkid = self.pick_pending(input, ids);
        let reasons = match self.version {
            ProtocolVersion::V311 => vec![],
            ProtocolVersion::V5 => {
                let n = self
                    .link
                    .as_ref()
                    .and_then(|l| l.unsubscribes.get(&pkid).copied())
                    .unwrap_or(1);
                (0..n)
                    .map(|_| {
                        if input.one_in(3) {
                            ReasonCode::NoSubscriptionExisted
                        } else {
                            ReasonCode::Success
                        }
                    })
                    .collect()
            }
        };
        self.send_packet(
            input,
            Packet::UnsubAck(UnsubAck {
                pkid,
                reasons,
                properties: Props::new(),
            }),
        );
    }

    fn broker_publish(&mut self, input: &mut Input<'_>) {
        let qos = input.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]);
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            QoS::ExactlyOnce if !self.broker_qos2_ids.is_empty() && input.bool() => {
                self.pick_id(input, true)
            }
            _ => 1 + u16::from(input.u8() % 10),
        };
        if qos == QoS::ExactlyOnce && !self.broker_qos2_ids.contains(&pkid) {
            self.broker_qos2_ids.push(pkid);
        }
        let mut p = Publish {
            dup: qos != QoS::AtMostOnce && input.bool(),
            qos,
            retain: input.one_in(4),
            topic: input.pick(&TOPICS).into(),
            pkid,
            properties: Props::new(),
            payload: Bytes::from_static(b"m"),
        };
        if self.version == ProtocolVersion::V5 && input.bool() {
            p.properties.topic_alias = Some(input.pick(&[1u16, 2, 3, 0, 20]));
            if input.bool() {
                p.topic = ByteStr::new();
            }
        }
        self.send_packet(input, Packet::Publish(p));
    }

    /// Encodes a broker packet and feeds it, whole or in two pieces.
    fn send_packet(&mut self, input: &mut Input<'_>, p: Packet) {
        let mut b = BytesMut::new();
        if p.encode(self.version, &mut b).is_err() {
            return;
        }
        if input.one_in(4) && b.len() > 1 {
            let cut = 1 + input.below(b.len() - 1);
            let (a, rest) = b.split_at(cut);
            let (a, rest) = (a.to_vec(), rest.to_vec());
            self.feed(&a);
            self.feed(&rest);
        } else {
            self.feed(&b);
        }
    }

    /// Feeds bytes from the broker, one complete packet per call (so the events of a call
    /// belong to one packet), as long as a transport is open.
    fn feed(&mut self, data: &[u8]) {
        let mut pending = data;
        loop {
            let Some(link) = self.link.as_mut() else {
                return;
            };
            // How many of `pending` complete the next packet in the client's buffer?
            let before = link.to_client.len();
            let mut probe = link.to_client.clone();
            probe.extend_from_slice(pending);
            let take = match Packet::decode(&mut probe, self.version, self.max_packet_size) {
                Ok(_) => {
                    let total = before + pending.len() - probe.len();
                    total - before
                }
                Err(DecodeError::Incomplete { .. }) => pending.len(),
                // The client closes on this one: give it all.
                Err(_) => pending.len(),
            };
            let (chunk, rest) = pending.split_at(take);
            if self.trace {
                eprintln!("    broker -> {chunk:02x?}");
            }
            link.to_client.extend_from_slice(chunk);
            let mut decoded = Vec::new();
            loop {
                match Packet::decode(&mut link.to_client, self.version, self.max_packet_size) {
                    Ok(p) => decoded.push(p),
                    Err(DecodeError::Incomplete { .. }) => break,
                    Err(_) => {
                        link.to_client.clear();
                        break;
                    }
                }
            }
            let now = self.now;
            self.conn.handle_input(chunk, now);
            // The broker's view first: what the client writes in answer (a PUBLISH after an
            // ack freed a slot, a SUBSCRIBE after CONNACK) is judged against it.
            for p in decoded {
                self.broker_sent(p);
            }
            self.after_call("input");
            pending = rest;
            if pending.is_empty() {
                return;
            }
        }
    }

    /// Updates the model after the client processed `p` from the broker.
    fn broker_sent(&mut self, p: Packet) {
        if self.trace {
            eprintln!("    (broker packet {p:?})");
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        match p {
            Packet::ConnAck(ack) if link.connack.is_none() && ack.reason.is_success() => {
                link.receive_maximum =
                    usize::from(ack.properties.receive_maximum.unwrap_or(u16::MAX).max(1));
                if !ack.session_present {
                    self.delivered_qos2.clear();
                }
                link.connack = Some(ack);
            }
            Packet::PubAck(a)
                if link
                    .outstanding
                    .get(&a.pkid)
                    .is_some_and(|(q, rec)| *q == QoS::AtLeastOnce || !*rec) =>
            {
                // QoS 1 done, or QoS 2 before PUBREC: a broker without QoS 2 took it at QoS 1
                // (the client fails it back and keeps the connection).
                link.outstanding.remove(&a.pkid);
            }
            Packet::PubRec(r) => {
                if let Some((q, rec)) = link.outstanding.get_mut(&r.pkid) {
                    if *q == QoS::ExactlyOnce {
                        if r.reason.is_success() {
                            *rec = true;
                        } else {
                            link.outstanding.remove(&r.pkid);
                        }
                    }
                }
            }
            Packet::PubComp(c)
                if link
                    .outstanding
                    .get(&c.pkid)
                    .is_some_and(|(q, rec)| *q == QoS::ExactlyOnce && *rec) =>
            {
                link.outstanding.remove(&c.pkid);
            }
            Packet::SubAck(s) => {
                link.subscribes.remove(&s.pkid);
            }
            Packet::UnsubAck(u) => {
                link.unsubscribes.remove(&u.pkid);
            }
            Packet::PubRel(r) => {
                self.delivered_qos2.remove(&r.pkid);
            }
            _ => {}
        }
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        let mut n = 0u32;
        while let Some(t) = self.conn.poll_timeout() {
            if t > target {
                break;
            }
            if t > self.now {
                self.now = t;
            }
            let now = self.now;
            self.conn.handle_timeout(now);
            self.after_call("timeout");
            if let Some(next) = self.conn.poll_timeout() {
                assert!(
                    next > now,
                    "busy loop at {:?}: next deadline {:?} in state {:?}",
                    self.elapsed(),
                    next - self.t0,
                    self.conn.state()
                );
            }
            n += 1;
            assert!(n < 200_000, "runaway timers");
        }
        if target > self.now {
            self.now = target;
        }
    }

    // ------------------------------------------------------------------------------------
    // Checks

    /// Drains everything the client produced, as a driver must after every call, and checks.
    fn after_call(&mut self, what: &str) {
        if self.trace {
            eprintln!(
                "[{:?}] {what} -> state {:?}",
                self.elapsed(),
                self.conn.state()
            );
        }
        // Output first: it belongs to the link that was open during the call.
        let mut written = BytesMut::new();
        while let Some(b) = self.conn.poll_transmit() {
            written.extend_from_slice(&b);
        }
        if !written.is_empty() {
            match self.link.as_mut() {
                Some(link) => {
                    link.from_client.extend_from_slice(&written);
                    self.decode_client(what);
                }
                None => panic!(
                    "{what}: {} bytes written with no transport open: {written:02x?}",
                    written.len()
                ),
            }
        }
        let mut connect_action = false;
        while let Some(a) = self.conn.poll_action() {
            if self.trace {
                eprintln!("    action {a:?}");
            }
            match a {
                Action::Close => {
                    self.pending_connect = false;
                    self.link = None;
                }
                Action::Connect { server } => {
                    assert!(
                        self.link.is_none(),
                        "{what}: Connect to {server} while a transport is open"
                    );
                    assert!(
                        !server.host().is_empty(),
                        "{what}: Connect to an empty host"
                    );
                    self.pending_connect = true;
                    connect_action = true;
                }
            }
        }
        let mut events = Vec::new();
        while let Some(e) = self.conn.poll_event() {
            if self.trace {
                eprintln!("    event {e:?}");
            }
            events.push(e);
        }
        for e in &events {
            match e {
                Event::PublishDone { token, .. } => {
                    assert!(
                        self.issued.contains(token),
                        "{what}: PublishDone for unknown {token:?}"
                    );
                    assert!(
                        self.done.insert(*token),
                        "{what}: {token:?} completed twice"
                    );
                }
                Event::SubscribeDone { token, .. } | Event::UnsubscribeDone { token, .. } => {
                    assert!(
                        self.sub_issued.contains(token),
                        "{what}: completion of unknown {token:?}"
                    );
                    assert!(
                        self.sub_done.insert(*token),
                        "{what}: {token:?} completed twice"
                    );
                }
                Event::Message { publish: p, .. } if p.qos == QoS::ExactlyOnce => {
                    assert!(
                        self.delivered_qos2.insert(p.pkid),
                        "{what}: QoS 2 packet id {} delivered twice",
                        p.pkid
                    );
                }
                Event::Message { publish: p, .. } => assert!(
                    !p.topic.is_empty(),
                    "{what}: message with an unresolved alias"
                ),
                Event::Lifecycle { at, event } => {
                    assert_eq!(*at, self.now, "{what}: event stamped with another time");
                    if let Lifecycle::Connected {
                        session_present: false,
                        ..
                    } = event
                    {
                        self.delivered_qos2.clear();
                    }
                }
                _ => {}
            }
        }
        let state = self.conn.state();
        if connect_action {
            assert_eq!(
                state,
                State::Connecting,
                "{what}: Connect action but state {state:?}"
            );
        }
        if self.last_state == State::Closed {
            assert_eq!(state, State::Closed, "{what}: left Closed");
        }
        self.last_state = state;
        self.check_state(what);
    }

    fn decode_client(&mut self, what: &str) {
        let version = self.version;
        let Some(link) = self.link.as_mut() else {
            return;
        };
        loop {
            let p = match Packet::decode(&mut link.from_client, version, u32::MAX) {
                Ok(p) => {
                    if self.trace {
                        eprintln!("    client -> {p:?}");
                    }
                    p
                }
                Err(DecodeError::Incomplete { .. }) => {
                    panic!(
                        "{what}: the client wrote a partial packet: {:02x?}",
                        &link.from_client[..]
                    )
                }
                Err(e) => panic!(
                    "{what}: the client wrote bytes the broker cannot decode: {e}: {:02x?}",
                    &link.from_client[..link.from_client.len().min(64)]
                ),
            };
            if !link.connect_seen {
                assert!(
                    matches!(p, Packet::Connect(_)),
                    "{what}: first packet is not CONNECT: {p:?}"
                );
                link.connect_seen = true;
            } else if let Packet::Connect(_) = p {
                panic!("{what}: CONNECT sent twice on one link");
            } else if link.connack.is_none() {
                assert!(
                    matches!(p, Packet::Disconnect(_)),
                    "{what}: {p:?} sent before CONNACK"
                );
            }
            // Section 3.2.2.3.6: no packet may exceed the broker's Maximum Packet Size.
            if let Some(max) = link
                .connack
                .as_ref()
                .and_then(|c| c.properties.maximum_packet_size)
            {
                let size = p.encoded_len(version).unwrap_or(usize::MAX);
                assert!(
                    size <= max as usize,
                    "{what}: {} of {size} bytes above the broker's {max}",
                    p.packet_type()
                );
            }
            let in_use = |l: &Link, id: u16| {
                l.outstanding.contains_key(&id)
                    || l.subscribes.contains_key(&id)
                    || l.unsubscribes.contains_key(&id)
            };
            match &p {
                Packet::Publish(pb) => {
                    let props = link
                        .connack
                        .as_ref()
                        .map(|c| c.properties.clone())
                        .unwrap_or_default();
                    let max_qos = props
                        .maximum_qos
                        .and_then(QoS::from_u8)
                        .unwrap_or(QoS::ExactlyOnce);
                    assert!(
                        pb.qos <= max_qos,
                        "{what}: QoS {:?} above the broker's maximum {max_qos:?}",
                        pb.qos
                    );
                    assert!(
                        !pb.retain || props.retain_available != Some(0),
                        "{what}: retain not available"
                    );
                    if let Some(max) = props.maximum_packet_size {
                        let size = Packet::Publish(pb.clone())
                            .encoded_len(version)
                            .unwrap_or(usize::MAX);
                        assert!(
                            size <= max as usize,
                            "{what}: PUBLISH of {size} bytes above the broker's {max}"
                        );
                    }
                    if let Some(alias) = pb.properties.topic_alias {
                        let max = props.topic_alias_maximum.unwrap_or(0);
                        assert!(
                            alias >= 1 && alias <= max,
                            "{what}: topic alias {alias} outside 1..={max}"
                        );
                        if pb.topic.is_empty() {
                            assert!(
                                link.aliases.contains(&alias),
                                "{what}: alias {alias} used before set"
                            );
                        } else {
                            link.aliases.insert(alias);
                        }
                    }
                    if pb.qos != QoS::AtMostOnce {
                        assert!(
                            !in_use(link, pb.pkid),
                            "{what}: packet id {} reused while in flight",
                            pb.pkid
                        );
                        link.outstanding.insert(pb.pkid, (pb.qos, false));
                        assert!(
                            link.outstanding.len() <= link.receive_maximum,
                            "{what}: {} QoS 1/2 PUBLISH outstanding, broker Receive Maximum {}",
                            link.outstanding.len(),
                            link.receive_maximum
                        );
                        remember(&mut self.recent_pkids, pb.pkid);
                    }
                }
                Packet::Subscribe(s) => {
                    assert!(
                        !in_use(link, s.pkid),
                        "{what}: SUBSCRIBE packet id {} in use",
                        s.pkid
                    );
                    link.subscribes.insert(s.pkid, s.filters.len());
                    remember(&mut self.recent_pkids, s.pkid);
                }
                Packet::Unsubscribe(u) => {
                    assert!(
                        !in_use(link, u.pkid),
                        "{what}: UNSUBSCRIBE packet id {} in use",
                        u.pkid
                    );
                    link.unsubscribes.insert(u.pkid, u.filters.len());
                    remember(&mut self.recent_pkids, u.pkid);
                }
                Packet::PubRel(r) => remember(&mut self.recent_pkids, r.pkid),
                _ => {}
            }
            if link.from_client.is_empty() {
                return;
            }
        }
    }

    fn check_state(&mut self, what: &str) {
        let ids = self.conn.inflight_pkids();
        let unique: HashSet<u16> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{what}: duplicate in-flight packet ids {ids:?}"
        );
        assert!(!ids.contains(&0), "{what}: packet id 0 in flight");
        if let Some(max) = self.conn.peer_receive_maximum() {
            assert!(
                self.conn.inflight_sent() <= usize::from(max),
                "{what}: {} in flight on the link, Receive Maximum {max}",
                self.conn.inflight_sent()
            );
        }
        let open = self.issued.len() - self.done.len();
        assert_eq!(
            self.conn.inflight_len() + self.conn.queued_len(),
            open,
            "{what}: accepted publications not conserved (in flight {} + queued {} != open tokens {open})",
            self.conn.inflight_len(),
            self.conn.queued_len()
        );
        let state = self.conn.state();
        let deadline = self.conn.poll_timeout();
        match state {
            State::Connecting | State::Backoff | State::Disconnecting => {
                assert!(
                    deadline.is_some(),
                    "{what}: {state:?} with no deadline: it would hang"
                )
            }
            State::Dormant | State::Failed | State::Closed => {
                assert!(
                    deadline.is_none(),
                    "{what}: {state:?} with a deadline {:?}",
                    deadline.map(|d| d - self.t0)
                )
            }
            State::Idle | State::Connected => {}
        }
        if state == State::Closed {
            self.check_closed();
        }
    }

    fn check_closed(&self) {
        assert_eq!(
            self.done.len(),
            self.issued.len(),
            "closed with publications not completed"
        );
        assert_eq!(
            self.sub_done.len(),
            self.sub_issued.len(),
            "closed with (un)subscribes not completed"
        );
        assert_eq!(self.conn.inflight_len(), 0);
        assert_eq!(self.conn.queued_len(), 0);
    }
}

fn remember(v: &mut Vec<u16>, id: u16) {
    if !v.contains(&id) {
        if v.len() >= 16 {
            v.remove(0);
        }
        v.push(id);
    }
}

/// A small deterministic generator for the smoke run: `n` byte strings from `seed`.
pub fn seeded_input(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}
