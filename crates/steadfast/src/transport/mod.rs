//! How bytes travel: the [`Connector`] trait and its implementations.
//!
//! The session core never sees a socket; the driver asks a connector for a [`Transport`] to a
//! server URL and hands the bytes to the core. TLS and WebSocket connectors come with the
//! transports issue; today `mqtt://` (TCP) is supported and other schemes fail clearly.

mod tcp;

use std::future::Future;
use std::pin::Pin;

use steadfast_proto::TransportError;
use tokio::io::{AsyncRead, AsyncWrite};

pub use tcp::TcpConnector;

/// A bidirectional byte stream to a broker.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed transport.
pub type BoxTransport = Box<dyn Transport>;

/// The future a connector returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<BoxTransport, TransportError>> + Send>>;

/// Opens transports to servers given as URLs.
pub trait Connector: Send + Sync + 'static {
    /// Opens a transport to `server` (for example `mqtt://127.0.0.1:1883`).
    fn connect(&self, server: &str) -> ConnectFuture;
}

/// Host and port of a server URL, with the scheme's default port.
pub(crate) fn host_port(server: &str) -> Result<(String, u16, String), TransportError> {
    let url = url::Url::parse(server)
        .map_err(|e| TransportError::Io(format!("bad server URL {server:?}: {e}")))?;
    let scheme = url.scheme().to_string();
    let default_port = match scheme.as_str() {
        "mqtt" | "tcp" => 1883,
        "mqtts" | "ssl" => 8883,
        "ws" => 80,
        "wss" => 443,
        other => {
            return Err(TransportError::Io(format!("unsupported URL scheme {other:?}")));
        }
    };
    let host = url
        .host_str()
        .ok_or_else(|| TransportError::Io(format!("server URL {server:?} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((host, url.port().unwrap_or(default_port), scheme))
}
