//! MQTT client options, built one way for every client of both binaries: the agent's
//! links, `watch`, the bridge's subscription and its `mqtt` notifier target. What differs
//! between them (session persistence, packet limits, last will, manual acks) is a
//! [`Session`]; what a user configures (broker, identity, login, TLS) is a
//! [`ClientConfig`]. A new client cannot forget the keep-alive floor or send a password
//! over a connection that was meant to be TLS.

use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, Transport};

use crate::secret::Secret;
use crate::tls::{TlsError, TlsSettings};
use crate::url::MqttUrl;

/// Largest packet a subscribing client reads. A packet over the client's limit drops the
/// connection, and a retained one would then be redelivered on every reconnect, so the
/// limit is generous and the receiver judges sizes itself; larger packets are the
/// broker's to refuse (mosquitto: `message_size_limit`).
pub const SUBSCRIBER_PACKET_LIMIT: usize = 4 * 1024 * 1024;

/// Brokers disconnect clients whose keep-alive is very short and the network is slow;
/// below this a configured value is raised.
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Who connects where, as configured: validated, and the TLS files read once, at start
/// (a wrong path fails there, naming the key, not at the first connection).
#[derive(Clone)]
pub struct ClientConfig {
    pub url: MqttUrl,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Username and password.
    pub login: Option<(String, Secret)>,
    /// The keys as given (for `check-config` and logs).
    pub tls: TlsSettings,
    /// Plain TCP, or TLS built from `tls`.
    transport: Transport,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .field("login", &self.login)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// How this particular client uses its connection.
#[derive(Clone, Debug)]
pub struct Session {
    /// false: a persistent session, the broker keeps QoS 1 messages while we are away.
    pub clean: bool,
    /// Acknowledge QoS 1 messages only once they are safe (the bridge).
    pub manual_acks: bool,
    /// Largest packet read and written; a packet over the incoming limit drops the
    /// connection, so subscribers set it well above what they accept.
    pub max_incoming: usize,
    pub max_outgoing: usize,
    pub last_will: Option<LastWill>,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            clean: true,
            manual_acks: false,
            max_incoming: 64 * 1024,
            max_outgoing: 64 * 1024,
            last_will: None,
        }
    }
}

impl ClientConfig {
    /// Checks the login and TLS keys together: a password needs a username, TLS keys need
    /// `mqtts://`; reads the TLS files. `context` names the client in TLS log lines.
    pub fn new(
        url: MqttUrl,
        client_id: String,
        keep_alive: Duration,
        username: Option<String>,
        password: Option<Secret>,
        tls: TlsSettings,
        context: &str,
    ) -> Result<Self, TlsError> {
        let login = match (username, password) {
            (Some(u), p) => Some((u, p.unwrap_or_else(|| Secret::new(String::new())))),
            (None, Some(_)) => {
                return Err(TlsError::Key {
                    key: "username",
                    message: "is required when a password is set".into(),
                });
            }
            (None, None) => None,
        };
        let transport = crate::tls::transport(&url, &tls, context)?;
        Ok(Self {
            url,
            client_id,
            keep_alive: keep_alive.max(MIN_KEEP_ALIVE),
            login,
            tls,
            transport,
        })
    }

    /// rumqttc's options for this client and session.
    pub fn options(&self, session: &Session) -> MqttOptions {
        let mut o = MqttOptions::new(&self.client_id, self.url.host.clone(), self.url.port);
        o.set_keep_alive(self.keep_alive)
            .set_clean_session(session.clean)
            .set_manual_acks(session.manual_acks)
            .set_max_packet_size(session.max_incoming, session.max_outgoing)
            .set_transport(self.transport.clone());
        if let Some(will) = &session.last_will {
            o.set_last_will(will.clone());
        }
        if let Some((user, password)) = &self.login {
            o.set_credentials(user.clone(), password.expose().to_owned());
        }
        o
    }

    /// rumqttc's MQTT 5 options for this client and session (the `[[upstream]]`
    /// forwarder, where the broker speaks MQTT 5). `session_expiry`: how long the broker
    /// keeps the session after the connection ends; zero ends it with the connection.
    pub fn options_v5(
        &self,
        session: &Session,
        session_expiry: Duration,
    ) -> rumqttc::v5::MqttOptions {
        use rumqttc::v5::mqttbytes::{QoS as QoS5, v5::LastWill as LastWill5};
        let mut o =
            rumqttc::v5::MqttOptions::new(&self.client_id, self.url.host.clone(), self.url.port);
        let expiry = u32::try_from(session_expiry.as_secs()).unwrap_or(u32::MAX);
        o.set_keep_alive(self.keep_alive)
            .set_clean_start(session.clean)
            .set_manual_acks(session.manual_acks)
            .set_max_packet_size(Some(
                u32::try_from(session.max_incoming).unwrap_or(u32::MAX),
            ))
            .set_transport(self.transport.clone());
        if expiry > 0 {
            o.set_session_expiry_interval(Some(expiry));
        }
        if let Some(will) = &session.last_will {
            let qos = match will.qos {
                rumqttc::QoS::AtMostOnce => QoS5::AtMostOnce,
                rumqttc::QoS::AtLeastOnce => QoS5::AtLeastOnce,
                rumqttc::QoS::ExactlyOnce => QoS5::ExactlyOnce,
            };
            o.set_last_will(LastWill5::new(
                will.topic.clone(),
                will.message.to_vec(),
                qos,
                will.retain,
                None,
            ));
        }
        if let Some((user, password)) = &self.login {
            o.set_credentials(user.clone(), password.expose().to_owned());
        }
        o
    }

    /// The same client under another id (simulated hosts, `watch`).
    pub fn with_client_id(&self, client_id: String) -> Self {
        Self {
            client_id,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> MqttUrl {
        crate::url::parse(s).unwrap()
    }

    #[test]
    fn options_carry_identity_login_session_and_floor_the_keep_alive() {
        let c = ClientConfig::new(
            url("mqtt://127.0.0.1:1884"),
            "id-1".into(),
            Duration::from_secs(1),
            Some("u".into()),
            Some(Secret::new("p".into())),
            TlsSettings::default(),
            "test",
        )
        .unwrap();
        let will = LastWill::new("s", "offline", rumqttc::QoS::AtLeastOnce, true);
        let o = c.options(&Session {
            clean: false,
            manual_acks: true,
            max_incoming: 1000,
            max_outgoing: 2000,
            last_will: Some(will.clone()),
        });
        assert_eq!(o.client_id(), "id-1");
        assert_eq!(o.broker_address(), ("127.0.0.1".to_string(), 1884));
        assert_eq!(o.keep_alive(), MIN_KEEP_ALIVE);
        assert!(!o.clean_session() && o.manual_acks());
        assert_eq!(o.max_packet_size(), 1000);
        let login = o.credentials().unwrap();
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("u", "p")
        );
        assert_eq!(o.last_will(), Some(will));
        let v5 = c.options_v5(
            &Session {
                clean: false,
                ..Session::default()
            },
            Duration::from_secs(3600),
        );
        assert_eq!(v5.client_id(), "id-1");
        assert_eq!(v5.keep_alive(), MIN_KEEP_ALIVE);
        assert!(!v5.clean_start());
        assert_eq!(v5.session_expiry_interval(), Some(3600));
        assert_eq!(v5.max_packet_size(), Some(64 * 1024));
        assert_eq!(v5.credentials().unwrap().username, "u");
        let clean = c.options_v5(&Session::default(), Duration::ZERO);
        assert!(clean.clean_start() && clean.session_expiry_interval().is_none());
    }

    #[test]
    fn a_password_needs_a_username_and_tls_keys_need_mqtts() {
        let err = ClientConfig::new(
            url("mqtt://h"),
            "x".into(),
            Duration::from_secs(30),
            None,
            Some(Secret::new("p".into())),
            TlsSettings::default(),
            "test",
        )
        .unwrap_err();
        assert_eq!(err.key(), "username");
        let err = ClientConfig::new(
            url("mqtt://h"),
            "x".into(),
            Duration::from_secs(30),
            None,
            None,
            TlsSettings {
                insecure_skip_verify: true,
                ..TlsSettings::default()
            },
            "test",
        )
        .unwrap_err();
        assert_eq!(err.key(), "insecure_skip_verify");
    }
}
