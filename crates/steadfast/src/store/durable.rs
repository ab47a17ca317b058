//! The durable store: the session in an SQLite database, one file per client.
//!
//! - Every [`Store::commit`] batch is one SQLite transaction, and the database runs in WAL mode
//!   with `synchronous = FULL`: the commit future resolves only once the write-ahead log has
//!   been fsynced, so an accepted message survives a process crash and a power loss. The one
//!   exception is a batch of completions only (see `is_lazy`): it is queued and written in
//!   order without waiting, and becomes durable with the next durable commit.
//! - The database work runs on a dedicated thread; the driver awaits a channel, so its timers
//!   keep running while a commit is on disk.
//! - Records carry a CRC-32 (SQLite has no checksums of its own) and are encoded with the
//!   project's MQTT 5 codec: a stored publication is its PUBLISH packet, a subscription a
//!   SUBSCRIBE packet with that one filter. A record that fails its checksum or its decoding
//!   makes [`DurableStore::load`] fail with [`StoreError::Corrupt`] naming the record.
//! - The database is opened in exclusive locking mode: a second process (or a second client in
//!   this one) cannot use the same store at the same time.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};
use steadfast_proto::session::persist::{OutgoingState, SessionSnapshot, StoreOp, StoredOutgoing};
use steadfast_proto::session::subscriptions::Subscription;
use steadfast_proto::{
    ByteStr, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe, SubscribeFilter,
};
use tokio::sync::oneshot;

use super::{CommitFuture, Store, StoreError};

/// The name of the database file inside the store directory.
pub const DB_FILE: &str = "session.db";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// SQLite `application_id` of a steadfast session store ("STFS").
const APPLICATION_ID: i64 = 0x5354_4653;

/// How long `open` waits for a store that another client still holds (e.g. a process that is
/// just exiting) before it reports the store as in use.
const BUSY_TIMEOUT: Duration = Duration::from_secs(3);

const SCHEMA: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value NOT NULL) WITHOUT ROWID;
CREATE TABLE subscriptions (filter TEXT PRIMARY KEY NOT NULL, record BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE outgoing (
    id INTEGER PRIMARY KEY,
    state INTEGER NOT NULL,
    pkid INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE incoming_qos2 (pkid INTEGER PRIMARY KEY);
";

/// A session store that survives a crash or a reboot: an SQLite database in a directory.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use steadfast::store::DurableStore;
/// use steadfast::{ClientBuilder, Message, QoS};
///
/// let store = DurableStore::open("/var/lib/sensor-1")?;
/// let (client, _events) = ClientBuilder::from_url("mqtt://127.0.0.1:1883?client_id=sensor-1")?
///     .session_expiry(std::time::Duration::from_secs(3600))
///     .store(store)
///     .build()?;
/// let msg = Message::new("sensors/1/temp", "21.5").qos(QoS::AtLeastOnce);
/// let ack = client.publish_accepted(msg).await?; // on disk: survives kill -9 and reboots
/// ack.await?; // the broker acknowledged it
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DurableStore {
    path: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

enum Job {
    Load {
        client_id: String,
        reply: mpsc::SyncSender<Result<SessionSnapshot, StoreError>>,
    },
    /// `reply` is `None` for a batch that need not wait for the disk (see `is_lazy`).
    Commit {
        ops: Vec<StoreOp>,
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
}

/// A batch of completions only need not be durable before the driver goes on: losing it in a
/// crash makes a finished message go out again (a duplicate, which QoS 1 allows; for QoS 2 a
/// resent PUBREL, answered by PUBCOMP), never a loss. Such a batch is queued to the store
/// thread and the commit returns at once; it is written in order, without waiting for the
/// disk, and becomes durable with the next durable commit, since SQLite writes and syncs its
/// log in order. A packet id is reused only by an operation after the completion, so never
/// before the completion is durable.
fn is_lazy(ops: &[StoreOp]) -> bool {
    ops.iter().all(|op| matches!(op, StoreOp::Completed { .. }))
}

impl DurableStore {
    /// Opens the store in `dir` (created if missing), or creates a new one.
    ///
    /// Fails with [`StoreError::IncompatibleVersion`] for a store of another format version,
    /// [`StoreError::Corrupt`] for a damaged database or a file that is not a steadfast store,
    /// and [`StoreError::Io`] when the directory cannot be used or another client holds the
    /// store. The client id is checked by [`Store::load`] (called by `ClientBuilder::build`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Io(format!(
                "cannot create the store directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(DB_FILE);
        let db = guard(&path, || Db::open(&path))?;
        let (jobs, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("steadfast-store".into())
            .spawn(move || worker(db, rx))
            .map_err(|e| StoreError::Io(format!("cannot start the store thread: {e}")))?;
        Ok(DurableStore {
            path,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .ok_or_else(|| StoreError::Io("the store thread has ended".into()))
    }
}

impl Store for DurableStore {
    fn load(&mut self, client_id: &str) -> Result<SessionSnapshot, StoreError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.send(Job::Load {
            client_id: client_id.to_owned(),
            reply,
        })?;
        rx.recv()
            .map_err(|_| StoreError::Io("the store thread has ended".into()))?
    }

    fn commit(&mut self, ops: Vec<StoreOp>) -> CommitFuture<'_> {
        if ops.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        if is_lazy(&ops) {
            // A failure shows on the next commit (the store thread keeps it).
            let sent = self.send(Job::Commit { ops, reply: None });
            return Box::pin(async move { sent });
        }
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Job::Commit {
            ops,
            reply: Some(reply),
        });
        Box::pin(async move {
            sent?;
            rx.await
                .map_err(|_| StoreError::Io("the store thread has ended".into()))?
        })
    }
}

impl Drop for DurableStore {
    fn drop(&mut self) {
        // The thread finishes the job at hand, closes the database (releasing its lock) and
        // ends; waiting for it lets the same store be opened again right away.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn worker(mut db: Db, jobs: mpsc::Receiver<Job>) {
    // After a failed commit the store is not used again: every later job gets that error.
    let mut failed: Option<StoreError> = None;
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Load { client_id, reply } => {
                let r = match &failed {
                    Some(e) => Err(e.clone()),
                    None => guard(&db.path.clone(), || db.load(&client_id)),
                };
                let _ = reply.send(r);
            }
            Job::Commit { ops, reply } => {
                let r = match &failed {
                    Some(e) => Err(e.clone()),
                    None => guard(&db.path.clone(), || db.commit(ops, reply.is_some())),
                };
                if let Err(e) = &r {
                    failed = Some(e.clone());
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
        }
    }
}

/// Runs `f`, turning a panic (a bug, or a library tripping over a damaged file) into an error.
fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(StoreError::Corrupt(format!(
                "{}: unexpected failure reading the store: {msg}",
                path.display()
            )))
        }
    }
}

struct Db {
    conn: Connection,
    path: PathBuf,
    /// Whether commits currently wait for the disk (`synchronous = FULL`).
    sync_full: bool,
}

/// What one batch does to one stored publication, after coalescing.
enum Change {
    Insert(Box<Publish>, OutgoingState),
    Update(OutgoingState),
    Delete,
}

impl Db {
    fn err(&self, what: &str, e: rusqlite::Error) -> StoreError {
        sql_error(&self.path, what, e)
    }

    fn open(path: &Path) -> Result<Db, StoreError> {
        let err = |what: &str, e| sql_error(path, what, e);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err("cannot open", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| err("cannot configure", e))?;
        // Exclusive before the first access: the lock is kept until the store is closed, and
        // WAL mode then needs no shared-memory file.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(|e| err("cannot configure", e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| err("cannot open", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Io(format!(
                "{}: cannot use WAL mode (got {mode})",
                path.display()
            )));
        }
        // FULL: in WAL mode, every commit fsyncs the log before it returns.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| err("cannot configure", e))?;
        let mut db = Db {
            conn,
            path: path.to_owned(),
            sync_full: true,
        };
        db.init()?;
        db.check()?;
        Ok(db)
    }

    /// Creates the schema in a new database, or checks that an existing one is ours and of
    /// our format version.
    fn init(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |what: &str, e| sql_error(&path, what, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| err("cannot open", e))?;
        let app: i64 = tx
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|e| err("cannot read the header", e))?;
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| err("cannot read the schema", e))?;
        if app == 0 && tables == 0 {
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(|e| err("cannot create the store", e))?;
            tx.execute_batch(SCHEMA)
                .map_err(|e| err("cannot create the store", e))?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('format_version', ?1)",
                params![FORMAT_VERSION],
            )
            .map_err(|e| err("cannot create the store", e))?;
            tx.commit().map_err(|e| err("cannot create the store", e))?;
            return Ok(());
        }
        if app != APPLICATION_ID {
            return Err(StoreError::Corrupt(format!(
                "{} is an SQLite database but not a steadfast session store (application id {app:#x})",
                path.display()
            )));
        }
        let found = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'format_version'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| match e {
                rusqlite::Error::QueryReturnedNoRows | rusqlite::Error::InvalidColumnType(..) => {
                    StoreError::Corrupt(format!(
                        "{}: meta record format_version is missing or not a number",
                        path.display()
                    ))
                }
                e => err("cannot read meta record format_version", e),
            })?;
        if found != i64::from(FORMAT_VERSION) {
            return Err(StoreError::IncompatibleVersion {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        Ok(())
    }

    /// SQLite's structural check of every page (b-trees, free list): damage anywhere is
    /// reported now, not in the middle of a later commit.
    fn check(&self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA quick_check")
            .map_err(|e| self.err("integrity check failed", e))?;
        let problems: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| self.err("integrity check failed", e))?;
        if problems.len() == 1 && problems[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Corrupt(format!(
            "{}: integrity check failed: {}",
            self.path.display(),
            problems.into_iter().take(3).collect::<Vec<_>>().join("; ")
        )))
    }

    fn load(&mut self, client_id: &str) -> Result<SessionSnapshot, StoreError> {
        let path = self.path.clone();
        let corrupt = |what: String| StoreError::Corrupt(format!("{}: {what}", path.display()));
        let stored: Option<String> =
            match self
                .conn
                .query_row("SELECT value FROM meta WHERE key = 'client_id'", [], |r| {
                    r.get::<_, String>(0)
                }) {
                Ok(id) => Some(id),
                Err(rusqlite::Error::QueryReturnedNoRows) => None,
                Err(
                    rusqlite::Error::InvalidColumnType(..)
                    | rusqlite::Error::FromSqlConversionFailure(..),
                ) => return Err(corrupt("meta record client_id is not text".into())),
                Err(e) => return Err(self.err("cannot read meta record client_id", e)),
            };
        let client_id = match stored {
            Some(s) if !client_id.is_empty() && !s.is_empty() && s != client_id => {
                return Err(StoreError::ClientIdMismatch {
                    stored: s,
                    configured: client_id.to_owned(),
                })
            }
            Some(s) if !s.is_empty() => Some(ByteStr::from(s)),
            _ if !client_id.is_empty() => Some(ByteStr::from(client_id.to_owned())),
            _ => None,
        };

        let mut subscriptions = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT filter, record FROM subscriptions ORDER BY filter")
                .map_err(|e| sql_error(&path, "cannot read subscriptions", e))?;
            let mut rows = stmt
                .query([])
                .map_err(|e| sql_error(&path, "cannot read subscriptions", e))?;
            while let Some(row) = rows
                .next()
                .map_err(|e| sql_error(&path, "cannot read subscriptions", e))?
            {
                let filter: String = row.get(0).map_err(|_| {
                    corrupt("a subscription record has a key that is not text".into())
                })?;
                let record: Vec<u8> = row.get(1).map_err(|_| {
                    corrupt(format!("subscription record {filter:?} is not a blob"))
                })?;
                let sub = decode_subscription(&filter, &record)
                    .map_err(|e| corrupt(format!("subscription record {filter:?}: {e}")))?;
                subscriptions.push(sub);
            }
        }

        let mut outgoing = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT id, state, pkid, record FROM outgoing ORDER BY id")
                .map_err(|e| sql_error(&path, "cannot read outgoing messages", e))?;
            let mut rows = stmt
                .query([])
                .map_err(|e| sql_error(&path, "cannot read outgoing messages", e))?;
            while let Some(row) = rows
                .next()
                .map_err(|e| sql_error(&path, "cannot read outgoing messages", e))?
            {
                let id = row.get::<_, i64>(0).map_err(|_| {
                    corrupt("an outgoing record has a key that is not an integer".into())
                })? as u64;
                let state: i64 = row.get(1).map_err(|_| {
                    corrupt(format!("outgoing record {id}: state is not an integer"))
                })?;
                let pkid: i64 = row.get(2).map_err(|_| {
                    corrupt(format!("outgoing record {id}: packet id is not an integer"))
                })?;
                let record: Vec<u8> = row
                    .get(3)
                    .map_err(|_| corrupt(format!("outgoing record {id}: not a blob")))?;
                let state = decode_state(state, pkid).ok_or_else(|| {
                    corrupt(format!(
                        "outgoing record {id}: bad state {state} / packet id {pkid}"
                    ))
                })?;
                let mut publish = decode_publish(id, &record)
                    .map_err(|e| corrupt(format!("outgoing record {id}: {e}")))?;
                publish.pkid = match state {
                    OutgoingState::Queued => 0,
                    OutgoingState::AwaitPubAck(p)
                    | OutgoingState::AwaitPubRec(p)
                    | OutgoingState::AwaitPubComp(p) => p,
                };
                outgoing.push(StoredOutgoing { id, publish, state });
            }
        }

        let mut incoming_qos2 = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT pkid FROM incoming_qos2 ORDER BY pkid")
                .map_err(|e| sql_error(&path, "cannot read incoming QoS 2 ids", e))?;
            let mut rows = stmt
                .query([])
                .map_err(|e| sql_error(&path, "cannot read incoming QoS 2 ids", e))?;
            while let Some(row) = rows
                .next()
                .map_err(|e| sql_error(&path, "cannot read incoming QoS 2 ids", e))?
            {
                let p: i64 = row
                    .get(0)
                    .map_err(|_| corrupt("an incoming QoS 2 record is not an integer".into()))?;
                match u16::try_from(p) {
                    Ok(p) if p != 0 => incoming_qos2.push(p),
                    _ => {
                        return Err(corrupt(format!(
                            "incoming QoS 2 record {p}: not a packet id"
                        )))
                    }
                }
            }
        }

        Ok(SessionSnapshot {
            client_id,
            subscriptions,
            outgoing,
            incoming_qos2,
        })
    }

    /// One transaction; with `durable`, synced to disk before it returns.
    fn commit(&mut self, ops: Vec<StoreOp>, durable: bool) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |what: &str, e| sql_error(&path, what, e);
        if durable != self.sync_full {
            let mode = if durable { "FULL" } else { "NORMAL" };
            self.conn
                .pragma_update(None, "synchronous", mode)
                .map_err(|e| err("cannot configure", e))?;
            self.sync_full = durable;
        }
        // Outgoing publications are coalesced per id (accepted + sent in one batch is one
        // insert; accepted + finished is nothing); everything else keeps its order.
        let mut changes: BTreeMap<u64, Change> = BTreeMap::new();
        let mut others = Vec::new();
        for op in ops {
            match op {
                StoreOp::Accepted { id, publish } => {
                    changes.insert(id, Change::Insert(Box::new(publish), OutgoingState::Queued));
                }
                StoreOp::Outgoing { id, state } => match changes.get_mut(&id) {
                    Some(Change::Insert(_, s)) | Some(Change::Update(s)) => *s = state,
                    Some(Change::Delete) => {}
                    None => {
                        changes.insert(id, Change::Update(state));
                    }
                },
                StoreOp::Completed { id } => {
                    // Accepted in this batch: it never reaches the database.
                    if let Some(Change::Insert(..)) = changes.insert(id, Change::Delete) {
                        changes.remove(&id);
                    }
                }
                other => others.push(other),
            }
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| err("cannot start a transaction", e))?;
        for op in others {
            let r = match op {
                StoreOp::ClientId(id) => tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('client_id', ?1)",
                    )
                    .and_then(|mut s| s.execute(params![id.as_str()])),
                StoreOp::SubscriptionUpsert(sub) => {
                    let record = encode_subscription(&sub)?;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO subscriptions (filter, record) VALUES (?1, ?2)",
                    )
                    .and_then(|mut s| s.execute(params![sub.filter.as_str(), record]))
                }
                StoreOp::SubscriptionRemove(f) => tx
                    .prepare_cached("DELETE FROM subscriptions WHERE filter = ?1")
                    .and_then(|mut s| s.execute(params![f.as_str()])),
                StoreOp::IncomingQos2Add(p) => tx
                    .prepare_cached("INSERT OR IGNORE INTO incoming_qos2 (pkid) VALUES (?1)")
                    .and_then(|mut s| s.execute(params![p])),
                StoreOp::IncomingQos2Remove(p) => tx
                    .prepare_cached("DELETE FROM incoming_qos2 WHERE pkid = ?1")
                    .and_then(|mut s| s.execute(params![p])),
                StoreOp::IncomingQos2Clear => tx.execute("DELETE FROM incoming_qos2", []),
                StoreOp::Accepted { .. } | StoreOp::Outgoing { .. } | StoreOp::Completed { .. } => {
                    Ok(0)
                }
            };
            r.map_err(|e| err("cannot write", e))?;
        }
        if !changes.is_empty() {
            let mut insert = tx
                .prepare_cached("INSERT OR REPLACE INTO outgoing (id, state, pkid, record) VALUES (?1, ?2, ?3, ?4)")
                .map_err(|e| err("cannot write", e))?;
            let mut update = tx
                .prepare_cached("UPDATE outgoing SET state = ?2, pkid = ?3 WHERE id = ?1")
                .map_err(|e| err("cannot write", e))?;
            let mut delete = tx
                .prepare_cached("DELETE FROM outgoing WHERE id = ?1")
                .map_err(|e| err("cannot write", e))?;
            let mut buf = BytesMut::new();
            for (id, change) in changes {
                let key = id as i64;
                let r = match change {
                    Change::Insert(publish, state) => {
                        let (s, p) = encode_state(state);
                        encode_publish(id, *publish, &mut buf)?;
                        insert.execute(params![key, s, p, &buf[..]])
                    }
                    Change::Update(state) => {
                        let (s, p) = encode_state(state);
                        update.execute(params![key, s, p])
                    }
                    Change::Delete => delete.execute(params![key]),
                };
                r.map_err(|e| err("cannot write", e))?;
            }
        }
        tx.commit().map_err(|e| err("cannot commit", e))
    }
}

fn sql_error(path: &Path, what: &str, e: rusqlite::Error) -> StoreError {
    let path = path.display();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("{path}: {what}: {e}"))
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Io(format!(
            "{path}: {what}: the store is in use by another client (a store serves one client at a time): {e}"
        )),
        _ => StoreError::Io(format!("{path}: {what}: {e}")),
    }
}

fn encode_state(state: OutgoingState) -> (i64, i64) {
    match state {
        OutgoingState::Queued => (0, 0),
        OutgoingState::AwaitPubAck(p) => (1, i64::from(p)),
        OutgoingState::AwaitPubRec(p) => (2, i64::from(p)),
        OutgoingState::AwaitPubComp(p) => (3, i64::from(p)),
    }
}

fn decode_state(state: i64, pkid: i64) -> Option<OutgoingState> {
    let p = u16::try_from(pkid).ok()?;
    match (state, p) {
        (0, 0) => Some(OutgoingState::Queued),
        (1, p) if p != 0 => Some(OutgoingState::AwaitPubAck(p)),
        (2, p) if p != 0 => Some(OutgoingState::AwaitPubRec(p)),
        (3, p) if p != 0 => Some(OutgoingState::AwaitPubComp(p)),
        _ => None,
    }
}

/// `[CRC-32 of key and packet, big endian][MQTT 5 packet]`.
fn seal(key: &[u8], buf: &mut BytesMut, start: usize) {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&h.finalize().to_be_bytes());
}

fn unseal<'a>(key: &[u8], record: &'a [u8]) -> Result<&'a [u8], String> {
    if record.len() < 4 {
        return Err(format!("truncated ({} bytes)", record.len()));
    }
    let (crc, body) = record.split_at(4);
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(body);
    if h.finalize().to_be_bytes() != crc {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

fn encode_publish(id: u64, mut publish: Publish, buf: &mut BytesMut) -> Result<(), StoreError> {
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    publish.dup = false;
    publish.pkid = if publish.qos == QoS::AtMostOnce { 0 } else { 1 };
    Packet::Publish(publish)
        .encode(ProtocolVersion::V5, buf)
        .map_err(|e| StoreError::Io(format!("cannot encode outgoing record {id}: {e}")))?;
    seal(&id.to_be_bytes(), buf, 0);
    Ok(())
}

fn decode_publish(id: u64, record: &[u8]) -> Result<Publish, String> {
    let body = unseal(&id.to_be_bytes(), record)?;
    let mut buf = BytesMut::from(body);
    match Packet::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
        Ok(Packet::Publish(p)) if buf.is_empty() => Ok(p),
        Ok(Packet::Publish(_)) => Err("trailing bytes after the PUBLISH packet".into()),
        Ok(other) => Err(format!(
            "holds a {:?} packet, not a PUBLISH",
            packet_name(&other)
        )),
        Err(e) => Err(format!("undecodable PUBLISH packet: {e}")),
    }
}

fn encode_subscription(sub: &Subscription) -> Result<Vec<u8>, StoreError> {
    let mut properties = Properties::default();
    if let Some(id) = sub.id {
        properties.subscription_identifiers.push(id);
    }
    properties.user_properties = sub.user_properties.clone();
    let packet = Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![SubscribeFilter {
            filter: sub.filter.clone(),
            options: sub.options,
        }],
        properties: properties.into(),
    });
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[0; 4]);
    packet.encode(ProtocolVersion::V5, &mut buf).map_err(|e| {
        StoreError::Io(format!(
            "cannot encode subscription record {:?}: {e}",
            sub.filter.as_str()
        ))
    })?;
    seal(sub.filter.as_str().as_bytes(), &mut buf, 0);
    Ok(buf.to_vec())
}

fn decode_subscription(filter: &str, record: &[u8]) -> Result<Subscription, String> {
    let body = unseal(filter.as_bytes(), record)?;
    let mut buf = BytesMut::from(body);
    let s = match Packet::decode(&mut buf, ProtocolVersion::V5, u32::MAX) {
        Ok(Packet::Subscribe(s)) if buf.is_empty() => s,
        Ok(Packet::Subscribe(_)) => return Err("trailing bytes after the SUBSCRIBE packet".into()),
        Ok(other) => {
            return Err(format!(
                "holds a {:?} packet, not a SUBSCRIBE",
                packet_name(&other)
            ))
        }
        Err(e) => return Err(format!("undecodable SUBSCRIBE packet: {e}")),
    };
    let [f] = <[SubscribeFilter; 1]>::try_from(s.filters)
        .map_err(|_| "not exactly one filter".to_string())?;
    if f.filter.as_str() != filter {
        return Err(format!("holds filter {:?}", f.filter.as_str()));
    }
    if s.properties.subscription_identifiers.len() > 1 {
        return Err("more than one subscription identifier".into());
    }
    Ok(Subscription {
        filter: f.filter,
        options: f.options,
        id: s.properties.subscription_identifiers.first().copied(),
        user_properties: s.properties.into_inner().user_properties,
        confirmed: true,
    })
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        _ => "control",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use steadfast_proto::{RetainHandling, SubscriptionOptions};

    fn publish(qos: QoS, payload: &'static str) -> Publish {
        let mut properties = Properties::default();
        properties.user_properties.push(("k".into(), "v".into()));
        properties.message_expiry_interval = Some(60);
        Publish {
            dup: false,
            qos,
            retain: true,
            topic: "a/b".into(),
            pkid: 0,
            properties: properties.into(),
            payload: Bytes::from_static(payload.as_bytes()),
        }
    }

    fn sub(filter: &str, id: Option<u32>) -> Subscription {
        Subscription {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
            id,
            user_properties: vec![("u".into(), "p".into())],
            confirmed: true,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn round_trip_of_every_record_kind() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = DurableStore::open(dir.path()).unwrap();
            let snap = s.load("c1").unwrap();
            assert_eq!(snap.client_id.as_deref(), Some("c1"));
            assert!(snap.outgoing.is_empty() && snap.subscriptions.is_empty());
            block_on(s.commit(vec![
                StoreOp::ClientId("c1".into()),
                StoreOp::SubscriptionUpsert(sub("x/#", Some(7))),
                StoreOp::SubscriptionUpsert(sub("y", None)),
                StoreOp::SubscriptionUpsert(sub("z", None)),
                StoreOp::SubscriptionRemove("z".into()),
                StoreOp::Accepted {
                    id: 1,
                    publish: publish(QoS::AtLeastOnce, "one"),
                },
                StoreOp::Accepted {
                    id: 2,
                    publish: publish(QoS::ExactlyOnce, "two"),
                },
                StoreOp::Accepted {
                    id: 3,
                    publish: publish(QoS::AtMostOnce, "three"),
                },
                StoreOp::Accepted {
                    id: 4,
                    publish: publish(QoS::AtLeastOnce, "four"),
                },
                StoreOp::Outgoing {
                    id: 1,
                    state: OutgoingState::AwaitPubAck(10),
                },
                StoreOp::Completed { id: 4 },
                StoreOp::IncomingQos2Add(5),
                StoreOp::IncomingQos2Add(6),
            ]))
            .unwrap();
            block_on(s.commit(vec![
                StoreOp::Outgoing {
                    id: 2,
                    state: OutgoingState::AwaitPubRec(11),
                },
                StoreOp::Outgoing {
                    id: 2,
                    state: OutgoingState::AwaitPubComp(11),
                },
                StoreOp::IncomingQos2Remove(5),
            ]))
            .unwrap();
        }
        let mut s = DurableStore::open(dir.path()).unwrap();
        let snap = s.load("").unwrap();
        assert_eq!(snap.client_id.as_deref(), Some("c1"));
        assert_eq!(
            snap.subscriptions,
            vec![sub("x/#", Some(7)), sub("y", None)]
        );
        assert_eq!(snap.incoming_qos2, vec![6]);
        let mut p1 = publish(QoS::AtLeastOnce, "one");
        p1.pkid = 10;
        let mut p2 = publish(QoS::ExactlyOnce, "two");
        p2.pkid = 11;
        assert_eq!(
            snap.outgoing,
            vec![
                StoredOutgoing {
                    id: 1,
                    publish: p1,
                    state: OutgoingState::AwaitPubAck(10)
                },
                StoredOutgoing {
                    id: 2,
                    publish: p2,
                    state: OutgoingState::AwaitPubComp(11)
                },
                StoredOutgoing {
                    id: 3,
                    publish: publish(QoS::AtMostOnce, "three"),
                    state: OutgoingState::Queued
                },
            ]
        );
        // The same store, another client id: refused.
        assert_eq!(
            s.load("c2"),
            Err(StoreError::ClientIdMismatch {
                stored: "c1".into(),
                configured: "c2".into()
            })
        );
        block_on(s.commit(vec![
            StoreOp::IncomingQos2Clear,
            StoreOp::Completed { id: 1 },
        ]))
        .unwrap();
        let snap = s.load("c1").unwrap();
        assert!(snap.incoming_qos2.is_empty());
        assert_eq!(snap.outgoing.len(), 2);
    }

    #[test]
    fn a_second_opener_is_refused_while_the_store_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = DurableStore::open(dir.path()).unwrap();
        first.load("a").unwrap();
        let start = std::time::Instant::now();
        let e = DurableStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(&e, StoreError::Io(m) if m.contains("in use")),
            "{e}"
        );
        assert!(start.elapsed() >= BUSY_TIMEOUT / 2);
        drop(first);
        DurableStore::open(dir.path()).unwrap();
    }

    #[test]
    fn damaged_records_name_their_key() {
        assert!(decode_publish(9, b"\0\0")
            .unwrap_err()
            .contains("truncated"));
        let mut buf = BytesMut::new();
        encode_publish(9, publish(QoS::AtLeastOnce, "x"), &mut buf).unwrap();
        assert!(decode_publish(9, &buf).is_ok());
        assert!(decode_publish(8, &buf).unwrap_err().contains("checksum"));
        let mut bad = buf.to_vec();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(decode_publish(9, &bad).unwrap_err().contains("checksum"));
        // A valid checksum over garbage: the codec refuses it.
        let mut garbage = BytesMut::from(&[0u8, 0, 0, 0, 0xff, 0xff, 0xff][..]);
        seal(&9u64.to_be_bytes(), &mut garbage, 0);
        assert!(decode_publish(9, &garbage)
            .unwrap_err()
            .contains("undecodable"));
        assert_eq!(decode_state(4, 1), None);
        assert_eq!(decode_state(1, 0), None);
        assert_eq!(decode_state(0, 70000), None);
    }
}
