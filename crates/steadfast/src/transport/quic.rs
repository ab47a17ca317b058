//! MQTT over QUIC (`quic://`, `mqtt-quic://`) with quinn and rustls (ring), behind the `quic`
//! feature.
//!
//! The convention of EMQX and NanoSDK: TLS 1.3 with ALPN `mqtt`, and the MQTT packets on one
//! bidirectional stream that the client opens; the default port is UDP 14567. Certificates are
//! checked exactly as for `mqtts://` (same [`TlsOptions`](super::TlsOptions): system roots or
//! CA files, client certificate, insecure mode), and a rejected server certificate is
//! [`TransportError::TlsFatal`] with the same message.
//!
//! Each connect opens its own UDP socket (a quinn client endpoint) on the unspecified address
//! of the server's family; the stream returned owns the endpoint and the connection, and
//! closes the connection when dropped.
//!
//! The MQTT keep-alive stays the authority on liveness: the QUIC idle timeout we ask for is
//! above it (see [`quic_idle_timeout`]), QUIC sends no keep-alive packets of its own, and a
//! QUIC connection that ends for any reason (idle timeout, stateless reset, the broker's
//! close) is an I/O error whose message names the reason.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{ConnectError, Connection, ConnectionError, Endpoint, IdleTimeout, VarInt};
use steadfast_proto::TransportError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::tls::{quic_verdict_wait, SlotGuard, TlsContext};
use super::BoxTransport;

/// When a host name resolves to several addresses, the longest handshake tried with each but
/// the last (a UDP address without a server gives no refusal, only silence).
const HANDSHAKE_PER_ADDRESS: Duration = Duration::from_secs(3);

/// After the client finished its stream (DISCONNECT sent), how long the closed stream waits,
/// when dropped, for the broker to close the connection before closing it itself: closing at
/// once could discard the DISCONNECT before the broker acknowledged it.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// The smallest QUIC idle timeout asked for.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The QUIC idle timeout asked for with MQTT keep-alive `keep_alive`: twice the keep-alive, at
/// least 60 s, so that the MQTT keep-alive (a PINGREQ after one keep-alive of silence, the
/// link declared dead after 1.5) always decides first; `None` (no idle timeout of ours, the
/// broker's applies) when the keep-alive is off. QUIC uses the smaller of the two sides'
/// values, so a broker that asks for less still ends idle connections sooner.
pub fn quic_idle_timeout(keep_alive: Duration) -> Option<Duration> {
    if keep_alive.is_zero() {
        return None;
    }
    Some(keep_alive.saturating_mul(2).max(MIN_IDLE_TIMEOUT))
}

/// Resolves `host`, then opens a QUIC connection and its MQTT stream to the first address that
/// answers.
pub(crate) async fn connect(
    tls: &TlsContext,
    sockets: &QuicSockets,
    host: &str,
    port: u16,
    idle: Option<Duration>,
) -> Result<BoxTransport, TransportError> {
    let name = tls.quic_server_name(host)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| TransportError::Dns(steadfast_proto::IoError::with_source(host, e)))?
        .collect();
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let attempt = connect_addr(tls, sockets, &name, *addr, idle);
        let result = if i + 1 < addrs.len() {
            match tokio::time::timeout(HANDSHAKE_PER_ADDRESS, attempt).await {
                Ok(r) => r,
                Err(_) => Err(TransportError::io(
                    std::io::ErrorKind::TimedOut,
                    format!("{addr}: no QUIC answer within {HANDSHAKE_PER_ADDRESS:?}"),
                )),
            }
        } else {
            attempt.await
        };
        match result {
            Ok(t) => return Ok(t),
            Err(e @ TransportError::TlsFatal(_)) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        TransportError::io(std::io::ErrorKind::NotFound, format!("{host}: no address"))
    }))
}

async fn connect_addr(
    tls: &TlsContext,
    sockets: &QuicSockets,
    name: &str,
    addr: SocketAddr,
    idle: Option<Duration>,
) -> Result<BoxTransport, TransportError> {
    let bind = if addr.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let endpoint = Endpoint::client(bind)
        .map_err(|e| TransportError::io_with(format!("cannot open a UDP socket on {bind}"), e))?;
    // The same rustls configuration as earlier connects when one is free: only with it can
    // the session tickets they received be used (1-RTT resumption).
    let slot = tls.quic_slot();
    let crypto = QuicClientConfig::try_from(slot.config()).map_err(|e| {
        TransportError::TlsFatal(format!("the TLS settings cannot be used for QUIC: {e}"))
    })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // The broker opens no streams to us.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(0));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    // An idle timeout beyond QUIC's range (2^62 ms) is as good as none.
    transport.max_idle_timeout(idle.and_then(|d| IdleTimeout::try_from(d).ok()));
    transport.keep_alive_interval(None);
    config.transport_config(Arc::new(transport));
    let connecting = endpoint
        .connect_with(config, addr, name)
        .map_err(|e| match e {
            ConnectError::InvalidServerName(n) => {
                TransportError::TlsFatal(format!("{n:?} cannot be used as a TLS server name"))
            }
            other => TransportError::io(
                std::io::ErrorKind::InvalidInput,
                format!("cannot start a QUIC connection to {addr}: {other}"),
            ),
        })?;
    let started = tokio::time::Instant::now();
    let conn = connecting
        .await
        .map_err(|e| handshake_error(tls, &slot, name, addr, e))?;
    tls.count_quic_handshake(&slot);
    if slot.client_cert_requested() {
        // TLS 1.3: the server checks our certificate (or its absence) after our side of the
        // handshake is done, and a refusal closes the connection with a TLS alert. Wait for
        // it briefly so that a refusal is fatal and named, not a lost connection retried.
        let wait = quic_verdict_wait(started.elapsed());
        if let Ok(reason) = tokio::time::timeout(wait, conn.closed()).await {
            return Err(handshake_error(tls, &slot, name, addr, reason));
        }
    }
    let (send, recv) = conn.open_bi().await.map_err(|e| {
        TransportError::io(
            std::io::ErrorKind::ConnectionAborted,
            format!(
                "QUIC connection to {addr} lost before its stream opened: {}",
                describe_loss(&e)
            ),
        )
    })?;
    let endpoint = Arc::new(endpoint);
    sockets.add(&endpoint);
    Ok(Box::new(QuicStream {
        send,
        recv,
        conn,
        endpoint,
        finished: false,
        _tls: slot,
    }))
}

/// A failed QUIC handshake as a transport error.
fn handshake_error(
    tls: &TlsContext,
    slot: &SlotGuard,
    host: &str,
    addr: SocketAddr,
    e: ConnectionError,
) -> TransportError {
    let alert = match &e {
        ConnectionError::ConnectionClosed(close) => crypto_alert(close.error_code),
        ConnectionError::TransportError(te) => crypto_alert(te.code),
        _ => None,
    };
    // With a rustls config of the application's own, its verifier cannot be watched: a
    // certificate alert raised by our side of the handshake is that verifier's refusal.
    if let (ConnectionError::TransportError(te), Some(a)) = (&e, alert) {
        use rustls::AlertDescription as A;
        let alert = A::from(a);
        let certificate = matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
        );
        if certificate && !tls.watches_verifier() {
            return TransportError::TlsFatal(format!(
                "certificate refused: the verifier of the rustls ClientConfig refused the certificate of {host} ({alert:?}): {te}"
            ));
        }
    }
    if let Some(tls_error) = tls.quic_handshake_error(slot, host, alert) {
        return tls_error;
    }
    match e {
        ConnectionError::TimedOut => TransportError::io(
            std::io::ErrorKind::TimedOut,
            format!("{addr}: no QUIC answer (handshake timed out)"),
        ),
        ConnectionError::TransportError(te) => {
            TransportError::Tls(format!("QUIC handshake with {addr} failed: {te}"))
        }
        other => TransportError::io(
            std::io::ErrorKind::ConnectionAborted,
            format!(
                "QUIC handshake with {addr} failed: {}",
                describe_loss(&other)
            ),
        ),
    }
}

/// The TLS alert a QUIC error code carries (codes 0x100 to 0x1ff, RFC 9001 section 4.8).
fn crypto_alert(code: quinn::TransportErrorCode) -> Option<u8> {
    let code = u64::from(code);
    if (0x100..0x200).contains(&code) {
        u8::try_from(code - 0x100).ok()
    } else {
        None
    }
}

/// Why a QUIC connection ended, in words.
fn describe_loss(e: &ConnectionError) -> String {
    match e {
        ConnectionError::TimedOut => {
            "QUIC idle timeout (nothing heard from the broker for the negotiated idle time)".into()
        }
        ConnectionError::Reset => {
            "stateless reset by the broker (it no longer knows this connection: restarted?)".into()
        }
        ConnectionError::ApplicationClosed(c) => format!("closed by the broker ({c})"),
        ConnectionError::ConnectionClosed(c) => format!("aborted by the broker's QUIC stack ({c})"),
        ConnectionError::LocallyClosed => "closed by this client".into(),
        ConnectionError::VersionMismatch => "the broker speaks no QUIC version we support".into(),
        ConnectionError::TransportError(te) => format!("QUIC protocol error: {te}"),
        ConnectionError::CidsExhausted => "QUIC connection ids exhausted".into(),
    }
}

/// The endpoints (UDP sockets) of a connector's open QUIC connections, for
/// [`DefaultConnector::rebind_quic`](super::DefaultConnector::rebind_quic). Each stream owns
/// its endpoint; this keeps weak references only, so closed connections free their sockets.
#[derive(Debug, Default)]
pub(crate) struct QuicSockets(Mutex<Vec<Weak<Endpoint>>>);

impl QuicSockets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Endpoint>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, endpoint: &Arc<Endpoint>) {
        let mut all = self.lock();
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(endpoint));
    }

    /// Gives every live endpoint a new UDP socket on a new port of the same address family.
    pub(crate) fn rebind(&self) -> io::Result<usize> {
        let live: Vec<Arc<Endpoint>> = {
            let mut all = self.lock();
            all.retain(|w| w.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        for endpoint in &live {
            let bind = if endpoint.local_addr()?.is_ipv4() {
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
            } else {
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
            };
            endpoint.rebind(std::net::UdpSocket::bind(bind)?)?;
        }
        Ok(live.len())
    }
}

/// The MQTT stream of a QUIC connection. It owns the connection and its endpoint (UDP
/// socket); dropping it closes the connection.
struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    conn: Connection,
    endpoint: Arc<Endpoint>,
    /// The client finished its sending side (after DISCONNECT).
    finished: bool,
    /// The TLS configuration the connection was made with, given back for the next connect
    /// (with the session tickets the connection received) when the stream is dropped.
    _tls: SlotGuard,
}

impl QuicStream {
    /// An I/O error of the stream, with the connection's end named when it ended.
    fn name_error(&self, e: io::Error) -> io::Error {
        match self.conn.close_reason() {
            Some(reason) => io::Error::new(
                e.kind(),
                format!("QUIC connection lost: {}", describe_loss(&reason)),
            ),
            None => io::Error::new(e.kind(), format!("QUIC stream: {e}")),
        }
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match AsyncRead::poll_read(Pin::new(&mut self.recv), cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.name_error(e))),
            other => other,
        }
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.name_error(e))),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match AsyncWrite::poll_flush(Pin::new(&mut self.send), cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.name_error(e))),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx) {
            Poll::Ready(Ok(())) => {
                self.finished = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.name_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        let conn = self.conn.clone();
        let endpoint = self.endpoint.clone();
        let close = move || conn.close(VarInt::from_u32(0), b"");
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if self.finished => {
                let conn = self.conn.clone();
                rt.spawn(async move {
                    let _ = tokio::time::timeout(CLOSE_LINGER, conn.closed()).await;
                    close();
                    drop(endpoint);
                });
            }
            _ => {
                close();
                drop(endpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_timeout_is_above_the_keep_alive() {
        assert_eq!(quic_idle_timeout(Duration::ZERO), None);
        assert_eq!(
            quic_idle_timeout(Duration::from_secs(5)),
            Some(MIN_IDLE_TIMEOUT)
        );
        assert_eq!(
            quic_idle_timeout(Duration::from_secs(60)),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            quic_idle_timeout(Duration::MAX),
            Some(Duration::MAX),
            "no overflow"
        );
    }

    #[test]
    fn crypto_codes_carry_tls_alerts() {
        assert_eq!(
            crypto_alert(quinn::TransportErrorCode::crypto(42)),
            Some(42)
        );
        assert_eq!(
            crypto_alert(quinn::TransportErrorCode::PROTOCOL_VIOLATION),
            None
        );
    }
}
