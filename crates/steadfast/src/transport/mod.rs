//! How bytes travel: the [`Connector`] trait and its implementations.
//!
//! The session core never sees a socket; the driver asks a connector for a [`Transport`] to a
//! server URL and hands the bytes to the core. [`DefaultConnector`], the builder's default,
//! picks the transport from the URL scheme:
//!
//! | scheme | transport | default port |
//! |---|---|---|
//! | `mqtt://`, `tcp://` | TCP | 1883 |
//! | `mqtts://`, `ssl://` | TLS over TCP (rustls; feature `tls`) | 8883 |
//! | `ws://` | WebSocket (subprotocol `mqtt`, path default `/mqtt`; feature `ws`) | 80 |
//! | `wss://` | WebSocket over TLS (features `ws` and `tls`) | 443 |
//! | `quic://`, `mqtt-quic://` | MQTT over QUIC (feature `quic`; ALPN `mqtt`, one bidirectional stream) | UDP 14567 |
//!
//! A scheme whose feature is not compiled in is refused by
//! [`ClientBuilder::build`](crate::ClientBuilder::build) with an error that names the feature
//! (unless the application gives a [`Connector`] of its own, which serves what it serves);
//! when such a server comes from a broker's redirect, [`DefaultConnector`] fails the attempt
//! with [`TransportError::Io`] naming the feature, and the client goes on with its servers.
//!
//! Every handshake (TCP, TLS, WebSocket, QUIC) happens inside the connect future, so the core's
//! connect timeout covers all of it. Certificate problems come back as
//! [`TransportError::TlsFatal`], which the core never retries; see `TlsOptions` (feature
//! `tls`) for the TLS settings.

#[cfg(feature = "quic")]
mod quic;
mod tcp;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "ws")]
mod ws;

use std::future::Future;
use std::pin::Pin;
#[cfg(feature = "tls")]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use steadfast_proto::server::Scheme;
use steadfast_proto::{ServerAddr, TransportError};
use tokio::io::{AsyncRead, AsyncWrite};

/// The rustls version this crate is built with, for
/// [`TlsOptions::client_config`] and [`ClientBuilder::tls_client_config`](crate::ClientBuilder::tls_client_config).
#[cfg(feature = "tls")]
pub use rustls;

#[cfg(feature = "quic")]
pub use quic::quic_idle_timeout;
pub use tcp::TcpConnector;
#[cfg(feature = "tls")]
pub use tls::{TlsConfigError, TlsHandshakes, TlsOptions};

/// Why a server of this scheme cannot be used by this build: the cargo feature it needs is not
/// compiled in. `None` when the scheme is available.
pub(crate) fn missing_feature(scheme: Scheme) -> Option<&'static str> {
    const NO_TLS: &str =
        "mqtts:// and ssl:// need the `tls` feature of steadfast, and this build was made without it";
    const NO_WS: &str =
        "ws:// needs the `ws` feature of steadfast, and this build was made without it";
    const NO_WSS: &str =
        "wss:// needs the `ws` and `tls` features of steadfast, and this build was made without them";
    const NO_QUIC: &str =
        "quic:// needs the `quic` feature of steadfast, and this build was made without it";
    match scheme {
        Scheme::Mqtt => None,
        Scheme::Mqtts => (!cfg!(feature = "tls")).then_some(NO_TLS),
        Scheme::Ws => (!cfg!(feature = "ws")).then_some(NO_WS),
        Scheme::Wss => (!cfg!(all(feature = "ws", feature = "tls"))).then_some(NO_WSS),
        Scheme::Quic => (!cfg!(feature = "quic")).then_some(NO_QUIC),
    }
}

/// A bidirectional byte stream to a broker.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed transport.
pub type BoxTransport = Box<dyn Transport>;

/// The future a connector returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<BoxTransport, TransportError>> + Send>>;

/// Opens transports to servers.
pub trait Connector: Send + Sync + 'static {
    /// Opens a transport to `server` (scheme, host, port, WebSocket path). The server's
    /// credentials are not the transport's business: the core sends them in CONNECT.
    fn connect(&self, server: &ServerAddr) -> ConnectFuture;
}

/// The connector [`ClientBuilder`](crate::ClientBuilder) uses unless told otherwise: it picks
/// TCP, TLS, WebSocket, WebSocket over TLS or QUIC from each server URL's scheme (see the
/// [module docs](self)), so failover between, say, `mqtts://` and `wss://` servers works.
///
/// TLS settings come from `TlsOptions` (feature `tls`). Without any, TLS verifies the server
/// against the operating system's root certificates, which are loaded at the first TLS connect.
///
/// ```
/// # #[cfg(feature = "tls")] {
/// use steadfast::transport::{DefaultConnector, TlsOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let plain = DefaultConnector::new();
/// # let _ = plain;
/// # let dir = std::env::temp_dir().join(format!("steadfast-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let ca = dir.join("ca.pem");
/// # std::fs::write(&ca, "")?;
/// // A private CA instead of the system roots (fails here: the file holds no certificate).
/// let tls = DefaultConnector::with_tls(TlsOptions::new().ca_file(&ca));
/// assert!(tls.is_err());
/// # Ok(()) }
/// # }
/// ```
#[derive(Clone)]
pub struct DefaultConnector {
    #[cfg(feature = "tls")]
    options: Arc<TlsOptions>,
    #[cfg(feature = "tls")]
    tls: Arc<OnceLock<Result<Arc<tls::TlsContext>, TlsConfigError>>>,
    /// The largest WebSocket message or frame accepted from a server.
    ws_max_message: usize,
    /// The QUIC idle timeout asked for (`quic://`).
    quic_idle: Option<Duration>,
    /// The UDP sockets of this connector's open QUIC connections, shared by its clones.
    #[cfg(feature = "quic")]
    quic_sockets: Arc<quic::QuicSockets>,
}

/// The default of [`DefaultConnector::websocket_max_message_size`]: the default maximum packet
/// size of the client (16 MiB).
const DEFAULT_WS_MAX_MESSAGE: usize = 16 << 20;

/// The default of [`DefaultConnector::quic_idle_timeout`]: the QUIC idle timeout for the
/// client's default keep-alive of 60 s.
const DEFAULT_QUIC_IDLE: Duration = Duration::from_secs(120);

impl Default for DefaultConnector {
    fn default() -> Self {
        DefaultConnector {
            #[cfg(feature = "tls")]
            options: Arc::default(),
            #[cfg(feature = "tls")]
            tls: Arc::default(),
            ws_max_message: DEFAULT_WS_MAX_MESSAGE,
            quic_idle: Some(DEFAULT_QUIC_IDLE),
            #[cfg(feature = "quic")]
            quic_sockets: Arc::default(),
        }
    }
}

impl core::fmt::Debug for DefaultConnector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut d = f.debug_struct("DefaultConnector");
        #[cfg(feature = "tls")]
        d.field("tls", &*self.options);
        d.field("ws_max_message", &self.ws_max_message)
            .field("quic_idle", &self.quic_idle)
            .finish()
    }
}

impl DefaultConnector {
    /// A connector with default settings (with feature `tls`: system roots, full verification).
    pub fn new() -> Self {
        DefaultConnector::default()
    }

    /// A connector with these TLS settings. The CA file, client certificate and key are read
    /// and checked now, so a bad path or a key that does not match its certificate is an error
    /// here rather than at every connect attempt. With
    /// [`danger_accept_invalid_certs`](TlsOptions::danger_accept_invalid_certs) this prints a
    /// warning (once per process) through `tracing`. Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn with_tls(options: TlsOptions) -> Result<Self, TlsConfigError> {
        let context = tls::TlsContext::new(&options)?;
        let cell = OnceLock::new();
        let _ = cell.set(Ok(Arc::new(context)));
        Ok(DefaultConnector {
            options: Arc::new(options),
            tls: Arc::new(cell),
            ws_max_message: DEFAULT_WS_MAX_MESSAGE,
            quic_idle: Some(DEFAULT_QUIC_IDLE),
            #[cfg(feature = "quic")]
            quic_sockets: Arc::default(),
        })
    }

    /// The largest WebSocket message (and frame) accepted from a `ws://` or `wss://` server, in
    /// bytes; a larger one ends the connection with an I/O error instead of being buffered.
    /// Without the `ws` feature it is kept and unused.
    /// The default is 16 MiB, the client's default maximum packet size, and
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) sets it to the builder's
    /// [`maximum_packet_size`](crate::ClientBuilder::maximum_packet_size) unless a connector
    /// of the application's own was given. The TLS settings and sessions stay shared with the
    /// connector this one was made from.
    pub fn websocket_max_message_size(mut self, bytes: usize) -> Self {
        self.ws_max_message = bytes.max(2);
        self
    }

    /// See [`websocket_max_message_size`](Self::websocket_max_message_size).
    pub fn websocket_max_message(&self) -> usize {
        self.ws_max_message
    }

    /// The QUIC idle timeout asked for on `quic://` connections (`None`: none of ours, the
    /// broker's applies). The default is 120 s, and
    /// [`ClientBuilder::build`](crate::ClientBuilder::build) sets it from the keep-alive
    /// (twice the keep-alive, at least 60 s, none with keep-alive off) unless a connector of
    /// the application's own was given, so that the MQTT keep-alive, not QUIC, decides when
    /// a link is dead. Without the `quic` feature it is kept and unused.
    pub fn quic_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.quic_idle = idle;
        self
    }

    /// See [`quic_idle_timeout`](Self::quic_idle_timeout).
    pub fn quic_idle(&self) -> Option<Duration> {
        self.quic_idle
    }

    /// Moves every open `quic://` connection made by this connector (or a clone of it) to a
    /// new local UDP socket on a new port, as a NAT rebinding or a change of network would:
    /// QUIC connection migration carries the connections over, and the MQTT sessions go on
    /// without a reconnect. Returns how many connections were moved. Feature `quic`.
    #[cfg(feature = "quic")]
    pub fn rebind_quic(&self) -> std::io::Result<usize> {
        self.quic_sockets.rebind()
    }

    /// How many TLS handshakes this connector and its clones completed (over TCP for
    /// `mqtts://` and `wss://`, and inside QUIC), full and resumed: compare two readings to
    /// tell whether the connects between them resumed a TLS session. All zero before the
    /// first TLS connect.
    ///
    /// Reconnects resume: the connector keeps its TLS configurations and the session tickets
    /// the broker sent, so a reconnect to a broker that issued a ticket (and still knows it)
    /// makes a resumed handshake (TLS 1.3 PSK with a new key exchange, or a TLS 1.2 session),
    /// which skips the certificates. Over TCP and QUIC alike this is 1-RTT resumption; 0-RTT
    /// early data is never sent, since a replayed CONNECT or PUBLISH is not harmless. The
    /// tickets live in the connector: a client built with a clone of it (or
    /// [`ClientBuilder::connector`](crate::ClientBuilder::connector)) resumes sessions that
    /// another made.
    #[cfg(feature = "tls")]
    pub fn tls_handshakes(&self) -> TlsHandshakes {
        match self.tls.get() {
            Some(Ok(t)) => t.handshakes(),
            _ => TlsHandshakes::default(),
        }
    }

    /// The TLS settings. Feature `tls`.
    #[cfg(feature = "tls")]
    pub fn tls_options(&self) -> &TlsOptions {
        &self.options
    }

    #[cfg(feature = "tls")]
    fn tls_context(&self) -> Result<Arc<tls::TlsContext>, TransportError> {
        self.tls
            .get_or_init(|| tls::TlsContext::new(&self.options).map(Arc::new))
            .clone()
            .map_err(|e| TransportError::TlsFatal(format!("TLS configuration: {e}")))
    }
}

impl Connector for DefaultConnector {
    fn connect(&self, server: &ServerAddr) -> ConnectFuture {
        let url = server.clone();
        #[cfg_attr(not(any(feature = "tls", feature = "ws")), allow(unused_variables))]
        let this = self.clone();
        Box::pin(async move {
            if let Some(missing) = missing_feature(url.scheme()) {
                return Err(TransportError::Io(missing.into()));
            }
            match url.scheme() {
                Scheme::Mqtt => {
                    Ok(Box::new(tcp::connect_tcp(url.host(), url.port()).await?) as BoxTransport)
                }
                #[cfg(feature = "tls")]
                Scheme::Mqtts => this.tls_context()?.connect(url.host(), url.port()).await,
                #[cfg(feature = "ws")]
                Scheme::Ws => {
                    let tcp = tcp::connect_tcp(url.host(), url.port()).await?;
                    ws::connect(Box::new(tcp), &url, this.ws_max_message).await
                }
                #[cfg(all(feature = "ws", feature = "tls"))]
                Scheme::Wss => {
                    let stream = this.tls_context()?.connect(url.host(), url.port()).await?;
                    ws::connect(stream, &url, this.ws_max_message).await
                }
                #[cfg(feature = "quic")]
                Scheme::Quic => {
                    quic::connect(
                        &*this.tls_context()?,
                        &this.quic_sockets,
                        url.host(),
                        url.port(),
                        this.quic_idle,
                    )
                    .await
                }
                #[allow(unreachable_patterns)] // every scheme is compiled in
                other => Err(TransportError::io(
                    std::io::ErrorKind::Unsupported,
                    format!("{other:?}: no transport in this build"),
                )),
            }
        })
    }
}
