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

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::backoff::BackoffPolicy;
use crate::codec::DecodeError;
use crate::config::Config;
use crate::error::{CommandError, Initiator, PublishError, Reason, TransportError};
use crate::event::{Event, Granted, Lifecycle, PublishOutcome, State, Token};
use crate::policy::{classify, ReasonClass};
use crate::rng::Xoshiro256;
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

/// A pending subscribe or unsubscribe request.
#[derive(Debug, Clone)]
enum Request {
    Subscribe { token: Token, packet: Subscribe },
    Unsubscribe { token: Token, packet: Unsubscribe },
}

impl Request {
    fn token(&self) -> Token {
        match self {
            Request::Subscribe { token, .. } | Request::Unsubscribe { token, .. } => *token,
        }
    }
}

/// Requests split into several packets to fit the broker's Maximum Packet Size (after a
/// reconnect to a broker with a smaller limit). Each part goes out as a request of its own,
/// under a token of its own; the original token completes once every part has, with the
/// reason codes in the original order, or with the first error.
#[derive(Debug, Default)]
struct Splits {
    /// Part token: (the token it is part of, its index there).
    part_of: HashMap<Token, (Token, usize)>,
    /// Token split into parts: each part's reason codes once known. Removed on the first error,
    /// so later parts complete nothing.
    results: HashMap<Token, Vec<Option<Vec<ReasonCode>>>>,
}

impl Splits {
    fn split(&mut self, whole: Token, parts: &[Token]) {
        for (i, part) in parts.iter().enumerate() {
            self.part_of.insert(*part, (whole, i));
        }
        self.results.insert(whole, vec![None; parts.len()]);
    }

    /// A part finished: the result of the whole it belongs to when that is now known.
    fn part_done(
        &mut self,
        part: Token,
        result: Result<Vec<ReasonCode>, CommandError>,
    ) -> Option<(Token, Result<Vec<ReasonCode>, CommandError>)> {
        let Some((whole, i)) = self.part_of.remove(&part) else {
            return Some((part, result));
        };
        let codes = match result {
            Ok(codes) => codes,
            Err(e) => {
                return self.results.remove(&whole).map(|_| (whole, Err(e)));
            }
        };
        let slots = self.results.get_mut(&whole)?;
        *slots.get_mut(i)? = Some(codes);
        if slots.iter().any(Option::is_none) {
            return None;
        }
        let slots = self.results.remove(&whole)?;
        Some((whole, Ok(slots.into_iter().flatten().flatten().collect())))
    }
}

/// Splits `items` in order into runs of at most `max_run` whose packet passes `check`. Items
/// that fail it even alone are returned apart, in order, with the error.
fn split_to_fit<T: Clone, E>(
    items: &[T],
    max_run: usize,
    check: impl Fn(&[T]) -> Result<(), E>,
) -> (Vec<Vec<T>>, Vec<(T, E)>) {
    let mut runs = Vec::new();
    let mut unfit = Vec::new();
    let mut run: Vec<T> = Vec::new();
    for item in items {
        run.push(item.clone());
        if run.len() <= max_run && check(&run).is_ok() {
            continue;
        }
        run.pop();
        if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
        match check(std::slice::from_ref(item)) {
            Ok(()) => run.push(item.clone()),
            Err(e) => unfit.push((item.clone(), e)),
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    (runs, unfit)
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

/// A restore of subscriptions under way (after a connect without a session): the SUBSCRIBEs
/// not answered yet, and what the broker granted so far.
#[derive(Debug, Default)]
struct Resubscribing {
    /// Packet id of each unanswered SUBSCRIBE, with its filters in packet order.
    pending: Vec<(u16, Vec<ByteStr>)>,
    /// Filters granted so far.
    filters: Vec<ByteStr>,
    /// Their SUBACK codes.
    granted: Vec<ReasonCode>,
}

/// The message blamed for the last closes by the broker (see [`Config::poison_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suspect {
    token: Token,
    state: OutState,
    closes: u32,
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
    backoff: Box<dyn BackoffPolicy>,
    hook: Option<ReasonHook>,
    credentials: Option<CredentialsProvider>,
    credentials_retried: bool,
    authenticator: Option<Box<dyn Authenticator>>,
    rng: Xoshiro256,
    state: State,
    timers: TimerTable,
    rx: BytesMut,
    tx: BytesMut,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    link: Option<Link>,
    // attempts and backoff
    attempt: u32,
    backoff_step: u32,
    slow_floor: Option<Duration>,
    redirects: u32,
    /// Servers a temporary redirect named, tried in order before the configured ones.
    redirect_targets: VecDeque<ServerAddr>,
    /// Connect attempts in a row that ended with the broker closing before CONNACK.
    closed_before_connack: u32,
    server_idx: usize,
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
            .field("attempt", &self.attempt)
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
        let rng = Xoshiro256::seed_from_u64(config.rng_seed);
        let client_id = config.client_id.clone();
        let inflight_window = config.inflight_window();
        Connection {
            config,
            backoff,
            hook: None,
            credentials: None,
            credentials_retried: false,
            authenticator: None,
            rng,
            state: State::Idle,
            timers: TimerTable::default(),
            rx: BytesMut::new(),
            tx: BytesMut::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            link: None,
            attempt: 0,
            backoff_step: 0,
            slow_floor: None,
            redirects: 0,
            redirect_targets: VecDeque::new(),
            closed_before_connack: 0,
            server_idx: 0,
            client_id,
            connected_once: false,
            pkids: PkidPool::default(),
            inflight: Inflight::default(),
            queue: OfflineQueue::default(),
            registry: Registry::default(),
            requests: VecDeque::new(),
            sent_requests: IdMap::default(),
            incoming_qos2: HashSet::new(),
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

    /// Installs a credentials provider, asked before every connect attempt.
    pub fn set_credentials_provider(&mut self, provider: CredentialsProvider) {
        self.credentials = Some(provider);
    }

    /// Installs an MQTT 5 enhanced-authentication handler; its method goes into CONNECT.
    pub fn set_authenticator(&mut self, auth: Box<dyn Authenticator>) {
        self.authenticator = Some(auth);
    }

    /// Starts an MQTT 5 re-authentication (AUTH 0x19) on the current connection.
    pub fn reauthenticate(&mut self, now: Instant) -> Result<(), CommandError> {
        if self.config.protocol != ProtocolVersion::V5 {
            return Err(CommandError::Invalid(
                "re-authentication needs MQTT 5".into(),
            ));
        }
        if !self.is_connected() {
            return Err(CommandError::Invalid("not connected".into()));
        }
        if self.link.as_ref().is_some_and(|l| l.reauthenticating) {
            return Err(CommandError::Invalid(
                "a re-authentication is already under way".into(),
            ));
        }
        let Some(auth) = self.authenticator.as_mut() else {
            return Err(CommandError::Invalid("no authenticator installed".into()));
        };
        let properties = Properties {
            authentication_method: Some(auth.method()),
            authentication_data: auth.start(),
            ..Properties::default()
        };
        let packet = Packet::Auth(Auth {
            reason: ReasonCode::ReAuthenticate,
            properties: properties.into(),
        });
        if let Some(e) = self.too_large(&packet) {
            return Err(e);
        }
        self.send_packet(&packet, now);
        if let Some(link) = self.link.as_mut() {
            link.reauthenticating = true;
        }
        Ok(())
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

    fn keep_alive_deadline(&self) -> Option<Instant> {
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
        let server = self.current_server();
        self.rx.clear();
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
            self.reset_backoff();
            // Stable: the next loss starts a new count of attempts (and of window cuts).
            self.attempt = 0;
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

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// Publishes a message (`pkid` and `dup` are ignored). Returns a token that a later
    /// [`Event::PublishDone`] completes: on PUBACK (QoS 1), PUBCOMP (QoS 2), or once written to
    /// the transmit buffer (QoS 0).
    ///
    /// While disconnected the message is queued, bounded by the queue limits; on overflow the
    /// message is handed back with the error (`QueueFull` under `Reject` and `Backpressure`;
    /// the driver makes a backpressured publish wait for room and try again).
    #[allow(clippy::result_large_err)] // the refused message is handed back by value, on purpose
    pub fn publish(
        &mut self,
        mut publish: Publish,
        now: Instant,
    ) -> Result<Token, (PublishError, Publish)> {
        if matches!(self.state, State::Closed | State::Disconnecting) {
            return Err((PublishError::Closed, publish));
        }
        if let Err(e) = TopicName::new(publish.topic.clone()) {
            return Err((PublishError::Invalid(e.to_string()), publish));
        }
        if self.config.protocol == ProtocolVersion::V311 && !publish.properties.is_empty() {
            return Err((
                PublishError::Invalid("MQTT 5 properties cannot be sent with MQTT 3.1.1".into()),
                publish,
            ));
        }
        if publish.properties.topic_alias.is_some() {
            return Err((
                PublishError::Invalid(
                    "topic aliases are managed by the client; enable outgoing_topic_aliases".into(),
                ),
                publish,
            ));
        }
        if !publish.properties.subscription_identifiers.is_empty() {
            return Err((
                PublishError::Invalid(
                    "a client must not send subscription identifiers in PUBLISH".into(),
                ),
                publish,
            ));
        }
        publish.pkid = 0;
        publish.dup = false;
        if let Some(err) = self.check_against_broker(&publish) {
            return Err((err, publish));
        }
        let connected = self.is_connected();
        if publish.qos == QoS::AtMostOnce && !connected && !self.config.queue.queue_qos0 {
            return Err((PublishError::NotConnected, publish));
        }
        let q = Queued {
            token: Token(0),
            publish,
            queued_at: now,
        };
        let cost = q.cost();
        if !self.queue.has_room(cost, &self.config.queue) {
            match self.config.queue.overflow {
                Overflow::Backpressure | Overflow::Reject => {
                    return Err((PublishError::QueueFull, q.publish));
                }
                Overflow::DropOldest => {
                    // A message that would not fit even in an empty queue must not evict
                    // anything: it is refused on its own.
                    if !OfflineQueue::default().has_room(cost, &self.config.queue) {
                        return Err((PublishError::QueueFull, q.publish));
                    }
                    while !self.queue.has_room(cost, &self.config.queue) {
                        match self.queue.pop_front() {
                            Some(old) => self.finish_publish(old.token, Err(PublishError::Dropped)),
                            None => return Err((PublishError::QueueFull, q.publish)),
                        }
                    }
                }
            }
        }
        let token = self.token();
        self.store(|| StoreOp::Accepted {
            id: token.0,
            publish: q.publish.clone(),
        });
        self.queue.push_back(Queued { token, ..q });
        self.pump(now);
        Ok(token)
    }

    /// Subscribes to `filters`. The filters enter the registry at once, so they are restored
    /// after any reconnect in which the broker has no session. [`Event::SubscribeDone`] reports
    /// the SUBACK.
    ///
    /// While connected, a SUBSCRIBE larger than the broker's Maximum Packet Size is refused
    /// here ([`CommandError::PacketTooLarge`]). A request that waits for a connection (or is
    /// sent again after a reconnect) is split into several SUBSCRIBE packets if the broker it
    /// meets has a smaller limit, and fails with that error only if a single filter does not
    /// fit; the same holds for [`Connection::unsubscribe`].
    pub fn subscribe(
        &mut self,
        filters: Vec<SubscribeFilter>,
        mut properties: Properties,
        now: Instant,
    ) -> Result<Token, CommandError> {
        if matches!(self.state, State::Closed | State::Disconnecting) {
            return Err(CommandError::Closed);
        }
        if filters.is_empty() {
            return Err(CommandError::Invalid(
                "SUBSCRIBE needs at least one filter".into(),
            ));
        }
        for f in &filters {
            TopicFilter::new(f.filter.clone())
                .map_err(|e| CommandError::Invalid(format!("{:?}: {e}", f.filter.as_str())))?;
        }
        let v5 = self.config.protocol == ProtocolVersion::V5;
        if !v5 {
            if !properties.is_empty() {
                return Err(CommandError::Invalid(
                    "MQTT 5 subscribe properties cannot be sent with MQTT 3.1.1".into(),
                ));
            }
            if filters.iter().any(|f| {
                f.options.no_local
                    || f.options.retain_as_published
                    || f.options.retain_handling != crate::RetainHandling::SendAtSubscribe
            }) {
                return Err(CommandError::Invalid(
                    "no_local, retain_as_published and retain_handling need MQTT 5".into(),
                ));
            }
        }
        if !properties.subscription_identifiers.is_empty() {
            return Err(CommandError::Invalid(
                "subscription identifiers are assigned by the client".into(),
            ));
        }
        let id = if v5 && self.config.subscription_identifiers {
            self.next_sub_id = if self.next_sub_id >= PROTOCOL_MAX_REMAINING {
                1
            } else {
                self.next_sub_id + 1
            };
            properties.subscription_identifiers.push(self.next_sub_id);
            Some(self.next_sub_id)
        } else {
            None
        };
        self.check_request_size(&Request::Subscribe {
            token: Token(0),
            packet: Subscribe {
                pkid: 0,
                filters: filters.clone(),
                properties: properties.clone().into(),
            },
        })?;
        for f in &filters {
            self.registry.insert(Subscription {
                filter: f.filter.clone(),
                options: f.options,
                id,
                user_properties: properties.user_properties.clone(),
                confirmed: false,
            });
        }
        let token = self.token();
        let packet = Subscribe {
            pkid: 0,
            filters,
            properties: properties.into(),
        };
        self.requests
            .push_back(Request::Subscribe { token, packet });
        self.pump(now);
        Ok(token)
    }

    /// Unsubscribes. The filters leave the registry at once, so a reconnect does not restore
    /// them. [`Event::UnsubscribeDone`] reports the UNSUBACK.
    pub fn unsubscribe(
        &mut self,
        filters: Vec<ByteStr>,
        properties: Properties,
        now: Instant,
    ) -> Result<Token, CommandError> {
        if matches!(self.state, State::Closed | State::Disconnecting) {
            return Err(CommandError::Closed);
        }
        if filters.is_empty() {
            return Err(CommandError::Invalid(
                "UNSUBSCRIBE needs at least one filter".into(),
            ));
        }
        if self.config.protocol == ProtocolVersion::V311 && !properties.is_empty() {
            return Err(CommandError::Invalid(
                "MQTT 5 unsubscribe properties cannot be sent with MQTT 3.1.1".into(),
            ));
        }
        self.check_request_size(&Request::Unsubscribe {
            token: Token(0),
            packet: Unsubscribe {
                pkid: 0,
                filters: filters.clone(),
                properties: properties.clone().into(),
            },
        })?;
        for f in &filters {
            TopicFilter::new(f.clone())
                .map_err(|e| CommandError::Invalid(format!("{:?}: {e}", f.as_str())))?;
            if self.registry.remove(f).is_some() {
                self.store(|| StoreOp::SubscriptionRemove(f.clone()));
            }
        }
        let token = self.token();
        let packet = Unsubscribe {
            pkid: 0,
            filters,
            properties: properties.into(),
        };
        self.requests
            .push_back(Request::Unsubscribe { token, packet });
        self.pump(now);
        Ok(token)
    }

    /// Stops reconnecting and closes gracefully: in-flight and queued messages get up to
    /// `drain_timeout` to finish, then DISCONNECT is sent and [`Lifecycle::Disconnected`] emitted.
    pub fn disconnect(&mut self, options: DisconnectOptions, now: Instant) {
        match self.state {
            State::Closed => {}
            State::Disconnecting => {
                self.disconnect = Some(options);
            }
            State::Connected => {
                self.disconnect = Some(options);
                self.set_state(State::Disconnecting);
                self.timers.stop(Timer::Reconnect);
                self.timers
                    .set(Timer::Drain, now + self.config.drain_timeout);
                self.pump(now);
                self.maybe_finish_drain(now);
            }
            _ => {
                self.disconnect = Some(options);
                // Also while the transport is still being opened: the driver must drop it.
                if self.link.is_some() || self.state == State::Connecting {
                    self.link = None;
                    self.actions.push_back(Action::Close);
                }
                self.finish_disconnect(now);
            }
        }
    }

    /// Skips the current backoff delay, or wakes a dormant or failed client: the attempt count
    /// and backoff reset and an attempt starts at once. Does nothing while connecting or connected.
    pub fn reconnect_now(&mut self, now: Instant) {
        match self.state {
            State::Backoff => {
                self.timers.stop(Timer::Reconnect);
                self.begin_attempt(now);
            }
            State::Dormant | State::Failed => {
                self.attempt = 0;
                self.reset_backoff();
                self.begin_attempt(now);
            }
            State::Idle => self.start(now),
            _ => {}
        }
    }

    /// Same as [`Connection::reconnect_now`]: wakes a dormant client.
    pub fn wake(&mut self, now: Instant) {
        self.reconnect_now(now);
    }

    // ----------------------------------------------------------------------------------------
    // Lifecycle internals

    fn set_state(&mut self, s: State) {
        if self.state != s {
            self.state = s;
            self.events.push_back(Event::StateChanged(s));
        }
    }

    fn emit(&mut self, now: Instant, event: Lifecycle) {
        self.events.push_back(Event::Lifecycle { at: now, event });
    }

    fn is_connected(&self) -> bool {
        matches!(self.state, State::Connected | State::Disconnecting)
            && self.link.as_ref().is_some_and(|l| l.connected_at.is_some())
    }

    fn current_server(&self) -> ServerAddr {
        if let Some(t) = self.redirect_targets.front() {
            return t.clone();
        }
        self.config
            .servers
            .get(self.server_idx % self.config.servers.len().max(1))
            .cloned()
            .unwrap_or_else(ServerAddr::local_default)
    }

    /// Follows a redirect's Server Reference (at most `max_redirects` in a row). Returns false
    /// when it is not followed: none was sent, too many redirects in a row, or it does not
    /// parse (reported); the refusal is then transient against the configured servers.
    fn follow_redirect(
        &mut self,
        permanent: bool,
        server_reference: Option<ByteStr>,
        now: Instant,
    ) -> bool {
        let Some(reference) = server_reference.filter(|s| !s.trim().is_empty()) else {
            return false;
        };
        if self.redirects >= self.config.max_redirects {
            return false;
        }
        let from = self.current_server();
        let targets = match ServerAddr::parse_reference(&reference, &from) {
            Ok(t) => t,
            Err(error) => {
                self.emit(
                    now,
                    Lifecycle::BadServerReference {
                        reference: crate::server::redact_reference(&reference),
                        error,
                    },
                );
                return false;
            }
        };
        self.redirects += 1;
        if permanent && self.redirect_targets.is_empty() {
            // The configured server moved: its place in the list goes to the servers the
            // reference named, in order (the list stays bounded).
            let n = self.config.servers.len();
            let idx = self.server_idx % n.max(1);
            let room = MAX_SERVERS.saturating_sub(n.saturating_sub(1)).max(1);
            let new: Vec<ServerAddr> = targets.into_iter().take(room).collect();
            if n == 0 {
                self.config.servers = new;
            } else {
                self.config.servers.splice(idx..=idx, new);
            }
            self.server_idx = idx;
        } else {
            // 0x9C, or a server reached by a temporary redirect moved: try the named servers,
            // then go back to the configured ones.
            self.redirect_targets = targets.into();
        }
        true
    }

    fn reset_backoff(&mut self) {
        self.backoff.reset();
        self.backoff_step = 0;
        self.slow_floor = None;
    }

    fn begin_attempt(&mut self, now: Instant) {
        self.attempt = self.attempt.saturating_add(1);
        self.set_state(State::Connecting);
        self.timers.stop(Timer::Reconnect);
        self.timers
            .set(Timer::Connect, now + self.config.connect_timeout);
        let server = self.current_server();
        self.emit(
            now,
            Lifecycle::Connecting {
                attempt: self.attempt,
                server: server.clone(),
            },
        );
        self.actions.push_back(Action::Connect { server });
    }

    fn close_link(&mut self) -> Option<Link> {
        self.timers.stop(Timer::PingResp);
        self.timers.stop(Timer::Connect);
        self.timers.stop(Timer::StableAfter);
        self.rx.clear();
        let link = self.link.take();
        self.actions.push_back(Action::Close);
        // Requests sent on this link get no answer now: send them again on the next one.
        let mut sent: Vec<(u16, Request)> = self.sent_requests.drain().collect();
        sent.sort_by_key(|(_, r)| std::cmp::Reverse(r.token()));
        for (pkid, req) in sent {
            self.pkids.release(pkid);
            self.requests.push_front(req);
        }
        self.pkids
            .release_where(|o| matches!(o, Owner::Resubscribe));
        // A restore left unanswered is made again after the next connect without a session.
        self.resubscribing = None;
        self.inflight.mark_all_unsent();
        link
    }

    fn attempt_failed(&mut self, reason: Reason, now: Instant) {
        if !matches!(reason, Reason::ClosedBeforeConnack { .. }) {
            self.closed_before_connack = 0;
        }
        let server_reference = self.link.as_ref().and_then(|l| l.server_reference.clone());
        self.close_link();
        self.emit(
            now,
            Lifecycle::ConnectFailed {
                attempt: self.attempt,
                reason: reason.clone(),
            },
        );
        if self.state == State::Disconnecting || self.disconnect.is_some() {
            self.finish_disconnect(now);
            return;
        }
        self.after_failure(reason, server_reference, true, true, now);
    }

    fn connection_lost(&mut self, reason: Reason, now: Instant) {
        let server_reference = self.link.as_ref().and_then(|l| l.server_reference.clone());
        let uptime = self
            .link
            .as_ref()
            .and_then(|l| l.connected_at)
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        // Lost before `stable_after`: a failed attempt (flapping counts), unless we closed it.
        let flapping =
            self.timers.get(Timer::StableAfter).is_some() && reason.initiator() != Initiator::Local;
        let by_broker = reason.initiator() == Initiator::Remote;
        // Repeated 3.1.1 cuts with several in flight are blamed on the window; otherwise the oldest
        // unacknowledged message is the suspect.
        let window_cut = by_broker && flapping && self.shrink_inflight_window();
        let oldest = (by_broker && !window_cut)
            .then(|| self.oldest_sent())
            .flatten();
        self.reauthentication_failed(&reason);
        self.close_link();
        self.emit(
            now,
            Lifecycle::ConnectionLost {
                reason: reason.clone(),
                uptime,
            },
        );
        if self.state == State::Disconnecting {
            self.finish_disconnect(now);
            return;
        }
        if let Some((seq, token, state)) = oldest {
            self.blame(seq, token, state);
        }
        self.after_failure(reason, server_reference, flapping, false, now);
    }

    /// With MQTT 3.1.1 (no Receive Maximum): the broker cut the connection, before
    /// `stable_after`, with more than one message in flight, the way rmqtt refuses a 17th
    /// unreleased QoS 2 message. From the second such cut in a row (one may be the network),
    /// the window becomes half of what was in flight, for the rest of the client's life.
    /// Returns true when it shrank.
    fn shrink_inflight_window(&mut self) -> bool {
        if self.config.protocol != ProtocolVersion::V311 {
            return false;
        }
        let sent = u16::try_from(self.inflight.sent_count()).unwrap_or(u16::MAX);
        if sent <= 1 {
            return false;
        }
        self.window_cuts = self.window_cuts.saturating_add(1);
        if self.window_cuts < 2 {
            return false;
        }
        self.inflight_window = (sent.min(self.inflight_window) / 2).max(1);
        true
    }

    /// The oldest in-flight message sent on this link: (sequence, token, stage).
    fn oldest_sent(&self) -> Option<(u64, Token, OutState)> {
        let (seq, out) = self.inflight.iter().next()?;
        out.sent.then_some((*seq, out.token, out.state))
    }

    /// The broker closed the connection while `token` was the oldest unacknowledged message:
    /// after [`Config::poison_after`] such closes in a row at the same stage, it is failed.
    fn blame(&mut self, seq: u64, token: Token, state: OutState) {
        if self.config.poison_after == 0 {
            return;
        }
        let closes = match self.suspect {
            Some(s) if s.token == token && s.state == state => s.closes.saturating_add(1),
            _ => 1,
        };
        if closes < self.config.poison_after {
            self.suspect = Some(Suspect {
                token,
                state,
                closes,
            });
            return;
        }
        self.suspect = None;
        if let Some(out) = self.inflight.remove(seq) {
            self.pkids.release(out.publish.pkid);
            self.finish_publish(out.token, Err(PublishError::Poison { closes }));
        }
    }

    /// The link closes: a re-authentication under way on it has failed.
    fn reauthentication_failed(&mut self, reason: &Reason) {
        if let Some(link) = self.link.as_mut().filter(|l| l.reauthenticating) {
            link.reauthenticating = false;
            self.events.push_back(Event::ReauthenticationFailed {
                reason: reason.clone(),
            });
        }
    }

    fn classify_reason(&mut self, reason: &Reason) -> ReasonClass {
        let class = match reason {
            Reason::Transport(TransportError::TlsFatal(_)) | Reason::Authentication(_) => {
                ReasonClass::Fatal
            }
            Reason::Refused { code, .. } | Reason::ServerDisconnect { code, .. } => classify(*code),
            // A server that never accepted this client's MQTT 5 CONNECT and closes it every
            // time most likely does not speak MQTT 5: stop rather than loop. A broker that is
            // restarting was connected before, so it is retried (the policy hook can decide
            // otherwise, e.g. for a load balancer whose backends are all down).
            Reason::ClosedBeforeConnack {
                protocol: ProtocolVersion::V5,
                consecutive,
            } if *consecutive >= CLOSED_BEFORE_CONNACK_FATAL && !self.connected_once => {
                ReasonClass::Fatal
            }
            _ => ReasonClass::Transient,
        };
        match self.hook.as_mut() {
            Some(hook) => hook(reason, class),
            None => class,
        }
    }

    /// `failed_attempt`: counts against `max_attempts` (a failed connect, or a connection lost
    /// before `stable_after`); `next_server`: move on to the next configured server.
    fn after_failure(
        &mut self,
        reason: Reason,
        server_reference: Option<ByteStr>,
        failed_attempt: bool,
        next_server: bool,
        now: Instant,
    ) {
        let mut class = self.classify_reason(&reason);
        let credential_refusal = matches!(
            reason.reason_code(),
            Some(ReasonCode::BadUserNameOrPassword | ReasonCode::NotAuthorized)
        );
        if class == ReasonClass::Fatal
            && credential_refusal
            && self.credentials.is_some()
            && !self.credentials_retried
        {
            // Retry once with freshly provided credentials before giving up.
            self.credentials_retried = true;
            class = ReasonClass::Transient;
        }
        if class == ReasonClass::Fatal {
            self.redirect_targets.clear();
            self.redirects = 0;
            self.set_state(State::Failed);
            self.emit(now, Lifecycle::Fatal { reason });
            return;
        }
        if let ReasonClass::Redirect { permanent } = class {
            if self.follow_redirect(permanent, server_reference, now) {
                if self.max_attempts_reached(failed_attempt) {
                    self.go_dormant(now);
                } else {
                    self.begin_attempt(now);
                }
                return;
            }
            // Not followed: back to the configured servers.
            self.redirect_targets.clear();
        }
        // A redirect target that failed makes way for the next one the reference named.
        let on_redirect_target = self.redirect_targets.pop_front().is_some();
        if self.redirect_targets.is_empty() {
            self.redirects = 0;
        }
        if !self.config.auto_reconnect || self.max_attempts_reached(failed_attempt) {
            self.redirect_targets.clear();
            self.go_dormant(now);
            return;
        }
        if next_server && !on_redirect_target && self.config.servers.len() > 1 {
            self.server_idx = (self.server_idx + 1) % self.config.servers.len();
        }
        self.backoff_step = self.backoff_step.saturating_add(1);
        let max = self.backoff.max_delay();
        let mut delay = self.backoff.next_delay(self.backoff_step, &mut self.rng);
        if matches!(class, ReasonClass::SlowDown | ReasonClass::Takeover) {
            let floor = match self.slow_floor {
                Some(f) => (f * 2).min(max),
                None => max / 4,
            };
            self.slow_floor = Some(floor);
        }
        if let Some(floor) = self.slow_floor {
            delay = delay.max(floor);
        }
        self.set_state(State::Backoff);
        self.timers.set(Timer::Reconnect, now + delay);
        self.emit(
            now,
            Lifecycle::Reconnecting {
                attempt: self.attempt.saturating_add(1),
                delay,
            },
        );
    }

    fn max_attempts_reached(&self, failed_attempt: bool) -> bool {
        failed_attempt && self.config.max_attempts.is_some_and(|m| self.attempt >= m)
    }

    fn go_dormant(&mut self, now: Instant) {
        self.set_state(State::Dormant);
        self.emit(
            now,
            Lifecycle::Dormant {
                attempts: self.attempt,
            },
        );
    }

    fn protocol_violation(&mut self, code: ReasonCode, detail: String, now: Instant) {
        if self.config.protocol == ProtocolVersion::V5 && self.link.is_some() {
            let d = Disconnect {
                reason: code,
                properties: Props::new(),
            };
            self.send_packet(&Packet::Disconnect(d), now);
        }
        let reason = Reason::ProtocolViolation { code, detail };
        if self.link.as_ref().is_some_and(|l| l.connected_at.is_some()) {
            self.connection_lost(reason, now);
        } else {
            self.attempt_failed(reason, now);
        }
    }

    fn build_connect(&mut self) -> Connect {
        let c = &self.config;
        let v5 = c.protocol == ProtocolVersion::V5;
        let clean_start = if v5 && self.connected_once {
            false
        } else {
            c.clean_start
        };
        let mut properties = Properties::default();
        if v5 {
            if c.session_expiry_interval != 0 {
                properties.session_expiry_interval = Some(c.session_expiry_interval);
            }
            if c.receive_maximum != u16::MAX {
                properties.receive_maximum = Some(c.receive_maximum.max(1));
            }
            if c.maximum_packet_size < PROTOCOL_MAX_REMAINING {
                properties.maximum_packet_size = Some(c.maximum_packet_size.max(1));
            }
            if c.topic_alias_maximum != 0 {
                properties.topic_alias_maximum = Some(c.topic_alias_maximum);
            }
            if c.request_response_information {
                properties.request_response_information = Some(1);
            }
            if let Some(p) = c.request_problem_information {
                properties.request_problem_information = Some(u8::from(p));
            }
            properties.user_properties = c.user_properties.clone();
            if let Some(auth) = self.authenticator.as_mut() {
                properties.authentication_method = Some(auth.method());
                properties.authentication_data = auth.start();
            } else if let Some(m) = &c.authentication_method {
                properties.authentication_method = Some(m.clone());
            }
        }
        let keep_alive = u16::try_from(c.keep_alive.as_secs()).unwrap_or(u16::MAX);
        // Explicit credentials win; otherwise those of the server's URL.
        let (username, password) = if c.username.is_some() || c.password.is_some() {
            (c.username.clone(), c.password.clone())
        } else {
            match self.link.as_ref().and_then(|l| l.server.credentials()) {
                Some(cred) => (
                    // `mqtt://:pass@h` sends an empty user name, so 3.1.1 can carry the password.
                    Some(cred.username.clone()),
                    cred.password.as_ref().map(|p| p.expose().clone()),
                ),
                None => (None, None),
            }
        };
        Connect {
            protocol: c.protocol,
            clean_start,
            keep_alive,
            client_id: self.client_id.clone(),
            will: c.will.clone(),
            username,
            password,
            properties: properties.into(),
        }
    }

    // ----------------------------------------------------------------------------------------
    // Packets

    fn send_packet(&mut self, packet: &Packet, now: Instant) -> bool {
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

    fn handle_packet(&mut self, packet: Packet, now: Instant) {
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
            Packet::PubAck(a) => self.on_puback(a, now),
            Packet::PubRec(r) => self.on_pubrec(r, now),
            Packet::PubRel(r) => self.on_pubrel(r, now),
            Packet::PubComp(c) => self.on_pubcomp(c, now),
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

    fn on_auth(&mut self, a: Auth, now: Instant) {
        let connected = self.is_connected();
        let Some(auth) = self.authenticator.as_mut() else {
            self.protocol_violation(
                ReasonCode::ProtocolError,
                "AUTH received without enhanced authentication".into(),
                now,
            );
            return;
        };
        match a.reason {
            ReasonCode::ContinueAuthentication => {
                match auth.challenge(a.properties.authentication_data.as_ref()) {
                    Ok(data) => {
                        let properties = Properties {
                            authentication_method: Some(auth.method()),
                            authentication_data: data,
                            ..Properties::default()
                        };
                        let reply = Packet::Auth(Auth {
                            reason: ReasonCode::ContinueAuthentication,
                            properties: properties.into(),
                        });
                        match self.too_large(&reply) {
                            Some(e) => self.authentication_failed(e.to_string(), now),
                            None => {
                                self.send_packet(&reply, now);
                            }
                        }
                    }
                    Err(e) => self.authentication_failed(e, now),
                }
            }
            ReasonCode::Success if connected => {
                auth.success(a.properties.authentication_data.as_ref());
                if let Some(link) = self.link.as_mut() {
                    link.reauthenticating = false;
                }
                self.events.push_back(Event::Reauthenticated);
            }
            other => self.protocol_violation(
                ReasonCode::ProtocolError,
                format!("unexpected AUTH reason {other}"),
                now,
            ),
        }
    }

    /// The exchange cannot go on (the authenticator refused, or its answer does not fit).
    fn authentication_failed(&mut self, e: String, now: Instant) {
        let reason = Reason::Authentication(e);
        if self.link.as_ref().is_some_and(|l| l.connected_at.is_some()) {
            self.send_packet(
                &Packet::Disconnect(Disconnect {
                    reason: ReasonCode::NotAuthorized,
                    properties: Props::new(),
                }),
                now,
            );
            self.connection_lost(reason, now);
        } else {
            self.attempt_failed(reason, now);
        }
    }

    fn on_connack(&mut self, ack: ConnAck, now: Instant) {
        if !ack.reason.is_success() {
            if let Some(link) = self.link.as_mut() {
                link.server_reference = ack.properties.server_reference.clone();
            }
            let reason = Reason::Refused {
                code: ack.reason,
                reason_string: ack.properties.into_inner().reason_string,
            };
            self.attempt_failed(reason, now);
            return;
        }
        self.timers.stop(Timer::Connect);
        self.credentials_retried = false;
        self.closed_before_connack = 0;
        if let Some(auth) = self.authenticator.as_mut() {
            auth.success(ack.properties.authentication_data.as_ref());
        }
        let p = &ack.properties;
        let keep_alive = p
            .server_keep_alive
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.config.keep_alive);
        if let Some(id) = &p.assigned_client_identifier {
            self.client_id = id.clone();
            let id = id.clone();
            self.store(|| StoreOp::ClientId(id));
        }
        let granted = Granted {
            keep_alive,
            receive_maximum: p.receive_maximum.unwrap_or(u16::MAX),
            maximum_packet_size: p.maximum_packet_size,
            assigned_client_id: p.assigned_client_identifier.clone(),
            topic_alias_maximum: p.topic_alias_maximum.unwrap_or(0),
            maximum_qos: p
                .maximum_qos
                .and_then(QoS::from_u8)
                .unwrap_or(QoS::ExactlyOnce),
            retain_available: p.retain_available != Some(0),
            wildcard_subscription_available: p.wildcard_subscription_available != Some(0),
            subscription_identifiers_available: p.subscription_identifier_available != Some(0),
            shared_subscription_available: p.shared_subscription_available != Some(0),
            response_information: p.response_information.clone(),
            session_expiry_interval: p.session_expiry_interval,
        };
        let ping_timeout = self.config.ping_timeout_for(keep_alive);
        let server = {
            let Some(link) = self.link.as_mut() else {
                return;
            };
            link.connected_at = Some(now);
            link.keep_alive = keep_alive;
            link.ping_timeout = ping_timeout;
            link.receive_maximum = granted.receive_maximum.max(1);
            link.max_packet_size = granted.maximum_packet_size;
            link.max_qos = granted.maximum_qos;
            link.retain_available = granted.retain_available;
            link.sub_ids_available = granted.subscription_identifiers_available;
            link.topic_alias_max = if self.config.outgoing_topic_aliases {
                granted.topic_alias_maximum
            } else {
                0
            };
            link.server.clone()
        };
        self.set_state(if self.disconnect.is_some() {
            State::Disconnecting
        } else {
            State::Connected
        });
        self.timers
            .set(Timer::StableAfter, now + self.config.stable_after);
        self.redirects = 0;
        self.redirect_targets.clear();
        // The count of attempts goes on until the connection proves stable (`stable_after`):
        // a connection lost before then is one more failed attempt.
        let attempt = self.attempt;
        self.emit(
            now,
            Lifecycle::Connected {
                attempt,
                server,
                session_present: ack.session_present,
                granted: Box::new(granted),
            },
        );
        self.connected_once = true;

        if ack.session_present {
            // Resend in original order with original packet ids: PUBLISH with DUP=1, or PUBREL.
            self.pump(now);
        } else {
            if !self.incoming_qos2.is_empty() {
                self.incoming_qos2.clear();
                self.store(|| StoreOp::IncomingQos2Clear);
            }
            if !self.inflight.is_empty() {
                let entries = self.inflight.drain();
                let mut republished = 0;
                for out in entries.into_iter().rev() {
                    self.pkids.release(out.publish.pkid);
                    // Entries past PUBREC are republished too: a broker that lost the session
                    // may not have forwarded them (Mosquitto forwards QoS 2 at PUBREL), and
                    // nothing accepted may be lost. The receiver may then see it twice.
                    if self.config.republish_on_session_loss {
                        republished += 1;
                        let mut publish = out.publish;
                        publish.pkid = 0;
                        publish.dup = false;
                        let id = out.token.0;
                        self.store(|| StoreOp::Outgoing {
                            id,
                            state: OutgoingState::Queued,
                        });
                        self.queue.push_front(Queued {
                            token: out.token,
                            publish,
                            queued_at: now,
                        });
                    } else {
                        self.finish_publish(out.token, Err(PublishError::SessionLost));
                    }
                }
                self.emit(now, Lifecycle::SessionLost { republished });
            }
            self.resubscribe(now);
            self.pump(now);
        }
    }

    fn resubscribe(&mut self, now: Instant) {
        let confirmed: Vec<Subscription> = self
            .registry
            .iter()
            .filter(|s| s.confirmed)
            .cloned()
            .collect();
        if confirmed.is_empty() {
            return;
        }
        // One SUBSCRIBE per subscription identifier (MQTT 5 allows one id per packet).
        let mut groups: Vec<(Option<u32>, Vec<Subscription>)> = Vec::new();
        for s in confirmed {
            match groups.iter_mut().find(|(id, _)| *id == s.id) {
                Some((_, g)) => g.push(s),
                None => groups.push((s.id, vec![s])),
            }
        }
        let mut unfit = Vec::new();
        let mut pending = Vec::new();
        for (id, subs) in groups {
            // As many packets as this broker's Maximum Packet Size takes.
            let (chunks, too_large) = split_to_fit(&subs, 64, |c| {
                match self.too_large(&Packet::Subscribe(self.resubscribe_packet(id, c, 1))) {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            });
            unfit.extend(too_large);
            for chunk in chunks {
                let Some(pkid) = self.pkids.alloc(Owner::Resubscribe) else {
                    break;
                };
                let packet = self.resubscribe_packet(id, &chunk, pkid);
                self.send_packet(&Packet::Subscribe(packet), now);
                pending.push((pkid, chunk.into_iter().map(|s| s.filter).collect()));
            }
        }
        if !pending.is_empty() {
            // `Resubscribed` follows once every SUBACK is in (`on_resubscribe_ack`).
            self.resubscribing = Some(Box::new(Resubscribing {
                pending,
                ..Resubscribing::default()
            }));
        }
        for (s, error) in unfit {
            let filter = s.filter;
            self.emit(now, Lifecycle::ResubscribeFailed { filter, error });
        }
    }

    /// The SUBSCRIBE that restores `subs` (which share the subscription identifier `id`).
    fn resubscribe_packet(&self, id: Option<u32>, subs: &[Subscription], pkid: u16) -> Subscribe {
        let mut properties = Properties::default();
        if self.config.protocol == ProtocolVersion::V5 {
            if let Some(id) = id {
                properties.subscription_identifiers.push(id);
            }
            if let Some(first) = subs.first() {
                properties.user_properties = first.user_properties.clone();
            }
        }
        let filters = subs
            .iter()
            .map(|s| SubscribeFilter {
                filter: s.filter.clone(),
                options: s.options,
            })
            .collect();
        let mut packet = Subscribe {
            pkid,
            filters,
            properties: properties.into(),
        };
        self.strip_sub_ids(&mut packet);
        packet
    }

    fn strip_sub_ids(&self, packet: &mut Subscribe) {
        if self.link.as_ref().is_some_and(|l| !l.sub_ids_available) {
            if let Some(p) = packet.properties.get_mut() {
                p.subscription_identifiers.clear();
            }
        }
    }

    /// The packet a request goes out as, with packet id `pkid`.
    fn request_packet(&self, req: &Request, pkid: u16) -> Packet {
        match req {
            Request::Subscribe { packet, .. } => {
                let mut p = packet.clone();
                p.pkid = pkid;
                self.strip_sub_ids(&mut p);
                Packet::Subscribe(p)
            }
            Request::Unsubscribe { packet, .. } => {
                let mut p = packet.clone();
                p.pkid = pkid;
                Packet::Unsubscribe(p)
            }
        }
    }

    /// The broker's Maximum Packet Size on the current connection, if it set one.
    fn peer_max_packet_size(&self) -> Option<u32> {
        self.link
            .as_ref()
            .filter(|l| l.connected_at.is_some())
            .and_then(|l| l.max_packet_size)
    }

    /// Why `packet` must not be sent: it exceeds the broker's Maximum Packet Size.
    fn too_large(&self, packet: &Packet) -> Option<CommandError> {
        let max = self.peer_max_packet_size()?;
        // A packet that cannot be encoded at all fails where it is encoded, with that error.
        let size = packet.encoded_len(self.config.protocol).ok()?;
        (size > max as usize).then_some(CommandError::PacketTooLarge {
            packet: packet.packet_type(),
            size,
            max,
        })
    }

    /// Whether a request fits in one packet (measured with a stand-in packet id).
    fn check_request_size(&self, req: &Request) -> Result<(), CommandError> {
        match self.too_large(&self.request_packet(req, 1)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// `filters` in runs that each fit one packet (`part` builds the request for a run), and the
    /// error of the first filter that fits none.
    fn split_request<F: Clone>(
        &self,
        filters: &[F],
        part: impl Fn(&[F]) -> Request,
    ) -> (Vec<Request>, Option<CommandError>) {
        let (runs, unfit) =
            split_to_fit(filters, usize::MAX, |f| self.check_request_size(&part(f)));
        let error = unfit.into_iter().next().map(|(_, e)| e);
        (runs.iter().map(|r| part(r)).collect(), error)
    }

    /// A request about to be sent: as it is when it fits, else split into parts that fit (the
    /// first is returned, the others go to the front of the queue). When a single filter does
    /// not fit the request fails and `None` is returned.
    fn fit_request(&mut self, req: Request) -> Option<Request> {
        let Err(whole) = self.check_request_size(&req) else {
            return Some(req);
        };
        let token = req.token();
        let (mut parts, error) = match &req {
            Request::Subscribe { packet, .. } => {
                let part = |filters: &[SubscribeFilter]| Request::Subscribe {
                    token,
                    packet: Subscribe {
                        pkid: 0,
                        filters: filters.to_vec(),
                        properties: packet.properties.clone(),
                    },
                };
                self.split_request(&packet.filters, part)
            }
            Request::Unsubscribe { packet, .. } => {
                let part = |filters: &[ByteStr]| Request::Unsubscribe {
                    token,
                    packet: Unsubscribe {
                        pkid: 0,
                        filters: filters.to_vec(),
                        properties: packet.properties.clone(),
                    },
                };
                self.split_request(&packet.filters, part)
            }
        };
        let error = match error {
            None if parts.is_empty() => Some(whole),
            e => e,
        };
        if let Some(error) = error {
            // A filter does not fit even alone: nothing of the request is sent.
            let subscribe = matches!(req, Request::Subscribe { .. });
            if let Request::Subscribe { packet, .. } = &req {
                self.forget_subscribe(packet);
            }
            self.request_done(subscribe, token, Err(error));
            return None;
        }
        let tokens: Vec<Token> = parts.iter().map(|_| self.token()).collect();
        self.splits.split(token, &tokens);
        for (part, t) in parts.iter_mut().zip(&tokens) {
            match part {
                Request::Subscribe { token, .. } | Request::Unsubscribe { token, .. } => {
                    *token = *t
                }
            }
        }
        let mut parts = parts.into_iter();
        let first = parts.next();
        for part in parts.rev() {
            self.requests.push_front(part);
        }
        first
    }

    /// A subscribe that will not be sent leaves the registry, as if the broker had refused it.
    fn forget_subscribe(&mut self, packet: &Subscribe) {
        let ids = &packet.properties.subscription_identifiers;
        for f in &packet.filters {
            let ours = self
                .registry
                .get(&f.filter)
                .is_some_and(|e| ids.is_empty() || e.id == ids.first().copied());
            if ours && self.registry.remove(&f.filter).is_some() {
                let filter = f.filter.clone();
                self.store(|| StoreOp::SubscriptionRemove(filter));
            }
        }
    }

    /// Reports a finished subscribe or unsubscribe; a part of a split request completes the
    /// whole once every part has.
    fn request_done(
        &mut self,
        subscribe: bool,
        mut token: Token,
        mut result: Result<Vec<ReasonCode>, CommandError>,
    ) {
        loop {
            let Some((whole, r)) = self.splits.part_done(token, result) else {
                return;
            };
            if whole != token {
                // A part of a part (split again on a later connection): go up once more.
                token = whole;
                result = r;
                continue;
            }
            self.events.push_back(if subscribe {
                Event::SubscribeDone { token, result: r }
            } else {
                Event::UnsubscribeDone { token, result: r }
            });
            return;
        }
    }

    /// `packet` as it may be sent within the broker's Maximum Packet Size: itself, or stripped
    /// of its Reason String and then its User Properties where the spec allows that; `None`
    /// when it cannot fit (the spec says discard it rather than send it).
    fn fit_to_peer<'a>(&self, packet: &'a Packet) -> Option<Cow<'a, Packet>> {
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

    fn check_against_broker(&self, p: &Publish) -> Option<PublishError> {
        let link = self.link.as_ref().filter(|l| l.connected_at.is_some())?;
        if p.qos > link.max_qos {
            return Some(PublishError::QoSNotSupported {
                max: link.max_qos as u8,
            });
        }
        if p.retain && !link.retain_available {
            return Some(PublishError::RetainNotSupported);
        }
        if let Some(max) = link.max_packet_size {
            // Measured before a packet id is assigned: stand one in, or the encoder refuses a
            // QoS 1/2 PUBLISH with id 0 and every such message would look too large.
            let mut probe = p.clone();
            if probe.qos != QoS::AtMostOnce && probe.pkid == 0 {
                probe.pkid = 1;
            }
            let size = Packet::Publish(probe)
                .encoded_len(self.config.protocol)
                .unwrap_or(usize::MAX);
            if size > max as usize {
                return Some(PublishError::PacketTooLarge { size, max });
            }
        }
        None
    }

    /// Sends what may be sent now: pending (un)subscribes, in-flight messages not yet sent on
    /// this connection (DUP=1 / PUBREL), then the queue, all within the broker's Receive Maximum.
    fn pump(&mut self, now: Instant) {
        if !self.is_connected() {
            return;
        }
        while let Some(req) = self.requests.pop_front() {
            let Some(req) = self.fit_request(req) else {
                continue;
            };
            let owner = match &req {
                Request::Subscribe { token, .. } => Owner::Subscribe(*token),
                Request::Unsubscribe { token, .. } => Owner::Unsubscribe(*token),
            };
            let Some(pkid) = self.pkids.alloc(owner) else {
                self.requests.push_front(req);
                break;
            };
            let packet = self.request_packet(&req, pkid);
            self.send_packet(&packet, now);
            self.sent_requests.insert(pkid, req);
        }
        if self.requests.is_empty() && self.requests.capacity() > 0 {
            // (Un)subscribes come in bursts (the connect, a resubscribe): give the room back
            // rather than keep it for the life of an idle connection.
            self.requests = VecDeque::new();
        }
        let recv_max = self.link.as_ref().map_or(0, |l| {
            usize::from(l.receive_maximum.min(self.inflight_window))
        });
        // Resend in-flight messages in their original order.
        while self.inflight.sent_count() < recv_max {
            let Some(seq) = self.inflight.first_unsent() else {
                break;
            };
            // This broker may grant less than the one the message was first sent to (Maximum
            // QoS, Retain Available, Maximum Packet Size): a PUBLISH it would refuse fails.
            let refused = match self.inflight.get(seq) {
                Some(out) if out.state != OutState::AwaitPubComp => {
                    self.check_against_broker(&out.publish)
                }
                _ => None,
            };
            if let Some(err) = refused {
                if let Some(out) = self.inflight.remove(seq) {
                    self.pkids.release(out.publish.pkid);
                    self.finish_publish(out.token, Err(err));
                }
                continue;
            }
            let Some(out) = self.inflight.get_mut(seq) else {
                break;
            };
            let packet = match out.state {
                OutState::AwaitPubComp => Packet::PubRel(PubRel::new(out.publish.pkid)),
                _ => {
                    out.publish.dup = true;
                    Packet::Publish(out.publish.clone())
                }
            };
            self.inflight.mark_sent(seq);
            self.send_packet(&packet, now);
        }
        // Then the queue.
        while let Some(front_qos) = self.queue.front().map(|q| q.publish.qos) {
            if front_qos != QoS::AtMostOnce && self.inflight.sent_count() >= recv_max {
                break;
            }
            let Some(mut q) = self.queue.pop_front() else {
                break;
            };
            if q.expired(now) {
                self.finish_publish(q.token, Err(PublishError::Expired));
                continue;
            }
            if let Some(s) = q.publish.properties.message_expiry_interval {
                let waited = now.saturating_duration_since(q.queued_at).as_secs();
                q.publish.properties.message_expiry_interval = Some(
                    s.saturating_sub(u32::try_from(waited).unwrap_or(u32::MAX))
                        .max(1),
                );
            }
            if let Some(err) = self.check_against_broker(&q.publish) {
                self.finish_publish(q.token, Err(err));
                continue;
            }
            if q.publish.qos == QoS::AtMostOnce {
                let wire = self.with_alias(q.publish);
                let ok = self.send_packet(&Packet::Publish(wire), now);
                let result = if ok {
                    Ok(PublishOutcome {
                        reason: ReasonCode::Success,
                    })
                } else {
                    Err(PublishError::Invalid("message cannot be encoded".into()))
                };
                self.finish_publish(q.token, result);
                continue;
            }
            let seq_hint = self.inflight.next_seq();
            let Some(pkid) = self.pkids.alloc(Owner::Publish(seq_hint)) else {
                self.queue.push_front(q);
                break;
            };
            q.publish.pkid = pkid;
            let state = if q.publish.qos == QoS::AtLeastOnce {
                OutState::AwaitPubAck
            } else {
                OutState::AwaitPubRec
            };
            let wire = self.with_alias(q.publish.clone());
            if !self.send_packet(&Packet::Publish(wire), now) {
                self.pkids.release(pkid);
                self.finish_publish(
                    q.token,
                    Err(PublishError::Invalid("message cannot be encoded".into())),
                );
                continue;
            }
            let id = q.token.0;
            self.store(|| StoreOp::Outgoing {
                id,
                state: if state == OutState::AwaitPubAck {
                    OutgoingState::AwaitPubAck(pkid)
                } else {
                    OutgoingState::AwaitPubRec(pkid)
                },
            });
            let seq = self.inflight.push(Outgoing {
                token: q.token,
                publish: q.publish,
                state,
                sent: true,
            });
            debug_assert_eq!(seq, seq_hint);
        }
        self.maybe_finish_drain(now);
    }

    fn with_alias(&mut self, p: Publish) -> Publish {
        let protocol = self.config.protocol;
        let Some(link) = self.link.as_mut() else {
            return p;
        };
        if link.topic_alias_max == 0 {
            return p;
        }
        // The 3-byte alias property can make a packet longer (it is added to the topic the
        // first time, and outweighs a topic shorter than 3 bytes): never past the broker's
        // Maximum Packet Size, which was checked without it.
        let max = link.max_packet_size;
        let fits = |c: &Publish| match max {
            None => true,
            Some(max) => Packet::Publish(c.clone())
                .encoded_len(protocol)
                .is_ok_and(|n| n <= max as usize),
        };
        if let Some(&alias) = link.out_aliases.get(p.topic.as_str()) {
            let mut c = p.clone();
            c.properties.topic_alias = Some(alias);
            c.topic = ByteStr::new();
            return if fits(&c) { c } else { p };
        }
        if link.next_out_alias < link.topic_alias_max {
            let mut c = p.clone();
            c.properties.topic_alias = Some(link.next_out_alias + 1);
            if fits(&c) {
                link.next_out_alias += 1;
                link.out_aliases
                    .insert(c.topic.clone(), link.next_out_alias);
                return c;
            }
        }
        p
    }

    fn on_publish(&mut self, mut p: Publish, now: Instant) {
        if let Some(alias) = p.properties.topic_alias {
            let max = self.config.topic_alias_maximum;
            if self.config.protocol != ProtocolVersion::V5 || alias == 0 || alias > max {
                self.protocol_violation(
                    ReasonCode::TopicAliasInvalid,
                    format!("topic alias {alias} outside 1..={max}"),
                    now,
                );
                return;
            }
            let Some(link) = self.link.as_mut() else {
                return;
            };
            if p.topic.is_empty() {
                match link.in_aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        self.protocol_violation(
                            ReasonCode::ProtocolError,
                            format!("topic alias {alias} used before it was set"),
                            now,
                        );
                        return;
                    }
                }
            } else {
                link.in_aliases.insert(alias, p.topic.clone());
            }
        } else if p.topic.is_empty() {
            self.protocol_violation(
                ReasonCode::ProtocolError,
                "PUBLISH with an empty topic and no alias".into(),
                now,
            );
            return;
        }
        match p.qos {
            QoS::AtMostOnce => self.events.push_back(Event::Message(p)),
            QoS::AtLeastOnce => {
                let pkid = p.pkid;
                self.events.push_back(Event::Message(p));
                self.send_packet(&Packet::PubAck(PubAck::new(pkid)), now);
            }
            QoS::ExactlyOnce => {
                let pkid = p.pkid;
                if !self.incoming_qos2.contains(&pkid) {
                    // Only MQTT 5 tells the broker our Receive Maximum (at least 1 is sent).
                    let recv_max = self.config.receive_maximum.max(1);
                    if self.config.protocol == ProtocolVersion::V5
                        && self.incoming_qos2.len() >= usize::from(recv_max)
                    {
                        self.protocol_violation(
                            ReasonCode::ReceiveMaximumExceeded,
                            format!("more than {recv_max} QoS 2 messages awaiting PUBREL"),
                            now,
                        );
                        return;
                    }
                    self.incoming_qos2.insert(pkid);
                    self.store(|| StoreOp::IncomingQos2Add(pkid));
                    self.events.push_back(Event::Message(p));
                }
                self.send_packet(&Packet::PubRec(PubRec::new(pkid)), now);
            }
        }
    }

    /// Reports a finished publish, and tells a durable store to forget it.
    fn finish_publish(&mut self, token: Token, result: Result<PublishOutcome, PublishError>) {
        self.store(|| StoreOp::Completed { id: token.0 });
        self.events.push_back(Event::PublishDone { token, result });
    }

    /// Records a session change for a durable store (only with `Config::persistence`).
    fn store(&mut self, op: impl FnOnce() -> StoreOp) {
        if self.config.persistence {
            self.events.push_back(Event::Store(op()));
        }
    }

    fn owner_seq(&self, pkid: u16) -> Option<u64> {
        match self.pkids.owner(pkid) {
            Some(Owner::Publish(seq)) => Some(seq),
            _ => None,
        }
    }

    fn complete(&mut self, seq: u64, result: Result<PublishOutcome, PublishError>, now: Instant) {
        if let Some(out) = self.inflight.remove(seq) {
            self.pkids.release(out.publish.pkid);
            self.finish_publish(out.token, result);
        }
        self.pump(now);
    }

    fn on_puback(&mut self, a: PubAck, now: Instant) {
        let Some(seq) = self.owner_seq(a.pkid) else {
            return;
        };
        match self.inflight.get_mut(seq).map(|o| o.state) {
            Some(OutState::AwaitPubAck) => {
                let result = if a.reason.is_success() {
                    Ok(PublishOutcome { reason: a.reason })
                } else {
                    Err(PublishError::Rejected(a.reason))
                };
                self.complete(seq, result, now);
            }
            // A broker without QoS 2 that takes the message at QoS 1 (RabbitMQ). Strictly a
            // protocol error, but closing would resend the message on every reconnect and
            // loop for ever: the message is failed back with a reason that says what
            // happened, the packet id is free again, and the connection stays up.
            Some(OutState::AwaitPubRec) if a.reason.is_success() => {
                self.complete(seq, Err(PublishError::DowngradedToQoS1), now);
            }
            Some(OutState::AwaitPubRec) => {
                self.complete(seq, Err(PublishError::Rejected(a.reason)), now);
            }
            Some(_) => self.protocol_violation(
                ReasonCode::ProtocolError,
                format!("PUBACK after PUBREC for QoS 2 packet id {}", a.pkid),
                now,
            ),
            None => {}
        }
    }

    fn on_pubrec(&mut self, r: PubRec, now: Instant) {
        let Some(seq) = self.owner_seq(r.pkid) else {
            // Unknown id: answer so the broker can finish its side.
            self.send_packet(
                &Packet::PubRel(PubRel {
                    pkid: r.pkid,
                    reason: if self.config.protocol == ProtocolVersion::V5 {
                        ReasonCode::PacketIdentifierNotFound
                    } else {
                        ReasonCode::Success
                    },
                    properties: Props::new(),
                }),
                now,
            );
            return;
        };
        match self.inflight.get_mut(seq) {
            Some(out)
                if out.state == OutState::AwaitPubRec || out.state == OutState::AwaitPubComp =>
            {
                if !r.reason.is_success() {
                    self.complete(seq, Err(PublishError::Rejected(r.reason)), now);
                    return;
                }
                out.state = OutState::AwaitPubComp;
                let id = out.token.0;
                self.store(|| StoreOp::Outgoing {
                    id,
                    state: OutgoingState::AwaitPubComp(r.pkid),
                });
                self.send_packet(&Packet::PubRel(PubRel::new(r.pkid)), now);
            }
            Some(_) => self.protocol_violation(
                ReasonCode::ProtocolError,
                format!("PUBREC for QoS 1 packet id {}", r.pkid),
                now,
            ),
            None => {}
        }
    }

    fn on_pubrel(&mut self, r: PubRel, now: Instant) {
        if self.incoming_qos2.remove(&r.pkid) {
            self.store(|| StoreOp::IncomingQos2Remove(r.pkid));
        }
        let mut comp = PubComp::new(r.pkid);
        if !r.reason.is_success() && self.config.protocol == ProtocolVersion::V5 {
            comp.reason = ReasonCode::PacketIdentifierNotFound;
        }
        self.send_packet(&Packet::PubComp(comp), now);
    }

    fn on_pubcomp(&mut self, c: PubComp, now: Instant) {
        let Some(seq) = self.owner_seq(c.pkid) else {
            return;
        };
        match self.inflight.get_mut(seq).map(|o| o.state) {
            Some(OutState::AwaitPubComp) => {
                let result = if c.reason.is_success() {
                    Ok(PublishOutcome { reason: c.reason })
                } else {
                    Err(PublishError::Rejected(c.reason))
                };
                self.complete(seq, result, now);
            }
            Some(_) => self.protocol_violation(
                ReasonCode::ProtocolError,
                format!("PUBCOMP before PUBREC for packet id {}", c.pkid),
                now,
            ),
            None => {}
        }
    }

    /// The request a SUBACK or UNSUBACK answers; the map's room is given back once it empties.
    fn take_sent_request(&mut self, pkid: u16) -> Option<Request> {
        let req = self.sent_requests.remove(&pkid);
        if self.sent_requests.is_empty() {
            self.sent_requests = IdMap::default();
        }
        req
    }

    fn on_suback(&mut self, s: SubAck, now: Instant) {
        match self.pkids.release(s.pkid) {
            Some(Owner::Subscribe(token)) => {
                let Some(Request::Subscribe { packet, .. }) = self.take_sent_request(s.pkid) else {
                    return;
                };
                if s.reasons.len() != packet.filters.len() {
                    let detail = format!(
                        "SUBACK has {} codes for {} filters",
                        s.reasons.len(),
                        packet.filters.len()
                    );
                    // Keep the request: the link closes and it is sent again on the next one
                    // (otherwise its token would never complete).
                    self.pkids.claim(s.pkid, Owner::Subscribe(token));
                    self.sent_requests
                        .insert(s.pkid, Request::Subscribe { token, packet });
                    self.protocol_violation(ReasonCode::ProtocolError, detail, now);
                    return;
                }
                for (f, rc) in packet.filters.iter().zip(&s.reasons) {
                    let ours = self.registry.get(&f.filter).is_some_and(|e| {
                        e.id == packet.properties.subscription_identifiers.first().copied()
                            || packet.properties.subscription_identifiers.is_empty()
                    });
                    if !ours {
                        continue;
                    }
                    if rc.is_success() {
                        if let Some(e) = self.registry.get_mut(&f.filter) {
                            e.confirmed = true;
                            let sub = e.clone();
                            self.store(|| StoreOp::SubscriptionUpsert(sub));
                        }
                    } else if self.registry.remove(&f.filter).is_some() {
                        self.store(|| StoreOp::SubscriptionRemove(f.filter.clone()));
                    }
                }
                self.request_done(true, token, Ok(s.reasons));
            }
            Some(Owner::Resubscribe) => self.on_resubscribe_ack(s, now),
            Some(other) => {
                self.pkids.claim(s.pkid, other);
                self.protocol_violation(
                    ReasonCode::ProtocolError,
                    format!("SUBACK for packet id {} that is not a SUBSCRIBE", s.pkid),
                    now,
                );
            }
            None => {}
        }
    }

    /// The SUBACK of a restore: refused filters leave the registry (nothing arrives for them
    /// any more) and are reported one by one; `Resubscribed` reports what was granted once the
    /// last SUBACK of the restore is in.
    fn on_resubscribe_ack(&mut self, s: SubAck, now: Instant) {
        let Some(r) = self.resubscribing.as_mut() else {
            return;
        };
        let Some(i) = r.pending.iter().position(|(pkid, _)| *pkid == s.pkid) else {
            return;
        };
        let expected = r.pending[i].1.len();
        if s.reasons.len() != expected {
            let detail = format!(
                "SUBACK has {} codes for {expected} filters",
                s.reasons.len()
            );
            self.pkids.claim(s.pkid, Owner::Resubscribe);
            self.protocol_violation(ReasonCode::ProtocolError, detail, now);
            return;
        }
        let (_, filters) = r.pending.remove(i);
        let mut refused = Vec::new();
        for (filter, rc) in filters.into_iter().zip(s.reasons) {
            if rc.is_success() {
                r.filters.push(filter);
                r.granted.push(rc);
            } else {
                refused.push((filter, rc));
            }
        }
        let done = r.pending.is_empty();
        for (filter, rc) in refused {
            // Only the restored entry: a newer subscribe of the same filter is the application's.
            if self.registry.get(&filter).is_some_and(|e| e.confirmed) {
                self.registry.remove(&filter);
                self.store(|| StoreOp::SubscriptionRemove(filter.clone()));
            }
            let error = CommandError::Refused(rc);
            self.emit(now, Lifecycle::ResubscribeFailed { filter, error });
        }
        if done {
            if let Some(r) = self.resubscribing.take() {
                let Resubscribing {
                    filters, granted, ..
                } = *r;
                if !filters.is_empty() {
                    self.emit(now, Lifecycle::Resubscribed { filters, granted });
                }
            }
        }
    }

    fn on_unsuback(&mut self, u: UnsubAck, now: Instant) {
        match self.pkids.release(u.pkid) {
            Some(Owner::Unsubscribe(token)) => {
                let n = match self.take_sent_request(u.pkid) {
                    Some(Request::Unsubscribe { packet, .. }) => {
                        if let Some(detail) = self.unsuback_count_error(&u, &packet) {
                            // Keep the request, as for a SUBACK with the wrong count.
                            self.pkids.claim(u.pkid, Owner::Unsubscribe(token));
                            self.sent_requests
                                .insert(u.pkid, Request::Unsubscribe { token, packet });
                            self.protocol_violation(ReasonCode::ProtocolError, detail, now);
                            return;
                        }
                        packet.filters.len()
                    }
                    _ => 0,
                };
                let reasons = if u.reasons.is_empty() {
                    vec![ReasonCode::Success; n]
                } else {
                    u.reasons
                };
                self.request_done(false, token, Ok(reasons));
            }
            Some(other) => {
                self.pkids.claim(u.pkid, other);
                self.protocol_violation(
                    ReasonCode::ProtocolError,
                    format!(
                        "UNSUBACK for packet id {} that is not an UNSUBSCRIBE",
                        u.pkid
                    ),
                    now,
                );
            }
            None => {}
        }
    }

    /// An MQTT 5 UNSUBACK must carry one reason code per filter of the UNSUBSCRIBE (section
    /// 3.11.3); a 3.1.1 UNSUBACK carries none.
    fn unsuback_count_error(&self, u: &UnsubAck, packet: &Unsubscribe) -> Option<String> {
        let expected = match self.config.protocol {
            ProtocolVersion::V5 => packet.filters.len(),
            ProtocolVersion::V311 => 0,
        };
        (u.reasons.len() != expected).then(|| {
            format!(
                "UNSUBACK has {} codes for {} filters",
                u.reasons.len(),
                packet.filters.len()
            )
        })
    }

    fn maybe_finish_drain(&mut self, now: Instant) {
        if self.state == State::Disconnecting && self.inflight.is_empty() && self.queue.is_empty() {
            self.finish_disconnect(now);
        }
    }

    fn finish_disconnect(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        let opts = self.disconnect.take().unwrap_or_default();
        if self.is_connected() {
            let mut properties = Properties::default();
            let reason = if self.config.protocol == ProtocolVersion::V5 {
                properties.session_expiry_interval = opts.session_expiry_interval;
                opts.reason
            } else {
                ReasonCode::Success
            };
            self.send_packet(
                &Packet::Disconnect(Disconnect {
                    reason,
                    properties: properties.into(),
                }),
                now,
            );
        }
        self.reauthentication_failed(&Reason::Local);
        if self.link.take().is_some() {
            self.actions.push_back(Action::Close);
        }
        self.timers.stop_all();
        self.set_state(State::Closed);
        for out in self.inflight.drain() {
            self.events.push_back(Event::PublishDone {
                token: out.token,
                result: Err(PublishError::Closed),
            });
        }
        while let Some(q) = self.queue.pop_front() {
            self.events.push_back(Event::PublishDone {
                token: q.token,
                result: Err(PublishError::Closed),
            });
        }
        let mut reqs: Vec<Request> = self.requests.drain(..).collect();
        reqs.extend(self.sent_requests.drain().map(|(_, r)| r));
        for r in reqs {
            match r {
                Request::Subscribe { token, .. } => {
                    self.request_done(true, token, Err(CommandError::Closed))
                }
                Request::Unsubscribe { token, .. } => {
                    self.request_done(false, token, Err(CommandError::Closed))
                }
            }
        }
        self.pkids = PkidPool::default();
        self.emit(now, Lifecycle::Disconnected);
    }
}
