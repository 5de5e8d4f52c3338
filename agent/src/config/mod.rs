//! The agent's TOML config, assembled: each part owns its table, its defaults and its
//! checks (`[mqtt]`, `[broker]`, `[outbox]`: `link::config`; `[detector]` and the models:
//! `decide::config`; `[rules]`, `[ingest]`: `rules::config`; `[simulate]`: `simulate`;
//! `[homeassistant]`: `homeassistant`; `[control]`: `control`). This module reads the document, hands each part its
//! table, and checks what spans tables: the host name, the login the agent's own client
//! falls back to, model names as Home Assistant ids. Nothing at run time reads raw config.
//!
//! Every key is documented in `docs/config.md`. Old flat detector keys still load, with a
//! warning ([`deprecated`]).

pub mod deprecated;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use lookout_shared::config::{ConfigError, Invalid, Renamed, Source};
use lookout_shared::duration::HumanDuration;
use lookout_shared::payload::Labels;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::alarm::AlarmParams;
use crate::control::{ControlConfig, ControlSettings};
use crate::decide::host::HostConfig;
use crate::decide::{DetectorConfig, ModelSpec};
use crate::devices::config::{DeviceKeys, DeviceSpec};
use crate::homeassistant::HomeAssistantConfig;
use crate::link::{
    BrokerConfig, BrokerSettings, BufferConfig, MqttConfig, MqttSettings, OutboxConfig,
};
use crate::persist::{SnapshotConfig, SnapshotSettings};
use crate::rules::{IngestConfig, RulesConfig, RulesSettings};
use crate::simulate::SimParams;
use crate::upstream::{UpstreamConfig, UpstreamSettings};

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config {
            path: e.at,
            message: e.message,
        }
    }
}

/// `[agent]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Empty: the machine's host name.
    pub host: String,
    pub interval: HumanDuration,
    pub labels: Labels,
    /// How often `<prefix>/<host>/agent/stats` is published; 0s: never.
    pub stats_interval: HumanDuration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            interval: HumanDuration::from_secs(1),
            labels: Labels::new(),
            stats_interval: HumanDuration::from_secs(60),
        }
    }
}

/// The document as parsed: each part's table, the detector tables still as TOML (a
/// model's table is merged over `[detector]` before either is read as a detector).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub outbox: OutboxConfig,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub snapshots: SnapshotConfig,
    #[serde(default)]
    pub host: HostConfig,
    #[serde(default)]
    pub detector: toml::Table,
    #[serde(default)]
    pub models: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub sim_models: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pub simulate: SimParams,
    #[serde(default)]
    pub rules: RulesConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub homeassistant: HomeAssistantConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub upstream: Vec<UpstreamConfig>,
}

/// A parsed document with where it came from, what it renamed and how it was overridden:
/// everything needed to place an error at its line.
pub struct Parsed<'s> {
    pub source: &'s Source,
    pub overrides: Vec<String>,
    pub renamed: Vec<Renamed>,
    pub raw: Raw,
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
    /// Where models are saved and taken back from; `None`: not at all.
    pub snapshots: Option<SnapshotSettings>,
    pub models: Vec<ModelSpec>,
    pub sim_models: Vec<ModelSpec>,
    /// Models of series ingested over MQTT, one instance per device.
    pub devices: Vec<DeviceSpec>,
    /// Host-level judgement, and the `[detector.alarm]` its alarm shares.
    pub host_judge: HostConfig,
    pub host_alarm: AlarmParams,
    pub simulate: SimParams,
    pub rules: RulesSettings,
    pub ingest: IngestConfig,
    pub homeassistant: HomeAssistantConfig,
    /// Operators' commands over MQTT; `None` (no token): not subscribed to.
    pub control: Option<ControlSettings>,
    /// `[[upstream]]`: brokers the agent's topics are forwarded to.
    pub upstreams: Vec<UpstreamSettings>,
}

/// Parses `source` with `KEY=VALUE` overrides; old detector keys are moved to their new
/// tables, with one warning each.
pub fn parse<'s>(source: &'s Source, overrides: &[String]) -> Result<Parsed<'s>, Error> {
    let (doc, renamed) = source.document(overrides, deprecated::migrate, deprecated::rename)?;
    deprecated::warn(&renamed, &source.origin);
    let raw = source.deserialize(doc, "", overrides, &renamed)?;
    Ok(Parsed {
        source,
        overrides: overrides.to_vec(),
        renamed,
        raw,
    })
}

/// Parses and validates into runnable settings.
pub fn load(source: &Source, overrides: &[String]) -> Result<Settings, Error> {
    parse(source, overrides)?.resolve()
}

impl Parsed<'_> {
    /// An owner's complaint about its table (`table` prefixes the key), at its line.
    pub fn invalid(&self, table: &str, e: Invalid) -> Error {
        self.source.invalid(e.within(table), &self.renamed).into()
    }

    pub fn resolve(&self) -> Result<Settings, Error> {
        let raw = &self.raw;
        let interval = raw.agent.interval.0;
        if interval.is_zero() {
            return Err(self.invalid("agent", Invalid::new("interval", "must be longer than 0s")));
        }
        let host = self.host()?;
        let broker = raw
            .broker
            .resolve()
            .map_err(|e| self.invalid("broker", e))?;
        let mqtt = self.mqtt(&host, broker.as_ref())?;
        let snapshots = raw
            .snapshots
            .resolve()
            .map_err(|e| self.invalid("snapshots", e))?;
        raw.simulate
            .validate()
            .map_err(|m| self.invalid("", Invalid::new("simulate", m)))?;
        raw.host.check().map_err(|e| self.invalid("host", e))?;
        let host_alarm = self
            .detector()?
            .resolve_at(interval)
            .map_err(|e| self.invalid("detector", e))?
            .alarm;
        let models = self.models("models", &raw.models)?;
        let sim_models = self.models("sim_models", &raw.sim_models)?;
        let devices = self.device_models(&raw.models)?;
        if let Some((name, _)) = raw.sim_models.iter().find(|(_, t)| is_device_model(t)) {
            return Err(self.invalid(
                &format!("sim_models.{name}"),
                Invalid::new("", "device models (device, topic) belong in [models]; they run beside simulated hosts too"),
            ));
        }
        let rules = raw.rules.resolve().map_err(|e| self.invalid("rules", e))?;
        let upstreams = crate::upstream::config::resolve_all(
            &raw.upstream,
            &mqtt.client,
            &mqtt.prefix,
            &host,
            (mqtt.reconnect_min, mqtt.reconnect_max),
        )
        .map_err(|e| self.invalid("", e))?;
        let control = raw
            .control
            .resolve()
            .map_err(|e| self.invalid("control", e))?;
        raw.homeassistant
            .check([
                ("models", names(&models)),
                ("sim_models", names(&sim_models)),
            ])
            .map_err(|e| self.invalid("", e))?;
        Ok(Settings {
            host,
            labels: raw.agent.labels.clone(),
            interval,
            stats_interval: raw.agent.stats_interval.0,
            mqtt,
            broker,
            snapshots,
            models,
            sim_models,
            devices,
            host_judge: raw.host.clone(),
            host_alarm,
            simulate: raw.simulate.clone(),
            rules,
            ingest: raw.ingest,
            homeassistant: raw.homeassistant.clone(),
            control,
            upstreams,
        })
    }

    /// The host name topics carry: `agent.host`, else the machine's, made safe as a
    /// topic level.
    fn host(&self) -> Result<String, Error> {
        let configured = &self.raw.agent.host;
        let host = if configured.is_empty() {
            detect_hostname()
        } else {
            configured.clone()
        };
        let host = lookout_shared::topics::sanitize_level(&host);
        if host == lookout_shared::topics::INGEST {
            return Err(self.invalid(
                "agent",
                Invalid::new(
                    "host",
                    "\"ingest\" is reserved: <prefix>/ingest/# carries ingested events; set another name",
                ),
            ));
        }
        Ok(host)
    }

    /// `[mqtt]` with `[outbox]`. The agent's own client logs in to its embedded broker
    /// with the broker's credentials unless `[mqtt]` names others.
    pub fn mqtt(&self, host: &str, broker: Option<&BrokerSettings>) -> Result<MqttSettings, Error> {
        let outbox = self
            .raw
            .outbox
            .resolve()
            .map_err(|e| self.invalid("outbox", e))?;
        let buffer = self
            .raw
            .buffer
            .resolve()
            .map_err(|e| self.invalid("buffer", e))?;
        let fallback = broker.and_then(|b| b.auth.clone());
        self.raw
            .mqtt
            .resolve(host, fallback, outbox, buffer)
            .map_err(|e| self.invalid("mqtt", e))
    }

    /// The broker connection of `[mqtt]` alone, and the prefix: for clients of the
    /// agent's broker other than the agent (`watch`). Checks `[broker]` for the login the
    /// agent's own client would fall back to, and nothing else of the document.
    pub fn client(&self) -> Result<(lookout_shared::mqtt::ClientConfig, String), Error> {
        let broker = self
            .raw
            .broker
            .resolve()
            .map_err(|e| self.invalid("broker", e))?;
        let host = self.host()?;
        let m = self.mqtt(&host, broker.as_ref())?;
        Ok((m.client, m.prefix))
    }

    /// The `[detector]` table with every default filled in.
    pub fn detector(&self) -> Result<DetectorConfig, Error> {
        if self.raw.detector.contains_key("metrics") {
            return Err(self.invalid(
                "detector",
                Invalid::new(
                    "metrics",
                    "metrics belong in a model's table, [models.NAME]",
                ),
            ));
        }
        self.detector_table("detector", self.raw.detector.clone())
    }

    fn detector_table(&self, prefix: &str, table: toml::Table) -> Result<DetectorConfig, Error> {
        Ok(self
            .source
            .deserialize(table, prefix, &self.overrides, &self.renamed)?)
    }

    /// A model's table over `[detector]`, with every default filled in.
    pub fn model_detector(&self, key: &str, table: &toml::Table) -> Result<DetectorConfig, Error> {
        let mut own = table.clone();
        for k in own_keys(table) {
            own.remove(*k);
        }
        let mut merged = self.raw.detector.clone();
        merge(&mut merged, own);
        self.detector_table(key, merged)
    }

    fn models(
        &self,
        table: &str,
        models: &BTreeMap<String, toml::Table>,
    ) -> Result<Vec<ModelSpec>, Error> {
        // [detector] alone first, so that its own mistakes are blamed on it.
        let interval = self.raw.agent.interval.0;
        self.detector()?
            .resolve_at(interval)
            .map_err(|e| self.invalid("detector", e))?;
        let mut out = Vec::with_capacity(models.len());
        for (name, t) in models {
            let key = format!("{table}.{name}");
            if name == crate::decide::host::NAME {
                return Err(self.invalid(
                    &key,
                    Invalid::new(
                        "",
                        "\"host\" is the host-level alarm's name (alarms/host); call the model something else",
                    ),
                ));
            }
            if name.is_empty() || name.contains(['/', '+', '#']) {
                return Err(self.invalid(
                    &key,
                    Invalid::new("", "a model name becomes a topic level: no '/', '+' or '#'"),
                ));
            }
            if is_device_model(t) {
                continue;
            }
            let metrics = self.metrics(&key, t)?;
            let detector = self
                .model_detector(&key, t)?
                .resolve_at(interval)
                .map_err(|e| self.invalid(&key, e))?;
            out.push(ModelSpec {
                name: name.clone(),
                metrics,
                detector,
            });
        }
        Ok(out)
    }

    /// The `[models]` tables with `device` or `topic`: models of series ingested over
    /// MQTT, one instance per device (`crate::devices`). Their names were checked with
    /// the host models'.
    fn device_models(
        &self,
        models: &BTreeMap<String, toml::Table>,
    ) -> Result<Vec<DeviceSpec>, Error> {
        let interval = self.raw.agent.interval.0;
        let mut out = Vec::new();
        for (name, t) in models.iter().filter(|(_, t)| is_device_model(t)) {
            let key = format!("models.{name}");
            let own: toml::Table = t
                .iter()
                .filter(|(k, _)| crate::devices::config::KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let keys: DeviceKeys =
                self.source
                    .deserialize(own, &key, &self.overrides, &self.renamed)?;
            let detector = self
                .model_detector(&key, t)?
                .resolve_at(interval)
                .map_err(|e| self.invalid(&key, e))?;
            out.push(
                keys.resolve(name, detector)
                    .map_err(|e| self.invalid(&key, e))?,
            );
        }
        Ok(out)
    }

    /// A model's `metrics = { chart = [dims] }`, as (chart, dimension) pairs in order.
    fn metrics(&self, key: &str, t: &toml::Table) -> Result<Vec<(String, String)>, Error> {
        let mut table = toml::Table::new();
        if let Some(m) = t.get("metrics") {
            table.insert("metrics".into(), m.clone());
        }
        #[derive(Deserialize)]
        struct Metrics {
            #[serde(default)]
            metrics: BTreeMap<String, Vec<String>>,
        }
        let m: Metrics = self
            .source
            .deserialize(table, key, &self.overrides, &self.renamed)?;
        let metrics: Vec<(String, String)> = m
            .metrics
            .into_iter()
            .flat_map(|(chart, dims)| dims.into_iter().map(move |d| (chart.clone(), d)))
            .collect();
        if metrics.is_empty() {
            return Err(self.invalid(
                key,
                Invalid::new(
                    "metrics",
                    "list at least one chart and dimension, e.g. metrics = { \"system.cpu\" = [\"user\"] }",
                ),
            ));
        }
        Ok(metrics)
    }

    /// The effective config in its current shape, as TOML: every table with its defaults
    /// filled in, each model with its metrics and the keys where it differs from
    /// `[detector]`. Secrets print as `<redacted>`.
    pub fn effective_toml(&self) -> Result<String, Error> {
        #[derive(Serialize)]
        struct Effective<'a> {
            agent: &'a AgentConfig,
            mqtt: &'a MqttConfig,
            broker: &'a BrokerConfig,
            outbox: &'a OutboxConfig,
            buffer: &'a BufferConfig,
            snapshots: &'a SnapshotConfig,
            host: &'a HostConfig,
            rules: &'a RulesConfig,
            ingest: &'a IngestConfig,
            homeassistant: &'a HomeAssistantConfig,
            control: &'a ControlConfig,
            upstream: &'a [UpstreamConfig],
            simulate: &'a SimParams,
            detector: DetectorConfig,
            models: BTreeMap<String, toml::Table>,
            sim_models: BTreeMap<String, toml::Table>,
        }
        let detector = self.detector()?;
        let base = toml_table(&detector)?;
        let models = |table: &str, models: &BTreeMap<String, toml::Table>| {
            let mut out = BTreeMap::new();
            for (name, t) in models {
                let key = format!("{table}.{name}");
                let mut shown = toml::Table::new();
                for k in own_keys(t) {
                    if let Some(v) = t.get(*k) {
                        shown.insert((*k).into(), v.clone());
                    }
                }
                let own = toml_table(&self.model_detector(&key, t)?)?;
                shown.extend(difference(&base, own));
                out.insert(name.clone(), shown);
            }
            Ok::<_, Error>(out)
        };
        let r = &self.raw;
        let e = Effective {
            agent: &r.agent,
            mqtt: &r.mqtt,
            broker: &r.broker,
            outbox: &r.outbox,
            buffer: &r.buffer,
            snapshots: &r.snapshots,
            host: &r.host,
            rules: &r.rules,
            ingest: &r.ingest,
            homeassistant: &r.homeassistant,
            control: &r.control,
            upstream: &r.upstream,
            simulate: &r.simulate,
            models: models("models", &r.models)?,
            sim_models: models("sim_models", &r.sim_models)?,
            detector,
        };
        toml::to_string(&e).map_err(|err| Error::Config {
            path: self.source.origin.clone(),
            message: format!("cannot print the effective config: {err}"),
        })
    }
}

/// `over` merged into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The keys of `own` whose values differ from `base`'s, tables key by key.
fn difference(base: &toml::Table, own: toml::Table) -> toml::Table {
    let mut out = toml::Table::new();
    for (k, v) in own {
        match (base.get(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                let d = difference(b, o);
                if !d.is_empty() {
                    out.insert(k, toml::Value::Table(d));
                }
            }
            (Some(b), v) if *b == v => {}
            (_, v) => {
                out.insert(k, v);
            }
        }
    }
    out
}

fn toml_table<T: Serialize>(value: &T) -> Result<toml::Table, Error> {
    toml::Table::try_from(value).map_err(|e| Error::Config {
        path: "(effective config)".into(),
        message: e.to_string(),
    })
}

/// A model table with `device` or `topic` learns devices' series, not this host's.
fn is_device_model(t: &toml::Table) -> bool {
    t.contains_key("device") || t.contains_key("topic")
}

/// The keys of a model table that are not the detector's.
fn own_keys(t: &toml::Table) -> &'static [&'static str] {
    if is_device_model(t) {
        &crate::devices::config::KEYS
    } else {
        &["metrics"]
    }
}

fn names(specs: &[ModelSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.name.as_str()).collect()
}

fn detect_hostname() -> String {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    from_proc
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
