//! Injected anomalies: what they do to a metric, and when they happen.
//!
//! A host holds at most one injection, pending or active. The first is planned at
//! construction, each next one when the previous ends, so the schedule is bounded state
//! and fully decided by the host's own random stream.

use super::{KindWeights, Metric, N_METRICS};
use lookout_shared::rng::Rng;

/// The kinds of injected anomaly. Their names are a public contract (the `kind` of
/// `SimTruth` on `<prefix>/<host>/sim/truth`).
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
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Spike, Kind::LevelShift, Kind::Drop, Kind::Stuck];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::LevelShift => "level_shift",
            Kind::Drop => "drop",
            Kind::Stuck => "stuck",
        }
    }

    fn weight(self, w: &KindWeights) -> f64 {
        match self {
            Kind::Spike => w.spike,
            Kind::LevelShift => w.level_shift,
            Kind::Drop => w.drop,
            Kind::Stuck => w.stuck,
        }
    }

    /// Whether this kind shows on `metric`: `net_err_util` sits near zero, so it can
    /// neither drop nor visibly freeze.
    fn applies_to(self, metric: Metric) -> bool {
        !(metric == Metric::NetErr && matches!(self, Kind::Drop | Kind::Stuck))
    }

    /// The duration range, as multiples of `anomaly_duration`.
    fn duration_factor(self) -> (f64, f64) {
        match self {
            Kind::Spike => (1.0 / 9.0, 0.5),
            Kind::LevelShift => (0.5, 2.0),
            Kind::Drop => (0.5, 1.5),
            Kind::Stuck => (0.5, 2.0),
        }
    }

    /// Draws the effect on `metric` as `value * mul + add` (unused for `Stuck`).
    fn effect(self, metric: Metric, rng: &mut Rng) -> (f64, f64) {
        use Metric::*;
        match (self, metric) {
            (Kind::Spike, Cpu) => (1.0, rng.range(35.0, 50.0)),
            (Kind::Spike, Mem) => (1.0, rng.range(20.0, 30.0)),
            (Kind::Spike, Disk) => (1.0, rng.range(15.0, 25.0)),
            (Kind::Spike, NetErr) => (1.0, rng.range(5.0, 10.0)),
            (Kind::Spike, Load) => (rng.range(3.0, 4.0), 0.5),
            (Kind::LevelShift, Cpu | Mem) => (1.0, rng.range(20.0, 30.0)),
            (Kind::LevelShift, Disk) => (1.0, rng.range(10.0, 20.0)),
            (Kind::LevelShift, NetErr) => (1.0, rng.range(2.0, 4.0)),
            (Kind::LevelShift, Load) => (1.0, rng.range(1.5, 3.0)),
            (Kind::Drop, Cpu | Load) => (rng.range(0.02, 0.08), 0.0),
            (Kind::Drop, Mem | Disk | NetErr) => (rng.range(0.3, 0.5), 0.0),
            (Kind::Stuck, _) => (1.0, 0.0),
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
    mul: f64,
    add: f64,
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
        /// The value a `Stuck` metric stays at.
        frozen: f64,
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
        let (mul, add) = kind.effect(metric, &mut self.rng);
        State::Pending(Plan {
            not_before,
            metric,
            kind,
            ticks,
            mul,
            add,
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
    /// the previous tick (what a `Stuck` metric freezes at). Returns the injection that
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
                frozen: last[plan.metric as usize],
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
            frozen,
        } = self.state
        {
            let i = plan.metric as usize;
            values[i] = plan.metric.clamp(match plan.kind {
                Kind::Stuck => frozen,
                _ => values[i] * plan.mul + plan.add,
            });
            if ts >= end {
                self.plan_after(start, end);
            }
        }
        started
    }
}
