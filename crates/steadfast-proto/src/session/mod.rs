//! State that survives reconnects: packet ids, in-flight messages, the subscription registry,
//! the offline queue, and incoming QoS 2 packet ids awaiting PUBREL.

pub mod acks;
pub mod inflight;
pub mod offline;
pub mod persist;
pub mod pkid;
pub mod subscriptions;
