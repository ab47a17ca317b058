//! The driver: the one task that owns the transport and the clock.
//!
//! It feeds the sans-IO [`Connection`] with bytes, time and commands, writes what it transmits,
//! opens and closes transports when it asks, and sleeps until its earliest deadline. A reconnect
//! is not a special path here: the core asks for a new transport and the same session goes on.
//!
//! It also logs, through `tracing` (target `steadfast`): a span `connection` per connect
//! attempt (fields `attempt`, `server`, shown with `user:***@` at most), and in it an event per
//! lifecycle change: INFO for attempts, connections, backoff delays, resubscriptions and the
//! application's disconnect; WARN for failed attempts (refusals included, with their reason),
//! lost connections with their reason, refused resubscriptions, session loss and going
//! dormant; ERROR for fatal refusals and store failures; DEBUG for the transport opening and
//! the application's commands. No event carries a password, authentication data or a payload.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use steadfast_proto::session::offline::Overflow;
use steadfast_proto::session::pkid::IdMap;
use steadfast_proto::topic::matches;
use steadfast_proto::{
    AckToken, Action, Connection, Event, PublishOutcome, ReasonCode, State, Token, TransportError,
};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::builder::ClientBuilder;
use crate::client::{
    Client, ClientError, ClientEvent, Command, Events, PublishCommand, Reply, SubscribeCommand,
    UnsubscribeCommand,
};
use crate::received::Received;
use crate::ring::{Ring, RingWriter};
use crate::store::{Store, StoreOp};
use crate::transport::{BoxTransport, ConnectFuture, Connector};

/// Undelivered messages beyond which the driver stops decoding input.
const MAX_PENDING: usize = 256;
/// Undecoded bytes the driver still reads while it holds input back for a slow application:
/// enough to see that the link is alive (see `Connection::handle_liveness`), bounded.
const HELD_MAX: usize = READ_CHUNK;
/// Commands taken per loop turn besides the one that woke it: enough that one store commit
/// covers a burst, few enough that I/O and timers get their turn.
const COMMANDS_PER_TURN: usize = 512;
/// Bytes read per call at most.
const READ_CHUNK: usize = 64 * 1024;
/// The read buffer's first size: it doubles (up to [`READ_CHUNK`]) whenever a read fills it.
/// An idle connection holds none (see [`poll_read`]); this is also the stack buffer it waits
/// with.
const READ_MIN: usize = 4 * 1024;
/// Unwritten bytes above which new publishes wait (in order, with those blocked by a full
/// offline queue) instead of being encoded: a publisher faster than the socket is held back,
/// and a QoS 0 publish completes close to the socket instead of far ahead of it.
const TX_HIGH_WATER: usize = 256 * 1024;

/// A subscribe's reply, and the route of its `subscribe_stream` handle if any.
type SubscribeWaiter = (Reply<Vec<ReasonCode>>, Option<mpsc::Sender<Received>>);
type Blocked = (
    steadfast_proto::Publish,
    Reply<PublishOutcome>,
    Option<oneshot::Sender<()>>,
);

struct Route {
    filter: String,
    /// The subscription identifier of the filter's latest SUBSCRIBE.
    id: Option<u32>,
    /// The one before: messages the broker sent before it took a later SUBSCRIBE of the
    /// filter carry it, and so does every message when that SUBSCRIBE was refused.
    previous: Option<u32>,
    tx: mpsc::Sender<Received>,
}

enum Target {
    Events,
    Route(mpsc::Sender<Received>),
}

pub(crate) fn spawn(b: ClientBuilder) -> (Client, Events) {
    let (driver, client, events) = new_driver(b);
    tokio::spawn(driver.run());
    (client, events)
}

fn new_driver(mut b: ClientBuilder) -> (Box<Driver>, Client, Events) {
    let store = b.store.take();
    let durable = store.is_some();
    let snapshot = b.snapshot.take();
    let credentials = b.credentials.take();
    let authenticator = b.authenticator.take();
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let wake_requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ev_tx, ev_rx) = mpsc::channel(b.event_capacity);
    let lifecycle = Ring::new(b.event_capacity);
    let (state_tx, state_rx) = watch::channel(State::Idle);
    let mut conn = match b.backoff {
        Some(p) => Connection::with_backoff(b.config, p),
        None => Connection::new(b.config, Instant::now().into_std()),
    };
    if let Some(h) = b.hook {
        conn.set_reason_hook(h);
    }
    if let Some(c) = credentials {
        conn.set_credentials_provider(c);
    }
    if let Some(a) = authenticator {
        conn.set_authenticator(a);
    }
    let mut batch = Vec::new();
    if let Some(snapshot) = snapshot {
        conn.restore(snapshot, Instant::now().into_std());
        if !conn.client_id().is_empty() {
            batch.push(StoreOp::ClientId(conn.client_id().clone()));
        }
    }
    let driver = Box::new(Driver {
        conn,
        connector: b.connector,
        cmd_rx,
        ev_tx,
        lifecycle: RingWriter(lifecycle.clone()),
        sent: 0,
        state_tx,
        pending: VecDeque::new(),
        publishes: IdMap::default(),
        subscribes: IdMap::default(),
        unsubscribes: IdMap::default(),
        routes: Vec::new(),
        blocked: VecDeque::new(),
        disconnect_waiters: Vec::new(),
        epoch: (Instant::now(), SystemTime::now()),
        cmd_closed: false,
        store,
        batch,
        accepted: IdMap::default(),
        wbuf_len: 0,
        reauth: None,
        wake_requested: wake_requested.clone(),
        acks: Vec::new(),
        span: tracing::Span::none(),
    });
    (
        driver,
        Client {
            tx: cmd_tx,
            state: state_rx,
            durable,
            wake_requested,
        },
        Events {
            rx: ev_rx,
            lifecycle,
            received: 0,
        },
    )
}

struct Driver {
    conn: Connection,
    connector: Arc<dyn Connector>,
    cmd_rx: mpsc::Receiver<Command>,
    ev_tx: mpsc::Sender<Box<ClientEvent>>,
    /// Lifecycle events: never waited on (see [`crate::ring`]).
    lifecycle: RingWriter,
    /// Messages put into `ev_tx` so far (orders lifecycle events among them).
    sent: u64,
    state_tx: watch::Sender<State>,
    /// Messages the application's channels had no room for, in order.
    pending: VecDeque<(Target, ClientEvent)>,
    publishes: IdMap<u64, Reply<PublishOutcome>>,
    subscribes: IdMap<u64, SubscribeWaiter>,
    unsubscribes: IdMap<u64, Reply<Vec<ReasonCode>>>,
    routes: Vec<Route>,
    blocked: VecDeque<Blocked>,
    disconnect_waiters: Vec<oneshot::Sender<()>>,
    epoch: (Instant, SystemTime),
    cmd_closed: bool,
    store: Option<Box<dyn Store>>,
    batch: Vec<StoreOp>,
    accepted: IdMap<u64, oneshot::Sender<()>>,
    /// Bytes of the write buffer not yet written (with the core's unsent bytes, held under
    /// [`TX_HIGH_WATER`]).
    wbuf_len: usize,
    /// The reply of the re-authentication under way (the core allows one at a time).
    reauth: Option<Reply<()>>,
    /// Set by a `reconnect_now()` that found the command channel full.
    wake_requested: Arc<std::sync::atomic::AtomicBool>,
    /// Manual acknowledgements taken, answered once the store commit after them is done.
    acks: Vec<Reply<()>>,
    /// The span of the current connect attempt and the connection it makes (see the module
    /// docs); entered only while logging, never across an await.
    span: tracing::Span,
}

#[allow(clippy::large_enum_variant)] // short-lived, one per loop turn
enum Wake {
    Connected(Result<BoxTransport, TransportError>),
    Io(IoEvent),
    Timer,
    Command(Option<Command>),
    Delivered,
}

enum IoEvent {
    Read,
    Eof,
    Wrote(usize),
    Flushed,
    Error(std::io::Error),
}

impl Driver {
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    /// The driver's loop. `self` is boxed: an `async fn` taking `mut self` by value keeps two
    /// copies of it in its future (the argument and the binding), and the future is the bulk
    /// of what an idle client holds.
    async fn run(mut self: Box<Self>) {
        let mut transport: Option<BoxTransport> = None;
        let mut connecting: Option<ConnectFuture> = None;
        let mut wbuf = Bytes::new();
        let mut needs_flush = false;
        let mut read_size = READ_MIN;
        // One timer, moved to each new deadline (cheaper than a new one per wake-up).
        let timer = tokio::time::sleep_until(Instant::now() + Duration::from_secs(86_400));
        tokio::pin!(timer);
        let now = self.now();
        self.conn.start(now);
        // Input read while the application was behind, not decoded yet.
        let mut held = false;
        loop {
            // Every turn, whatever woke it: expired deadlines fire (a flood that keeps the
            // socket readable must not starve keep-alive), waiting commands are taken and
            // waiting messages delivered, and held input is decoded once there is room.
            let now = self.now();
            if self.conn.poll_timeout().is_some_and(|d| d <= now) {
                self.conn.handle_timeout(now);
            }
            self.take_commands(now);
            if !self.pending.is_empty() {
                self.deliver_pending();
            }
            if held && self.pending.len() < MAX_PENDING {
                held = false;
                self.conn.process_input(now);
            }
            self.wbuf_len = wbuf.len();
            self.retry_blocked();
            if let Err(e) = self.process_events().await {
                // Boxed, like the other rarely-taken awaits below: the future is as large as its
                // largest await, and this one (with `flush_pending`) would double it.
                Box::pin(self.store_failed(e)).await;
                return;
            }
            while let Some(action) = self.conn.poll_action() {
                match action {
                    Action::Connect { server } => {
                        connecting = Some(self.connector.connect(&server));
                    }
                    Action::Close => {
                        connecting = None;
                        let mut rest = std::mem::take(&mut wbuf);
                        if let Some(more) = self.conn.poll_transmit() {
                            rest = if rest.is_empty() {
                                more
                            } else {
                                [rest, more].concat().into()
                            };
                        }
                        if let Some(t) = transport.take() {
                            Box::pin(close_transport(t, rest)).await;
                        }
                        needs_flush = false;
                    }
                }
            }
            if transport.is_some() {
                if wbuf.is_empty() {
                    if let Some(b) = self.conn.poll_transmit() {
                        wbuf = b;
                    }
                }
            } else {
                // Nothing can carry these bytes; the core resends what matters on reconnect.
                let _ = self.conn.poll_transmit();
            }
            if self.conn.state() == State::Closed && transport.is_none() {
                // Closed is final: answer the waiters, hand over the last events, and end.
                for w in self.disconnect_waiters.drain(..) {
                    let _ = w.send(());
                }
                Box::pin(self.flush_pending()).await;
                self.fail_all();
                return;
            }

            let deadline = self.conn.poll_timeout().map(Instant::from_std);
            if let Some(d) = deadline {
                if timer.deadline() != d {
                    timer.as_mut().reset(d);
                }
            }
            // A slow application holds input back (backpressure), except while waiting for
            // CONNACK: the driver stops decoding, and reads only a bounded amount more, which
            // tells the core the link is alive. The ping deadline stays armed: a link that
            // brings nothing is dead whether or not the application is slow.
            let hold = self.pending.len() >= MAX_PENDING && self.conn.state() != State::Connecting;
            let can_read = !hold || self.conn.read_buffer().len() < HELD_MAX;
            // Boxed, and only while events wait: inline, this wait (~200 bytes) would be part
            // of every client's future, idle or not.
            let delivery = self.pending.front().map(|(target, _)| {
                let target = match target {
                    Target::Events => Target::Events,
                    Target::Route(tx) => Target::Route(tx.clone()),
                };
                Box::pin(reserve(target, self.ev_tx.clone()))
            });
            let delivering = delivery.is_some();
            // Commands are read even while publishes wait for room in the offline queue: a
            // blocked publish must not hold up disconnect, wake/reconnect_now or subscribe
            // (later publishes queue up behind it, in order; see `handle_command`).
            let accept_cmds = !self.cmd_closed;

            let wake = tokio::select! {
                biased;
                r = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                    Wake::Connected(r)
                }
                ev = poll_io(transport.as_mut(), &wbuf, needs_flush, can_read, self.conn.read_buffer(), &mut read_size), if transport.is_some() => {
                    Wake::Io(ev)
                }
                _ = &mut timer, if deadline.is_some() => Wake::Timer,
                _ = async { if let Some(d) = delivery { d.await } }, if delivering => Wake::Delivered,
                cmd = self.cmd_rx.recv(), if accept_cmds => Wake::Command(cmd),
            };
            let now = self.now();
            match wake {
                Wake::Connected(Ok(t)) => {
                    connecting = None;
                    self.span.in_scope(
                        || tracing::debug!(target: "steadfast", "transport open, sending CONNECT"),
                    );
                    transport = Some(t);
                    wbuf = Bytes::new();
                    self.conn.handle_transport_open(now);
                }
                Wake::Connected(Err(e)) => {
                    connecting = None;
                    self.conn.handle_transport_error(e, now);
                }
                Wake::Io(IoEvent::Read) if hold => {
                    held = true;
                    self.conn.handle_liveness(now);
                }
                Wake::Io(IoEvent::Read) => self.conn.process_input(now),
                Wake::Io(IoEvent::Eof) => {
                    // What was held for a slow application came before the end: decode it
                    // first (bounded by HELD_MAX), so a broker's DISCONNECT keeps its reason.
                    if std::mem::take(&mut held) {
                        self.conn.process_input(now);
                    }
                    self.drop_transport(&mut transport, &mut wbuf);
                    self.conn
                        .handle_transport_error(TransportError::Closed, now);
                }
                Wake::Io(IoEvent::Wrote(n)) => {
                    wbuf.advance(n);
                    needs_flush = true;
                }
                Wake::Io(IoEvent::Flushed) => needs_flush = false,
                Wake::Io(IoEvent::Error(e)) => {
                    if std::mem::take(&mut held) {
                        self.conn.process_input(now);
                    }
                    self.drop_transport(&mut transport, &mut wbuf);
                    self.conn.handle_transport_error(transport_error(e), now);
                }
                Wake::Timer => self.conn.handle_timeout(now),
                Wake::Delivered => self.deliver_pending(),
                Wake::Command(Some(cmd)) => {
                    self.handle_command(cmd, now);
                    // What else is waiting is taken at the top of the next turn, so one store
                    // commit covers a whole batch.
                }
                Wake::Command(None) => self.commands_closed(now),
            }
        }
    }

    /// Takes commands already waiting, without waiting for more.
    fn take_commands(&mut self, now: std::time::Instant) {
        if self.cmd_closed {
            return;
        }
        if self
            .wake_requested
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.conn.reconnect_now(now);
        }
        for _ in 0..COMMANDS_PER_TURN {
            match self.cmd_rx.try_recv() {
                Ok(cmd) => self.handle_command(cmd, now),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.commands_closed(now);
                    return;
                }
            }
        }
    }

    /// Every [`Client`] handle is gone: disconnect gracefully.
    fn commands_closed(&mut self, now: std::time::Instant) {
        self.cmd_closed = true;
        if self.conn.state() != State::Closed {
            self.conn.disconnect(Default::default(), now);
        }
    }

    fn drop_transport(&mut self, transport: &mut Option<BoxTransport>, wbuf: &mut Bytes) {
        transport.take();
        *wbuf = Bytes::new();
    }

    /// Too many bytes wait to be written: new publishes wait (see [`TX_HIGH_WATER`]).
    fn tx_backlog(&self) -> bool {
        self.wbuf_len + self.conn.pending_transmit() >= TX_HIGH_WATER
    }

    fn handle_command(&mut self, cmd: Command, now: std::time::Instant) {
        match cmd {
            Command::Publish(cmd) => {
                let PublishCommand {
                    publish,
                    reply,
                    accepted,
                } = *cmd;
                if self.blocked.is_empty() && !self.tx_backlog() {
                    self.publish(publish, reply, accepted, now)
                } else {
                    // Behind a publish that waits for room: keep the order.
                    self.blocked.push_back((publish, reply, accepted));
                }
            }
            Command::Reauthenticate(reply) => match self.conn.reauthenticate(now) {
                // Answered when the broker's AUTH Success, or the end of the link, arrives.
                Ok(()) => self.reauth = Some(reply),
                Err(e) => {
                    let _ = reply.send(Err(ClientError::Command(e)));
                }
            },
            Command::Subscribe(cmd) => {
                let SubscribeCommand {
                    filters,
                    properties,
                    route,
                    reply,
                } = *cmd;
                let names: Vec<String> = filters.iter().map(|f| f.filter.to_string()).collect();
                self.span.in_scope(
                    || tracing::debug!(target: "steadfast", filters = ?names, "subscribe"),
                );
                match self.conn.subscribe(filters, properties, now) {
                    Ok(token) => {
                        // Handles of a filter share it: every one of them keeps receiving
                        // (a SUBSCRIBE again replaces the broker's subscription, and with it
                        // the subscription identifier its messages carry).
                        self.routes.retain(|r| !r.tx.is_closed());
                        for name in names {
                            let id = self
                                .conn
                                .subscriptions()
                                .find(|s| s.filter.as_str() == name)
                                .and_then(|s| s.id);
                            let mut previous = None;
                            for r in self.routes.iter_mut().filter(|r| r.filter == name) {
                                if r.id != id {
                                    r.previous = r.id;
                                }
                                r.id = id;
                                previous = r.previous;
                            }
                            if let Some(tx) = &route {
                                self.routes.push(Route {
                                    filter: name,
                                    id,
                                    previous,
                                    tx: tx.clone(),
                                });
                            }
                        }
                        self.subscribes.insert(token.0, (reply, route));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ClientError::Command(e)));
                    }
                }
            }
            Command::Unsubscribe(cmd) => {
                let UnsubscribeCommand {
                    filters,
                    properties,
                    reply,
                } = *cmd;
                self.span.in_scope(|| {
                    let names: Vec<&str> = filters.iter().map(|f| f.as_str()).collect();
                    tracing::debug!(target: "steadfast", filters = ?names, "unsubscribe")
                });
                for f in &filters {
                    self.routes.retain(|r| r.filter != f.as_str());
                }
                match self.conn.unsubscribe(filters, properties, now) {
                    Ok(token) => {
                        self.unsubscribes.insert(token.0, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ClientError::Command(e)));
                    }
                }
            }
            Command::Disconnect(cmd) => {
                let (options, reply) = *cmd;
                self.span
                    .in_scope(|| tracing::debug!(target: "steadfast", "disconnect requested"));
                if self.conn.state() == State::Closed {
                    let _ = reply.send(());
                } else {
                    self.disconnect_waiters.push(reply);
                    self.conn.disconnect(options, now);
                }
            }
            Command::ReconnectNow => {
                self.span
                    .in_scope(|| tracing::debug!(target: "steadfast", "reconnect_now requested"));
                self.conn.reconnect_now(now)
            }
            Command::Ack(cmd) => {
                let (token, reply) = *cmd;
                match self.conn.ack(token, now) {
                    // Answered after the next store commit (see `process_events`).
                    Ok(()) => self.acks.push(reply),
                    Err(e) => {
                        let _ = reply.send(Err(ClientError::Ack(e)));
                    }
                }
            }
        }
    }

    fn publish(
        &mut self,
        publish: steadfast_proto::Publish,
        reply: Reply<PublishOutcome>,
        accepted: Option<oneshot::Sender<()>>,
        now: std::time::Instant,
    ) {
        match self.conn.publish(publish, now) {
            Ok(token) => self.admitted(token, reply, accepted),
            Err((steadfast_proto::PublishError::QueueFull, p))
                if self.conn.config().queue.overflow == Overflow::Backpressure =>
            {
                self.blocked.push_back((p, reply, accepted));
            }
            Err((e, _)) => {
                let _ = reply.send(Err(ClientError::Publish(e)));
            }
        }
    }

    /// The core took a publish: its reply waits for the acknowledgement, and its "accepted"
    /// signal for the store commit (or fires now, with no store).
    fn admitted(
        &mut self,
        Token(t): Token,
        reply: Reply<PublishOutcome>,
        accepted: Option<oneshot::Sender<()>>,
    ) {
        self.publishes.insert(t, reply);
        if let Some(acc) = accepted {
            if self.store.is_some() {
                self.accepted.insert(t, acc);
            } else {
                let _ = acc.send(());
            }
        }
    }

    /// Publishes waiting for room in the offline queue (backpressure) go in as room appears.
    fn retry_blocked(&mut self) {
        while let Some((p, _, _)) = self.blocked.front() {
            if (self.tx_backlog() || !self.conn.queue_has_room_for(p))
                && self.conn.state() != State::Closed
            {
                break;
            }
            let Some((p, reply, accepted)) = self.blocked.pop_front() else {
                break;
            };
            let now = self.now();
            match self.conn.publish(p, now) {
                Ok(token) => self.admitted(token, reply, accepted),
                Err((e, p)) => {
                    if e == steadfast_proto::PublishError::QueueFull {
                        self.blocked.push_front((p, reply, accepted));
                        break;
                    }
                    let _ = reply.send(Err(ClientError::Publish(e)));
                }
            }
        }
    }

    /// Takes the core's events: store operations are committed first (one batch), then the
    /// other events go to the application, so nothing is shown or acknowledged before it is
    /// durable.
    async fn process_events(&mut self) -> Result<(), crate::store::StoreError> {
        let mut events = Vec::new();
        let mut newly_accepted = Vec::new();
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::Store(op) => {
                    if let StoreOp::Accepted { id, .. } = &op {
                        newly_accepted.push(*id);
                    }
                    self.batch.push(op);
                }
                other => events.push(other),
            }
        }
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            if let Some(store) = self.store.as_mut() {
                store.commit(batch).await?;
            }
        }
        // Acknowledgements taken before this commit: durable now.
        for reply in self.acks.drain(..) {
            let _ = reply.send(Ok(()));
        }
        for id in newly_accepted {
            if let Some(acc) = self.accepted.remove(&id) {
                let _ = acc.send(());
            }
        }
        for ev in events {
            self.dispatch(ev);
        }
        Ok(())
    }

    async fn store_failed(&mut self, e: crate::store::StoreError) {
        self.span
            .in_scope(|| tracing::error!(error = %e, "the session store failed: the client stops"));
        let at = SystemTime::now();
        let event = steadfast_proto::Lifecycle::Fatal {
            reason: steadfast_proto::Reason::Storage(e.to_string()),
        };
        self.lifecycle.0.push(self.sent, at, event);
        self.state_tx.send_replace(State::Failed);
        self.flush_pending().await;
        self.fail_all();
        for w in self.disconnect_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    fn to_system(&self, at: std::time::Instant) -> SystemTime {
        let base = self.epoch.0.into_std();
        match at.checked_duration_since(base) {
            Some(d) => self.epoch.1 + d,
            None => self.epoch.1 - base.saturating_duration_since(at),
        }
    }

    fn dispatch(&mut self, ev: Event) {
        {
            match ev {
                Event::Lifecycle { at, event } => {
                    self.log(&event);
                    let at = self.to_system(at);
                    self.lifecycle.0.push(self.sent, at, event);
                }
                Event::Message { publish, ack } => self.route(publish, ack),
                Event::PublishDone { token, result } => {
                    if let Some(reply) = self.publishes.remove(&token.0) {
                        let _ = reply.send(result.map_err(ClientError::Publish));
                    }
                }
                Event::SubscribeDone { token, result } => {
                    if let Some((reply, route)) = self.subscribes.remove(&token.0) {
                        if let (Some(tx), Ok(codes)) = (&route, &result) {
                            if codes.iter().all(|c| !c.is_success()) {
                                self.routes.retain(|r| !r.tx.same_channel(tx));
                            }
                        }
                        let _ = reply.send(result.map_err(ClientError::Command));
                    }
                }
                Event::UnsubscribeDone { token, result } => {
                    if let Some(reply) = self.unsubscribes.remove(&token.0) {
                        let _ = reply.send(result.map_err(ClientError::Command));
                    }
                }
                Event::StateChanged(s) => {
                    self.state_tx.send_replace(s);
                }
                Event::Reauthenticated => {
                    if let Some(reply) = self.reauth.take() {
                        let _ = reply.send(Ok(()));
                    }
                }
                Event::ReauthenticationFailed { reason } => {
                    if let Some(reply) = self.reauth.take() {
                        let _ = reply.send(Err(ClientError::Reauthentication(reason)));
                    }
                }
                Event::Store(_) => {}
                // An event of a newer core that this driver does not act on.
                _ => {}
            }
        }
    }

    /// Logs a lifecycle event (see the module docs); a `Connecting` starts a new span.
    fn log(&mut self, event: &steadfast_proto::Lifecycle) {
        use steadfast_proto::Lifecycle as L;
        use tracing::{error, info, warn};
        if let L::Connecting { attempt, server } = event {
            self.span = tracing::info_span!(
                target: "steadfast",
                "connection",
                attempt = *attempt,
                server = %server
            );
        }
        let _in = self.span.enter();
        let ms = |d: &Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match event {
            L::Connecting { .. } => info!(target: "steadfast", "connecting"),
            L::Connected {
                session_present,
                granted,
                ..
            } => info!(
                target: "steadfast",
                session_present = *session_present,
                keep_alive_s = granted.keep_alive.as_secs(),
                receive_maximum = granted.receive_maximum,
                "connected"
            ),
            L::ConnectFailed { reason, .. } => {
                warn!(target: "steadfast", %reason, "connect attempt failed")
            }
            L::BadServerReference { reference, error } => warn!(
                target: "steadfast",
                reference = %reference,
                %error,
                "ignored a Server Reference that does not parse"
            ),
            L::ConnectionLost { reason, uptime } => warn!(
                target: "steadfast",
                %reason,
                initiator = %reason.initiator(),
                uptime_ms = ms(uptime),
                "connection lost"
            ),
            L::Reconnecting { attempt, delay } => info!(
                target: "steadfast",
                next_attempt = *attempt,
                delay_ms = ms(delay),
                "reconnecting after the backoff delay"
            ),
            L::Resubscribed { filters, granted } => {
                let filters: Vec<&str> = filters.iter().map(|f| f.as_str()).collect();
                let granted: Vec<u8> = granted.iter().map(|c| *c as u8).collect();
                info!(
                    target: "steadfast",
                    filters = ?filters,
                    granted = ?granted,
                    "resubscribed"
                )
            }
            L::ResubscribeFailed { filter, error } => warn!(
                target: "steadfast",
                filter = filter.as_str(),
                %error,
                "resubscription failed"
            ),
            L::SessionLost { republished } => warn!(
                target: "steadfast",
                republished = *republished,
                "the broker lost the session"
            ),
            L::Dormant { attempts } => warn!(
                target: "steadfast",
                attempts = *attempts,
                "dormant: no more attempts until woken"
            ),
            L::Fatal { reason } => {
                error!(target: "steadfast", %reason, "fatal: no more attempts")
            }
            L::Disconnected => info!(target: "steadfast", "disconnected"),
            other => info!(target: "steadfast", event = other.name(), "lifecycle"),
        }
    }

    fn route(&mut self, p: steadfast_proto::Publish, ack: Option<AckToken>) {
        if !self.routes.is_empty() {
            // A dropped handle's route goes first: its messages go to `Events`, as after the
            // first one that found it gone.
            self.routes.retain(|r| !r.tx.is_closed());
            let ids = &p.properties.subscription_identifiers;
            let mut targets: Vec<mpsc::Sender<Received>> = Vec::new();
            for r in &self.routes {
                let hit = match r.id {
                    Some(id) if !ids.is_empty() => {
                        ids.contains(&id) || r.previous.is_some_and(|p| ids.contains(&p))
                    }
                    _ => matches(&r.filter, &p.topic),
                };
                if hit && !targets.iter().any(|t| t.same_channel(&r.tx)) {
                    targets.push(r.tx.clone());
                }
            }
            if !targets.is_empty() {
                for tx in targets {
                    self.push(
                        Target::Route(tx),
                        ClientEvent::Message(Received::new(p.clone(), ack)),
                    );
                }
                return;
            }
        }
        self.push(Target::Events, ClientEvent::Message(Received::new(p, ack)));
    }

    /// Delivers a message at once when its channel has room; otherwise keeps it in order, and
    /// input is held back once too many wait.
    fn push(&mut self, target: Target, ev: ClientEvent) {
        if !self.pending.is_empty() {
            self.pending.push_back((target, ev));
            return;
        }
        if let Some(back) = self.try_deliver(target, ev) {
            self.pending.push_back(back);
        }
    }

    fn try_deliver(&mut self, target: Target, ev: ClientEvent) -> Option<(Target, ClientEvent)> {
        match target {
            Target::Events => match self.ev_tx.try_send(Box::new(ev)) {
                Ok(()) => {
                    self.sent += 1;
                    None
                }
                Err(mpsc::error::TrySendError::Full(ev)) => Some((Target::Events, *ev)),
                Err(mpsc::error::TrySendError::Closed(ev)) => {
                    self.discarded(&ev);
                    None
                }
            },
            Target::Route(tx) => {
                let ClientEvent::Message(m) = ev else {
                    return None;
                };
                match tx.try_send(m) {
                    Ok(()) => None,
                    Err(mpsc::error::TrySendError::Full(m)) => {
                        Some((Target::Route(tx), ClientEvent::Message(m)))
                    }
                    Err(mpsc::error::TrySendError::Closed(m)) => {
                        self.routes.retain(|r| !r.tx.same_channel(&tx));
                        self.discarded(&ClientEvent::Message(m));
                        None
                    }
                }
            }
        }
    }

    /// A message nobody can receive any more (its `Events` or `Subscription` was dropped) is
    /// acknowledged, as without manual acks, so it does not hold back the acknowledgements
    /// after it. Not once every `Client` handle is gone: the application is ending, and what
    /// it did not acknowledge is delivered again to its next run.
    fn discarded(&mut self, ev: &ClientEvent) {
        if let ClientEvent::Message(m) = ev {
            if let Some(token) = m.ack_token().filter(|_| !self.cmd_closed) {
                let now = self.now();
                let _ = self.conn.ack(token, now);
            }
        }
    }

    fn deliver_pending(&mut self) {
        while let Some((target, ev)) = self.pending.pop_front() {
            if let Some(back) = self.try_deliver(target, ev) {
                self.pending.push_front(back);
                break;
            }
        }
    }

    async fn flush_pending(&mut self) {
        while let Some((target, ev)) = self.pending.pop_front() {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                match (target, ev) {
                    // The last events are in the ring already: these follow them.
                    (Target::Events, ev) => {
                        let _ = self.ev_tx.send(Box::new(ev)).await;
                    }
                    (Target::Route(tx), ClientEvent::Message(m)) => {
                        let _ = tx.send(m).await;
                    }
                    _ => {}
                }
            })
            .await;
        }
    }

    fn fail_all(&mut self) {
        for (_, reply) in self.publishes.drain() {
            let _ = reply.send(Err(ClientError::Closed));
        }
        for (_, reply, _) in self.blocked.drain(..) {
            let _ = reply.send(Err(ClientError::Closed));
        }
        for (_, (reply, _)) in self.subscribes.drain() {
            let _ = reply.send(Err(ClientError::Closed));
        }
        for (_, reply) in self.unsubscribes.drain() {
            let _ = reply.send(Err(ClientError::Closed));
        }
        for reply in self.acks.drain(..) {
            let _ = reply.send(Err(ClientError::Closed));
        }
        self.routes.clear();
    }
}

/// The core's view of an I/O error: a [`TransportError`] the transport carried inside it (a
/// late certificate refusal, say) as itself, anything else as [`TransportError::Io`], which
/// keeps the `io::Error` (its kind, and as its source).
fn transport_error(e: std::io::Error) -> TransportError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TransportError>())
    {
        Some(t) => t.clone(),
        None => TransportError::Io(e.into()),
    }
}

async fn close_transport(mut t: BoxTransport, rest: Bytes) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        if !rest.is_empty() {
            t.write_all(&rest).await?;
        }
        t.flush().await?;
        t.shutdown().await
    })
    .await;
}

/// Waits for room for the next pending event (a closed channel also resolves: the event is
/// then discarded).
async fn reserve(target: Target, ev_tx: mpsc::Sender<Box<ClientEvent>>) {
    match target {
        Target::Events => {
            let _ = ev_tx.reserve().await;
        }
        Target::Route(tx) => {
            let _ = tx.reserve().await;
        }
    }
}

/// Writes (and flushes) pending bytes and reads into the core's buffer, whichever is ready.
/// One stream, no split and no lock.
async fn poll_io(
    transport: Option<&mut BoxTransport>,
    wbuf: &Bytes,
    needs_flush: bool,
    can_read: bool,
    rbuf: &mut bytes::BytesMut,
    read_size: &mut usize,
) -> IoEvent {
    let Some(t) = transport else {
        return std::future::pending().await;
    };
    poll_fn(|cx| {
        if !wbuf.is_empty() {
            match Pin::new(&mut **t).poll_write(cx, wbuf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(IoEvent::Error(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => return Poll::Ready(IoEvent::Wrote(n)),
                Poll::Ready(Err(e)) => return Poll::Ready(IoEvent::Error(e)),
                Poll::Pending => {}
            }
        } else if needs_flush {
            match Pin::new(&mut **t).poll_flush(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(IoEvent::Flushed),
                Poll::Ready(Err(e)) => return Poll::Ready(IoEvent::Error(e)),
                Poll::Pending => {}
            }
        }
        if can_read {
            if let Poll::Ready(ev) = poll_read(t, cx, rbuf, read_size) {
                return Poll::Ready(ev);
            }
        }
        Poll::Pending
    })
    .await
}

/// Reads into the core's buffer; the buffer grows (up to [`READ_CHUNK`]) when a read fills it.
///
/// An idle connection holds no read buffer: when the buffer is empty and a read would block,
/// it is released (a grown one first shrinks its growth step back, read by read, so a busy
/// connection keeps it), and a released buffer is waited on with a stack buffer and allocated
/// again only when bytes arrive.
fn poll_read(
    t: &mut BoxTransport,
    cx: &mut std::task::Context<'_>,
    rbuf: &mut bytes::BytesMut,
    read_size: &mut usize,
) -> Poll<IoEvent> {
    if rbuf.capacity() == 0 {
        return poll_read_released(t, cx, rbuf, read_size);
    }
    if rbuf.capacity() - rbuf.len() < READ_MIN / 2 {
        rbuf.reserve(*read_size);
    }
    let spare = rbuf.capacity() - rbuf.len();
    match tokio_util::io::poll_read_buf(Pin::new(&mut **t), cx, rbuf) {
        Poll::Ready(Ok(0)) => Poll::Ready(IoEvent::Eof),
        Poll::Ready(Ok(n)) => {
            if n >= spare {
                *read_size = (*read_size * 2).min(READ_CHUNK);
            }
            Poll::Ready(IoEvent::Read)
        }
        Poll::Ready(Err(e)) => Poll::Ready(IoEvent::Error(e)),
        Poll::Pending => {
            if rbuf.is_empty() {
                if *read_size > READ_MIN {
                    *read_size = (*read_size / 2).max(READ_MIN);
                } else {
                    *rbuf = bytes::BytesMut::new();
                }
            }
            Poll::Pending
        }
    }
}

/// Reads with no buffer held: into the stack, then into a new buffer of the current size.
fn poll_read_released(
    t: &mut BoxTransport,
    cx: &mut std::task::Context<'_>,
    rbuf: &mut bytes::BytesMut,
    read_size: &mut usize,
) -> Poll<IoEvent> {
    let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); READ_MIN];
    let mut buf = tokio::io::ReadBuf::uninit(&mut stack);
    match Pin::new(&mut **t).poll_read(cx, &mut buf) {
        Poll::Ready(Ok(())) => {
            let data = buf.filled();
            if data.is_empty() {
                return Poll::Ready(IoEvent::Eof);
            }
            if data.len() == READ_MIN {
                *read_size = (*read_size * 2).min(READ_CHUNK);
            }
            rbuf.reserve((*read_size).max(data.len()));
            rbuf.extend_from_slice(data);
            Poll::Ready(IoEvent::Read)
        }
        Poll::Ready(Err(e)) => Poll::Ready(IoEvent::Error(e)),
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client's task holds the driver's future for its whole life, idle or not: its size
    /// is per-connection memory. The `Driver` (with the core's `Connection`) is boxed apart, and
    /// the rarely-taken awaits are boxed, so the future is only the loop's own state.
    #[test]
    fn driver_future_stays_small() {
        let (driver, _client, _events) = new_driver(ClientBuilder::new());
        let fut = driver.run();
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 1024, "the driver's future is {size} bytes");
    }

    /// An application often awaits its first `subscribe` in the task that then reads the
    /// client's events for good: the future's size stays with that task.
    #[test]
    fn client_futures_stay_small() {
        let (_driver, client, _events) = new_driver(ClientBuilder::new());
        let sub = client.subscribe("a/b", steadfast_proto::QoS::AtLeastOnce);
        let size = std::mem::size_of_val(&sub);
        assert!(size <= 320, "subscribe's future is {size} bytes");
        let publish = client.publish("a/b", "x");
        let size = std::mem::size_of_val(&publish);
        assert!(size <= 320, "publish's future is {size} bytes");
        let send =
            client.send(crate::Message::new("a/b", "x").qos(steadfast_proto::QoS::AtLeastOnce));
        let size = std::mem::size_of_val(&send);
        assert!(size <= 320, "send's future is {size} bytes");
    }

    /// Each client's command channel allocates 32 slots of `Command` up front, its event
    /// channel 32 of its item: both stay one word (plus the tag).
    #[test]
    fn channel_items_stay_small() {
        assert!(std::mem::size_of::<Command>() <= 16);
        assert!(std::mem::size_of::<Box<ClientEvent>>() <= 8);
    }

    #[test]
    fn a_transport_error_carried_in_an_io_error_is_kept() {
        let fatal = TransportError::TlsFatal("certificate revoked".into());
        let e = std::io::Error::new(std::io::ErrorKind::PermissionDenied, fatal.clone());
        assert_eq!(transport_error(e), fatal);
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let kept = transport_error(plain);
        assert!(matches!(kept, TransportError::Io(_)));
        assert_eq!(kept.io_kind(), Some(std::io::ErrorKind::ConnectionReset));
        let source = std::error::Error::source(&kept).expect("the io::Error is the source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    }

    fn read_once(
        t: &mut BoxTransport,
        rbuf: &mut bytes::BytesMut,
        read_size: &mut usize,
    ) -> Poll<IoEvent> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        poll_read(t, &mut cx, rbuf, read_size)
    }

    /// An idle connection holds no read buffer: it is released once empty with nothing to
    /// read, and allocated again when bytes arrive.
    #[tokio::test]
    async fn idle_connection_releases_its_read_buffer() {
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let mut t: BoxTransport = Box::new(near);
        let mut rbuf = bytes::BytesMut::new();
        let mut read_size = READ_MIN;
        assert!(read_once(&mut t, &mut rbuf, &mut read_size).is_pending());
        assert_eq!(rbuf.capacity(), 0);

        far.write_all(b"0123456789").await.unwrap();
        assert!(matches!(
            read_once(&mut t, &mut rbuf, &mut read_size),
            Poll::Ready(IoEvent::Read)
        ));
        assert_eq!(&rbuf[..], b"0123456789");
        assert!(rbuf.capacity() >= READ_MIN);

        // Not yet consumed: a would-block read keeps the buffer.
        assert!(read_once(&mut t, &mut rbuf, &mut read_size).is_pending());
        assert_eq!(&rbuf[..], b"0123456789");
        // Consumed (as the core does when it decodes a packet): released.
        rbuf.advance(10);
        assert!(read_once(&mut t, &mut rbuf, &mut read_size).is_pending());
        assert_eq!(rbuf.capacity(), 0);

        drop(far);
        assert!(matches!(
            read_once(&mut t, &mut rbuf, &mut read_size),
            Poll::Ready(IoEvent::Eof)
        ));
    }

    /// A buffer grown by bulk reads is kept across would-block reads while its growth step
    /// shrinks back, so a busy connection does not allocate per read; then it is released.
    #[tokio::test]
    async fn grown_read_buffer_is_kept_while_busy() {
        let (near, mut far) = tokio::io::duplex(256 * 1024);
        let mut t: BoxTransport = Box::new(near);
        let mut rbuf = bytes::BytesMut::new();
        let mut read_size = READ_MIN;
        let chunk = vec![7u8; READ_CHUNK];
        far.write_all(&chunk).await.unwrap();
        let mut got = 0;
        while got < READ_CHUNK {
            match read_once(&mut t, &mut rbuf, &mut read_size) {
                Poll::Ready(IoEvent::Read) => {
                    got += rbuf.len();
                    rbuf.advance(rbuf.len());
                }
                other => panic!("expected a read, got pending: {}", other.is_pending()),
            }
        }
        assert!(read_size > READ_MIN, "reads that fill the buffer grow it");
        let mut kept = 0;
        while rbuf.capacity() > 0 {
            assert!(read_once(&mut t, &mut rbuf, &mut read_size).is_pending());
            kept += 1;
            assert!(kept <= 8, "never released");
        }
        assert!(kept > 1, "released at the first would-block read");
        assert_eq!(read_size, READ_MIN);
    }
}
