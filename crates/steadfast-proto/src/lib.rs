//! # steadfast-proto
//!
//! The sans-IO heart of steadfast: a complete MQTT 3.1.1 and 5.0 codec, and the connection and
//! session state machine that makes a client stay connected. This crate never touches a socket,
//! never reads the clock and never spawns a task: time comes in as an [`std::time::Instant`]
//! argument and bytes come in and go out through method calls.
//!
//! # Layout
//! - [`codec`]: `Packet::encode` / `Packet::decode`, varints, strings, bounded decoding.
//! - [`packet`]: one struct per control packet, shared by both protocol versions; properties and
//!   reason codes.
//! - [`topic`]: validated topic names and filters, and filter matching.
//! - [`connection`]: the [`Connection`] state machine (`handle_input(bytes, now)`,
//!   `handle_timeout(now)`, `poll_transmit`, `poll_event`, `poll_timeout`, `poll_action`, and the
//!   commands publish / subscribe / unsubscribe / disconnect / wake). Its docs say when the
//!   caller must call each method.
//! - [`session`]: state that survives reconnects (packet ids, in-flight, subscriptions, queue).
//! - [`timer`]: the timer table; [`backoff`]: backoff policies; [`policy`]: what a reason code
//!   means; [`rng`]: the seedable jitter RNG.
//! - [`event`], [`error`]: what the application is told, and who closed a connection and why.
#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod backoff;
pub mod codec;
pub mod config;
pub mod connection;
pub mod error;
pub mod event;
pub mod packet;
pub mod policy;
pub mod rng;
pub mod server;
pub mod session;
pub mod timer;
pub mod topic;

pub use codec::ByteStr;
pub use codec::{DecodeError, EncodeError, Malformed, MalformedKind};
pub use config::{Config, DEFAULT_V311_INFLIGHT};
pub use connection::{Action, Connection, DisconnectOptions, CLOSED_BEFORE_CONNACK_FATAL};
pub use error::{
    AckError, CommandError, Initiator, InvalidCommand, InvalidMessage, IoError, PublishError,
    Reason, TransportError,
};
pub use event::{Event, Granted, Lifecycle, PublishOutcome, State, Token};
pub use packet::*;
pub use server::{ServerAddr, ServerAddrError};
pub use session::acks::AckToken;
pub use topic::{TopicError, TopicFilter, TopicName};
