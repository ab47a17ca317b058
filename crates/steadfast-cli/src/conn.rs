//! The connection flags every connecting subcommand shares (`#[command(flatten)]` a
//! [`ConnArgs`]), and their translation into a [`ClientBuilder`].
//!
//! Flags that mosquitto_pub / mosquitto_sub also have use the same letters and mean the same
//! thing. Secrets (passwords, also those inside URLs) never appear in any message.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};
use steadfast::proto::server::redact_url;
use steadfast::transport::TlsOptions;
use steadfast::{
    BackoffPolicy, ClientBuilder, Constant, Exponential, Jitter, ProtocolVersion, ServerAddr,
    Stepped, UniformRandom,
};

/// A usage error: one line on stderr, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Prints a usage error as one line and returns exit code 2.
pub fn usage_exit(e: UsageError) -> std::process::ExitCode {
    eprintln!("steadfast: {e}");
    std::process::ExitCode::from(crate::exit::USAGE)
}

/// `--backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackoffKind {
    /// From --reconnect-min doubling up to --reconnect-max, with --jitter.
    Exponential,
    /// Uniformly random in [--reconnect-min, --reconnect-max] (Paho's style).
    Random,
    /// Steps --reconnect-min, 2x, 4x, ... up to --reconnect-max, each +/- 20 % (--jitter none: exact).
    Stepped,
    /// Always --reconnect-min.
    Constant,
}

/// `--jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JitterKind {
    /// No jitter.
    None,
    /// Uniform in [min, exponential delay].
    Full,
    /// Half the exponential delay plus up to half of it at random.
    Equal,
    /// min(max, uniform[min, 3 x previous delay]) (AWS "decorrelated jitter").
    Decorrelated,
    /// min(max, uniform[previous delay, 3 x previous delay]): decorrelated jitter whose lower
    /// bound climbs (the library's default; see docs/lifecycle.md).
    Rising,
}

/// The connection flags (see the CLI contract).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection")]
pub struct ConnArgs {
    /// Broker URL: mqtt://[user[:pass]@]host[:port] (also mqtts://, ws://, wss://, quic://). As with
    /// mosquitto, a path in an mqtt://, mqtts:// or quic:// URL is the topic (pub) or a filter (sub).
    #[arg(short = 'L', long = "url", value_name = "URL", conflicts_with_all = ["host", "port"])]
    pub url: Option<String>,
    /// Broker host, when no --url is given [default: 127.0.0.1].
    #[arg(short = 'h', long = "host", value_name = "HOST")]
    pub host: Option<String>,
    /// Broker port, when no --url is given [default: 1883, or 8883 with TLS flags].
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,
    /// An extra server URL for failover, tried in order after the first (repeatable). Its
    /// user and password are used for that server unless -u/-P are given; never printed.
    #[arg(long = "server", value_name = "URL", action = ArgAction::Append)]
    pub servers: Vec<String>,
    /// Client id [default: generated; with MQTT 5, assigned by the broker].
    #[arg(short = 'i', long = "id", value_name = "ID")]
    pub id: Option<String>,
    /// MQTT version: 5 or 311 (also mqttv5, mqttv311).
    #[arg(short = 'V', long = "protocol-version", value_name = "VERSION", default_value = "5",
          value_parser = parse_protocol)]
    pub protocol: ProtocolVersion,
    /// Keep-alive in seconds (0 turns it off).
    #[arg(
        short = 'k',
        long = "keepalive",
        value_name = "SECS",
        default_value_t = 60
    )]
    pub keepalive: u16,
    /// Clean start off: resume the broker-side session. With MQTT 5 and no -x, the session
    /// then never expires (as with mosquitto).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub disable_clean_session: bool,
    /// MQTT 5 session expiry interval in seconds (-1 or "inf": never) [default: 0].
    #[arg(short = 'x', long = "session-expiry", value_name = "SECS", value_parser = parse_expiry,
          allow_hyphen_values = true)]
    pub session_expiry: Option<u32>,
    /// User name (overrides the URL's).
    #[arg(short = 'u', long = "username", value_name = "USER")]
    pub username: Option<String>,
    /// Password (overrides the URL's). Never printed.
    #[arg(short = 'P', long = "pw", value_name = "PASSWORD")]
    pub password: Option<String>,
    /// TLS: CA certificates (PEM) to verify the broker with, instead of the system roots.
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,
    /// TLS: client certificate (PEM); needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// TLS: client private key (PEM); needs --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// TLS: do not verify the broker's certificate (encrypted, not authenticated).
    #[arg(long)]
    pub insecure: bool,
    /// Smallest reconnect delay (human duration: 100ms, 2s, 1m).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_duration)]
    pub reconnect_max: Duration,
    /// Backoff policy.
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = BackoffKind::Exponential)]
    pub backoff: BackoffKind,
    /// Jitter of the exponential (and stepped) policy [default: rising].
    #[arg(long, value_name = "MODE", value_enum)]
    pub jitter: Option<JitterKind>,
    /// Give up (exit 4) after N consecutive failed attempts, the first included; 0 = never.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_attempts: u32,
    /// Exit on the first failed connect or lost connection (exit 1, or 3 if refused; no
    /// `dormant` event). Cannot be combined with --max-attempts.
    #[arg(long, conflicts_with = "max_attempts")]
    pub no_reconnect: bool,
    /// QoS 1/2 messages in flight at most, 1 to 65535 (MQTT 5: also bounded by the broker's
    /// Receive Maximum) [default: 10 for MQTT 3.1.1, the broker's Receive Maximum for MQTT 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_inflight: Option<u16>,
    /// Keep the session (queued and in-flight messages, subscriptions) in DIR, so it
    /// survives a crash or a restart [default: memory].
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The will: the broker publishes it to TOPIC if the connection ends without a
    /// DISCONNECT (a crash, a lost link).
    #[arg(long = "will-topic", value_name = "TOPIC")]
    pub will_topic: Option<String>,
    /// The will's payload [default: empty].
    #[arg(
        long = "will-payload",
        value_name = "MSG",
        requires = "will_topic",
        allow_hyphen_values = true
    )]
    pub will_payload: Option<String>,
    /// The will's QoS: 0, 1 or 2.
    #[arg(long = "will-qos", value_name = "QOS", default_value = "0", value_parser = parse_qos,
          requires = "will_topic")]
    pub will_qos: steadfast::QoS,
    /// Retain the will.
    #[arg(long = "will-retain", requires = "will_topic")]
    pub will_retain: bool,
    /// Print lifecycle events to stderr, one JSON object per line.
    #[arg(long)]
    pub events: bool,
    /// Debug: print the client library's log to stderr, one plain line per event (connect
    /// attempts, connections lost and why, backoff delays, resubscriptions, refusals).
    /// Passwords and authentication data are never in it.
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
}

/// What the connection flags produced.
pub struct Conn {
    /// The builder, with every connection flag applied.
    pub builder: ClientBuilder,
    /// The topic given as the path of an mqtt:// URL (mosquitto's `-L`), if any.
    pub url_topic: Option<String>,
    /// The protocol version (the events writer maps 3.1.1 return codes with it).
    pub protocol: ProtocolVersion,
}

/// `-q`: 0, 1 or 2.
pub fn parse_qos(s: &str) -> Result<steadfast::QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(steadfast::QoS::from_u8)
        .ok_or_else(|| "expected 0, 1 or 2".to_string())
}

fn parse_protocol(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "5" | "mqttv5" => Ok(ProtocolVersion::V5),
        "311" | "mqttv311" => Ok(ProtocolVersion::V311),
        _ => Err("expected 5, 311, mqttv5 or mqttv311".into()),
    }
}

fn parse_expiry(s: &str) -> Result<u32, String> {
    match s {
        "-1" | "inf" | "infinity" | "∞" => Ok(u32::MAX),
        _ => s
            .parse::<u32>()
            .map_err(|_| "expected seconds (0 to 4294967295), or -1 for never".into()),
    }
}

/// Parses a human duration: `100ms`, `2s`, `1m`, `1h 30m`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("bad duration {t:?}"));
    }
    humantime::parse_duration(t).map_err(|e| format!("{e} (examples: 100ms, 2s, 1m)"))
}

/// A `-L` URL split into the server URL (scheme, user info, host, port, query) and, as with
/// mosquitto's `-L`, the topic given as the path of an `mqtt://`, `mqtts://` or `quic://` URL
/// (percent-decoded; a `#` in a filter starts the URL's fragment, which is part of the topic).
/// Only the scheme and the presence of a host are checked here; the server URL is parsed by
/// the library. The error never repeats a password.
fn split_url(url: &str) -> Result<(String, Option<String>), UsageError> {
    let shown = redact_url(url);
    let bad = |why: String| UsageError(format!("bad URL {shown:?}: {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("not a URL (expected scheme://host[:port])".into()))?;
    let topic_scheme = match scheme {
        "mqtt" | "mqtts" | "tcp" | "ssl" | "quic" | "mqtt-quic" => true,
        "ws" | "wss" => false,
        s => {
            return Err(bad(format!(
                "unsupported scheme {s:?} (use mqtt, mqtts, ws, wss or quic)"
            )))
        }
    };
    let (before_fragment, fragment) = match rest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (rest, None),
    };
    let authority_end = before_fragment
        .find(['/', '?'])
        .unwrap_or(before_fragment.len());
    let (authority, tail) = before_fragment.split_at(authority_end);
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(bad("no host".into()));
    }
    if topic_scheme && (!matches!(path, "" | "/") || fragment.is_some()) {
        let mut topic = percent_decode(path.trim_start_matches('/'));
        if let Some(f) = fragment {
            topic.push('#');
            topic.push_str(&percent_decode(f));
        }
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        return Ok((format!("{scheme}://{authority}{query}"), Some(topic)));
    }
    Ok((url.to_string(), None))
}

impl ConnArgs {
    fn tls_requested(&self) -> bool {
        self.cafile.is_some() || self.cert.is_some() || self.insecure
    }

    /// The backoff policy of --backoff, --jitter, --reconnect-min and --reconnect-max.
    pub fn backoff_policy(&self) -> Result<Box<dyn BackoffPolicy>, UsageError> {
        let (min, max) = (self.reconnect_min, self.reconnect_max);
        if min > max {
            return Err(UsageError(format!(
                "--reconnect-min ({}) is above --reconnect-max ({})",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )));
        }
        let jitter = self.jitter.unwrap_or(JitterKind::Rising);
        if self.jitter.is_some()
            && matches!(self.backoff, BackoffKind::Random | BackoffKind::Constant)
        {
            return Err(UsageError(
                "--jitter applies to --backoff exponential and stepped only".into(),
            ));
        }
        Ok(match self.backoff {
            BackoffKind::Exponential => Box::new(Exponential::new(min, max).jitter(match jitter {
                JitterKind::None => Jitter::None,
                JitterKind::Full => Jitter::Full,
                JitterKind::Equal => Jitter::Equal,
                JitterKind::Decorrelated => Jitter::Decorrelated,
                JitterKind::Rising => Jitter::Rising,
            })),
            BackoffKind::Random => Box::new(UniformRandom::new(min, max)),
            BackoffKind::Constant => Box::new(Constant::new(min)),
            BackoffKind::Stepped => {
                let mut steps = Vec::new();
                let mut d = min;
                while steps.len() < 64 {
                    steps.push(d.min(max));
                    if d >= max {
                        break;
                    }
                    d = if d.is_zero() {
                        Duration::from_millis(100)
                    } else {
                        d.saturating_mul(2)
                    };
                }
                let fraction = if jitter == JitterKind::None { 0.0 } else { 0.2 };
                Box::new(Stepped::new(steps, fraction).map_err(|e| UsageError(e.to_string()))?)
            }
        })
    }

    /// Applies every connection flag to a new [`ClientBuilder`].
    pub fn builder(&self) -> Result<Conn, UsageError> {
        crate::debug::init(self.debug);
        let tls = self.tls_requested();
        let mut url_topic = None;
        let first = match &self.url {
            Some(u) => {
                let (base, topic) = split_url(u)?;
                url_topic = topic;
                base
            }
            None => {
                let host = self.host.as_deref().unwrap_or("127.0.0.1");
                if host.is_empty() {
                    return Err(UsageError("-h/--host: empty host name".into()));
                }
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host.to_string()
                };
                let (scheme, default_port) = if tls { ("mqtts", 8883) } else { ("mqtt", 1883) };
                let u = format!("{scheme}://{host}:{}", self.port.unwrap_or(default_port));
                split_url(&u)?.0
            }
        };
        // Builder errors name servers with their passwords redacted.
        let mut b = ClientBuilder::from_url(&first).map_err(|e| UsageError(e.to_string()))?;
        // Each server keeps the credentials of its URL (used for it unless -u/-P are given);
        // they are shown redacted everywhere.
        let mut all_servers = b.config().servers.clone();
        for s in &self.servers {
            let server =
                ServerAddr::parse_url(s).map_err(|e| UsageError(format!("--server: {e}")))?;
            all_servers.push(server);
        }
        b = b.servers(all_servers.clone());
        if tls && !all_servers.iter().any(|s| s.scheme().is_tls()) {
            return Err(UsageError(
                "--cafile/--cert/--key/--insecure need a TLS server (mqtts://, wss:// or quic://)"
                    .into(),
            ));
        }
        b = b.protocol(self.protocol);
        if let Some(id) = &self.id {
            b = b.client_id(id.clone());
        }
        b = b.keep_alive(Duration::from_secs(u64::from(self.keepalive)));
        if self.disable_clean_session {
            b = b.clean_start(false);
        }
        let expiry = match self.session_expiry {
            Some(x) => Some(x),
            // mosquitto: -c without -x on MQTT 5 keeps the session for ever.
            None if self.disable_clean_session && self.protocol == ProtocolVersion::V5 => {
                Some(u32::MAX)
            }
            None => None,
        };
        if let Some(x) = expiry {
            if self.protocol == ProtocolVersion::V311 && self.session_expiry.is_some() {
                return Err(UsageError("-x/--session-expiry needs MQTT 5 (-V 5)".into()));
            }
            if self.protocol == ProtocolVersion::V5 {
                b = b.session_expiry(Duration::from_secs(u64::from(x)));
            }
        }
        if self.username.is_some() || self.password.is_some() {
            // -u/-P override the URLs' credentials, for every server; the half not given
            // comes from the first URL.
            let url_credentials = all_servers.first().and_then(|s| s.credentials());
            let user = match &self.username {
                Some(u) => Some(u.clone()),
                None => url_credentials.map(|c| c.username.to_string()),
            };
            let pass: Vec<u8> = match &self.password {
                Some(p) => p.clone().into_bytes(),
                None => url_credentials
                    .and_then(|c| c.password.as_ref())
                    .map(|p| p.expose().to_vec())
                    .unwrap_or_default(),
            };
            let Some(user) = user else {
                return Err(UsageError("-P/--pw needs a user name (-u)".into()));
            };
            b = b.credentials(user, pass);
        }
        if self.protocol == ProtocolVersion::V311
            && b.config().client_id.is_empty()
            && self.disable_clean_session
        {
            return Err(UsageError(
                "-c with MQTT 3.1.1 needs a client id (-i) to resume the session".into(),
            ));
        }
        // Transports (TCP, TLS, WebSocket) are chosen per server by scheme; the TLS files are
        // read and checked by `build`.
        if tls {
            let mut o = TlsOptions::new();
            if let Some(ca) = &self.cafile {
                o = o.ca_file(ca);
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                o = o.client_cert_files(cert, key);
            }
            if self.insecure {
                o = o.danger_accept_invalid_certs(true);
                // The library logs its warning; on the command line it is always shown.
                warn_insecure();
            }
            b = b.tls(o);
        }
        if let Some(topic) = &self.will_topic {
            steadfast::proto::topic::validate_name(topic)
                .map_err(|e| UsageError(format!("--will-topic {topic:?}: {e}")))?;
            let payload = self.will_payload.clone().unwrap_or_default().into_bytes();
            b = b.will(
                topic.clone(),
                bytes::Bytes::from(payload),
                self.will_qos,
                self.will_retain,
                None,
            );
        }
        b = b.backoff(self.backoff_policy()?);
        if let Some(n) = self.max_inflight {
            b = b.max_inflight(n);
        }
        if self.no_reconnect {
            b = b.auto_reconnect(false);
        } else {
            b = b.max_attempts(self.max_attempts);
        }
        Ok(Conn {
            builder: b,
            url_topic,
            protocol: self.protocol,
        })
    }

    /// `--store DIR`: opens the durable session store and gives it to the builder. Call it
    /// once, after [`ConnArgs::builder`]; its errors (a damaged store, a directory that cannot
    /// be used, a store held by another process) are runtime errors, exit 1.
    pub fn with_store(&self, b: ClientBuilder) -> Result<ClientBuilder, String> {
        match &self.store {
            None => Ok(b),
            Some(dir) => {
                let store = steadfast::store::DurableStore::open(dir)
                    .map_err(|e| format!("--store {}: {e}", dir.display()))?;
                Ok(b.store(store))
            }
        }
    }
}

/// `--insecure`: one warning line on stderr per process.
fn warn_insecure() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "steadfast: WARNING: TLS certificate verification is disabled (--insecure): the \
             connection is encrypted, but the broker is not authenticated"
        )
    });
}

/// The tokio runtime the connecting subcommands run on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// SIGINT (Ctrl-C) and SIGTERM.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside the runtime).
    pub fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Starts a graceful disconnect in the background; the events loop goes on until
/// `disconnected` (or a safety deadline well past the drain timeout).
pub fn start_close(
    client: &steadfast::Client,
    outcome: crate::events::Outcome,
) -> (crate::events::Outcome, tokio::time::Instant) {
    let c = client.clone();
    tokio::spawn(async move {
        let _ = c.disconnect().await;
    });
    (
        outcome,
        tokio::time::Instant::now() + Duration::from_secs(15),
    )
}

pub async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `%XX` escapes decoded; a bad escape is kept as written, bytes that are not UTF-8 become
/// U+FFFD.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn urls_split_into_server_and_topic() {
        let split = |u: &str| split_url(u).map_err(|e| e.0);
        assert_eq!(split("mqtt://h:1"), Ok(("mqtt://h:1".into(), None)));
        assert_eq!(split("mqtt://h:1/"), Ok(("mqtt://h:1/".into(), None)));
        assert_eq!(
            split("mqtt://u:p%40ss@h/a%2Fb/c?client_id=x"),
            Ok(("mqtt://u:p%40ss@h?client_id=x".into(), Some("a/b/c".into())))
        );
        assert_eq!(
            split("mqtts://[::1]:8883/sensors/#"),
            Ok(("mqtts://[::1]:8883".into(), Some("sensors/#".into())))
        );
        assert_eq!(
            split("quic://h/a/%23"),
            Ok(("quic://h".into(), Some("a/#".into())))
        );
        // WebSocket URLs keep their path: it is the HTTP path.
        assert_eq!(split("ws://h/mqtt"), Ok(("ws://h/mqtt".into(), None)));
        for (bad, why) in [
            ("h:1883", "not a URL"),
            ("http://h", "unsupported scheme"),
            ("mqtt://", "no host"),
            ("mqtt://u:secret@:1883", "no host"),
            ("mqtt:///topic", "no host"),
        ] {
            let e = split(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41"), "A");
    }
}
