//! [`ClientBuilder`]: every option of the resilience spec as a typed setter.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use steadfast_proto::backoff::BackoffPolicy;
use steadfast_proto::connection::ReasonHook;
use steadfast_proto::policy::ReasonClass;
use steadfast_proto::session::offline::Overflow;
use steadfast_proto::{
    ByteStr, Config, LastWill, Properties, ProtocolVersion, QoS, Reason, ServerAddr,
    ServerAddrError,
};

use crate::client::{Client, Events};
use crate::store::{SessionSnapshot, Store, StoreError};
#[cfg(feature = "tls")]
use crate::transport::TlsConfigError;
use crate::transport::{Connector, DefaultConnector};

/// Decodes an `application/x-www-form-urlencoded` query: `&`-separated `key=value` pairs, `+`
/// for a space, `%XX` escapes (a bad escape is kept as written; bytes that are not UTF-8
/// become U+FFFD). A pair without `=` has an empty value; empty pairs are skipped.
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = b
                        .get(i + 1..i + 3)
                        .and_then(|h| core::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    if let Some(v) = hex {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    out.push(b'%');
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k), decode(v))
    })
}

/// Why [`ClientBuilder::from_url`] or [`ClientBuilder::build`] failed: a URL or an option that
/// cannot be used. The cause is kept ([`std::error::Error::source`]) where there is one.
///
/// ```
/// use steadfast::{BuildError, ClientBuilder};
///
/// let e = ClientBuilder::from_url("mqtt://127.0.0.1?keep_alive=soon").unwrap_err();
/// assert!(matches!(e, BuildError::BadUrlOption { ref option, .. } if option == "keep_alive"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A server URL does not parse (the source says why; it never shows the password).
    Url(ServerAddrError),
    /// A query option of the URL has a value that cannot be used.
    BadUrlOption {
        /// The option (`keep_alive`, `version`, ...).
        option: String,
        /// Its value.
        value: String,
    },
    /// The URL has a query option this builder does not know.
    UnknownUrlOption(String),
    /// No server is configured.
    NoServer,
    /// A server whose scheme needs a cargo feature this build was made without (`mqtts://`
    /// needs `tls`, `ws://` needs `ws`, `quic://` needs `quic`); the message names it.
    FeatureMissing(&'static str),
    /// An option that needs MQTT 5, with the protocol set to MQTT 3.1.1.
    NeedsV5 {
        /// The option (`"session expiry"`, `"user properties"`, ...).
        option: &'static str,
    },
    /// MQTT 3.1.1 with Clean Start off and no client id: the session cannot be resumed.
    SessionNeedsClientId,
    /// The session store could not be loaded (the source is the [`StoreError`]).
    Store(StoreError),
    /// The TLS settings cannot be used (the source is the [`TlsConfigError`]).
    #[cfg(feature = "tls")]
    Tls(TlsConfigError),
    /// [`ClientBuilder::build`] was called outside a tokio runtime.
    NoRuntime,
    /// [`ClientBuilder::build_blocking`] could not start the client's runtime (the source is
    /// the operating system's error, for example no more threads).
    Runtime(steadfast_proto::IoError),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::Url(e) => core::fmt::Display::fmt(e, f),
            BuildError::BadUrlOption { option, value } => write!(f, "bad {option} {value:?}"),
            BuildError::UnknownUrlOption(o) => write!(f, "unknown URL option {o:?}"),
            BuildError::NoServer => f.write_str("no server configured"),
            BuildError::FeatureMissing(what) => f.write_str(what),
            BuildError::NeedsV5 { option } => {
                write!(f, "{option} needs MQTT 5, but the protocol is MQTT 3.1.1")
            }
            BuildError::SessionNeedsClientId => f.write_str(
                "MQTT 3.1.1 needs a client id to resume a session (clean_start false)",
            ),
            BuildError::Store(e) => write!(f, "session store: {e}"),
            #[cfg(feature = "tls")]
            BuildError::Tls(e) => write!(f, "TLS settings: {e}"),
            BuildError::NoRuntime => f.write_str(
                "build() must be called inside a tokio runtime (the client's driver is a tokio task); without one, use build_blocking()",
            ),
            BuildError::Runtime(e) => write!(f, "cannot start the client's runtime: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Url(e) => Some(e),
            BuildError::Store(e) => Some(e),
            #[cfg(feature = "tls")]
            BuildError::Tls(e) => Some(e),
            BuildError::Runtime(e) => Some(e),
            _ => None,
        }
    }
}

/// Builds a [`Client`] and its [`Events`] stream.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use steadfast::{ClientBuilder, QoS};
///
/// let (client, mut events) = ClientBuilder::from_url("mqtt://127.0.0.1:1883?client_id=sensor-1")?
///     .keep_alive(Duration::from_secs(30))
///     .max_attempts(10)
///     .build()?;
/// client.subscribe("sensors/+/temp", QoS::AtLeastOnce).await?;
/// while let Some(event) = events.recv().await {
///     println!("{event:?}");
/// }
/// # Ok(()) }
/// ```
pub struct ClientBuilder {
    pub(crate) config: Config,
    pub(crate) backoff: Option<Box<dyn BackoffPolicy>>,
    pub(crate) hook: Option<ReasonHook>,
    pub(crate) connector: Arc<dyn Connector>,
    /// The application gave its own connector ([`ClientBuilder::connector`]).
    pub(crate) custom_connector: bool,
    pub(crate) seed_pinned: bool,
    pub(crate) event_capacity: usize,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::transport::TlsOptions>,
    pub(crate) store: Option<Box<dyn Store>>,
    pub(crate) clean_start_explicit: bool,
    pub(crate) credentials: Option<steadfast_proto::connection::CredentialsProvider>,
    pub(crate) authenticator: Option<Box<dyn steadfast_proto::connection::Authenticator>>,
    pub(crate) snapshot: Option<SessionSnapshot>,
    /// The first server URL that did not parse, reported by `build`.
    pub(crate) server_error: Option<BuildError>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::new()
    }
}

impl core::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The default connector, one per process: every builder shares it, so a client allocates
/// nothing for it, and its TLS context (the system roots) is loaded once, not per client.
fn default_connector() -> Arc<dyn Connector> {
    shared_default_connector().clone()
}

fn shared_default_connector() -> &'static Arc<DefaultConnector> {
    static DEFAULT: OnceLock<Arc<DefaultConnector>> = OnceLock::new();
    DEFAULT.get_or_init(|| Arc::new(DefaultConnector::new()))
}

fn secs_u32(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

impl ClientBuilder {
    /// A builder for `mqtt://127.0.0.1:1883` with every default of the spec.
    pub fn new() -> Self {
        ClientBuilder {
            config: Config::default(),
            backoff: None,
            hook: None,
            connector: default_connector(),
            custom_connector: false,
            seed_pinned: false,
            event_capacity: 1024,
            #[cfg(feature = "tls")]
            tls: None,
            store: None,
            clean_start_explicit: false,
            credentials: None,
            authenticator: None,
            snapshot: None,
            server_error: None,
        }
    }

    /// A builder from a URL: `mqtt://[user[:pass]@]host[:port][?client_id=..&keep_alive=..&clean_start=..&version=5|311]`.
    /// The URL without its query becomes the one server, as with [`server`](Self::server):
    /// its user and password are sent to that server unless explicit credentials are set.
    /// Errors never repeat the password.
    pub fn from_url(url: &str) -> Result<Self, BuildError> {
        let mut b = ClientBuilder::new();
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let server = ServerAddr::parse_url(base).map_err(BuildError::Url)?;
        b.config.servers = vec![server];
        for (k, v) in form_pairs(query.unwrap_or_default()) {
            match k.as_str() {
                "client_id" | "clientId" => b = b.client_id(v),
                "keep_alive" => {
                    let s: u64 = v.parse().map_err(|_| BuildError::BadUrlOption {
                        option: k.to_string(),
                        value: v.to_string(),
                    })?;
                    b = b.keep_alive(Duration::from_secs(s));
                }
                "clean_start" | "clean" => b = b.clean_start(matches!(v.as_str(), "true" | "1")),
                "version" | "protocol" => {
                    b = b.protocol(parse_version(&v).ok_or_else(|| BuildError::BadUrlOption {
                        option: k.to_string(),
                        value: v.to_string(),
                    })?)
                }
                other => return Err(BuildError::UnknownUrlOption(other.to_string())),
            }
        }
        Ok(b)
    }

    /// Replaces the server list with one server URL:
    /// `scheme://[user[:password]@]host[:port][/path]` (see [`ServerAddr::parse_url`]).
    /// A URL that does not parse is reported by [`build`](Self::build). The URL's user and
    /// password are sent in CONNECT to this server unless explicit credentials are set
    /// ([`credentials`](Self::credentials), [`credentials_provider`](Self::credentials_provider),
    /// or the user info of [`from_url`](Self::from_url)), which win. They never appear in
    /// `Debug`, events or errors.
    pub fn server(mut self, url: impl AsRef<str>) -> Self {
        self.config.servers.clear();
        self.add_server(url)
    }

    /// Adds a failover server URL (as [`server`](Self::server)); a failed attempt moves to the
    /// next one.
    pub fn add_server(mut self, url: impl AsRef<str>) -> Self {
        match ServerAddr::parse_url(url.as_ref()) {
            Ok(addr) => self.config.servers.push(addr),
            Err(e) => {
                self.server_error.get_or_insert(BuildError::Url(e));
            }
        }
        self
    }

    /// Replaces the server list with these parsed servers.
    pub fn servers(mut self, servers: impl IntoIterator<Item = ServerAddr>) -> Self {
        self.config.servers = servers.into_iter().collect();
        self
    }

    /// The client identifier. Empty (the default) lets an MQTT 5 broker assign one, which is
    /// then reused on every reconnect.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = ByteStr::from(id.into());
        self
    }

    /// MQTT 5.0 (default) or 3.1.1.
    pub fn protocol(mut self, v: ProtocolVersion) -> Self {
        self.config.protocol = v;
        self
    }

    /// Clean Start for the first connect (default true).
    pub fn clean_start(mut self, on: bool) -> Self {
        self.config.clean_start = on;
        self.clean_start_explicit = true;
        self
    }

    /// Keep-alive (default 60 s; whole seconds on the wire; zero turns it off).
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.config.keep_alive = d;
        self
    }

    /// How long to wait for any packet after a PINGREQ (default: half the keep-alive, at most 30 s).
    pub fn ping_timeout(mut self, d: Duration) -> Self {
        self.config.ping_timeout = Some(d);
        self
    }

    /// Timeout of a whole connect attempt (default 20 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// How long a connection must stay up before the backoff resets (default 30 s).
    pub fn stable_after(mut self, d: Duration) -> Self {
        self.config.stable_after = d;
        self
    }

    /// Go dormant after `n` consecutive failed attempts, the first included (0 = never).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = if n == 0 { None } else { Some(n) };
        self
    }

    /// Turn automatic reconnection on (default) or off; off goes dormant at the first failure.
    pub fn auto_reconnect(mut self, on: bool) -> Self {
        self.config.auto_reconnect = on;
        self
    }

    /// The backoff policy (default: exponential with rising decorrelated jitter, 1 s to 60 s,
    /// [`backoff::default_policy`](crate::backoff::default_policy)).
    pub fn backoff(mut self, policy: impl BackoffPolicy + 'static) -> Self {
        self.backoff = Some(Box::new(policy));
        self
    }

    /// Pins the jitter RNG's seed (tests). By default each client seeds from the OS.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.config.rng_seed = seed;
        self.seed_pinned = true;
        self
    }

    /// Overrides how refusals and disconnects are treated (see [`ReasonHook`]).
    pub fn reason_hook(
        mut self,
        hook: impl FnMut(&Reason, ReasonClass) -> ReasonClass + Send + 'static,
    ) -> Self {
        self.hook = Some(Box::new(hook));
        self
    }

    /// User name and password. Never printed by `Debug`, logs or events.
    pub fn credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<Vec<u8>>,
    ) -> Self {
        self.config.username = Some(ByteStr::from(username.into()));
        let p: Vec<u8> = password.into();
        self.config.password = if p.is_empty() {
            None
        } else {
            Some(Bytes::from(p))
        };
        self
    }

    /// The will message, with an optional MQTT 5 will delay.
    pub fn will(
        mut self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
        delay: Option<Duration>,
    ) -> Self {
        let properties = Properties {
            will_delay_interval: delay.map(secs_u32),
            ..Properties::default()
        };
        self.config.will = Some(LastWill {
            topic: ByteStr::from(topic.into()),
            payload: payload.into(),
            qos,
            retain,
            properties: properties.into(),
        });
        self
    }

    /// MQTT 5 Session Expiry Interval (default zero: the session ends with the connection).
    pub fn session_expiry(mut self, d: Duration) -> Self {
        self.config.session_expiry_interval = secs_u32(d);
        self
    }

    /// Outgoing QoS 1/2 messages in flight at most (at least 1). With MQTT 5 the broker's
    /// Receive Maximum bounds it too. Unset, MQTT 5 follows the broker's Receive Maximum alone
    /// and MQTT 3.1.1, which has none, sends at most
    /// [`DEFAULT_V311_INFLIGHT`](crate::proto::DEFAULT_V311_INFLIGHT) (10) at once.
    pub fn max_inflight(mut self, n: u16) -> Self {
        self.config.max_inflight = Some(n.max(1));
        self
    }

    /// How many closes by the broker in a row, each with the same message as the oldest
    /// unacknowledged one, make it a poison message that is failed with
    /// [`PublishError::Poison`](crate::proto::PublishError::Poison) (default 3; 0 = never).
    pub fn poison_after(mut self, closes: u32) -> Self {
        self.config.poison_after = closes;
        self
    }

    /// Our Receive Maximum (MQTT 5; default 65,535): the broker sends at most this many QoS 1
    /// and 2 messages we have not acknowledged. With [`ClientBuilder::manual_acks`] it also
    /// bounds, with MQTT 3.1.1 too, how many messages may wait for the application's
    /// acknowledgement (see there).
    pub fn receive_maximum(mut self, n: u16) -> Self {
        self.config.receive_maximum = n.max(1);
        self
    }

    /// Manual acknowledgements (default off): the PUBACK (QoS 1) or PUBREC (QoS 2) of an
    /// incoming message goes out only when the application calls [`Client::ack`](crate::Client::ack)
    /// with it, so a consumer that dies before it acknowledged a message gets it again (from
    /// a broker that kept the session: a client id, and Session Expiry with MQTT 5 or Clean
    /// Session off with 3.1.1). With a [`store`](ClientBuilder::store), a QoS 2 message that
    /// was acknowledged is never handed over again, even across a crash: exactly-once
    /// processing (see `docs/acks.md` for the exact guarantee).
    ///
    /// - Acknowledgements go out in arrival order, per QoS, as MQTT requires: one that comes
    ///   early waits for those of earlier messages. A message never acknowledged holds back
    ///   the acknowledgements after it (until the connection closes).
    /// - An acknowledgement of a message from a connection that has closed fails with
    ///   [`AckError::ConnectionClosed`](crate::AckError::ConnectionClosed) and sends nothing:
    ///   the broker delivers the message again, and that delivery needs its own ack.
    /// - At most [`receive_maximum`](ClientBuilder::receive_maximum) messages wait for their
    ///   acknowledgement; a broker that sends more gets the connection closed with Receive
    ///   Maximum exceeded (0x93). With MQTT 5 the broker knows the bound; MQTT 3.1.1 cannot
    ///   tell it, so there the broker's own in-flight limit must be the smaller (Mosquitto's
    ///   `max_inflight_messages` is 20 by default).
    /// - A message the client drops because nobody can receive it (its [`Events`](crate::Events)
    ///   or [`Subscription`](crate::Subscription) was dropped while the client runs) is
    ///   acknowledged by the client, as without manual acks.
    ///
    /// QoS 0 messages need no acknowledgement.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use steadfast::{ClientBuilder, QoS};
    /// let (client, _events) = ClientBuilder::from_url("mqtt://127.0.0.1:1883")?
    ///     .client_id("worker-1")
    ///     .clean_start(false)
    ///     .session_expiry(Duration::from_secs(3600))
    ///     .manual_acks(true)
    ///     .build()?;
    /// let mut jobs = client.subscribe_stream("jobs/#", QoS::ExactlyOnce).await?;
    /// while let Some(job) = jobs.recv().await {
    ///     println!("processing {}", job.topic()); // a crash here: the job comes again
    ///     client.ack(&job).await?;                // from here on it does not
    /// }
    /// # Ok(()) }
    /// ```
    pub fn manual_acks(mut self, on: bool) -> Self {
        self.config.manual_acks = on;
        self
    }

    /// The largest packet we accept (default 16 MiB). Over WebSocket it also bounds each
    /// message and frame from the server (see
    /// [`DefaultConnector::websocket_max_message_size`]).
    pub fn maximum_packet_size(mut self, bytes: u32) -> Self {
        self.config.maximum_packet_size = bytes.max(2);
        self
    }

    /// Topic aliases accepted from the broker (MQTT 5, default 16).
    pub fn topic_alias_maximum(mut self, n: u16) -> Self {
        self.config.topic_alias_maximum = n;
        self
    }

    /// Use outgoing topic aliases when the broker allows them (MQTT 5, default off).
    pub fn outgoing_topic_aliases(mut self, on: bool) -> Self {
        self.config.outgoing_topic_aliases = on;
        self
    }

    /// Ask the broker for Response Information (MQTT 5 request/response).
    pub fn request_response_information(mut self, on: bool) -> Self {
        self.config.request_response_information = on;
        self
    }

    /// Adds a user property to CONNECT (MQTT 5).
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config
            .user_properties
            .push((ByteStr::from(key.into()), ByteStr::from(value.into())));
        self
    }

    /// Offline queue bounds (defaults 10,000 messages and 64 MiB).
    pub fn offline_queue(mut self, max_messages: usize, max_bytes: usize) -> Self {
        self.config.queue.max_messages = max_messages;
        self.config.queue.max_bytes = max_bytes;
        self
    }

    /// What a full offline queue does (default [`Overflow::Backpressure`]).
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.config.queue.overflow = policy;
        self
    }

    /// Queue QoS 0 messages while disconnected (default true).
    pub fn queue_qos0(mut self, on: bool) -> Self {
        self.config.queue.queue_qos0 = on;
        self
    }

    /// Republish unacknowledged messages when the broker lost the session (default true).
    pub fn republish_on_session_loss(mut self, on: bool) -> Self {
        self.config.republish_on_session_loss = on;
        self
    }

    /// Assign MQTT 5 subscription identifiers (default true).
    pub fn subscription_identifiers(mut self, on: bool) -> Self {
        self.config.subscription_identifiers = on;
        self
    }

    /// How long `disconnect` waits for in-flight messages (default 5 s).
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.config.drain_timeout = d;
        self
    }

    /// Redirects followed in a row (default 3).
    pub fn max_redirects(mut self, n: u32) -> Self {
        self.config.max_redirects = n;
        self
    }

    /// Keeps the session in `store` so it survives a crash or a restart (see [`crate::store`]).
    /// On start, a stored session is resumed: its client id is used (unless one was configured,
    /// which must then match), Clean Start is off unless set explicitly, in-flight messages are
    /// resent and the offline queue is drained.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Box::new(store));
        self
    }

    /// Asks `provider` for fresh credentials before every connect attempt. A "bad user name or
    /// password" or "not authorized" refusal is then retried once with new credentials before it
    /// is fatal: a token that expired while offline is replaced, not a reason to stop.
    pub fn credentials_provider(
        mut self,
        mut provider: impl FnMut() -> (String, Vec<u8>) + Send + 'static,
    ) -> Self {
        self.credentials = Some(Box::new(move || {
            let (user, pass) = provider();
            let user = (!user.is_empty()).then(|| ByteStr::from(user));
            let pass = (!pass.is_empty()).then(|| Bytes::from(pass));
            (user, pass)
        }));
        self
    }

    /// MQTT 5 enhanced authentication: `auth` answers the broker's AUTH challenges, at connect
    /// and on [`Client::reauthenticate`].
    pub fn authenticator(
        mut self,
        auth: impl steadfast_proto::connection::Authenticator + 'static,
    ) -> Self {
        self.authenticator = Some(Box::new(auth));
        self
    }

    /// The transport connector (default [`DefaultConnector`]: TCP, TLS or WebSocket by URL
    /// scheme). TLS options set on this builder replace it with a configured
    /// [`DefaultConnector`] at [`build`](Self::build). A connector given here keeps its own
    /// WebSocket message limit.
    pub fn connector(mut self, c: impl Connector) -> Self {
        self.connector = Arc::new(c);
        self.custom_connector = true;
        self
    }

    /// How many events wait for the application (default 1024): messages not claimed by a
    /// [`Subscription`](crate::Subscription), and separately lifecycle events. Messages are
    /// never dropped: when the application falls behind, the client stops decoding input
    /// rather than buffering without bound. Lifecycle events never hold the client back: the
    /// oldest are dropped and counted ([`ClientEvent::Lagged`](crate::ClientEvent::Lagged)).
    /// See [`Events`](crate::Events) for what an application must read.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Validates the options and spawns the driver task on the current tokio runtime.
    /// Connecting starts at once, and the first connect is retried like any other.
    ///
    /// Outside a tokio runtime this is an error, not a panic (for programs without one, the
    /// driver needs a runtime of its own).
    pub fn build(mut self) -> Result<(Client, Events), BuildError> {
        if let Some(e) = self.server_error.take() {
            return Err(e);
        }
        let c = &self.config;
        if c.servers.is_empty() {
            return Err(BuildError::NoServer);
        }
        // The default connector has a transport for each scheme whose feature is compiled in;
        // a connector of the application's own may have others (unless TLS options set here
        // replace it with the default one).
        let default_transports = !self.custom_connector || self.tls_set();
        if let Some(missing) = c
            .servers
            .iter()
            .find_map(|s| crate::transport::missing_feature(s.scheme()))
            .filter(|_| default_transports)
        {
            return Err(BuildError::FeatureMissing(missing));
        }
        if c.protocol == ProtocolVersion::V311 {
            let v5_only = [
                (c.session_expiry_interval != 0, "session expiry"),
                (!c.user_properties.is_empty(), "user properties"),
                (
                    c.request_response_information,
                    "request/response information",
                ),
                (c.outgoing_topic_aliases, "topic aliases"),
                (
                    c.will.as_ref().is_some_and(|w| !w.properties.is_empty()),
                    "will properties (will delay)",
                ),
            ];
            if let Some((_, option)) = v5_only.iter().find(|(used, _)| *used) {
                return Err(BuildError::NeedsV5 { option });
            }
            if c.client_id.is_empty() && !c.clean_start {
                return Err(BuildError::SessionNeedsClientId);
            }
            self.config.topic_alias_maximum = 0;
        }
        if self.config.protocol == ProtocolVersion::V311 && self.authenticator.is_some() {
            return Err(BuildError::NeedsV5 {
                option: "enhanced authentication",
            });
        }
        if let Some(store) = self.store.as_mut() {
            let snapshot = store
                .load(self.config.client_id.as_str())
                .map_err(BuildError::Store)?;
            let resumes = snapshot.client_id.is_some()
                && (!snapshot.outgoing.is_empty()
                    || !snapshot.subscriptions.is_empty()
                    || !snapshot.incoming_qos2.is_empty());
            if self.config.client_id.is_empty() {
                if let Some(id) = &snapshot.client_id {
                    self.config.client_id = id.clone();
                }
            }
            if resumes && !self.clean_start_explicit {
                self.config.clean_start = false;
            }
            self.config.persistence = true;
            self.snapshot = Some(snapshot);
        }
        if self.config.client_id.is_empty() && self.config.protocol == ProtocolVersion::V311 {
            self.config.client_id = ByteStr::from(generated_client_id());
        }
        if !self.seed_pinned {
            self.config.rng_seed = os_seed();
        }
        // WebSocket messages from the server are bounded by our maximum packet size.
        let ws_max = usize::try_from(self.config.maximum_packet_size).unwrap_or(usize::MAX);
        // QUIC's idle timeout stays above the MQTT keep-alive, which decides liveness.
        let quic_idle = quic_idle_for(self.config.keep_alive);
        if let Some(connector) = self.tls_connector()? {
            self.connector = Arc::new(
                connector
                    .websocket_max_message_size(ws_max)
                    .quic_idle_timeout(quic_idle),
            );
        } else if !self.custom_connector {
            let shared = shared_default_connector();
            if shared.websocket_max_message() != ws_max || shared.quic_idle() != quic_idle {
                // Same shared TLS context, other limits.
                self.connector = Arc::new(
                    (**shared)
                        .clone()
                        .websocket_max_message_size(ws_max)
                        .quic_idle_timeout(quic_idle),
                );
            }
        }
        // Checked last, so a configuration error is reported as such, runtime or not.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BuildError::NoRuntime);
        }
        Ok(crate::driver::spawn(self))
    }
}

impl ClientBuilder {
    /// Whether TLS options were set on this builder.
    fn tls_set(&self) -> bool {
        #[cfg(feature = "tls")]
        {
            self.tls.is_some()
        }
        #[cfg(not(feature = "tls"))]
        {
            false
        }
    }

    /// The connector of the TLS options set on this builder, if any.
    #[cfg(feature = "tls")]
    fn tls_connector(&mut self) -> Result<Option<DefaultConnector>, BuildError> {
        match self.tls.take() {
            Some(tls) => DefaultConnector::with_tls(tls)
                .map(Some)
                .map_err(BuildError::Tls),
            None => Ok(None),
        }
    }

    /// Without the `tls` feature there are no TLS options.
    #[cfg(not(feature = "tls"))]
    fn tls_connector(&mut self) -> Result<Option<DefaultConnector>, BuildError> {
        Ok(None)
    }
}

/// The QUIC idle timeout for keep-alive `keep_alive` (see
/// [`DefaultConnector::quic_idle_timeout`]).
fn quic_idle_for(keep_alive: Duration) -> Option<Duration> {
    #[cfg(feature = "quic")]
    {
        crate::transport::quic_idle_timeout(keep_alive)
    }
    #[cfg(not(feature = "quic"))]
    {
        let _ = keep_alive;
        None
    }
}

pub(crate) fn parse_version(v: &str) -> Option<ProtocolVersion> {
    match v {
        "5" | "mqttv5" | "5.0" => Some(ProtocolVersion::V5),
        "311" | "mqttv311" | "3.1.1" | "4" => Some(ProtocolVersion::V311),
        _ => None,
    }
}

/// A random seed from the operating system's generator (`getrandom`). Should the OS refuse
/// (no entropy source in a sandbox), the seed falls back to std's per-process random hash keys
/// mixed with the time and pid: still distinct per client, never a panic.
pub(crate) fn os_seed() -> u64 {
    getrandom::u64().unwrap_or_else(|_| fallback_seed())
}

fn fallback_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

pub(crate) fn generated_client_id() -> String {
    format!("steadfast-{:012x}", os_seed() & 0xFFFF_FFFF_FFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the `quic` feature a `quic://` server is refused by `build`, naming the
    /// feature; with it, it is accepted.
    #[tokio::test]
    async fn quic_servers_need_the_quic_feature() {
        let built = ClientBuilder::from_url("quic://127.0.0.1:9")
            .expect("parses either way")
            .build();
        let refusal = built.err().map(|e| e.to_string());
        if cfg!(feature = "quic") {
            assert_eq!(refusal, None);
        } else {
            let e = refusal.unwrap_or_default();
            assert!(e.contains("`quic` feature"), "{e}");
        }
    }

    /// Each scheme whose feature is not compiled in is refused by `build`, naming the feature.
    #[tokio::test]
    async fn schemes_need_their_features() {
        let cases = [
            ("mqtts://127.0.0.1:9", cfg!(feature = "tls"), "`tls`"),
            ("ws://127.0.0.1:9", cfg!(feature = "ws"), "`ws`"),
            (
                "wss://127.0.0.1:9",
                cfg!(all(feature = "ws", feature = "tls")),
                "`ws` and `tls`",
            ),
            ("mqtt://127.0.0.1:9", true, ""),
        ];
        for (url, available, feature) in cases {
            let built = ClientBuilder::from_url(url).expect("parses").build();
            match (available, built) {
                (true, Ok(_)) => {}
                (false, Err(e)) => assert!(e.to_string().contains(feature), "{url}: {e}"),
                (true, Err(e)) => panic!("{url}: {e}"),
                (false, Ok(_)) => panic!("{url} accepted without its feature"),
            }
        }
    }

    /// A connector of the application's own decides for itself which schemes it serves.
    #[tokio::test]
    async fn a_custom_connector_may_serve_any_scheme() {
        struct Refuses;
        impl Connector for Refuses {
            fn connect(&self, _: &ServerAddr) -> crate::transport::ConnectFuture {
                Box::pin(async { Err(steadfast_proto::TransportError::Closed) })
            }
        }
        for url in [
            "ws://127.0.0.1:9",
            "wss://127.0.0.1:9",
            "quic://127.0.0.1:9",
        ] {
            let built = ClientBuilder::from_url(url)
                .expect("parses")
                .connector(Refuses)
                .build();
            assert!(built.is_ok(), "{url}: {:?}", built.err());
        }
    }

    /// The query of `from_url`: form-encoded (`+` is a space, `%XX` escapes), unknown keys
    /// refused.
    #[test]
    fn url_query_options() {
        let b = ClientBuilder::from_url(
            "mqtt://h?client_id=a+b%2Fc&keep_alive=7&clean_start=0&version=311",
        )
        .unwrap();
        assert_eq!(b.config().client_id.as_str(), "a b/c");
        assert_eq!(b.config().keep_alive, Duration::from_secs(7));
        assert!(!b.config().clean_start);
        assert_eq!(b.config().protocol, ProtocolVersion::V311);
        let b = ClientBuilder::from_url("mqtt://h?clientId=%zz&").unwrap();
        assert_eq!(b.config().client_id.as_str(), "%zz");
        for bad in [
            "mqtt://h?keep_alive=soon",
            "mqtt://h?version=6",
            "mqtt://h?colour=red",
        ] {
            assert!(ClientBuilder::from_url(bad).is_err(), "{bad}");
        }
    }

    /// Each refusal is its own variant, and a refusal with a cause keeps it as its source.
    #[test]
    fn build_errors_are_typed_and_keep_their_cause() {
        use std::error::Error;
        let bad = |url: &str| ClientBuilder::from_url(url).unwrap_err();
        assert_eq!(
            bad("mqtt://h?keep_alive=soon"),
            BuildError::BadUrlOption {
                option: "keep_alive".into(),
                value: "soon".into()
            }
        );
        assert!(matches!(
            bad("mqtt://h?version=9"),
            BuildError::BadUrlOption { ref option, .. } if option == "version"
        ));
        assert_eq!(
            bad("mqtt://h?colour=blue"),
            BuildError::UnknownUrlOption("colour".into())
        );
        let url = bad("gopher://user:secret@h");
        assert!(matches!(url, BuildError::Url(_)), "{url:?}");
        let source = url.source().expect("the URL error is the source");
        assert!(source.is::<ServerAddrError>());
        assert!(!url.to_string().contains("secret"), "{url}");
        assert!(!format!("{url:?}").contains("secret"), "{url:?}");

        // A bad `server()` is reported by build, as the same variant.
        let late = ClientBuilder::new().server("nope://x").build().unwrap_err();
        assert!(matches!(late, BuildError::Url(_)), "{late:?}");
        assert_eq!(
            ClientBuilder::new().servers([]).build().unwrap_err(),
            BuildError::NoServer
        );
        let v311 = || ClientBuilder::new().protocol(ProtocolVersion::V311);
        assert_eq!(
            v311()
                .session_expiry(Duration::from_secs(60))
                .build()
                .unwrap_err(),
            BuildError::NeedsV5 {
                option: "session expiry"
            }
        );
        assert_eq!(
            v311().clean_start(false).build().unwrap_err(),
            BuildError::SessionNeedsClientId
        );
        #[cfg(feature = "tls")]
        {
            let tls = ClientBuilder::new()
                .ca_file("/nonexistent/steadfast-ca.pem")
                .build()
                .unwrap_err();
            assert!(matches!(tls, BuildError::Tls(_)), "{tls:?}");
            assert!(tls.source().is_some_and(|s| s.is::<TlsConfigError>()));
        }
    }

    #[test]
    fn build_outside_a_runtime_is_an_error_not_a_panic() {
        let e = ClientBuilder::new()
            .server("mqtt://127.0.0.1:1883")
            .build()
            .unwrap_err();
        assert_eq!(e, BuildError::NoRuntime);
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }
}
