//! The handshake: CONNECT, CONNACK and what it grants the link, MQTT 5 enhanced authentication
//! and re-authentication, and credentials.

use super::*;

impl Connection {
    /// Installs a credentials provider, asked before every connect attempt.
    pub fn set_credentials_provider(&mut self, provider: CredentialsProvider) {
        self.credentials = Some(provider);
    }

    /// Installs an MQTT 5 enhanced-authentication handler; its method goes into CONNECT.
    pub fn set_authenticator(&mut self, auth: Box<dyn Authenticator>) {
        self.authenticator = Some(auth);
    }

    /// Starts an MQTT 5 re-authentication (AUTH 0x19) on the current connection.
    pub fn reauthenticate(&mut self, now: Instant) -> Result<(), CommandError> {
        if self.config.protocol != ProtocolVersion::V5 {
            return Err(CommandError::Invalid(InvalidCommand::NeedsV5 {
                what: "re-authentication",
            }));
        }
        if !self.is_connected() {
            return Err(CommandError::Invalid(InvalidCommand::NotConnected));
        }
        if self.link.as_ref().is_some_and(|l| l.reauthenticating) {
            return Err(CommandError::Invalid(
                InvalidCommand::ReauthenticationInProgress,
            ));
        }
        let Some(auth) = self.authenticator.as_mut() else {
            return Err(CommandError::Invalid(InvalidCommand::NoAuthenticator));
        };
        let properties = Properties {
            authentication_method: Some(auth.method()),
            authentication_data: auth.start(),
            ..Properties::default()
        };
        let packet = Packet::Auth(Auth {
            reason: ReasonCode::ReAuthenticate,
            properties: properties.into(),
        });
        if let Some(e) = self.too_large(&packet) {
            return Err(e);
        }
        self.send_packet(&packet, now);
        if let Some(link) = self.link.as_mut() {
            link.reauthenticating = true;
        }
        Ok(())
    }

    /// The link closes: a re-authentication under way on it has failed.
    pub(super) fn reauthentication_failed(&mut self, reason: &Reason) {
        if let Some(link) = self.link.as_mut().filter(|l| l.reauthenticating) {
            link.reauthenticating = false;
            self.events.push_back(Event::ReauthenticationFailed {
                reason: reason.clone(),
            });
        }
    }

    pub(super) fn build_connect(&mut self) -> Connect {
        let c = &self.config;
        let v5 = c.protocol == ProtocolVersion::V5;
        let clean_start = if v5 && self.connected_once {
            false
        } else {
            c.clean_start
        };
        let mut properties = Properties::default();
        if v5 {
            if c.session_expiry_interval != 0 {
                properties.session_expiry_interval = Some(c.session_expiry_interval);
            }
            if c.receive_maximum != u16::MAX {
                properties.receive_maximum = Some(c.receive_maximum.max(1));
            }
            if c.maximum_packet_size < PROTOCOL_MAX_REMAINING {
                properties.maximum_packet_size = Some(c.maximum_packet_size.max(1));
            }
            if c.topic_alias_maximum != 0 {
                properties.topic_alias_maximum = Some(c.topic_alias_maximum);
            }
            if c.request_response_information {
                properties.request_response_information = Some(1);
            }
            if let Some(p) = c.request_problem_information {
                properties.request_problem_information = Some(u8::from(p));
            }
            properties.user_properties = c.user_properties.clone();
            if let Some(auth) = self.authenticator.as_mut() {
                properties.authentication_method = Some(auth.method());
                properties.authentication_data = auth.start();
            } else if let Some(m) = &c.authentication_method {
                properties.authentication_method = Some(m.clone());
            }
        }
        let keep_alive = u16::try_from(c.keep_alive.as_secs()).unwrap_or(u16::MAX);
        // Explicit credentials win; otherwise those of the server's URL.
        let (username, password) = if c.username.is_some() || c.password.is_some() {
            (c.username.clone(), c.password.clone())
        } else {
            match self.link.as_ref().and_then(|l| l.server.credentials()) {
                Some(cred) => (
                    // `mqtt://:pass@h` sends an empty user name, so 3.1.1 can carry the password.
                    Some(cred.username.clone()),
                    cred.password.as_ref().map(|p| p.expose().clone()),
                ),
                None => (None, None),
            }
        };
        Connect {
            protocol: c.protocol,
            clean_start,
            keep_alive,
            client_id: self.client_id.clone(),
            will: c.will.clone(),
            username,
            password,
            properties: properties.into(),
        }
    }

    pub(super) fn on_auth(&mut self, a: Auth, now: Instant) {
        let connected = self.is_connected();
        let Some(auth) = self.authenticator.as_mut() else {
            self.protocol_violation(
                ReasonCode::ProtocolError,
                "AUTH received without enhanced authentication".into(),
                now,
            );
            return;
        };
        match a.reason {
            ReasonCode::ContinueAuthentication => {
                match auth.challenge(a.properties.authentication_data.as_ref()) {
                    Ok(data) => {
                        let properties = Properties {
                            authentication_method: Some(auth.method()),
                            authentication_data: data,
                            ..Properties::default()
                        };
                        let reply = Packet::Auth(Auth {
                            reason: ReasonCode::ContinueAuthentication,
                            properties: properties.into(),
                        });
                        match self.too_large(&reply) {
                            Some(e) => self.authentication_failed(e.to_string(), now),
                            None => {
                                self.send_packet(&reply, now);
                            }
                        }
                    }
                    Err(e) => self.authentication_failed(e, now),
                }
            }
            ReasonCode::Success if connected => {
                auth.success(a.properties.authentication_data.as_ref());
                if let Some(link) = self.link.as_mut() {
                    link.reauthenticating = false;
                }
                self.events.push_back(Event::Reauthenticated);
            }
            other => self.protocol_violation(
                ReasonCode::ProtocolError,
                format!("unexpected AUTH reason {other}"),
                now,
            ),
        }
    }

    /// The exchange cannot go on (the authenticator refused, or its answer does not fit).
    pub(super) fn authentication_failed(&mut self, e: String, now: Instant) {
        let reason = Reason::Authentication(e);
        if self.link.as_ref().is_some_and(|l| l.connected_at.is_some()) {
            self.send_packet(
                &Packet::Disconnect(Disconnect {
                    reason: ReasonCode::NotAuthorized,
                    properties: Props::new(),
                }),
                now,
            );
            self.connection_lost(reason, now);
        } else {
            self.attempt_failed(reason, now);
        }
    }

    pub(super) fn on_connack(&mut self, ack: ConnAck, now: Instant) {
        if !ack.reason.is_success() {
            if let Some(link) = self.link.as_mut() {
                link.server_reference = ack.properties.server_reference.clone();
            }
            let reason = Reason::Refused {
                code: ack.reason,
                reason_string: ack.properties.into_inner().reason_string,
            };
            self.attempt_failed(reason, now);
            return;
        }
        self.timers.stop(Timer::Connect);
        self.credentials_retried = false;
        self.closed_before_connack = 0;
        if let Some(auth) = self.authenticator.as_mut() {
            auth.success(ack.properties.authentication_data.as_ref());
        }
        let p = &ack.properties;
        let keep_alive = p
            .server_keep_alive
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.config.keep_alive);
        if let Some(id) = &p.assigned_client_identifier {
            self.client_id = id.clone();
            let id = id.clone();
            self.store(|| StoreOp::ClientId(id));
        }
        let granted = Granted {
            keep_alive,
            receive_maximum: p.receive_maximum.unwrap_or(u16::MAX),
            maximum_packet_size: p.maximum_packet_size,
            assigned_client_id: p.assigned_client_identifier.clone(),
            topic_alias_maximum: p.topic_alias_maximum.unwrap_or(0),
            maximum_qos: p
                .maximum_qos
                .and_then(QoS::from_u8)
                .unwrap_or(QoS::ExactlyOnce),
            retain_available: p.retain_available != Some(0),
            wildcard_subscription_available: p.wildcard_subscription_available != Some(0),
            subscription_identifiers_available: p.subscription_identifier_available != Some(0),
            shared_subscription_available: p.shared_subscription_available != Some(0),
            response_information: p.response_information.clone(),
            session_expiry_interval: p.session_expiry_interval,
        };
        let ping_timeout = self.config.ping_timeout_for(keep_alive);
        let server = {
            let Some(link) = self.link.as_mut() else {
                return;
            };
            link.connected_at = Some(now);
            link.keep_alive = keep_alive;
            link.ping_timeout = ping_timeout;
            link.receive_maximum = granted.receive_maximum.max(1);
            link.max_packet_size = granted.maximum_packet_size;
            link.max_qos = granted.maximum_qos;
            link.retain_available = granted.retain_available;
            link.sub_ids_available = granted.subscription_identifiers_available;
            link.topic_alias_max = if self.config.outgoing_topic_aliases {
                granted.topic_alias_maximum
            } else {
                0
            };
            link.server.clone()
        };
        self.set_state(if self.disconnect.is_some() {
            State::Disconnecting
        } else {
            State::Connected
        });
        self.timers
            .set(Timer::StableAfter, now + self.config.stable_after);
        self.reconnect.connected();
        // The count of attempts goes on until the connection proves stable (`stable_after`):
        // a connection lost before then is one more failed attempt.
        let attempt = self.reconnect.attempt();
        self.emit(
            now,
            Lifecycle::Connected {
                attempt,
                server,
                session_present: ack.session_present,
                granted: Box::new(granted),
            },
        );
        self.connected_once = true;

        if ack.session_present {
            // Resend in original order with original packet ids: PUBLISH with DUP=1, or PUBREL.
            self.pump(now);
        } else {
            if !self.incoming_qos2.is_empty() {
                self.incoming_qos2.clear();
                self.store(|| StoreOp::IncomingQos2Clear);
            }
            if !self.inflight.is_empty() {
                let entries = self.inflight.drain();
                let mut republished = 0;
                for out in entries.into_iter().rev() {
                    self.pkids.release(out.publish.pkid);
                    // Entries past PUBREC are republished too: a broker that lost the session
                    // may not have forwarded them (Mosquitto forwards QoS 2 at PUBREL), and
                    // nothing accepted may be lost. The receiver may then see it twice.
                    if self.config.republish_on_session_loss {
                        republished += 1;
                        let mut publish = out.publish;
                        publish.pkid = 0;
                        publish.dup = false;
                        let id = out.token.0;
                        self.store(|| StoreOp::Outgoing {
                            id,
                            state: OutgoingState::Queued,
                        });
                        self.queue.push_front(Queued {
                            token: out.token,
                            publish,
                            queued_at: now,
                        });
                    } else {
                        self.finish_publish(out.token, Err(PublishError::SessionLost));
                    }
                }
                self.emit(now, Lifecycle::SessionLost { republished });
            }
            self.resubscribe(now);
            self.pump(now);
        }
    }
}
