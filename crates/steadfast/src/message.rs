//! [`Message`]: an outgoing application message and its builder.

use std::time::Duration;

use bytes::Bytes;
use steadfast_proto::topic::{TopicError, TopicName};
use steadfast_proto::{ByteStr, Properties, Props, Publish, QoS};

/// The MQTT 5 Payload Format Indicator of a [`Message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadFormat {
    /// Unspecified bytes (0; what no indicator means too).
    Bytes,
    /// UTF-8 text (1): a broker may check it, and a receiver may rely on it.
    Utf8,
}

/// An outgoing application message: a topic, a payload, a QoS, the retain flag and the MQTT 5
/// properties an application sets. Send it with [`Client::send`](crate::Client::send) or
/// [`Client::publish_accepted`](crate::Client::publish_accepted).
///
/// The topic is checked here: an invalid one (a wildcard, U+0000, empty, over 65,535 bytes) is
/// kept as an error that the send returns as
/// [`ClientError::InvalidTopic`](crate::ClientError::InvalidTopic), before anything reaches the
/// client's task. The same holds for the response topic.
///
/// ```
/// use std::time::Duration;
/// use steadfast::{Message, PayloadFormat, QoS};
///
/// let request = Message::new("rpc/add", r#"{"a":1,"b":2}"#)
///     .qos(QoS::AtLeastOnce)
///     .content_type("application/json")
///     .payload_format(PayloadFormat::Utf8)
///     .response_topic("rpc/add/replies/client-7")
///     .correlation_data(&b"req-42"[..])
///     .user_property("trace", "abc123")
///     .message_expiry(Duration::from_secs(30));
/// assert_eq!(request.topic(), "rpc/add");
/// assert!(request.check().is_ok());
///
/// let bad = Message::new("sensors/+/temp", "21.5"); // a wildcard in a topic name
/// assert!(bad.check().is_err());
/// ```
///
/// Topic aliases are not set here: the client assigns them itself when
/// [`ClientBuilder::outgoing_topic_aliases`](crate::ClientBuilder::outgoing_topic_aliases) is
/// on. MQTT 5 properties sent over MQTT 3.1.1 make the send fail with
/// [`PublishError::Invalid`](crate::proto::PublishError::Invalid).
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    publish: Publish,
    /// The first invalid topic given (the topic or the response topic).
    invalid: Option<TopicError>,
}

impl core::fmt::Debug for Message {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut d = f.debug_struct("Message");
        d.field("topic", &self.publish.topic.as_str())
            .field("qos", &self.publish.qos)
            .field("retain", &self.publish.retain)
            .field("payload_len", &self.publish.payload.len());
        if !self.publish.properties.is_empty() {
            d.field("properties", &*self.publish.properties);
        }
        if let Some(e) = self.invalid {
            d.field("invalid", &e);
        }
        d.finish()
    }
}

impl Message {
    /// A QoS 0, non-retained message without properties. `topic` is a `&str`, a `String` or a
    /// [`TopicName`]; an invalid one is reported by the send (see [`Message::check`]).
    pub fn new<T>(topic: T, payload: impl Into<Bytes>) -> Self
    where
        T: TryInto<TopicName>,
        T::Error: Into<TopicError>,
    {
        let (topic, invalid) = match topic.try_into() {
            Ok(t) => (t.into_inner(), None),
            Err(e) => (ByteStr::default(), Some(e.into())),
        };
        Message {
            publish: Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic,
                pkid: 0,
                properties: Props::new(),
                payload: payload.into(),
            },
            invalid,
        }
    }

    /// The same message with another payload (for a template sent many times).
    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.publish.payload = payload.into();
        self
    }

    /// The QoS (default 0, at most once).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.publish.qos = qos;
        self
    }

    /// The retain flag (default off): the broker keeps the message for later subscribers.
    pub fn retain(mut self, on: bool) -> Self {
        self.publish.retain = on;
        self
    }

    /// MQTT 5 Content Type (a MIME type, for example `application/json`).
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.publish.properties.content_type = Some(ByteStr::from(content_type.into()));
        self
    }

    /// MQTT 5 Payload Format Indicator.
    pub fn payload_format(mut self, format: PayloadFormat) -> Self {
        self.publish.properties.payload_format_indicator = Some(match format {
            PayloadFormat::Bytes => 0,
            PayloadFormat::Utf8 => 1,
        });
        self
    }

    /// MQTT 5 Response Topic (request/response): where the receiver should publish its reply.
    /// It must be a valid topic name; an invalid one fails the send like an invalid topic.
    pub fn response_topic<T>(mut self, topic: T) -> Self
    where
        T: TryInto<TopicName>,
        T::Error: Into<TopicError>,
    {
        match topic.try_into() {
            Ok(t) => self.publish.properties.response_topic = Some(t.into_inner()),
            Err(e) => {
                self.invalid.get_or_insert(e.into());
            }
        }
        self
    }

    /// MQTT 5 Correlation Data (request/response): returned unchanged with the reply.
    pub fn correlation_data(mut self, data: impl Into<Bytes>) -> Self {
        self.publish.properties.correlation_data = Some(data.into());
        self
    }

    /// Adds an MQTT 5 user property (repeatable; order and duplicates are kept).
    pub fn user_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.publish
            .properties
            .user_properties
            .push((ByteStr::from(key.into()), ByteStr::from(value.into())));
        self
    }

    /// MQTT 5 Message Expiry Interval: the broker drops the message if it is not delivered in
    /// time, and so does the client's offline queue. Whole seconds on the wire: a fraction of a
    /// second rounds up, and anything over `u32::MAX` seconds is `u32::MAX`.
    pub fn message_expiry(mut self, expiry: Duration) -> Self {
        let secs = expiry
            .as_secs()
            .saturating_add(u64::from(expiry.subsec_nanos() > 0));
        self.publish.properties.message_expiry_interval =
            Some(u32::try_from(secs).unwrap_or(u32::MAX));
        self
    }

    /// The topic (empty when the topic given to [`Message::new`] was invalid).
    pub fn topic(&self) -> &str {
        self.publish.topic.as_str()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.publish.payload
    }

    /// The QoS set with [`Message::qos`].
    pub fn qos_level(&self) -> QoS {
        self.publish.qos
    }

    /// The retain flag set with [`Message::retain`].
    pub fn is_retain(&self) -> bool {
        self.publish.retain
    }

    /// The MQTT 5 properties set so far.
    pub fn properties(&self) -> &Properties {
        &self.publish.properties
    }

    /// `Ok` when the topic (and response topic) are valid: the error a send would return.
    pub fn check(&self) -> Result<(), TopicError> {
        match self.invalid {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The wire packet, or the topic error.
    pub(crate) fn into_publish(self) -> Result<Publish, TopicError> {
        match self.invalid {
            Some(e) => Err(e),
            None => Ok(self.publish),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_each_property() {
        let m = Message::new("a/b", "x")
            .qos(QoS::ExactlyOnce)
            .retain(true)
            .content_type("text/plain")
            .payload_format(PayloadFormat::Utf8)
            .response_topic(String::from("a/reply"))
            .correlation_data(vec![1u8, 2])
            .user_property("k", "v1")
            .user_property("k", "v2")
            .message_expiry(Duration::from_millis(1500));
        let p = m.clone().into_publish().expect("valid");
        assert_eq!(p.topic.as_str(), "a/b");
        assert_eq!(p.qos, QoS::ExactlyOnce);
        assert!(p.retain && !p.dup && p.pkid == 0);
        assert_eq!(&p.payload[..], b"x");
        let props = &*p.properties;
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
        assert_eq!(props.payload_format_indicator, Some(1));
        assert_eq!(props.response_topic.as_deref(), Some("a/reply"));
        assert_eq!(props.correlation_data.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(props.user_properties.len(), 2);
        assert_eq!(props.user_properties[1].1.as_str(), "v2");
        assert_eq!(props.message_expiry_interval, Some(2), "1.5 s rounds up");
        assert_eq!(m.qos_level(), QoS::ExactlyOnce);
        assert!(m.is_retain());
    }

    #[test]
    fn defaults_are_qos0_not_retained_without_properties() {
        let p = Message::new(TopicName::new("t").expect("valid"), Bytes::new())
            .into_publish()
            .expect("valid");
        assert_eq!(p.qos, QoS::AtMostOnce);
        assert!(!p.retain);
        assert!(p.properties.is_empty());
    }

    #[test]
    fn invalid_topics_are_kept_as_errors() {
        let wildcard = Message::new("a/+", "x");
        assert_eq!(wildcard.check(), Err(TopicError::WildcardInName));
        assert_eq!(
            wildcard.into_publish().err(),
            Some(TopicError::WildcardInName)
        );
        assert_eq!(Message::new("", "x").check(), Err(TopicError::Empty));
        assert_eq!(
            Message::new("a\0b", "x").check(),
            Err(TopicError::NullCharacter)
        );
        let reply = Message::new("a", "x").response_topic("replies/#");
        assert_eq!(reply.check(), Err(TopicError::WildcardInName));
        // The first error is the one reported.
        let both = Message::new("", "x").response_topic("r/#");
        assert_eq!(both.check(), Err(TopicError::Empty));
    }

    #[test]
    fn expiry_saturates() {
        let m = Message::new("t", "x").message_expiry(Duration::MAX);
        assert_eq!(m.properties().message_expiry_interval, Some(u32::MAX));
        let z = Message::new("t", "x").message_expiry(Duration::ZERO);
        assert_eq!(z.properties().message_expiry_interval, Some(0));
    }
}
