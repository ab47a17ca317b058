//! The durable store refuses what it must not use, with a clear error and never a panic:
//! another client's store, another format version, damaged or foreign files.
//!
//! Feature `durable-store`.
#![cfg(feature = "durable-store")]

use std::time::Duration;

use bytes::Bytes;
use steadfast::store::{DurableStore, Store, StoreError, StoreOp, DB_FILE, FORMAT_VERSION};
use steadfast::{BuildError, ClientBuilder, Publish, QoS, State};
use steadfast_chaos::mosquitto::Mosquitto;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("store-errors")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn publish(payload: &str) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t".into(),
        pkid: 0,
        properties: Default::default(),
        payload: Bytes::from(payload.to_owned()),
    }
}

/// A store of client `id` holding `n` queued messages, closed again.
fn filled_store(dir: &std::path::Path, id: &str, n: u64, payload: &str) {
    let mut s = DurableStore::open(dir).expect("open");
    s.load(id).expect("load");
    let mut ops = vec![StoreOp::ClientId(id.into())];
    ops.extend((1..=n).map(|i| StoreOp::Accepted {
        id: i,
        publish: publish(&format!("{payload}-{i}")),
    }));
    block_on(s.commit(ops)).expect("commit");
}

fn open_and_load(dir: &std::path::Path) -> Result<usize, StoreError> {
    let mut s = DurableStore::open(dir)?;
    Ok(s.load("")?.outgoing.len())
}

#[test]
fn another_client_id_fails_build_with_client_id_mismatch() {
    let broker = Mosquitto::start().expect("private mosquitto");
    let dir = tempdir();
    block_on(async {
        let (client, _events) = ClientBuilder::new()
            .server(broker.url())
            .client_id("alpha")
            .store(DurableStore::open(dir.path()).expect("open"))
            .build()
            .expect("build");
        let s = tokio::time::timeout(
            Duration::from_secs(10),
            client.wait_for_state(|s| s == State::Connected),
        )
        .await
        .expect("connected");
        assert_eq!(s, State::Connected);
        client.disconnect().await.expect("disconnect");
    });
    // The driver has ended and released the store (open waits for a store still held).
    let e = ClientBuilder::new()
        .server(broker.url())
        .client_id("beta")
        .store(DurableStore::open(dir.path()).expect("reopen"))
        .build()
        .expect_err("another client id must be refused");
    assert_eq!(
        e,
        BuildError::Store(StoreError::ClientIdMismatch {
            stored: "alpha".into(),
            configured: "beta".into()
        })
    );
    let source = std::error::Error::source(&e).expect("the store error is the source");
    assert!(source.is::<StoreError>(), "{source}");
    assert!(
        e.to_string().contains("\"alpha\"") && e.to_string().contains("\"beta\""),
        "{e}"
    );

    let mut s = DurableStore::open(dir.path()).expect("reopen");
    assert_eq!(
        s.load("beta"),
        Err(StoreError::ClientIdMismatch {
            stored: "alpha".into(),
            configured: "beta".into()
        })
    );
    // No client id configured: the stored one is used.
    assert_eq!(
        s.load("").expect("load").client_id.as_deref(),
        Some("alpha")
    );
}

#[test]
fn another_format_version_is_incompatible() {
    let dir = tempdir();
    filled_store(dir.path(), "c", 1, "x");
    let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    db.execute(
        "UPDATE meta SET value = 99 WHERE key = 'format_version'",
        [],
    )
    .expect("update");
    drop(db);
    let e = open_and_load(dir.path()).expect_err("must be refused");
    assert_eq!(
        e,
        StoreError::IncompatibleVersion {
            found: 99,
            supported: FORMAT_VERSION
        }
    );
    assert!(e.to_string().contains("format version 99"), "{e}");
}

#[test]
fn a_truncated_database_is_corrupt() {
    let dir = tempdir();
    filled_store(dir.path(), "c", 400, &"p".repeat(1000));
    let path = dir.path().join(DB_FILE);
    let len = std::fs::metadata(&path).expect("db file").len();
    assert!(
        len > 100_000,
        "the store should span many pages ({len} bytes)"
    );
    for keep in [len / 2, len / 5, 4096 + 100, 100] {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(keep).expect("truncate");
        drop(f);
        let e = open_and_load(dir.path()).expect_err("a truncated store must be refused");
        assert!(
            matches!(e, StoreError::Corrupt(_)),
            "truncated to {keep}: {e:?}"
        );
        assert!(e.to_string().contains(DB_FILE), "{e}");
    }
}

#[test]
fn garbage_and_foreign_files_are_refused() {
    // Not a database at all.
    let dir = tempdir();
    let mut junk = Vec::new();
    let mut x = 0x1234_5678_u32;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk.push(x as u8);
    }
    std::fs::write(dir.path().join(DB_FILE), &junk).expect("write");
    let e = open_and_load(dir.path()).expect_err("garbage must be refused");
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");

    // A store whose header was overwritten.
    let dir = tempdir();
    filled_store(dir.path(), "c", 10, "x");
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[..100].copy_from_slice(&junk[..100]);
    std::fs::write(&path, &bytes).expect("write");
    let e = open_and_load(dir.path()).expect_err("a damaged header must be refused");
    assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");

    // Some other application's SQLite database.
    let dir = tempdir();
    let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    db.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
        .expect("create");
    drop(db);
    let e = open_and_load(dir.path()).expect_err("a foreign database must be refused");
    assert!(
        matches!(&e, StoreError::Corrupt(m) if m.contains("not a steadfast session store")),
        "{e:?}"
    );
}

#[test]
fn a_damaged_record_is_corrupt_and_named() {
    let dir = tempdir();
    filled_store(dir.path(), "c", 3, "MARKER-PAYLOAD");
    let path = dir.path().join(DB_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    // Flip one byte inside the payload of record 2 (SQLite has no checksums of its own).
    let needle = b"MARKER-PAYLOAD-2";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("record 2 in the file");
    bytes[at + 3] ^= 0x20;
    std::fs::write(&path, &bytes).expect("write");
    let e = open_and_load(dir.path()).expect_err("a damaged record must be refused");
    match &e {
        StoreError::Corrupt(m) => assert!(
            m.contains("outgoing record 2") && m.contains("checksum"),
            "{m}"
        ),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn an_empty_directory_is_a_new_store_and_a_store_survives_reopening() {
    let dir = tempdir();
    let store_dir = dir.path().join("a/b/c");
    assert_eq!(open_and_load(&store_dir).expect("new store"), 0);
    filled_store(&store_dir, "c", 5, "x");
    assert_eq!(open_and_load(&store_dir).expect("reopen"), 5);
}
