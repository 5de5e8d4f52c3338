//! The scorer's part of a detector as written in the config: the top-level keys of
//! `[detector]` that shape the feature vector and the score ([`ScorerConfig`]), and its two
//! tables, `[detector.train]` ([`TrainConfig`]) and `[detector.context]`
//! ([`ContextConfig`]); resolved and checked into [`ModelParams`].
//!
//! The whole `[detector]` table is assembled by `decide::DetectorConfig`, which adds the
//! alarm's tables; the scorer knows nothing of alarms. Every default is written once, in
//! the `Default` impls here.

use lookout_shared::config::Invalid;
use serde::{Deserialize, Serialize};

use super::context::ContextParams;
use super::model::{Distance, ModelParams, Scale};

/// The scale a score is expressed in, as configured (`scale = "quantile"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleKind {
    MinMax,
    #[default]
    Quantile,
}

/// The scorer's top-level keys of `[detector]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScorerConfig {
    /// Score first differences (the notebook) instead of smoothed levels.
    pub diffs: bool,
    pub n_smoothing: usize,
    pub n_lags: usize,
    pub n_clusters: usize,
    pub anomaly_score_cap: f64,
    pub distance: Distance,
    pub scale: ScaleKind,
    pub scale_quantile: f64,
}

impl Default for ScorerConfig {
    fn default() -> Self {
        Self {
            diffs: false,
            n_smoothing: 3,
            n_lags: 5,
            n_clusters: 6,
            anomaly_score_cap: 10.0,
            distance: Distance::Nearest,
            scale: ScaleKind::Quantile,
            scale_quantile: 0.99,
        }
    }
}

/// `[detector.train]`: what a model learns from, and how often.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Vectors in a training set: the last `window` ticks (the notebook's
    /// `train_data_size`).
    pub window: usize,
    /// A refit every `every` ticks (the notebook's `train_every_n`).
    pub every: usize,
    /// Ticks before the first fit; no score (and no alarm) before it.
    pub min_points: usize,
    /// Fits kept; a tick is anomalous only when all of them agree.
    pub ensemble: usize,
    /// k-means restarts and iterations per fit, and the seed of its choices.
    pub n_init: usize,
    pub max_iter: usize,
    pub seed: u64,
    /// Weight of the previous training set in each refit (seed `003`'s iterative
    /// training); 0 forgets it.
    pub decay: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            window: 1440,
            every: 360,
            min_points: 150,
            ensemble: 12,
            n_init: 10,
            max_iter: 300,
            seed: 0,
            decay: 0.0,
        }
    }
}

/// `[detector.context]`: context novelty beside the k-means score (see `context.rs`).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// Bands of the learned range (plus one below and one above); 0 turns it off.
    pub levels: usize,
    /// Consecutive bands that form a context.
    pub length: usize,
    /// Ticks over which novelty is the share of never-seen contexts.
    pub window: usize,
    /// Ticks before contexts are forgotten (0: never).
    pub memory: usize,
    /// Novelty at or above which a tick is anomalous whatever its k-means score (the
    /// alarm's; resolved into `AlarmParams::context_threshold`).
    pub threshold: f64,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            levels: 8,
            length: 3,
            window: 5,
            memory: 0,
            threshold: 1.0,
        }
    }
}

impl ModelParams {
    /// Checks the scorer's keys of one detector and resolves them. Keys in errors are
    /// relative to the detector table (`n_clusters`, `train.window`, `context.length`).
    pub fn resolve(
        s: &ScorerConfig,
        train: &TrainConfig,
        context: &ContextConfig,
    ) -> Result<Self, Invalid> {
        let c = context;
        let context_bits = (c.levels + 2).checked_pow(c.length as u32);
        let checks: [(&str, bool, &str); 14] = [
            ("context.levels", c.levels <= 62, "must be 0 (off) to 62"),
            (
                "context.length",
                c.levels == 0 || (c.length >= 1 && context_bits.is_some_and(|b| b <= 1 << 20)),
                "must be at least 1, with (levels + 2)^length at most 1048576 bits",
            ),
            (
                "context.window",
                c.levels == 0 || (1..=64).contains(&c.window),
                "must be 1 to 64",
            ),
            (
                "scale_quantile",
                s.scale_quantile > 0.0 && s.scale_quantile <= 1.0,
                "must be above 0 and at most 1",
            ),
            (
                "train.ensemble",
                (1..=64).contains(&train.ensemble),
                "must be 1 to 64",
            ),
            (
                "train.min_points",
                train.min_points > s.n_smoothing + s.n_lags && train.min_points <= 10_000_000,
                "must be more than n_smoothing + n_lags (a model needs whole vectors to learn from)",
            ),
            (
                "n_smoothing",
                (1..=1000).contains(&s.n_smoothing),
                "must be 1 to 1000",
            ),
            ("n_lags", s.n_lags <= 100, "must be 0 to 100"),
            (
                "n_clusters",
                (1..=64).contains(&s.n_clusters),
                "must be 1 to 64",
            ),
            (
                "train.window",
                train.window >= s.n_clusters && train.window <= 1_000_000,
                "must be at least n_clusters and at most 1000000",
            ),
            ("train.every", train.every >= 1, "must be at least 1"),
            (
                "anomaly_score_cap",
                s.anomaly_score_cap.is_finite() && s.anomaly_score_cap > 0.0,
                "must be a number above 0",
            ),
            (
                "train.n_init",
                (1..=100).contains(&train.n_init) && train.max_iter >= 1,
                "must be 1 to 100 (and max_iter at least 1)",
            ),
            (
                "train.decay",
                (0.0..=1.0).contains(&train.decay),
                "must be 0 to 1",
            ),
        ];
        if let Some((key, _, why)) = checks.iter().find(|(_, ok, _)| !ok) {
            return Err(Invalid::new(*key, why));
        }
        Ok(Self {
            diffs: s.diffs,
            n_smoothing: s.n_smoothing,
            n_lags: s.n_lags,
            n_clusters: s.n_clusters,
            train_data_size: train.window,
            train_every_n: train.every,
            anomaly_score_cap: s.anomaly_score_cap,
            n_init: train.n_init,
            max_iter: train.max_iter,
            seed: train.seed,
            distance: s.distance,
            scale: match s.scale {
                ScaleKind::MinMax => Scale::MinMax,
                ScaleKind::Quantile => Scale::Quantile(s.scale_quantile),
            },
            ensemble: train.ensemble,
            min_train_points: train.min_points,
            context: ContextParams {
                levels: c.levels,
                length: c.length,
                window: c.window,
                memory: c.memory,
            },
            decay: train.decay,
        })
    }
}
