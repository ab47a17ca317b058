//! Incoming QoS 1 and 2 messages held for the application's acknowledgement
//! ([`crate::Config::manual_acks`]).
//!
//! Each delivery gets an [`AckToken`]: a sequence number that is never reused for the life of
//! the [`crate::Connection`]. The deliveries of the current link are kept in arrival order,
//! one queue per QoS, and an acknowledgement goes out only when every earlier delivery of the
//! same QoS was acknowledged too: MQTT requires PUBACKs, and PUBRECs, in the order of the
//! PUBLISH packets (MQTT 5 section 4.6, MQTT 3.1.1 section 4.6). When the link closes every
//! held delivery is forgotten, so a late token never acknowledges a message of another link
//! that reused its packet id.

use std::collections::VecDeque;
use std::num::NonZeroU64;

use crate::error::AckError;
use crate::session::pkid::IdMap;
use crate::QoS;

/// Identifies one delivery of an incoming QoS 1 or 2 message that waits for the
/// application's acknowledgement (see [`crate::Connection::ack`]). Only the connection that
/// delivered the message makes them; a token stays valid for that delivery only, on the link
/// it arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AckToken(NonZeroU64);

impl AckToken {
    /// The delivery's sequence number (increasing, never reused by one connection).
    pub fn delivery(self) -> u64 {
        self.0.get()
    }
}

#[derive(Debug, Clone, Copy)]
struct Held {
    seq: u64,
    pkid: u16,
    acked: bool,
}

/// The deliveries of the current link awaiting the application, in arrival order per QoS.
#[derive(Debug, Default, Clone)]
pub struct HeldAcks {
    qos1: VecDeque<Held>,
    qos2: VecDeque<Held>,
    /// Packet id of each held delivery, to its sequence number.
    by_pkid: IdMap<u16, u64>,
    /// QoS 2 deliveries not acknowledged yet.
    unacked_qos2: usize,
    /// The last sequence number given out.
    last_seq: u64,
    /// The first sequence number of the current link: older tokens are stale.
    link_start: u64,
}

impl HeldAcks {
    /// A new link: forgets every held delivery (the broker redelivers them on a resumed
    /// session; their tokens are stale from now on).
    pub fn new_link(&mut self) {
        self.qos1 = VecDeque::new();
        self.qos2 = VecDeque::new();
        self.by_pkid = IdMap::default();
        self.unacked_qos2 = 0;
        self.link_start = self.last_seq + 1;
    }

    /// Holds a delivery of `pkid` and returns its token.
    pub fn hold(&mut self, pkid: u16, qos: QoS) -> AckToken {
        self.last_seq += 1;
        let seq = self.last_seq;
        let held = Held {
            seq,
            pkid,
            acked: false,
        };
        if qos == QoS::ExactlyOnce {
            self.qos2.push_back(held);
            self.unacked_qos2 += 1;
        } else {
            self.qos1.push_back(held);
        }
        self.by_pkid.insert(pkid, seq);
        AckToken(NonZeroU64::new(seq).unwrap_or(NonZeroU64::MIN))
    }

    /// Holds a QoS 2 `pkid` the application acknowledged before (a redelivery): not
    /// delivered again, its PUBREC waits only for those of earlier QoS 2 messages.
    pub fn hold_acked(&mut self, pkid: u16) {
        self.last_seq += 1;
        self.qos2.push_back(Held {
            seq: self.last_seq,
            pkid,
            acked: true,
        });
        self.by_pkid.insert(pkid, self.last_seq);
    }

    /// Whether a delivery of `pkid` is held (not yet acknowledged to the broker).
    pub fn holds(&self, pkid: u16) -> bool {
        self.by_pkid.contains_key(&pkid)
    }

    /// Deliveries held, acknowledged by the application or not.
    pub fn len(&self) -> usize {
        self.qos1.len() + self.qos2.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Held deliveries the application has not acknowledged yet: QoS 1 ones until their
    /// PUBACK leaves, QoS 2 ones until the application acknowledges them.
    pub fn awaiting_application(&self) -> usize {
        self.qos1.len() + self.unacked_qos2
    }

    /// Marks the delivery of `token` acknowledged. `Ok(Some((qos, pkid)))` when it was held and
    /// now is acknowledged, `Ok(None)` when it was acknowledged before.
    pub fn ack(&mut self, token: AckToken) -> Result<Option<(QoS, u16)>, AckError> {
        let seq = token.0.get();
        if seq > self.last_seq {
            return Err(AckError::Unknown);
        }
        if seq < self.link_start {
            return Err(AckError::ConnectionClosed);
        }
        for (q, qos) in [
            (&mut self.qos1, QoS::AtLeastOnce),
            (&mut self.qos2, QoS::ExactlyOnce),
        ] {
            if let Ok(i) = q.binary_search_by_key(&seq, |h| h.seq) {
                let h = &mut q[i];
                if h.acked {
                    return Ok(None);
                }
                h.acked = true;
                if qos == QoS::ExactlyOnce {
                    self.unacked_qos2 -= 1;
                }
                return Ok(Some((qos, h.pkid)));
            }
        }
        // Of this link, no longer held: its acknowledgement went out already.
        Ok(None)
    }

    /// The next acknowledgement that may go out (the oldest held delivery of its QoS is
    /// acknowledged), removed from the held set.
    pub fn release(&mut self) -> Option<(QoS, u16)> {
        for (q, qos) in [
            (&mut self.qos1, QoS::AtLeastOnce),
            (&mut self.qos2, QoS::ExactlyOnce),
        ] {
            if q.front().is_some_and(|h| h.acked) {
                let h = q.pop_front()?;
                if self.by_pkid.get(&h.pkid) == Some(&h.seq) {
                    self.by_pkid.remove(&h.pkid);
                }
                return Some((qos, h.pkid));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_leave_in_arrival_order_per_qos() {
        let mut h = HeldAcks::default();
        h.new_link();
        let a = h.hold(1, QoS::AtLeastOnce);
        let b = h.hold(2, QoS::AtLeastOnce);
        let c = h.hold(3, QoS::ExactlyOnce);
        assert_eq!(h.awaiting_application(), 3);
        assert_eq!(h.ack(b), Ok(Some((QoS::AtLeastOnce, 2))));
        assert_eq!(h.release(), None, "b waits for a");
        assert_eq!(h.ack(c), Ok(Some((QoS::ExactlyOnce, 3))));
        assert_eq!(
            h.release(),
            Some((QoS::ExactlyOnce, 3)),
            "QoS 2 is its own order"
        );
        assert_eq!(h.ack(a), Ok(Some((QoS::AtLeastOnce, 1))));
        assert_eq!(h.release(), Some((QoS::AtLeastOnce, 1)));
        assert_eq!(h.release(), Some((QoS::AtLeastOnce, 2)));
        assert_eq!(h.release(), None);
        assert!(h.is_empty() && !h.holds(1));
        assert_eq!(h.ack(a), Ok(None), "a second ack is a no-op");
    }

    #[test]
    fn a_token_of_a_closed_link_acknowledges_nothing() {
        let mut h = HeldAcks::default();
        h.new_link();
        let old = h.hold(7, QoS::AtLeastOnce);
        h.new_link();
        assert!(!h.holds(7));
        let new = h.hold(7, QoS::AtLeastOnce);
        assert_eq!(h.ack(old), Err(AckError::ConnectionClosed));
        assert_eq!(h.release(), None);
        assert_eq!(h.ack(new), Ok(Some((QoS::AtLeastOnce, 7))));
        let forged = AckToken(NonZeroU64::new(99).unwrap_or(NonZeroU64::MIN));
        assert_eq!(h.ack(forged), Err(AckError::Unknown));
    }
}
