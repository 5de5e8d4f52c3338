//! `[detector]` and the models' tables: the one place a detector's settings are
//! assembled from the scorer's keys and tables ([`crate::scorer::config`]) and the
//! alarm's ([`crate::alarm::config`]), and resolved into the [`Detector`] a model runs on.
//!
//! A model's table may set any key of `[detector]` again for itself; the config
//! assembler merges the two TOML tables before they reach [`DetectorConfig`], so a default
//! is written exactly once (the `Default` impls) whatever path a value takes.

use std::time::Duration;

use lookout_shared::config::Invalid;
use serde::{Deserialize, Serialize};

use super::trace;
use crate::alarm::{AlarmConfig, AlarmParams, SaturationConfig, rough};
use crate::scorer::config::Span;
use crate::scorer::model::Distance;
use crate::scorer::{ContextConfig, ModelParams, ScaleKind, Scaling, ScorerConfig, TrainConfig};

/// The `[detector]` table, or a model's table over it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Score first differences (the notebook) instead of smoothed levels.
    pub diffs: bool,
    pub n_smoothing: usize,
    pub n_lags: usize,
    pub n_clusters: usize,
    /// `"nearest"` centre, or the notebook's `"mean"` of all centres.
    pub distance: Distance,
    /// `"quantile"`: a score of 1.0 is as far as the `scale_quantile` training vector;
    /// `"minmax"`: the notebook's min–max scaling.
    pub scale: ScaleKind,
    pub scale_quantile: f64,
    /// `"robust"`: each dimension scaled by its training median and MAD; `"none"`: raw
    /// distances (the notebook).
    pub scaling: Scaling,
    pub anomaly_score_cap: f64,
    /// Seed `000`'s `data_meta` limits: values outside them are invalid, counted and not
    /// scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_limit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper_limit: Option<f64>,
    /// Publish scores of anomalous ticks only (seed `000`'s `only_show_anomaly`).
    pub only_show_anomaly: bool,
    /// Excuse what happened at this time of day on two of the last three days
    /// (`scorer::profile`).
    pub seasonal: bool,
    /// Ticks of the model's input and score a firing alarm carries for its picture
    /// (`window` in the payload); 0 sends none. At most 600.
    pub picture_points: usize,
    pub train: TrainConfig,
    pub context: ContextConfig,
    pub alarm: AlarmConfig,
    pub saturation: SaturationConfig,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        let s = ScorerConfig::default();
        Self {
            diffs: s.diffs,
            n_smoothing: s.n_smoothing,
            n_lags: s.n_lags,
            n_clusters: s.n_clusters,
            distance: s.distance,
            scale: s.scale,
            scale_quantile: s.scale_quantile,
            scaling: s.scaling,
            anomaly_score_cap: s.anomaly_score_cap,
            down_limit: None,
            upper_limit: None,
            only_show_anomaly: false,
            seasonal: true,
            picture_points: 300,
            train: TrainConfig::default(),
            context: ContextConfig::default(),
            alarm: AlarmConfig::default(),
            saturation: SaturationConfig::default(),
        }
    }
}

impl DetectorConfig {
    fn scorer(&self) -> ScorerConfig {
        ScorerConfig {
            diffs: self.diffs,
            n_smoothing: self.n_smoothing,
            n_lags: self.n_lags,
            n_clusters: self.n_clusters,
            anomaly_score_cap: self.anomaly_score_cap,
            distance: self.distance,
            scale: self.scale,
            scale_quantile: self.scale_quantile,
            scaling: self.scaling,
        }
    }

    /// Checks every key and resolves the detector for a series sampled every `interval`
    /// (its times become ticks); keys in errors are relative to the table (`alarm.t2`,
    /// `train.window`).
    pub fn resolve_at(&self, interval: Duration) -> Result<Detector, Invalid> {
        let params = ModelParams::resolve(&self.scorer(), &self.train, &self.context, interval)?;
        let alarm = AlarmParams::resolve(&self.alarm, &self.saturation, self.context.threshold)?;
        let limits_ok = match (self.down_limit, self.upper_limit) {
            (Some(lo), Some(hi)) => lo.is_finite() && hi.is_finite() && lo < hi,
            (Some(x), None) | (None, Some(x)) => x.is_finite(),
            (None, None) => true,
        };
        if !limits_ok {
            return Err(Invalid::new(
                "upper_limit",
                "down_limit and upper_limit must be numbers with down_limit < upper_limit",
            ));
        }
        if self.picture_points > trace::MAX_POINTS {
            return Err(Invalid::new(
                "picture_points",
                format!("at most {} ticks (0 sends no picture)", trace::MAX_POINTS),
            ));
        }
        // At most MAX_WINDOW ticks, which bounds the memory: under a 100 ms interval the
        // shipped minute is the last 600 ticks. Clamped, not refused, so that a fast
        // interval with the shipped config still starts. Off for a saturation model: it
        // judges against its limit, not against what it learned; a quick fill is rough
        // too, and a restless alarm at its start would take the `suppress` slot of the
        // saturation alarm that should follow.
        let rough_window = if alarm.saturation.is_some() {
            0
        } else {
            Span::Time(self.alarm.rough)
                .ticks(interval)
                .min(rough::MAX_WINDOW)
        };
        Ok(Detector {
            params,
            rough_window,
            alarm,
            down_limit: self.down_limit,
            upper_limit: self.upper_limit,
            only_show_anomaly: self.only_show_anomaly,
            seasonal: self.seasonal,
            accept_after_ms: i64::try_from(self.train.accept_after.0.as_millis())
                .unwrap_or(i64::MAX),
            young_for_ms: i64::try_from(self.alarm.young_for.0.as_millis()).unwrap_or(i64::MAX),
            hold_firing: self.train.hold_firing,
            gate_after_ms: self.train.gate_after.map_or(alarm.calm.escalate_ms, |d| {
                i64::try_from(d.0.as_millis()).unwrap_or(i64::MAX)
            }),
            picture_points: self.picture_points,
        })
    }
}

/// A resolved detector: what one model runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct Detector {
    pub params: ModelParams,
    pub alarm: AlarmParams,
    /// `alarm.rough` in ticks at the model's interval, at most `rough::MAX_WINDOW` (below
    /// `rough::MIN_WINDOW`: off).
    pub rough_window: usize,
    /// Values outside `[down_limit, upper_limit]` are invalid: counted, not scored.
    pub down_limit: Option<f64>,
    pub upper_limit: Option<f64>,
    /// Publish scores only for anomalous ticks (seed `000`'s `only_show_anomaly`).
    pub only_show_anomaly: bool,
    /// Time-of-day profile on (`scorer::profile`).
    pub seasonal: bool,
    /// `train.accept_after` in ms (0: never by itself).
    pub accept_after_ms: i64,
    /// `alarm.young_for` in ms (0: off).
    pub young_for_ms: i64,
    /// `train.hold_firing`.
    pub hold_firing: bool,
    /// `train.gate_after` in ms (`alarm.escalate` when unset).
    pub gate_after_ms: i64,
    /// Ticks a firing alarm's window holds (0: none).
    pub picture_points: usize,
}

impl Detector {
    /// Whether `v` lies within the model's `data_meta` limits.
    pub fn valid(&self, v: f64) -> bool {
        self.down_limit.is_none_or(|lo| v >= lo) && self.upper_limit.is_none_or(|hi| v <= hi)
    }
}

impl Detector {
    /// The built-in default detector for a series sampled every `interval`: what
    /// `replay` runs without `--config`.
    pub fn default_at(interval: Duration) -> Self {
        DetectorConfig::default()
            .resolve_at(interval)
            .expect("the built-in default detector is valid")
    }
}

impl Default for Detector {
    /// The built-in default detector at 1 s, the agent's default interval.
    fn default() -> Self {
        DetectorConfig::default()
            .resolve_at(Duration::from_secs(1))
            .expect("the built-in default detector is valid")
    }
}

/// One model of the config: a name, the dimensions it scores together, its detector.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    /// (chart, dimension) in the order they form the feature vector.
    pub metrics: Vec<(String, String)>,
    pub detector: Detector,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped minute at a 50 ms interval (the end-to-end tests run so) is 1,200 ticks:
    /// the window holds the last 600, and the agent starts.
    #[test]
    fn a_fast_interval_clamps_the_restless_window_instead_of_refusing() {
        let at = |ms| {
            DetectorConfig::default()
                .resolve_at(Duration::from_millis(ms))
                .unwrap()
                .rough_window
        };
        assert_eq!(at(50), rough::MAX_WINDOW);
        assert_eq!(at(1000), 60);
        assert_eq!(at(10_000), 6, "below MIN_WINDOW, which Rough turns off");
    }

    #[test]
    fn the_builtin_default_resolves_and_every_check_names_its_key() {
        let d = Detector::default();
        assert_eq!(d.alarm.threshold, 1.75);
        assert_eq!(d.params.train_data_size, 1440);
        let bad = |f: fn(&mut DetectorConfig)| {
            let mut c = DetectorConfig::default();
            f(&mut c);
            c.resolve_at(std::time::Duration::from_secs(1))
                .unwrap_err()
                .key
        };
        assert_eq!(bad(|c| c.alarm.t2 = 0.5), "alarm.t2");
        assert_eq!(bad(|c| c.alarm.step = 0.0), "alarm.step");
        assert_eq!(
            bad(|c| c.alarm.kind = crate::alarm::Kind::Saturation),
            "saturation.limit"
        );
        assert_eq!(bad(|c| c.train.decay = 2.0), "train.decay");
        assert_eq!(bad(|c| c.n_clusters = 0), "n_clusters");
        assert_eq!(bad(|c| c.context.length = 0), "context.length");
        assert_eq!(bad(|c| c.picture_points = 601), "picture_points");
        assert_eq!(
            bad(|c| {
                c.down_limit = Some(5.0);
                c.upper_limit = Some(1.0);
            }),
            "upper_limit"
        );
    }
}
