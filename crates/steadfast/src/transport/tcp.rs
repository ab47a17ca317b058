//! Plain TCP (`mqtt://`, `tcp://`), and the TCP leg under TLS and WebSocket.

use steadfast_proto::server::Scheme;
use steadfast_proto::{IoError, ServerAddr, TransportError};
use tokio::net::TcpStream;

use super::{BoxTransport, ConnectFuture, Connector};

/// Connects over TCP with `TCP_NODELAY`, and only over TCP: other schemes are refused with a
/// clear error. [`DefaultConnector`](super::DefaultConnector) (the builder's default) speaks
/// every scheme.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, server: &ServerAddr) -> ConnectFuture {
        let url = server.clone();
        Box::pin(async move {
            if url.scheme() != Scheme::Mqtt {
                return Err(TransportError::io(
                    std::io::ErrorKind::Unsupported,
                    format!(
                        "TcpConnector only speaks mqtt:// and tcp://, not {}:// (use DefaultConnector)",
                        url.scheme_name()
                    ),
                ));
            }
            Ok(Box::new(connect_tcp(url.host(), url.port()).await?) as BoxTransport)
        })
    }
}

/// Resolves `host` and connects to the first address that answers, with `TCP_NODELAY`.
pub(crate) async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, TransportError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| TransportError::Dns(IoError::with_source(host, e)))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(IoError::with_source(format!("TCP connect to {addr}"), e)),
        }
    }
    Err(TransportError::Io(last.unwrap_or_else(|| {
        IoError::new(std::io::ErrorKind::NotFound, format!("{host}: no address"))
    })))
}
