//! The scripted fake broker.

use std::io;
use std::time::Duration;
use steadfast_chaos::fake::{self, FakeBroker};
use steadfast_chaos::raw::{Connect, RawClient};

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn counts_accepts_and_hands_out_connections_in_order() {
    let broker = FakeBroker::bind().await.unwrap();
    let mut a = RawClient::connect(broker.addr()).await.unwrap();
    let mut b = RawClient::connect(broker.addr()).await.unwrap();
    a.send(&Connect::v5("a").to_bytes()).await.unwrap();
    b.send(&Connect::v311("b").to_bytes()).await.unwrap();
    let mut ca = broker.accept_timeout(T).await.unwrap();
    let mut cb = broker.accept_timeout(T).await.unwrap();
    assert_eq!(broker.accept_count(), 2);
    let fa = ca.read_frame_timeout(T).await.unwrap().unwrap();
    let fb = cb.read_frame_timeout(T).await.unwrap().unwrap();
    assert_eq!(fake::connect_level(&fa), Some(5));
    assert_eq!(fake::connect_level(&fb), Some(4));
    ca.write_all(&fake::connack_v5(true, 0x00)).await.unwrap();
    cb.write_all(&fake::connack_v311(false, 0x05))
        .await
        .unwrap();
    assert_eq!(
        &a.read_frame_timeout(T).await.unwrap().unwrap()[..],
        &[0x20, 3, 1, 0, 0]
    );
    assert_eq!(
        &b.read_frame_timeout(T).await.unwrap().unwrap()[..],
        &[0x20, 2, 0, 5]
    );
    let e = broker
        .accept_timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn malformed_and_oversized_frames_are_errors() {
    let broker = FakeBroker::bind().await.unwrap();
    let mut c = RawClient::connect(broker.addr()).await.unwrap();
    c.send(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).await.unwrap();
    let mut conn = broker.accept_timeout(T).await.unwrap();
    let e = conn.read_frame_timeout(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);

    let mut c2 = RawClient::connect(broker.addr()).await.unwrap();
    let mut conn2 = broker.accept_timeout(T).await.unwrap();
    conn2.set_max_frame(100);
    c2.send(&[0x30, 0xc8, 0x01]).await.unwrap(); // 200-byte body
    let e = conn2.read_frame_timeout(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);

    let mut c3 = RawClient::connect(broker.addr()).await.unwrap();
    let mut conn3 = broker.accept_timeout(T).await.unwrap();
    c3.send(&[0x30, 0x05, 0x00]).await.unwrap();
    drop(c3);
    let e = conn3.read_frame_timeout(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    drop((c, c2));
}

#[tokio::test]
async fn shutdown_is_a_clean_close_and_reset_is_a_rst() {
    let broker = FakeBroker::bind().await.unwrap();
    let mut a = RawClient::connect(broker.addr()).await.unwrap();
    let mut b = RawClient::connect(broker.addr()).await.unwrap();
    let mut ca = broker.accept_timeout(T).await.unwrap();
    let cb = broker.accept_timeout(T).await.unwrap();
    ca.write_all(&fake::disconnect_v5(0x8e)).await.unwrap();
    ca.shutdown().await.unwrap();
    assert_eq!(
        &a.read_frame_timeout(T).await.unwrap().unwrap()[..],
        &[0xe0, 2, 0x8e, 0]
    );
    assert!(a.read_frame_timeout(T).await.unwrap().is_none());
    cb.reset();
    let e = b.read_frame_timeout(T).await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    drop(a);
    ca.wait_closed(T).await.unwrap();
}
