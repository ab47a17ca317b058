//! Test harness for the sans-IO [`Connection`], modelled on quinn-proto's `tests/util.rs`
//! `Pair`: the test plays driver and broker, on a virtual clock.
//!
//! - Time only moves through [`Harness::advance`], which fires every deadline
//!   ([`Connection::poll_timeout`]) in order at its own instant, never skipping one.
//! - [`Harness::sent`] decodes what the client wrote, as the broker sees it.
//! - [`Harness::reply`] encodes a packet as the broker and feeds it to the client.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use steadfast_proto::backoff::{BackoffPolicy, Exponential, Jitter};
use steadfast_proto::event::Lifecycle;
use steadfast_proto::{
    Action, Config, ConnAck, Connection, Disconnect, Event, Packet, Properties, Props,
    ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, PublishError, PublishOutcome, QoS,
    ReasonCode, ServerAddr, State, SubAck, Subscribe, SubscribeFilter, Token, TransportError,
    Unsubscribe,
};

pub const SERVER: &str = "mqtt://broker:1883";

pub const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// A server URL that must parse.
pub fn server(url: &str) -> ServerAddr {
    ServerAddr::parse_url(url).unwrap()
}

/// A config for tests: one server, a pinned seed, the given version.
pub fn config(version: ProtocolVersion) -> Config {
    Config {
        protocol: version,
        servers: vec![server(SERVER)],
        client_id: "test-client".into(),
        ..Config::default()
    }
}

/// Exponential 1 s .. 60 s without jitter: delays 1, 2, 4, 8, 16, 32, 60, 60 ...
pub fn no_jitter() -> Box<dyn BackoffPolicy> {
    Box::new(Exponential::new(secs(1), secs(60)).jitter(Jitter::None))
}

pub struct Harness {
    pub conn: Connection,
    pub t0: Instant,
    pub now: Instant,
    pub version: ProtocolVersion,
    /// Bytes the client wrote that `sent()` has not decoded yet.
    tx: BytesMut,
}

impl Harness {
    pub fn new(config: Config) -> Harness {
        let t0 = Instant::now();
        let version = config.protocol;
        Harness {
            conn: Connection::new(config, t0),
            t0,
            now: t0,
            version,
            tx: BytesMut::new(),
        }
    }

    pub fn with_backoff(config: Config, backoff: Box<dyn BackoffPolicy>) -> Harness {
        let t0 = Instant::now();
        let version = config.protocol;
        Harness {
            conn: Connection::with_backoff(config, backoff),
            t0,
            now: t0,
            version,
            tx: BytesMut::new(),
        }
    }

    pub fn v(version: ProtocolVersion) -> Harness {
        Harness::with_backoff(config(version), no_jitter())
    }

    /// Time since the harness was created.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    // ------------------------------------------------------------------------------------
    // Time

    /// Moves virtual time forward by `d`, calling `handle_timeout` at each deadline that falls
    /// within, in order, at the deadline's own instant.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        self.advance_to(target);
    }

    pub fn advance_to(&mut self, target: Instant) {
        let mut guard = 0u32;
        while let Some(t) = self.conn.poll_timeout() {
            if t > target {
                break;
            }
            if t > self.now {
                self.now = t;
            }
            self.conn.handle_timeout(self.now);
            if let Some(next) = self.conn.poll_timeout() {
                assert!(
                    next > self.now,
                    "busy loop: after handle_timeout({:?}) the next deadline is {:?}",
                    self.now - self.t0,
                    next - self.t0
                );
            }
            guard += 1;
            assert!(guard < 1_000_000, "too many timeouts");
        }
        if target > self.now {
            self.now = target;
        }
    }

    /// Like [`Harness::advance`], with a broker that answers every PINGREQ at once (other
    /// packets the client writes meanwhile are dropped).
    pub fn advance_answering_pings(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(t) = self.conn.poll_timeout() {
            if t > target {
                break;
            }
            self.advance_to(t);
            if self.sent().contains(&Packet::PingReq) {
                self.reply(Packet::PingResp);
            }
        }
        self.advance_to(target);
    }

    /// Fires whatever is due now (time does not move).
    pub fn run_until_idle(&mut self) {
        self.advance(Duration::ZERO);
    }

    /// The next deadline, relative to now.
    pub fn timeout_in(&self) -> Option<Duration> {
        self.conn
            .poll_timeout()
            .map(|t| t.saturating_duration_since(self.now))
    }

    /// Advances exactly to the next deadline and fires it. Panics if there is none.
    pub fn advance_to_next_timeout(&mut self) -> Duration {
        let t = self.conn.poll_timeout().expect("a deadline");
        let d = t.saturating_duration_since(self.now);
        self.advance_to(t);
        d
    }

    // ------------------------------------------------------------------------------------
    // Driver side

    pub fn start(&mut self) {
        self.conn.start(self.now);
    }

    pub fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.conn.poll_action()).collect()
    }

    /// The next action other than `Close` (a driver closes the old link first) must be
    /// `Connect`; returns its server.
    pub fn expect_connect_action(&mut self) -> ServerAddr {
        loop {
            match self.conn.poll_action() {
                Some(Action::Close) => continue,
                Some(Action::Connect { server }) => return server,
                None => panic!("expected a Connect action, got none"),
            }
        }
    }

    /// Drops pending actions and returns whether any of them was a `Connect`.
    pub fn any_connect_action(&mut self) -> bool {
        self.actions()
            .iter()
            .any(|a| matches!(a, Action::Connect { .. }))
    }

    /// The transport opens. Bytes the client wrote before went to the previous transport (a
    /// driver flushes them on `Action::Close`): they are dropped from what `sent()` returns.
    pub fn open(&mut self) {
        while self.conn.poll_transmit().is_some() {}
        self.tx.clear();
        self.conn.handle_transport_open(self.now);
    }

    pub fn transport_error(&mut self, e: TransportError) {
        self.conn.handle_transport_error(e, self.now);
    }

    pub fn io_error(&mut self) {
        self.transport_error(TransportError::Io("connection reset".into()));
    }

    // ------------------------------------------------------------------------------------
    // Broker side

    /// Everything the client wrote since the last call, decoded as the broker sees it.
    pub fn sent(&mut self) -> Vec<Packet> {
        while let Some(b) = self.conn.poll_transmit() {
            self.tx.extend_from_slice(&b);
        }
        let mut out = Vec::new();
        while !self.tx.is_empty() {
            match Packet::decode(&mut self.tx, self.version, u32::MAX) {
                Ok(p) => out.push(p),
                Err(e) => panic!(
                    "client wrote bytes the broker cannot decode: {e} ({:02x?})",
                    &self.tx[..]
                ),
            }
        }
        out
    }

    /// Raw bytes the client wrote since the last call.
    pub fn sent_bytes(&mut self) -> Bytes {
        while let Some(b) = self.conn.poll_transmit() {
            self.tx.extend_from_slice(&b);
        }
        self.tx.split().freeze()
    }

    pub fn encode(&self, p: &Packet) -> BytesMut {
        let mut b = BytesMut::new();
        p.encode(self.version, &mut b)
            .unwrap_or_else(|e| panic!("cannot encode {p:?}: {e}"));
        b
    }

    pub fn reply(&mut self, p: Packet) {
        let b = self.encode(&p);
        self.conn.handle_input(&b, self.now);
    }

    pub fn reply_bytes(&mut self, b: &[u8]) {
        self.conn.handle_input(b, self.now);
    }

    pub fn connack(&mut self, session_present: bool, reason: ReasonCode, properties: Properties) {
        self.reply(Packet::ConnAck(ConnAck {
            session_present,
            reason,
            properties: properties.into(),
        }));
    }

    pub fn server_disconnect(&mut self, reason: ReasonCode, properties: Properties) {
        self.reply(Packet::Disconnect(Disconnect {
            reason,
            properties: properties.into(),
        }));
    }

    pub fn puback(&mut self, pkid: u16) {
        self.reply(Packet::PubAck(PubAck::new(pkid)));
    }

    pub fn pubrec(&mut self, pkid: u16) {
        self.reply(Packet::PubRec(PubRec::new(pkid)));
    }

    pub fn pubrel(&mut self, pkid: u16) {
        self.reply(Packet::PubRel(PubRel::new(pkid)));
    }

    pub fn pubcomp(&mut self, pkid: u16) {
        self.reply(Packet::PubComp(PubComp::new(pkid)));
    }

    pub fn suback(&mut self, pkid: u16, reasons: Vec<ReasonCode>) {
        self.reply(Packet::SubAck(SubAck {
            pkid,
            reasons,
            properties: Props::new(),
        }));
    }

    /// Expects a Connect action, opens the transport, checks the CONNECT and answers with a
    /// successful CONNACK. Returns the CONNECT.
    pub fn connect_with(
        &mut self,
        session_present: bool,
        props: Properties,
    ) -> steadfast_proto::Connect {
        self.expect_connect_action();
        self.open();
        let connect = match self.sent().as_slice() {
            [Packet::Connect(c)] => c.clone(),
            other => panic!("expected one CONNECT, got {other:?}"),
        };
        self.connack(session_present, ReasonCode::Success, props);
        assert_eq!(self.conn.state(), State::Connected, "{:?}", self.events());
        connect
    }

    pub fn connect(&mut self, session_present: bool) -> steadfast_proto::Connect {
        self.connect_with(session_present, Properties::default())
    }

    /// start() + connect(false) + drain events and packets.
    pub fn connected(&mut self) {
        self.start();
        self.connect(false);
        self.events();
        self.sent();
    }

    /// Drops the link with an I/O error and reconnects at the scheduled instant.
    pub fn drop_and_reconnect(&mut self, session_present: bool) {
        self.io_error();
        self.advance_to_next_timeout();
        self.connect(session_present);
    }

    // ------------------------------------------------------------------------------------
    // Application side

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Drains the events and keeps the lifecycle ones.
    pub fn lifecycle(&mut self) -> Vec<Lifecycle> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Lifecycle { event, .. } => Some(event),
                _ => None,
            })
            .collect()
    }

    /// Drains the events and keeps the publish completions.
    pub fn publish_done(&mut self) -> Vec<(Token, Result<PublishOutcome, PublishError>)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::PublishDone { token, result } => Some((token, result)),
                _ => None,
            })
            .collect()
    }

    pub fn publish(&mut self, topic: &str, qos: QoS, payload: &str) -> Token {
        self.conn
            .publish(message(topic, qos, payload), self.now)
            .unwrap_or_else(|(e, _)| panic!("publish failed: {e}"))
    }

    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> Token {
        self.conn
            .subscribe(
                vec![SubscribeFilter::new(filter, qos)],
                Properties::default(),
                self.now,
            )
            .expect("subscribe")
    }
}

pub fn message(topic: &str, qos: QoS, payload: &str) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        pkid: 0,
        properties: Props::new(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

/// The `Reconnecting` delays among `events`.
pub fn delays(events: &[Lifecycle]) -> Vec<Duration> {
    events
        .iter()
        .filter_map(|e| match e {
            Lifecycle::Reconnecting { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect()
}

pub fn publishes(packets: &[Packet]) -> Vec<Publish> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

pub fn names(events: &[Lifecycle]) -> Vec<&'static str> {
    events.iter().map(Lifecycle::name).collect()
}

/// The SUBSCRIBE packets among `packets`.
pub fn subscribes(packets: &[Packet]) -> Vec<Subscribe> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Subscribe(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// The UNSUBSCRIBE packets among `packets`.
pub fn unsubscribes(packets: &[Packet]) -> Vec<Unsubscribe> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Unsubscribe(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}
