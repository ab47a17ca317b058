//! The subscription registry, replayed after a reconnect when the broker has no session.

use std::collections::BTreeMap;

use crate::{ByteStr, SubscriptionOptions};

/// One registered subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The filter.
    pub filter: ByteStr,
    /// Its options.
    pub options: SubscriptionOptions,
    /// The MQTT 5 subscription identifier the client assigned (shared by the filters of one
    /// `subscribe` call).
    pub id: Option<u32>,
    /// User properties sent with it.
    pub user_properties: Vec<(ByteStr, ByteStr)>,
    /// True once a SUBACK granted it.
    pub confirmed: bool,
}

/// Filters the client holds, keyed by filter.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    subs: BTreeMap<ByteStr, Subscription>,
}

impl Registry {
    /// Adds or replaces a subscription.
    pub fn insert(&mut self, s: Subscription) {
        self.subs.insert(s.filter.clone(), s);
    }

    /// Removes a filter.
    pub fn remove(&mut self, filter: &str) -> Option<Subscription> {
        self.subs.remove(filter)
    }

    /// Looks up a filter.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut Subscription> {
        self.subs.get_mut(filter)
    }

    /// Looks up a filter.
    pub fn get(&self, filter: &str) -> Option<&Subscription> {
        self.subs.get(filter)
    }

    /// All subscriptions, ordered by filter.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.subs.values()
    }

    /// Number of filters.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Filters whose subscription identifier is `id`.
    pub fn by_id(&self, id: u32) -> impl Iterator<Item = &Subscription> {
        self.subs.values().filter(move |s| s.id == Some(id))
    }
}
