//! JSON documents on Lookout's topics. Field names are part of the public contract
//! (`docs/topics.md`); every time is Unix milliseconds (simulated time when simulating).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The retained payloads of `<prefix>/<host>/status`: published on every connect, and
/// left by the broker as the last will.
pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

/// Labels attached to a host or an alarm (`ip`, ...). A BTreeMap keeps the JSON key order
/// stable, which makes payloads diffable and tests deterministic.
pub type Labels = BTreeMap<String, String>;

/// `<prefix>/<host>/metrics`: one per tick, values grouped by chart then dimension,
/// like Netdata's `system.cpu` → `user`. A value that is not a finite number is `null`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub ts: i64,
    pub host: String,
    pub metrics: BTreeMap<String, BTreeMap<String, Option<f64>>>,
}

/// `<prefix>/<host>/anomaly_rate`, every tick: how many of the host's models are
/// anomalous at once (each counts for the host's `[host] window` after its last anomalous
/// tick).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyRate {
    pub ts: i64,
    pub host: String,
    /// Share of the host's models counted anomalous, 0 to 1.
    pub rate: f64,
    /// Those models' names.
    pub anomalous: Vec<String>,
    pub models: usize,
    /// True while the host-level alarm (`alarms/host`) is firing.
    pub alarm: bool,
    #[serde(default)]
    pub labels: Labels,
}

/// `<prefix>/<host>/scores/<model>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub ts: i64,
    pub host: String,
    pub model: String,
    /// For a device model (a series ingested over MQTT, one instance per device): the
    /// device this instance learns. Absent for the host's own models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Anomaly score on the model's scale (docs/scorer.md), capped at its
    /// `anomaly_score_cap`; `null` while the model is learning.
    pub score: Option<f64>,
    /// True while the model has no fit yet (its first `min_train_points` ticks).
    #[serde(default)]
    pub learning: bool,
    /// True when this tick is anomalous (score, context, direction, saturation).
    pub anomalous: bool,
    /// Severity level 1–4 of this tick when anomalous, else 0.
    #[serde(default)]
    pub level: u8,
    pub threshold: f64,
    /// True when the alarm of this model is firing (after the `for` hysteresis).
    pub alarm: bool,
    /// The host's entity labels (`[agent] labels`, seed `000`), as on alarms.
    #[serde(default)]
    pub labels: Labels,
    /// Which dimensions made this tick anomalous; only on anomalous ticks, so that the
    /// score of every normal tick stays as small as it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<Dimension>,
    /// The top dimension as one line for people; with `dimensions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<String>,
}

/// One dimension's part in an anomalous tick (docs/scorer.md, "Which dimension").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dimension {
    /// The dimension's name: the metric's dimension (`system`), or `chart|dimension` when
    /// two of the model's charts share a dimension name.
    pub name: String,
    /// Its share, 0 to 1, of the squared distance to the nearest centre of the model that
    /// scored the tick, in the model's scaled units. The model's shares sum to 1.
    pub share: f64,
    /// Its value as the model sees it, in the metric's unit: the rolling mean over
    /// `n_smoothing` ticks (its per-tick change with `diffs = true`).
    pub value: f64,
    /// The 5th and 95th percentile of the same value over the newest fit's training set;
    /// absent until a fit has measured it (the first ticks after restoring an older
    /// snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal: Option<[f64; 2]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmState {
    Firing,
    Resolved,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Firing => "firing",
            AlarmState::Resolved => "resolved",
        }
    }
}

/// `<prefix>/<host>/alarms/<source>`, retained at QoS 1 so a newcomer sees the current
/// state of every alarm.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Stable for one episode, from firing to resolved: `<host>:<source>:<started_at>`.
    /// Receivers deduplicate on `(id, state, severity)`.
    pub id: String,
    pub host: String,
    pub source: String,
    pub state: AlarmState,
    /// 1 (lowest) to 4.
    pub severity: u8,
    pub ts: i64,
    pub started_at: i64,
    /// The score that fired the alarm, or the last score when resolving.
    pub score: f64,
    pub threshold: f64,
    pub summary: String,
    #[serde(default)]
    pub labels: Labels,
    /// Which dimensions made the model's alarm fire, largest share first (firing alarms
    /// of models only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<Dimension>,
    /// The top dimension as one line for people; with `dimensions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<String>,
    /// What the model saw up to the firing tick, for a picture (firing alarms of learned
    /// models only, when `[detector] picture_points` is not 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// The last ticks of a model up to an alarm: enough to draw the series, its normal range,
/// the score against the threshold and the anomalous span. The arrays are parallel, oldest
/// tick first, and of one length (at most `picture_points`, 600); a receiver treats a
/// window whose lengths differ as absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Each tick's time, Unix ms.
    pub ts: Vec<i64>,
    /// Each tick's anomaly score (capped as on the scores topic); `null` while the model
    /// had no fit.
    pub score: Vec<Option<f64>>,
    /// Each tick's level, as on the scores topic: 0 normal, 1–4 anomalous.
    pub level: Vec<u8>,
    /// Up to three dimensions, the alarm's `dimensions` first (largest share first), then
    /// the model's others in its order.
    pub series: Vec<WindowSeries>,
}

/// One dimension of a [`Window`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowSeries {
    /// As in [`Dimension::name`].
    pub name: String,
    /// Its value as the model saw it at each tick (as in [`Dimension::value`]); `null`
    /// before the model had a complete feature vector.
    pub values: Vec<Option<f64>>,
    /// Its normal range when the alarm fired, as in [`Dimension::normal`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal: Option<[f64; 2]>,
}

impl Window {
    /// Whether the parallel arrays agree: a window that does not is from a broken or
    /// hostile publisher and is not drawn.
    pub fn is_consistent(&self) -> bool {
        let n = self.ts.len();
        n > 0
            && self.score.len() == n
            && self.level.len() == n
            && self.series.iter().all(|s| s.values.len() == n)
    }
}

impl Alarm {
    pub fn episode_id(host: &str, source: &str, started_at: i64) -> String {
        format!("{host}:{source}:{started_at}")
    }
}

/// `<prefix>/<host>/sim/truth`: an anomaly the simulator injected, the ground truth that
/// tests and users compare alarms against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimTruth {
    pub host: String,
    pub metric: String,
    pub kind: String,
    pub start: i64,
    pub end: i64,
}
