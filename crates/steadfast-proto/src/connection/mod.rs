//! The connection and session state machine.
//!
//! A [`Connection`] outlives transports: it is the client's whole life, across every reconnect.
//! It never reads the clock and never touches a socket. The driver calls it like this:
//!
//! - [`Connection::start`] once, then whenever [`Connection::poll_action`] returns
//!   [`Action::Connect`], it opens a transport to that server and reports
//!   [`Connection::handle_transport_open`] or [`Connection::handle_transport_error`];
//!   on [`Action::Close`] it flushes what it has to write and drops the transport.
//! - Bytes read go to [`Connection::handle_input`]; bytes to write come from
//!   [`Connection::poll_transmit`]; a read error or EOF goes to
//!   [`Connection::handle_transport_error`].
//! - It sleeps until [`Connection::poll_timeout`] and then calls [`Connection::handle_timeout`].
//! - After every call it drains [`Connection::poll_event`], `poll_action` and `poll_transmit`.
//!
//! Every method that can change state takes `now`.
//!
//! # Layout
//! The [`Connection`] struct, its public driver interface and the packet dispatch are here;
//! each rule of the behaviour spec lives in the module of its own concern (see
//! `docs/architecture.md`):
//!
//! - `reconnect`: the pure reconnect decision ([`Reconnect`](reconnect::Reconnect) owns the
//!   attempt count, backoff, jitter generator, slow-down floor, redirects and server list);
//! - `handshake`: CONNECT / CONNACK, enhanced authentication, re-authentication;
//! - `outgoing`: the publish flow and its one acknowledgement path;
//! - `incoming`: received messages and QoS 2 exactly once;
//! - `requests`: subscribe, unsubscribe, splitting, resubscription;
//! - `closing`: disconnect, drain, protocol violations.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::backoff::BackoffPolicy;
use crate::codec::DecodeError;
use crate::config::Config;
use crate::error::{
    AckError, CommandError, Initiator, InvalidCommand, InvalidMessage, PublishError, Reason,
    TransportError,
};
use crate::event::{Event, Granted, Lifecycle, PublishOutcome, State, Token};
use crate::policy::{classify, ReasonClass};
use crate::rng::Xoshiro256;
use crate::session::acks::{AckToken, HeldAcks};
use crate::session::inflight::{Inflight, OutState, Outgoing};
use crate::session::offline::{OfflineQueue, Overflow, Queued};
use crate::session::persist::{OutgoingState, SessionSnapshot, StoreOp};
use crate::session::pkid::{IdMap, Owner, PkidPool};
use crate::session::subscriptions::{Registry, Subscription};
use crate::timer::{Timer, TimerTable};
use crate::topic::{TopicFilter, TopicName};
use crate::{
    Auth, ByteStr, ConnAck, Connect, Disconnect, Packet, Properties, Props, ProtocolVersion,
    PubAck, PubComp, PubRec, PubRel, Publish, QoS, ReasonCode, ServerAddr, SubAck, Subscribe,
    SubscribeFilter, UnsubAck, Unsubscribe,
};

mod closing;
mod handshake;
mod incoming;
mod outgoing;
mod reconnect;
mod requests;

use outgoing::{FinalAck, Suspect};
use reconnect::Reconnect;
use requests::{Request, Resubscribing, Splits};

/// What the driver must do with transports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a transport to this server (as configured, or from a redirect's Server Reference).
    Connect {
        /// The server. Its credentials are the core's business (they go into CONNECT); the
        /// transport needs scheme, host, port and path.
        server: ServerAddr,
    },
    /// Flush pending output, then close the current transport.
    Close,
}

/// Overrides how a refusal or a disconnect is treated: given the reason and the class the spec
/// table assigns, return the class to act on. For example, map `Fatal` to `Transient` after
/// refreshing credentials, or `Takeover` to `Fatal` to stop when another client takes the id.
pub type ReasonHook = Box<dyn FnMut(&Reason, ReasonClass) -> ReasonClass + Send>;

/// Fresh credentials (user name, password), asked for before every connect attempt. With a
/// provider installed, a "bad user name or password" / "not authorized" refusal is retried once
/// with newly provided credentials before it counts as fatal, so a token that expired while
/// offline is replaced instead of stopping the client.
pub type CredentialsProvider = Box<dyn FnMut() -> (Option<ByteStr>, Option<Bytes>) + Send>;

/// MQTT 5 enhanced authentication (section 4.12): answers the broker's AUTH challenges.
/// It runs inside the state machine, so it must not block; compute or look up the answer.
pub trait Authenticator: Send {
    /// The Authentication Method (for example `SCRAM-SHA-1`).
    fn method(&self) -> ByteStr;
    /// Authentication Data for CONNECT, or for an AUTH 0x19 that starts a re-authentication.
    fn start(&mut self) -> Option<Bytes>;
    /// Answers an AUTH 0x18 (continue authentication) challenge; `Err` aborts the exchange.
    fn challenge(&mut self, data: Option<&Bytes>) -> Result<Option<Bytes>, String>;
    /// The broker accepted (CONNACK or AUTH 0x00), with its final data if any.
    fn success(&mut self, _data: Option<&Bytes>) {}
}

/// Options of a graceful disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectOptions {
    /// MQTT 5 reason code: `Success` (normal), or `DisconnectWithWillMessage` (0x04) to have the
    /// broker publish the will.
    pub reason: ReasonCode,
    /// MQTT 5: a new Session Expiry Interval.
    pub session_expiry_interval: Option<u32>,
}

impl Default for DisconnectOptions {
    fn default() -> Self {
        DisconnectOptions {
            reason: ReasonCode::Success,
            session_expiry_interval: None,
        }
    }
}

/// The properties of a packet the client may strip of its Reason String and User Properties to
/// fit the receiver's Maximum Packet Size (sections 3.4.2.2 to 3.7.2.2, 3.14.2.2, 3.15.2.2).
fn diagnostics(p: &mut Packet) -> Option<&mut Properties> {
    match p {
        Packet::PubAck(a) => a.properties.get_mut(),
        Packet::PubRec(a) => a.properties.get_mut(),
        Packet::PubRel(a) => a.properties.get_mut(),
        Packet::PubComp(a) => a.properties.get_mut(),
        Packet::Disconnect(d) => d.properties.get_mut(),
        Packet::Auth(a) => a.properties.get_mut(),
        _ => None,
    }
}

/// Per-transport state: created on transport open, dropped on close.
#[derive(Debug)]
struct Link {
    server: ServerAddr,
    connected_at: Option<Instant>,
    last_sent: Instant,
    last_recv: Instant,
    ping_outstanding: bool,
    keep_alive: Duration,
    ping_timeout: Duration,
    receive_maximum: u16,
    max_packet_size: Option<u32>,
    max_qos: QoS,
    retain_available: bool,
    sub_ids_available: bool,
    topic_alias_max: u16,
    out_aliases: std::collections::HashMap<ByteStr, u16>,
    next_out_alias: u16,
    in_aliases: IdMap<u16, ByteStr>,
    server_reference: Option<ByteStr>,
    /// A re-authentication (AUTH 0x19) is under way.
    reauthenticating: bool,
}

/// MQTT 5 connect attempts in a row that the broker closes before CONNACK, on a client that has
/// never been connected, after which the client stops with `Fatal` (see
/// [`Reason::ClosedBeforeConnack`]).
pub const CLOSED_BEFORE_CONNACK_FATAL: u32 = 3;

/// The client's state machine: connection lifecycle plus session state.
///
/// ```
/// use std::time::Instant;
/// use steadfast_proto::{Action, Config, Connection};
///
/// let now = Instant::now();
/// let mut conn = Connection::new(Config::default(), now);
/// conn.start(now);
/// assert!(matches!(conn.poll_action(), Some(Action::Connect { .. })));
/// conn.handle_transport_open(now);
/// let connect_bytes = conn.poll_transmit().unwrap();
/// assert_eq!(connect_bytes[0], 0x10); // CONNECT
/// ```
pub struct Connection {
    config: Config,
    reconnect: Reconnect,
    hook: Option<ReasonHook>,
    credentials: Option<CredentialsProvider>,
    credentials_retried: bool,
    authenticator: Option<Box<dyn Authenticator>>,
    state: State,
    timers: TimerTable,
    rx: BytesMut,
    tx: BytesMut,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    link: Option<Link>,
    /// Connect attempts in a row that ended with the broker closing before CONNACK.
    closed_before_connack: u32,
    // session
    client_id: ByteStr,
    connected_once: bool,
    pkids: PkidPool,
    inflight: Inflight,
    queue: OfflineQueue,
    registry: Registry,
    requests: VecDeque<Request>,
    sent_requests: IdMap<u16, Request>,
    incoming_qos2: HashSet<u16>,
    /// Incoming QoS 1/2 messages held for the application (only with `manual_acks`).
    held: HeldAcks,
    next_token: u64,
    next_sub_id: u32,
    disconnect: Option<DisconnectOptions>,
    splits: Splits,
    resubscribing: Option<Box<Resubscribing>>,
    /// Outgoing QoS 1/2 messages in flight at most (before the broker's Receive Maximum):
    /// [`Config::inflight_window`], shrunk when a 3.1.1 broker keeps cutting the connection
    /// with several messages in flight.
    inflight_window: u16,
    /// Cuts in a row by a 3.1.1 broker, before `stable_after`, with several messages in flight.
    window_cuts: u32,
    suspect: Option<Suspect>,
}

impl core::fmt::Debug for Connection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state)
            .field("attempt", &self.reconnect.attempt())
            .field("inflight", &self.inflight.len())
            .field("queued", &self.queue.len())
            .field("subscriptions", &self.registry.len())
            .finish_non_exhaustive()
    }
}

const PROTOCOL_MAX_REMAINING: u32 = 268_435_455;

/// Permanent redirects never grow the server list beyond this.
const MAX_SERVERS: usize = 64;
impl Connection {
    /// A connection in state `Idle` with the default backoff
    /// ([`default_policy`](crate::backoff::default_policy): exponential, rising decorrelated
    /// jitter, 1 s to 60 s).
    pub fn new(config: Config, _now: Instant) -> Self {
        Self::with_backoff(config, Box::new(crate::backoff::default_policy()))
    }

    /// A connection with a chosen backoff policy.
    pub fn with_backoff(config: Config, backoff: Box<dyn BackoffPolicy>) -> Self {
        let reconnect = Reconnect::new(&config, backoff);
        let client_id = config.client_id.clone();
        let inflight_window = config.inflight_window();
        Connection {
            config,
            reconnect,
            hook: None,
            credentials: None,
            credentials_retried: false,
            authenticator: None,
            state: State::Idle,
            timers: TimerTable::default(),
            rx: BytesMut::new(),
            tx: BytesMut::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            link: None,
            closed_before_connack: 0,
            client_id,
            connected_once: false,
            pkids: PkidPool::default(),
            inflight: Inflight::default(),
            queue: OfflineQueue::default(),
            registry: Registry::default(),
            requests: VecDeque::new(),
            sent_requests: IdMap::default(),
            incoming_qos2: HashSet::new(),
            held: HeldAcks::default(),
            next_token: 0,
            next_sub_id: 0,
            disconnect: None,
            splits: Splits::default(),
            resubscribing: None,
            inflight_window,
            window_cuts: 0,
            suspect: None,
        }
    }

    /// Restores a session a durable store kept (call before [`Connection::start`]): the client
    /// id, the subscription registry, the offline queue, in-flight messages with their packet
    /// ids and states (resent after the connect, or republished if the broker lost the session),
    /// and incoming QoS 2 packet ids awaiting PUBREL (so exactly-once holds across a restart).
    /// The next connect resumes the session (MQTT 5 Clean Start 0).
    pub fn restore(&mut self, snapshot: SessionSnapshot, now: Instant) {
        if let Some(id) = snapshot.client_id.filter(|id| !id.is_empty()) {
            self.client_id = id;
        }
        for mut sub in snapshot.subscriptions {
            sub.confirmed = true;
            if let Some(id) = sub.id {
                self.next_sub_id = self.next_sub_id.max(id);
            }
            self.registry.insert(sub);
        }
        let mut outgoing = snapshot.outgoing;
        outgoing.sort_by_key(|o| o.id);
        for o in outgoing {
            self.next_token = self.next_token.max(o.id);
            let token = Token(o.id);
            let mut publish = o.publish;
            publish.dup = false;
            let (pkid, state) = match o.state {
                OutgoingState::Queued => {
                    publish.pkid = 0;
                    self.queue.push_back(Queued {
                        token,
                        publish,
                        queued_at: now,
                    });
                    continue;
                }
                OutgoingState::AwaitPubAck(p) => (p, OutState::AwaitPubAck),
                OutgoingState::AwaitPubRec(p) => (p, OutState::AwaitPubRec),
                OutgoingState::AwaitPubComp(p) => (p, OutState::AwaitPubComp),
            };
            if pkid == 0 || self.pkids.owner(pkid).is_some() {
                // A damaged record: send it again as a new publication rather than lose it.
                publish.pkid = 0;
                self.queue.push_back(Queued {
                    token,
                    publish,
                    queued_at: now,
                });
                continue;
            }
            publish.pkid = pkid;
            let seq = self.inflight.next_seq();
            self.pkids.claim(pkid, Owner::Publish(seq));
            self.inflight.push(Outgoing {
                token,
                publish,
                state,
                sent: false,
            });
        }
        self.incoming_qos2.extend(snapshot.incoming_qos2);
        self.connected_once = true;
    }

    /// Installs a hook that may override how refusals and disconnects are classified.
    pub fn set_reason_hook(&mut self, hook: ReasonHook) {
        self.hook = Some(hook);
    }

    // ----------------------------------------------------------------------------------------
    // Queries

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The client identifier in use (the broker's assigned one once it assigned one).
    pub fn client_id(&self) -> &ByteStr {
        &self.client_id
    }

    /// Messages in flight (sent or waiting to be resent, unacknowledged).
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// In-flight messages sent on the current connection: never above the broker's Receive
    /// Maximum.
    pub fn inflight_sent(&self) -> usize {
        self.inflight.sent_count()
    }

    /// Packet ids of the outgoing messages in flight, in original order. (feature `testkit`: tests only)
    #[cfg(feature = "testkit")]
    pub fn inflight_pkids(&self) -> Vec<u16> {
        self.inflight.iter().map(|(_, o)| o.publish.pkid).collect()
    }

    /// The broker's Receive Maximum on the current connection.
    pub fn peer_receive_maximum(&self) -> Option<u16> {
        self.link
            .as_ref()
            .filter(|l| l.connected_at.is_some())
            .map(|l| l.receive_maximum)
    }

    /// Messages waiting in the offline queue.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// True when a publish of `cost` bytes (topic + payload) would fit in the offline queue now.
    pub fn queue_has_room(&self, cost: usize) -> bool {
        self.queue.has_room(cost, &self.config.queue)
    }

    /// True when `publish` would fit in the offline queue now (its cost as the queue counts
    /// it, [`cost_of`](crate::session::offline::cost_of)): the test a backpressured publish
    /// waits on.
    pub fn queue_has_room_for(&self, publish: &Publish) -> bool {
        self.queue_has_room(crate::session::offline::cost_of(publish))
    }

    /// The subscription registry.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Subscription> {
        self.registry.iter()
    }

    /// Filters registered with the MQTT 5 subscription identifier `id`. (feature `testkit`: tests only)
    #[cfg(feature = "testkit")]
    pub fn filters_for_subscription_id(&self, id: u32) -> Vec<ByteStr> {
        self.registry.by_id(id).map(|s| s.filter.clone()).collect()
    }

    /// Incoming QoS 2 packet ids awaiting PUBREL. (feature `testkit`: tests only)
    #[cfg(feature = "testkit")]
    pub fn incoming_qos2_pending(&self) -> usize {
        self.incoming_qos2.len()
    }

    // ----------------------------------------------------------------------------------------
    // Driver interface

    /// Starts the first connect attempt. The first connect is retried like any other.
    pub fn start(&mut self, now: Instant) {
        if self.state == State::Idle {
            self.begin_attempt(now);
        }
    }

    /// The next thing the driver must do with transports.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes encoded and not yet taken by [`Connection::poll_transmit`] (the driver holds new
    /// publishes back while too much waits to be written).
    pub fn pending_transmit(&self) -> usize {
        self.tx.len()
    }

    /// Bytes to write to the transport, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if self.tx.is_empty() {
            None
        } else {
            Some(self.tx.split().freeze())
        }
    }

    /// The earliest instant at which [`Connection::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let ka = self.keep_alive_deadline();
        match (self.timers.earliest(), ka) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn keep_alive_deadline(&self) -> Option<Instant> {
        let link = self.link.as_ref()?;
        link.connected_at?;
        if link.keep_alive.is_zero() || link.ping_outstanding {
            return None;
        }
        Some(link.last_sent.min(link.last_recv) + link.keep_alive)
    }

    /// The transport to the server of the last [`Action::Connect`] is open: send CONNECT.
    pub fn handle_transport_open(&mut self, now: Instant) {
        if self.state != State::Connecting || self.link.is_some() {
            return;
        }
        let server = self.reconnect.current_server();
        self.rx.clear();
        self.held.new_link();
        self.link = Some(Link {
            server,
            connected_at: None,
            last_sent: now,
            last_recv: now,
            ping_outstanding: false,
            keep_alive: self.config.keep_alive,
            ping_timeout: self.config.ping_timeout_for(self.config.keep_alive),
            receive_maximum: u16::MAX,
            max_packet_size: None,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            sub_ids_available: true,
            topic_alias_max: 0,
            out_aliases: std::collections::HashMap::new(),
            next_out_alias: 0,
            in_aliases: IdMap::default(),
            server_reference: None,
            reauthenticating: false,
        });
        if let Some(provider) = self.credentials.as_mut() {
            let (user, pass) = provider();
            self.config.username = user;
            self.config.password = pass;
        }
        let connect = self.build_connect();
        if let Err(e) = Packet::Connect(connect).encode(self.config.protocol, &mut self.tx) {
            let reason = Reason::ProtocolViolation {
                code: ReasonCode::ImplementationSpecificError,
                detail: format!("cannot encode CONNECT: {e}"),
            };
            self.attempt_failed(reason, now);
        }
    }

    /// The transport failed: a connect error, a read/write error, or EOF.
    pub fn handle_transport_error(&mut self, error: TransportError, now: Instant) {
        match self.state {
            // EOF after the CONNECT went out (the transport is open), before any CONNACK.
            State::Connecting if error == TransportError::Closed && self.link.is_some() => {
                self.closed_before_connack = self.closed_before_connack.saturating_add(1);
                let reason = Reason::ClosedBeforeConnack {
                    protocol: self.config.protocol,
                    consecutive: self.closed_before_connack,
                };
                self.attempt_failed(reason, now);
            }
            State::Connecting => self.attempt_failed(Reason::Transport(error), now),
            State::Connected | State::Disconnecting => {
                if self.link.as_ref().is_some_and(|l| l.connected_at.is_none()) {
                    self.attempt_failed(Reason::Transport(error), now)
                } else {
                    self.connection_lost(Reason::Transport(error), now)
                }
            }
            _ => {}
        }
    }

    /// Bytes arrived that the driver has not handed over yet: it holds them undecoded while
    /// the application is behind on its messages. They prove the link alive as a packet
    /// would (an outstanding ping is answered by them), so a slow application is not
    /// mistaken for a dead link; and a dead link is still found, since silence brings no
    /// bytes. The ping deadline never depends on the application.
    pub fn handle_liveness(&mut self, now: Instant) {
        if let Some(link) = self.link.as_mut() {
            link.last_recv = now;
            link.ping_outstanding = false;
            self.timers.stop(Timer::PingResp);
        }
    }

    /// Bytes read from the transport.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if self.link.is_none() {
            return;
        }
        self.rx.extend_from_slice(data);
        self.process_input(now);
    }

    /// The buffer the driver may read into directly (then call [`Connection::process_input`]),
    /// which saves a copy.
    pub fn read_buffer(&mut self) -> &mut BytesMut {
        &mut self.rx
    }

    /// Decodes and handles whatever complete packets the read buffer holds.
    pub fn process_input(&mut self, now: Instant) {
        let max = self.config.maximum_packet_size;
        loop {
            if self.link.is_none() {
                self.rx.clear();
                return;
            }
            match Packet::decode(&mut self.rx, self.config.protocol, max) {
                Ok(packet) => {
                    if let Some(link) = self.link.as_mut() {
                        link.last_recv = now;
                        link.ping_outstanding = false;
                    }
                    self.timers.stop(Timer::PingResp);
                    self.handle_packet(packet, now);
                }
                Err(DecodeError::Incomplete { .. }) => return,
                Err(DecodeError::TooLarge { size, max }) => {
                    self.protocol_violation(
                        ReasonCode::PacketTooLarge,
                        format!("packet of {size} bytes exceeds our maximum packet size {max}"),
                        now,
                    );
                    return;
                }
                Err(DecodeError::Malformed(m)) => {
                    self.protocol_violation(m.reason_code(), m.to_string(), now);
                    return;
                }
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.is_expired(Timer::Connect, now) {
            self.timers.stop(Timer::Connect);
            if self.state == State::Connecting
                || self.link.as_ref().is_some_and(|l| l.connected_at.is_none())
            {
                self.attempt_failed(Reason::ConnectTimeout(self.config.connect_timeout), now);
            }
        }
        if self.timers.is_expired(Timer::PingResp, now) {
            self.timers.stop(Timer::PingResp);
            if let Some(pt) = self.link.as_ref().map(|l| l.ping_timeout) {
                self.connection_lost(Reason::KeepAliveTimeout(pt), now);
            }
        }
        if self.timers.is_expired(Timer::StableAfter, now) {
            self.timers.stop(Timer::StableAfter);
            // Stable: the next loss starts a new count of attempts (and of window cuts).
            self.reconnect.reset();
            self.window_cuts = 0;
        }
        if self.timers.is_expired(Timer::Drain, now) {
            self.timers.stop(Timer::Drain);
            if self.state == State::Disconnecting {
                self.finish_disconnect(now);
            }
        }
        if self.timers.is_expired(Timer::Reconnect, now) {
            self.timers.stop(Timer::Reconnect);
            if self.state == State::Backoff {
                self.begin_attempt(now);
            }
        }
        if let Some(deadline) = self.keep_alive_deadline() {
            if deadline <= now {
                self.send_packet(&Packet::PingReq, now);
                if let Some(link) = self.link.as_mut() {
                    link.ping_outstanding = true;
                    let pt = link.ping_timeout;
                    self.timers.set(Timer::PingResp, now + pt);
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Commands

    pub(super) fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    // ----------------------------------------------------------------------------------------
    // Lifecycle internals

    pub(super) fn set_state(&mut self, s: State) {
        if self.state != s {
            self.state = s;
            self.events.push_back(Event::StateChanged(s));
        }
    }

    pub(super) fn emit(&mut self, now: Instant, event: Lifecycle) {
        self.events.push_back(Event::Lifecycle { at: now, event });
    }

    pub(super) fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected | State::Disconnecting)
            && self.link.as_ref().is_some_and(|l| l.connected_at.is_some())
    }

    // ----------------------------------------------------------------------------------------
    // Packets

    pub(super) fn send_packet(&mut self, packet: &Packet, now: Instant) -> bool {
        let start = self.tx.len();
        if packet.encode(self.config.protocol, &mut self.tx).is_err() {
            return false;
        }
        // The broker's Maximum Packet Size binds every packet (section 3.2.2.3.6). Checked on
        // the encoded bytes, so a packet that fits (all but never) is measured only once.
        if let Some(max) = self.peer_max_packet_size() {
            if self.tx.len() - start > max as usize {
                self.tx.truncate(start);
                let Some(packet) = self.fit_to_peer(packet) else {
                    return false;
                };
                if packet.encode(self.config.protocol, &mut self.tx).is_err() {
                    return false;
                }
            }
        }
        if let Some(link) = self.link.as_mut() {
            link.last_sent = now;
        }
        true
    }

    pub(super) fn handle_packet(&mut self, packet: Packet, now: Instant) {
        let awaiting_connack = self.link.as_ref().is_some_and(|l| l.connected_at.is_none());
        if awaiting_connack {
            match packet {
                Packet::ConnAck(ack) => self.on_connack(ack, now),
                Packet::Auth(a) => self.on_auth(a, now),
                other => self.protocol_violation(
                    ReasonCode::ProtocolError,
                    format!("expected CONNACK, received {:?}", other.packet_type()),
                    now,
                ),
            }
            return;
        }
        match packet {
            Packet::Publish(p) => self.on_publish(p, now),
            Packet::PubAck(a) => self.on_final_ack(FinalAck::PubAck, a.pkid, a.reason, now),
            Packet::PubRec(r) => self.on_pubrec(r, now),
            Packet::PubRel(r) => self.on_pubrel(r, now),
            Packet::PubComp(c) => self.on_final_ack(FinalAck::PubComp, c.pkid, c.reason, now),
            Packet::SubAck(s) => self.on_suback(s, now),
            Packet::UnsubAck(u) => self.on_unsuback(u, now),
            Packet::PingResp => {}
            Packet::Auth(a) => self.on_auth(a, now),
            Packet::Disconnect(d) => {
                if let Some(link) = self.link.as_mut() {
                    link.server_reference = d.properties.server_reference.clone();
                }
                let reason = Reason::ServerDisconnect {
                    code: d.reason,
                    reason_string: d.properties.into_inner().reason_string,
                };
                self.connection_lost(reason, now);
            }
            other => self.protocol_violation(
                ReasonCode::ProtocolError,
                format!("a server must not send {:?} here", other.packet_type()),
                now,
            ),
        }
    }

    /// The broker's Maximum Packet Size on the current connection, if it set one.
    pub(super) fn peer_max_packet_size(&self) -> Option<u32> {
        self.link
            .as_ref()
            .filter(|l| l.connected_at.is_some())
            .and_then(|l| l.max_packet_size)
    }

    /// `packet` as it may be sent within the broker's Maximum Packet Size: itself, or stripped
    /// of its Reason String and then its User Properties where the spec allows that; `None`
    /// when it cannot fit (the spec says discard it rather than send it).
    pub(super) fn fit_to_peer<'a>(&self, packet: &'a Packet) -> Option<Cow<'a, Packet>> {
        if self.too_large(packet).is_none() {
            return Some(Cow::Borrowed(packet));
        }
        let mut p = packet.clone();
        diagnostics(&mut p)?.reason_string = None;
        if self.too_large(&p).is_none() {
            return Some(Cow::Owned(p));
        }
        diagnostics(&mut p)?.user_properties.clear();
        self.too_large(&p).is_none().then_some(Cow::Owned(p))
    }

    /// Records a session change for a durable store (only with `Config::persistence`).
    pub(super) fn store(&mut self, op: impl FnOnce() -> StoreOp) {
        if self.config.persistence {
            self.events.push_back(Event::Store(op()));
        }
    }
}
