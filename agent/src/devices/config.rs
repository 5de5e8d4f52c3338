//! A device model's own keys in its `[models.NAME]` table. A model table with `device`
//! or `topic` learns series that arrive over MQTT, one instance per device, instead of
//! this host's sampler metrics; every other key is the detector's, as for any model.

use std::collections::BTreeMap;

use lookout_shared::config::Invalid;
use serde::{Deserialize, Serialize};

use super::bucket::Aggregate;
use crate::decide::Detector;

/// Keys that make a model table a device model, and are not the detector's.
pub const KEYS: [&str; 6] = [
    "device",
    "topic",
    "metrics",
    "aggregate",
    "max_instances",
    "max_rate",
];

/// Instances per device model unless `max_instances` says otherwise: about 5 MiB of
/// models at the default detector, one dimension.
pub const DEFAULT_MAX_INSTANCES: usize = 256;

/// Past this one definition's instances are a runaway device name, not a fleet.
const MAX_MAX_INSTANCES: usize = 100_000;

/// Readings per second one device may send before the rest are dropped, by default: far
/// above any sensor's rate at a 1 s model, far below a stuck publisher loop.
pub const DEFAULT_MAX_RATE: f64 = 20.0;

/// The keys as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceKeys {
    /// Glob on the reading's device (`*` any run, `?` one character); default `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// An MQTT topic filter the readings come on, instead of `<prefix>/ingest/#`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Metric names, in the order they form the model's vector.
    pub metrics: Vec<String>,
    /// One aggregate for every metric, or one per metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateKey>,
    #[serde(default = "default_max_instances")]
    pub max_instances: usize,
    #[serde(default = "default_max_rate")]
    pub max_rate: f64,
}

fn default_max_instances() -> usize {
    DEFAULT_MAX_INSTANCES
}

fn default_max_rate() -> f64 {
    DEFAULT_MAX_RATE
}

/// `aggregate = "sum"` or `aggregate = { requests = "sum", errors = "count" }`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "one of last, mean, sum, count, min, max, or a table of metric = aggregate"
)]
pub enum AggregateKey {
    All(Aggregate),
    Each(BTreeMap<String, Aggregate>),
}

/// A resolved device model: what every instance of it runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSpec {
    pub name: String,
    pub device: String,
    /// `None`: the ingest topics, `<prefix>/ingest/#`.
    pub topic: Option<String>,
    pub metrics: Vec<(String, Aggregate)>,
    pub max_instances: usize,
    pub max_rate: f64,
    pub detector: Detector,
}

impl DeviceKeys {
    /// Checks the keys; errors name the key within the model's table.
    pub fn resolve(self, name: &str, detector: Detector) -> Result<DeviceSpec, Invalid> {
        let device = self.device.unwrap_or_else(|| "*".into());
        if device.is_empty() {
            return Err(Invalid::new(
                "device",
                "an empty glob matches no device; use \"*\" for all",
            ));
        }
        if let Some(t) = &self.topic {
            check_filter(t).map_err(|m| Invalid::new("topic", m))?;
        }
        if self.metrics.is_empty() {
            return Err(Invalid::new(
                "metrics",
                "list at least one metric name, e.g. metrics = [\"requests\"]",
            ));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            if m.is_empty() {
                return Err(Invalid::new(
                    format!("metrics[{i}]"),
                    "an empty metric name",
                ));
            }
            if self.metrics[..i].contains(m) {
                return Err(Invalid::new(
                    format!("metrics[{i}]"),
                    format!("\"{m}\" is listed twice"),
                ));
            }
        }
        let metrics = match self.aggregate {
            None => self
                .metrics
                .into_iter()
                .map(|m| (m, Aggregate::default()))
                .collect(),
            Some(AggregateKey::All(a)) => self.metrics.into_iter().map(|m| (m, a)).collect(),
            Some(AggregateKey::Each(each)) => {
                if let Some(stray) = each.keys().find(|k| !self.metrics.contains(k)) {
                    return Err(Invalid::new(
                        format!("aggregate.{stray}"),
                        "not one of this model's metrics",
                    ));
                }
                self.metrics
                    .into_iter()
                    .map(|m| {
                        let a = each.get(&m).copied().unwrap_or_default();
                        (m, a)
                    })
                    .collect()
            }
        };
        if !(1..=MAX_MAX_INSTANCES).contains(&self.max_instances) {
            return Err(Invalid::new(
                "max_instances",
                format!(
                    "must be 1 to {MAX_MAX_INSTANCES}, got {}",
                    self.max_instances
                ),
            ));
        }
        if !(self.max_rate.is_finite() && self.max_rate > 0.0) {
            return Err(Invalid::new(
                "max_rate",
                format!(
                    "readings per second per device: a number above 0, got {}",
                    self.max_rate
                ),
            ));
        }
        Ok(DeviceSpec {
            name: name.to_owned(),
            device,
            topic: self.topic,
            metrics,
            max_instances: self.max_instances,
            max_rate: self.max_rate,
            detector,
        })
    }
}

/// An MQTT subscription filter: `+` a whole level, `#` a whole last level.
fn check_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("an empty topic filter".into());
    }
    if filter.starts_with('$') {
        return Err("topics starting with '$' are the broker's own".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains(['+', '#']);
        if wild && *level != "+" && *level != "#" {
            return Err(format!(
                "'{level}': '+' and '#' must stand alone in a level"
            ));
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err("'#' may only be the last level".into());
        }
    }
    Ok(())
}

/// The device a topic names under `filter`: the level the first `+` matched, else the
/// topic's last level; `None` when the topic does not match.
pub fn topic_device<'t>(filter: &str, topic: &'t str) -> Option<&'t str> {
    let mut device = None;
    let mut levels = topic.split('/');
    let mut last = "";
    for f in filter.split('/') {
        if f == "#" {
            let rest: Vec<&str> = levels.by_ref().collect();
            last = rest.last().copied().unwrap_or(last);
            return Some(device.unwrap_or(last)).filter(|d: &&str| !d.is_empty());
        }
        let t = levels.next()?;
        if f == "+" {
            device.get_or_insert(t);
        } else if f != t {
            return None;
        }
        last = t;
    }
    if levels.next().is_some() {
        return None;
    }
    Some(device.unwrap_or(last)).filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(metrics: &[&str]) -> DeviceKeys {
        DeviceKeys {
            device: None,
            topic: None,
            metrics: metrics.iter().map(|s| (*s).to_owned()).collect(),
            aggregate: None,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_rate: DEFAULT_MAX_RATE,
        }
    }

    #[test]
    fn a_device_model_resolves_with_its_aggregates_and_every_mistake_names_its_key() {
        let mut k = keys(&["requests", "errors"]);
        k.aggregate = Some(AggregateKey::Each(BTreeMap::from([(
            "errors".to_owned(),
            Aggregate::Count,
        )])));
        let s = k.resolve("shop", Detector::default()).unwrap();
        assert_eq!(s.device, "*");
        assert_eq!(
            s.metrics,
            [
                ("requests".to_owned(), Aggregate::Mean),
                ("errors".to_owned(), Aggregate::Count)
            ]
        );
        let err = |f: fn(&mut DeviceKeys)| {
            let mut k = keys(&["a"]);
            f(&mut k);
            k.resolve("m", Detector::default()).unwrap_err().key
        };
        assert_eq!(err(|k| k.metrics.clear()), "metrics");
        assert_eq!(err(|k| k.metrics.push("a".into())), "metrics[1]");
        assert_eq!(err(|k| k.max_instances = 0), "max_instances");
        assert_eq!(err(|k| k.max_rate = f64::NAN), "max_rate");
        assert_eq!(err(|k| k.device = Some(String::new())), "device");
        assert_eq!(err(|k| k.topic = Some("a/b#".into())), "topic");
        assert_eq!(err(|k| k.topic = Some("a/#/b".into())), "topic");
        assert_eq!(
            err(|k| k.aggregate = Some(AggregateKey::Each(BTreeMap::from([(
                "b".into(),
                Aggregate::Sum
            )])))),
            "aggregate.b"
        );
    }

    #[test]
    fn a_topic_names_its_device_by_the_first_plus_or_its_last_level() {
        assert_eq!(
            topic_device("plant/+/temp", "plant/pump-1/temp"),
            Some("pump-1")
        );
        assert_eq!(topic_device("plant/+/temp", "plant/pump-1/flow"), None);
        assert_eq!(topic_device("plant/+/temp", "plant/pump-1/temp/x"), None);
        assert_eq!(
            topic_device("plant/+/#", "plant/pump-1/a/b"),
            Some("pump-1")
        );
        assert_eq!(topic_device("plant/#", "plant/a/pump-2"), Some("pump-2"));
        assert_eq!(
            topic_device("sensors/boiler", "sensors/boiler"),
            Some("boiler")
        );
        assert_eq!(
            topic_device("plant/+/temp", "plant//temp"),
            None,
            "an empty device"
        );
    }
}
