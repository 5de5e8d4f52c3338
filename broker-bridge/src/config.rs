//! The bridge's TOML config, parsed strictly and built into runtime objects in one step
//! (targets become plugins, `when` and templates are parsed): nothing at run time reads
//! raw config. Keys are documented in `docs/bridge.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use lookout_shared::duration::HumanDuration;
use lookout_shared::secret::Secret;
use lookout_shared::tls::TlsSettings;
use lookout_shared::url::MqttUrl;
use rumqttc::tokio_rustls::rustls;
use serde::Deserialize;

use crate::Error;
use crate::expr::Expr;
use crate::group::GroupSpec;
use crate::limits::{Limits, Rate};
use crate::notify::TargetConfig;
use crate::route::Route;
use crate::silence::{Silence, SilenceRaw};
use crate::template::Template;

pub const DEFAULT_TITLE: &str = "[{state}] {host}: {source} (severity {severity})";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    #[serde(default)]
    pub bridge: BridgeRaw,
    #[serde(default)]
    pub mqtt: MqttRaw,
    #[serde(default)]
    pub delivery: DeliveryRaw,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    #[serde(default)]
    pub routes: Vec<RouteRaw>,
    #[serde(default)]
    pub silences: Vec<SilenceRaw>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeRaw {
    /// Names this bridge in its stats topic; default: the host name.
    pub id: String,
    pub prefix: String,
    pub stats_interval: HumanDuration,
    /// Larger payloads are counted and skipped; also each route's default `max_payload`.
    pub max_payload: usize,
    /// Each route's default `max_topic_length`, in bytes.
    pub max_topic_length: usize,
    /// `(target, alarm id, state)` keys remembered for dedup.
    pub dedup_capacity: usize,
    /// Directory of the notification log (dedup keys and queued notifications), which
    /// survives restarts; `""` keeps it in memory only.
    pub state_dir: PathBuf,
    /// fsync the notification log at most this often; `"0s"`: after every record.
    pub state_sync: HumanDuration,
    /// How long SIGTERM waits for queues to drain.
    pub grace: HumanDuration,
    /// Hold back the alarms of hosts whose status is `offline` and send one "offline"
    /// alarm instead.
    pub inhibit_offline: bool,
}

impl Default for BridgeRaw {
    fn default() -> Self {
        Self {
            id: String::new(),
            prefix: lookout_shared::topics::DEFAULT_PREFIX.into(),
            stats_interval: HumanDuration::from_secs(60),
            max_payload: 64 * 1024,
            max_topic_length: 512,
            dedup_capacity: 100_000,
            state_dir: PathBuf::from("bridge-state"),
            state_sync: HumanDuration::from_secs(1),
            grace: HumanDuration::from_secs(10),
            inhibit_offline: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttRaw {
    pub url: String,
    pub topics: Vec<String>,
    pub share_group: Option<String>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The password from a file (trailing newline removed); instead of `password`.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates for `mqtts://`; default: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and its key, for brokers that require them (mutual TLS).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept any broker certificate for any name. Logged at warn on every start.
    pub insecure_skip_verify: bool,
    pub keep_alive: HumanDuration,
}

impl Default for MqttRaw {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            topics: vec!["lookout/+/alarms/#".into()],
            share_group: None,
            client_id: String::new(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            insecure_skip_verify: false,
            keep_alive: HumanDuration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryRaw {
    /// Notifications waiting per target; a full queue holds back MQTT acknowledgements.
    pub queue: usize,
    /// Attempts after the first one.
    pub retries: u32,
    pub backoff_min: HumanDuration,
    pub backoff_max: HumanDuration,
    /// Per attempt.
    pub timeout: HumanDuration,
    /// JSON lines of notifications that failed for good.
    pub dead_letter: PathBuf,
}

impl Default for DeliveryRaw {
    fn default() -> Self {
        Self {
            queue: 1024,
            retries: 5,
            backoff_min: HumanDuration::from_millis(500),
            backoff_max: HumanDuration::from_secs(30),
            timeout: HumanDuration::from_secs(10),
            dead_letter: PathBuf::from("dead-letter.jsonl"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRaw {
    pub topic: String,
    pub when: Option<String>,
    pub targets: Vec<String>,
    pub title: Option<String>,
    /// Default: the message as one line of JSON (or its text).
    pub body: Option<String>,
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Send a still-firing alarm again after this long (Alertmanager's repeat_interval).
    pub repeat_interval: Option<HumanDuration>,
    /// Batch notifications that agree on these fields (e.g. `["labels.site"]`) into one.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long a new group waits for more members before it goes out.
    #[serde(default = "group_wait")]
    pub group_wait: HumanDuration,
    /// At most one batch per group per this long.
    #[serde(default = "group_interval")]
    pub group_interval: HumanDuration,
    /// Larger payloads are dropped for this route; default and ceiling `bridge.max_payload`.
    pub max_payload: Option<usize>,
    /// Longer topics are dropped for this route; default `bridge.max_topic_length`.
    pub max_topic_length: Option<usize>,
    /// Messages per second this route takes on average (token bucket); default: no limit.
    pub rate_limit: Option<f64>,
    /// Messages the route takes at once before `rate_limit` applies; default: one
    /// second's worth (at least 1).
    pub rate_burst: Option<u32>,
}

fn group_wait() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn group_interval() -> HumanDuration {
    HumanDuration::from_secs(300)
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug)]
pub struct MqttSettings {
    pub url: MqttUrl,
    /// The TLS keys as given (for check-config), and the client config built from them
    /// (`Some` with `mqtts://`): files are read once, here.
    pub tls: TlsSettings,
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    pub filters: Vec<String>,
    pub client_id: String,
    pub username: Option<String>,
    /// From `password` or `password_file`.
    pub password: Option<Secret>,
    pub keep_alive: Duration,
}

#[derive(Clone, Debug)]
pub struct DeliverySettings {
    pub queue: usize,
    pub retries: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub timeout: Duration,
    pub dead_letter: PathBuf,
}

/// Everything the bridge runs on, except the plugins (built inside the runtime).
#[derive(Debug)]
pub struct Settings {
    pub id: String,
    pub prefix: String,
    pub stats_interval: Duration,
    pub max_payload: usize,
    pub dedup_capacity: usize,
    /// `None`: the notification log is kept in memory only.
    pub state_dir: Option<PathBuf>,
    pub state_sync: Duration,
    pub grace: Duration,
    pub mqtt: MqttSettings,
    pub delivery: DeliverySettings,
    /// Target names and their configs, in index order.
    pub targets: Vec<(String, TargetConfig)>,
    pub routes: Vec<Route>,
    pub silences: Vec<Silence>,
    pub inhibit_offline: bool,
}

pub struct Source {
    pub origin: String,
    pub text: String,
}

impl Source {
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            origin: path.display().to_string(),
            text,
        })
    }

    fn err(&self, key: &str, message: impl std::fmt::Display) -> Error {
        Error::Config {
            path: self.origin.clone(),
            message: format!("{key}: {message}"),
        }
    }

    pub fn load(&self, overrides: &[String]) -> Result<Settings, Error> {
        let raw: Raw = lookout_shared::overrides::parse_toml(&self.origin, &self.text, overrides)
            .map_err(|(path, message)| Error::Config { path, message })?;
        self.resolve(raw)
    }

    fn resolve(&self, raw: Raw) -> Result<Settings, Error> {
        let url = lookout_shared::url::parse(&raw.mqtt.url).map_err(|m| self.err("mqtt.url", m))?;
        let m = &raw.mqtt;
        let tls = TlsSettings {
            ca_file: m.ca_file.clone(),
            cert_file: m.cert_file.clone(),
            key_file: m.key_file.clone(),
            insecure_skip_verify: m.insecure_skip_verify,
        };
        let tls_err =
            |e: lookout_shared::tls::TlsError| self.err(&format!("mqtt.{}", e.key()), e.reason());
        tls.check(url.tls).map_err(tls_err)?;
        let password =
            lookout_shared::tls::password(m.password.clone(), m.password_file.as_deref())
                .map_err(tls_err)?;
        if password.is_some() && m.username.is_none() {
            return Err(self.err("mqtt.username", "is required when a password is set"));
        }
        let tls_config = if url.tls {
            Some(Arc::new(
                lookout_shared::tls::client_config(&tls, "bridge mqtt").map_err(tls_err)?,
            ))
        } else {
            None
        };
        if raw.mqtt.topics.is_empty() {
            return Err(self.err("mqtt.topics", "list at least one topic filter"));
        }
        let filters = match &raw.mqtt.share_group {
            Some(g) if g.is_empty() || g.contains(['/', '+', '#']) => {
                return Err(self.err(
                    "mqtt.share_group",
                    "a non-empty name without '/', '+' or '#'",
                ));
            }
            Some(g) => raw
                .mqtt
                .topics
                .iter()
                .map(|t| format!("$share/{g}/{t}"))
                .collect(),
            None => raw.mqtt.topics.clone(),
        };
        let id = if raw.bridge.id.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "bridge".into())
        } else {
            raw.bridge.id.clone()
        };
        let id = lookout_shared::topics::sanitize_level(&id);
        if raw.targets.is_empty() {
            return Err(self.err("targets", "define at least one [targets.NAME] table"));
        }
        let names: Vec<&String> = raw.targets.keys().collect();
        let mut routes = Vec::with_capacity(raw.routes.len());
        if raw.routes.is_empty() {
            return Err(self.err("routes", "define at least one [[routes]] table"));
        }
        for (i, r) in raw.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let when = r
                .when
                .as_deref()
                .map(Expr::parse)
                .transpose()
                .map_err(|m| self.err(&format!("{key}.when"), m))?;
            let mut targets = Vec::with_capacity(r.targets.len());
            for t in &r.targets {
                let idx = names.iter().position(|n| *n == t).ok_or_else(|| {
                    self.err(
                        &format!("{key}.targets"),
                        format!("no target named {t:?}; define [targets.{t}]"),
                    )
                })?;
                targets.push(idx);
            }
            if targets.is_empty() {
                return Err(self.err(&format!("{key}.targets"), "list at least one target"));
            }
            let title = r
                .title
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(|m| self.err(&format!("{key}.title"), m))?;
            let body = r
                .body
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(|m| self.err(&format!("{key}.body"), m))?;
            let max_payload = r.max_payload.unwrap_or(raw.bridge.max_payload);
            if max_payload > raw.bridge.max_payload {
                return Err(self.err(
                    &format!("{key}.max_payload"),
                    format!(
                        "{max_payload} is over bridge.max_payload ({}), which every message \
                         must pass first",
                        raw.bridge.max_payload
                    ),
                ));
            }
            let rate = match (r.rate_limit, r.rate_burst) {
                (None, None) => None,
                (None, Some(_)) => {
                    return Err(self.err(&format!("{key}.rate_burst"), "needs rate_limit"));
                }
                (Some(per_second), burst) => {
                    if !(per_second.is_finite() && per_second > 0.0) {
                        return Err(self.err(
                            &format!("{key}.rate_limit"),
                            "must be a number of messages per second above 0",
                        ));
                    }
                    let burst = match burst {
                        Some(0) => {
                            return Err(
                                self.err(&format!("{key}.rate_burst"), "must be at least 1")
                            );
                        }
                        Some(b) => f64::from(b),
                        None => per_second.ceil().max(1.0),
                    };
                    Some(Rate { per_second, burst })
                }
            };
            routes.push(Route {
                topic: r.topic.clone(),
                when,
                targets,
                title,
                body,
                send_resolved: r.send_resolved,
                repeat_interval: r.repeat_interval.map(|d| d.0.max(Duration::from_secs(1))),
                group: (!r.group_by.is_empty()).then(|| GroupSpec {
                    by: r
                        .group_by
                        .iter()
                        .map(|p| p.split('.').map(str::to_owned).collect())
                        .collect(),
                    wait: r.group_wait.0,
                    interval: r.group_interval.0.max(Duration::from_secs(1)),
                }),
                limits: Limits {
                    max_payload,
                    max_topic_length: r.max_topic_length.unwrap_or(raw.bridge.max_topic_length),
                    rate,
                },
            });
        }
        let silences = raw
            .silences
            .iter()
            .enumerate()
            .map(|(i, s)| Silence::build(s).map_err(|m| self.err(&format!("silences[{i}]"), m)))
            .collect::<Result<Vec<_>, _>>()?;
        let d = &raw.delivery;
        if d.queue == 0 {
            return Err(self.err("delivery.queue", "must be at least 1"));
        }
        Ok(Settings {
            id: id.clone(),
            prefix: raw.bridge.prefix.clone(),
            stats_interval: raw.bridge.stats_interval.0.max(Duration::from_secs(1)),
            max_payload: raw.bridge.max_payload.max(1),
            dedup_capacity: raw.bridge.dedup_capacity,
            state_dir: (!raw.bridge.state_dir.as_os_str().is_empty())
                .then(|| raw.bridge.state_dir.clone()),
            state_sync: raw.bridge.state_sync.0,
            grace: raw.bridge.grace.0,
            mqtt: MqttSettings {
                url,
                tls,
                tls_config,
                filters,
                client_id: if raw.mqtt.client_id.is_empty() {
                    format!("lookout-bridge-{id}")
                } else {
                    raw.mqtt.client_id.clone()
                },
                username: raw.mqtt.username.clone(),
                password,
                keep_alive: raw.mqtt.keep_alive.0.max(Duration::from_secs(5)),
            },
            delivery: DeliverySettings {
                queue: d.queue,
                retries: d.retries,
                backoff_min: d.backoff_min.0,
                backoff_max: d.backoff_max.0.max(d.backoff_min.0),
                timeout: d.timeout.0.max(Duration::from_millis(10)),
                dead_letter: d.dead_letter.clone(),
            },
            targets: raw.targets.into_iter().collect(),
            routes,
            silences,
            inhibit_offline: raw.bridge.inhibit_offline,
        })
    }
}
