//! Outgoing QoS 1/2 messages in flight, kept in the order they were first sent.

use std::collections::BTreeMap;

use crate::event::Token;
use crate::Publish;

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 PUBLISH sent; waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent; waiting for PUBREC.
    AwaitPubRec,
    /// QoS 2 PUBREL sent; waiting for PUBCOMP.
    AwaitPubComp,
}

/// One outgoing message in flight.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Completion token.
    pub token: Token,
    /// The message, with its packet id and full topic (never an alias).
    pub publish: Publish,
    /// Protocol stage.
    pub state: OutState,
    /// Whether it went out on the current connection (false after a reconnect until resent).
    pub sent: bool,
}

/// In-flight messages ordered by first send (`seq`), so resends keep the original order.
#[derive(Debug, Default, Clone)]
pub struct Inflight {
    entries: BTreeMap<u64, Outgoing>,
    next_seq: u64,
    sent: usize,
}

impl Inflight {
    /// Adds a message that was just sent; returns its sequence number.
    pub fn push(&mut self, out: Outgoing) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if out.sent {
            self.sent += 1;
        }
        self.entries.insert(seq, out);
        seq
    }

    /// The sequence number the next [`Inflight::push`] will return.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Looks up an entry.
    pub fn get(&self, seq: u64) -> Option<&Outgoing> {
        self.entries.get(&seq)
    }

    /// Looks up an entry.
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Outgoing> {
        self.entries.get_mut(&seq)
    }

    /// Removes an entry.
    pub fn remove(&mut self, seq: u64) -> Option<Outgoing> {
        let out = self.entries.remove(&seq)?;
        if out.sent {
            self.sent -= 1;
        }
        Some(out)
    }

    /// Marks every entry as not yet sent on the new connection.
    pub fn mark_all_unsent(&mut self) {
        for e in self.entries.values_mut() {
            e.sent = false;
        }
        self.sent = 0;
    }

    /// Marks `seq` as sent on the current connection.
    pub fn mark_sent(&mut self, seq: u64) {
        if let Some(e) = self.entries.get_mut(&seq) {
            if !e.sent {
                e.sent = true;
                self.sent += 1;
            }
        }
    }

    /// The oldest entry not yet sent on this connection.
    pub fn first_unsent(&self) -> Option<u64> {
        // The common case, everything sent, without a scan: the core asks after every input.
        if self.sent >= self.entries.len() {
            return None;
        }
        self.entries.iter().find(|(_, e)| !e.sent).map(|(s, _)| *s)
    }

    /// Entries sent on the current connection and not yet complete: what counts against the
    /// broker's Receive Maximum.
    pub fn sent_count(&self) -> usize {
        self.sent
    }

    /// All entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry, in order.
    pub fn drain(&mut self) -> Vec<Outgoing> {
        self.sent = 0;
        std::mem::take(&mut self.entries).into_values().collect()
    }

    /// Iterates in original send order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Outgoing)> {
        self.entries.iter()
    }
}
