//! The cloneable [`Client`] handle, the [`Events`] stream and per-filter [`Subscription`]s.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use steadfast_proto::topic::{TopicError, TopicFilter, TopicName};
use steadfast_proto::{
    AckError, AckToken, ByteStr, CommandError, DisconnectOptions, Lifecycle, Properties, Props,
    Publish, PublishError, PublishOutcome, QoS, Reason, ReasonCode, State, SubscribeFilter,
    SubscriptionOptions,
};

use crate::message::Message;
use tokio::sync::{mpsc, oneshot, watch};

use crate::received::Received;

/// What the application receives on [`Events`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // messages are the common case; boxing them costs more
#[non_exhaustive]
pub enum ClientEvent {
    /// A lifecycle transition, stamped with wall-clock time.
    Lifecycle {
        /// When it happened.
        at: SystemTime,
        /// What happened.
        event: Lifecycle,
    },
    /// A message that no [`Subscription`] handle claimed.
    Message(Received),
    /// The application did not read its events for a while: the `missed` oldest lifecycle
    /// events were dropped to keep memory bounded (the ones after them follow). Messages are
    /// never dropped this way; [`Client::state`] always has the current state.
    Lagged {
        /// How many lifecycle events were dropped.
        missed: u64,
    },
}

/// Why a client call failed. The cause is kept: [`std::error::Error::source`] is the
/// [`PublishError`], [`CommandError`], [`TopicError`] or [`Reason`] inside.
///
/// ```
/// use std::error::Error;
/// use steadfast::{proto::topic::TopicError, ClientError};
///
/// let e = ClientError::InvalidTopic(TopicError::WildcardInName);
/// assert!(matches!(e, ClientError::InvalidTopic(TopicError::WildcardInName)));
/// assert!(e.source().is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// A topic name or topic filter given to the call is not valid; nothing was sent.
    InvalidTopic(TopicError),
    /// The publish did not complete.
    Publish(PublishError),
    /// The command was refused.
    Command(CommandError),
    /// The broker refused a subscription or unsubscription.
    Refused(ReasonCode),
    /// A re-authentication did not succeed: the connection closed before the broker accepted
    /// it (a refusal arrives as DISCONNECT, for example Not authorized 0x87).
    Reauthentication(Reason),
    /// A manual acknowledgement was not taken (see [`Client::ack`]).
    Ack(AckError),
    /// The client's driver task has ended (the client was closed).
    Closed,
    /// A [`blocking`](crate::blocking) call was made from inside an async runtime, where it
    /// would block a runtime thread; use the async [`Client`] there.
    BlockingInRuntime,
}

impl core::fmt::Display for ClientError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ClientError::InvalidTopic(e) => write!(f, "invalid topic: {e}"),
            ClientError::Publish(e) => write!(f, "publish failed: {e}"),
            ClientError::Command(e) => write!(f, "{e}"),
            ClientError::Refused(rc) => write!(f, "refused by the broker: {rc}"),
            ClientError::Reauthentication(r) => write!(f, "re-authentication failed: {r}"),
            ClientError::Ack(e) => write!(f, "acknowledgement not sent: {e}"),
            ClientError::Closed => f.write_str("client is closed"),
            ClientError::BlockingInRuntime => f.write_str(
                "a steadfast::blocking call was made inside an async runtime; use steadfast::Client there",
            ),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::InvalidTopic(e) => Some(e),
            ClientError::Publish(e) => Some(e),
            ClientError::Command(e) => Some(e),
            ClientError::Reauthentication(r) => Some(r),
            ClientError::Ack(e) => Some(e),
            ClientError::BlockingInRuntime => None,
            ClientError::Refused(_) | ClientError::Closed => None,
        }
    }
}

impl From<TopicError> for ClientError {
    fn from(e: TopicError) -> Self {
        ClientError::InvalidTopic(e)
    }
}

impl From<PublishError> for ClientError {
    fn from(e: PublishError) -> Self {
        ClientError::Publish(e)
    }
}

impl From<AckError> for ClientError {
    fn from(e: AckError) -> Self {
        ClientError::Ack(e)
    }
}

impl From<CommandError> for ClientError {
    fn from(e: CommandError) -> Self {
        ClientError::Command(e)
    }
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// What a [`Client`] asks of the driver.
///
/// Every variant is one word: every client's command channel allocates a block of 32 slots
/// of this type up front, so anything larger is boxed (the publish, with its MQTT 5
/// properties, is ~470 bytes; the others are rare).
pub(crate) enum Command {
    Publish(Box<PublishCommand>),
    Reauthenticate(Reply<()>),
    Subscribe(Box<SubscribeCommand>),
    Unsubscribe(Box<UnsubscribeCommand>),
    Disconnect(Box<(DisconnectOptions, oneshot::Sender<()>)>),
    Ack(Box<(AckToken, Reply<()>)>),
    ReconnectNow,
}

pub(crate) struct PublishCommand {
    pub(crate) publish: Publish,
    pub(crate) reply: Reply<PublishOutcome>,
    pub(crate) accepted: Option<oneshot::Sender<()>>,
}

pub(crate) struct SubscribeCommand {
    pub(crate) filters: Vec<SubscribeFilter>,
    pub(crate) properties: Properties,
    pub(crate) route: Option<mpsc::Sender<Received>>,
    pub(crate) reply: Reply<Vec<ReasonCode>>,
}

pub(crate) struct UnsubscribeCommand {
    pub(crate) filters: Vec<ByteStr>,
    pub(crate) properties: Properties,
    pub(crate) reply: Reply<Vec<ReasonCode>>,
}

/// A cloneable handle to a running client. Dropping every handle disconnects gracefully.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) state: watch::Receiver<State>,
    /// A session store is configured: acceptance means durable, so it is confirmed by the
    /// driver; without one, a publish is accepted once it is queued to the driver.
    pub(crate) durable: bool,
    /// A `reconnect_now()` that found the command channel full (see there).
    pub(crate) wake_requested: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Client {
    /// Publishes `payload` to `topic` at QoS 0, not retained, without properties; for a QoS,
    /// the retain flag or MQTT 5 properties, build a [`Message`] and [`send`](Self::send) it.
    ///
    /// `topic` is a `&str`, a `String` or a [`TopicName`]: an invalid one (a wildcard,
    /// U+0000, empty) fails at once with [`ClientError::InvalidTopic`]. A QoS 0 message has no
    /// acknowledgement: this resolves once it is encoded into the connection's transmit buffer,
    /// which is before the bytes reach the socket, so a message that resolved can still be
    /// lost if the connection breaks right then. While disconnected, it waits in the offline
    /// queue (unless [`queue_qos0`](crate::ClientBuilder::queue_qos0) is off).
    ///
    /// ```no_run
    /// # async fn f(client: steadfast::Client) -> Result<(), steadfast::ClientError> {
    /// client.publish("sensors/1/temp", "21.5").await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish<T>(
        &self,
        topic: T,
        payload: impl Into<Bytes>,
    ) -> Result<PublishOutcome, ClientError>
    where
        T: TryInto<TopicName>,
        T::Error: Into<TopicError>,
    {
        // The command is built before the first await: an async fn keeps its arguments in its
        // future, and the boxed command is smaller than they are.
        let topic = topic
            .try_into()
            .map_err(|e| ClientError::InvalidTopic(e.into()))?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Publish(Box::new(PublishCommand {
            publish: Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: topic.into_inner(),
                pkid: 0,
                properties: Props::new(),
                payload: payload.into(),
            },
            reply,
            accepted: None,
        }));
        self.request(cmd, rx).await
    }

    /// Sends a [`Message`] and waits until it is acknowledged: PUBACK for QoS 1, PUBCOMP for
    /// QoS 2; a QoS 0 message resolves once encoded (see [`publish`](Self::publish)). While
    /// disconnected, the message waits in the offline queue and goes out after the reconnect.
    /// A message with an invalid topic or response topic fails at once with
    /// [`ClientError::InvalidTopic`].
    ///
    /// ```no_run
    /// # async fn f(client: steadfast::Client) -> Result<(), steadfast::ClientError> {
    /// use steadfast::{Message, QoS};
    /// let message = Message::new("sensors/1/temp", "21.5")
    ///     .qos(QoS::AtLeastOnce)
    ///     .retain(true)
    ///     .content_type("text/plain");
    /// client.send(message).await?; // acknowledged by the broker (PUBACK)
    /// # Ok(()) }
    /// ```
    pub fn send(
        &self,
        message: Message,
    ) -> impl std::future::Future<Output = Result<PublishOutcome, ClientError>> + Send + '_ {
        // Not an async fn: its future would hold the message as well as the boxed command
        // made of it (see `request`).
        let prepared = message.into_publish().map(|publish| {
            let (reply, rx) = oneshot::channel();
            let cmd = Command::Publish(Box::new(PublishCommand {
                publish,
                reply,
                accepted: None,
            }));
            (cmd, rx)
        });
        async move {
            let (cmd, rx) = prepared.map_err(ClientError::InvalidTopic)?;
            self.request(cmd, rx).await
        }
    }

    /// Sends a command and waits for the driver's reply. The callers build the boxed command
    /// before they await, so their futures hold it and not the values it was made of (a
    /// future that waits on the client, e.g. a task's first `subscribe`, lives as long as
    /// its task).
    async fn request<T>(
        &self,
        cmd: Command,
        rx: oneshot::Receiver<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        self.tx.send(cmd).await.map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)?
    }

    /// Publishes in two steps: this resolves when the message is *accepted* — durable in the
    /// session store when one is configured (it will be delivered, even across a crash), or
    /// queued in memory otherwise — and the returned [`PendingAck`] resolves when the broker
    /// acknowledged it (PUBACK / PUBCOMP).
    ///
    /// Without a store, acceptance takes no round trip to the client's task: this resolves as
    /// soon as the message is queued to it (in order), so a publisher can run ahead and the
    /// task writes whole batches; a publish the client then refuses (an invalid topic, a full
    /// queue under [`crate::Overflow::Reject`]) fails through the [`PendingAck`].
    ///
    /// A message with an invalid topic or response topic fails at once with
    /// [`ClientError::InvalidTopic`].
    ///
    /// ```no_run
    /// # async fn f(client: steadfast::Client) -> Result<(), steadfast::ClientError> {
    /// use steadfast::{Message, QoS};
    /// let msg = Message::new("orders/created", r#"{"id":7}"#).qos(QoS::ExactlyOnce);
    /// let pending = client.publish_accepted(msg).await?; // durable from here on
    /// let outcome = pending.await?;                       // acknowledged by the broker
    /// # Ok(()) }
    /// ```
    pub async fn publish_accepted(&self, message: Message) -> Result<PendingAck, ClientError> {
        let publish = message.into_publish().map_err(ClientError::InvalidTopic)?;
        let (reply, rx) = oneshot::channel();
        if !self.durable {
            self.tx
                .send(Command::Publish(Box::new(PublishCommand {
                    publish,
                    reply,
                    accepted: None,
                })))
                .await
                .map_err(|_| ClientError::Closed)?;
            return Ok(PendingAck { rx });
        }
        let (accepted, acc_rx) = oneshot::channel();
        self.tx
            .send(Command::Publish(Box::new(PublishCommand {
                publish,
                reply,
                accepted: Some(accepted),
            })))
            .await
            .map_err(|_| ClientError::Closed)?;
        match acc_rx.await {
            Ok(()) => Ok(PendingAck { rx }),
            // Not accepted: the reply says why.
            Err(_) => match rx.await {
                Ok(Err(e)) => Err(e),
                _ => Err(ClientError::Closed),
            },
        }
    }

    /// Acknowledges an incoming message, with [manual acknowledgements](crate::ClientBuilder::manual_acks):
    /// its PUBACK (QoS 1) or PUBREC (QoS 2) goes out, after those of earlier messages of the
    /// same QoS. Resolves once the acknowledgement is taken; with a session store, once a QoS 2
    /// message is durably recorded as processed (it is never handed over again, even after a
    /// crash). Resolves at once, with `Ok`, for a message that needs no acknowledgement (QoS 0,
    /// or manual acks off); acknowledging the same message twice is harmless.
    ///
    /// Fails with [`ClientError::Ack`]: [`AckError::ConnectionClosed`] when the connection the
    /// message came on has closed (nothing is sent: a broker that kept the session delivers it
    /// again, and that delivery needs its own ack); [`AckError::Unknown`] for a message another
    /// client delivered. [`ClientError::Closed`] when the client has ended.
    ///
    /// ```no_run
    /// # async fn f(client: steadfast::Client, mut sub: steadfast::Subscription) -> Result<(), steadfast::ClientError> {
    /// while let Some(m) = sub.recv().await {
    ///     // ... process m ...
    ///     match client.ack(&m).await {
    ///         Ok(()) => {}
    ///         // It will be delivered again: process it again then.
    ///         Err(steadfast::ClientError::Ack(e)) => eprintln!("{e}"),
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ack(&self, message: &Received) -> Result<(), ClientError> {
        match message.ack_token() {
            Some(token) => self.ack_token(token).await,
            None => Ok(()),
        }
    }

    /// [`Client::ack`] by token ([`Received::ack_token`]), for an application that let go of
    /// the message itself (for example after [`Received::into_payload`]).
    pub async fn ack_token(&self, token: AckToken) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.request(Command::Ack(Box::new((token, reply))), rx)
            .await
    }

    /// Re-authenticates (MQTT 5 AUTH 0x19) with the configured authenticator, and resolves
    /// with the outcome: `Ok` once the broker answers AUTH Success (0x00), or
    /// [`ClientError::Reauthentication`] with the reason when the connection closes first (the
    /// broker refused, the authenticator gave up, the link failed). It fails at once with
    /// [`ClientError::Command`] without MQTT 5, an authenticator or a connection, or while
    /// another re-authentication is under way.
    pub async fn reauthenticate(&self) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.request(Command::Reauthenticate(reply), rx).await
    }

    /// Subscribes to one filter at `qos`, and resolves with the QoS the broker granted; its
    /// messages arrive on [`Events`] (or on the [`Subscription`] of a
    /// [`subscribe_stream`](Self::subscribe_stream) for the same filter). The subscription is
    /// restored after any reconnect where the broker lost the session.
    ///
    /// `filter` is a `&str`, a `String` or a [`TopicFilter`]: an invalid one fails at once with
    /// [`ClientError::InvalidTopic`]; a refusal by the broker is [`ClientError::Refused`].
    ///
    /// ```no_run
    /// # async fn f(client: steadfast::Client) -> Result<(), steadfast::ClientError> {
    /// let granted = client.subscribe("sensors/+/temp", steadfast::QoS::AtLeastOnce).await?;
    /// # let _ = granted; Ok(()) }
    /// ```
    pub async fn subscribe<T>(&self, filter: T, qos: QoS) -> Result<QoS, ClientError>
    where
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        let filter = topic_filter(filter)?;
        // Not through `subscribe_with`: its future would hold the (large) `Properties`.
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Subscribe(Box::new(SubscribeCommand {
            filters: vec![filter_with(filter, qos)],
            properties: Properties::default(),
            route: None,
            reply,
        }));
        granted(&self.request(cmd, rx).await?)
    }

    /// Subscribes to several filters at `qos` in one SUBSCRIBE, and resolves with the broker's
    /// code per filter, in order (granted QoS or failure). Every filter is checked first: one
    /// invalid filter fails the call with [`ClientError::InvalidTopic`] and nothing is sent.
    ///
    /// ```no_run
    /// # async fn f(client: steadfast::Client) -> Result<(), steadfast::ClientError> {
    /// use steadfast::QoS;
    /// let codes = client.subscribe_many(["sensors/#", "alerts/+"], QoS::AtLeastOnce).await?;
    /// assert_eq!(codes.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_many<I, T>(
        &self,
        filters: I,
        qos: QoS,
    ) -> Result<Vec<ReasonCode>, ClientError>
    where
        I: IntoIterator<Item = T>,
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        let filters = filters
            .into_iter()
            .map(|f| topic_filter(f).map(|f| filter_with(f, qos)))
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Subscribe(Box::new(SubscribeCommand {
            filters,
            properties: Properties::default(),
            route: None,
            reply,
        }));
        self.request(cmd, rx).await
    }

    /// Subscribes to one filter and returns a handle that receives its messages (instead of
    /// [`Events`]). Messages are matched by subscription identifier (MQTT 5) or by filter.
    ///
    /// Several handles for the same filter each receive every message of it: a second
    /// `subscribe_stream` (or `subscribe`) for a filter sends the SUBSCRIBE again, with its QoS,
    /// which replaces the broker's subscription and the QoS the first handle was granted
    /// (MQTT allows one subscription per filter and client), and the first handle keeps its
    /// messages. [`unsubscribe`](Self::unsubscribe) ends every handle of the filter. A handle
    /// that is dropped stops receiving; the subscription stays until it is unsubscribed, and
    /// its messages then go to [`Events`].
    pub async fn subscribe_stream<T>(
        &self,
        filter: T,
        qos: QoS,
    ) -> Result<Subscription, ClientError>
    where
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        let filter = topic_filter(filter)?;
        let (route, rx) = mpsc::channel(1024);
        let (reply, done) = oneshot::channel();
        let filters = vec![filter_with(filter.clone(), qos)];
        self.tx
            .send(Command::Subscribe(Box::new(SubscribeCommand {
                filters,
                properties: Properties::default(),
                route: Some(route),
                reply,
            })))
            .await
            .map_err(|_| ClientError::Closed)?;
        let codes = done.await.map_err(|_| ClientError::Closed)??;
        let qos = granted(&codes)?;
        Ok(Subscription {
            filter,
            granted: qos,
            rx,
        })
    }

    /// Subscribes to several filters with full MQTT 5 options in one SUBSCRIBE. Returns the
    /// broker's code per filter (granted QoS or failure). An invalid filter fails with
    /// [`ClientError::Command`] ([`CommandError::Invalid`]) and nothing is sent.
    pub async fn subscribe_with(
        &self,
        filters: Vec<SubscribeFilter>,
        properties: Properties,
    ) -> Result<Vec<ReasonCode>, ClientError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Subscribe(Box::new(SubscribeCommand {
            filters,
            properties,
            route: None,
            reply,
        }));
        self.request(cmd, rx).await
    }

    /// Unsubscribes from one filter (the same kinds of argument as
    /// [`subscribe`](Self::subscribe)); it is no longer restored after a reconnect, and its
    /// [`Subscription`] handles end. Resolves once the broker answered: a failure code
    /// (MQTT 5) is [`ClientError::Refused`], and "no subscription existed" (0x11) is not a
    /// failure.
    ///
    /// ```no_run
    /// # async fn f(client: steadfast::Client) -> Result<(), steadfast::ClientError> {
    /// client.unsubscribe("sensors/+/temp").await?;
    /// # Ok(()) }
    /// ```
    pub async fn unsubscribe<T>(&self, filter: T) -> Result<(), ClientError>
    where
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        let filter = topic_filter(filter)?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Unsubscribe(Box::new(UnsubscribeCommand {
            filters: vec![filter.into_inner()],
            properties: Properties::default(),
            reply,
        }));
        match self.request(cmd, rx).await?.first() {
            Some(rc) if !rc.is_success() => Err(ClientError::Refused(*rc)),
            _ => Ok(()),
        }
    }

    /// Unsubscribes from several filters in one UNSUBSCRIBE (the same kinds of argument as
    /// [`subscribe_many`](Self::subscribe_many)), and resolves with the broker's code per
    /// filter. One invalid filter fails the call with [`ClientError::InvalidTopic`] and nothing
    /// is sent.
    pub async fn unsubscribe_many<I, T>(&self, filters: I) -> Result<Vec<ReasonCode>, ClientError>
    where
        I: IntoIterator<Item = T>,
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        let filters = filters
            .into_iter()
            .map(|f| topic_filter(f).map(TopicFilter::into_inner))
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Unsubscribe(Box::new(UnsubscribeCommand {
            filters,
            properties: Properties::default(),
            reply,
        }));
        self.request(cmd, rx).await
    }

    /// Disconnects gracefully: stops reconnecting, lets in-flight messages finish within the
    /// drain timeout, sends DISCONNECT, and returns when [`Lifecycle::Disconnected`] was emitted.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.disconnect_with(DisconnectOptions::default()).await
    }

    /// Disconnects with MQTT 5 options (for example reason 0x04 to have the will published).
    pub async fn disconnect_with(&self, options: DisconnectOptions) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Disconnect(Box::new((options, reply))))
            .await
            .is_err()
        {
            return Ok(());
        }
        let _ = rx.await;
        Ok(())
    }

    /// Skips the current backoff delay, or wakes a dormant (or failed) client: the attempt
    /// count resets and an attempt starts at once.
    ///
    /// Never lost: when the command channel is full the request is kept in a flag that the
    /// driver reads on its next turn (a full channel means it is busy taking commands).
    pub fn reconnect_now(&self) {
        if self.tx.try_send(Command::ReconnectNow).is_err() {
            self.wake_requested
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Same as [`Client::reconnect_now`].
    pub fn wake(&self) {
        self.reconnect_now();
    }

    /// The current connection state.
    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Waits until the state satisfies `pred` (or the client ends), returning that state.
    pub async fn wait_for_state(&self, mut pred: impl FnMut(State) -> bool) -> State {
        let mut rx = self.state.clone();
        loop {
            let s = *rx.borrow_and_update();
            if pred(s) {
                return s;
            }
            if rx.changed().await.is_err() {
                return *rx.borrow();
            }
        }
    }
}

fn topic_filter<T>(filter: T) -> Result<TopicFilter, ClientError>
where
    T: TryInto<TopicFilter>,
    T::Error: Into<TopicError>,
{
    filter
        .try_into()
        .map_err(|e| ClientError::InvalidTopic(e.into()))
}

fn filter_with(filter: TopicFilter, qos: QoS) -> SubscribeFilter {
    SubscribeFilter {
        filter: filter.into_inner(),
        options: SubscriptionOptions {
            qos,
            ..Default::default()
        },
    }
}

fn granted(codes: &[ReasonCode]) -> Result<QoS, ClientError> {
    match codes.first() {
        Some(ReasonCode::Success) => Ok(QoS::AtMostOnce),
        Some(ReasonCode::GrantedQoS1) => Ok(QoS::AtLeastOnce),
        Some(ReasonCode::GrantedQoS2) => Ok(QoS::ExactlyOnce),
        Some(rc) => Err(ClientError::Refused(*rc)),
        None => Err(ClientError::Refused(ReasonCode::ProtocolError)),
    }
}

/// The acknowledgement of an accepted publish (see [`Client::publish_accepted`]).
#[derive(Debug)]
pub struct PendingAck {
    rx: oneshot::Receiver<Result<PublishOutcome, ClientError>>,
}

impl std::future::Future for PendingAck {
    type Output = Result<PublishOutcome, ClientError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => Poll::Ready(Err(ClientError::Closed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The stream of lifecycle events and unclaimed messages. Implements
/// [`futures_core::Stream`]; or call [`Events::recv`].
///
/// # What the application must read
/// - **Nothing, if it only publishes.** Lifecycle events never hold the client back: they
///   wait in a ring of [`event_capacity`](crate::ClientBuilder::event_capacity) entries, and
///   when nobody reads them the oldest are dropped (and counted, see
///   [`ClientEvent::Lagged`]). Keep-alive, reconnects and publishing go on regardless.
///   Dropping `Events` altogether is fine too.
/// - **Its messages, if it subscribes.** Messages that no [`Subscription`] claims wait here,
///   in order, and are never dropped. When the application falls behind by more than
///   `event_capacity` (plus a backlog of 256 in the client), the client stops decoding
///   input: memory stays bounded and the broker's flow control holds the rest. The link is
///   still watched: bytes that keep arriving keep it up, but an application that takes
///   nothing for a whole keep-alive interval and ping timeout cannot be told from a dead link,
///   and the connection is then closed and re-established like one.
///
/// Events and messages come in the order they happened, with one exception: a lifecycle event
/// never waits for messages the client holds back beyond this channel (an application far
/// behind reads a `ConnectionLost` after at most `event_capacity` older messages, and the rest
/// of those after it).
#[derive(Debug)]
pub struct Events {
    // Boxed: tokio's channel allocates 32 slots up front, and a ClientEvent is ~470 bytes;
    // boxed, an idle client's event channel costs 256 bytes instead of 15 KiB.
    pub(crate) rx: mpsc::Receiver<Box<ClientEvent>>,
    pub(crate) lifecycle: std::sync::Arc<crate::ring::Ring>,
    /// Messages read from `rx` (orders lifecycle events among them, see [`crate::ring`]).
    pub(crate) received: u64,
}

impl Events {
    /// The next event; `None` once the client has closed and every event was read.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        let lifecycle_done = match self.lifecycle.poll_next(cx, self.received) {
            Poll::Ready(Some(ev)) => return Poll::Ready(Some(ev)),
            Poll::Ready(None) => true,
            Poll::Pending => false,
        };
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(ev)) => {
                self.received += 1;
                Poll::Ready(Some(*ev))
            }
            // The driver has ended; the ring is closed with it (its waker is registered).
            Poll::Ready(None) if lifecycle_done => Poll::Ready(None),
            // No message where the next event expects one (the channel is closed): the
            // event need not wait.
            Poll::Ready(None) => self.lifecycle.poll_next(cx, u64::MAX),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_core::Stream for Events {
    type Item = ClientEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.poll_event(cx)
    }
}

/// Messages of one subscription (see [`Client::subscribe_stream`]).
#[derive(Debug)]
pub struct Subscription {
    filter: TopicFilter,
    granted: QoS,
    rx: mpsc::Receiver<Received>,
}

impl Subscription {
    /// The filter.
    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }

    /// The QoS the broker granted when this handle subscribed (a later subscribe to the same
    /// filter replaces it at the broker).
    pub fn granted_qos(&self) -> QoS {
        self.granted
    }

    /// The next message; `None` once the client has closed.
    pub async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for Subscription {
    type Item = Received;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        self.rx.poll_recv(cx)
    }
}
