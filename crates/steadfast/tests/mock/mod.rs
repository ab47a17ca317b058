//! A deterministic harness for the driver: a [`Connector`] over in-memory streams, a scripted
//! broker on the other end, and tokio's paused clock.
//!
//! In the manner of h2's `mock`: the test plays the broker packet by packet, and virtual time
//! moves only when every task is idle (tokio's auto-advance) or when the test advances it. A
//! test can therefore prove that something does *not* happen within a span ("no PUBLISH for
//! 30 s") without sleeping on the wall clock, and a run is the same every time.
//!
//! ```ignore
//! let (connector, mut broker) = MockConnector::new();
//! let (client, events) = builder().connector(connector).build().unwrap();
//! let mut peer = broker.accept().await;
//! peer.expect_connect().await;
//! peer.connack(false).await;
//! ```

#![allow(dead_code)] // each test file uses a part

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use steadfast::transport::{BoxTransport, ConnectFuture, Connector};
use steadfast::{ClientBuilder, ProtocolVersion, ServerAddr};
use steadfast_proto::{
    ByteStr, ConnAck, Connect, Packet, Props, PubAck, Publish, QoS, ReasonCode, SubAck,
    TransportError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

/// What the next connect attempt meets.
#[derive(Debug, Clone)]
pub enum Plan {
    /// A transport opens; its far end goes to [`MockBroker::accept`].
    Accept,
    /// The connect fails with this error.
    Fail(TransportError),
}

/// Opens in-memory transports, following a script (default: accept every attempt).
#[derive(Clone)]
pub struct MockConnector {
    peers: mpsc::UnboundedSender<Peer>,
    plans: Arc<Mutex<VecDeque<Plan>>>,
    attempts: Arc<Mutex<Vec<String>>>,
    version: ProtocolVersion,
    capacity: usize,
}

/// The test's side: each accepted connect attempt arrives here as a [`Peer`].
pub struct MockBroker {
    peers: mpsc::UnboundedReceiver<Peer>,
    plans: Arc<Mutex<VecDeque<Plan>>>,
    attempts: Arc<Mutex<Vec<String>>>,
}

impl MockConnector {
    /// A connector for `version`, with 64 KiB in-memory pipes.
    pub fn new(version: ProtocolVersion) -> (MockConnector, MockBroker) {
        Self::with_capacity(version, 64 * 1024)
    }

    /// A connector whose pipes hold `capacity` bytes each way.
    pub fn with_capacity(version: ProtocolVersion, capacity: usize) -> (MockConnector, MockBroker) {
        let (tx, rx) = mpsc::unbounded_channel();
        let plans = Arc::new(Mutex::new(VecDeque::new()));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        (
            MockConnector {
                peers: tx,
                plans: plans.clone(),
                attempts: attempts.clone(),
                version,
                capacity,
            },
            MockBroker {
                peers: rx,
                plans,
                attempts,
            },
        )
    }
}

impl Connector for MockConnector {
    fn connect(&self, server: &ServerAddr) -> ConnectFuture {
        self.attempts
            .lock()
            .expect("attempts lock")
            .push(server.to_string());
        let plan = self
            .plans
            .lock()
            .expect("plans lock")
            .pop_front()
            .unwrap_or(Plan::Accept);
        match plan {
            Plan::Fail(e) => Box::pin(async move { Err(e) }),
            Plan::Accept => {
                let (near, far) = tokio::io::duplex(self.capacity);
                let _ = self.peers.send(Peer::new(far, self.version));
                Box::pin(async move { Ok(Box::new(near) as BoxTransport) })
            }
        }
    }
}

impl MockBroker {
    /// The next connect attempt's far end. Panics if the client stops trying (its connector
    /// was dropped).
    pub async fn accept(&mut self) -> Peer {
        self.peers
            .recv()
            .await
            .expect("the client made no more connect attempts")
    }

    /// The next connect attempt within `within` of virtual time, if any.
    pub async fn accept_within(&mut self, within: Duration) -> Option<Peer> {
        tokio::time::timeout(within, self.peers.recv())
            .await
            .ok()
            .flatten()
    }

    /// Queues what the next connect attempts meet (after this one, attempts are accepted).
    pub fn plan(&self, plan: Plan) {
        self.plans.lock().expect("plans lock").push_back(plan);
    }

    /// Drops the queued plans: from now on every attempt is accepted.
    pub fn clear_plans(&self) {
        self.plans.lock().expect("plans lock").clear();
    }

    /// The servers of every connect attempt so far.
    pub fn attempts(&self) -> Vec<String> {
        self.attempts.lock().expect("attempts lock").clone()
    }
}

/// The broker's end of one transport.
pub struct Peer {
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Peer {
    fn new(io: DuplexStream, version: ProtocolVersion) -> Peer {
        let (rd, wr) = tokio::io::split(io);
        Peer {
            rd,
            wr,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Splits off the writing half (for a task that floods while another reads).
    pub fn split(self) -> (PeerReader, PeerWriter) {
        (
            PeerReader {
                rd: self.rd,
                buf: self.buf,
                version: self.version,
            },
            PeerWriter {
                wr: self.wr,
                version: self.version,
            },
        )
    }

    /// The next packet from the client; `None` when it closed the transport.
    pub async fn recv(&mut self) -> Option<Packet> {
        read_packet(&mut self.rd, &mut self.buf, self.version).await
    }

    /// The next packet within `within` of virtual time: `Err(())` if none came in time,
    /// `Ok(None)` if the client closed the transport.
    pub async fn recv_within(&mut self, within: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(within, self.recv())
            .await
            .map_err(|_| ())
    }

    /// The next packet, which must be a CONNECT.
    pub async fn expect_connect(&mut self) -> Connect {
        match self.recv().await {
            Some(Packet::Connect(c)) => c,
            other => panic!("expected CONNECT, got {other:?}"),
        }
    }

    /// The next packet other than PINGREQ (answered with PINGRESP).
    pub async fn recv_answering_pings(&mut self) -> Option<Packet> {
        loop {
            match self.recv().await {
                Some(Packet::PingReq) => self.send(Packet::PingResp).await,
                other => return other,
            }
        }
    }

    /// Writes one packet. A client that closed its end is ignored (the test asserts on what
    /// the client did, not on this write).
    pub async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out)
            .expect("encodable test packet");
        let _ = self.wr.write_all(&out).await;
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.wr.write_all(bytes).await;
    }

    /// CONNACK Success.
    pub async fn connack(&mut self, session_present: bool) {
        self.send(connack(session_present, ReasonCode::Success))
            .await;
    }

    /// Reads the CONNECT and accepts it.
    pub async fn handshake(&mut self) -> Connect {
        let c = self.expect_connect().await;
        self.connack(false).await;
        c
    }

    /// Answers a SUBSCRIBE (the next non-ping packet) granting every filter at its QoS.
    pub async fn grant_subscribe(&mut self) {
        match self.recv_answering_pings().await {
            Some(Packet::Subscribe(s)) => {
                let reasons = s
                    .filters
                    .iter()
                    .map(|f| match f.options.qos {
                        QoS::AtMostOnce => ReasonCode::Success,
                        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
                    })
                    .collect();
                self.send(Packet::SubAck(SubAck {
                    pkid: s.pkid,
                    reasons,
                    properties: Props::new(),
                }))
                .await;
            }
            other => panic!("expected SUBSCRIBE, got {other:?}"),
        }
    }

    /// Closes the transport from the broker's side.
    pub async fn close(mut self) {
        let _ = self.wr.shutdown().await;
    }
}

/// The reading half of a split [`Peer`].
pub struct PeerReader {
    rd: ReadHalf<DuplexStream>,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl PeerReader {
    /// The next packet from the client; `None` when it closed the transport.
    pub async fn recv(&mut self) -> Option<Packet> {
        read_packet(&mut self.rd, &mut self.buf, self.version).await
    }
}

/// The writing half of a split [`Peer`].
pub struct PeerWriter {
    wr: WriteHalf<DuplexStream>,
    pub version: ProtocolVersion,
}

impl PeerWriter {
    /// Writes raw bytes; `false` once the client has closed its end.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
        self.wr.write_all(bytes).await.is_ok()
    }
}

async fn read_packet(
    rd: &mut ReadHalf<DuplexStream>,
    buf: &mut BytesMut,
    version: ProtocolVersion,
) -> Option<Packet> {
    loop {
        match Packet::decode(buf, version, u32::MAX) {
            Ok(p) => return Some(p),
            Err(steadfast_proto::DecodeError::Incomplete { .. }) => {}
            Err(e) => panic!("the client sent a malformed packet: {e:?}"),
        }
        let mut chunk = [0u8; 4096];
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A CONNACK with `reason`.
pub fn connack(session_present: bool, reason: ReasonCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        reason,
        properties: Props::new(),
    })
}

/// A PUBLISH from the broker.
pub fn publish(topic: &str, qos: QoS, pkid: u16, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteStr::from(topic.to_string()),
        pkid,
        properties: Props::new(),
        payload: bytes::Bytes::copy_from_slice(payload),
    })
}

/// The PUBACK for `pkid`.
pub fn puback(pkid: u16) -> Packet {
    Packet::PubAck(PubAck {
        pkid,
        reason: ReasonCode::Success,
        properties: Props::new(),
    })
}

/// Encodes packets back to back.
pub fn encode_all(version: ProtocolVersion, packets: &[Packet]) -> BytesMut {
    let mut out = BytesMut::new();
    for p in packets {
        p.encode(version, &mut out).expect("encodable test packet");
    }
    out
}

/// A builder for the mock: one server, the given version and keep-alive.
pub fn builder(connector: MockConnector, keep_alive: Duration) -> ClientBuilder {
    let version = connector.version;
    builder_with(connector, version, keep_alive)
}

/// [`builder`] over any connector.
pub fn builder_with(
    connector: impl Connector,
    version: ProtocolVersion,
    keep_alive: Duration,
) -> ClientBuilder {
    ClientBuilder::new()
        .server("mqtt://mock:1883")
        .client_id("mock-client")
        .protocol(version)
        .keep_alive(keep_alive)
        .connector(connector)
}

/// A transport whose read side is never empty: a CONNACK, then the same PUBLISH for ever,
/// as a broker flooding faster than the client reads. Like a socket, each read spends the
/// task's cooperative budget, so the driver yields now and then (and a test task can move the
/// clock) but always finds bytes waiting. What the client writes is decoded and kept, with
/// the virtual time it was written at.
pub struct FloodTransport {
    version: ProtocolVersion,
    connack: bytes::Bytes,
    packet: bytes::Bytes,
    cur: bytes::Bytes,
    wbuf: BytesMut,
    written: Arc<Mutex<Vec<(tokio::time::Instant, Packet)>>>,
}

/// Hands out one [`FloodTransport`]; later attempts fail.
pub struct FloodConnector {
    transport: Mutex<Option<FloodTransport>>,
}

impl FloodConnector {
    /// A flood of `flood` (a PUBLISH) on `version`; returns the connector and what the
    /// client wrote.
    #[allow(clippy::type_complexity)]
    pub fn new(
        version: ProtocolVersion,
        flood: Packet,
    ) -> (
        FloodConnector,
        Arc<Mutex<Vec<(tokio::time::Instant, Packet)>>>,
    ) {
        let written = Arc::new(Mutex::new(Vec::new()));
        let t = FloodTransport {
            version,
            connack: encode_all(version, &[connack(false, ReasonCode::Success)]).freeze(),
            packet: encode_all(version, &[flood]).freeze(),
            cur: bytes::Bytes::new(),
            wbuf: BytesMut::new(),
            written: written.clone(),
        };
        (
            FloodConnector {
                transport: Mutex::new(Some(t)),
            },
            written,
        )
    }
}

impl Connector for FloodConnector {
    fn connect(&self, _server: &ServerAddr) -> ConnectFuture {
        let t = self.transport.lock().expect("flood lock").take();
        Box::pin(async move {
            match t {
                Some(t) => Ok(Box::new(t) as BoxTransport),
                None => Err(TransportError::Closed),
            }
        })
    }
}

impl tokio::io::AsyncRead for FloodTransport {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let this = &mut *self;
        if !this.connack.is_empty() {
            this.cur = std::mem::take(&mut this.connack);
        }
        // One packet per read (the rest of one, or a whole one), so an application that keeps
        // reading keeps up and the read side stays the only thing that is always ready.
        if this.cur.is_empty() {
            this.cur = this.packet.clone();
        }
        let n = buf.remaining().min(this.cur.len());
        buf.put_slice(&this.cur.split_to(n));
        coop.made_progress();
        std::task::Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for FloodTransport {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        this.wbuf.extend_from_slice(data);
        while let Ok(p) = Packet::decode(&mut this.wbuf, this.version, u32::MAX) {
            this.written
                .lock()
                .expect("written lock")
                .push((tokio::time::Instant::now(), p));
        }
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
