//! Packet identifier allocation. One map records who owns each id in use, so an id is never
//! given to two in-flight packets at once.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::event::Token;

/// A fast hasher for `u16`/`u32`/`u64` keys (Fibonacci hashing; keys are not attacker-chosen
/// in a way that matters: at most 65,535 ids exist).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A `HashMap` keyed by small integer ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// What a packet id in use belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// An outgoing QoS 1/2 PUBLISH; the value is its in-flight sequence number.
    Publish(u64),
    /// A SUBSCRIBE made by the application.
    Subscribe(Token),
    /// An UNSUBSCRIBE made by the application.
    Unsubscribe(Token),
    /// A SUBSCRIBE the client sent on its own to restore subscriptions.
    Resubscribe,
}

/// Allocates packet ids 1..=65535, skipping ids in use.
#[derive(Debug, Default, Clone)]
pub struct PkidPool {
    next: u16,
    owners: IdMap<u16, Owner>,
}

impl PkidPool {
    /// Takes a free id for `owner`, or `None` when all 65,535 are in use.
    pub fn alloc(&mut self, owner: Owner) -> Option<u16> {
        if self.owners.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.next = self.next.wrapping_add(1);
            if self.next == 0 {
                self.next = 1;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = self.owners.entry(self.next) {
                e.insert(owner);
                return Some(self.next);
            }
        }
    }

    /// Records `pkid` as owned (used when restoring a session).
    pub fn claim(&mut self, pkid: u16, owner: Owner) {
        self.owners.insert(pkid, owner);
    }

    /// The owner of `pkid`.
    pub fn owner(&self, pkid: u16) -> Option<Owner> {
        self.owners.get(&pkid).copied()
    }

    /// Frees `pkid`, returning its owner.
    pub fn release(&mut self, pkid: u16) -> Option<Owner> {
        self.owners.remove(&pkid)
    }

    /// Number of ids in use.
    pub fn in_use(&self) -> usize {
        self.owners.len()
    }

    /// Frees every id whose owner matches `pred`.
    pub fn release_where(&mut self, mut pred: impl FnMut(&Owner) -> bool) {
        self.owners.retain(|_, o| !pred(o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_skip_zero_and_wrap() {
        let mut p = PkidPool::default();
        let a = p.alloc(Owner::Publish(1)).unwrap();
        assert_eq!(a, 1);
        p.release(a);
        p.next = u16::MAX - 1;
        assert_eq!(p.alloc(Owner::Publish(2)), Some(u16::MAX));
        assert_eq!(p.alloc(Owner::Publish(3)), Some(1));
        p.claim(2, Owner::Resubscribe);
        assert_eq!(p.alloc(Owner::Publish(4)), Some(3));
    }

    #[test]
    fn exhaustion_returns_none() {
        let mut p = PkidPool::default();
        for i in 0..u64::from(u16::MAX) {
            assert!(p.alloc(Owner::Publish(i)).is_some());
        }
        assert_eq!(p.alloc(Owner::Publish(0)), None);
        p.release(77);
        assert_eq!(p.alloc(Owner::Publish(0)), Some(77));
    }
}
