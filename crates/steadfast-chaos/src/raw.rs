//! A raw-bytes MQTT client for tests: builds the few packets a test needs and
//! reads whole packets back, with no protocol logic of its own.
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) -> std::io::Result<()> {
//! use steadfast_chaos::raw::{Connect, RawClient};
//! let (mut c, connack) = RawClient::mqtt_connect(addr, &Connect::v5("probe")).await?;
//! assert_eq!(&connack[..4], &[0x20, 0x03, 0x00, 0x00]);
//! # Ok(()) }
//! ```

use crate::frame;
use bytes::{Bytes, BytesMut};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest packet [`RawClient::read_frame`] accepts (16 MiB).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// A CONNECT packet's contents.
#[derive(Debug, Clone)]
pub struct Connect {
    /// Protocol level: 4 (3.1.1) or 5.
    pub level: u8,
    /// Client identifier.
    pub client_id: String,
    /// Keep-alive in seconds (0: off).
    pub keepalive: u16,
    /// Clean session / clean start.
    pub clean: bool,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
    /// Will message (topic, payload), QoS 0, not retained.
    pub will: Option<(String, Vec<u8>)>,
}

impl Connect {
    /// An MQTT 5 CONNECT, clean start, keep-alive 60.
    pub fn v5(client_id: &str) -> Self {
        Connect {
            level: 5,
            client_id: client_id.to_string(),
            keepalive: 60,
            clean: true,
            username: None,
            password: None,
            will: None,
        }
    }

    /// An MQTT 3.1.1 CONNECT, clean session, keep-alive 60.
    pub fn v311(client_id: &str) -> Self {
        Connect {
            level: 4,
            ..Self::v5(client_id)
        }
    }

    /// With user name and password.
    pub fn credentials(mut self, user: &str, pass: &str) -> Self {
        self.username = Some(user.to_string());
        self.password = Some(pass.as_bytes().to_vec());
        self
    }

    /// With a will message.
    pub fn will(mut self, topic: &str, payload: &[u8]) -> Self {
        self.will = Some((topic.to_string(), payload.to_vec()));
        self
    }

    /// The encoded packet.
    pub fn to_bytes(&self) -> Vec<u8> {
        let v5 = self.level == 5;
        let mut body = Vec::new();
        put_str(&mut body, b"MQTT");
        body.push(self.level);
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if self.will.is_some() {
            flags |= 0x04;
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        body.push(flags);
        body.extend_from_slice(&self.keepalive.to_be_bytes());
        if v5 {
            body.push(0); // no properties
        }
        put_str(&mut body, self.client_id.as_bytes());
        if let Some((topic, payload)) = &self.will {
            if v5 {
                body.push(0); // no will properties
            }
            put_str(&mut body, topic.as_bytes());
            put_str(&mut body, payload);
        }
        if let Some(u) = &self.username {
            put_str(&mut body, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_str(&mut body, p);
        }
        packet(0x10, &body)
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s[..usize::from(len)]);
}

/// Encodes an MQTT remaining length.
pub fn encode_remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

/// A packet: first byte, remaining length, body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    encode_remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// SUBSCRIBE to one filter.
pub fn subscribe(level: u8, packet_id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if level == 5 {
        body.push(0);
    }
    put_str(&mut body, filter.as_bytes());
    body.push(qos & 0x03);
    packet(0x82, &body)
}

/// PUBLISH (`packet_id` is used for QoS 1 and 2 only).
pub fn publish(level: u8, topic: &str, payload: &[u8], qos: u8, packet_id: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 8);
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    packet(0x30 | ((qos & 0x03) << 1), &body)
}

/// PINGREQ.
pub fn pingreq() -> Vec<u8> {
    vec![0xc0, 0x00]
}

/// A normal DISCONNECT (`e0 00`).
pub fn disconnect() -> Vec<u8> {
    vec![0xe0, 0x00]
}

/// A TCP connection speaking raw MQTT bytes.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    /// Opens the TCP connection only.
    pub async fn connect(addr: SocketAddr) -> io::Result<RawClient> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(RawClient {
            stream,
            buf: BytesMut::new(),
        })
    }

    /// Opens the connection, sends `connect` and reads the reply (normally a
    /// CONNACK) within 5 s.
    pub async fn mqtt_connect(
        addr: SocketAddr,
        connect: &Connect,
    ) -> io::Result<(RawClient, Bytes)> {
        let mut c = Self::connect(addr).await?;
        c.send(&connect.to_bytes()).await?;
        let reply = c
            .read_frame_timeout(Duration::from_secs(5))
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed before CONNACK"))?;
        Ok((c, reply))
    }

    /// Writes raw bytes.
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await
    }

    /// Reads one whole packet; `Ok(None)` on a clean close between packets.
    pub async fn read_frame(&mut self) -> io::Result<Option<Bytes>> {
        frame::read_frame(&mut self.stream, &mut self.buf, MAX_FRAME).await
    }

    /// Like [`RawClient::read_frame`], failing with `TimedOut` after `timeout`.
    pub async fn read_frame_timeout(&mut self, timeout: Duration) -> io::Result<Option<Bytes>> {
        tokio::time::timeout(timeout, self.read_frame())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no packet"))?
    }

    /// Reads raw bytes as they come (up to 64 KiB); empty at end of stream.
    pub async fn read_raw(&mut self) -> io::Result<Vec<u8>> {
        if !self.buf.is_empty() {
            return Ok(self.buf.split().to_vec());
        }
        let mut b = vec![0u8; 64 * 1024];
        let n = self.stream.read(&mut b).await?;
        b.truncate(n);
        Ok(b)
    }

    /// The underlying socket.
    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}
