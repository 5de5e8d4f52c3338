//! Home Assistant MQTT discovery (docs/homeassistant.md): retained configs that make each
//! published host (the real one, or each simulated one) appear in Home Assistant as one
//! device, with
//!
//! - a `sensor` per model: its anomaly score, from `<prefix>/<host>/scores/<model>`;
//! - a `binary_sensor` per model (device class `problem`): on while its alarm fires. Its
//!   state comes from the score's `alarm` field, so it reads OK from the first tick
//!   instead of unknown until the model's first alarm (alarm topics carry episodes, not
//!   an "all is well"); its attributes are the latest alarm. A model with
//!   `only_show_anomaly` publishes no score on normal ticks, so its sensor follows the
//!   alarm topic instead;
//! - two diagnostic `sensor`s from `<prefix>/<host>/agent/stats` (resident memory and
//!   uptime), when the agent publishes its stats (`agent.stats_interval` above 0).
//!
//! Threshold rules get no entity. A rule raises one alarm per group, each on a topic of
//! its own (`alarms/rule/<ruleId>/<device>[/dimN=...]`) that exists only once events of
//! that group arrived, and rules documents change at run time over MQTT; a discovery
//! config names one fixed state topic and is published at connect. Rule alarms reach Home
//! Assistant as MQTT messages (an automation with an MQTT trigger on
//! `<prefix>/<host>/alarms/rule/#`), or through lookout-bridge.
//!
//! Everything here is a pure function of the settings: [`for_host`] gives what a host's
//! link publishes after `online` on every connect (topic and JSON of each config) and the
//! filter it sweeps once per process (link/sweep.rs): retained configs found there that are
//! not in the current set are cleared, which removes the entities of models that are gone,
//! and all of them once discovery is turned off. Why a sweep over the broker rather than a
//! list kept on disk: the broker is the one place that holds what Home Assistant reads, it
//! also knows configs published from another state directory or machine under the same
//! host name, and the filter, `<ha_prefix>/+/lookout_<host>/+/config`, matches this host's
//! own configs only, so the cost is one SUBSCRIBE and a handful of messages per host and
//! start, however many other devices the broker serves.
//!
//! Topics are `<ha_prefix>/<component>/lookout_<host>/<object_id>/config` (Home Assistant:
//! `<discovery_prefix>/<component>/[<node_id>/]<object_id>/config`, ids of
//! `[a-zA-Z0-9_-]`). Keys are Home Assistant's documented option names, written in full
//! (integrations/sensor.mqtt, binary_sensor.mqtt, mqtt#discovery-payload);
//! tests/homeassistant_e2e.rs checks each against those lists.

use lookout_shared::config::Invalid;
use lookout_shared::topics;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Home Assistant's default discovery prefix.
pub const DEFAULT_PREFIX: &str = "homeassistant";

/// `[homeassistant]`: off by default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    pub prefix: String,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

impl HomeAssistantConfig {
    /// Checks the table. The prefix is checked whether or not discovery is on: with it
    /// off the agent still clears, under that prefix, the configs it published before.
    /// With it on, the names of each table's models (`(table, names)`) must stay distinct
    /// once reduced to the characters Home Assistant allows in discovery topics; the
    /// error's key is then `<table>.<name>`, relative to the document.
    pub fn check<'a>(
        &self,
        models: impl IntoIterator<Item = (&'a str, Vec<&'a str>)>,
    ) -> Result<(), Invalid> {
        check_prefix(&self.prefix).map_err(|m| Invalid::new("homeassistant.prefix", m))?;
        if !self.enabled {
            return Ok(());
        }
        for (table, names) in models {
            let mut seen = std::collections::BTreeMap::new();
            for name in names {
                let id = object_id(name);
                if let Some(other) = seen.insert(id.clone(), name) {
                    return Err(Invalid::new(
                        format!("{table}.{name}"),
                        format!(
                            "with homeassistant.enabled, model names must differ in letters, \
                             digits, '_' and '-': {other:?} and {name:?} both become {id:?}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A score sensor's state: the score, or `None` while the model learns (`score` is null
/// then). Home Assistant's MQTT sensor takes the string `None` as "unknown" when it expects
/// a number (it does with a `state_class`); anything else that is not a number, such as
/// `unknown`, would be logged as an error on every tick.
pub const SCORE_TEMPLATE: &str =
    "{{ value_json.score if value_json.score is not none else 'None' }}";

/// A score sensor's attributes: the score payload without what changes on every tick (`ts`,
/// `score`), so that Home Assistant stores a new set of attributes only when one of them
/// changes.
pub const SCORE_ATTRIBUTES_TEMPLATE: &str = "{{ {'learning': value_json.learning, \
     'anomalous': value_json.anomalous, 'level': value_json.level, \
     'threshold': value_json.threshold, 'alarm': value_json.alarm, \
     'labels': value_json.labels} | tojson }}";

/// An alarm binary sensor's state from the alarm topic: `ON` while firing, `OFF` once
/// resolved (Home Assistant's default `payload_on`/`payload_off`).
pub const ALARM_TEMPLATE: &str = "{{ 'ON' if value_json.state == 'firing' else 'OFF' }}";

/// An alarm binary sensor's state from the score topic: its `alarm` field, every tick.
pub const ALARM_FROM_SCORE_TEMPLATE: &str = "{{ 'ON' if value_json.alarm else 'OFF' }}";

/// A model as discovery sees it.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    pub name: &'a str,
    /// Scores are published on every tick (not `only_show_anomaly`).
    pub scores_every_tick: bool,
}

/// Resident memory from `agent/stats` (null where the system has no `VmRSS`).
pub const RSS_TEMPLATE: &str =
    "{{ value_json.rss_bytes if value_json.rss_bytes is not none else 'None' }}";

/// Uptime from `agent/stats`.
pub const UPTIME_TEMPLATE: &str = "{{ value_json.uptime_s }}";

/// Checks `homeassistant.prefix`: it is the first level(s) of every discovery topic.
pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Err("must not be empty (Home Assistant's default is \"homeassistant\")");
    }
    if prefix.contains(['+', '#', '\0']) {
        return Err("must be free of MQTT wildcards ('+', '#')");
    }
    if prefix.starts_with('/') || prefix.ends_with('/') {
        return Err("must not start or end with '/'");
    }
    if prefix.split('/').any(str::is_empty) {
        return Err("must not contain an empty level ('//')");
    }
    Ok(())
}

/// `name` with every character outside `[a-zA-Z0-9_-]` replaced by `_`, as Home Assistant
/// requires of a discovery topic's node and object ids.
pub fn object_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The node id of a host's configs, also its device identifier: `lookout_<host>`.
pub fn node_id(host: &str) -> String {
    format!("lookout_{}", object_id(host))
}

/// What the link sweeps: every discovery config of this host, of any component.
pub fn sweep_filter(ha_prefix: &str, host: &str) -> String {
    format!("{ha_prefix}/+/{}/+/config", node_id(host))
}

/// One discovery config.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub topic: String,
    pub payload: Value,
}

/// What a host's configs are built from.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Home Assistant's discovery prefix.
    pub ha_prefix: &'a str,
    /// The agent's `mqtt.prefix`.
    pub prefix: &'a str,
    /// Whether `agent/stats` is published (its sensors would never get a value otherwise).
    pub stats: bool,
}

/// What a host's link announces on every connect, and the filter it sweeps.
#[derive(Clone, Debug, Default)]
pub struct HostDiscovery {
    pub announce: Vec<(String, Vec<u8>)>,
    pub sweep: String,
}

/// The discovery a host's link runs with: its configs when discovery is on, none when it
/// is off (the sweep then clears what an earlier run published).
pub fn for_host<'a>(
    ha: &HomeAssistantConfig,
    ctx_prefix: &str,
    stats: bool,
    host: &str,
    models: impl IntoIterator<Item = Model<'a>>,
) -> HostDiscovery {
    let announce = if ha.enabled {
        let ctx = Context {
            ha_prefix: &ha.prefix,
            prefix: ctx_prefix,
            stats,
        };
        configs(&ctx, host, models)
            .into_iter()
            .map(|c| (c.topic, c.payload.to_string().into_bytes()))
            .collect()
    } else {
        Vec::new()
    };
    HostDiscovery {
        announce,
        sweep: sweep_filter(&ha.prefix, host),
    }
}

/// A model's two entities as (component, object id, fields): its score sensor and its
/// alarm binary sensor.
fn model_configs(ctx: &Context, host: &str, m: Model) -> [(&'static str, String, Value); 2] {
    let model = m.name;
    let id = object_id(model);
    let scores = topics::score(ctx.prefix, host, model);
    let score = json!({
        "name": format!("{model} anomaly score"),
        "state_topic": scores,
        "value_template": SCORE_TEMPLATE,
        "json_attributes_topic": scores,
        "json_attributes_template": SCORE_ATTRIBUTES_TEMPLATE,
        "state_class": "measurement",
        "suggested_display_precision": 2,
        "icon": "mdi:chart-bell-curve",
    });
    let alarms = topics::alarm(ctx.prefix, host, model);
    let (state, template) = if m.scores_every_tick {
        (&scores, ALARM_FROM_SCORE_TEMPLATE)
    } else {
        (&alarms, ALARM_TEMPLATE)
    };
    let alarm = json!({
        "name": format!("{model} anomaly"),
        "state_topic": state,
        "value_template": template,
        "json_attributes_topic": alarms,
        "device_class": "problem",
        "qos": 1,
    });
    [
        ("sensor", format!("{id}_score"), score),
        ("binary_sensor", format!("{id}_alarm"), alarm),
    ]
}

/// The diagnostic sensors of the agent's stats, as (component, object id, fields).
fn stats_configs(ctx: &Context, host: &str) -> [(&'static str, &'static str, Value); 2] {
    let stats = topics::agent_stats(ctx.prefix, host);
    [
        (
            "sensor",
            "agent_rss",
            json!({
                "name": "Agent memory",
                "state_topic": stats,
                "value_template": RSS_TEMPLATE,
                "device_class": "data_size",
                "unit_of_measurement": "B",
                "state_class": "measurement",
                "entity_category": "diagnostic",
            }),
        ),
        (
            "sensor",
            "agent_uptime",
            json!({
                "name": "Agent uptime",
                "state_topic": stats,
                "value_template": UPTIME_TEMPLATE,
                "device_class": "duration",
                "unit_of_measurement": "s",
                "entity_category": "diagnostic",
            }),
        ),
    ]
}

/// Every discovery config of one host: per model a score sensor and an alarm binary
/// sensor, then the diagnostic sensors of the agent's stats.
pub fn configs<'a>(
    ctx: &Context,
    host: &str,
    models: impl IntoIterator<Item = Model<'a>>,
) -> Vec<Config> {
    let node = node_id(host);
    let status = topics::status(ctx.prefix, host);
    // Shared by every config of the host: the device, where the config comes from, and
    // availability from the agent's `status` (its last will says `offline`).
    let common = json!({
        "device": {
            "identifiers": [node],
            "name": host,
            "model": "Lookout agent",
            "manufacturer": "Lookout",
            "sw_version": env!("CARGO_PKG_VERSION"),
        },
        "origin": origin(),
        "availability_topic": status,
        "payload_available": lookout_shared::payload::ONLINE,
        "payload_not_available": lookout_shared::payload::OFFLINE,
    });
    let config = |component: &str, object: &str, fields: Value| {
        let mut payload = common.clone();
        if let (Some(p), Value::Object(f)) = (payload.as_object_mut(), fields) {
            p.extend(f);
            p.insert("unique_id".into(), format!("{node}_{object}").into());
        }
        Config {
            topic: format!("{}/{component}/{node}/{object}/config", ctx.ha_prefix),
            payload,
        }
    };
    let mut out = Vec::new();
    for m in models {
        out.extend(model_configs(ctx, host, m).map(|(c, o, f)| config(c, &o, f)));
    }
    if ctx.stats {
        out.extend(stats_configs(ctx, host).map(|(c, o, f)| config(c, o, f)));
    }
    out
}

/// Home Assistant logs where a discovered item came from. The support URL is the
/// package's `repository`, when Cargo.toml names one.
fn origin() -> Value {
    let mut o = json!({"name": "lookout-agent", "sw_version": env!("CARGO_PKG_VERSION")});
    if let (Some(url), Some(map)) = (
        option_env!("CARGO_PKG_REPOSITORY").filter(|u| !u.is_empty()),
        o.as_object_mut(),
    ) {
        map.insert("support_url".into(), url.into());
    }
    o
}

/// The payload fields a template reads (`value_json.<field>`), in order of appearance.
pub fn template_fields(template: &str) -> Vec<&str> {
    template
        .match_indices("value_json.")
        .map(|(i, m)| {
            let rest = &template[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_shared::payload::{Alarm, AlarmState, Labels, Score};

    fn every_tick(name: &str) -> Model<'_> {
        Model {
            name,
            scores_every_tick: true,
        }
    }

    fn anomalies_only(name: &str) -> Model<'_> {
        Model {
            name,
            scores_every_tick: false,
        }
    }

    fn ctx(stats: bool) -> Context<'static> {
        Context {
            ha_prefix: "homeassistant",
            prefix: "lookout",
            stats,
        }
    }

    #[test]
    fn prefixes_are_checked() {
        for good in ["homeassistant", "ha/discovery", "x"] {
            assert_eq!(check_prefix(good), Ok(()), "{good}");
        }
        for bad in ["", "ha/+", "#", "/ha", "ha/", "a//b"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_keep_only_what_home_assistant_allows() {
        assert_eq!(object_id("edge-42.example.com"), "edge-42_example_com");
        assert_eq!(object_id("disk io é"), "disk_io__");
        assert_eq!(node_id("sim-1"), "lookout_sim-1");
        assert_eq!(
            sweep_filter("homeassistant", "a.b"),
            "homeassistant/+/lookout_a_b/+/config"
        );
    }

    #[test]
    fn one_score_sensor_and_one_alarm_binary_sensor_per_model_plus_stats() {
        let cs = configs(
            &ctx(true),
            "sim-1",
            [every_tick("cpu_util"), anomalies_only("mem.util")],
        );
        let topics: Vec<&str> = cs.iter().map(|c| c.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/sensor/lookout_sim-1/cpu_util_score/config",
                "homeassistant/binary_sensor/lookout_sim-1/cpu_util_alarm/config",
                "homeassistant/sensor/lookout_sim-1/mem_util_score/config",
                "homeassistant/binary_sensor/lookout_sim-1/mem_util_alarm/config",
                "homeassistant/sensor/lookout_sim-1/agent_rss/config",
                "homeassistant/sensor/lookout_sim-1/agent_uptime/config",
            ]
        );
        let score = &cs[2].payload;
        assert_eq!(score["state_topic"], "lookout/sim-1/scores/mem.util");
        assert_eq!(score["unique_id"], "lookout_sim-1_mem_util_score");
        assert_eq!(score["availability_topic"], "lookout/sim-1/status");
        assert_eq!(score["device"]["identifiers"], json!(["lookout_sim-1"]));
        assert_eq!(score["device"]["name"], "sim-1");
        assert_eq!(score["origin"]["sw_version"], env!("CARGO_PKG_VERSION"));
        let alarm = &cs[3].payload;
        assert_eq!(alarm["state_topic"], "lookout/sim-1/alarms/mem.util");
        assert_eq!(alarm["value_template"], ALARM_TEMPLATE);
        assert_eq!(
            alarm["json_attributes_topic"],
            "lookout/sim-1/alarms/mem.util"
        );
        assert_eq!(alarm["device_class"], "problem");
        let alarm = &cs[1].payload;
        assert_eq!(alarm["state_topic"], "lookout/sim-1/scores/cpu_util");
        assert_eq!(alarm["value_template"], ALARM_FROM_SCORE_TEMPLATE);
        assert_eq!(
            alarm["json_attributes_topic"],
            "lookout/sim-1/alarms/cpu_util"
        );
        assert_eq!(
            configs(&ctx(false), "h", [every_tick("m")]).len(),
            2,
            "no stats: no stats sensors"
        );
    }

    /// The templates read fields that the payloads really carry.
    #[test]
    fn templates_read_fields_of_the_payloads() {
        let score = serde_json::to_value(Score {
            ts: 1,
            host: "h".into(),
            model: "m".into(),
            device: None,
            score: None,
            learning: true,
            anomalous: false,
            level: 0,
            threshold: 1.75,
            alarm: false,
            labels: Labels::new(),
            dimensions: Vec::new(),
            explain: None,
        })
        .unwrap();
        let alarm = serde_json::to_value(Alarm {
            id: "h:m:1".into(),
            host: "h".into(),
            source: "m".into(),
            state: AlarmState::Firing,
            severity: 2,
            ts: 1,
            started_at: 1,
            score: 3.0,
            threshold: 1.75,
            summary: "s".into(),
            labels: Labels::new(),
            dimensions: Vec::new(),
            explain: None,
            window: None,
        })
        .unwrap();
        let mut health = crate::health::Health::new(std::time::Duration::from_secs(1));
        let stats = serde_json::to_value(crate::health::Report {
            ts: 1,
            host: "h",
            version: "0",
            uptime_s: 1,
            stats_interval_s: 60,
            rss_bytes: None,
            ticks: 0,
            ticks_skipped: 0,
            tick_lag_ms: health.take_lag(),
            published: 0,
            dropped: 0,
            reconnects: 0,
            inbox_dropped: 0,
            oversize: 0,
            refused: 0,
            protocol: "3.1.1",
            outbox: Default::default(),
            models: Default::default(),
            commands: Default::default(),
            devices: None,
            upstream: Vec::new(),
            buffer: None,
        })
        .unwrap();
        for c in configs(&ctx(true), "h", [every_tick("m"), anomalies_only("n")]) {
            let payload = match c.payload["state_topic"].as_str().unwrap() {
                t if t.contains("/scores/") => &score,
                t if t.contains("/alarms/") => &alarm,
                t if t.ends_with("/agent/stats") => &stats,
                t => panic!("unexpected state topic {t}"),
            };
            for key in ["value_template", "json_attributes_template"] {
                let Some(t) = c.payload[key].as_str() else {
                    continue;
                };
                let fields = template_fields(t);
                assert!(!fields.is_empty(), "{t}");
                for f in fields {
                    assert!(payload.get(f).is_some(), "{}: {key} reads {f}", c.topic);
                }
            }
        }
        assert_eq!(template_fields(ALARM_TEMPLATE), ["state"]);
        assert_eq!(template_fields(ALARM_FROM_SCORE_TEMPLATE), ["alarm"]);
    }

    #[test]
    fn disabled_announces_nothing_but_still_sweeps() {
        let off = HomeAssistantConfig::default();
        let d = for_host(&off, "lookout", true, "box", [every_tick("cpu")]);
        assert!(d.announce.is_empty());
        assert_eq!(d.sweep, "homeassistant/+/lookout_box/+/config");
        let on = HomeAssistantConfig {
            enabled: true,
            prefix: "ha".into(),
        };
        let d = for_host(&on, "lookout", true, "box", [every_tick("cpu")]);
        assert_eq!(d.announce.len(), 4);
        assert_eq!(d.sweep, "ha/+/lookout_box/+/config");
        let v: Value = serde_json::from_slice(&d.announce[0].1).unwrap();
        assert_eq!(v["value_template"], SCORE_TEMPLATE);
    }

    #[test]
    fn with_discovery_on_model_names_must_stay_distinct_as_ids() {
        let names = || [("models", vec!["disk.io", "disk_io"])];
        assert!(
            HomeAssistantConfig::default().check(names()).is_ok(),
            "fine while off"
        );
        let on = HomeAssistantConfig {
            enabled: true,
            ..HomeAssistantConfig::default()
        };
        let err = on.check(names()).unwrap_err();
        assert_eq!(err.key, "models.disk_io");
        assert!(err.message.contains("\"disk_io\""), "{err}");
        let bad = HomeAssistantConfig {
            prefix: "ha/#".into(),
            ..HomeAssistantConfig::default()
        };
        assert_eq!(bad.check(names()).unwrap_err().key, "homeassistant.prefix");
    }
}
