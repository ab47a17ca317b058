//! A scripted fake broker, for what a real broker will not do: malformed
//! bytes, chosen CONNACK / DISCONNECT codes, silence, resets.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use steadfast_chaos::fake::{self, FakeBroker};
//! let broker = FakeBroker::bind().await?;
//! // ... point the client at broker.addr() ...
//! let mut conn = broker.accept().await?;
//! let connect = conn.read_frame().await?.expect("CONNECT");
//! assert_eq!(fake::packet_type(&connect), Some(1));
//! conn.write_all(&fake::connack_v5(false, 0x00)).await?;
//! conn.write_all(&fake::disconnect_v5(0x8e)).await?; // session taken over
//! conn.shutdown().await?;
//! # Ok(()) }
//! ```

use crate::frame;
use bytes::{Bytes, BytesMut};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

/// The largest packet [`FakeConn::read_frame`] accepts by default (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// A listening fake broker on 127.0.0.1. Connections are accepted in the
/// background as they arrive (so [`FakeBroker::accept_count`] counts
/// connection attempts even before [`FakeBroker::accept`] hands them out).
pub struct FakeBroker {
    addr: SocketAddr,
    conns: Mutex<mpsc::UnboundedReceiver<FakeConn>>,
    count: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeBroker {
    /// Listens on a free port of 127.0.0.1. Must be called inside a tokio runtime.
    pub async fn bind() -> io::Result<FakeBroker> {
        Self::bind_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Listens on `addr`.
    pub async fn bind_addr(addr: SocketAddr) -> io::Result<FakeBroker> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        counter.fetch_add(1, Ordering::SeqCst);
                        let conn = FakeConn {
                            stream,
                            peer,
                            buf: BytesMut::new(),
                            max_frame: DEFAULT_MAX_FRAME,
                        };
                        if tx.send(conn).is_err() {
                            return;
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        Ok(FakeBroker {
            addr,
            conns: Mutex::new(rx),
            count,
            task,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// The next connection, in arrival order.
    pub async fn accept(&self) -> io::Result<FakeConn> {
        self.conns
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::other("fake broker stopped accepting"))
    }

    /// Like [`FakeBroker::accept`], failing with `TimedOut` after `timeout`.
    pub async fn accept_timeout(&self, timeout: Duration) -> io::Result<FakeConn> {
        tokio::time::timeout(timeout, self.accept())
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "no connection to the fake broker")
            })?
    }

    /// How many TCP connections have been accepted so far.
    pub fn accept_count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection to the [`FakeBroker`].
#[derive(Debug)]
pub struct FakeConn {
    stream: TcpStream,
    peer: SocketAddr,
    buf: BytesMut,
    max_frame: usize,
}

impl FakeConn {
    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Sets the largest packet [`FakeConn::read_frame`] accepts.
    pub fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max;
    }

    /// Reads one raw MQTT packet (fixed header + body). `Ok(None)` when the
    /// client closed the connection between packets; `InvalidData` for a
    /// malformed length or a packet over the cap; `UnexpectedEof` when the
    /// stream ends inside a packet.
    pub async fn read_frame(&mut self) -> io::Result<Option<Bytes>> {
        frame::read_frame(&mut self.stream, &mut self.buf, self.max_frame).await
    }

    /// Like [`FakeConn::read_frame`], failing with `TimedOut` after `timeout`.
    pub async fn read_frame_timeout(&mut self, timeout: Duration) -> io::Result<Option<Bytes>> {
        tokio::time::timeout(timeout, self.read_frame())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no packet from the client"))?
    }

    /// Writes raw bytes (anything: valid packets, garbage, half a packet).
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await?;
        self.stream.flush().await
    }

    /// Closes the write side (TCP FIN); reads still work.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// Aborts the connection with a TCP RST.
    pub fn reset(self) {
        let _ = self.stream.set_zero_linger();
        drop(self.stream);
    }

    /// Waits until the client closes the connection (EOF or reset),
    /// discarding whatever it sends; `TimedOut` after `timeout`.
    pub async fn wait_closed(&mut self, timeout: Duration) -> io::Result<()> {
        let mut sink = [0u8; 4096];
        tokio::time::timeout(timeout, async {
            loop {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the client kept the connection open",
            )
        })
    }

    /// The underlying socket, for anything not covered here.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

/// The packet type (upper nibble of the first byte) of a raw packet.
pub fn packet_type(frame: &[u8]) -> Option<u8> {
    frame.first().map(|b| b >> 4)
}

/// The protocol level of a raw CONNECT packet (4 for 3.1.1, 5 for MQTT 5).
pub fn connect_level(frame: &[u8]) -> Option<u8> {
    match frame::peek_first(frame) {
        frame::FirstPacket::Connect { level, .. } => level,
        _ => None,
    }
}

/// An MQTT 5 CONNACK: `20 03 <sp> <rc> 00` (no properties).
pub fn connack_v5(session_present: bool, reason_code: u8) -> Vec<u8> {
    vec![0x20, 0x03, u8::from(session_present), reason_code, 0x00]
}

/// An MQTT 3.1.1 CONNACK: `20 02 <sp> <rc>`.
pub fn connack_v311(session_present: bool, return_code: u8) -> Vec<u8> {
    vec![0x20, 0x02, u8::from(session_present), return_code]
}

/// An MQTT 5 DISCONNECT: `e0 02 <rc> 00` (no properties).
pub fn disconnect_v5(reason_code: u8) -> Vec<u8> {
    vec![0xe0, 0x02, reason_code, 0x00]
}

/// A PINGRESP: `d0 00`.
pub fn pingresp() -> Vec<u8> {
    vec![0xd0, 0x00]
}
