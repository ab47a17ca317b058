//! A QUIC-to-TCP bridge (feature `quic`): MQTT over QUIC in front of a TCP broker, for tests.
//!
//! It speaks the convention of EMQX and NanoSDK: TLS 1.3 with ALPN `mqtt`, the MQTT packets
//! on the first bidirectional stream the client opens. Each QUIC connection gets its own TCP
//! connection to the broker, and the bytes are piped both ways; when the broker's side ends,
//! the QUIC connection is closed (application error 0, reason `upstream closed`). It is how
//! the tests reach a real broker (Mosquitto) over QUIC. [`crate::udp::UdpProxy`] puts a faulty
//! link (loss, blackhole, delay, NAT rebinding) between a client and the bridge.
//!
//! ```no_run
//! # async fn demo(cert_pem: &str, key_pem: &str) -> std::io::Result<()> {
//! use steadfast_chaos::{mosquitto::Mosquitto, quic::QuicBridge};
//!
//! let broker = Mosquitto::builder().start()?;
//! let bridge = QuicBridge::start(0, broker.addr(), cert_pem, key_pem).await?;
//! // ... connect a client to quic://127.0.0.1:{bridge.port()} ...
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// A running bridge. Dropping it closes its endpoint and every connection through it.
pub struct QuicBridge {
    port: u16,
    endpoint: quinn::Endpoint,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<quinn::Connection>>>,
}

impl QuicBridge {
    /// Starts on UDP 127.0.0.1:`port` (0: a free port) with this certificate chain and key
    /// (PEM), offering ALPN `mqtt`, piping to the TCP broker at `upstream`. A given port that
    /// is still taken is retried for up to 2.5 s (a bridge restarted on its old port).
    pub async fn start(
        port: u16,
        upstream: SocketAddr,
        cert_pem: &str,
        key_pem: &str,
    ) -> io::Result<QuicBridge> {
        QuicBridge::start_with_alpn(port, upstream, cert_pem, key_pem, &[b"mqtt"]).await
    }

    /// [`start`](Self::start) offering these ALPN protocols instead of `mqtt`.
    pub async fn start_with_alpn(
        port: u16,
        upstream: SocketAddr,
        cert_pem: &str,
        key_pem: &str,
        alpn: &[&[u8]],
    ) -> io::Result<QuicBridge> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
        };
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate", &e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad("key", &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad("TLS versions", &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad("certificate and key", &e))?;
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| bad("QUIC TLS", &e))?;
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let bind = SocketAddr::from(([127, 0, 0, 1], port));
        let mut tries = 0;
        let endpoint = loop {
            match quinn::Endpoint::server(config.clone(), bind) {
                Ok(e) => break e,
                Err(_) if port != 0 && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let port = endpoint.local_addr()?.port();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn(accept_loop(endpoint.clone(), upstream, conns.clone()));
        Ok(QuicBridge {
            port,
            endpoint,
            accept,
            conns,
        })
    }

    /// The UDP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `quic://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("quic://127.0.0.1:{}", self.port)
    }

    /// Where the clients of every connection accepted so far are now, as the bridge sees
    /// them (a client that migrated shows its new address).
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        lock(&self.conns)
            .iter()
            .map(quinn::Connection::remote_address)
            .collect()
    }
}

impl Drop for QuicBridge {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"bridge stopped");
        self.accept.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    upstream: SocketAddr,
    seen: Arc<Mutex<Vec<quinn::Connection>>>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        let seen = seen.clone();
        tasks.spawn(async move {
            let Ok(conn) = incoming.await else { return };
            {
                let mut all = lock(&seen);
                all.retain(|c| c.close_reason().is_none());
                all.push(conn.clone());
            }
            let Ok((send, recv)) = conn.accept_bi().await else {
                return;
            };
            pipe(&conn, send, recv, upstream).await;
        });
        while tasks.try_join_next().is_some() {}
    }
}

async fn pipe(
    conn: &quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    upstream: SocketAddr,
) {
    let Ok(mut tcp) = TcpStream::connect(upstream).await else {
        conn.close(0u32.into(), b"upstream unreachable");
        return;
    };
    let (mut tcp_rx, mut tcp_tx) = tcp.split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(Some(n)) = recv.read(&mut buf).await {
            if tcp_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if send.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    conn.close(0u32.into(), b"upstream closed");
}
