//! Injected anomalies: what they do to a metric, and when they happen.
//!
//! A host holds at most one injection, pending or active. The first is planned at
//! construction, each next one when the previous ends, so the schedule is bounded state
//! and fully decided by the host's own random stream.

use super::{KindWeights, Metric, N_METRICS};
use lookout_shared::rng::Rng;

/// The kinds of injected anomaly, those of the project's seeds. Their names are a public
/// contract (the `kind` of `SimTruth` on `<prefix>/<host>/sim/truth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A large, short excursion upwards (20–90 s with the default duration).
    Spike,
    /// A sustained offset upwards.
    LevelShift,
    /// The value falls to near zero or far below its baseline.
    Drop,
    /// The value freezes at its last reading, without noise.
    Stuck,
    /// The value rises steadily to saturation, then stays near the top until the end.
    Climb,
    /// Periodic swings (a period of 10–60 s) around the baseline.
    Oscillation,
    /// The collector reports 0, exactly, for the whole duration.
    Dropout,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Spike,
        Kind::LevelShift,
        Kind::Drop,
        Kind::Stuck,
        Kind::Climb,
        Kind::Oscillation,
        Kind::Dropout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::LevelShift => "level_shift",
            Kind::Drop => "drop",
            Kind::Stuck => "stuck",
            Kind::Climb => "climb",
            Kind::Oscillation => "oscillation",
            Kind::Dropout => "dropout",
        }
    }

    /// The kind's weight, under its name in `[simulate.kind_weights]`.
    pub(super) fn weight(self, w: &KindWeights) -> f64 {
        match self {
            Kind::Spike => w.spike,
            Kind::LevelShift => w.level_shift,
            Kind::Drop => w.drop,
            Kind::Stuck => w.stuck,
            Kind::Climb => w.climb,
            Kind::Oscillation => w.oscillation,
            Kind::Dropout => w.dropout,
        }
    }

    /// Whether this kind shows on `metric`: `net_err_util` idles near zero, so it can
    /// neither drop, nor visibly freeze, nor fall to zero, and error rates have no top to
    /// climb to.
    fn applies_to(self, metric: Metric) -> bool {
        !(metric == Metric::NetErr
            && matches!(self, Kind::Drop | Kind::Stuck | Kind::Climb | Kind::Dropout))
    }

    /// The duration range, as multiples of `anomaly_duration`.
    pub(super) fn duration_factor(self) -> (f64, f64) {
        match self {
            Kind::Spike => (1.0 / 9.0, 0.5),
            Kind::LevelShift => (0.5, 2.0),
            Kind::Drop => (0.5, 1.5),
            Kind::Stuck => (0.5, 2.0),
            Kind::Climb => (1.0, 2.0),
            Kind::Oscillation => (0.5, 1.5),
            Kind::Dropout => (0.25, 1.0),
        }
    }

    /// Draws the effect on `metric`; `ticks` is the injection's length and `interval_ms`
    /// the sampling interval.
    fn effect(self, metric: Metric, ticks: i64, interval_ms: i64, rng: &mut Rng) -> Effect {
        use Metric::*;
        let affine = |mul, add| Effect::Affine { mul, add };
        match (self, metric) {
            (Kind::Spike, Cpu) => affine(1.0, rng.range(35.0, 50.0)),
            (Kind::Spike, Mem) => affine(1.0, rng.range(20.0, 30.0)),
            (Kind::Spike, Disk) => affine(1.0, rng.range(15.0, 25.0)),
            (Kind::Spike, NetErr) => affine(1.0, rng.range(5.0, 10.0)),
            (Kind::Spike, Load) => affine(rng.range(3.0, 4.0), 0.5),
            (Kind::LevelShift, Cpu | Mem) => affine(1.0, rng.range(20.0, 30.0)),
            (Kind::LevelShift, Disk) => affine(1.0, rng.range(10.0, 20.0)),
            (Kind::LevelShift, NetErr) => affine(1.0, rng.range(2.0, 4.0)),
            (Kind::LevelShift, Load) => affine(1.0, rng.range(1.5, 3.0)),
            (Kind::Drop, Cpu | Load) => affine(rng.range(0.02, 0.08), 0.0),
            (Kind::Drop, Mem | Disk | NetErr) => affine(rng.range(0.3, 0.5), 0.0),
            (Kind::Stuck, _) => Effect::Freeze,
            (Kind::Climb, _) => {
                let (top, min_rise) = match metric {
                    Cpu => (rng.range(97.0, 100.0), 20.0),
                    Mem | Disk => (rng.range(95.0, 99.0), 10.0),
                    Load | NetErr => (rng.range(6.0, 10.0), 3.0),
                };
                let ramp = (ticks as f64 * rng.range(0.5, 0.8)).round() as i64;
                Effect::Climb {
                    top,
                    min_rise,
                    ramp_ticks: ramp.max(1),
                }
            }
            (Kind::Oscillation, _) => {
                let (amplitude, lift) = match metric {
                    Cpu => (rng.range(15.0, 25.0), false),
                    Mem => (rng.range(6.0, 10.0), false),
                    Disk => (rng.range(4.0, 8.0), false),
                    Load => (rng.range(0.5, 0.8), false),
                    // Errors cannot go below zero: bursts of 0..2x the amplitude.
                    NetErr => (rng.range(1.5, 3.0), true),
                };
                // At least 4 samples a period, or a coarse interval would alias it away.
                let period_ms = (rng.range(10.0, 60.0) * 1000.0).max(4.0 * interval_ms as f64);
                // Starts on a rising or falling flank well away from zero.
                let phase = rng.range(1.0 / 6.0, 5.0 / 6.0) * std::f64::consts::PI;
                Effect::Oscillate {
                    amplitude,
                    period_ms,
                    phase,
                    lift: if lift { amplitude } else { 0.0 },
                }
            }
            (Kind::Dropout, _) => Effect::Zero,
        }
    }
}

/// What an injection does to its metric, drawn when it is planned.
#[derive(Clone, Copy, Debug)]
enum Effect {
    /// `value * mul + add`: spikes, level shifts, drops.
    Affine { mul: f64, add: f64 },
    /// The reading of the tick before the start, without noise.
    Freeze,
    /// Rises from the normal value to `top` (or `min_rise` above the reading before the
    /// start, whichever is higher) in equal steps over `ramp_ticks`, then stays there. A
    /// fifth of the normal movements since the start ride on the top, so a saturated metric
    /// is not frozen, yet stays within a few points of it.
    Climb {
        top: f64,
        min_rise: f64,
        ramp_ticks: i64,
    },
    /// `value + amplitude * sin(2π (ts - start) / period_ms + phase) + lift`.
    Oscillate {
        amplitude: f64,
        period_ms: f64,
        phase: f64,
        lift: f64,
    },
    /// A collector returning zeros.
    Zero,
}

impl Effect {
    /// The value at the tick `ts`, `n` ticks after `start` (0 at the start); `value` is the
    /// normal value, `before` the reading of the tick before the start.
    fn apply(self, value: f64, before: f64, ts: i64, start: i64, n: i64) -> f64 {
        match self {
            Effect::Affine { mul, add } => value * mul + add,
            Effect::Freeze => before,
            Effect::Climb {
                top,
                min_rise,
                ramp_ticks,
            } => {
                let p = ((n + 1) as f64 / ramp_ticks as f64).min(1.0);
                let level = top.max(before + min_rise);
                value + p * (level - value) + p * 0.2 * (value - before)
            }
            Effect::Oscillate {
                amplitude,
                period_ms,
                phase,
                lift,
            } => {
                let angle = std::f64::consts::TAU * (ts - start) as f64 / period_ms + phase;
                value + amplitude * angle.sin() + lift
            }
            Effect::Zero => 0.0,
        }
    }
}

/// An injection as planned, before it starts.
#[derive(Clone, Copy, Debug)]
struct Plan {
    not_before: i64,
    metric: Metric,
    kind: Kind,
    /// Affected ticks, at least 2 so that `start < end`.
    ticks: i64,
    effect: Effect,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Anomalies disabled (`anomaly_every = "0s"` or all kind weights zero).
    Never,
    Pending(Plan),
    Active {
        plan: Plan,
        start: i64,
        end: i64,
        /// The metric's reading on the tick before the start.
        before: f64,
    },
}

/// An injection that starts at this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Started {
    pub metric: Metric,
    pub kind: Kind,
    pub start: i64,
    pub end: i64,
}

#[derive(Clone, Debug)]
pub(super) struct Injector {
    rng: Rng,
    interval_ms: i64,
    every_ms: f64,
    duration_ms: f64,
    weights: KindWeights,
    state: State,
}

impl Injector {
    pub(super) fn new(
        rng: Rng,
        start_ts: i64,
        interval_ms: i64,
        every_ms: f64,
        first_after_ms: i64,
        duration_ms: f64,
        weights: KindWeights,
    ) -> Self {
        let mut injector = Self {
            rng,
            interval_ms,
            every_ms,
            duration_ms,
            weights,
            state: State::Never,
        };
        injector.state = injector.plan(start_ts.saturating_add(first_after_ms), i64::MIN);
        injector
    }

    /// Plans the next injection: an exponential gap after `from`, but not before `floor`.
    fn plan(&mut self, from: i64, floor: i64) -> State {
        let total: f64 = Metric::ALL
            .iter()
            .flat_map(|&m| Kind::ALL.iter().map(move |&k| (m, k)))
            .filter(|&(m, k)| k.applies_to(m))
            .map(|(_, k)| k.weight(&self.weights))
            .sum();
        if self.every_ms <= 0.0 || total.is_nan() || total <= 0.0 {
            return State::Never;
        }
        let gap = self.rng.exponential(self.every_ms) as i64;
        let not_before = from.saturating_add(gap).max(floor);

        let mut pick = self.rng.uniform() * total;
        let mut chosen = None;
        'outer: for &metric in &Metric::ALL {
            for &kind in &Kind::ALL {
                let w = kind.weight(&self.weights);
                if !kind.applies_to(metric) || w <= 0.0 {
                    continue;
                }
                chosen = Some((metric, kind));
                if pick < w {
                    break 'outer;
                }
                pick -= w;
            }
        }
        let Some((metric, kind)) = chosen else {
            return State::Never;
        };

        let (lo, hi) = kind.duration_factor();
        let duration = self.duration_ms * self.rng.range(lo, hi);
        let ticks = ((duration / self.interval_ms as f64).round() as i64).max(2);
        let effect = kind.effect(metric, ticks, self.interval_ms, &mut self.rng);
        State::Pending(Plan {
            not_before,
            metric,
            kind,
            ticks,
            effect,
        })
    }

    /// Plans the one after an injection over `start..=end`: starts are an exponential gap
    /// apart, with a quiet time of at least `anomaly_duration` after each end.
    fn plan_after(&mut self, start: i64, end: i64) {
        let floor = end
            .saturating_add(self.interval_ms)
            .saturating_add(self.duration_ms as i64);
        self.state = self.plan(start, floor);
    }

    /// Applies the injection, if any, to this tick's `values`; `last` holds the values of
    /// the previous tick (what a `Stuck` metric freezes at, where a `Climb` starts from). Returns the injection that
    /// starts at this tick.
    pub(super) fn apply(
        &mut self,
        ts: i64,
        last: &[f64; N_METRICS],
        values: &mut [f64; N_METRICS],
    ) -> Option<Started> {
        if let State::Active { start, end, .. } = self.state
            && ts > end
        {
            // Ticks were skipped past the end.
            self.plan_after(start, end);
        }
        let mut started = None;
        if let State::Pending(plan) = self.state
            && ts >= plan.not_before
        {
            let start = ts;
            let end = start.saturating_add((plan.ticks - 1) * self.interval_ms);
            self.state = State::Active {
                plan,
                start,
                end,
                before: last[plan.metric as usize],
            };
            started = Some(Started {
                metric: plan.metric,
                kind: plan.kind,
                start,
                end,
            });
        }
        if let State::Active {
            plan,
            start,
            end,
            before,
        } = self.state
        {
            let i = plan.metric as usize;
            let n = (ts - start) / self.interval_ms;
            values[i] = plan
                .metric
                .clamp(plan.effect.apply(values[i], before, ts, start, n));
            if ts >= end {
                self.plan_after(start, end);
            }
        }
        started
    }
}
