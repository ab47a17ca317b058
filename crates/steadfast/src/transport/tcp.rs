//! Plain TCP (`mqtt://`).

use steadfast_proto::TransportError;
use tokio::net::TcpStream;

use super::{host_port, BoxTransport, ConnectFuture, Connector};

/// Connects over TCP with `TCP_NODELAY`. Schemes other than `mqtt://` / `tcp://` are refused
/// with a clear error until their transport exists.
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, server: &str) -> ConnectFuture {
        let parsed = host_port(server);
        Box::pin(async move {
            let (host, port, scheme) = parsed?;
            if scheme != "mqtt" && scheme != "tcp" {
                return Err(TransportError::Io(format!(
                    "{scheme}:// is not supported yet by this build (TLS and WebSocket transports are pending)"
                )));
            }
            let addrs = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| TransportError::Dns(format!("{host}: {e}")))?;
            let mut last = None;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(Box::new(s) as BoxTransport);
                    }
                    Err(e) => last = Some(format!("{addr}: {e}")),
                }
            }
            Err(TransportError::Io(last.unwrap_or_else(|| format!("{host}: no address"))))
        })
    }
}
