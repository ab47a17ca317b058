//! Server addresses: the servers the application configures and the Server References
//! (MQTT 5.0 section 4.11) a broker sends with 0x9C "use another server" / 0x9D "server moved".
//!
//! A [`ServerAddr`] is a scheme, a host (a name, an IPv4 or an IPv6 address), a port, a path
//! (WebSocket) and optional [`Credentials`]. The password inside is a [`Password`], which never
//! prints: `Debug` and `Display` of every type here show `user:***@` at most, so a server can be
//! named in an event, a log line or an error message.
//!
//! ```
//! use steadfast_proto::server::ServerAddr;
//!
//! let configured = ServerAddr::parse_url("mqtts://user:secret@broker1.example").unwrap();
//! assert_eq!(configured.to_string(), "mqtts://user:***@broker1.example:8883");
//!
//! // What brokers send: `host`, `host:port`, `[v6]:port` or URLs, separated by spaces. The
//! // scheme, path and credentials of the redirecting server carry over.
//! let next = ServerAddr::parse_reference("broker2.example:8884 [::1]:1884", &configured).unwrap();
//! assert_eq!(next[0].to_string(), "mqtts://user:***@broker2.example:8884");
//! assert_eq!(next[1].to_string(), "mqtts://user:***@[::1]:1884");
//! assert!(ServerAddr::parse_reference("not a server!", &configured).is_err());
//! ```

use core::fmt;
use std::net::Ipv6Addr;
use std::sync::Arc;

use bytes::Bytes;

use crate::ByteStr;

/// The transport a scheme asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `mqtt://` or `tcp://`: plain TCP, default port 1883.
    Mqtt,
    /// `mqtts://` or `ssl://`: TLS over TCP, default port 8883.
    Mqtts,
    /// `ws://`: WebSocket, default port 80.
    Ws,
    /// `wss://`: WebSocket over TLS, default port 443.
    Wss,
    /// `quic://` or `mqtt-quic://`: MQTT over QUIC (TLS 1.3 inside, ALPN `mqtt`, one
    /// bidirectional stream), default UDP port 14567, the EMQX / NanoSDK convention.
    Quic,
}

impl Scheme {
    /// The port used when an address names none.
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
            Scheme::Quic => 14567,
        }
    }

    /// Whether the transport is encrypted (TLS, or QUIC's TLS 1.3), so TLS settings apply.
    pub const fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss | Scheme::Quic)
    }

    /// Whether the transport is a WebSocket.
    pub const fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    fn from_name(name: &str) -> Option<(Scheme, &'static str)> {
        Some(match name.to_ascii_lowercase().as_str() {
            "mqtt" => (Scheme::Mqtt, "mqtt"),
            "tcp" => (Scheme::Mqtt, "tcp"),
            "mqtts" => (Scheme::Mqtts, "mqtts"),
            "ssl" => (Scheme::Mqtts, "ssl"),
            "ws" => (Scheme::Ws, "ws"),
            "wss" => (Scheme::Wss, "wss"),
            "quic" => (Scheme::Quic, "quic"),
            "mqtt-quic" => (Scheme::Quic, "mqtt-quic"),
            _ => return None,
        })
    }
}

/// A password. `Debug` and `Display` print `***`; [`Password::expose`] gives the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Bytes);

impl Password {
    /// Wraps password bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Password(bytes.into())
    }

    /// The password bytes, for CONNECT.
    pub fn expose(&self) -> &Bytes {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A user name and an optional password, from the user info of a server URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (percent-decoded).
    pub username: ByteStr,
    /// The password (percent-decoded), if the URL had one.
    pub password: Option<Password>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// A server address or reference that cannot be used. The message names the input with its
/// password replaced by `***`, and shortened when long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddrError(String);

impl ServerAddrError {
    fn new(input: &str, why: impl fmt::Display) -> Self {
        ServerAddrError(format!(
            "bad server {:?}: {why}",
            shorten(&redact_url(input))
        ))
    }
}

impl fmt::Display for ServerAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerAddrError {}

/// At most this many servers in one Server Reference.
pub const MAX_REFERENCE_SERVERS: usize = 16;

/// Where a client connects: scheme, host, port, path and optional credentials.
///
/// `Display` is the URL with the password replaced by `***` and the port always written
/// (`mqtt://user:***@host:1883/path`); `Debug` shows the same. Neither ever shows a password.
/// Cloning is cheap (a reference count), and an event that carries one stays small.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerAddr(Arc<Addr>);

#[derive(Clone, PartialEq, Eq)]
struct Addr {
    scheme: Scheme,
    scheme_name: &'static str,
    host: String,
    port: u16,
    path: String,
    credentials: Option<Credentials>,
}

impl ServerAddr {
    /// A server given by the application: `scheme://[user[:password]@]host[:port][/path][?query]`
    /// with scheme `mqtt`, `tcp`, `mqtts`, `ssl`, `ws`, `wss`, `quic` or `mqtt-quic`. The host is a name, an IPv4
    /// address or an IPv6 address in brackets; the port defaults to the scheme's. User and
    /// password are percent-decoded. Path and query are kept for WebSocket.
    pub fn parse_url(url: &str) -> Result<ServerAddr, ServerAddrError> {
        let err = |why: &str| ServerAddrError::new(url, why);
        let (scheme_name, rest) = url
            .split_once("://")
            .ok_or_else(|| err("not a URL (expected scheme://host[:port])"))?;
        let (scheme, scheme_name) = Scheme::from_name(scheme_name).ok_or_else(|| {
            err("unsupported scheme (use mqtt, mqtts, ws, wss or quic; also tcp, ssl and mqtt-quic)")
        })?;
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(auth_end);
        if path.contains('#') {
            return Err(err("a server URL has no #fragment"));
        }
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let username = percent_decode(user).ok_or_else(|| err("bad %-escape in user"))?;
                let username =
                    String::from_utf8(username).map_err(|_| err("the user name is not UTF-8"))?;
                let password = match pass {
                    Some(p) => Some(Password::new(
                        percent_decode(p).ok_or_else(|| err("bad %-escape in password"))?,
                    )),
                    None => None,
                };
                if username.is_empty() && password.is_none() {
                    None
                } else {
                    Some(Credentials {
                        username: ByteStr::from(username),
                        password,
                    })
                }
            }
        };
        let (host, port) = parse_host_port(hostport).map_err(err)?;
        Ok(ServerAddr(Arc::new(Addr {
            scheme,
            scheme_name,
            host,
            port: port.unwrap_or(scheme.default_port()),
            path: path.to_string(),
            credentials,
        })))
    }

    /// The servers of a broker's Server Reference, in order: whitespace-separated entries, each
    /// a URL (as [`parse_url`](Self::parse_url)) or `host`, `host:port`, `[v6addr]` or
    /// `[v6addr]:port`. An entry without a scheme takes the scheme, path and credentials of
    /// `inheriting_from` (the server that redirected) and, without a port, the scheme's default
    /// port; a URL without credentials takes those of `inheriting_from`. TLS settings belong to
    /// the connector and so apply to every server of a TLS scheme.
    ///
    /// The reference is taken whole or not at all: an empty reference, an entry that does not
    /// parse, or more than [`MAX_REFERENCE_SERVERS`] entries is an error.
    pub fn parse_reference(
        reference: &str,
        inheriting_from: &ServerAddr,
    ) -> Result<Vec<ServerAddr>, ServerAddrError> {
        let mut out = Vec::new();
        for entry in reference.split_ascii_whitespace() {
            if out.len() == MAX_REFERENCE_SERVERS {
                return Err(ServerAddrError::new(
                    reference,
                    format!("more than {MAX_REFERENCE_SERVERS} servers"),
                ));
            }
            let from = &inheriting_from.0;
            let addr = if entry.contains("://") {
                let addr = ServerAddr::parse_url(entry)?;
                if addr.0.credentials.is_none() {
                    addr.with_credentials(from.credentials.clone())
                } else {
                    addr
                }
            } else {
                let (host, port) =
                    parse_host_port(entry).map_err(|why| ServerAddrError::new(entry, why))?;
                ServerAddr(Arc::new(Addr {
                    port: port.unwrap_or(from.scheme.default_port()),
                    host,
                    ..Addr::clone(from)
                }))
            };
            out.push(addr);
        }
        if out.is_empty() {
            return Err(ServerAddrError::new(reference, "empty Server Reference"));
        }
        Ok(out)
    }

    /// `mqtt://127.0.0.1:1883`, the default server.
    pub fn local_default() -> ServerAddr {
        ServerAddr(Arc::new(Addr {
            scheme: Scheme::Mqtt,
            scheme_name: "mqtt",
            host: "127.0.0.1".to_string(),
            port: Scheme::Mqtt.default_port(),
            path: String::new(),
            credentials: None,
        }))
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.0.scheme
    }

    /// The scheme as written (`mqtt`, `tcp`, `mqtts`, `ssl`, `ws`, `wss`, `quic` or `mqtt-quic`).
    pub fn scheme_name(&self) -> &'static str {
        self.0.scheme_name
    }

    /// The host: a name, or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.0.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// Path and query as written (`/mqtt?x=1`), or empty.
    pub fn path(&self) -> &str {
        &self.0.path
    }

    /// The credentials of the URL's user info, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.0.credentials.as_ref()
    }

    /// The same server without credentials.
    pub fn without_credentials(self) -> ServerAddr {
        self.with_credentials(None)
    }

    /// The same server with these credentials.
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> ServerAddr {
        Arc::make_mut(&mut self.0).credentials = credentials;
        self
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.0;
        write!(f, "{}://", a.scheme_name)?;
        if let Some(c) = &a.credentials {
            write!(f, "{}", percent_encode_userinfo(c.username.as_str()))?;
            if c.password.is_some() {
                f.write_str(":***")?;
            }
            f.write_str("@")?;
        }
        if a.host.contains(':') {
            write!(f, "[{}]", a.host)?;
        } else {
            f.write_str(&a.host)?;
        }
        write!(f, ":{}{}", a.port, a.path)
    }
}

impl fmt::Debug for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerAddr({self})")
    }
}

impl core::str::FromStr for ServerAddr {
    type Err = ServerAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServerAddr::parse_url(s)
    }
}

/// Compares the `Display` form (so the password is not compared).
impl PartialEq<str> for ServerAddr {
    fn eq(&self, other: &str) -> bool {
        /// Matches written text against the rest of `other`, without allocating.
        struct Matcher<'a>(&'a str);
        impl fmt::Write for Matcher<'_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0 = self.0.strip_prefix(s).ok_or(fmt::Error)?;
                Ok(())
            }
        }
        let mut m = Matcher(other);
        fmt::write(&mut m, format_args!("{self}")).is_ok() && m.0.is_empty()
    }
}

/// Compares the `Display` form (so the password is not compared).
impl PartialEq<&str> for ServerAddr {
    fn eq(&self, other: &&str) -> bool {
        <ServerAddr as PartialEq<str>>::eq(self, other)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn parse_host_port(s: &str) -> Result<(String, Option<u16>), &'static str> {
    if s.is_empty() {
        return Err("no host");
    }
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (v6, after) = inner
            .split_once(']')
            .ok_or("no closing ] after an IPv6 address")?;
        v6.parse::<Ipv6Addr>().map_err(|_| "bad IPv6 address")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after ]")?),
        };
        (v6.to_string(), port)
    } else if s.matches(':').count() > 1 {
        // A bare IPv6 address (brokers may send `::1`); a port needs brackets.
        s.parse::<Ipv6Addr>()
            .map_err(|_| "bad IPv6 address (write [addr]:port)")?;
        (s.to_string(), None)
    } else {
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if host.is_empty() {
            return Err("no host");
        }
        if host.len() > 253 {
            return Err("host name too long");
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err("bad host name (letters, digits, '-', '.', '_')");
        }
        (host.to_string(), port)
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("bad port");
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err("port out of range (1 to 65535)"),
                Ok(n) => Some(n),
            }
        }
    };
    Ok((host, port))
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = core::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn percent_encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A broker's Server Reference as it may be shown: URL passwords redacted, shortened.
pub(crate) fn redact_reference(reference: &str) -> String {
    shorten(&redact_url(reference))
}

fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Replaces the password of every `scheme://user:password@host` URL in `text` with `***`, so
/// text that may hold URLs (a Server Reference, a command line flag) can be shown. Text that
/// does not parse is redacted as well as it can be: after `://`, everything between the first
/// `:` and the last `@` before the host part ends.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = i + 3;
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => match authority[..at].find(':') {
                Some(colon) => {
                    out.push_str(&authority[..colon]);
                    out.push_str(":***");
                    out.push_str(&authority[at..]);
                }
                None => out.push_str(authority),
            },
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = ServerAddr::parse_url("mqtts://broker.example").unwrap();
        assert_eq!((a.scheme(), a.port()), (Scheme::Mqtts, 8883));
        let a = ServerAddr::parse_url("ssl://broker.example:1234").unwrap();
        assert_eq!(
            (a.scheme(), a.scheme_name(), a.port()),
            (Scheme::Mqtts, "ssl", 1234)
        );
        let a = ServerAddr::parse_url("ws://[::1]:9001").unwrap();
        assert_eq!(
            (a.scheme(), a.host(), a.port(), a.path()),
            (Scheme::Ws, "::1", 9001, "")
        );
        assert_eq!(a.to_string(), "ws://[::1]:9001");
        let a = ServerAddr::parse_url("wss://h/custom/path?x=1").unwrap();
        assert_eq!((a.port(), a.path()), (443, "/custom/path?x=1"));
        let a = ServerAddr::parse_url("tcp://h").unwrap();
        assert_eq!((a.scheme(), a.port()), (Scheme::Mqtt, 1883));
        let a = ServerAddr::parse_url("quic://h").unwrap();
        assert_eq!((a.scheme(), a.port()), (Scheme::Quic, 14567));
        let a = ServerAddr::parse_url("mqtt-quic://[::1]:1234").unwrap();
        assert_eq!(
            (a.scheme(), a.scheme_name(), a.host(), a.port()),
            (Scheme::Quic, "mqtt-quic", "::1", 1234)
        );
        assert!(a.scheme().is_tls() && !a.scheme().is_websocket());
        for bad in [
            "http://h",
            "h:1883",
            "10.10.151.22:8883",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://h:x",
            "mqtt://[::1",
            "mqtt://[zz]:1",
            "mqtt://h h",
            "mqtt://h#f",
            "mqtt://u:%zz@h",
        ] {
            assert!(ServerAddr::parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let a = ServerAddr::parse_url("mqtt://us%40er:p%3Ass@h:1").unwrap();
        let c = a.credentials().unwrap();
        assert_eq!(c.username.as_str(), "us@er");
        assert_eq!(c.password.as_ref().unwrap().expose().as_ref(), b"p:ss");
        assert_eq!(a.to_string(), "mqtt://us%40er:***@h:1");
        assert!(!format!("{a:?}").contains("p:ss"));
        assert!(!format!("{c:?}").contains("p:ss"));
        let e = ServerAddr::parse_url("mqtt://u:hunter2@h:0").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn redacts_text() {
        assert_eq!(redact_url("mqtt://u:secret@h:1/x"), "mqtt://u:***@h:1/x");
        assert_eq!(redact_url("mqtt://u@h"), "mqtt://u@h");
        assert_eq!(redact_url("mqtt://h:1"), "mqtt://h:1");
        assert_eq!(redact_url("nonsense"), "nonsense");
        assert_eq!(redact_url("mqtt://u:p@ss@h"), "mqtt://u:***@h");
        assert_eq!(
            redact_url("a ws://u:p@h/x mqtt://v:q@i"),
            "a ws://u:***@h/x mqtt://v:***@i"
        );
    }
}
