//! A blocking client for programs without an async runtime: the same resilience (keep-alive,
//! reconnects with backoff, resubscription, resend, the offline queue), behind calls that
//! block the calling thread until they complete.
//!
//! [`ClientBuilder::build_blocking`] starts a small runtime of the client's own (one worker
//! thread) on which the driver runs. The driver keeps the connection alive whether or not the
//! program is calling: a firmware-style loop that sleeps between readings still answers
//! PINGREQ deadlines, notices a dead link and reconnects, exactly as the async client does.
//!
//! ```no_run
//! use std::time::Duration;
//! use steadfast::blocking::RecvTimeoutError;
//! use steadfast::{ClientBuilder, ClientEvent, Message, QoS};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, mut events) = ClientBuilder::from_url("mqtt://127.0.0.1:1883")?.build_blocking()?;
//! client.subscribe("commands/#", QoS::AtLeastOnce)?; // restored after every reconnect
//! loop {
//!     let reading = read_sensor();
//!     client.send(Message::new("sensors/1/temp", reading).qos(QoS::AtLeastOnce))?;
//!     match events.recv_timeout(Duration::from_secs(10)) {
//!         Ok(ClientEvent::Message(m)) => println!("command {}: {:?}", m.topic(), m.payload()),
//!         Ok(other) => eprintln!("{other:?}"),
//!         Err(RecvTimeoutError::Timeout) => {}
//!         Err(_) => break, // closed (or called inside an async runtime)
//!     }
//! }
//! # Ok(()) }
//! # fn read_sensor() -> String { "21.5".into() }
//! ```
//!
//! The calls must not be made from inside an async runtime (a tokio task, or a function that a
//! runtime's `block_on` runs): they return [`ClientError::BlockingInRuntime`] there instead of
//! blocking a runtime thread. Use [`crate::Client`] in async code.
//!
//! Dropping every handle ([`Client`], [`Events`], [`Subscription`]) stops the client's runtime
//! at once; call [`Client::disconnect`] first for a graceful close (DISCONNECT sent, in-flight
//! messages given their drain time).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use steadfast_proto::{
    DisconnectOptions, PublishOutcome, QoS, ReasonCode, State, TopicError, TopicFilter, TopicName,
};
use tokio::runtime::Runtime;

use crate::builder::{BuildError, ClientBuilder};
use crate::client::{ClientError, ClientEvent};
use crate::{Message, Received};

/// The runtime the driver of one blocking client runs on.
struct Rt(Runtime);

impl Rt {
    /// Runs `f` to completion on the client's runtime, unless the caller is itself inside a
    /// runtime (where blocking would stall its thread, and tokio would panic).
    fn block_on<F: Future>(&self, f: F) -> Result<F::Output, ClientError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(ClientError::BlockingInRuntime);
        }
        Ok(self.0.block_on(f))
    }
}

impl ClientBuilder {
    /// Builds a [`blocking`](crate::blocking) client: a runtime of its own (one worker thread)
    /// runs the driver, and every call blocks until it completes. For programs without an
    /// async runtime; in async code use [`ClientBuilder::build`].
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (client, events) = steadfast::ClientBuilder::from_url("mqtt://127.0.0.1:1883")?
    ///     .build_blocking()?;
    /// client.publish("hello", "world")?;
    /// # Ok(()) }
    /// ```
    pub fn build_blocking(self) -> Result<(Client, Events), BuildError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("steadfast-blocking")
            .enable_all()
            .build()
            .map_err(|e| {
                BuildError::Runtime(steadfast_proto::IoError::with_source(
                    "a runtime with one worker thread",
                    e,
                ))
            })?;
        let (client, events) = {
            let _entered = runtime.enter();
            self.build()?
        };
        let rt = Arc::new(Rt(runtime));
        Ok((
            Client {
                inner: client,
                rt: rt.clone(),
            },
            Events { inner: events, rt },
        ))
    }
}

/// A cloneable handle to a blocking client (see the [module docs](self)).
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
    rt: Arc<Rt>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::Client")
            .field("state", &self.inner.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Publishes `payload` to `topic` at QoS 0 (see [`crate::Client::publish`]).
    pub fn publish<T>(
        &self,
        topic: T,
        payload: impl Into<Bytes>,
    ) -> Result<PublishOutcome, ClientError>
    where
        T: TryInto<TopicName>,
        T::Error: Into<TopicError>,
    {
        self.rt.block_on(self.inner.publish(topic, payload))?
    }

    /// Sends a [`Message`] and blocks until the broker acknowledged it (PUBACK, PUBCOMP), or,
    /// for QoS 0, until it is encoded (see [`crate::Client::send`]). While disconnected, it
    /// waits in the offline queue.
    pub fn send(&self, message: Message) -> Result<PublishOutcome, ClientError> {
        self.rt.block_on(self.inner.send(message))?
    }

    /// Hands a message over and returns once it is accepted (stored durably with a session
    /// store), without waiting for the broker (see [`crate::Client::publish_accepted`]).
    pub fn publish_accepted(&self, message: Message) -> Result<PendingAck, ClientError> {
        let pending = self.rt.block_on(self.inner.publish_accepted(message))??;
        Ok(PendingAck {
            inner: pending,
            rt: self.rt.clone(),
        })
    }

    /// Subscribes to one filter and returns the QoS the broker granted (see
    /// [`crate::Client::subscribe`]).
    pub fn subscribe<T>(&self, filter: T, qos: QoS) -> Result<QoS, ClientError>
    where
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        self.rt.block_on(self.inner.subscribe(filter, qos))?
    }

    /// Subscribes to several filters in one SUBSCRIBE (see [`crate::Client::subscribe_many`]).
    pub fn subscribe_many<I, T>(&self, filters: I, qos: QoS) -> Result<Vec<ReasonCode>, ClientError>
    where
        I: IntoIterator<Item = T>,
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        self.rt.block_on(self.inner.subscribe_many(filters, qos))?
    }

    /// Subscribes and returns a handle that receives this filter's messages (see
    /// [`crate::Client::subscribe_stream`]).
    pub fn subscribe_stream<T>(&self, filter: T, qos: QoS) -> Result<Subscription, ClientError>
    where
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        let inner = self
            .rt
            .block_on(self.inner.subscribe_stream(filter, qos))??;
        Ok(Subscription {
            inner,
            rt: self.rt.clone(),
        })
    }

    /// Unsubscribes from one filter (see [`crate::Client::unsubscribe`]).
    pub fn unsubscribe<T>(&self, filter: T) -> Result<(), ClientError>
    where
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        self.rt.block_on(self.inner.unsubscribe(filter))?
    }

    /// Unsubscribes from several filters (see [`crate::Client::unsubscribe_many`]).
    pub fn unsubscribe_many<I, T>(&self, filters: I) -> Result<Vec<ReasonCode>, ClientError>
    where
        I: IntoIterator<Item = T>,
        T: TryInto<TopicFilter>,
        T::Error: Into<TopicError>,
    {
        self.rt.block_on(self.inner.unsubscribe_many(filters))?
    }

    /// Acknowledges a message received with manual acknowledgements on (see
    /// [`crate::Client::ack`]).
    pub fn ack(&self, message: &Received) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.ack(message))?
    }

    /// Disconnects gracefully and blocks until it is done (see [`crate::Client::disconnect`]).
    pub fn disconnect(&self) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.disconnect())?
    }

    /// Disconnects with options (see [`crate::Client::disconnect_with`]).
    pub fn disconnect_with(&self, options: DisconnectOptions) -> Result<(), ClientError> {
        self.rt.block_on(self.inner.disconnect_with(options))?
    }

    /// Skips the current backoff delay or wakes a dormant client (never blocks).
    pub fn reconnect_now(&self) {
        self.inner.reconnect_now();
    }

    /// The current connection state.
    pub fn state(&self) -> State {
        self.inner.state()
    }

    /// Blocks until the state satisfies `pred`, or `timeout` passes (then `None`).
    pub fn wait_for_state(
        &self,
        pred: impl FnMut(State) -> bool,
        timeout: Duration,
    ) -> Result<Option<State>, ClientError> {
        self.rt
            .block_on(async {
                tokio::time::timeout(timeout, self.inner.wait_for_state(pred)).await
            })
            .map(Result::ok)
    }

    /// The async handle of the same client, for code that has a runtime after all.
    pub fn as_async(&self) -> &crate::Client {
        &self.inner
    }
}

/// Why [`Events::recv_timeout`] or [`Subscription::recv_timeout`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// Nothing arrived within the timeout; the client goes on.
    Timeout,
    /// The client has closed and every event was read.
    Closed,
    /// The call was made inside an async runtime (see the [module docs](self)).
    InRuntime,
}

impl fmt::Display for RecvTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecvTimeoutError::Timeout => "no event within the timeout",
            RecvTimeoutError::Closed => "the client has closed",
            RecvTimeoutError::InRuntime => {
                "a steadfast::blocking call was made inside an async runtime"
            }
        })
    }
}

impl std::error::Error for RecvTimeoutError {}

/// The client's events, read by blocking calls or as an iterator (see [`crate::Events`] for
/// what an application must read).
pub struct Events {
    inner: crate::Events,
    rt: Arc<Rt>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::Events").finish_non_exhaustive()
    }
}

impl Events {
    /// The next event, blocking until one comes; `None` once the client has closed and every
    /// event was read (and at once when called inside an async runtime, see the module docs;
    /// [`recv_timeout`](Self::recv_timeout) tells the two apart).
    pub fn recv(&mut self) -> Option<ClientEvent> {
        self.rt.block_on(self.inner.recv()).ok().flatten()
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<ClientEvent, RecvTimeoutError> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, self.inner.recv()).await })
        {
            Ok(Ok(Some(event))) => Ok(event),
            Ok(Ok(None)) => Err(RecvTimeoutError::Closed),
            Ok(Err(_)) => Err(RecvTimeoutError::Timeout),
            Err(_) => Err(RecvTimeoutError::InRuntime),
        }
    }
}

impl Iterator for Events {
    type Item = ClientEvent;

    /// Blocks for the next event; ends once the client has closed.
    fn next(&mut self) -> Option<ClientEvent> {
        self.recv()
    }
}

/// The messages of one subscription (see [`Client::subscribe_stream`]).
pub struct Subscription {
    inner: crate::Subscription,
    rt: Arc<Rt>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::Subscription")
            .field("filter", &self.inner.filter())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The filter.
    pub fn filter(&self) -> &TopicFilter {
        self.inner.filter()
    }

    /// The QoS the broker granted.
    pub fn granted_qos(&self) -> QoS {
        self.inner.granted_qos()
    }

    /// The next message, blocking; `None` once the client has closed.
    pub fn recv(&mut self) -> Option<Received> {
        self.rt.block_on(self.inner.recv()).ok().flatten()
    }

    /// The next message, waiting at most `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Received, RecvTimeoutError> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, self.inner.recv()).await })
        {
            Ok(Ok(Some(m))) => Ok(m),
            Ok(Ok(None)) => Err(RecvTimeoutError::Closed),
            Ok(Err(_)) => Err(RecvTimeoutError::Timeout),
            Err(_) => Err(RecvTimeoutError::InRuntime),
        }
    }
}

impl Iterator for Subscription {
    type Item = Received;

    fn next(&mut self) -> Option<Received> {
        self.recv()
    }
}

/// The broker's acknowledgement of a message handed over with
/// [`Client::publish_accepted`].
pub struct PendingAck {
    inner: crate::PendingAck,
    rt: Arc<Rt>,
}

impl fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::PendingAck")
            .finish_non_exhaustive()
    }
}

impl PendingAck {
    /// Blocks until the broker acknowledged the message (or it failed).
    pub fn wait(self) -> Result<PublishOutcome, ClientError> {
        self.rt.block_on(self.inner)?
    }
}
