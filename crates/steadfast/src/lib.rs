//! # steadfast
//!
//! An MQTT 3.1.1 and 5.0 client for tokio that stays connected. Reconnection, backoff with
//! jitter, keep-alive, resubscription, resending in-flight messages and offline queueing are
//! built in: there is no reconnect code to write.
//!
//! ```no_run
//! use steadfast::{ClientBuilder, ClientEvent, QoS};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, mut events) = ClientBuilder::from_url("mqtt://127.0.0.1:1883")?.build()?;
//! client.subscribe("sensors/#", QoS::AtLeastOnce).await?; // restored after every reconnect
//! while let Some(event) = events.recv().await {
//!     match event {
//!         ClientEvent::Message(m) => println!("{}: {:?}", m.topic(), m.payload()),
//!         ClientEvent::Lifecycle { event, .. } => eprintln!("{event:?}"),
//!         other => eprintln!("{other:?}"), // e.g. `Lagged`: lifecycle events were not read
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Publishing: [`Client::publish`] for a QoS 0 message, a [`Message`] built with its QoS,
//! retain flag and MQTT 5 properties for anything else. Topics are checked at the call, so an
//! invalid one is [`ClientError::InvalidTopic`], never a silent success.
//!
//! ```no_run
//! use steadfast::{ClientBuilder, ClientError, Message, QoS, TopicError};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (client, _events) = ClientBuilder::from_url("mqtt://127.0.0.1:1883")?.build()?;
//! client.publish("sensors/1/temp", "21.5").await?;
//! let outcome = client
//!     .send(Message::new("sensors/1/temp", "21.5").qos(QoS::AtLeastOnce).retain(true))
//!     .await?; // acknowledged (PUBACK)
//! # let _ = outcome;
//! let wrong = client.publish("sensors/+/temp", "21.5").await; // a wildcard in a topic name
//! assert_eq!(
//!     wrong.map(|_| ()),
//!     Err(ClientError::InvalidTopic(TopicError::WildcardInName))
//! );
//! # Ok(()) }
//! ```
//!
//! The protocol logic lives in the sans-IO crate [`steadfast_proto`]; this crate is its tokio
//! driver (the only code that touches sockets and the clock), its transports and the API.
#![deny(missing_docs)]

pub mod blocking;
mod builder;
mod client;
mod driver;
mod message;
mod received;
mod ring;
pub mod store;
#[cfg(feature = "tls")]
mod tls_options;
pub mod transport;

pub use builder::{BuildError, ClientBuilder};
pub use client::{Client, ClientError, ClientEvent, Events, PendingAck, Subscription};
pub use message::{Message, PayloadFormat};
pub use received::Received;
pub use steadfast_proto as proto;
pub use steadfast_proto::backoff::{
    self, BackoffPolicy, Constant, Exponential, Jitter, Stepped, UniformRandom,
};
pub use steadfast_proto::connection::Authenticator;
pub use steadfast_proto::policy::ReasonClass;
pub use steadfast_proto::session::offline::Overflow;
pub use steadfast_proto::{
    AckError, AckToken, ByteStr, DisconnectOptions, Granted, Initiator, Lifecycle, Properties,
    Props, ProtocolVersion, Publish, PublishError, PublishOutcome, QoS, Reason, ReasonCode,
    RetainHandling, ServerAddr, ServerAddrError, State, SubscribeFilter, SubscriptionOptions,
    TopicError, TopicFilter, TopicName,
};
