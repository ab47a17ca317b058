//! Every option of the resilience spec, with its default.

use std::time::Duration;

use bytes::Bytes;

use crate::session::offline::QueueLimits;
use crate::{ByteStr, LastWill, ProtocolVersion, ServerAddr};

/// Configuration of a [`crate::Connection`]. Durations are [`Duration`]s; the defaults are those
/// of the behaviour spec.
#[derive(Clone)]
pub struct Config {
    /// Protocol version (default MQTT 5.0).
    pub protocol: ProtocolVersion,
    /// Servers, tried in order; a failed attempt moves to the next. A server's credentials
    /// (from its URL) are sent in CONNECT when `username` and `password` are both unset.
    pub servers: Vec<ServerAddr>,
    /// Client identifier. Empty asks the broker to assign one (MQTT 5), and the assigned one is
    /// reused on every reconnect.
    pub client_id: ByteStr,
    /// Clean Start for the first connect (default true). MQTT 5 reconnects use Clean Start 0 so a
    /// session with a non-zero expiry is resumed; MQTT 3.1.1 keeps this value on every connect.
    pub clean_start: bool,
    /// Keep-alive (default 60 s; zero turns it off). The broker's Server Keep Alive replaces it.
    pub keep_alive: Duration,
    /// How long to wait for any packet after a PINGREQ. `None`: half the keep-alive, at most 30 s.
    pub ping_timeout: Option<Duration>,
    /// Timeout for a whole connect: transport, TLS, CONNECT to CONNACK (default 20 s).
    pub connect_timeout: Duration,
    /// A connection up this long resets the backoff (default 30 s).
    pub stable_after: Duration,
    /// Consecutive failed attempts (the first included) before going dormant; `None` = never.
    pub max_attempts: Option<u32>,
    /// Reconnect after a failure or a loss (default true). When false the client goes dormant at
    /// the first failure or loss.
    pub auto_reconnect: bool,
    /// Redirects (0x9C / 0x9D with a Server Reference) followed in a row (default 3).
    pub max_redirects: u32,
    /// User name. When set (or `password` is), it and `password` are sent to every server, in
    /// place of any credentials in the server's URL.
    pub username: Option<ByteStr>,
    /// Password. Never printed by `Debug`.
    pub password: Option<Bytes>,
    /// The will.
    pub will: Option<LastWill>,
    /// MQTT 5 Session Expiry Interval in seconds (default 0: the session ends with the connection).
    pub session_expiry_interval: u32,
    /// Our Receive Maximum (MQTT 5; default 65,535): the broker sends at most this many QoS 1
    /// and 2 messages that we have not acknowledged (QoS 2: not completed). With
    /// [`Config::manual_acks`] it also bounds, with MQTT 3.1.1 too, the messages held for the
    /// application: a broker that sends more closes the connection with Receive Maximum
    /// exceeded (0x93).
    pub receive_maximum: u16,
    /// Manual acknowledgements (default false): the PUBACK (QoS 1) or PUBREC (QoS 2) of an
    /// incoming message goes out only when the application passes the message's
    /// [`crate::AckToken`] to [`crate::Connection::ack`], and in arrival order (an
    /// acknowledgement waits for those of earlier messages of the same QoS). A message not
    /// acknowledged when the link closes is delivered again by a broker that kept the session.
    pub manual_acks: bool,
    /// Outgoing QoS 1/2 messages in flight at most. `None` (the default): MQTT 5 is bounded by
    /// the broker's Receive Maximum alone, MQTT 3.1.1, which has no Receive Maximum, by
    /// [`DEFAULT_V311_INFLIGHT`]. With MQTT 5 the smaller of this and the broker's Receive
    /// Maximum applies. Zero is taken as one.
    pub max_inflight: Option<u16>,
    /// A message that is the oldest unacknowledged one each time the broker closes the
    /// connection, this many times in a row with no acknowledgement of it in between, is
    /// failed with [`crate::PublishError::Poison`] (default 3; zero turns the check off).
    pub poison_after: u32,
    /// The largest packet we accept (default 16 MiB). Advertised in MQTT 5, enforced by the
    /// decoder in both versions before any body is buffered.
    pub maximum_packet_size: u32,
    /// Topic aliases we accept from the broker (MQTT 5; default 16).
    pub topic_alias_maximum: u16,
    /// Use outgoing topic aliases when the broker allows them (default false).
    pub outgoing_topic_aliases: bool,
    /// Ask for Response Information (MQTT 5).
    pub request_response_information: bool,
    /// Request Problem Information (MQTT 5); `None` leaves the broker's default (on).
    pub request_problem_information: Option<bool>,
    /// User properties sent in CONNECT (MQTT 5).
    pub user_properties: Vec<(ByteStr, ByteStr)>,
    /// Offline queue bounds and overflow policy.
    pub queue: QueueLimits,
    /// After a session loss, republish unacknowledged messages as new ones (default true).
    pub republish_on_session_loss: bool,
    /// Assign MQTT 5 subscription identifiers (default true, when the broker supports them).
    pub subscription_identifiers: bool,
    /// How long `disconnect` waits for in-flight messages (default 5 s).
    pub drain_timeout: Duration,
    /// Report every session change as an [`crate::Event::Store`] operation for a durable store
    /// (default false: the in-memory session needs none).
    pub persistence: bool,
    /// MQTT 5 enhanced authentication method (sent in CONNECT; an [`crate::connection::Authenticator`]
    /// answers the broker's challenges).
    pub authentication_method: Option<ByteStr>,
    /// Seed of the jitter RNG. Different clients must use different seeds (the driver seeds from
    /// the OS); tests pin it.
    pub rng_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            protocol: ProtocolVersion::V5,
            servers: vec![ServerAddr::local_default()],
            client_id: ByteStr::new(),
            clean_start: true,
            keep_alive: Duration::from_secs(60),
            ping_timeout: None,
            connect_timeout: Duration::from_secs(20),
            stable_after: Duration::from_secs(30),
            max_attempts: None,
            auto_reconnect: true,
            max_redirects: 3,
            username: None,
            password: None,
            will: None,
            session_expiry_interval: 0,
            receive_maximum: u16::MAX,
            manual_acks: false,
            max_inflight: None,
            poison_after: 3,
            maximum_packet_size: 16 << 20,
            topic_alias_maximum: 16,
            outgoing_topic_aliases: false,
            request_response_information: false,
            request_problem_information: None,
            user_properties: Vec::new(),
            queue: QueueLimits::default(),
            republish_on_session_loss: true,
            subscription_identifiers: true,
            drain_timeout: Duration::from_secs(5),
            persistence: false,
            authentication_method: None,
            rng_seed: 0x5EED,
        }
    }
}

/// The in-flight window of MQTT 3.1.1 connections when [`Config::max_inflight`] is not set.
///
/// MQTT 3.1.1 cannot announce how many unacknowledged messages a broker takes, and some close
/// the connection beyond their limit (rmqtt at 16 QoS 2 messages). The defaults of other
/// clients: Paho C's synchronous MQTTClient 10 (its MQTTAsync 65,535, no real bound),
/// libmosquitto 20, rumqttc 100. steadfast follows Paho C's 10, the only one below the
/// smallest broker limit known (rmqtt 16; Mosquitto and VerneMQ 20).
pub const DEFAULT_V311_INFLIGHT: u16 = 10;

impl Config {
    /// The in-flight window configured for this protocol version, before the broker's Receive
    /// Maximum (MQTT 5) is applied.
    pub fn inflight_window(&self) -> u16 {
        match (self.max_inflight, self.protocol) {
            (Some(n), _) => n.max(1),
            (None, ProtocolVersion::V311) => DEFAULT_V311_INFLIGHT,
            (None, ProtocolVersion::V5) => u16::MAX,
        }
    }

    /// The ping timeout in force for `keep_alive`.
    pub fn ping_timeout_for(&self, keep_alive: Duration) -> Duration {
        self.ping_timeout
            .unwrap_or_else(|| (keep_alive / 2).min(Duration::from_secs(30)))
    }
}

impl core::fmt::Debug for Config {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Config")
            .field("protocol", &self.protocol)
            .field("servers", &self.servers)
            .field("client_id", &self.client_id)
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("connect_timeout", &self.connect_timeout)
            .field("stable_after", &self.stable_after)
            .field("max_attempts", &self.max_attempts)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("session_expiry_interval", &self.session_expiry_interval)
            .field("max_inflight", &self.max_inflight)
            .field("manual_acks", &self.manual_acks)
            .field("poison_after", &self.poison_after)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}
