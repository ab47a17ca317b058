//! CONNECT (section 3.1).
use bytes::Bytes;

use super::{Props, ProtocolVersion, QoS};
use crate::codec::ByteStr;

/// CONNECT: the first packet a client sends.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level (4 or 5).
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) / Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep-alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// Client identifier; may be empty (the server then assigns one, in 5.0).
    pub client_id: ByteStr,
    /// The will message.
    pub will: Option<LastWill>,
    /// User name.
    pub username: Option<ByteStr>,
    /// Password (binary data). Never printed by `Debug`.
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0 only).
    pub properties: Props,
}

impl core::fmt::Debug for Connect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connect")
            .field("protocol", &self.protocol)
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("properties", &self.properties)
            .finish()
    }
}

/// The will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will topic (a topic name: no wildcards).
    pub topic: ByteStr,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties (5.0 only): will delay, message expiry, content type, ...
    pub properties: Props,
}

mod codec {
    use bytes::{BufMut, BytesMut};

    use super::{Connect, LastWill};
    use crate::codec::properties::{self, PropCtx};
    use crate::codec::strings::{bin_len, put_bin, put_str, str_len, Reader};
    use crate::codec::{checks, EncodeError, Malformed, MalformedKind, Sizes};
    use crate::packet::{PacketType, ProtocolVersion, QoS};
    use crate::topic::{self, TopicError};

    const USERNAME: u8 = 0x80;
    const PASSWORD: u8 = 0x40;
    const WILL_RETAIN: u8 = 0x20;
    const WILL: u8 = 0x04;
    const CLEAN_START: u8 = 0x02;
    const RESERVED: u8 = 0x01;

    impl Connect {
        /// Validates for the protocol level in `self.protocol`.
        pub(crate) fn measure(&self) -> Result<Sizes, EncodeError> {
            let v5 = self.protocol == ProtocolVersion::V5;
            const P: PacketType = PacketType::Connect;
            // Protocol name, level, flags, keep alive.
            let mut remaining = 6 + 1 + 1 + 2;
            let mut props = 0;
            let mut will_props = 0;
            if v5 {
                props = properties::measure(&self.properties, PropCtx::Connect)?;
                remaining += properties::block_len(props);
            } else {
                checks::no_props_v311(P, &self.properties)?;
            }
            remaining += str_len(&self.client_id, "client identifier")?;
            if let Some(w) = &self.will {
                if v5 {
                    will_props = properties::measure(&w.properties, PropCtx::Will)?;
                    remaining += properties::block_len(will_props);
                } else if !w.properties.is_empty() {
                    return Err(EncodeError::UnsupportedInV311 {
                        packet: P,
                        field: "will properties",
                    });
                }
                topic::validate_name(&w.topic).map_err(|error| EncodeError::InvalidTopic {
                    field: "will topic",
                    error,
                })?;
                remaining += 2 + w.topic.len();
                remaining += bin_len(&w.payload, "will payload")?;
            }
            if let Some(u) = &self.username {
                remaining += str_len(u, "user name")?;
            }
            if let Some(p) = &self.password {
                if !v5 && self.username.is_none() {
                    return Err(EncodeError::UnsupportedInV311 {
                        packet: P,
                        field: "a password without a user name",
                    });
                }
                remaining += bin_len(p, "password")?;
            }
            Ok(Sizes {
                remaining,
                props,
                will_props,
            })
        }

        fn connect_flags(&self) -> u8 {
            let mut f = 0;
            if self.username.is_some() {
                f |= USERNAME;
            }
            if self.password.is_some() {
                f |= PASSWORD;
            }
            if let Some(w) = &self.will {
                f |= WILL | ((w.qos as u8) << 3);
                if w.retain {
                    f |= WILL_RETAIN;
                }
            }
            if self.clean_start {
                f |= CLEAN_START;
            }
            f
        }

        pub(crate) fn write(&self, s: &Sizes, out: &mut BytesMut) {
            let v5 = self.protocol == ProtocolVersion::V5;
            put_str(out, "MQTT");
            out.put_u8(self.protocol.level());
            out.put_u8(self.connect_flags());
            out.put_u16(self.keep_alive);
            if v5 {
                properties::write(&self.properties, s.props, out);
            }
            put_str(out, &self.client_id);
            if let Some(w) = &self.will {
                if v5 {
                    properties::write(&w.properties, s.will_props, out);
                }
                put_str(out, &w.topic);
                put_bin(out, &w.payload);
            }
            if let Some(u) = &self.username {
                put_str(out, u);
            }
            if let Some(p) = &self.password {
                put_bin(out, p);
            }
        }

        /// Decodes a CONNECT with the protocol level it carries.
        pub(crate) fn decode(mut r: Reader) -> Result<Connect, Malformed> {
            let name = r.binary("protocol name")?;
            if &name[..] != b"MQTT" {
                return Err(Malformed::new(
                    MalformedKind::ProtocolName,
                    format!(
                        "CONNECT protocol name is {:?}, not \"MQTT\"",
                        String::from_utf8_lossy(&name)
                    ),
                ));
            }
            let level = r.u8("protocol level")?;
            let protocol = match level {
                4 => ProtocolVersion::V311,
                5 => ProtocolVersion::V5,
                other => {
                    return Err(Malformed::new(
                        MalformedKind::ProtocolLevel,
                        format!("CONNECT protocol level {other} is neither 4 (3.1.1) nor 5 (5.0)"),
                    ))
                }
            };
            let v5 = protocol == ProtocolVersion::V5;
            let flags = r.u8("connect flags")?;
            check_flags(flags, protocol)?;
            let keep_alive = r.u16("keep alive")?;
            let properties = if v5 {
                properties::decode(&mut r, PropCtx::Connect)?
            } else {
                Default::default()
            };
            let client_id = r.string("client identifier")?;
            let will = if flags & WILL != 0 {
                let properties = if v5 {
                    properties::decode(&mut r, PropCtx::Will)?
                } else {
                    Default::default()
                };
                let topic = r.string("will topic")?;
                if let Err(e) = topic::validate_name(&topic) {
                    return Err(bad_will_topic(e));
                }
                let payload = r.binary("will payload")?;
                Some(LastWill {
                    topic,
                    payload,
                    qos: QoS::from_u8((flags >> 3) & 0b11).unwrap_or(QoS::AtMostOnce),
                    retain: flags & WILL_RETAIN != 0,
                    properties,
                })
            } else {
                None
            };
            let username = if flags & USERNAME != 0 {
                Some(r.string("user name")?)
            } else {
                None
            };
            let password = if flags & PASSWORD != 0 {
                Some(r.binary("password")?)
            } else {
                None
            };
            r.finish("payload")?;
            Ok(Connect {
                protocol,
                clean_start: flags & CLEAN_START != 0,
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties,
            })
        }
    }

    fn check_flags(flags: u8, v: ProtocolVersion) -> Result<(), Malformed> {
        let bad = |msg: &'static str| Err(Malformed::new(MalformedKind::ConnectFlags, msg));
        if flags & RESERVED != 0 {
            return bad("CONNECT reserved flag (bit 0) is set");
        }
        let will_qos = (flags >> 3) & 0b11;
        if flags & WILL == 0 && (will_qos != 0 || flags & WILL_RETAIN != 0) {
            return bad("CONNECT will QoS or will retain set without the will flag");
        }
        if will_qos == 3 {
            return Err(Malformed::new(
                MalformedKind::InvalidQoS,
                "CONNECT will QoS 3",
            ));
        }
        if v == ProtocolVersion::V311 && flags & PASSWORD != 0 && flags & USERNAME == 0 {
            return bad("MQTT 3.1.1 CONNECT has the password flag without the user name flag");
        }
        Ok(())
    }

    #[cold]
    fn bad_will_topic(e: TopicError) -> Malformed {
        let kind = match e {
            TopicError::NullCharacter => MalformedKind::NullCharacter,
            _ => MalformedKind::InvalidTopicName,
        };
        Malformed::new(kind, format!("CONNECT will topic {}", e.as_str()))
    }
}
