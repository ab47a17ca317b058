//! [`Received`]: an incoming application message, as the application sees it.

use std::time::Duration;

use bytes::Bytes;
use steadfast_proto::{AckToken, ByteStr, Publish, QoS};

/// An incoming application message: what [`crate::ClientEvent::Message`] and
/// [`crate::Subscription::recv`] hand over.
///
/// It wraps the decoded PUBLISH without copying it (topic and payload share the buffer they
/// were read into), and reads it through accessors: the topic (a topic alias is already
/// resolved), the payload, the flags and the MQTT 5 properties. With MQTT 3.1.1 every property
/// accessor returns `None` or an empty slice.
///
/// With [manual acknowledgements](crate::ClientBuilder::manual_acks), a QoS 1 or 2 message
/// carries the token that [`crate::Client::ack`] takes; a clone carries the same token (one
/// delivery, acknowledged once).
///
/// ```no_run
/// # async fn f(mut events: steadfast::Events) {
/// use steadfast::ClientEvent;
/// while let Some(event) = events.recv().await {
///     if let ClientEvent::Message(m) = event {
///         println!("{} ({:?}): {}", m.topic(), m.qos(), String::from_utf8_lossy(m.payload()));
///         if let Some(reply_to) = m.response_topic() {
///             println!("  reply to {reply_to}, correlation {:?}", m.correlation_data());
///         }
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    publish: Publish,
    ack: Option<AckToken>,
}

impl Received {
    pub(crate) fn new(publish: Publish, ack: Option<AckToken>) -> Self {
        Received { publish, ack }
    }

    /// The token [`crate::Client::ack_token`] takes: `Some` for a QoS 1 or 2 message with
    /// [manual acknowledgements](crate::ClientBuilder::manual_acks), `None` when there is
    /// nothing to acknowledge (QoS 0, or the client acknowledged it already).
    pub fn ack_token(&self) -> Option<AckToken> {
        self.ack
    }

    /// The topic the message was published to.
    pub fn topic(&self) -> &str {
        self.publish.topic.as_str()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.publish.payload
    }

    /// The payload as UTF-8, if it is valid UTF-8 (whatever its payload format indicator).
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.publish.payload).ok()
    }

    /// The QoS it was delivered with (the lower of the publisher's and the subscription's).
    pub fn qos(&self) -> QoS {
        self.publish.qos
    }

    /// The RETAIN flag: set on a retained message sent because the subscription was made
    /// (unless the subscription asked for Retain As Published, where it is the publisher's flag).
    pub fn retain(&self) -> bool {
        self.publish.retain
    }

    /// The DUP flag: the broker may have sent this message before (a redelivery after a
    /// reconnect). With QoS 2 the client never hands the same message over twice, whatever
    /// the flag; with QoS 1 a message with DUP set may be one the application already has.
    pub fn dup(&self) -> bool {
        self.publish.dup
    }

    /// MQTT 5 Payload Format Indicator: `Some(1)` says the payload is UTF-8, `Some(0)` that it
    /// is unspecified bytes; `None` when the publisher did not say.
    pub fn payload_format_indicator(&self) -> Option<u8> {
        self.publish.properties.payload_format_indicator
    }

    /// MQTT 5 Message Expiry Interval: the lifetime left when the broker sent it.
    pub fn message_expiry(&self) -> Option<Duration> {
        self.publish
            .properties
            .message_expiry_interval
            .map(|s| Duration::from_secs(u64::from(s)))
    }

    /// MQTT 5 Content Type (a MIME type, for example `application/json`).
    pub fn content_type(&self) -> Option<&str> {
        self.publish.properties.content_type.as_deref()
    }

    /// MQTT 5 Response Topic: where the publisher wants a reply (request/response).
    pub fn response_topic(&self) -> Option<&str> {
        self.publish.properties.response_topic.as_deref()
    }

    /// MQTT 5 Correlation Data, to send back with a reply.
    pub fn correlation_data(&self) -> Option<&Bytes> {
        self.publish.properties.correlation_data.as_ref()
    }

    /// MQTT 5 User Properties, in the order they were sent (a name may repeat).
    pub fn user_properties(&self) -> &[(ByteStr, ByteStr)] {
        &self.publish.properties.user_properties
    }

    /// The value of the first user property called `name`.
    pub fn user_property(&self, name: &str) -> Option<&str> {
        self.user_properties()
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v.as_str())
    }

    /// MQTT 5 Subscription Identifiers: those of the subscriptions the message matched.
    pub fn subscription_identifiers(&self) -> &[u32] {
        &self.publish.properties.subscription_identifiers
    }

    /// Takes the payload, dropping the rest.
    pub fn into_payload(self) -> Bytes {
        self.publish.payload
    }

    /// Takes the topic and the payload.
    pub fn into_parts(self) -> (ByteStr, Bytes) {
        (self.publish.topic, self.publish.payload)
    }

    /// The PUBLISH packet it arrived in (topic alias resolved), for code that forwards or
    /// inspects wire packets.
    pub fn as_publish(&self) -> &Publish {
        &self.publish
    }

    /// Takes the PUBLISH packet it arrived in (topic alias resolved).
    pub fn into_publish(self) -> Publish {
        self.publish
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steadfast_proto::{Properties, Props};

    #[test]
    fn accessors_read_the_packet() {
        let props = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            content_type: Some("text/plain".into()),
            response_topic: Some("re/1".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            subscription_identifiers: vec![7],
            user_properties: vec![("k".into(), "v1".into()), ("k".into(), "v2".into())],
            ..Default::default()
        };
        let m = Received::new(
            Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: true,
                topic: "a/b".into(),
                pkid: 9,
                properties: Props::from(props),
                payload: Bytes::from_static(b"hi"),
            },
            None,
        );
        assert_eq!(
            (m.topic(), &m.payload()[..], m.payload_str()),
            ("a/b", &b"hi"[..], Some("hi"))
        );
        assert_eq!(
            (m.qos(), m.retain(), m.dup()),
            (QoS::ExactlyOnce, true, true)
        );
        assert_eq!(m.payload_format_indicator(), Some(1));
        assert_eq!(m.message_expiry(), Some(Duration::from_secs(30)));
        assert_eq!(m.content_type(), Some("text/plain"));
        assert_eq!(m.response_topic(), Some("re/1"));
        assert_eq!(m.correlation_data().map(|c| &c[..]), Some(&b"c"[..]));
        assert_eq!(m.subscription_identifiers(), &[7]);
        assert_eq!(m.user_properties().len(), 2);
        assert_eq!(m.user_property("k"), Some("v1"));
        assert_eq!(m.user_property("x"), None);
        let (topic, payload) = m.clone().into_parts();
        assert_eq!((topic.as_str(), &payload[..]), ("a/b", &b"hi"[..]));
        assert_eq!(m.into_payload(), Bytes::from_static(b"hi"));
    }

    #[test]
    fn a_plain_message_has_no_properties() {
        let m = Received::new(
            Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "t".into(),
                pkid: 0,
                properties: Props::new(),
                payload: Bytes::from_static(&[0xff]),
            },
            None,
        );
        assert_eq!(m.payload_str(), None);
        assert!(m.content_type().is_none() && m.message_expiry().is_none());
        assert!(m.user_properties().is_empty() && m.subscription_identifiers().is_empty());
    }
}
