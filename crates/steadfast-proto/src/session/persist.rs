//! What a durable store must record so a session survives a crash, and what it gives back.
//!
//! With [`crate::Config::persistence`] on, the core reports every change to its session state
//! as an [`crate::Event::Store`] operation, in order. The driver must make the operations
//! durable before it writes the bytes the core produced in the same step: then nothing that was
//! acknowledged to the application or to the broker is lost when the process dies. On start,
//! the driver loads a [`SessionSnapshot`] and hands it to [`crate::Connection::restore`].

use crate::session::subscriptions::Subscription;
use crate::{ByteStr, Publish};

/// Where a stored outgoing message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutgoingState {
    /// Accepted, waiting in the offline queue (no packet id yet).
    Queued,
    /// QoS 1 PUBLISH sent with this packet id; waiting for PUBACK.
    AwaitPubAck(u16),
    /// QoS 2 PUBLISH sent with this packet id; waiting for PUBREC.
    AwaitPubRec(u16),
    /// QoS 2 PUBREL sent for this packet id; waiting for PUBCOMP.
    AwaitPubComp(u16),
}

/// One change to the session state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // Accepted carries the message; boxing it buys nothing here
pub enum StoreOp {
    /// The client identifier in use (the broker's assigned one included).
    ClientId(ByteStr),
    /// A subscription was added or changed.
    SubscriptionUpsert(Subscription),
    /// A subscription was removed.
    SubscriptionRemove(ByteStr),
    /// A publication was accepted: it must be delivered even across a crash.
    Accepted {
        /// Its key: the publish token, unique and increasing across restarts.
        id: u64,
        /// The message.
        publish: Publish,
    },
    /// A stored publication changed state.
    Outgoing {
        /// Its key.
        id: u64,
        /// The new state.
        state: OutgoingState,
    },
    /// A stored publication is finished (acknowledged, or failed and reported).
    Completed {
        /// Its key.
        id: u64,
    },
    /// An incoming QoS 2 packet id now awaits PUBREL (the message was delivered once).
    IncomingQos2Add(u16),
    /// An incoming QoS 2 packet id is released (PUBREL answered).
    IncomingQos2Remove(u16),
    /// The broker lost the session: forget every incoming QoS 2 packet id.
    IncomingQos2Clear,
}

/// A stored outgoing publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutgoing {
    /// Its key (publish token).
    pub id: u64,
    /// The message (its `pkid` is ignored; the state carries it).
    pub publish: Publish,
    /// Where it stands.
    pub state: OutgoingState,
}

/// The session state a store gives back on start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// The client identifier, if one was recorded.
    pub client_id: Option<ByteStr>,
    /// The subscription registry.
    pub subscriptions: Vec<Subscription>,
    /// Outgoing publications, any order (restored in `id` order).
    pub outgoing: Vec<StoredOutgoing>,
    /// Incoming QoS 2 packet ids awaiting PUBREL.
    pub incoming_qos2: Vec<u16>,
}
