//! The subscription registry, replayed after a reconnect when the broker has no session.

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

/// Filters the client holds, ordered by filter.
///
/// A sorted `Vec` rather than a `BTreeMap`: most clients hold a handful of filters, and a
/// B-tree allocates a whole node (eleven entries, about 1.1 KiB) for the first one.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    subs: Vec<Subscription>,
}

impl Registry {
    fn find(&self, filter: &str) -> Result<usize, usize> {
        self.subs
            .binary_search_by(|s| s.filter.as_str().cmp(filter))
    }

    /// Adds or replaces a subscription.
    pub fn insert(&mut self, s: Subscription) {
        match self.find(&s.filter) {
            Ok(i) => self.subs[i] = s,
            Err(i) => {
                if self.subs.len() == self.subs.capacity() && self.subs.len() < 4 {
                    // Grow one at a time while small (Vec would jump to four).
                    self.subs.reserve_exact(1);
                }
                self.subs.insert(i, s);
            }
        }
    }

    /// Removes a filter.
    pub fn remove(&mut self, filter: &str) -> Option<Subscription> {
        let i = self.find(filter).ok()?;
        let s = self.subs.remove(i);
        if self.subs.is_empty() {
            self.subs = Vec::new();
        }
        Some(s)
    }

    /// Looks up a filter.
    pub fn get_mut(&mut self, filter: &str) -> Option<&mut Subscription> {
        let i = self.find(filter).ok()?;
        self.subs.get_mut(i)
    }

    /// Looks up a filter.
    pub fn get(&self, filter: &str) -> Option<&Subscription> {
        let i = self.find(filter).ok()?;
        self.subs.get(i)
    }

    /// All subscriptions, ordered by filter.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.subs.iter()
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
        self.subs.iter().filter(move |s| s.id == Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(filter: &str, id: Option<u32>) -> Subscription {
        Subscription {
            filter: ByteStr::from(filter),
            options: SubscriptionOptions::default(),
            id,
            user_properties: Vec::new(),
            confirmed: false,
        }
    }

    #[test]
    fn keeps_filters_ordered_unique_and_findable() {
        let mut r = Registry::default();
        for f in ["b/#", "a/+", "c", "a/+"] {
            r.insert(sub(f, Some(1)));
        }
        assert_eq!(r.len(), 3);
        let order: Vec<&str> = r.iter().map(|s| s.filter.as_str()).collect();
        assert_eq!(order, ["a/+", "b/#", "c"]);
        if let Some(s) = r.get_mut("c") {
            s.id = Some(2);
        }
        assert_eq!(r.by_id(1).count(), 2);
        assert_eq!(r.get("c").and_then(|s| s.id), Some(2));
        assert!(r.get("d").is_none());
        assert_eq!(
            r.remove("b/#").map(|s| s.filter),
            Some(ByteStr::from("b/#"))
        );
        assert!(r.remove("b/#").is_none());
        r.remove("a/+");
        r.remove("c");
        assert!(r.is_empty());
    }

    #[test]
    fn one_filter_takes_one_slot() {
        let mut r = Registry::default();
        r.insert(sub("x", None));
        assert_eq!(r.subs.capacity(), 1);
        r.remove("x");
        assert_eq!(r.subs.capacity(), 0);
    }
}
