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
//!         ClientEvent::Message(m) => println!("{}: {:?}", m.topic, m.payload),
//!         ClientEvent::Lifecycle { event, .. } => eprintln!("{event:?}"),
//!         other => eprintln!("{other:?}"), // e.g. `Lagged`: lifecycle events were not read
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The protocol logic lives in the sans-IO crate [`steadfast_proto`]; this crate is its tokio
//! driver (the only code that touches sockets and the clock), its transports and the API.
#![deny(missing_docs)]

mod builder;
mod client;
mod driver;
mod ring;
pub mod store;
#[cfg(feature = "tls")]
mod tls_options;
pub mod transport;

pub use builder::{BuildError, ClientBuilder};
pub use client::{Client, ClientError, ClientEvent, Events, Message, PendingAck, Subscription};
pub use steadfast_proto as proto;
pub use steadfast_proto::backoff::{
    self, BackoffPolicy, Constant, Exponential, Jitter, Stepped, UniformRandom,
};
pub use steadfast_proto::connection::Authenticator;
pub use steadfast_proto::policy::ReasonClass;
pub use steadfast_proto::session::offline::Overflow;
pub use steadfast_proto::{
    ByteStr, DisconnectOptions, Granted, Initiator, Lifecycle, Properties, Props, ProtocolVersion,
    Publish, PublishError, PublishOutcome, QoS, Reason, ReasonCode, RetainHandling, ServerAddr,
    ServerAddrError, State, SubscribeFilter, SubscriptionOptions,
};
