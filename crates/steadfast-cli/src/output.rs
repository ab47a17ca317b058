//! How `steadfast sub` prints a message: the payload (mosquitto_sub's default), `-v`,
//! `--json` (a [`MessageLine`] serialised with serde) or `-F FORMAT` (mosquitto_sub's `%`
//! codes, the common subset), each followed by a newline unless `-N`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;
use steadfast::{Properties, Publish};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The `--json` object of a message.
#[derive(Debug, Serialize)]
pub struct MessageLine<'a> {
    /// The topic.
    pub topic: &'a str,
    /// 0, 1 or 2.
    pub qos: u8,
    /// The RETAIN flag (true: a retained message sent at subscription time).
    pub retain: bool,
    /// The DUP flag.
    pub dup: bool,
    /// The payload, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<&'a str>,
    /// The payload in base64, when it is not UTF-8 (instead of `payload`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
    /// The MQTT 5 properties, when the message has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<PropertiesLine<'a>>,
}

/// The MQTT 5 properties of a message; absent ones are left out.
#[derive(Debug, Default, Serialize)]
pub struct PropertiesLine<'a> {
    /// 0 (bytes) or 1 (UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_format_indicator: Option<u8>,
    /// Seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_expiry_interval: Option<u32>,
    /// The content type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<&'a str>,
    /// The response topic (request/response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<&'a str>,
    /// The correlation data, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<String>,
    /// The subscription identifiers (sub assigns none, so a broker sends none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subscription_identifiers: Vec<u32>,
    /// `[key, value]` pairs, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<(&'a str, &'a str)>,
}

impl<'a> PropertiesLine<'a> {
    fn new(p: &'a Properties) -> Option<PropertiesLine<'a>> {
        let line = PropertiesLine {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type.as_ref().map(|v| v.as_str()),
            response_topic: p.response_topic.as_ref().map(|v| v.as_str()),
            correlation_data: p.correlation_data.as_ref().map(|v| b64(v)),
            subscription_identifiers: p.subscription_identifiers.to_vec(),
            user_properties: p
                .user_properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        };
        let empty = line.payload_format_indicator.is_none()
            && line.message_expiry_interval.is_none()
            && line.content_type.is_none()
            && line.response_topic.is_none()
            && line.correlation_data.is_none()
            && line.subscription_identifiers.is_empty()
            && line.user_properties.is_empty();
        (!empty).then_some(line)
    }
}

impl<'a> MessageLine<'a> {
    /// The line of a message.
    pub fn new(m: &'a Publish) -> MessageLine<'a> {
        let text = std::str::from_utf8(&m.payload).ok();
        MessageLine {
            topic: m.topic.as_str(),
            qos: m.qos as u8,
            retain: m.retain,
            dup: m.dup,
            payload: text,
            payload_b64: text.is_none().then(|| b64(&m.payload)),
            properties: PropertiesLine::new(&m.properties),
        }
    }
}

/// The `--json` line of a message (without the newline).
pub fn message_json(m: &Publish) -> String {
    crate::events::to_json(&MessageLine::new(m))
}

/// The `%j` object (mosquitto_sub's fields: the receive time, topic, QoS, retain as 0/1, the
/// payload's length and the payload as a string, or `payload_b64`).
#[derive(Debug, Serialize)]
struct FormatJson<'a> {
    tst: String,
    topic: &'a str,
    qos: u8,
    retain: u8,
    payloadlen: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
}

/// One piece of a parsed `-F` format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Code(char),
}

/// The `%` codes `-F` understands (see docs/cli.md).
const CODES: &str = "%tpqrlxXIUjCDEFRP";

/// A parsed `-F` format: `%` codes and `\` escapes resolved once, at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format(Vec<Piece>);

impl Format {
    /// Parses a format; an unknown `%` code or `\` escape is an error naming it.
    pub fn parse(s: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let code = chars
                        .next()
                        .ok_or("-F: a lone % at the end (write %% for a literal %)")?;
                    if code == '%' {
                        text.push(b'%');
                        continue;
                    }
                    if !CODES.contains(code) {
                        return Err(format!(
                            "-F: unknown code %{code} (known: %t %p %q %r %l %x %X %I %U %j %C %D %E %F %R %P %%)"
                        ));
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Code(code));
                }
                '\\' => {
                    let e = chars
                        .next()
                        .ok_or("-F: a lone \\ at the end (write \\\\ for a literal \\)")?;
                    text.push(match e {
                        '\\' => b'\\',
                        '0' => 0,
                        'a' => 0x07,
                        'e' => 0x1b,
                        'n' => b'\n',
                        'r' => b'\r',
                        't' => b'\t',
                        'v' => 0x0b,
                        other => {
                            return Err(format!(
                                "-F: unknown escape \\{other} (known: \\\\ \\0 \\a \\e \\n \\r \\t \\v)"
                            ))
                        }
                    });
                }
                c => {
                    let mut buf = [0u8; 4];
                    text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Format(pieces))
    }

    /// Renders a message received at `at`.
    pub fn render(&self, m: &Publish, at: SystemTime, out: &mut Vec<u8>) {
        let p = &m.properties;
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Code(c) => match c {
                    't' => out.extend_from_slice(m.topic.as_str().as_bytes()),
                    'p' => out.extend_from_slice(&m.payload),
                    'q' => out.extend_from_slice((m.qos as u8).to_string().as_bytes()),
                    'r' => out.push(if m.retain { b'1' } else { b'0' }),
                    'l' => out.extend_from_slice(m.payload.len().to_string().as_bytes()),
                    'x' | 'X' => {
                        for b in m.payload.iter() {
                            let s = if *c == 'x' {
                                format!("{b:02x}")
                            } else {
                                format!("{b:02X}")
                            };
                            out.extend_from_slice(s.as_bytes());
                        }
                    }
                    'I' => out.extend_from_slice(
                        humantime::format_rfc3339_seconds(at).to_string().as_bytes(),
                    ),
                    'U' => {
                        let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
                        let s = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
                        out.extend_from_slice(s.as_bytes());
                    }
                    'j' => {
                        let text = std::str::from_utf8(&m.payload).ok();
                        let j = FormatJson {
                            tst: humantime::format_rfc3339_micros(at).to_string(),
                            topic: m.topic.as_str(),
                            qos: m.qos as u8,
                            retain: u8::from(m.retain),
                            payloadlen: m.payload.len(),
                            payload: text,
                            payload_b64: text.is_none().then(|| b64(&m.payload)),
                        };
                        out.extend_from_slice(crate::events::to_json(&j).as_bytes());
                    }
                    'C' => {
                        if let Some(v) = &p.content_type {
                            out.extend_from_slice(v.as_str().as_bytes());
                        }
                    }
                    'D' => {
                        if let Some(v) = &p.correlation_data {
                            out.extend_from_slice(v);
                        }
                    }
                    'E' => {
                        if let Some(v) = p.message_expiry_interval {
                            out.extend_from_slice(v.to_string().as_bytes());
                        }
                    }
                    'F' => {
                        if let Some(v) = p.payload_format_indicator {
                            out.extend_from_slice(v.to_string().as_bytes());
                        }
                    }
                    'R' => {
                        if let Some(v) = &p.response_topic {
                            out.extend_from_slice(v.as_str().as_bytes());
                        }
                    }
                    'P' => {
                        for (i, (k, v)) in p.user_properties.iter().enumerate() {
                            if i > 0 {
                                out.push(b' ');
                            }
                            out.extend_from_slice(k.as_str().as_bytes());
                            out.push(b':');
                            out.extend_from_slice(v.as_str().as_bytes());
                        }
                    }
                    // Parse admits only the codes above.
                    _ => {}
                },
            }
        }
    }
}

/// How messages are printed.
#[derive(Debug, Clone)]
pub enum Style {
    /// The payload.
    Payload,
    /// `topic payload` (`-v`).
    Verbose,
    /// One JSON object (`--json`).
    Json,
    /// `-F FORMAT`.
    Format(Format),
}

/// The bytes printed for a message received at `at`: its style, then a newline unless
/// `no_newline` (`-N`).
pub fn render(style: &Style, no_newline: bool, m: &Publish, at: SystemTime) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.payload.len() + m.topic.len() + 2);
    match style {
        Style::Payload => out.extend_from_slice(&m.payload),
        Style::Verbose => {
            out.extend_from_slice(m.topic.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(&m.payload);
        }
        Style::Json => out.extend_from_slice(message_json(m).as_bytes()),
        Style::Format(f) => f.render(m, at, &mut out),
    }
    if !no_newline {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;
    use steadfast::{ByteStr, QoS};

    fn msg(payload: &'static [u8], retain: bool) -> Publish {
        let properties = Properties {
            content_type: Some(ByteStr::from("text/plain")),
            user_properties: vec![(ByteStr::from("k"), ByteStr::from("v"))],
            ..Properties::default()
        };
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain,
            topic: ByteStr::from("a/b"),
            pkid: 7,
            properties: properties.into(),
            payload: Bytes::from_static(payload),
        }
    }

    fn fmt(f: &str, m: &Publish) -> String {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        String::from_utf8(render(
            &Style::Format(Format::parse(f).unwrap()),
            true,
            m,
            at,
        ))
        .unwrap()
    }

    #[test]
    fn format_codes() {
        let m = msg(b"hi", true);
        assert_eq!(fmt("%t %p %q %r %l %x %X", &m), "a/b hi 1 1 2 6869 6869");
        assert_eq!(
            fmt("%I|%U", &m),
            "2023-11-14T22:13:20Z|1700000000.000000005"
        );
        assert_eq!(fmt("%C|%D|%E|%F|%R|%P", &m), "text/plain|||||k:v");
        assert_eq!(fmt("100%% %t\\t\\n\\\\", &m), "100% a/b\t\n\\");
        assert_eq!(
            fmt("%j", &m),
            r#"{"tst":"2023-11-14T22:13:20.000000Z","topic":"a/b","qos":1,"retain":1,"payloadlen":2,"payload":"hi"}"#
        );
        assert_eq!(
            fmt("%j", &msg(b"\xff", false)),
            r#"{"tst":"2023-11-14T22:13:20.000000Z","topic":"a/b","qos":1,"retain":0,"payloadlen":1,"payload_b64":"/w=="}"#
        );
        for bad in ["%", "%z", "%m", "\\", "\\q"] {
            assert!(Format::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn styles_and_newline() {
        let m = msg(b"hi", false);
        let at = UNIX_EPOCH;
        assert_eq!(render(&Style::Payload, false, &m, at), b"hi\n");
        assert_eq!(render(&Style::Payload, true, &m, at), b"hi");
        assert_eq!(render(&Style::Verbose, false, &m, at), b"a/b hi\n");
        assert_eq!(
            String::from_utf8(render(&Style::Json, true, &m, at)).unwrap(),
            r#"{"topic":"a/b","qos":1,"retain":false,"dup":false,"payload":"hi","properties":{"content_type":"text/plain","user_properties":[["k","v"]]}}"#
        );
    }
}
