//! The in-memory store: keeps the session in this process only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use steadfast_proto::session::persist::{OutgoingState, SessionSnapshot, StoreOp, StoredOutgoing};
use steadfast_proto::ByteStr;

use super::{CommitFuture, Store, StoreError};

#[derive(Debug, Default)]
struct Inner {
    client_id: Option<ByteStr>,
    subscriptions: BTreeMap<ByteStr, steadfast_proto::session::subscriptions::Subscription>,
    outgoing: BTreeMap<u64, StoredOutgoing>,
    incoming_qos2: std::collections::BTreeSet<u16>,
}

/// A store that keeps the session in memory. Clones share the same state, so a second client
/// built with a clone resumes the first one's session (within one process) — handy in tests.
/// Without any store configured, the client keeps its session in memory anyway and pays for
/// no bookkeeping; this type exists for the `Store` contract and for tests.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored outgoing publications.
    pub fn outgoing_len(&self) -> usize {
        self.inner.lock().map(|i| i.outgoing.len()).unwrap_or(0)
    }
}

/// Applies one operation to in-memory maps; shared by stores that cache their state.
pub(crate) fn apply(
    client_id: &mut Option<ByteStr>,
    subscriptions: &mut BTreeMap<ByteStr, steadfast_proto::session::subscriptions::Subscription>,
    outgoing: &mut BTreeMap<u64, StoredOutgoing>,
    incoming_qos2: &mut std::collections::BTreeSet<u16>,
    op: StoreOp,
) {
    match op {
        StoreOp::ClientId(id) => *client_id = Some(id),
        StoreOp::SubscriptionUpsert(s) => {
            subscriptions.insert(s.filter.clone(), s);
        }
        StoreOp::SubscriptionRemove(f) => {
            subscriptions.remove(&f);
        }
        StoreOp::Accepted { id, publish } => {
            outgoing.insert(
                id,
                StoredOutgoing {
                    id,
                    publish,
                    state: OutgoingState::Queued,
                },
            );
        }
        StoreOp::Outgoing { id, state } => {
            if let Some(o) = outgoing.get_mut(&id) {
                o.state = state;
            }
        }
        StoreOp::Completed { id } => {
            outgoing.remove(&id);
        }
        StoreOp::IncomingQos2Add(p) => {
            incoming_qos2.insert(p);
        }
        StoreOp::IncomingQos2Remove(p) => {
            incoming_qos2.remove(&p);
        }
        StoreOp::IncomingQos2Clear => incoming_qos2.clear(),
    }
}

impl Store for MemoryStore {
    fn load(&mut self, client_id: &str) -> Result<SessionSnapshot, StoreError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError::Io("poisoned lock".into()))?;
        match &inner.client_id {
            Some(stored) if !client_id.is_empty() && stored.as_str() != client_id => {
                return Err(StoreError::ClientIdMismatch {
                    stored: stored.to_string(),
                    configured: client_id.to_string(),
                });
            }
            None if !client_id.is_empty() => inner.client_id = Some(ByteStr::from(client_id)),
            _ => {}
        }
        Ok(SessionSnapshot {
            client_id: inner.client_id.clone(),
            subscriptions: inner.subscriptions.values().cloned().collect(),
            outgoing: inner.outgoing.values().cloned().collect(),
            incoming_qos2: inner.incoming_qos2.iter().copied().collect(),
        })
    }

    fn commit(&mut self, ops: Vec<StoreOp>) -> CommitFuture<'_> {
        let result = self
            .inner
            .lock()
            .map_err(|_| StoreError::Io("poisoned lock".into()))
            .map(|mut g| {
                let i = &mut *g;
                for op in ops {
                    apply(
                        &mut i.client_id,
                        &mut i.subscriptions,
                        &mut i.outgoing,
                        &mut i.incoming_qos2,
                        op,
                    );
                }
            });
        Box::pin(async move { result })
    }
}
