//! The bounded queue of publications waiting for a connection or for room in the broker's
//! Receive Maximum.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::event::Token;
use crate::Publish;

/// What to do when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// `publish` fails with `QueueFull`, and the driver makes the publish future wait for room.
    #[default]
    Backpressure,
    /// The oldest queued message is dropped (its publish fails with `Dropped`).
    DropOldest,
    /// `publish` fails at once with `QueueFull`, handing the message back.
    Reject,
}

/// Bounds of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// At most this many messages (default 10,000).
    pub max_messages: usize,
    /// At most this many bytes of topic + payload (default 64 MiB).
    pub max_bytes: usize,
    /// Overflow policy.
    pub overflow: Overflow,
    /// Queue QoS 0 messages while disconnected (default true).
    pub queue_qos0: bool,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_messages: 10_000,
            max_bytes: 64 << 20,
            overflow: Overflow::Backpressure,
            queue_qos0: true,
        }
    }
}

/// A queued publication.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Completion token.
    pub token: Token,
    /// The message (packet id unset).
    pub publish: Publish,
    /// When it was accepted, for Message Expiry.
    pub queued_at: Instant,
}

/// The bytes a message counts for against the queue's byte limit: topic and payload. The one
/// place this rule lives (the queue's accounting and the driver's backpressure wait use it).
pub fn cost_of(publish: &Publish) -> usize {
    publish.topic.len() + publish.payload.len()
}

impl Queued {
    /// The bytes it counts for ([`cost_of`]).
    pub fn cost(&self) -> usize {
        cost_of(&self.publish)
    }

    /// True when its Message Expiry Interval elapsed by `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.publish
            .properties
            .message_expiry_interval
            .is_some_and(|s| {
                now.saturating_duration_since(self.queued_at) >= Duration::from_secs(u64::from(s))
            })
    }
}

/// The offline queue.
#[derive(Debug, Default, Clone)]
pub struct OfflineQueue {
    items: VecDeque<Queued>,
    bytes: usize,
}

impl OfflineQueue {
    /// Whether one more message of `cost` bytes fits in `limits`.
    pub fn has_room(&self, cost: usize, limits: &QueueLimits) -> bool {
        self.items.len() < limits.max_messages && self.bytes + cost <= limits.max_bytes
    }

    /// Appends.
    pub fn push_back(&mut self, q: Queued) {
        self.bytes += q.cost();
        self.items.push_back(q);
    }

    /// Puts back at the front (republished after session loss keep their order ahead of newer ones).
    pub fn push_front(&mut self, q: Queued) {
        self.bytes += q.cost();
        self.items.push_front(q);
    }

    /// The oldest, without taking it.
    pub fn front(&self) -> Option<&Queued> {
        self.items.front()
    }

    /// Takes the oldest.
    pub fn pop_front(&mut self) -> Option<Queued> {
        let q = self.items.pop_front()?;
        self.bytes -= q.cost();
        Some(q)
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Iterates oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Queued> {
        self.items.iter()
    }
}
