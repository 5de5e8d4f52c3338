//! The link's own tables: `[mqtt]` (the agent's broker connection), `[broker]` (the
//! embedded broker) and `[outbox]` (durable alarm states), as written and as the link runs
//! on them. The config assembler hands each its table; the link never sees the rest.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lookout_shared::config::Invalid;
use lookout_shared::duration::HumanDuration;
use lookout_shared::mqtt::ClientConfig;
use lookout_shared::secret::Secret;
use lookout_shared::tls::TlsSettings;
use serde::{Deserialize, Serialize};

use super::version::{Protocol, Version, expiry_seconds};

/// `[mqtt]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub url: String,
    pub prefix: String,
    /// Empty: `lookout-agent-<host>`.
    pub client_id: String,
    pub keep_alive: HumanDuration,
    /// Messages held for the broker before lossy ones (metrics, scores) are dropped.
    pub queue: usize,
    pub reconnect_min: HumanDuration,
    pub reconnect_max: HumanDuration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A literal, `env:NAME` or `file:/path` (shared::secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// TLS for `mqtts://` (shared::tls): CA, client certificate and key, and the loudly
    /// logged escape hatch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    /// `"3.1.1"`, `"5"`, or `"auto"`: MQTT 5 where the broker speaks it (link/version.rs).
    pub protocol: Protocol,
    /// How long a broker keeps a score or metrics message for a subscriber that is away
    /// (MQTT 5 only); `"0s"`: as long as it likes.
    pub message_expiry: HumanDuration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            prefix: lookout_shared::topics::DEFAULT_PREFIX.into(),
            client_id: String::new(),
            keep_alive: HumanDuration::from_secs(30),
            queue: 1024,
            reconnect_min: HumanDuration::from_millis(250),
            reconnect_max: HumanDuration::from_secs(30),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            insecure_skip_verify: false,
            // Unchanged on the wire for existing setups; docs/config.md says why.
            protocol: Protocol::Only(Version::V311),
            message_expiry: HumanDuration::from_secs(3600),
        }
    }
}

/// The resolved `[mqtt]` table (with `[outbox]`): what each host's link runs on.
#[derive(Clone, Debug)]
pub struct MqttSettings {
    /// Broker, identity, login and TLS (checked, files read once, at start).
    pub client: ClientConfig,
    pub prefix: String,
    pub queue: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub outbox: OutboxSettings,
    /// Scores and metrics kept while the broker is away; `None`: dropped (and counted).
    pub buffer: Option<BufferSettings>,
    pub protocol: Protocol,
    /// Seconds, on scores and metrics over MQTT 5; `None`: no expiry.
    pub message_expiry: Option<u32>,
}

impl MqttConfig {
    /// Checks the table. `host` names the default client id; `fallback_login` is used
    /// when the table names no login (the embedded broker's own credentials).
    pub fn resolve(
        &self,
        host: &str,
        fallback_login: Option<(String, Secret)>,
        outbox: OutboxSettings,
        buffer: Option<BufferSettings>,
    ) -> Result<MqttSettings, Invalid> {
        let url = lookout_shared::url::parse(&self.url).map_err(|m| Invalid::new("url", m))?;
        if self.prefix.is_empty() || self.prefix.contains(['+', '#']) {
            return Err(Invalid::new(
                "prefix",
                "must be non-empty and free of MQTT wildcards",
            ));
        }
        if self.queue == 0 {
            return Err(Invalid::new("queue", "must be at least 1"));
        }
        let tls_err = |e: lookout_shared::tls::TlsError| Invalid::new(e.key(), e.reason());
        let password =
            lookout_shared::tls::password(self.password.clone(), self.password_file.as_deref())
                .map_err(tls_err)?;
        let (username, password) = match (&self.username, password) {
            (Some(u), Some(p)) => (Some(u.clone()), Some(p)),
            (None, None) => fallback_login.map_or((None, None), |(u, p)| (Some(u), Some(p))),
            _ => {
                return Err(Invalid::new(
                    "username",
                    "set both mqtt.username and mqtt.password, or neither",
                ));
            }
        };
        let client_id = if self.client_id.is_empty() {
            format!("lookout-agent-{host}")
        } else {
            self.client_id.clone()
        };
        let tls = TlsSettings {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
        };
        let client = ClientConfig::new(
            url,
            client_id,
            self.keep_alive.0,
            username,
            password,
            tls,
            "agent",
        )
        .map_err(tls_err)?;
        let message_expiry = expiry_seconds("message_expiry", self.message_expiry.0)?;
        Ok(MqttSettings {
            client,
            prefix: self.prefix.clone(),
            queue: self.queue,
            reconnect_min: self.reconnect_min.0.max(Duration::from_millis(10)),
            reconnect_max: self.reconnect_max.0.max(self.reconnect_min.0),
            outbox,
            buffer,
            protocol: self.protocol,
            message_expiry,
        })
    }
}

/// `[broker]`: the embedded broker.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub enabled: bool,
    pub listen: String,
    /// An MQTT 5 listener beside the 3.1.1 one (rumqttd serves each version on its own
    /// port), with the same login and limits; absent: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_v5: Option<String>,
    pub max_connections: usize,
    pub max_payload_size: usize,
    /// rumqttd keeps recent messages of each topic in segments for slow subscribers:
    /// memory per topic is at most `segment_size × segments`.
    pub segment_size: usize,
    pub segments: usize,
    /// Clients must log in with these; required when any listener is not on loopback
    /// (unless `tls_ca` requires client certificates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A TLS listener beside the plain one: address, certificate chain and key (PEM).
    /// `tls_ca` (client certificates) is refused with an explanation: rumqttd fixes that
    /// choice at compile time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:1883".into(),
            listen_v5: None,
            max_connections: 64,
            max_payload_size: 64 * 1024,
            segment_size: 64 * 1024,
            segments: 3,
            username: None,
            password: None,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BrokerSettings {
    pub listen: SocketAddr,
    pub listen_v5: Option<SocketAddr>,
    pub max_connections: usize,
    pub max_payload_size: usize,
    pub segment_size: usize,
    pub segments: usize,
    pub auth: Option<(String, Secret)>,
    pub tls: Option<BrokerTls>,
}

#[derive(Clone, Debug)]
pub struct BrokerTls {
    pub listen: SocketAddr,
    pub cert: String,
    pub key: String,
}

impl BrokerConfig {
    /// Checks the table; `None` when the embedded broker is off.
    pub fn resolve(&self) -> Result<Option<BrokerSettings>, Invalid> {
        if !self.enabled {
            return Ok(None);
        }
        let listen: SocketAddr = self.listen.parse().map_err(|e| {
            Invalid::new("listen", format!("{:?} is not IP:PORT ({e})", self.listen))
        })?;
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(Invalid::new(
                    "username",
                    "set both broker.username and broker.password, or neither",
                ));
            }
        };
        let listen_v5: Option<SocketAddr> =
            match &self.listen_v5 {
                None => None,
                Some(l) => Some(l.parse().map_err(|e| {
                    Invalid::new("listen_v5", format!("{l:?} is not IP:PORT ({e})"))
                })?),
            };
        if listen_v5 == Some(listen) {
            return Err(Invalid::new(
                "listen_v5",
                format!("{listen} is `listen` already: MQTT 5 needs a port of its own"),
            ));
        }
        let tls = self.tls()?;
        // An open broker on a network interface lets anyone read and inject data.
        let exposed = [
            ("listen", Some(listen)),
            ("tls_listen", tls.as_ref().map(|t| t.listen)),
            ("listen_v5", listen_v5),
        ]
        .into_iter()
        .find_map(|(key, a)| a.filter(|a| !a.ip().is_loopback()).map(|a| (key, a)));
        if let Some((key, addr)) = exposed
            && auth.is_none()
        {
            return Err(Invalid::new(
                key,
                format!(
                    "the embedded broker would listen on {addr} without authentication: \
                     set broker.username and broker.password, or listen on 127.0.0.1"
                ),
            ));
        }
        Ok(Some(BrokerSettings {
            auth,
            tls,
            listen,
            listen_v5,
            max_connections: self.max_connections.max(1),
            max_payload_size: self.max_payload_size.max(1024),
            // A segment must hold the largest message.
            segment_size: self.segment_size.max(self.max_payload_size).max(4096),
            segments: self.segments.max(1),
        }))
    }

    fn tls(&self) -> Result<Option<BrokerTls>, Invalid> {
        match (&self.tls_listen, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            // rumqttd decides client-certificate checking at compile time, for every TLS
            // listener at once; accepting the key and ignoring it would be worse than
            // saying so.
            _ if self.tls_ca.is_some() => Err(Invalid::new(
                "tls_ca",
                "the embedded broker cannot require client certificates yet; \
                 use broker.username and broker.password",
            )),
            (Some(l), Some(cert), Some(key)) => {
                let listen = l.parse().map_err(|e| {
                    Invalid::new("tls_listen", format!("{l:?} is not IP:PORT ({e})"))
                })?;
                for (k, path) in [("tls_cert", cert), ("tls_key", key)] {
                    if !Path::new(path).is_file() {
                        return Err(Invalid::new(k, format!("{path}: no such file")));
                    }
                }
                Ok(Some(BrokerTls {
                    listen,
                    cert: cert.clone(),
                    key: key.clone(),
                }))
            }
            _ => Err(Invalid::new(
                "tls_listen",
                "a TLS listener needs tls_listen, tls_cert and tls_key together",
            )),
        }
    }
}

/// `[outbox]`: the durable outbox of alarm states (link/outbox.rs).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// Where; empty: `$STATE_DIRECTORY/outbox` (systemd), else
    /// `$XDG_STATE_HOME/lookout/outbox`, else `~/.local/state/lookout/outbox`.
    pub dir: String,
    pub max_bytes: u64,
    /// fdatasync every record before it is sent.
    pub fsync: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            dir: String::new(),
            max_bytes: 16 * 1024 * 1024,
            fsync: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxSettings {
    /// One sub-directory per published host.
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub fsync: bool,
}

impl OutboxConfig {
    pub fn resolve(&self) -> Result<OutboxSettings, Invalid> {
        if self.max_bytes < 64 * 1024 {
            return Err(Invalid::new("max_bytes", "must be at least 65536"));
        }
        Ok(OutboxSettings {
            dir: if self.dir.is_empty() {
                lookout_shared::config::state_dir("outbox")
            } else {
                self.dir.clone().into()
            },
            max_bytes: self.max_bytes,
            fsync: self.fsync,
        })
    }
}

/// `[buffer]`: scores and metrics kept on disk while the agent's broker is unreachable
/// (link/buffer.rs, link/ring.rs).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    pub enabled: bool,
    /// Where; empty: the state directory's `buffer` (as `[outbox] dir`).
    pub dir: String,
    pub max_bytes: u64,
    pub max_age: HumanDuration,
    /// Messages a second when sending what was kept.
    pub replay_rate: u32,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: String::new(),
            max_bytes: 64 * 1024 * 1024,
            max_age: HumanDuration::from_secs(24 * 3600),
            replay_rate: 200,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferSettings {
    /// One sub-directory per published host.
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub replay_rate: u32,
}

impl BufferConfig {
    pub fn resolve(&self) -> Result<Option<BufferSettings>, Invalid> {
        if !self.enabled {
            return Ok(None);
        }
        if self.max_bytes < 1024 * 1024 {
            return Err(Invalid::new(
                "max_bytes",
                "must be at least 1 MiB (1048576)",
            ));
        }
        if self.replay_rate == 0 {
            return Err(Invalid::new(
                "replay_rate",
                "must be at least 1 message a second",
            ));
        }
        Ok(Some(BufferSettings {
            dir: if self.dir.is_empty() {
                lookout_shared::config::state_dir("buffer")
            } else {
                self.dir.clone().into()
            },
            max_bytes: self.max_bytes,
            max_age: self.max_age.0,
            replay_rate: self.replay_rate,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(extra: &str) -> Result<Option<BrokerSettings>, Invalid> {
        toml::from_str::<BrokerConfig>(&format!("enabled = true\n{extra}"))
            .unwrap()
            .resolve()
    }

    fn mqtt(toml_text: &str) -> Result<MqttSettings, Invalid> {
        let outbox = OutboxSettings {
            dir: PathBuf::from("/tmp/lookout-test-outbox"),
            max_bytes: 1 << 20,
            fsync: false,
        };
        toml::from_str::<MqttConfig>(toml_text)
            .unwrap()
            .resolve("h1", None, outbox, None)
    }

    #[test]
    fn protocol_and_message_expiry_default_to_3_1_1_and_an_hour_and_are_checked() {
        let s = mqtt("").unwrap();
        assert_eq!(s.protocol, Protocol::Only(Version::V311));
        assert_eq!(s.message_expiry, Some(3600));
        let s = mqtt("protocol = \"auto\"\nmessage_expiry = \"0s\"").unwrap();
        assert_eq!(s.protocol, Protocol::Auto);
        assert_eq!(s.message_expiry, None);
        let s = mqtt("protocol = \"5\"\nmessage_expiry = \"10m\"").unwrap();
        assert_eq!(s.protocol, Protocol::Only(Version::V5));
        assert_eq!(s.message_expiry, Some(600));
        assert_eq!(
            mqtt("message_expiry = \"1500ms\"").unwrap_err().key,
            "message_expiry"
        );
        let e = toml::from_str::<MqttConfig>("protocol = \"4.0\"").unwrap_err();
        assert!(e.to_string().contains("3.1.1"), "{e}");
    }

    #[test]
    fn an_mqtt_5_listener_is_off_by_default_and_checked_like_the_others() {
        assert_eq!(broker("").unwrap().unwrap().listen_v5, None);
        let s = broker("listen_v5 = \"127.0.0.1:1884\"").unwrap().unwrap();
        assert_eq!(s.listen_v5, Some("127.0.0.1:1884".parse().unwrap()));
        for (extra, key) in [
            ("listen_v5 = \"1884\"", "listen_v5"),
            ("listen_v5 = \"127.0.0.1:1883\"", "listen_v5"),
            ("listen_v5 = \"0.0.0.0:1884\"", "listen_v5"),
        ] {
            assert_eq!(broker(extra).unwrap_err().key, key, "{extra}");
        }
        let open = broker("listen_v5 = \"0.0.0.0:1884\"").unwrap_err();
        assert!(
            open.message.contains("without authentication"),
            "{}",
            open.message
        );
        let with_login = "listen_v5 = \"0.0.0.0:1884\"\nusername = \"u\"\npassword = \"p\"";
        assert!(broker(with_login).unwrap().is_some());
    }
}
