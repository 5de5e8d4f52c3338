//! Simulated hosts with injected anomalies and their ground truth.
//!
//! `lookout-agent run --simulate N` creates N [`SimHost`]s and calls [`SimHost::tick`] once
//! per simulated interval. Each host produces the metrics of an ECS host sampled every
//! second (chart [`CHART`], dimensions [`DIMS`]) and, from time to time, injects one
//! anomaly of a known [`Kind`] into one metric; the start tick of each injection pushes one
//! [`SimTruth`] record, the ground truth alarms are compared against.
//!
//! Layout:
//! - `lookout_shared::rng`: the deterministic PRNG; each host owns independent streams.
//! - [`baseline`]: normal behaviour (daily and weekly cycles, drift, AR(1) noise, a GC-like
//!   memory sawtooth, filling disk).
//! - [`events`]: the normal work on top: a nightly backup, an hourly cron job, short
//!   bursts; recurring or small, never reported as truth.
//! - [`anomaly`]: the anomaly kinds, their magnitudes and the injection schedule.
//!
//! Normal behaviour and the anomaly schedule draw from separate random streams: a host with
//! anomalies disabled (`anomaly_every = "0s"`) produces exactly the same values as the same
//! host with anomalies, except on injected ticks.

mod anomaly;
mod baseline;
mod events;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use lookout_shared::duration::HumanDuration;
use lookout_shared::payload::{Labels, SimTruth};
use serde::{Deserialize, Serialize};

use crate::frame::Frame;

use anomaly::Injector;
pub use anomaly::Kind;
use baseline::Baseline;
use lookout_shared::rng::Rng;

/// The chart every simulated metric belongs to.
pub const CHART: &str = "sim";

/// The dimensions of [`CHART`], in the order a frame holds them.
pub const DIMS: [&str; N_METRICS] = [
    "cpu_util",
    "mem_util",
    "disk_util",
    "net_err_util",
    "system_load1",
];

const N_METRICS: usize = 5;

/// A simulated metric; the discriminant indexes [`DIMS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Metric {
    Cpu = 0,
    Mem = 1,
    Disk = 2,
    NetErr = 3,
    Load = 4,
}

impl Metric {
    const ALL: [Metric; N_METRICS] = [
        Metric::Cpu,
        Metric::Mem,
        Metric::Disk,
        Metric::NetErr,
        Metric::Load,
    ];

    fn name(self) -> &'static str {
        DIMS[self as usize]
    }

    /// Percentages stay within 0..=100, load and errors non-negative.
    fn clamp(self, v: f64) -> f64 {
        match self {
            Metric::Cpu | Metric::Mem | Metric::Disk => v.clamp(0.0, 100.0),
            Metric::NetErr | Metric::Load => v.max(0.0),
        }
    }
}

/// The `[simulate]` table of the agent config.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimParams {
    /// Number of simulated hosts (`sim-1`, `sim-2`, ...); the CLI's `--simulate N` overrides.
    pub hosts: usize,
    /// Simulated seconds per wall-clock second; the CLI's `--speed` overrides.
    pub speed: f64,
    /// Seed of every random choice: the same seed gives the same data and anomalies.
    pub seed: u64,
    /// Mean simulated time between anomalies on each host (exponentially distributed
    /// gaps). `"0s"` disables injection.
    pub anomaly_every: HumanDuration,
    /// Simulated warm-up before the first injection, so that models can train first.
    pub first_anomaly_after: HumanDuration,
    /// Typical duration of an anomaly. Actual durations vary by kind: spikes last
    /// 1/9x..0.5x of it (20-90 s for "3m"), level shifts and stuck values 0.5x..2x, drops
    /// and oscillations 0.5x..1.5x, climbs 1x..2x, dropouts 0.25x..1x. After each anomaly a
    /// host stays quiet for at least this long.
    pub anomaly_duration: HumanDuration,
    /// Relative weights of the anomaly kinds; 0 disables a kind.
    pub kind_weights: KindWeights,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            hosts: 0,
            speed: 1.0,
            seed: 1,
            anomaly_every: HumanDuration::from_secs(45 * 60),
            first_anomaly_after: HumanDuration::from_secs(40 * 60),
            anomaly_duration: HumanDuration::from_secs(3 * 60),
            kind_weights: KindWeights::default(),
        }
    }
}

impl SimParams {
    /// Checks what serde cannot: a positive finite speed and usable weights.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(format!(
                "speed must be a positive number, not {}",
                self.speed
            ));
        }
        // The kinds' names are the table's keys.
        for kind in Kind::ALL {
            let (name, v) = (kind.as_str(), kind.weight(&self.kind_weights));
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!(
                    "kind_weights.{name} must be a number >= 0, not {v}"
                ));
            }
        }
        Ok(())
    }
}

/// The `[simulate.kind_weights]` table: how often each anomaly kind is picked, relative to
/// the others. Each injection picks a metric and a kind at random with these weights
/// (`drop`, `stuck`, `climb` and `dropout` are never applied to `net_err_util`, which idles
/// near zero and has no top to climb to).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindWeights {
    /// A short large excursion: cpu +35..50 points, mem +20..30, disk +15..25,
    /// net_err +5..10, load x3..4 (+0.5).
    pub spike: f64,
    /// A sustained offset: cpu and mem +20..30 points, disk +10..20, net_err +2..4,
    /// load +1.5..3.
    pub level_shift: f64,
    /// cpu and load fall to 2..8 % of their value, mem and disk to 30..50 %.
    pub drop: f64,
    /// The value freezes at its last reading, without noise.
    pub stuck: f64,
    /// Climb to saturation: in equal steps over the first 50..80 % of the anomaly, from
    /// the normal value to cpu 97..100 %, mem and disk 95..99 %, load 6..10 (and at least
    /// +20 points, +10, +10, +3 above the last reading); then it stays there, a fifth of
    /// the normal movements riding on it, until the end.
    pub climb: f64,
    /// Periodic swings around the normal value, a sine with a period of 10..60 s (at least
    /// 4 intervals) and an amplitude of cpu 15..25 points, mem 6..10, disk 4..8,
    /// load 0.5..0.8; net_err, which cannot go negative, pulses between +0 and +3..6.
    pub oscillation: f64,
    /// The collector reports 0, exactly, for the whole anomaly.
    pub dropout: f64,
}

impl Default for KindWeights {
    fn default() -> Self {
        Self {
            spike: 1.0,
            level_shift: 1.0,
            drop: 1.0,
            stuck: 1.0,
            climb: 1.0,
            oscillation: 1.0,
            dropout: 1.0,
        }
    }
}

/// One simulated host.
#[derive(Debug)]
pub struct SimHost {
    name: Arc<str>,
    labels: Labels,
    chart: Arc<str>,
    dims: [Arc<str>; N_METRICS],
    baseline: Baseline,
    injector: Injector,
    /// The values of the previous tick, `None` before the first.
    last: Option<[f64; N_METRICS]>,
}

impl SimHost {
    /// `index` is 1-based: hosts are named `sim-1`, `sim-2`, ... and labelled with a unique
    /// `ip` in 10.0.0.0/8 (`10.0.0.1` for `sim-1`). Ticks are expected at `start_ts`,
    /// `start_ts + interval_ms`, ... (Unix ms of simulated time).
    pub fn new(index: usize, params: &SimParams, start_ts: i64, interval_ms: i64) -> Self {
        let interval_ms = interval_ms.max(1);
        let mut labels = Labels::new();
        labels.insert("ip".to_owned(), ip_of(index));
        let baseline = Baseline::new(Rng::new(params.seed, index, 0), start_ts, interval_ms);
        let injector = Injector::new(
            Rng::new(params.seed, index, 1),
            start_ts,
            interval_ms,
            params.anomaly_every.0.as_millis() as f64,
            i64::try_from(params.first_anomaly_after.0.as_millis()).unwrap_or(i64::MAX),
            params.anomaly_duration.0.as_millis() as f64,
            params.kind_weights.clone(),
        );
        Self {
            name: Arc::from(format!("sim-{index}")),
            labels,
            chart: Arc::from(CHART),
            dims: DIMS.map(Arc::from),
            baseline,
            injector,
            last: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Produces the values at `ts` into `frame` (clears nothing; the caller clears), chart
    /// [`CHART`], dimensions [`DIMS`]. When an injected anomaly starts at this tick, pushes
    /// its ground truth to `truth`: host, metric (the dimension), kind, start and end, the
    /// last affected tick, planned in advance.
    pub fn tick(&mut self, ts: i64, frame: &mut Frame, truth: &mut Vec<SimTruth>) {
        let mut values = self.baseline.step(ts);
        let last = self.last.unwrap_or(values);
        if let Some(s) = self.injector.apply(ts, &last, &mut values) {
            tracing::debug!(
                host = &*self.name,
                metric = s.metric.name(),
                kind = s.kind.as_str(),
                start = s.start,
                end = s.end,
                "injecting anomaly"
            );
            truth.push(SimTruth {
                host: self.name.to_string(),
                metric: s.metric.name().to_owned(),
                kind: s.kind.as_str().to_owned(),
                start: s.start,
                end: s.end,
            });
        }
        self.last = Some(values);
        for (dim, v) in self.dims.iter().zip(values) {
            frame.push(&self.chart, dim, v);
        }
    }
}

/// A unique address in 10.0.0.0/8 for host `index` (1-based), avoiding `.0` and `.255`
/// in the last octet: 1 → 10.0.0.1, 254 → 10.0.0.254, 255 → 10.0.1.1; unique for the
/// first 254 × 65 536 hosts.
fn ip_of(index: usize) -> String {
    let i = index.saturating_sub(1);
    let d = i % 254 + 1;
    let rest = i / 254;
    format!("10.{}.{}.{}", (rest / 256) % 256, rest % 256, d)
}
