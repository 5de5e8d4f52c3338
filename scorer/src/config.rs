//! The scorer's part of a detector as written in the config: the top-level keys of
//! `[detector]` that shape the feature vector and the score ([`ScorerConfig`]), and its two
//! tables, `[detector.train]` ([`TrainConfig`]) and `[detector.context]`
//! ([`ContextConfig`]); resolved and checked into [`ModelParams`].
//!
//! The whole `[detector]` table is assembled by `decide::DetectorConfig`, which adds the
//! alarm's tables; the scorer knows nothing of alarms. Every default is written once, in
//! the `Default` impls here.

use std::fmt;
use std::time::Duration;

use lookout_shared::config::Invalid;
use lookout_shared::duration::HumanDuration;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

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

/// How each dimension is scaled before distances are taken (`scaling = "robust"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scaling {
    /// Centred on its training median, divided by its training MAD (see
    /// `model::robust_scale`): every dimension counts alike whatever its unit.
    #[default]
    Robust,
    /// Raw values, as the notebook measures them (parity).
    #[serde(rename = "none")]
    Unscaled,
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
    pub scaling: Scaling,
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
            scaling: Scaling::Robust,
        }
    }
}

/// A stretch of a series: a number of ticks (`1440`) or a time (`"24h"`), which the
/// model's interval turns into ticks. Times say what a user means on a device sampled
/// every second; tick counts are what a replay of a series of unknown interval needs, and
/// what the built-in defaults are (so that a 5-minute series is not given a 3-tick window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Ticks(usize),
    Time(HumanDuration),
}

impl Span {
    /// Ticks at `interval`: a time rounds up to whole ticks.
    pub fn ticks(self, interval: Duration) -> usize {
        match self {
            Span::Ticks(n) => n,
            Span::Time(d) => {
                let i = interval.as_nanos().max(1);
                usize::try_from(d.0.as_nanos().div_ceil(i)).unwrap_or(usize::MAX)
            }
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Span::Ticks(n) => write!(f, "{n}"),
            Span::Time(d) => write!(f, "{d}"),
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Span::Ticks(n) => s.serialize_u64(*n as u64),
            Span::Time(d) => d.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of ticks (1440) or a time (\"24h\", \"10m\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Span, E> {
                usize::try_from(v)
                    .map(Span::Ticks)
                    .map_err(|_| E::custom("too many ticks"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Span, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("a number of ticks cannot be negative"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Span, E> {
                v.parse().map(Span::Time).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[detector.train]`: what a model learns from, and how often.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// The short horizon: a fit learns the vectors of the last `window` ticks (the
    /// notebook's `train_data_size`), ticks or a time.
    pub window: Span,
    /// A refit every `every` (the notebook's `train_every_n`), ticks or a time.
    pub every: Span,
    /// Before the first fit (no score, and no alarm, before it), ticks or a time.
    pub min_points: Span,
    /// Fits kept, a tick being anomalous only when all of them agree: a number of fits,
    /// or the time they span (`"2h"`: as many fits as `every` makes in 2 h).
    pub ensemble: Span,
    /// The long horizon: what a fit remembers beyond `window`, as `long_samples` vectors
    /// sampled evenly over it (none when it is no longer than the window).
    pub long: Span,
    pub long_samples: usize,
    /// k-means restarts and iterations per fit, and the seed of its choices.
    pub n_init: usize,
    /// Refits start from the centres of the member they replace, which converge in a few
    /// rounds, instead of `n_init` fresh starts; `refit_restarts` fresh starts are tried
    /// besides. One fresh start keeps what the warm start alone lost on the fleet
    /// benchmark (BENCHMARKS.md) for a fifth of ten starts' cost.
    pub warm_start: bool,
    pub refit_restarts: usize,
    pub max_iter: usize,
    pub seed: u64,
    /// Weight of the previous training set in each refit (seed `003`'s iterative
    /// training); 0 forgets it.
    pub decay: f64,
    /// Leave ticks judged anomalous, and ticks while the alarm fires, out of training
    /// (`model::Gate`), so that a long fault is not learned as normal.
    pub gate: bool,
    /// A model whose alarm has fired this long accepts what it sees as the new normal:
    /// the alarm resolves with a `relearned` notice and the next fit learns it. 0: never
    /// by itself (only the relearn command).
    pub accept_after: HumanDuration,
    /// With the gate: hold every firing episode out of training while it is open, not
    /// only once it has lasted `alarm.escalate`; one that resolves sooner is learned
    /// after all. A fault shorter than 5 minutes then keeps its alarm through a refit
    /// (recall +6 to +12 points on the fleet, F1 0.32 → 0.40 on the device benchmark), at
    /// the price of more normal bursts reaching severity 2 and 3 (BENCHMARKS.md); off by
    /// default for that price.
    pub hold_firing: bool,
    /// With the gate: how long a firing episode must have been anomalous before it is a
    /// fault that training leaves out (its ticks so far too, and the fits that took in its
    /// start dropped). Unset: `alarm.escalate`, the time after which it pages at level 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_after: Option<HumanDuration>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            window: Span::Ticks(1440),
            every: Span::Ticks(360),
            min_points: Span::Ticks(150),
            ensemble: Span::Ticks(12),
            long: Span::Time(HumanDuration::from_secs(24 * 3600)),
            long_samples: 128,
            n_init: 10,
            warm_start: true,
            refit_restarts: 1,
            max_iter: 300,
            seed: 0,
            decay: 0.0,
            gate: true,
            accept_after: HumanDuration::from_secs(3 * 3600),
            hold_firing: false,
            gate_after: None,
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
    /// How long contexts are remembered, ticks or a time (0: for ever).
    pub memory: Span,
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
            memory: Span::Ticks(0),
            threshold: 1.0,
        }
    }
}

impl ModelParams {
    /// Checks the scorer's keys of one detector and resolves them for a series sampled
    /// every `interval`. Keys in errors are relative to the detector table
    /// (`n_clusters`, `train.window`, `context.length`).
    pub fn resolve(
        s: &ScorerConfig,
        train: &TrainConfig,
        context: &ContextConfig,
        interval: Duration,
    ) -> Result<Self, Invalid> {
        let c = context;
        let window = train.window.ticks(interval);
        let every = train.every.ticks(interval);
        let min_points = train.min_points.ticks(interval);
        let ensemble = match train.ensemble {
            Span::Ticks(n) => n,
            span => span.ticks(interval).div_ceil(every.max(1)).max(1),
        };
        let long = train.long.ticks(interval);
        let long_samples = if long > window { train.long_samples } else { 0 };
        check(
            s,
            train,
            c,
            Resolved {
                window,
                every,
                min_points,
                ensemble,
            },
        )?;
        Ok(Self {
            diffs: s.diffs,
            n_smoothing: s.n_smoothing,
            n_lags: s.n_lags,
            n_clusters: s.n_clusters,
            train_data_size: window,
            train_every_n: every,
            anomaly_score_cap: s.anomaly_score_cap,
            n_init: train.n_init,
            max_iter: train.max_iter,
            seed: train.seed,
            distance: s.distance,
            scale: match s.scale {
                ScaleKind::MinMax => Scale::MinMax,
                ScaleKind::Quantile => Scale::Quantile(s.scale_quantile),
            },
            ensemble,
            min_train_points: min_points,
            context: ContextParams {
                levels: c.levels,
                length: c.length,
                window: c.window,
                memory: c.memory.ticks(interval),
            },
            decay: train.decay,
            long_samples,
            long_stride: (long / long_samples.max(1)).max(1),
            warm_start: train.warm_start,
            refit_restarts: train.refit_restarts,
            scaling: s.scaling == Scaling::Robust,
            gate: train.gate,
        })
    }
}

/// A detector's spans in ticks, as [`check`] needs them.
struct Resolved {
    window: usize,
    every: usize,
    min_points: usize,
    ensemble: usize,
}

/// The scorer's keys' bounds; the first one broken is the error.
fn check(
    s: &ScorerConfig,
    train: &TrainConfig,
    c: &ContextConfig,
    r: Resolved,
) -> Result<(), Invalid> {
    let Resolved {
        window,
        every,
        min_points,
        ensemble,
    } = r;
    let context_bits = (c.levels + 2).checked_pow(c.length as u32);
    let checks: [(&str, bool, &str); 16] = [
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
            (1..=64).contains(&ensemble),
            "must be 1 to 64 fits (a time: at most 64 times train.every)",
        ),
        (
            "train.long_samples",
            train.long_samples <= 4096,
            "must be 0 (no long horizon) to 4096",
        ),
        (
            "train.min_points",
            min_points > s.n_smoothing + s.n_lags && min_points <= 10_000_000,
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
            window >= s.n_clusters && window <= 1_000_000,
            "must be at least n_clusters and at most 1000000 ticks",
        ),
        ("train.every", every >= 1, "must be at least 1 tick"),
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
            "train.refit_restarts",
            train.refit_restarts <= 100,
            "must be 0 to 100",
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
    Ok(())
}
