//! Session stores: where the session state that must survive a crash is kept.
//!
//! With a store configured ([`crate::ClientBuilder::store`]), the core reports every session
//! change as a [`StoreOp`]. The driver commits each batch of operations before it writes the
//! bytes produced with them and before it hands the application the events of that step, so:
//! - a publish is *accepted* only once it is durable ([`crate::Client::publish_accepted`]);
//! - a PUBREC never leaves before the incoming QoS 2 packet id is recorded (exactly once holds
//!   across a restart);
//! - on start the stored session is loaded and resumed.
//!
//! Batches are group commits: while one commit runs, further commands accumulate into the next.
//!
//! Two stores come with the crate: `DurableStore` (feature `durable-store`: an SQLite database in
//! a directory; survives a crash and a reboot) and [`MemoryStore`] (this process only; for
//! tests). An application can implement [`Store`] over its own storage.

#[cfg(feature = "durable-store")]
mod durable;
mod memory;

use std::future::Future;
use std::pin::Pin;

#[cfg(feature = "durable-store")]
pub use durable::{DurableStore, DB_FILE, FORMAT_VERSION};
pub use memory::MemoryStore;
pub use steadfast_proto::session::persist::{
    OutgoingState, SessionSnapshot, StoreOp, StoredOutgoing,
};

/// Why a store could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store belongs to another client id; it is never silently reused.
    ClientIdMismatch {
        /// The id recorded in the store.
        stored: String,
        /// The id this client was configured with.
        configured: String,
    },
    /// The store was written by an incompatible version of steadfast.
    IncompatibleVersion {
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The store's content is damaged (truncated, corrupted, unreadable record).
    Corrupt(String),
    /// An I/O or database error.
    Io(String),
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StoreError::ClientIdMismatch { stored, configured } => write!(
                f,
                "the session store belongs to client id {stored:?}, not {configured:?}; use another store directory or the same client id"
            ),
            StoreError::IncompatibleVersion { found, supported } => write!(
                f,
                "the session store has format version {found}, this build reads version {supported}"
            ),
            StoreError::Corrupt(e) => write!(f, "the session store is damaged: {e}"),
            StoreError::Io(e) => write!(f, "session store I/O error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The future of a commit.
pub type CommitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// A session store.
///
/// Implementations must make a committed batch durable as a whole (all operations or none) by
/// the time the commit future resolves, and apply operations in order.
pub trait Store: Send + 'static {
    /// Opens the session for `client_id` (empty: whatever id the store holds, or none) and
    /// returns what was stored. A store that holds another non-empty client id fails with
    /// [`StoreError::ClientIdMismatch`].
    fn load(&mut self, client_id: &str) -> Result<SessionSnapshot, StoreError>;

    /// Durably applies a batch of operations, in order.
    fn commit(&mut self, ops: Vec<StoreOp>) -> CommitFuture<'_>;
}
