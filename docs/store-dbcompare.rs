//! The redb vs SQLite comparison behind docs/store.md (not built with the workspace).
//!
//! A standalone crate: `cargo new dbcompare`, put this file in src/main.rs, add to Cargo.toml
//!
//! ```toml
//! [dependencies]
//! redb = "4"
//! rusqlite = { version = "0.37", features = ["bundled"] }
//! tempfile = "3"
//! ```
//!
//! and run `cargo run --release -- /path/on/the/disk/to/test 5` (median of 5 runs).
//!
//! Each message = insert (accepted) -> state update (sent) -> delete (acked), spread over
//! successive durable commits of `batch` messages each.
use std::time::Instant;

static mut TOTAL: u64 = 20_000;
fn total() -> u64 { unsafe { TOTAL } }
const PAYLOAD: usize = 64;

fn value(id: u64) -> Vec<u8> {
    let mut v = vec![0x32u8; PAYLOAD + 16];
    v[..8].copy_from_slice(&id.to_le_bytes());
    v
}

mod redb_w {
    use super::*;
    use redb::{Database, Durability, TableDefinition};
    const OUT: TableDefinition<u64, &[u8]> = TableDefinition::new("outgoing");
    const ST: TableDefinition<u64, u32> = TableDefinition::new("state");

    pub fn run(dir: &std::path::Path, batch: u64, two_phase: bool) -> f64 {
        let db = Database::create(dir.join("redb.db")).unwrap();
        {
            let tx = db.begin_write().unwrap();
            tx.open_table(OUT).unwrap();
            tx.open_table(ST).unwrap();
            tx.commit().unwrap();
        }
        let start = Instant::now();
        let mut next = 0u64;
        let batches = total() / batch + 2;
        for b in 0..batches {
            let mut tx = db.begin_write().unwrap();
            tx.set_durability(Durability::Immediate).unwrap();
            tx.set_two_phase_commit(two_phase);
            {
                let mut out = tx.open_table(OUT).unwrap();
                let mut st = tx.open_table(ST).unwrap();
                if b < batches - 2 {
                    for _ in 0..batch {
                        out.insert(next, value(next).as_slice()).unwrap();
                        next += 1;
                    }
                }
                // previous batch: sent
                if b >= 1 && b - 1 < batches - 2 {
                    for id in (b - 1) * batch..b * batch {
                        st.insert(id, 1u32 << 16 | (id as u32 & 0xffff)).unwrap();
                    }
                }
                // batch before: acked
                if b >= 2 {
                    for id in (b - 2) * batch..(b - 1) * batch {
                        out.remove(id).unwrap();
                        st.remove(id).unwrap();
                    }
                }
            }
            tx.commit().unwrap();
        }
        total() as f64 / start.elapsed().as_secs_f64()
    }
}

mod sqlite_w {
    use super::*;
    use rusqlite::{params, Connection};
    pub fn run(dir: &std::path::Path, batch: u64, sync: &str) -> f64 {
        let mut c = Connection::open(dir.join("sqlite.db")).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "synchronous", sync).unwrap();
        c.execute_batch("CREATE TABLE outgoing(id INTEGER PRIMARY KEY, state INTEGER NOT NULL, packet BLOB NOT NULL);").unwrap();
        let start = Instant::now();
        let mut next = 0u64;
        let batches = total() / batch + 2;
        for b in 0..batches {
            let tx = c.transaction().unwrap();
            {
                let mut ins = tx.prepare_cached("INSERT INTO outgoing(id, state, packet) VALUES (?1, 0, ?2)").unwrap();
                let mut upd = tx.prepare_cached("UPDATE outgoing SET state = ?2 WHERE id = ?1").unwrap();
                let mut del = tx.prepare_cached("DELETE FROM outgoing WHERE id = ?1").unwrap();
                if b < batches - 2 {
                    for _ in 0..batch {
                        ins.execute(params![next as i64, value(next)]).unwrap();
                        next += 1;
                    }
                }
                if b >= 1 && b - 1 < batches - 2 {
                    for id in (b - 1) * batch..b * batch {
                        upd.execute(params![id as i64, (1i64 << 16) | (id as i64 & 0xffff)]).unwrap();
                    }
                }
                if b >= 2 {
                    for id in (b - 2) * batch..(b - 1) * batch {
                        del.execute(params![id as i64]).unwrap();
                    }
                }
            }
            tx.commit().unwrap();
        }
        total() as f64 / start.elapsed().as_secs_f64()
    }
}

fn fsync_rate(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("f")).unwrap();
    let start = Instant::now();
    for _ in 0..500 { f.write_all(&[0u8; 4096]).unwrap(); f.sync_data().unwrap(); }
    500.0 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 { v.sort_by(|a, b| a.partial_cmp(b).unwrap()); v[v.len() / 2] }

fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| "/work".into());
    let reps: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(5);
    let mk = || tempfile::Builder::new().prefix("dbcmp").tempdir_in(&base).unwrap();
    println!("dir base {base}; median of {reps}; msgs/s (each message = insert+update+delete over 3 durable commits)");
    println!("raw write+fdatasync/s: {:.0}", median((0..reps).map(|_| fsync_rate(mk().path())).collect()));
    println!("{:>6} {:>8} {:>12} {:>12} {:>16} {:>18}", "batch", "msgs", "redb 1PC", "redb 2PC", "sqlite WAL FULL", "sqlite WAL NORMAL");
    for batch in [1u64, 4, 16, 64, 256, 512] {
        unsafe { TOTAL = (batch * 1000).min(20_000); }
        let (mut r1, mut r2, mut s1, mut s2) = (vec![], vec![], vec![], vec![]);
        for _ in 0..reps {
            r1.push(redb_w::run(mk().path(), batch, false));
            r2.push(redb_w::run(mk().path(), batch, true));
            s1.push(sqlite_w::run(mk().path(), batch, "FULL"));
            s2.push(sqlite_w::run(mk().path(), batch, "NORMAL"));
        }
        println!("{batch:>6} {:>8} {:>12.0} {:>12.0} {:>16.0} {:>18.0}", total(), median(r1), median(r2), median(s1), median(s2));
    }
}
