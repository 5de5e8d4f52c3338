//! The one decision path: a model's values in, its score, whether the tick is anomalous
//! and at what level, and the alarm episode's changes out. `run` (every host, every
//! tick) and `replay` (a CSV, row by row) both call [`Decider::step`]; there is no second
//! copy whose behaviour could drift from what a device does.
//!
//! Model → score → [`Judge`] (threshold, context, direction, saturation, grading) →
//! [`Hysteresis`] (for, resolve_after, suppress, level changes) → [`Episode`].
//!
//! Layout:
//! - this file: [`Decider`], one model's decision state.
//! - [`config`]: `[detector]` as written, and the [`Detector`] it resolves to.
//! - [`attribution`]: which dimension made a tick anomalous, as the payloads say it.
//! - [`host`]: the host as a whole: how many of its models are anomalous together.
//! - [`snapshot`]: a model's learned state as bytes, and taking it back.
//! - [`trace`]: the model's last ticks, the picture a firing alarm carries.

pub mod attribution;
pub mod config;
pub mod host;
pub mod snapshot;
pub mod trace;

pub use attribution::Attribution;
pub use config::{Detector, DetectorConfig, ModelSpec};
pub use snapshot::{Refused, shape_key};

use lookout_shared::payload::AlarmState;

use crate::alarm::flat::Flat;
use crate::alarm::publish::Episode;
use crate::alarm::rough::Rough;
use crate::alarm::{Hysteresis, Judge, Tick, Transition};
use crate::scorer::Model;
use crate::scorer::fit::Fitter;
use crate::scorer::profile::Profile;
use crate::scorer::trainer::ModelKey;

use self::trace::Trace;

/// What one tick did to a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// A value lay outside the detector's `down_limit`/`upper_limit`: counted, not scored.
    Invalid,
    /// A value was not a finite number: the model did not advance.
    Skipped,
    /// Taken in, but the model has not fitted yet: no score.
    Learning,
    Scored(Scored),
}

/// A scored tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub score: f64,
    /// The tick's level (1–4) when it is anomalous.
    pub level: Option<u8>,
    /// Whether an alarm is firing after this tick.
    pub firing: bool,
    /// The model has not scored for `alarm.young_for` yet: its level is at most 1 and its
    /// anomalies are not the host's evidence.
    pub young: bool,
    /// The alarm episode's change at this tick, if any.
    pub transition: Option<Transition>,
    /// The firing alarm's announced severity after this tick (0: none firing).
    pub severity: u8,
}

/// One model's decision state: the model, its judge and its hysteresis.
#[derive(Debug)]
pub struct Decider {
    model: Model,
    judge: Judge,
    hysteresis: Hysteresis,
    flat: Flat,
    rough: Rough,
    profile: Profile,
    detector: Detector,
    /// Ticks refused because a value was outside the detector's limits.
    invalid: u64,
    /// Ticks that are scored but may not be anomalous (just after a restore).
    mute: u32,
    /// Ticks scored since the first fit (up to `alarm.settle`), and when the first was:
    /// out-of-sample evidence.
    scored: u32,
    first_scored: Option<i64>,
    /// Other models of the host agree that something is wrong ([`host`]).
    agreed: bool,
    /// Whether the model's anomalies, before the profile excuses any, have lasted.
    sustained: Sustained,
    /// When the model last accepted a new normal ([`Decider::relearn`]).
    relearned_at: Option<i64>,
    /// The firing episode so far, for the gate.
    episode: EpisodeGate,
    /// The dimensions' names in the payloads ([`attribution::dimension_names`]).
    names: Vec<String>,
    /// The last ticks, for the window a firing alarm carries.
    trace: Trace,
}

/// A firing episode as the gate sees it.
#[derive(Clone, Debug, Default)]
struct EpisodeGate {
    ticks: u32,
    anomalous: u32,
    anomalous_ms: i64,
    last_ts: Option<i64>,
    /// Long enough to be a fault: its ticks are not learned.
    fault: bool,
    /// A stuck reading was part of it: its ticks stay out even if it ends early.
    flat: bool,
}

/// Anomalous ticks after which a firing episode is a fault that training leaves out.
pub const GATE_AFTER: u32 = 3;

/// The model's anomalous time in its current run of anomalies, before the seasonal
/// profile excuses any: only anomalies that lasted `confirm` (what would be an alarm of
/// level 2) teach the profile what recurs, so a short excursion that happened to fall at
/// the same hour on two days does not excuse a real fault on the third. Counting before
/// the excuse keeps a recurring job taught on the nights it is already excused.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Sustained {
    anomalous_ms: i64,
    normal_run: u32,
    last_ts: Option<i64>,
}

impl Sustained {
    fn tick(&mut self, ts: i64, anomalous: bool, alarm: &crate::alarm::AlarmParams) -> bool {
        let dt = self.last_ts.map_or(0, |t| (ts - t).max(0));
        self.last_ts = Some(ts);
        if anomalous {
            self.normal_run = 0;
            self.anomalous_ms = self.anomalous_ms.saturating_add(dt);
        } else {
            self.normal_run = self.normal_run.saturating_add(1);
            if self.normal_run >= alarm.resolve_after {
                self.anomalous_ms = 0;
            }
        }
        anomalous && self.anomalous_ms >= alarm.calm.confirm_ms
    }
}

impl Decider {
    pub fn new(detector: &Detector, n_dims: usize) -> Self {
        Self {
            model: Model::new(detector.params, n_dims),
            judge: Judge::new(detector.alarm),
            hysteresis: Hysteresis::new(detector.alarm),
            flat: Flat::new(detector.alarm.flat_ms, n_dims),
            rough: Rough::new(detector.rough_window, n_dims),
            profile: Profile::default(),
            detector: detector.clone(),
            invalid: 0,
            mute: 0,
            scored: 0,
            first_scored: None,
            agreed: false,
            sustained: Sustained::default(),
            relearned_at: None,
            episode: EpisodeGate::default(),
            names: (1..=n_dims).map(|i| i.to_string()).collect(),
            trace: Trace::new(detector.picture_points, detector.params.anomaly_score_cap),
        }
    }

    /// Names the dimensions, in the model's order, for the attribution of anomalous
    /// ticks; unnamed, they are `1`, `2`, ...
    pub fn with_names(mut self, names: Vec<String>) -> Self {
        if names.len() == self.names.len() {
            self.names = names;
        }
        self
    }

    /// Which dimensions put the model's current tick where it is ([`attribution`]), for
    /// model `model`; `None` before its first fit, and for a tick on a learned centre (a
    /// context-novelty alarm on a flat series): no dimension is away from normal, and
    /// "received at 0, normal 0–0 (0 %)" would say nothing. Meant for anomalous ticks.
    pub fn attribution(&self, model: &str) -> Option<Attribution> {
        let shares = self.model.attribution()?;
        if shares.iter().all(|s| s.share == 0.0) {
            return None;
        }
        let diffs = self.detector.params.diffs;
        Some(attribution::attribute(model, &self.names, &shares, diffs))
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// For installing a fit that finished on the trainer thread.
    pub fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    /// Bytes this model's decision state holds: the model, and the alarm's memories
    /// (hysteresis hold window, flat-line runs, time-of-day profile).
    pub fn heap_bytes(&self) -> usize {
        self.model.heap_bytes()
            + std::mem::size_of::<Self>()
            + self.profile.heap_bytes()
            + self.flat.heap_bytes()
            + self.rough.heap_bytes()
            + self.trace.heap_bytes()
    }

    /// Whether the host's other models agree that something is wrong, for the next ticks.
    pub fn set_agreed(&mut self, agreed: bool) {
        self.agreed = agreed;
    }

    /// One tick at time `ts` (Unix ms) with one value per dimension. A due fit goes to
    /// `fitter` as model `key`; the second value says whether one finished inline.
    pub fn step(
        &mut self,
        ts: i64,
        values: &[f64],
        key: ModelKey,
        fitter: &mut dyn Fitter,
    ) -> (Decision, bool) {
        if !values.iter().all(|v| self.detector.valid(*v)) {
            self.invalid += 1;
            return (Decision::Invalid, false);
        }
        let Ok(train_due) = self.model.ingest(values) else {
            return (Decision::Skipped, false);
        };
        let flat = self.flat.observe(ts, values, !self.hysteresis.is_firing());
        let rough = self.rough.observe(ts, values);
        let fitted = train_due && fitter.fit(key, &mut self.model);
        let Some(score) = self.model.score() else {
            self.trace.push(ts, None, 0, &self.model);
            return (Decision::Learning, fitted);
        };
        let level = self.judge.judge(&Tick {
            ts,
            score,
            novelty: self.model.novelty(),
            // Only direction and saturation look at it; skip the work otherwise.
            deviation: if self.judge.needs_deviation() {
                self.model.deviation()
            } else {
                0.0
            },
            value: values[0],
            flat,
            rough,
        });
        // The long horizon keeps only what was judged normal: a fault remembered for a day
        // would be normal to every fit of that day.
        let sample = level.is_none() && !flat && !self.hysteresis.is_firing();
        // Not yet: just after a restore (vectors mixing values from before and after it),
        // or before the model has scored `settle` ticks it did not learn from.
        let first = *self.first_scored.get_or_insert(ts);
        let settled = self.scored >= self.detector.alarm.settle
            && ts - first >= self.detector.alarm.settle_for_ms;
        self.scored = self.scored.saturating_add(1);
        let level = if self.mute > 0 {
            self.mute -= 1;
            None
        } else if !settled {
            None
        } else if self.detector.seasonal {
            // Unusual for the last minutes, but anomalous at this time of day on two of
            // the last three days as well: expected, not an anomaly (stuck values never).
            let sustained = self
                .sustained
                .tick(ts, level.is_some(), &self.detector.alarm);
            self.profile
                .observe(ts, level.filter(|_| sustained).map(|_| score));
            level.filter(|_| flat || !self.profile.is_expected(ts, score))
        } else {
            level
        };
        let young = self.is_young(ts);
        let level = level.map(|l| if young { 1 } else { l });
        self.trace
            .push(ts, Some(score), level.unwrap_or(0), &self.model);
        // A stuck or restless dimension has lasted by its own measure (a minute at least),
        // so `suppress`, meant for a score wobbling around its threshold, does not hold it.
        let lasting = (rough || flat) && level.is_some();
        let mut transition = self
            .hysteresis
            .step_lasting(ts, score, level, self.agreed, lasting);
        let learn = self.gate(ts, level.is_some(), flat);
        self.model.judged(sample, learn);
        let accept = self.detector.accept_after_ms;
        // Without the gate the model learns a change by itself; there is nothing to accept.
        if accept > 0
            && self.detector.params.gate
            && transition.is_none()
            && self
                .hysteresis
                .firing_since()
                .is_some_and(|t| ts - t >= accept)
        {
            transition = self.relearn(ts, score);
        }
        let scored = Scored {
            score,
            level,
            firing: self.hysteresis.is_firing(),
            young,
            transition,
            severity: self.hysteresis.severity().unwrap_or(0),
        };
        (Decision::Scored(scored), fitted)
    }

    /// Whether the model is still in its first `alarm.young_for` of scoring: a day it has
    /// not seen whole holds routine it cannot tell from a fault yet. Saturation models
    /// judge against a fixed limit, not against what they learned, and are never young.
    fn is_young(&self, ts: i64) -> bool {
        self.detector.alarm.saturation.is_none()
            && self
                .first_scored
                .is_some_and(|first| ts - first < self.detector.young_for_ms)
    }

    /// Why a young model's alarm is information only, for its summary.
    fn young_note(&self, ts: i64) -> &'static str {
        if self.is_young(ts) {
            "; the model has not seen a whole day yet, so this is information, not a page"
        } else {
            ""
        }
    }

    /// Whether this tick may be learned ([`crate::scorer::model::Gate`]). Not once a
    /// firing episode has been anomalous for `alarm.escalate` (5 min) and [`GATE_AFTER`]
    /// ticks: from then on it is a fault, the episode's ticks so far are left out too,
    /// and the fits that took in its start are dropped. With `train.hold_firing` not while
    /// an alarm fires at all: a refit in the middle of an episode would otherwise take its
    /// start in and silence it (a 4-minute fault fired on 68 % of its ticks, not all); an
    /// episode that resolves before it is a fault is then released, its ticks learned
    /// after all. Shorter episodes are learned, as a burst of normal work must be:
    /// leaving out every tick past the
    /// threshold would cut the tail off the training set, shrink the score's scale and
    /// make the next tick past it likelier, round after round (36 false episodes on NAB
    /// DEV instead of 17), and a normal burst never learned pages every time it comes
    /// back. Stuck readings are never learned (an episode with one is not released).
    /// Before the model has settled, no alarm fires, so it learns everything, as a young
    /// model must.
    fn gate(&mut self, ts: i64, anomalous: bool, flat: bool) -> bool {
        if !self.hysteresis.is_firing() {
            let e = std::mem::take(&mut self.episode);
            // Only `hold_firing` marks an episode that is not a fault; nothing to release otherwise.
            if self.detector.hold_firing && e.ticks > 0 && !e.fault && !e.flat {
                self.model.unmark_recent(e.ticks as usize + 1);
            }
            return !flat;
        }
        let e = &mut self.episode;
        let dt = e.last_ts.map_or(0, |t| (ts - t).max(0));
        e.last_ts = Some(ts);
        e.ticks += 1;
        e.flat |= flat;
        if anomalous {
            e.anomalous += 1;
            e.anomalous_ms = e.anomalous_ms.saturating_add(dt);
        }
        if !e.fault && e.anomalous >= GATE_AFTER && e.anomalous_ms >= self.detector.gate_after_ms {
            e.fault = true;
            self.model.mark_recent(e.ticks as usize);
            self.model.forget_fits_within(e.ticks as usize);
        }
        !flat && !e.fault && !self.detector.hold_firing
    }

    /// Accepts what the model sees now as normal: the ticks the gate left out become
    /// training data, the next tick fits on them, and a firing alarm resolves (returned;
    /// its notice says it was relearned). For `train.accept_after` and the relearn command.
    pub fn relearn(&mut self, ts: i64, score: f64) -> Option<Transition> {
        self.model.accept_new_normal();
        self.rough.forget();
        self.flat.accept();
        self.sustained = Sustained::default();
        self.relearned_at = Some(ts);
        self.hysteresis.resolve_now(ts, score)
    }

    /// Ends a firing episode because the model stops being watched (a device model's
    /// instance evicted for a newer device), leaving the model as it learned: the alarm must
    /// not stay retained as firing with nobody left to resolve it.
    pub fn close_episode(&mut self, ts: i64) -> Option<Transition> {
        let score = self.model.score().unwrap_or(0.0);
        self.hysteresis.resolve_now(ts, score)
    }

    /// The alarm episode change of `t` for the model called `name` on `host` at `ts`.
    pub fn episode(&self, name: &str, host: &str, ts: i64, t: Transition) -> Episode {
        let threshold = self.detector.alarm.threshold;
        let (state, started_at, score, severity) = match t {
            Transition::Fired {
                started_at,
                score,
                severity,
            }
            | Transition::Changed {
                started_at,
                score,
                severity,
            } => (AlarmState::Firing, started_at, score, severity),
            Transition::Resolved {
                started_at,
                score,
                severity,
            } => (AlarmState::Resolved, started_at, score, severity),
        };
        let summary = match state {
            AlarmState::Firing if score >= threshold => format!(
                "{name}: anomaly score {score:.2} >= {threshold:.2} on {host} (severity {severity}){}",
                self.young_note(ts)
            ),
            AlarmState::Firing if self.rough.ratio() > crate::alarm::rough::FACTOR => format!(
                "{name}: swinging on {host}: it moves {:.1} times as much as in the roughest minute of a typical hour (score {score:.2}, severity {severity}){}",
                self.rough.ratio(),
                self.young_note(ts)
            ),
            AlarmState::Firing => format!(
                "{name}: values in an order never seen before on {host} (score {score:.2}, severity {severity}){}",
                self.young_note(ts)
            ),
            AlarmState::Resolved if self.relearned_at == Some(ts) => format!(
                "{name}: relearned on {host}: what it has seen for {} is its new normal (score {score:.2})",
                humanize_ms(ts - started_at)
            ),
            AlarmState::Resolved => format!(
                "{name}: back to normal on {host} (score {score:.2}) after {}",
                humanize_ms(ts - started_at)
            ),
        };
        let mut labels = lookout_shared::payload::Labels::default();
        if state == AlarmState::Resolved && self.relearned_at == Some(ts) {
            labels.insert("reason".into(), "relearned".into());
        }
        // What made it fire; a resolution comes on a normal tick, with nothing to explain.
        let attribution = match state {
            AlarmState::Firing => self.attribution(name),
            AlarmState::Resolved => None,
        };
        let (dimensions, explain) =
            attribution.map_or((Vec::new(), None), |a| (a.dimensions, Some(a.explain)));
        let window = match state {
            AlarmState::Firing => self.window(),
            AlarmState::Resolved => None,
        };
        Episode {
            name: name.to_owned(),
            source: name.to_owned(),
            state,
            severity,
            ts,
            started_at,
            score,
            threshold,
            summary,
            labels,
            dimensions,
            explain,
            window,
        }
    }

    /// What the model saw up to now, for a firing alarm's picture: the dimensions that
    /// put the tick where it is first (largest share first), then the others in the
    /// model's order.
    pub fn window(&self) -> Option<lookout_shared::payload::Window> {
        let n = self.model.n_dims();
        let mut dims: Vec<usize> = (0..n).collect();
        if let Some(shares) = self.model.attribution() {
            dims.sort_by(|&a, &b| shares[b].share.total_cmp(&shares[a].share));
        }
        self.trace.window(&self.model, &dims, &self.names)
    }
}

fn humanize_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scorer::fit::Inline;
    use crate::scorer::testing::noise;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(humanize_ms(12_000), "12s");
        assert_eq!(humanize_ms(192_000), "3m12s");
        assert_eq!(humanize_ms(3_720_000), "1h02m");
    }

    fn small() -> Detector {
        let mut c = DetectorConfig::default();
        c.train.window = crate::scorer::config::Span::Ticks(100);
        c.train.every = crate::scorer::config::Span::Ticks(50);
        c.train.min_points = crate::scorer::config::Span::Ticks(100);
        c.alarm.threshold = 1.5;
        c.alarm.suppress = 0;
        c.alarm.settle = 0;
        c.alarm.settle_for = lookout_shared::duration::HumanDuration::from_secs(0);
        c.alarm.resolve_for = lookout_shared::duration::HumanDuration::from_secs(0);
        // Context novelty alarms on what it has barely seen; this test is about scores.
        c.context.levels = 0;
        c.down_limit = Some(-1000.0);
        c.resolve_at(std::time::Duration::from_secs(1)).unwrap()
    }

    /// The firing alarms' start times (s) of a 2-dimension model (cpu %, iowait %) at 1 s
    /// over 3 h 10 min with the shipped detector: a heavy CPU fault at 1 h 30 for 20 min,
    /// an I/O fault at 2 h 10 for 20 min, a light CPU load at 2 h 50 for 20 min.
    fn three_faults(gate: bool) -> Vec<i64> {
        let mut c = DetectorConfig::default();
        c.train.gate = gate;
        let d = c.resolve_at(std::time::Duration::from_secs(1)).unwrap();
        let mut dec = Decider::new(&d, 2);
        let mut fit = Inline::for_model(dec.model());
        let mut fired = Vec::new();
        for i in 0..11_400u64 {
            let in_fault = |from: u64| (from * 60..from * 60 + 1200).contains(&i);
            let cpu = 10.0
                + 2.0 * noise(i, 1)
                + if in_fault(90) {
                    80.0
                } else if in_fault(170) {
                    25.0
                } else {
                    0.0
                };
            let io = 2.0 + 0.5 * noise(i, 2) + if in_fault(130) { 40.0 } else { 0.0 };
            let ts = i as i64 * 1000;
            if let (Decision::Scored(s), _) = dec.step(ts, &[cpu, io], (0, 0), &mut fit)
                && let Some(Transition::Fired { started_at, .. }) = s.transition
            {
                fired.push(started_at / 1000);
            }
        }
        fired
    }

    /// Share of the ticks of a 4-minute step of +30 (shorter than the 5 minutes after
    /// which an episode is a fault) that fire, with a refit in the middle of it.
    fn firing_share_of_a_4_minute_fault(hold_firing: bool, gate_after_s: Option<u64>) -> f64 {
        let mut c = DetectorConfig::default();
        c.train.hold_firing = hold_firing;
        c.train.gate_after = gate_after_s.map(lookout_shared::duration::HumanDuration::from_secs);
        let d = c.resolve_at(std::time::Duration::from_secs(1)).unwrap();
        let mut dec = Decider::new(&d, 1);
        let mut fit = Inline::for_model(dec.model());
        // Refits are due every 360 ticks: one falls at 7,560, 160 s into the fault.
        let fault = 7400..7640u64;
        let (mut firing, mut refits) = (0, 0);
        for i in 0..fault.end {
            let v = 20.0 + noise(i, 5) + if fault.contains(&i) { 30.0 } else { 0.0 };
            let (decision, fitted) = dec.step(i as i64 * 1000, &[v], (0, 0), &mut fit);
            if fault.contains(&i) {
                refits += usize::from(fitted);
                firing += usize::from(matches!(decision, Decision::Scored(s) if s.firing));
            }
        }
        assert!(refits >= 1, "a refit during the fault");
        firing as f64 / (fault.end - fault.start) as f64
    }

    #[test]
    fn with_hold_firing_an_open_episode_is_not_learned_by_a_refit_in_its_middle() {
        let held = firing_share_of_a_4_minute_fault(true, None);
        assert!(held > 0.95, "fired on {:.0} % of the fault", held * 100.0);
        let learned = firing_share_of_a_4_minute_fault(false, None);
        assert!(
            learned < held,
            "without it the refit learns the fault: {learned} {held}"
        );
    }

    #[test]
    fn a_fault_gated_after_30_s_is_not_learned_by_a_refit_in_its_middle() {
        let gated = firing_share_of_a_4_minute_fault(false, Some(30));
        assert!(gated > 0.95, "fired on {:.0} % of the fault", gated * 100.0);
        // Unset, the gate waits for `alarm.escalate` (5 min): longer than this fault.
        let learned = firing_share_of_a_4_minute_fault(false, None);
        assert!(learned < gated, "{learned} {gated}");
    }

    #[test]
    fn three_faults_in_a_row_each_alarm_the_third_too() {
        let fired = three_faults(true);
        for (name, from) in [("heavy cpu", 5400), ("io", 7800), ("light cpu", 10_200)] {
            assert!(
                fired.iter().any(|&t| (from..from + 1200).contains(&t)),
                "{name} at {from} s: no alarm in {fired:?}"
            );
        }
    }

    /// The highest severity an hour-long step of +40 reaches when it starts `at_s` into a
    /// series of a 1-dimension model at 10 s (a young model's alarms stay at level 1).
    fn peak_severity_of_a_step_at(young_for_s: u64, at_s: i64) -> (u8, String) {
        let mut c = DetectorConfig::default();
        c.alarm.young_for = lookout_shared::duration::HumanDuration::from_secs(young_for_s);
        c.context.levels = 0;
        // Fewer, cheaper fits than the shipped ones: this test is about age, not fits.
        c.train.every = crate::scorer::config::Span::Ticks(360);
        c.train.n_init = 2;
        let d = c.resolve_at(std::time::Duration::from_secs(10)).unwrap();
        let mut dec = Decider::new(&d, 1);
        let mut fit = Inline::for_model(dec.model());
        let (mut peak, mut summary) = (0, String::new());
        for i in 0..(at_s + 3600) / 10 {
            let ts = i * 10_000;
            let step = if ts >= at_s * 1000 { 40.0 } else { 0.0 };
            let v = 20.0 + noise(i as u64, 3) + step;
            if let (Decision::Scored(s), _) = dec.step(ts, &[v], (0, 0), &mut fit)
                && let Some(t) = s.transition
            {
                let e = dec.episode("m", "h", ts, t);
                if e.state == AlarmState::Firing && e.severity >= peak {
                    peak = e.severity;
                    summary = e.summary;
                }
            }
        }
        (peak, summary)
    }

    #[test]
    fn a_model_in_its_first_day_informs_and_does_not_page() {
        let (young, summary) = peak_severity_of_a_step_at(86_400, 6 * 3600);
        assert_eq!(young, 1, "{summary}");
        assert!(summary.contains("not seen a whole day"), "{summary}");
        let (grown, summary) = peak_severity_of_a_step_at(86_400, 26 * 3600);
        assert!(
            grown >= 3,
            "after its first day an hour-long step pages: {grown}"
        );
        assert!(!summary.contains("whole day"), "{summary}");
        let (off, _) = peak_severity_of_a_step_at(0, 6 * 3600);
        assert!(off >= 3, "young_for = 0s: {off}");
    }

    /// A 2-dimension cpu model whose `system` jumps: the firing alarm's payload names
    /// `system` first, beside its normal range, and says so in one line; its resolution,
    /// on a normal tick, carries nothing.
    #[test]
    fn a_firing_alarm_says_which_dimension_moved_and_its_resolution_does_not() {
        let d = small();
        let names = vec!["user".to_string(), "system".to_string()];
        let mut dec = Decider::new(&d, 2).with_names(names);
        let mut fit = Inline::for_model(dec.model());
        let publisher = crate::alarm::publish::Publisher::new("lookout", "h", &Default::default());
        let mut alarms = Vec::new();
        for i in 0..600u64 {
            let jump = if (400..430).contains(&i) { 30.0 } else { 0.0 };
            let v = [20.0 + noise(i, 1), 4.0 + 0.5 * noise(i, 2) + jump];
            let ts = i as i64 * 1000;
            if let (Decision::Scored(s), _) = dec.step(ts, &v, (0, 0), &mut fit)
                && let Some(t) = s.transition
            {
                let payload = publisher.payload(dec.episode("cpu", "h", ts, t));
                alarms.push(serde_json::to_value(payload).unwrap());
            }
        }
        // The low threshold of `small` may fire on noise before: the jump's episode.
        let in_jump = |a: &&serde_json::Value| {
            (400_000..430_000).contains(&a["started_at"].as_i64().unwrap())
        };
        let fired = alarms
            .iter()
            .filter(in_jump)
            .find(|a| a["state"] == "firing")
            .expect("the jump fires");
        let top = &fired["dimensions"][0];
        assert_eq!(top["name"], "system", "{fired}");
        assert!(top["share"].as_f64().unwrap() > 0.8, "{fired}");
        let [lo, hi] = [0, 1].map(|i| top["normal"][i].as_f64().unwrap());
        assert!(
            lo > 3.0 && hi < 5.0 && lo < hi,
            "system's normal range: {fired}"
        );
        assert!(top["value"].as_f64().unwrap() > 20.0, "{fired}");
        let explain = fired["explain"].as_str().unwrap();
        assert!(
            explain.starts_with("system at ") && explain.ends_with("of the cpu anomaly)"),
            "{explain}"
        );
        let resolved = alarms
            .iter()
            .filter(in_jump)
            .find(|a| a["state"] == "resolved")
            .expect("and resolves");
        assert!(resolved.get("dimensions").is_none() && resolved.get("explain").is_none());
        assert!(resolved.get("window").is_none(), "{resolved}");
        the_window_shows_the_jump(fired);
    }

    /// The firing alarm's window: the last `picture_points` ticks up to the firing tick,
    /// `system` first with its normal range, the jump's ticks anomalous and the ticks
    /// before it not.
    fn the_window_shows_the_jump(fired: &serde_json::Value) {
        let w: lookout_shared::payload::Window =
            serde_json::from_value(fired["window"].clone()).expect("a window");
        assert!(w.is_consistent());
        let n = w.ts.len();
        assert_eq!(n, 300, "the default picture_points");
        assert_eq!(w.ts[n - 1], fired["ts"].as_i64().unwrap());
        assert!(w.ts.windows(2).all(|p| p[1] - p[0] == 1000));
        assert_eq!(w.series.len(), 2);
        assert_eq!(w.series[0].name, "system");
        assert_eq!(w.series[0].normal, {
            let n = &fired["dimensions"][0]["normal"];
            Some([n[0].as_f64().unwrap(), n[1].as_f64().unwrap()])
        });
        let started = fired["started_at"].as_i64().unwrap();
        let last = w.series[0].values[n - 1].unwrap();
        assert!(last > 20.0, "system as the model sees it, jumped: {last}");
        let first =
            w.ts.iter()
                .position(|&t| t == started)
                .expect("the start is held");
        assert!(
            w.level[first] > 0,
            "the episode's first tick is anomalous: {w:?}"
        );
        assert!(w.score[first].unwrap() >= 1.5, "at the threshold: {w:?}");
        // The values come from the training ring (100 ticks here): older ones are null.
        let held = w.series[0].values.iter().filter(|v| v.is_some()).count();
        assert!((100..=110).contains(&held), "{held}");
        assert!(w.series[0].values[n - held..].iter().all(Option::is_some));
        for i in (n - held..n).filter(|&i| w.ts[i] < 400_000) {
            assert!(
                w.series[0].values[i].unwrap() < 6.0,
                "tick {i} is before the jump"
            );
        }
        assert!(
            w.score[..first.saturating_sub(5)]
                .iter()
                .all(|s| s.is_some())
        );
    }

    #[test]
    fn a_tick_on_a_learned_centre_names_no_dimension() {
        let mut dec = Decider::new(&small(), 2).with_names(vec!["rx".into(), "tx".into()]);
        let mut fit = Inline::for_model(dec.model());
        for i in 0..150 {
            dec.step(i * 1000, &[0.0, 0.0], (0, 0), &mut fit);
        }
        let shares = dec.model().attribution().expect("fitted");
        assert!(shares.iter().all(|s| s.share == 0.0), "{shares:?}");
        assert_eq!(dec.attribution("network"), None);
        dec.step(150_000, &[0.0, 9.0], (0, 0), &mut fit);
        let a = dec.attribution("network").expect("tx moved");
        assert_eq!(a.dimensions[0].name, "tx");
    }

    #[test]
    fn learning_then_scores_then_a_jump_fires_and_resolves_with_one_id() {
        let d = small();
        let mut dec = Decider::new(&d, 1);
        let mut fit = Inline::for_model(dec.model());
        let mut transitions = Vec::new();
        let mut fits = 0;
        for i in 0..600 {
            let v = (i as f64 * 0.3).sin() + if (400..430).contains(&i) { 40.0 } else { 0.0 };
            let (decision, fitted) = dec.step(i * 1000, &[v], (0, 0), &mut fit);
            fits += usize::from(fitted);
            match decision {
                Decision::Learning => assert!(i < 100, "row {i}"),
                Decision::Scored(s) => {
                    assert!(i >= 100);
                    if let Some(t) = s.transition {
                        transitions.push(dec.episode("m", "h", i * 1000, t));
                    }
                }
                other => panic!("row {i}: {other:?}"),
            }
        }
        assert!(fits >= 10, "{fits}");
        let fired = transitions
            .iter()
            .find(|e| e.state == AlarmState::Firing)
            .expect("the jump fires");
        assert!((400_000..430_000).contains(&fired.started_at), "{fired:?}");
        let resolved = transitions
            .iter()
            .find(|e| e.state == AlarmState::Resolved)
            .expect("and resolves");
        assert_eq!(resolved.started_at, fired.started_at);
        assert!(
            resolved.summary.contains("back to normal on h"),
            "{resolved:?}"
        );
        assert_eq!(
            dec.step(0, &[-5000.0], (0, 0), &mut fit).0,
            Decision::Invalid
        );
        assert_eq!(
            dec.step(0, &[f64::NAN], (0, 0), &mut fit).0,
            Decision::Invalid,
            "NaN is not within the limits"
        );
        assert_eq!(dec.invalid(), 2);
        let mut no_limits = Decider::new(&Detector::default(), 1);
        let d = no_limits.step(0, &[f64::NAN], (0, 0), &mut fit).0;
        assert_eq!(d, Decision::Skipped, "without limits NaN is skipped");
    }
}

#[cfg(test)]
mod seasonal {
    use super::*;
    use crate::scorer::fit::Inline;
    use crate::scorer::testing::noise;
    use lookout_shared::rng::Rng;

    /// Every tick of a 1-dimension model at 2 s that wanders over 40..60 in two hours:
    /// four hours of that, a blip that fires and resolves, then from `swing_at` a swing of
    /// ±6 every 20 s for 5 minutes, inside the normal range. The alarm changes during the
    /// swing, as (severity, summary).
    fn swing_alarms(rough: &str) -> Vec<(u8, String)> {
        let mut c = DetectorConfig::default();
        c.alarm.young_for = lookout_shared::duration::HumanDuration::from_secs(0);
        c.alarm.rough = rough.parse().unwrap();
        c.context.levels = 0;
        let d = c.resolve_at(std::time::Duration::from_secs(2)).unwrap();
        let mut dec = Decider::new(&d, 1);
        let mut fit = Inline::for_model(dec.model());
        let (blip, swing_at) = (4 * 3600, 4 * 3600 + 60);
        let mut out = Vec::new();
        for i in 0..(swing_at + 600) / 2 {
            let t = i * 2;
            let wander = 10.0 * (std::f64::consts::TAU * t as f64 / 7200.0).sin();
            let extra = if (blip..blip + 6).contains(&t) {
                30.0
            } else if (swing_at..swing_at + 300).contains(&t) {
                6.0 * (std::f64::consts::TAU * (t - swing_at) as f64 / 20.0).sin()
            } else {
                0.0
            };
            let v = 50.0 + wander + 0.5 * noise(i as u64, 4) + extra;
            let ts = t * 1000;
            if let (Decision::Scored(s), _) = dec.step(ts, &[v], (0, 0), &mut fit)
                && let Some(tr) = s.transition
                && t >= blip
            {
                let e = dec.episode("m", "h", ts, tr);
                if t >= swing_at && e.state == AlarmState::Firing {
                    out.push((e.severity, e.summary));
                } else if t < swing_at {
                    out.push((0, format!("{:?}", e.state)));
                }
            }
        }
        out
    }

    #[test]
    fn a_swing_inside_the_normal_range_pages_even_right_after_another_alarm() {
        let alarms = swing_alarms("1m");
        assert!(
            alarms.starts_with(&[(0, "Firing".into()), (0, "Resolved".into())]),
            "the blip fires and resolves: {alarms:?}"
        );
        // The score sees some of the swing's ticks too; what matters is that it pages
        // though the blip's alarm fired a minute before.
        assert!(alarms.iter().any(|(sev, _)| *sev == 2), "{alarms:?}");
        let without = swing_alarms("0s");
        assert!(
            without.iter().all(|(sev, _)| *sev < 2),
            "without the check the swing does not page: {without:?}"
        );
    }

    /// A collector dropout right after a blip: the blip fires and resolves, and 40 s later
    /// the value reads 0 for three minutes, then a stuck sensor of two minutes an hour
    /// later. Both page (level 2) although the first is within `suppress` of the blip, and
    /// the second is not missed for the dropout having been learned as a normal run.
    #[test]
    fn a_dropout_within_suppress_of_a_blip_pages_and_is_not_learned() {
        let mut c = DetectorConfig::default();
        c.alarm.young_for = lookout_shared::duration::HumanDuration::from_secs(0);
        let d = c.resolve_at(std::time::Duration::from_secs(1)).unwrap();
        let mut dec = Decider::new(&d, 1);
        let mut fit = Inline::for_model(dec.model());
        let blip = 2 * 3600;
        let (dropout, stuck) = (blip + 40, blip + 3600);
        let mut paged = Vec::new();
        for t in 0..stuck + 400 {
            let v = if (blip..blip + 4).contains(&t) {
                90.0
            } else if (dropout..dropout + 180).contains(&t) {
                0.0
            } else if (stuck..stuck + 120).contains(&t) {
                37.5
            } else {
                40.0 + 3.0 * noise(t as u64, 9)
            };
            if let (Decision::Scored(s), _) = dec.step(t * 1000, &[v], (0, 0), &mut fit)
                && let Some(tr) = s.transition
            {
                let e = dec.episode("m", "h", t * 1000, tr);
                if e.state == AlarmState::Firing && e.severity >= 2 {
                    paged.push(t);
                }
            }
        }
        assert!(
            paged.iter().any(|t| (dropout..dropout + 180).contains(t)),
            "the dropout pages: {paged:?}"
        );
        assert!(
            paged.iter().any(|t| (stuck..stuck + 120).contains(t)),
            "the stuck value pages: {paged:?}"
        );
    }

    /// Issue 17: a backup that runs every night at 02:00 must stop alarming by the third
    /// night. Four days at a 10 s interval: noise around 20 with a small daily cycle, and
    /// a job raising the value by 30 from 02:00 to 02:30 every night.
    #[test]
    fn a_nightly_backup_stops_alarming_by_the_third_night() {
        let d = DetectorConfig::default()
            .resolve_at(std::time::Duration::from_secs(1))
            .unwrap();
        let mut dec = Decider::new(&d, 1);
        let mut fit = Inline::for_model(dec.model());
        let mut rng = Rng::from_seed(7);
        let day_ms = 86_400_000i64;
        let mut fired_by_night = [0u32; 4];
        let mut level2_by_night = [0u32; 4];
        for i in 0..(4 * 8640) {
            let ts = i * 10_000;
            let minute = (ts % day_ms) / 60_000;
            let daily = (ts as f64 / day_ms as f64 * std::f64::consts::TAU).sin() * 3.0;
            let job = if (120..150).contains(&minute) {
                30.0
            } else {
                0.0
            };
            let v = 20.0 + daily + job + rng.normal();
            if let (Decision::Scored(s), _) = dec.step(ts, &[v], (0, 0), &mut fit) {
                let night = (ts / day_ms) as usize;
                let during = (110..170).contains(&minute);
                match s.transition {
                    Some(Transition::Fired { .. }) if during => fired_by_night[night] += 1,
                    Some(Transition::Changed { severity, .. }) if during && severity >= 2 => {
                        level2_by_night[night] += 1
                    }
                    _ => {}
                }
            }
        }
        assert!(
            fired_by_night[1] > 0,
            "the second night still alarms (one night is not a pattern): {fired_by_night:?}"
        );
        assert_eq!(fired_by_night[2], 0, "third night: {fired_by_night:?}");
        assert_eq!(fired_by_night[3], 0, "fourth night: {fired_by_night:?}");
        assert_eq!(level2_by_night[2] + level2_by_night[3], 0);
    }
}
