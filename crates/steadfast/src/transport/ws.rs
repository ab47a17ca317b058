//! MQTT over WebSocket (`ws://`, `wss://`): the `mqtt` subprotocol, binary frames, and an
//! adapter from the message stream to a byte stream.
//!
//! MQTT packets are a byte stream to the core: one WebSocket frame may carry several packets
//! and a packet may span frames, so frames are only an envelope here. Each write becomes one
//! binary message; each binary message read is handed on as bytes. Text frames break the
//! MQTT-over-WebSocket rules and end the connection; ping/pong are answered by tungstenite.
//!
//! tungstenite buffers a whole message before handing it on, and by default accepts messages
//! of up to 64 MiB. Here both its message and its frame limit are the client's maximum packet
//! size (see `DefaultConnector::websocket_max_message_size`): a frame whose header announces
//! more is refused before its payload is read, and a fragmented message is refused as soon as
//! its fragments add up to more. Either way the connection ends with an I/O error that names
//! both sizes. (A server that packs several MQTT packets into one message must keep the message
//! within that size too.) Outgoing packets are already bounded by the broker's maximum packet
//! size in the core.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use steadfast_proto::TransportError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use steadfast_proto::server::Scheme;
use steadfast_proto::ServerAddr;

use super::BoxTransport;

/// The WebSocket subprotocol of MQTT (both 3.1.1 and 5.0).
pub(crate) const SUBPROTOCOL: &str = "mqtt";

/// The WebSocket handshake over an open stream (TCP or TLS): `GET path` with
/// `Sec-WebSocket-Protocol: mqtt`. The server must agree to the subprotocol. Messages and
/// frames from the server larger than `max_message` bytes end the connection.
pub(crate) async fn connect(
    stream: BoxTransport,
    url: &ServerAddr,
    max_message: usize,
) -> Result<BoxTransport, TransportError> {
    let scheme = if url.scheme() == Scheme::Wss {
        "wss"
    } else {
        "ws"
    };
    let host = if url.host().contains(':') {
        format!("[{}]", url.host())
    } else {
        url.host().to_string()
    };
    // Path and query as given; `/mqtt` when the URL has no path.
    let path = match url.path() {
        "" | "/" => "/mqtt".to_string(),
        p if p.starts_with('?') => format!("/mqtt{p}"),
        p => p.to_string(),
    };
    let uri = format!("{scheme}://{host}:{}{path}", url.port());
    let mut request = uri.as_str().into_client_request().map_err(|e| {
        TransportError::io(
            std::io::ErrorKind::InvalidInput,
            format!("bad WebSocket URL {uri}: {e}"),
        )
    })?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| map_handshake_error(e, &uri))?;
    Ok(Box::new(WsStream {
        ws,
        read: Bytes::new(),
        eof: false,
    }))
}

fn map_handshake_error(e: WsError, uri: &str) -> TransportError {
    match e {
        WsError::Io(e) => TransportError::io_with(format!("WebSocket handshake with {uri}"), e),
        WsError::Tls(e) => TransportError::Tls(format!("WebSocket handshake with {uri}: {e}")),
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed,
        WsError::Http(resp) => TransportError::io(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "WebSocket handshake with {uri}: the server answered HTTP {} instead of switching protocols",
                resp.status()
            ),
        ),
        other => TransportError::io(
            std::io::ErrorKind::InvalidData,
            format!("WebSocket handshake with {uri} failed: {other}"),
        ),
    }
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "WebSocket: the server sent a message of {size} bytes, more than the maximum \
                 packet size ({max_size} bytes)"
            ),
        ),
        other => io::Error::other(format!("WebSocket: {other}")),
    }
}

/// A WebSocket connection seen as a byte stream.
struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    read: Bytes,
    eof: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.read = b,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "WebSocket: the server sent a text frame (MQTT needs binary frames)",
                    )))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => self.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}
