//! The bridge's TOML config, parsed strictly and resolved into runtime objects (`when`
//! and templates parsed, target names turned into indices, TLS files read), then the
//! targets built into plugins: nothing at run time reads raw config. Keys are documented
//! in `docs/bridge.md`.
//!
//! Reading, `--set` overrides and strict parsing are [`lookout_shared::config`]'s, the
//! same as the agent's: every error names the key, its line and, for an unknown key, the
//! closest known one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lookout_shared::config::{ConfigError, Source};
use lookout_shared::duration::HumanDuration;
use lookout_shared::mqtt::ClientConfig;
use lookout_shared::secret::Secret;
use lookout_shared::tls::{TlsError, TlsSettings};
use serde::Deserialize;

use crate::Error;
use crate::expr::Expr;
use crate::group::GroupSpec;
use crate::limits::{Limits, Rate};
use crate::mute::{TimeInterval, TimeIntervalRaw};
use crate::notify::{Notifier, TargetConfig};
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
    /// The listener for Slack's interactive "Ack" buttons (`ack_http.rs`).
    pub ack_http: Option<crate::ack_http::Raw>,
    /// Recurring windows that routes reference in `mute` and `active`.
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalRaw>,
    /// An HTTP ping while the bridge is connected to its broker.
    pub heartbeat: Option<crate::heartbeat::HeartbeatRaw>,
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
    /// Firing alarms tracked for acknowledgements and escalation (`firing.rs`).
    pub firing_capacity: usize,
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
    /// A host's `offline` alarm waits this long; a host back sooner produces nothing.
    pub offline_grace: HumanDuration,
    /// A retained `offline` older than this at start is one level-1 notice, not a page.
    pub offline_stale_after: HumanDuration,
    /// A host silent this long raises its `silent` alarm, unless its stats say their
    /// interval (then 3 × that); `"0s"` turns the dead-man alarm off.
    pub silent_after: HumanDuration,
    /// Without the broker this long, the bridge tells `broker_lost_targets`.
    pub broker_lost_after: HumanDuration,
    /// Targets told directly (not through MQTT) when the broker is lost and back.
    pub broker_lost_targets: Vec<String>,
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
            firing_capacity: 10_000,
            state_dir: PathBuf::from("bridge-state"),
            state_sync: HumanDuration::from_secs(1),
            grace: HumanDuration::from_secs(10),
            inhibit_offline: true,
            offline_grace: HumanDuration::from_secs(120),
            offline_stale_after: HumanDuration::from_secs(3600),
            silent_after: HumanDuration::from_secs(180),
            broker_lost_after: HumanDuration::from_secs(120),
            broker_lost_targets: Vec::new(),
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
    /// Steps that send a still-firing, unacknowledged alarm to more targets.
    #[serde(default)]
    pub escalate: Vec<crate::escalate::StepRaw>,
    /// Time interval names: the route sends nothing while any of them is active.
    #[serde(default)]
    pub mute: Vec<String>,
    /// Time interval names: the route sends only while one of them is active.
    #[serde(default)]
    pub active: Vec<String>,
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
    /// Broker, client id, login and TLS. The TLS files were read once while resolving, so
    /// a wrong path fails at start, not at the first connection.
    pub client: ClientConfig,
    /// What to subscribe to: `mqtt.topics`, each under `$share/<group>/` with
    /// `share_group`.
    pub filters: Vec<String>,
    /// `mqtt.share_group` is set: other bridges share the filters' stream.
    pub shared: bool,
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

/// Everything the bridge runs on, except the plugins (see [`Resolved`]).
#[derive(Debug)]
pub struct Settings {
    pub id: String,
    pub prefix: String,
    pub stats_interval: Duration,
    pub max_payload: usize,
    pub dedup_capacity: usize,
    pub firing_capacity: usize,
    /// `None`: the notification log is kept in memory only.
    pub state_dir: Option<PathBuf>,
    pub state_sync: Duration,
    pub grace: Duration,
    pub mqtt: MqttSettings,
    pub delivery: DeliverySettings,
    /// Target names in index order: routes, queues and stats refer to targets by index.
    pub targets: Vec<String>,
    /// Per target, in index order: its `fallback`.
    pub fallbacks: Vec<Option<crate::fallback::Fallback>>,
    pub routes: Vec<Route>,
    pub silences: Vec<Silence>,
    pub time_intervals: Vec<TimeInterval>,
    pub inhibit_offline: bool,
    pub ack_http: Option<crate::ack_http::Settings>,
    pub offline: crate::offline::OfflinePolicy,
    /// The dead-man alarm's default silence limit; zero: off.
    pub silent_after: Duration,
    pub heartbeat: Option<crate::heartbeat::Heartbeat>,
    pub broker_lost: crate::heartbeat::BrokerLost,
}

/// A config resolved and checked, its targets not yet built. Building is a step of its
/// own because a plugin may start a connection when built (the `mqtt` target), which needs
/// the tokio runtime, and `run` locks the state directory first, so that a second bridge
/// on the same directory stops before it connects anywhere.
#[derive(Debug)]
pub struct Resolved {
    pub settings: Settings,
    /// One per target, in index order.
    targets: Vec<TargetConfig>,
}

/// The settings with every target's plugin built, once: what the bridge runs on.
pub struct Built {
    pub settings: Settings,
    /// One per target, in index order.
    pub notifiers: Vec<Box<dyn Notifier>>,
    /// The `telegram` targets with `ack_button = true`, by name: their bots are polled
    /// for presses (`crate::chat_ack`).
    pub telegram_acks: Vec<(String, crate::notify::telegram::Config)>,
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config {
            path: e.at,
            message: e.message,
        }
    }
}

/// Reads the config at `path` (`-`: standard input), applies `overrides` and resolves it.
pub fn load(path: &Path, overrides: &[String]) -> Result<Resolved, Error> {
    resolve(&Source::read(path)?, overrides)
}

/// Parses `source` strictly with `overrides` applied and resolves it; every error names
/// the key at fault.
pub fn resolve(source: &Source, overrides: &[String]) -> Result<Resolved, Error> {
    // `fallback` keys sit beside the plugins' keys, which are parsed strictly: out first.
    let mut doc = source.table(overrides)?;
    let fallbacks = crate::fallback::take_keys(&mut doc).map_err(|(k, m)| source.error(&k, m))?;
    let raw: Raw = source.deserialize(doc, "", overrides, &[])?;
    let id = bridge_id(&raw.bridge);
    let mqtt = resolve_mqtt(source, &raw.mqtt, &id)?;
    if raw.targets.is_empty() {
        return Err(source
            .error("targets", "define at least one [targets.NAME] table")
            .into());
    }
    let names: Vec<String> = raw.targets.keys().cloned().collect();
    let time_intervals = resolve_intervals(source, &raw.time_intervals)?;
    let routes = resolve_routes(source, &raw, &names, &time_intervals)?;
    let fallbacks =
        crate::fallback::resolve(&fallbacks, &names).map_err(|(k, m)| source.error(&k, m))?;
    let silences = raw
        .silences
        .iter()
        .enumerate()
        .map(|(i, s)| Silence::build(s).map_err(|m| source.error(&format!("silences[{i}]"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let delivery = resolve_delivery(source, &raw.delivery)?;
    let ack_http = raw
        .ack_http
        .as_ref()
        .map(crate::ack_http::Raw::resolve)
        .transpose()
        .map_err(|(k, m)| source.error(k, m))?;
    let heartbeat = raw
        .heartbeat
        .as_ref()
        .map(crate::heartbeat::Heartbeat::build)
        .transpose()?;
    let broker_lost = resolve_broker_lost(source, &raw.bridge, &names)?;
    let b = &raw.bridge;
    let settings = Settings {
        id,
        prefix: b.prefix.clone(),
        stats_interval: b.stats_interval.0.max(Duration::from_secs(1)),
        max_payload: b.max_payload.max(1),
        dedup_capacity: b.dedup_capacity,
        firing_capacity: b.firing_capacity,
        state_dir: (!b.state_dir.as_os_str().is_empty()).then(|| b.state_dir.clone()),
        state_sync: b.state_sync.0,
        grace: b.grace.0,
        mqtt,
        delivery,
        targets: names,
        fallbacks,
        routes,
        silences,
        time_intervals,
        inhibit_offline: b.inhibit_offline,
        ack_http,
        offline: crate::offline::OfflinePolicy {
            grace: b.offline_grace.0,
            stale_after: b.offline_stale_after.0,
        },
        silent_after: b.silent_after.0,
        heartbeat,
        broker_lost,
    };
    Ok(Resolved {
        settings,
        targets: raw.targets.into_values().collect(),
    })
}

impl Resolved {
    /// Builds every target's plugin; errors name the target and the key at fault. Call it
    /// inside the tokio runtime the bridge runs on: the `mqtt` target spawns its
    /// connection task there.
    pub fn build(self) -> Result<Built, Error> {
        let notifiers = self
            .settings
            .targets
            .iter()
            .zip(&self.targets)
            .map(|(name, cfg)| cfg.build(name))
            .collect::<Result<Vec<_>, _>>()?;
        let telegram_acks = self
            .settings
            .targets
            .iter()
            .zip(&self.targets)
            .filter_map(|(name, cfg)| match cfg {
                TargetConfig::Telegram(t) if t.ack_button => Some((name.clone(), t.clone())),
                _ => None,
            })
            .collect();
        Ok(Built {
            settings: self.settings,
            notifiers,
            telegram_acks,
        })
    }
}

/// `bridge.id`, default the host name, as one topic level.
fn bridge_id(b: &BridgeRaw) -> String {
    let id = if b.id.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "bridge".into())
    } else {
        b.id.clone()
    };
    lookout_shared::topics::sanitize_level(&id)
}

fn resolve_mqtt(source: &Source, m: &MqttRaw, id: &str) -> Result<MqttSettings, Error> {
    let url = lookout_shared::url::parse(&m.url).map_err(|e| source.error("mqtt.url", e))?;
    let tls_err = |e: TlsError| source.error(&format!("mqtt.{}", e.key()), e.reason());
    let password = lookout_shared::tls::password(m.password.clone(), m.password_file.as_deref())
        .map_err(tls_err)?;
    let tls = TlsSettings {
        ca_file: m.ca_file.clone(),
        cert_file: m.cert_file.clone(),
        key_file: m.key_file.clone(),
        insecure_skip_verify: m.insecure_skip_verify,
    };
    let client_id = if m.client_id.is_empty() {
        format!("lookout-bridge-{id}")
    } else {
        m.client_id.clone()
    };
    let client = ClientConfig::new(
        url,
        client_id,
        m.keep_alive.0,
        m.username.clone(),
        password,
        tls,
        "bridge mqtt",
    )
    .map_err(tls_err)?;
    if m.topics.is_empty() {
        return Err(source
            .error("mqtt.topics", "list at least one topic filter")
            .into());
    }
    let filters = match &m.share_group {
        Some(g) if g.is_empty() || g.contains(['/', '+', '#']) => {
            return Err(source
                .error(
                    "mqtt.share_group",
                    "a non-empty name without '/', '+' or '#'",
                )
                .into());
        }
        Some(g) => m.topics.iter().map(|t| format!("$share/{g}/{t}")).collect(),
        None => m.topics.clone(),
    };
    Ok(MqttSettings {
        client,
        filters,
        shared: m.share_group.is_some(),
    })
}

fn resolve_routes(
    source: &Source,
    raw: &Raw,
    names: &[String],
    intervals: &[TimeInterval],
) -> Result<Vec<Route>, Error> {
    if raw.routes.is_empty() {
        return Err(source
            .error("routes", "define at least one [[routes]] table")
            .into());
    }
    let mut routes = raw
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| resolve_route(source, &format!("routes[{i}]"), r, names, &raw.bridge))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (route, r)) in routes.iter_mut().zip(&raw.routes).enumerate() {
        let refs = |list: &[String], key: &str| {
            crate::mute::resolve_names(list, intervals)
                .map_err(|m| source.error(&format!("routes[{i}].{key}"), m))
        };
        route.mute = refs(&r.mute, "mute")?;
        route.active = refs(&r.active, "active")?;
    }
    Ok(routes)
}

/// `broker_lost_after` and `broker_lost_targets` (names turned into indices).
fn resolve_broker_lost(
    source: &Source,
    b: &BridgeRaw,
    names: &[String],
) -> Result<crate::heartbeat::BrokerLost, Error> {
    let targets = b
        .broker_lost_targets
        .iter()
        .map(|t| {
            names.iter().position(|n| n == t).ok_or_else(|| {
                let m = format!("no target named {t:?}; define [targets.{t}]");
                Error::from(source.error("bridge.broker_lost_targets", m))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(crate::heartbeat::BrokerLost {
        after: b.broker_lost_after.0,
        targets,
    })
}

/// `[[time_intervals]]`, each name once; errors name the interval's key.
fn resolve_intervals(source: &Source, raw: &[TimeIntervalRaw]) -> Result<Vec<TimeInterval>, Error> {
    let mut out: Vec<TimeInterval> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let built = TimeInterval::build(r)
            .map_err(|(key, m)| source.error(&format!("time_intervals[{i}].{key}"), m))?;
        if out.iter().any(|o| o.name == built.name) {
            let m = format!("{:?} is defined twice", built.name);
            return Err(source.error(&format!("time_intervals[{i}].name"), m).into());
        }
        out.push(built);
    }
    Ok(out)
}

/// One `[[routes]]` table; `key` is its place (`routes[2]`) for error messages.
fn resolve_route(
    source: &Source,
    key: &str,
    r: &RouteRaw,
    names: &[String],
    bridge: &BridgeRaw,
) -> Result<Route, Error> {
    let err = |sub: &str, m: String| Error::from(source.error(&format!("{key}.{sub}"), m));
    let when = r
        .when
        .as_deref()
        .map(Expr::parse)
        .transpose()
        .map_err(|m| err("when", m))?;
    let mut targets = Vec::with_capacity(r.targets.len());
    for t in &r.targets {
        let idx = names.iter().position(|n| n == t).ok_or_else(|| {
            err(
                "targets",
                format!("no target named {t:?}; define [targets.{t}]"),
            )
        })?;
        targets.push(idx);
    }
    if targets.is_empty() {
        return Err(err("targets", "list at least one target".into()));
    }
    let template = |text: &Option<String>, sub: &str| {
        text.as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|m| err(sub, m))
    };
    let title = template(&r.title, "title")?;
    let body = template(&r.body, "body")?;
    let max_payload = r.max_payload.unwrap_or(bridge.max_payload);
    if max_payload > bridge.max_payload {
        return Err(err(
            "max_payload",
            format!(
                "{max_payload} is over bridge.max_payload ({}), which every message must \
                 pass first",
                bridge.max_payload
            ),
        ));
    }
    let rate = resolve_rate(r).map_err(|(sub, m)| err(sub, m.into()))?;
    let escalate = crate::escalate::resolve(&r.escalate, names).map_err(|(sub, m)| err(&sub, m))?;
    Ok(Route {
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
            max_topic_length: r.max_topic_length.unwrap_or(bridge.max_topic_length),
            rate,
        },
        escalate,
        mute: Vec::new(),
        active: Vec::new(),
    })
}

/// A route's `rate_limit` and `rate_burst`; the error names the key within the route.
fn resolve_rate(r: &RouteRaw) -> Result<Option<Rate>, (&'static str, &'static str)> {
    let per_second = match (r.rate_limit, r.rate_burst) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return Err(("rate_burst", "needs rate_limit")),
        (Some(per_second), _) => per_second,
    };
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err((
            "rate_limit",
            "must be a number of messages per second above 0",
        ));
    }
    let burst = match r.rate_burst {
        Some(0) => return Err(("rate_burst", "must be at least 1")),
        Some(b) => f64::from(b),
        None => per_second.ceil().max(1.0),
    };
    Ok(Some(Rate { per_second, burst }))
}

fn resolve_delivery(source: &Source, d: &DeliveryRaw) -> Result<DeliverySettings, Error> {
    if d.queue == 0 {
        return Err(source.error("delivery.queue", "must be at least 1").into());
    }
    Ok(DeliverySettings {
        queue: d.queue,
        retries: d.retries,
        backoff_min: d.backoff_min.0,
        backoff_max: d.backoff_max.0.max(d.backoff_min.0),
        timeout: d.timeout.0.max(Duration::from_millis(10)),
        dead_letter: d.dead_letter.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET_AND_ROUTE: &str =
        "[targets.f]\ntype = \"log\"\n\n[[routes]]\ntopic = \"#\"\ntargets = [\"f\"]\n";

    fn error(text: &str, overrides: &[&str]) -> String {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        resolve(&Source::builtin("bridge.toml", text), &overrides)
            .expect_err("an error")
            .to_string()
    }

    #[test]
    fn the_shipped_config_resolves() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/bridge.toml"
        ))
        .unwrap();
        let r = resolve(&Source::builtin("configs/bridge.toml", &text), &[]).unwrap();
        assert_eq!(r.settings.targets.len(), r.targets.len());
        assert!(!r.settings.routes.is_empty());
    }

    #[test]
    fn errors_name_the_key_its_line_and_the_closest_known_key() {
        let err = error(
            &format!("[mqtt]\nurl = \"mqtt://h\"\nkeep_alvie = \"5s\"\n{TARGET_AND_ROUTE}"),
            &[],
        );
        assert!(
            err.starts_with(
                "bridge.toml:3: mqtt.keep_alvie: unknown key; did you mean `keep_alive`?"
            ),
            "{err}"
        );
        let err = error(
            &format!("[mqtt]\nurl = \"broker:1883\"\n{TARGET_AND_ROUTE}"),
            &[],
        );
        assert!(err.starts_with("bridge.toml:2: mqtt.url: "), "{err}");
        let err = error(TARGET_AND_ROUTE, &["delivery.queue=0"]);
        assert_eq!(err, "bridge.toml: delivery.queue: must be at least 1");
        let err = error(TARGET_AND_ROUTE, &["delivery.queue=many"]);
        assert!(
            err.starts_with("--set delivery.queue=many: delivery.queue: "),
            "{err}"
        );
        let err = error(
            &TARGET_AND_ROUTE.replace("targets = [\"f\"]", "targets = [\"f\"]\nrate_burst = 3"),
            &[],
        );
        assert_eq!(err, "bridge.toml: routes[0].rate_burst: needs rate_limit");
        let err = error(
            &TARGET_AND_ROUTE.replace("targets = [\"f\"]", "targets = [\"f\"]\nmute = [\"nope\"]"),
            &[],
        );
        assert!(
            err.contains("routes[0].mute: no time interval named \"nope\""),
            "{err}"
        );
        let err = error(
            &format!(
                "[[time_intervals]]\nname = \"w\"\ntimes = [{{ location = \"Nowhere/City\" }}]\n{TARGET_AND_ROUTE}"
            ),
            &[],
        );
        assert!(
            err.contains("time_intervals[0].times[0].location: unknown time zone"),
            "{err}"
        );
        let err = error("[mqtt]\npassword = \"pw\"\n", &[]);
        assert!(err.contains("mqtt.username: is required"), "{err}");
        assert!(!err.contains("pw\""), "{err}");
    }
}
