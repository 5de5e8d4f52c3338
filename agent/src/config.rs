//! The agent's TOML config: parsed strictly (unknown keys are errors), `--set` overrides
//! applied to the raw document, then validated and resolved in one step into the
//! [`Settings`] the agent runs on. Nothing at run time reads raw config.
//!
//! Every key is documented in `docs/config.md`; the shipped `configs/agent.toml` sets the
//! same defaults as [`DetectorRaw::builtin`], which is also what `replay` runs without a
//! config (a test keeps the two equal).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lookout_shared::duration::HumanDuration;
use lookout_shared::payload::Labels;
use lookout_shared::secret::Secret;
use serde::Deserialize;

use crate::Error;
use crate::alarm::{Direction, Grading, SaturationParams};
use crate::rules::{Limits, RuleSet};
use crate::scorer::{ContextParams, Distance, ModelParams, Scale};
use crate::simulate::SimParams;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    #[serde(default)]
    pub agent: AgentRaw,
    #[serde(default)]
    pub mqtt: MqttRaw,
    #[serde(default)]
    pub broker: BrokerRaw,
    #[serde(default)]
    pub detector: DetectorRaw,
    #[serde(default)]
    pub models: BTreeMap<String, DetectorRaw>,
    #[serde(default)]
    pub sim_models: BTreeMap<String, DetectorRaw>,
    #[serde(default)]
    pub simulate: SimParams,
    #[serde(default)]
    pub rules: RulesRaw,
    #[serde(default)]
    pub ingest: IngestRaw,
    #[serde(default)]
    pub outbox: OutboxRaw,
    #[serde(default)]
    pub homeassistant: HomeAssistantRaw,
}

/// `[homeassistant]`: MQTT discovery configs so that each host appears in Home Assistant
/// as a device (crate::homeassistant). Off by default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantRaw {
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    pub prefix: String,
}

impl Default for HomeAssistantRaw {
    fn default() -> Self {
        Self {
            enabled: false,
            prefix: crate::homeassistant::DEFAULT_PREFIX.into(),
        }
    }
}

/// The resolved `[homeassistant]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeAssistantSettings {
    pub enabled: bool,
    pub prefix: String,
}

/// The durable outbox of alarm states (link/outbox.rs).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxRaw {
    /// Where; empty: `$STATE_DIRECTORY/outbox` (systemd), else
    /// `$XDG_STATE_HOME/lookout/outbox`, else `~/.local/state/lookout/outbox`.
    pub dir: String,
    pub max_bytes: u64,
    /// fdatasync every record before it is sent.
    pub fsync: bool,
}

impl Default for OutboxRaw {
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
    pub dir: std::path::PathBuf,
    pub max_bytes: u64,
    pub fsync: bool,
}

/// The outbox directory when the config names none.
fn default_outbox_dir() -> std::path::PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("STATE_DIRECTORY") {
        // systemd may pass several, separated by ':'; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return Path::new(&first).join("outbox");
    }
    if let Some(d) = var("XDG_STATE_HOME") {
        return Path::new(&d).join("lookout/outbox");
    }
    if let Some(h) = var("HOME") {
        return Path::new(&h).join(".local/state/lookout/outbox");
    }
    Path::new(".lookout-state/outbox").to_owned()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentRaw {
    /// Empty: the machine's host name.
    pub host: String,
    pub interval: HumanDuration,
    pub labels: Labels,
    /// How often `<prefix>/<host>/agent/stats` is published; 0s: never.
    pub stats_interval: HumanDuration,
}

impl Default for AgentRaw {
    fn default() -> Self {
        Self {
            host: String::new(),
            interval: HumanDuration::from_secs(1),
            labels: Labels::new(),
            stats_interval: HumanDuration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttRaw {
    pub url: String,
    pub prefix: String,
    pub client_id: String,
    pub keep_alive: HumanDuration,
    /// Messages held for the broker before lossy ones (metrics, scores) are dropped.
    pub queue: usize,
    pub reconnect_min: HumanDuration,
    pub reconnect_max: HumanDuration,
    pub username: Option<String>,
    /// A literal, `env:NAME` or `file:/path` (shared::secret).
    pub password: Option<Secret>,
    pub password_file: Option<std::path::PathBuf>,
    /// TLS for `mqtts://` (shared::tls): CA, client certificate and key, and the loudly
    /// logged escape hatch.
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    pub insecure_skip_verify: bool,
}

impl Default for MqttRaw {
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
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerRaw {
    pub enabled: bool,
    pub listen: String,
    pub max_connections: usize,
    pub max_payload_size: usize,
    /// rumqttd keeps recent messages of each topic in segments for slow subscribers:
    /// memory per topic is at most `segment_size × segments`.
    pub segment_size: usize,
    pub segments: usize,
    /// Clients must log in with these; required when any listener is not on loopback
    /// (unless `tls_ca` requires client certificates).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// A TLS listener beside the plain one: address, certificate chain and key (PEM).
    /// `tls_ca` (client certificates) is refused with an explanation: rumqttd fixes that
    /// choice at compile time.
    pub tls_listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_ca: Option<String>,
}

impl Default for BrokerRaw {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:1883".into(),
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

/// `[rules]`: threshold rules (docs/rules.md). Documents may also come over MQTT, so the
/// table is optional.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesRaw {
    /// A rules document, watched for changes. Empty: none (`--set rules.file=` turns a
    /// configured one off).
    pub file: String,
    /// Open groups per rule and window; bounds the engine's memory.
    pub groups_per_window: usize,
}

impl Default for RulesRaw {
    fn default() -> Self {
        Self {
            file: String::new(),
            groups_per_window: Limits::default().groups_per_window,
        }
    }
}

/// `[ingest]`: events from devices that cannot run the agent, on `<prefix>/ingest/#`.
/// Off by default: an agent takes other devices' data only when told to.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestRaw {
    pub enabled: bool,
}

/// Detector parameters. `[detector]` sets them for every model; a model's table may set
/// any of them again for itself. All optional so that "not set here" can fall through.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DetectorRaw {
    /// Only in a model's table: `{ "system.cpu" = ["user", "system"] }`.
    pub metrics: Option<BTreeMap<String, Vec<String>>>,
    pub diffs: Option<bool>,
    pub n_smoothing: Option<usize>,
    pub n_lags: Option<usize>,
    pub n_clusters: Option<usize>,
    pub train_data_size: Option<usize>,
    pub train_every_n: Option<usize>,
    pub anomaly_score_cap: Option<f64>,
    pub threshold: Option<f64>,
    #[serde(rename = "for")]
    pub for_ticks: Option<u32>,
    pub resolve_after: Option<u32>,
    pub n_init: Option<usize>,
    pub max_iter: Option<usize>,
    pub seed: Option<u64>,
    pub distance: Option<String>,
    pub scale: Option<String>,
    pub scale_quantile: Option<f64>,
    pub ensemble: Option<usize>,
    pub min_train_points: Option<usize>,
    pub suppress: Option<u32>,
    pub context_levels: Option<usize>,
    pub context_length: Option<usize>,
    pub context_window: Option<usize>,
    pub context_memory: Option<usize>,
    pub context_threshold: Option<f64>,
    pub t2: Option<f64>,
    pub step: Option<f64>,
    pub direction: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<f64>,
    pub saturation_pct: Option<f64>,
    pub saturation_window: Option<HumanDuration>,
    pub saturation_rises_near_limit: Option<u32>,
    pub saturation_rises_level2: Option<u32>,
    pub saturation_rises_level3: Option<u32>,
    pub upper_limit: Option<f64>,
    pub down_limit: Option<f64>,
    pub only_show_anomaly: Option<bool>,
    pub decay: Option<f64>,
}

impl DetectorRaw {
    /// The built-in default detector: what `replay` runs without `--config`, and what the
    /// shipped `configs/agent.toml` writes out in its `[detector]` table.
    pub fn builtin() -> Self {
        Self {
            metrics: None,
            diffs: Some(false),
            n_smoothing: Some(3),
            n_lags: Some(5),
            n_clusters: Some(6),
            train_data_size: Some(1440),
            train_every_n: Some(360),
            anomaly_score_cap: Some(10.0),
            threshold: Some(1.75),
            for_ticks: Some(1),
            resolve_after: Some(5),
            n_init: Some(10),
            max_iter: Some(300),
            seed: Some(0),
            distance: Some("nearest".into()),
            scale: Some("quantile".into()),
            scale_quantile: Some(0.99),
            ensemble: Some(12),
            min_train_points: Some(150),
            suppress: Some(288),
            context_levels: Some(8),
            context_length: Some(3),
            context_window: Some(5),
            context_memory: Some(0),
            context_threshold: Some(1.0),
            t2: Some(0.2),
            step: Some(0.2),
            direction: Some("both".into()),
            kind: Some("normal".into()),
            limit: None,
            saturation_pct: Some(70.0),
            saturation_window: Some(HumanDuration::from_secs(300)),
            saturation_rises_near_limit: Some(2),
            saturation_rises_level2: Some(3),
            saturation_rises_level3: Some(5),
            upper_limit: None,
            down_limit: None,
            only_show_anomaly: Some(false),
            decay: Some(0.0),
        }
    }

    /// This table over the built-in default.
    pub fn or_builtin(&self) -> Self {
        self.or(&Self::builtin())
    }

    /// `self` where set, else `base`.
    pub fn or(&self, base: &Self) -> Self {
        Self {
            metrics: self.metrics.clone().or_else(|| base.metrics.clone()),
            diffs: self.diffs.or(base.diffs),
            n_smoothing: self.n_smoothing.or(base.n_smoothing),
            n_lags: self.n_lags.or(base.n_lags),
            n_clusters: self.n_clusters.or(base.n_clusters),
            train_data_size: self.train_data_size.or(base.train_data_size),
            train_every_n: self.train_every_n.or(base.train_every_n),
            anomaly_score_cap: self.anomaly_score_cap.or(base.anomaly_score_cap),
            threshold: self.threshold.or(base.threshold),
            for_ticks: self.for_ticks.or(base.for_ticks),
            resolve_after: self.resolve_after.or(base.resolve_after),
            n_init: self.n_init.or(base.n_init),
            max_iter: self.max_iter.or(base.max_iter),
            seed: self.seed.or(base.seed),
            distance: self.distance.clone().or_else(|| base.distance.clone()),
            scale: self.scale.clone().or_else(|| base.scale.clone()),
            scale_quantile: self.scale_quantile.or(base.scale_quantile),
            ensemble: self.ensemble.or(base.ensemble),
            min_train_points: self.min_train_points.or(base.min_train_points),
            suppress: self.suppress.or(base.suppress),
            context_levels: self.context_levels.or(base.context_levels),
            context_length: self.context_length.or(base.context_length),
            context_window: self.context_window.or(base.context_window),
            context_memory: self.context_memory.or(base.context_memory),
            context_threshold: self.context_threshold.or(base.context_threshold),
            t2: self.t2.or(base.t2),
            step: self.step.or(base.step),
            direction: self.direction.clone().or_else(|| base.direction.clone()),
            kind: self.kind.clone().or_else(|| base.kind.clone()),
            limit: self.limit.or(base.limit),
            saturation_pct: self.saturation_pct.or(base.saturation_pct),
            saturation_window: self.saturation_window.or(base.saturation_window),
            saturation_rises_near_limit: self
                .saturation_rises_near_limit
                .or(base.saturation_rises_near_limit),
            saturation_rises_level2: self
                .saturation_rises_level2
                .or(base.saturation_rises_level2),
            saturation_rises_level3: self
                .saturation_rises_level3
                .or(base.saturation_rises_level3),
            upper_limit: self.upper_limit.or(base.upper_limit),
            down_limit: self.down_limit.or(base.down_limit),
            only_show_anomaly: self.only_show_anomaly.or(base.only_show_anomaly),
            decay: self.decay.or(base.decay),
        }
    }
}

/// When an anomalous score becomes an alarm and when it ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AlarmParams {
    pub threshold: f64,
    /// Consecutive anomalous ticks before firing.
    pub for_ticks: u32,
    /// Consecutive normal ticks before resolving.
    pub resolve_after: u32,
    /// Ticks after an alarm fires during which the same model does not fire again.
    pub suppress: u32,
    /// A tick is also anomalous when this share of the last ticks had unseen contexts.
    pub context_threshold: f64,
    /// Severity levels above the threshold (seed `003`).
    pub grading: Grading,
    pub direction: Direction,
    /// Set for `kind = "saturation"` models.
    pub saturation: Option<SaturationParams>,
}

impl AlarmParams {
    /// Threshold only: no hysteresis, suppression, direction or saturation; the seed's
    /// grading. For tests and tools that judge bare scores.
    pub fn with_threshold(threshold: f64) -> Self {
        Self {
            threshold,
            for_ticks: 1,
            resolve_after: 1,
            suppress: 0,
            context_threshold: 1.0,
            grading: Grading::default(),
            direction: Direction::Both,
            saturation: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Detector {
    pub params: ModelParams,
    pub alarm: AlarmParams,
    /// Values outside `[down_limit, upper_limit]` are invalid: counted, not scored.
    pub down_limit: Option<f64>,
    pub upper_limit: Option<f64>,
    /// Publish scores only for anomalous ticks (seed `000`'s `only_show_anomaly`).
    pub only_show_anomaly: bool,
}

impl Detector {
    /// Whether `v` lies within the model's `data_meta` limits.
    pub fn valid(&self, v: f64) -> bool {
        self.down_limit.is_none_or(|lo| v >= lo) && self.upper_limit.is_none_or(|hi| v <= hi)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    /// (chart, dimension) in the order they form the feature vector.
    pub metrics: Vec<(String, String)>,
    pub detector: Detector,
}

#[derive(Clone, Debug)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub client_id: String,
    pub keep_alive: Duration,
    pub queue: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Username and password the agent logs in with.
    pub credentials: Option<(String, Secret)>,
    pub outbox: OutboxSettings,
    /// `mqtts://`, and the TLS keys (checked, files read once, at start).
    pub tls: bool,
    pub tls_settings: lookout_shared::tls::TlsSettings,
}

#[derive(Clone, Debug)]
pub struct BrokerSettings {
    pub listen: SocketAddr,
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

/// Past this a window's groups are more likely a runaway dimension than a fleet.
const MAX_GROUPS_PER_WINDOW: usize = 1_000_000;

#[derive(Clone, Debug)]
pub struct RulesSettings {
    /// The watched rules file, read and validated at start into `initial`.
    pub file: Option<PathBuf>,
    /// The file's rules, or none without a file.
    pub initial: RuleSet,
    pub limits: Limits,
}

#[derive(Clone, Copy, Debug)]
pub struct IngestSettings {
    pub enabled: bool,
}

/// The validated config the agent runs on.
#[derive(Clone, Debug)]
pub struct Settings {
    pub host: String,
    pub labels: Labels,
    pub interval: Duration,
    /// `agent/stats` period (wall time); zero: off.
    pub stats_interval: Duration,
    pub mqtt: MqttSettings,
    pub broker: Option<BrokerSettings>,
    pub models: Vec<ModelSpec>,
    pub sim_models: Vec<ModelSpec>,
    pub simulate: SimParams,
    pub rules: RulesSettings,
    pub ingest: IngestSettings,
    pub homeassistant: HomeAssistantSettings,
}

/// A config document as read, with where it came from (for error messages).
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

    /// No file: built-in defaults.
    pub fn empty() -> Self {
        Self {
            origin: "(built-in defaults)".into(),
            text: String::new(),
        }
    }

    fn err(&self, key: &str, message: impl std::fmt::Display) -> Error {
        let at = match find_line(&self.text, key) {
            Some(line) => format!("{}:{line}", self.origin),
            None => self.origin.clone(),
        };
        Error::Config {
            path: at,
            message: format!("{key}: {message}"),
        }
    }

    /// Parses, applies `KEY=VALUE` overrides, and returns the raw document.
    pub fn parse(&self, overrides: &[String]) -> Result<Raw, Error> {
        lookout_shared::overrides::parse_toml(&self.origin, &self.text, overrides)
            .map_err(|(path, message)| Error::Config { path, message })
    }

    /// Parses and validates into runnable settings.
    pub fn load(&self, overrides: &[String]) -> Result<Settings, Error> {
        let raw = self.parse(overrides)?;
        self.resolve(raw)
    }

    pub fn resolve(&self, raw: Raw) -> Result<Settings, Error> {
        if raw.detector.metrics.is_some() {
            return Err(self.err(
                "detector.metrics",
                "metrics belong in a model's table, [models.NAME]",
            ));
        }
        let base = raw.detector.or(&DetectorRaw::builtin());
        let interval = raw.agent.interval.0;
        if interval.is_zero() {
            return Err(self.err("agent.interval", "must be longer than 0s"));
        }
        let url = lookout_shared::url::parse(&raw.mqtt.url).map_err(|m| self.err("mqtt.url", m))?;
        let (host, port) = (url.host.clone(), url.port);
        let tls_settings = lookout_shared::tls::TlsSettings {
            ca_file: raw.mqtt.ca_file.clone(),
            cert_file: raw.mqtt.cert_file.clone(),
            key_file: raw.mqtt.key_file.clone(),
            insecure_skip_verify: raw.mqtt.insecure_skip_verify,
        };
        // Read and check the files now: a wrong path fails at start, naming the key.
        lookout_shared::tls::transport(&url, &tls_settings, "agent")
            .map_err(|e| self.err(&format!("mqtt.{}", e.key()), e.reason()))?;
        let mqtt_password = lookout_shared::tls::password(
            raw.mqtt.password.clone(),
            raw.mqtt.password_file.as_deref(),
        )
        .map_err(|e| self.err(&format!("mqtt.{}", e.key()), e.reason()))?;
        if raw.mqtt.prefix.is_empty() || raw.mqtt.prefix.contains(['+', '#']) {
            return Err(self.err(
                "mqtt.prefix",
                "must be non-empty and free of MQTT wildcards",
            ));
        }
        if raw.mqtt.queue == 0 {
            return Err(self.err("mqtt.queue", "must be at least 1"));
        }
        let agent_host = if raw.agent.host.is_empty() {
            detect_hostname()
        } else {
            raw.agent.host.clone()
        };
        let agent_host = lookout_shared::topics::sanitize_level(&agent_host);
        let broker = if raw.broker.enabled {
            let listen: SocketAddr = raw.broker.listen.parse().map_err(|e| {
                self.err(
                    "broker.listen",
                    format!("{:?} is not IP:PORT ({e})", raw.broker.listen),
                )
            })?;
            let b = &raw.broker;
            let auth = match (&b.username, &b.password) {
                (Some(u), Some(p)) if !u.is_empty() => Some((u.clone(), p.clone())),
                (None, None) => None,
                _ => {
                    return Err(self.err(
                        "broker.username",
                        "set both broker.username and broker.password, or neither",
                    ));
                }
            };
            let tls = match (&b.tls_listen, &b.tls_cert, &b.tls_key) {
                (None, None, None) => None,
                _ if b.tls_ca.is_some() => {
                    // rumqttd decides client-certificate checking at compile time, for
                    // every TLS listener at once; accepting the key and ignoring it would
                    // be worse than saying so.
                    return Err(self.err(
                        "broker.tls_ca",
                        "the embedded broker cannot require client certificates yet; \
                         use broker.username and broker.password",
                    ));
                }
                (Some(l), Some(cert), Some(key)) => {
                    let listen = l.parse().map_err(|e| {
                        self.err("broker.tls_listen", format!("{l:?} is not IP:PORT ({e})"))
                    })?;
                    for (k, path) in [("broker.tls_cert", cert), ("broker.tls_key", key)] {
                        if !Path::new(path).is_file() {
                            return Err(self.err(k, format!("{path}: no such file")));
                        }
                    }
                    Some(BrokerTls {
                        listen,
                        cert: cert.clone(),
                        key: key.clone(),
                    })
                }
                _ => {
                    return Err(self.err(
                        "broker.tls_listen",
                        "a TLS listener needs tls_listen, tls_cert and tls_key together",
                    ));
                }
            };
            // An open broker on a network interface lets anyone read and inject data.
            let exposed = [Some(listen), tls.as_ref().map(|t| t.listen)]
                .into_iter()
                .flatten()
                .find(|a| !a.ip().is_loopback());
            if let Some(addr) = exposed
                && auth.is_none()
            {
                return Err(self.err(
                    "broker.listen",
                    format!(
                        "the embedded broker would listen on {addr} without authentication: \
                         set broker.username and broker.password, or listen on 127.0.0.1"
                    ),
                ));
            }
            Some(BrokerSettings {
                auth,
                tls,
                listen,
                max_connections: raw.broker.max_connections.max(1),
                max_payload_size: raw.broker.max_payload_size.max(1024),
                // A segment must hold the largest message.
                segment_size: raw
                    .broker
                    .segment_size
                    .max(raw.broker.max_payload_size)
                    .max(4096),
                segments: raw.broker.segments.max(1),
            })
        } else {
            None
        };
        let simulate = raw.simulate.clone();
        simulate.validate().map_err(|m| self.err("simulate", m))?;
        let models = self.resolve_models("models", &raw.models, &base)?;
        let sim_models = self.resolve_models("sim_models", &raw.sim_models, &base)?;
        if agent_host == lookout_shared::topics::INGEST {
            return Err(self.err(
                "agent.host",
                "\"ingest\" is reserved: <prefix>/ingest/# carries ingested events; set another name",
            ));
        }
        let rules = self.resolve_rules(&raw.rules)?;
        let homeassistant = self.resolve_homeassistant(&raw.homeassistant, &models, &sim_models)?;
        Ok(Settings {
            host: agent_host.clone(),
            labels: raw.agent.labels.clone(),
            interval,
            stats_interval: raw.agent.stats_interval.0,
            mqtt: MqttSettings {
                host,
                port,
                prefix: raw.mqtt.prefix.clone(),
                client_id: if raw.mqtt.client_id.is_empty() {
                    format!("lookout-agent-{agent_host}")
                } else {
                    raw.mqtt.client_id.clone()
                },
                keep_alive: raw.mqtt.keep_alive.0.max(Duration::from_secs(5)),
                queue: raw.mqtt.queue,
                reconnect_min: raw.mqtt.reconnect_min.0.max(Duration::from_millis(10)),
                reconnect_max: raw.mqtt.reconnect_max.0.max(raw.mqtt.reconnect_min.0),
                // The agent's own client logs in to its embedded broker with the broker's
                // credentials unless [mqtt] names others.
                outbox: {
                    let o = &raw.outbox;
                    if o.max_bytes < 64 * 1024 {
                        return Err(self.err("outbox.max_bytes", "must be at least 65536"));
                    }
                    OutboxSettings {
                        dir: if o.dir.is_empty() {
                            default_outbox_dir()
                        } else {
                            o.dir.clone().into()
                        },
                        max_bytes: o.max_bytes,
                        fsync: o.fsync,
                    }
                },
                tls: url.tls,
                tls_settings,
                credentials: match (&raw.mqtt.username, &mqtt_password) {
                    (Some(u), Some(p)) => Some((u.clone(), p.clone())),
                    (None, None) => broker.as_ref().and_then(|b| b.auth.clone()),
                    _ => {
                        return Err(self.err(
                            "mqtt.username",
                            "set both mqtt.username and mqtt.password, or neither",
                        ));
                    }
                },
            },
            broker,
            models,
            sim_models,
            simulate,
            rules,
            ingest: IngestSettings {
                enabled: raw.ingest.enabled,
            },
            homeassistant,
        })
    }

    /// Checks `[homeassistant]`. The prefix is checked whether or not discovery is on: with
    /// it off the agent still clears, under that prefix, the configs it published before.
    /// With it on, model names must stay distinct once reduced to the characters Home
    /// Assistant allows in discovery topics.
    fn resolve_homeassistant(
        &self,
        raw: &HomeAssistantRaw,
        models: &[ModelSpec],
        sim_models: &[ModelSpec],
    ) -> Result<HomeAssistantSettings, Error> {
        crate::homeassistant::check_prefix(&raw.prefix)
            .map_err(|m| self.err("homeassistant.prefix", m))?;
        if raw.enabled {
            for (table, specs) in [("models", models), ("sim_models", sim_models)] {
                let mut seen = BTreeMap::new();
                for s in specs {
                    let id = crate::homeassistant::object_id(&s.name);
                    if let Some(other) = seen.insert(id.clone(), &s.name) {
                        return Err(self.err(
                            &format!("{table}.{}", s.name),
                            format!(
                                "with homeassistant.enabled, model names must differ in letters, \
                                 digits, '_' and '-': {other:?} and {:?} both become {id:?}",
                                s.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(HomeAssistantSettings {
            enabled: raw.enabled,
            prefix: raw.prefix.clone(),
        })
    }

    /// Checks `[rules]` and reads its file: a rules file that is missing or invalid at start
    /// is a config error (exit 2), naming the config line and the rule at fault. Later
    /// changes to the file are checked by the running agent, which keeps the old rules
    /// when a new version is invalid.
    fn resolve_rules(&self, raw: &RulesRaw) -> Result<RulesSettings, Error> {
        let groups = raw.groups_per_window;
        if !(1..=MAX_GROUPS_PER_WINDOW).contains(&groups) {
            return Err(self.err(
                "rules.groups_per_window",
                format!("must be 1 to {MAX_GROUPS_PER_WINDOW}, got {groups}"),
            ));
        }
        let (file, initial) = if raw.file.is_empty() {
            (None, RuleSet::default())
        } else {
            let path = PathBuf::from(&raw.file);
            let set = RuleSet::read(&path).map_err(|e| self.err("rules.file", e))?;
            (Some(path), set)
        };
        Ok(RulesSettings {
            file,
            initial,
            limits: Limits {
                groups_per_window: groups,
            },
        })
    }

    fn resolve_models(
        &self,
        table: &str,
        models: &BTreeMap<String, DetectorRaw>,
        base: &DetectorRaw,
    ) -> Result<Vec<ModelSpec>, Error> {
        let mut out = Vec::with_capacity(models.len());
        for (name, raw) in models {
            let key = format!("{table}.{name}");
            if name.is_empty() || name.contains(['/', '+', '#']) {
                return Err(self.err(
                    &key,
                    "a model name becomes a topic level: no '/', '+' or '#'",
                ));
            }
            let metrics: Vec<(String, String)> = raw
                .metrics
                .iter()
                .flatten()
                .flat_map(|(chart, dims)| dims.iter().map(move |d| (chart.clone(), d.clone())))
                .collect();
            if metrics.is_empty() {
                return Err(self.err(
                    &format!("{key}.metrics"),
                    "list at least one chart and dimension, e.g. metrics = { \"system.cpu\" = [\"user\"] }",
                ));
            }
            let detector = self.resolve_detector(&key, &raw.or(base))?;
            out.push(ModelSpec {
                name: name.clone(),
                metrics,
                detector,
            });
        }
        Ok(out)
    }

    /// Checks a fully merged detector table; `key` names its table in errors.
    pub fn resolve_detector(&self, key: &str, d: &DetectorRaw) -> Result<Detector, Error> {
        let b = DetectorRaw::builtin();
        let d = d.or(&b);
        // All fields are set after merging with the built-in default.
        let get = |v: Option<usize>| v.unwrap_or_default();
        let params = ModelParams {
            diffs: d.diffs.unwrap_or(true),
            n_smoothing: get(d.n_smoothing),
            n_lags: get(d.n_lags),
            n_clusters: get(d.n_clusters),
            train_data_size: get(d.train_data_size),
            train_every_n: get(d.train_every_n),
            anomaly_score_cap: d.anomaly_score_cap.unwrap_or(5.0),
            n_init: get(d.n_init),
            max_iter: get(d.max_iter),
            seed: d.seed.unwrap_or(0),
            distance: match d.distance.as_deref() {
                Some("mean") => Distance::Mean,
                Some("nearest") => Distance::Nearest,
                other => {
                    return Err(self.err(
                        &format!("{key}.distance"),
                        format!("must be \"mean\" or \"nearest\", got {other:?}"),
                    ));
                }
            },
            scale: match d.scale.as_deref() {
                Some("minmax") => Scale::MinMax,
                Some("quantile") => Scale::Quantile(d.scale_quantile.unwrap_or(0.99)),
                other => {
                    return Err(self.err(
                        &format!("{key}.scale"),
                        format!("must be \"minmax\" or \"quantile\", got {other:?}"),
                    ));
                }
            },
            ensemble: get(d.ensemble),
            min_train_points: get(d.min_train_points),
            context: ContextParams {
                levels: get(d.context_levels),
                length: get(d.context_length),
                window: get(d.context_window),
                memory: get(d.context_memory),
            },
            decay: d.decay.unwrap_or(0.0),
        };
        let alarm = AlarmParams {
            threshold: d.threshold.unwrap_or(f64::NAN),
            for_ticks: d.for_ticks.unwrap_or(1),
            resolve_after: d.resolve_after.unwrap_or(1),
            suppress: d.suppress.unwrap_or(0),
            context_threshold: d.context_threshold.unwrap_or(1.0),
            grading: Grading {
                t2: d.t2.unwrap_or(0.2),
                step: d.step.unwrap_or(0.2),
            },
            direction: match d.direction.as_deref() {
                Some("both") => Direction::Both,
                Some("up") => Direction::Up,
                Some("down") => Direction::Down,
                other => {
                    return Err(self.err(
                        &format!("{key}.direction"),
                        format!("must be \"both\", \"up\" or \"down\", got {other:?}"),
                    ));
                }
            },
            saturation: match (d.kind.as_deref(), d.limit) {
                (Some("normal"), _) => None,
                (Some("saturation"), Some(limit)) if limit.is_finite() && limit > 0.0 => {
                    Some(SaturationParams {
                        limit,
                        pct: d.saturation_pct.unwrap_or(70.0) / 100.0,
                        window_ms: d
                            .saturation_window
                            .map_or(300_000, |w| w.0.as_millis() as i64),
                        rises_near_limit: d.saturation_rises_near_limit.unwrap_or(2),
                        rises_level2: d.saturation_rises_level2.unwrap_or(3),
                        rises_level3: d.saturation_rises_level3.unwrap_or(5),
                    })
                }
                (Some("saturation"), _) => {
                    return Err(self.err(
                        &format!("{key}.limit"),
                        "kind = \"saturation\" needs a limit above 0",
                    ));
                }
                (other, _) => {
                    return Err(self.err(
                        &format!("{key}.kind"),
                        format!("must be \"normal\" or \"saturation\", got {other:?}"),
                    ));
                }
            },
        };
        let q = d.scale_quantile.unwrap_or(0.99);
        let g = alarm.grading;
        let limits_ok = match (d.down_limit, d.upper_limit) {
            (Some(lo), Some(hi)) => lo.is_finite() && hi.is_finite() && lo < hi,
            (Some(x), None) | (None, Some(x)) => x.is_finite(),
            (None, None) => true,
        };
        let pct = d.saturation_pct.unwrap_or(70.0);
        let more: [(&str, bool, &str); 5] = [
            (
                "decay",
                (0.0..=1.0).contains(&params.decay),
                "must be 0 to 1",
            ),
            (
                "t2",
                (0.0..0.4).contains(&g.t2),
                "must be at least 0 and below 0.4",
            ),
            (
                "step",
                g.step.is_finite() && g.step > 0.0,
                "must be above 0",
            ),
            (
                "upper_limit",
                limits_ok,
                "down_limit and upper_limit must be numbers with down_limit < upper_limit",
            ),
            (
                "saturation_pct",
                pct > 0.0 && pct <= 100.0,
                "must be above 0 and at most 100",
            ),
        ];
        for (field, ok, why) in more {
            if !ok {
                return Err(self.err(&format!("{key}.{field}"), why));
            }
        }
        let c = params.context;
        let context_bits = (c.levels + 2).checked_pow(c.length as u32);
        let checks: [(&str, bool, &str); 16] = [
            ("context_levels", c.levels <= 62, "must be 0 (off) to 62"),
            (
                "context_length",
                c.levels == 0 || (c.length >= 1 && context_bits.is_some_and(|b| b <= 1 << 20)),
                "must be at least 1, with (context_levels + 2)^context_length at most 1048576 bits",
            ),
            (
                "context_window",
                c.levels == 0 || (1..=64).contains(&c.window),
                "must be 1 to 64",
            ),
            (
                "scale_quantile",
                q > 0.0 && q <= 1.0,
                "must be above 0 and at most 1",
            ),
            (
                "ensemble",
                (1..=64).contains(&params.ensemble),
                "must be 1 to 64",
            ),
            (
                "min_train_points",
                params.min_train_points > params.n_smoothing + params.n_lags
                    && params.min_train_points <= 10_000_000,
                "must be more than n_smoothing + n_lags (a model needs whole vectors to learn from)",
            ),
            (
                "n_smoothing",
                (1..=1000).contains(&params.n_smoothing),
                "must be 1 to 1000",
            ),
            ("n_lags", params.n_lags <= 100, "must be 0 to 100"),
            (
                "n_clusters",
                (1..=64).contains(&params.n_clusters),
                "must be 1 to 64",
            ),
            (
                "train_data_size",
                params.train_data_size >= params.n_clusters && params.train_data_size <= 1_000_000,
                "must be at least n_clusters and at most 1000000",
            ),
            (
                "train_every_n",
                params.train_every_n >= 1,
                "must be at least 1",
            ),
            (
                "anomaly_score_cap",
                params.anomaly_score_cap.is_finite() && params.anomaly_score_cap > 0.0,
                "must be a number above 0",
            ),
            (
                "threshold",
                alarm.threshold.is_finite(),
                "must be a finite number",
            ),
            ("for", alarm.for_ticks >= 1, "must be at least 1 tick"),
            (
                "resolve_after",
                alarm.resolve_after >= 1,
                "must be at least 1 tick",
            ),
            (
                "n_init",
                (1..=100).contains(&params.n_init) && params.max_iter >= 1,
                "must be 1 to 100 (and max_iter at least 1)",
            ),
        ];
        for (field, ok, why) in checks {
            if !ok {
                return Err(self.err(&format!("{key}.{field}"), why));
            }
        }
        Ok(Detector {
            params,
            alarm,
            down_limit: d.down_limit,
            upper_limit: d.upper_limit,
            only_show_anomaly: d.only_show_anomaly.unwrap_or(false),
        })
    }
}

fn detect_hostname() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_proc
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Best-effort line of `a.b.key` in a TOML text: the line of `key =` inside `[a.b]`, else
/// the table header. Used to point error messages at the right line.
fn find_line(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = match dotted.rsplit_once('.') {
        Some((t, k)) => (t, k),
        None => ("", dotted),
    };
    let mut current = String::new();
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().trim_matches(['[', ']']).replace(['"', ' '], "");
            if current == table.replace('"', "") {
                header_line = Some(i + 1);
            }
            continue;
        }
        if current == table
            && let Some((k, _)) = l.split_once('=')
            && k.trim().trim_matches('"') == key
        {
            return Some(i + 1);
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Source {
        Source {
            origin: "test.toml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn alarm_keys_are_checked_with_the_key_named() {
        let bad = [
            ("t2 = 0.5", "models.m.t2"),
            ("step = 0.0", "models.m.step"),
            ("direction = \"sideways\"", "models.m.direction"),
            ("kind = \"saturation\"", "models.m.limit"),
            ("kind = \"weird\"", "models.m.kind"),
            (
                "down_limit = 5.0\nupper_limit = 1.0",
                "models.m.upper_limit",
            ),
            ("decay = 2.0", "models.m.decay"),
        ];
        for (line, key) in bad {
            let text = format!("[models.m]\nmetrics = {{ \"a\" = [\"b\"] }}\n{line}\n");
            let err = src(&text).load(&[]).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
        let s = src("[detector]\nkind = \"saturation\"\nlimit = 100.0\ndirection = \"up\"\nupper_limit = 100.0\n[models.m]\nmetrics = { \"a\" = [\"b\"] }\n")
            .load(&[])
            .unwrap();
        let d = &s.models[0].detector;
        assert_eq!(d.alarm.saturation.map(|p| p.limit), Some(100.0));
        assert_eq!(d.alarm.direction, crate::alarm::Direction::Up);
        assert!(d.valid(100.0) && !d.valid(100.5));
    }

    #[test]
    fn shipped_config_loads_and_its_detector_is_the_builtin_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml");
        let source = Source::read(&path).unwrap();
        let s = source.load(&[]).unwrap();
        assert!(!s.models.is_empty() && !s.sim_models.is_empty());
        let raw = source.parse(&[]).unwrap();
        assert_eq!(
            raw.detector,
            DetectorRaw::builtin(),
            "configs/agent.toml [detector] must equal the built-in default"
        );
        assert!(s.broker.is_some());
    }

    #[test]
    fn unknown_keys_are_errors_with_file_and_line() {
        let err = src("[mqtt]\nurl = \"mqtt://h:1\"\nbogus = 1\n")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test.toml") && err.contains("bogus") && err.contains("line 3"),
            "{err}"
        );
    }

    #[test]
    fn validation_errors_name_the_key_and_line() {
        let err = src("[models.cpu]\nmetrics = { \"system.cpu\" = [\"user\"] }\nn_clusters = 0\n")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test.toml:3") && err.contains("models.cpu.n_clusters"),
            "{err}"
        );
    }

    #[test]
    fn set_overrides_any_key_by_dotted_path() {
        let s = src("[mqtt]\nurl = \"mqtt://a:1\"\n")
            .load(&[
                "mqtt.url=mqtt://127.0.0.1:18830".into(),
                "detector.threshold=4.5".into(),
                "agent.host=box".into(),
            ])
            .unwrap();
        assert_eq!((s.mqtt.host.as_str(), s.mqtt.port), ("127.0.0.1", 18830));
        assert_eq!(s.host, "box");
        let err = src("").load(&["nonsense".into()]).unwrap_err().to_string();
        assert!(err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn model_tables_override_the_detector_defaults() {
        let s = src(
            "[detector]\nthreshold = 3.0\n[models.a]\nmetrics = { \"system.cpu\" = [\"user\", \"system\"] }\nn_lags = 3\n",
        )
        .load(&[])
        .unwrap();
        let m = &s.models[0];
        assert_eq!(m.detector.alarm.threshold, 3.0);
        assert_eq!(m.detector.params.n_lags, 3);
        assert_eq!(
            m.metrics,
            vec![
                ("system.cpu".into(), "user".into()),
                ("system.cpu".into(), "system".into())
            ]
        );
    }

    #[test]
    fn durations_are_human() {
        let s = src("[agent]\ninterval = \"250ms\"\n").load(&[]).unwrap();
        assert_eq!(s.interval, Duration::from_millis(250));
        let err = src("[agent]\ninterval = \"fast\"\n")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn rules_and_ingest_default_to_no_file_and_off() {
        let s = src("").load(&[]).unwrap();
        assert!(s.rules.file.is_none() && s.rules.initial.is_empty());
        assert_eq!(s.rules.limits, Limits::default());
        assert!(!s.ingest.enabled);
    }

    #[test]
    fn rules_file_is_read_at_start_and_its_errors_name_config_line_and_rule() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("rules.json");
        std::fs::write(
            &good,
            r#"[{"ruleId": "hot", "deviceId": "*", "metricName": "t", "alertName": "a",
                 "operator": "AVGGREATEROREQUAL", "value": 1}]"#,
        )
        .unwrap();
        let text = format!(
            "[rules]\nfile = {:?}\ngroups_per_window = 8\n\n[ingest]\nenabled = true\n",
            good.display().to_string()
        );
        let s = src(&text).load(&[]).unwrap();
        assert_eq!(s.rules.file.as_deref(), Some(good.as_path()));
        assert_eq!(s.rules.initial.len(), 1);
        assert_eq!(s.rules.limits.groups_per_window, 8);
        assert!(s.ingest.enabled);

        let bad = dir.path().join("bad.json");
        std::fs::write(
            &bad,
            r#"[{"ruleId": 7, "deviceId": "*", "metricName": "t", "alertName": "a",
                 "operator": "AVGMORE", "value": 1}]"#,
        )
        .unwrap();
        let text = format!(
            "[agent]\n\n[rules]\nfile = {:?}\n",
            bad.display().to_string()
        );
        let err = src(&text).load(&[]).unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml:4: rules.file: ")
                && err.contains("bad.json: rules[0] (ruleId 7): operator"),
            "{err}"
        );
        let err = src("[rules]\nfile = \"/nonexistent/rules.json\"\n")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test.toml:2: rules.file: /nonexistent/rules.json"),
            "{err}"
        );
        // `--set rules.file=` turns a configured file off.
        let s = src("[rules]\nfile = \"/nonexistent/rules.json\"\n")
            .load(&["rules.file=".into()])
            .unwrap();
        assert!(s.rules.file.is_none());
    }

    #[test]
    fn rules_and_ingest_tables_are_checked() {
        let err = src("[rules]\ngroups_per_window = 0\n")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test.toml:2: rules.groups_per_window: must be 1 to"),
            "{err}"
        );
        let err = src("[ingest]\nenabled = true\ntopic = \"x\"\n")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("topic") && err.contains("line 3"), "{err}");
        let err = src("[agent]\nhost = \"ingest\"\n")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test.toml:2: agent.host") && err.contains("reserved"),
            "{err}"
        );
    }

    #[test]
    fn homeassistant_is_off_by_default_and_its_prefix_is_checked() {
        let s = src("").load(&[]).unwrap();
        assert_eq!(
            s.homeassistant,
            HomeAssistantSettings {
                enabled: false,
                prefix: "homeassistant".into()
            }
        );
        let s = src("[homeassistant]\nprefix = \"ha/disc\"\n")
            .load(&["homeassistant.enabled=true".into()])
            .unwrap();
        assert!(s.homeassistant.enabled && s.homeassistant.prefix == "ha/disc");
        for bad in ["", "ha/#", "ha/+/x", "/ha", "ha/", "a//b"] {
            let text = format!("[agent]\n\n[homeassistant]\nprefix = {bad:?}\n");
            let err = src(&text).load(&[]).unwrap_err().to_string();
            assert!(
                err.starts_with("test.toml:4: homeassistant.prefix: "),
                "{bad:?}: {err}"
            );
        }
        let err = src("[homeassistant]\nenabled = \"yes\"\n")
            .load(&[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("enabled"), "{err}");
    }

    #[test]
    fn with_homeassistant_on_model_names_must_stay_distinct_as_ids() {
        let text = "[models.\"disk.io\"]\nmetrics = { \"a\" = [\"b\"] }\n\
                    [models.disk_io]\nmetrics = { \"a\" = [\"b\"] }\n";
        assert!(src(text).load(&[]).is_ok(), "fine while off");
        let err = src(text)
            .load(&["homeassistant.enabled=true".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("models.disk_io") && err.contains("\"disk_io\""),
            "{err}"
        );
    }

    #[test]
    fn mqtt_urls() {
        use lookout_shared::url::parse_mqtt_url;
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_mqtt_url("mqtt://broker").unwrap(),
            ("broker".into(), 1883)
        );
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1885").unwrap(),
            ("::1".into(), 1885)
        );
        assert!(parse_mqtt_url("http://x").is_err());
        assert!(parse_mqtt_url("mqtt://x:99999").is_err());
    }
}
