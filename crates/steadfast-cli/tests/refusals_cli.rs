//! What `sub` and `pub` do when the broker refuses on a reconnect: a resubscription refused
//! (an ACL change) and a poison message (the broker closes the connection on it every time).
//! The brokers are scripted fake peers from the chaos crate; the packets are the project's
//! codec's.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;
use steadfast::proto::{Packet, Props, PubAck, SubAck};
use steadfast::{ProtocolVersion, ReasonCode};
use steadfast_chaos::fake::{self, FakeBroker, FakeConn};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");
const T: Duration = Duration::from_secs(20);
const FAST: [&str; 4] = ["--reconnect-min", "50ms", "--reconnect-max", "200ms"];

fn decode(frame: &[u8], v: ProtocolVersion) -> Option<Packet> {
    Packet::decode(&mut BytesMut::from(frame), v, u32::MAX).ok()
}

fn encode(p: Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out).expect("encode");
    out.to_vec()
}

/// Accepts every connection and answers its CONNECT; `script(n, conn)` does the rest.
fn serve<F, Fut>(broker: Arc<FakeBroker>, v: ProtocolVersion, script: F)
where
    F: Fn(usize, FakeConn) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let connack = match v {
        ProtocolVersion::V5 => fake::connack_v5(false, 0),
        _ => fake::connack_v311(false, 0),
    };
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok(mut conn) = broker.accept().await {
            n += 1;
            let connack = connack.clone();
            let run = script(n, {
                match conn.read_frame_timeout(T).await {
                    Ok(Some(f)) if fake::packet_type(&f) == Some(1) => {}
                    _ => continue,
                }
                if conn.write_all(&connack).await.is_err() {
                    continue;
                }
                conn
            });
            tokio::spawn(run);
        }
    });
}

fn events(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

/// The broker grants the filter, drops the connection, comes back without the session and
/// refuses it: `sub` can receive nothing more, says why, and exits 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_exits_3_when_every_filter_is_refused_on_resubscription() {
    for (v, flag, code) in [
        (ProtocolVersion::V5, "5", ReasonCode::NotAuthorized),
        (ProtocolVersion::V311, "311", ReasonCode::UnspecifiedError),
    ] {
        let broker = Arc::new(FakeBroker::bind().await.unwrap());
        let port = broker.addr().port().to_string();
        serve(broker.clone(), v, move |n, mut conn| async move {
            while let Ok(Some(f)) = conn.read_frame_timeout(T).await {
                let Some(Packet::Subscribe(s)) = decode(&f, v) else {
                    continue;
                };
                let reasons = vec![if n == 1 {
                    ReasonCode::GrantedQoS1
                } else {
                    code
                }];
                let ack = Packet::SubAck(SubAck {
                    pkid: s.pkid,
                    reasons,
                    properties: Props::new(),
                });
                let _ = conn.write_all(&encode(ack, v)).await;
                if n == 1 {
                    conn.reset();
                    return;
                }
            }
        });
        let out = Command::new(BIN)
            .args([
                "sub", "-V", flag, "-p", &port, "-t", "acl/#", "-q", "1", "--events",
            ])
            .args(FAST)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(T, out)
            .await
            .expect("sub exits")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{flag}: {stderr}");
        let ev = events(&stderr);
        let failed = ev
            .iter()
            .find(|e| e["event"] == "resubscribe_failed")
            .unwrap_or_else(|| panic!("{flag}: no resubscribe_failed: {stderr}"));
        assert_eq!(failed["filter"], "acl/#");
        assert_eq!(failed["reason_code"], code as u8);
        assert_eq!(failed["reason"], code.name().to_lowercase());
        assert!(
            !ev.iter().any(|e| e["event"] == "resubscribed"),
            "nothing was restored: {stderr}"
        );
        assert!(
            stderr.contains("refused on resubscription"),
            "{flag}: {stderr}"
        );
    }
}

/// A 3.1.1 broker that closes the connection whenever the PUBLISH carries "poison": `pub -l`
/// gives that line up after three closes, says so on stderr, delivers the others, and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_reports_a_poison_message_and_goes_on() {
    let v = ProtocolVersion::V311;
    let broker = Arc::new(FakeBroker::bind().await.unwrap());
    let port = broker.addr().port().to_string();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let a2 = acked.clone();
    serve(broker.clone(), v, move |_, mut conn| {
        let a2 = a2.clone();
        async move {
            while let Ok(Some(f)) = conn.read_frame_timeout(T).await {
                let Some(Packet::Publish(p)) = decode(&f, v) else {
                    continue;
                };
                if p.payload.as_ref() == b"poison" {
                    drop(conn);
                    return;
                }
                a2.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&p.payload).into_owned());
                let _ = conn
                    .write_all(&encode(Packet::PubAck(PubAck::new(p.pkid)), v))
                    .await;
            }
        }
    });
    let mut child = Command::new(BIN)
        .args([
            "pub", "-V", "311", "-p", &port, "-t", "p/1", "-q", "1", "-l",
        ])
        .args(["--max-inflight", "1"])
        .args(FAST)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"before\npoison\nafter\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(T, child.wait_with_output())
        .await
        .expect("pub exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("message given up"), "{stderr}");
    assert!(stderr.contains("poison message"), "{stderr}");
    assert!(
        stderr.contains("1 of 3 messages were not delivered"),
        "{stderr}"
    );
    assert_eq!(*acked.lock().unwrap(), ["before", "after"]);
}
