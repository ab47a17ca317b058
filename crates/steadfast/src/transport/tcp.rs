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

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused TCP connect keeps its `io::ErrorKind` and the `io::Error` as its source.
    #[tokio::test]
    async fn a_refused_connect_keeps_its_kind_and_source() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let Err(e) = connect_tcp("127.0.0.1", port).await else {
            panic!("nothing listens on {port}")
        };
        assert!(matches!(e, TransportError::Io(_)), "{e:?}");
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::ConnectionRefused));
        let source = std::error::Error::source(&e).expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }

    #[tokio::test]
    async fn a_failed_lookup_is_dns_with_its_source() {
        let Err(e) = connect_tcp("no-such-host.invalid", 1883).await else {
            panic!("the .invalid domain never resolves")
        };
        assert!(matches!(e, TransportError::Dns(_)), "{e:?}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
