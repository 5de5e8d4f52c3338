//! From a model's scores to alarm episodes.
//!
//! - [`Judge`] decides per tick whether it is anomalous and at what level: the score
//!   against the threshold or the context novelty, the model's `direction`, and for
//!   saturation metrics the seed's saturation logic ([`saturation`]); levels come from
//!   the seed's graded severity ([`severity`]).
//! - [`Hysteresis`] turns those decisions into episodes: an alarm fires after `for`
//!   consecutive anomalous ticks and resolves after `resolve_after` consecutive normal
//!   ones spanning at least `resolve_for`, so a single noisy tick neither raises nor
//!   clears anything, and an incident whose score dips for a minute stays one alarm. After an alarm fires,
//!   `suppress` ticks must pass before the same model fires again: an incident is one
//!   notification, not one per wobble of the score around the threshold. While firing, a
//!   higher level is announced at once and a lower one once it has held for
//!   `resolve_after` ticks.

pub mod calm;
pub mod config;
pub mod flat;
pub mod publish;
pub mod rough;
pub mod saturation;
pub mod severity;

pub use calm::Calm;
pub use config::{AlarmConfig, AlarmParams, Kind, SaturationConfig};
pub use saturation::{Saturation, SaturationParams};
pub use severity::Grading;

/// Which side of normal may alarm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Both,
    /// Only above normal: saturation metrics, error counts.
    Up,
    /// Only below normal: business volumes, where an unusual rise ("overflow") is fine.
    Down,
}

/// What a model says about one tick.
#[derive(Clone, Copy, Debug)]
pub struct Tick {
    pub ts: i64,
    pub score: f64,
    /// Context novelty, when the context detector is on and warmed up.
    pub novelty: Option<f64>,
    /// Which side of normal the tick is on: > 0 above, < 0 below (see `Model::deviation`).
    pub deviation: f64,
    /// The model's first raw value, for saturation limits.
    pub value: f64,
    /// A dimension has not changed for far longer than it normally does (`flat`).
    pub flat: bool,
    /// A dimension moves far more than in a typical hour's roughest minute (`rough`).
    pub rough: bool,
}

/// Per-tick decision: anomalous or not, and at which level.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Judge {
    params: AlarmParams,
    saturation: Option<Saturation>,
}

impl Judge {
    pub fn new(params: AlarmParams) -> Self {
        Self {
            params,
            saturation: params.saturation.map(Saturation::new),
        }
    }

    /// The same judge under today's `params` (a state read back from a snapshot): the
    /// saturation memory is kept when the model is still a saturation model.
    pub fn adopt(self, params: AlarmParams) -> Self {
        let saturation = match (self.saturation, params.saturation) {
            (Some(s), Some(p)) => Some(s.adopt(p)),
            (_, p) => p.map(Saturation::new),
        };
        Self { params, saturation }
    }

    /// Whether [`Tick::deviation`] is looked at: only for a direction or saturation, so
    /// callers can skip computing it on every tick otherwise.
    pub fn needs_deviation(&self) -> bool {
        self.params.direction != Direction::Both || self.saturation.is_some()
    }

    /// The tick's level (1–4) if it is anomalous.
    pub fn judge(&mut self, t: &Tick) -> Option<u8> {
        if let Some(s) = &mut self.saturation {
            s.observe(t.ts, t.value);
        }
        let p = &self.params;
        // A stuck reading is a fault whichever side of normal it stopped on.
        if t.flat {
            return Some(2);
        }
        // So is a series swinging within its normal range (the score sees each value as
        // ordinary); it pages only once it has lasted, as any level 2 does.
        if t.rough {
            return Some(2);
        }
        let by_score = t.score >= p.threshold;
        let by_context = t.novelty.is_some_and(|n| n >= p.context_threshold);
        if !(by_score || by_context) {
            return None;
        }
        let allowed = match p.direction {
            Direction::Both => true,
            Direction::Up => t.deviation >= 0.0,
            Direction::Down => t.deviation <= 0.0,
        };
        if !allowed {
            return None;
        }
        match &self.saturation {
            // Never below the lower bound; above it, only if it looks like saturation.
            Some(s) if t.deviation > 0.0 => s.level(t.ts, t.value),
            Some(_) => None,
            // A context alarm with an ordinary score is level 1.
            None => Some(p.grading.level(t.score, p.threshold).max(1)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transition {
    Fired {
        started_at: i64,
        score: f64,
        severity: u8,
    },
    /// The level of a firing alarm changed: re-published with the new severity.
    Changed {
        started_at: i64,
        score: f64,
        severity: u8,
    },
    Resolved {
        started_at: i64,
        score: f64,
        severity: u8,
    },
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Hysteresis {
    params: AlarmParams,
    anomalous_run: u32,
    normal_run: u32,
    /// Time of the first tick of the current normal run.
    normal_since: i64,
    /// Time of the first tick of the current anomalous run.
    run_started_at: i64,
    firing: Option<Firing>,
    /// Updates seen, and the update at which the last alarm fired.
    ticks: u64,
    last_fired: Option<u64>,
    /// Time of the previous tick: a tick's share of anomalous time is the time since it.
    last_ts: Option<i64>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Firing {
    started_at: i64,
    level: calm::Level,
}

impl Hysteresis {
    pub fn new(params: AlarmParams) -> Self {
        Self {
            params,
            anomalous_run: 0,
            normal_run: 0,
            normal_since: 0,
            run_started_at: 0,
            firing: None,
            ticks: 0,
            last_fired: None,
            last_ts: None,
        }
    }

    pub fn is_firing(&self) -> bool {
        self.firing.is_some()
    }

    pub fn params(&self) -> AlarmParams {
        self.params
    }

    /// The firing episode's announced severity, if one is firing.
    pub fn severity(&self) -> Option<u8> {
        self.firing.as_ref().map(|f| f.level.announced())
    }

    /// When the firing episode started, if one is.
    pub fn firing_since(&self) -> Option<i64> {
        self.firing.as_ref().map(|f| f.started_at)
    }

    /// Ends the firing episode now, whatever the score (a new normal was accepted): the
    /// resolution, and a fresh start for the runs, so the next anomaly is a new episode.
    pub fn resolve_now(&mut self, ts: i64, score: f64) -> Option<Transition> {
        let f = self.firing.take()?;
        self.anomalous_run = 0;
        self.normal_run = 0;
        self.normal_since = ts;
        Some(Transition::Resolved {
            started_at: f.started_at,
            score,
            severity: f.level.announced(),
        })
    }

    /// The same episode state under today's `params` (a state read back from a snapshot).
    pub fn adopt(self, params: AlarmParams) -> Self {
        Self { params, ..self }
    }

    pub fn is_anomalous(&self, score: f64) -> bool {
        score >= self.params.threshold
    }

    /// Feeds one score at time `ts`, judged by threshold and grading alone (no context,
    /// direction or saturation); returns the transition it caused, if any.
    pub fn update(&mut self, ts: i64, score: f64) -> Option<Transition> {
        let level = self.is_anomalous(score).then(|| {
            self.params
                .grading
                .level(score, self.params.threshold)
                .max(1)
        });
        self.step(ts, score, level)
    }

    /// Feeds one tick's decision (from [`Judge`]): `level` is `Some` when anomalous.
    pub fn step(&mut self, ts: i64, score: f64, level: Option<u8>) -> Option<Transition> {
        self.step_agreed(ts, score, level, false)
    }

    /// [`Hysteresis::step`], knowing whether other models of the host agree that
    /// something is wrong (see [`calm`]: agreement escalates sooner).
    pub fn step_agreed(
        &mut self,
        ts: i64,
        score: f64,
        level: Option<u8>,
        agreed: bool,
    ) -> Option<Transition> {
        self.step_lasting(ts, score, level, agreed, false)
    }

    /// [`Hysteresis::step_agreed`]; `lasting`: the tick's anomaly has already lasted by
    /// its own measure (a restless series, [`rough`], or a stuck one, [`flat`]), so it is
    /// not a wobble of the score around the threshold and `suppress` does not hold it
    /// back. Without this, a swing or a dropout that began with a blip of the score stayed
    /// silent for the 288 ticks after it.
    pub fn step_lasting(
        &mut self,
        ts: i64,
        score: f64,
        level: Option<u8>,
        agreed: bool,
        lasting: bool,
    ) -> Option<Transition> {
        let tick = self.ticks;
        self.ticks += 1;
        let dt = self.last_ts.map_or(0, |t| (ts - t).max(0));
        self.last_ts = Some(ts);
        let quiet = !lasting
            && self
                .last_fired
                .is_some_and(|t| tick - t < u64::from(self.params.suppress));
        let calm = self.params.calm;
        match level {
            Some(sev) => {
                if self.anomalous_run == 0 {
                    self.run_started_at = ts;
                }
                self.anomalous_run = self.anomalous_run.saturating_add(1);
                self.normal_run = 0;
                match &mut self.firing {
                    Some(f) => f
                        .level
                        .step(&calm, ts, dt, Some(sev), agreed)
                        .map(|severity| Transition::Changed {
                            started_at: f.started_at,
                            score,
                            severity,
                        }),
                    None if self.anomalous_run >= self.params.for_ticks && !quiet => {
                        self.last_fired = Some(tick);
                        let level = calm::Level::fire(&calm, ts, dt, sev, agreed);
                        let severity = level.announced();
                        self.firing = Some(Firing {
                            started_at: self.run_started_at,
                            level,
                        });
                        Some(Transition::Fired {
                            started_at: self.run_started_at,
                            score,
                            severity,
                        })
                    }
                    None => None,
                }
            }
            None => {
                self.anomalous_run = 0;
                if self.normal_run == 0 {
                    self.normal_since = ts;
                }
                self.normal_run = self.normal_run.saturating_add(1);
                let resolve = self.normal_run >= self.params.resolve_after
                    && ts - self.normal_since >= self.params.resolve_for_ms;
                match &mut self.firing {
                    Some(f) if resolve => {
                        let t = Transition::Resolved {
                            started_at: f.started_at,
                            score,
                            severity: f.level.announced(),
                        };
                        self.firing = None;
                        Some(t)
                    }
                    Some(f) => f.level.step(&calm, ts, dt, None, agreed).map(|severity| {
                        Transition::Changed {
                            started_at: f.started_at,
                            score,
                            severity,
                        }
                    }),
                    None => None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(for_ticks: u32, resolve_after: u32) -> AlarmParams {
        AlarmParams {
            for_ticks,
            resolve_after,
            ..AlarmParams::with_threshold(2.0)
        }
    }

    fn h(for_ticks: u32, resolve_after: u32) -> Hysteresis {
        Hysteresis::new(params(for_ticks, resolve_after))
    }

    #[test]
    fn a_new_alarm_within_suppress_ticks_of_the_last_one_is_held_back() {
        let mut a = Hysteresis::new(AlarmParams {
            suppress: 5,
            ..params(1, 1)
        });
        assert!(matches!(a.update(0, 3.0), Some(Transition::Fired { .. })));
        assert!(matches!(
            a.update(1, 0.0),
            Some(Transition::Resolved { .. })
        ));
        assert_eq!(a.update(2, 3.0), None, "tick 2 is within 5 of tick 0");
        assert_eq!(a.update(3, 3.0), None);
        assert_eq!(a.update(4, 3.0), None);
        assert!(!a.is_firing());
        assert!(
            matches!(
                a.update(5, 3.0),
                Some(Transition::Fired { started_at: 2, .. })
            ),
            "still anomalous when the quiet time ends: fires, dated from the run's start"
        );
    }

    #[test]
    fn fires_after_for_consecutive_anomalous_ticks() {
        let mut a = h(3, 2);
        assert_eq!(a.update(1, 2.5), None);
        assert_eq!(a.update(2, 2.5), None);
        assert!(matches!(
            a.update(3, 2.5),
            Some(Transition::Fired { started_at: 1, .. })
        ));
        assert!(a.is_firing());
        assert_eq!(a.update(4, 2.5), None, "already firing at this level");
    }

    #[test]
    fn an_interrupted_run_starts_over() {
        let mut a = h(3, 2);
        a.update(1, 2.5);
        a.update(2, 2.5);
        a.update(3, 0.1);
        assert_eq!(a.update(4, 2.5), None);
        assert_eq!(a.update(5, 2.5), None);
        assert!(matches!(
            a.update(6, 2.5),
            Some(Transition::Fired { started_at: 4, .. })
        ));
    }

    fn calm(hold_ms: i64) -> Calm {
        Calm {
            hold_ms,
            ..Calm::default()
        }
    }

    #[test]
    fn resolves_after_resolve_after_normal_ticks_and_keeps_its_level() {
        let mut a = Hysteresis::new(AlarmParams {
            calm: calm(3),
            ..params(1, 3)
        });
        assert!(matches!(
            a.update(1, 2.0),
            Some(Transition::Fired { severity: 1, .. })
        ));
        assert_eq!(a.update(2, 4.5), None, "a new level must hold");
        assert!(matches!(
            a.update(4, 4.5),
            Some(Transition::Changed { severity: 4, .. })
        ));
        assert_eq!(a.update(5, 1.0), None);
        assert_eq!(
            a.update(6, 2.1),
            None,
            "an anomalous tick resets the normal run; one lower tick changes nothing"
        );
        assert_eq!(a.update(7, 1.0), None);
        assert_eq!(a.update(8, 1.0), None);
        assert_eq!(
            a.update(9, 0.5),
            Some(Transition::Resolved {
                started_at: 1,
                score: 0.5,
                severity: 4
            })
        );
        assert!(!a.is_firing());
    }

    #[test]
    fn a_dip_shorter_than_resolve_for_keeps_the_same_alarm() {
        let mut a = Hysteresis::new(AlarmParams {
            resolve_for_ms: 10,
            suppress: 100,
            ..params(1, 2)
        });
        assert!(matches!(
            a.update(0, 3.0),
            Some(Transition::Fired { started_at: 0, .. })
        ));
        for ts in 1..=9 {
            assert_eq!(
                a.update(ts, 0.5),
                None,
                "normal for {ts} < 10: still firing"
            );
        }
        assert!(a.is_firing());
        assert_eq!(a.update(10, 3.0), None, "anomalous again: the same alarm");
        for ts in 11..20 {
            assert_eq!(a.update(ts, 0.5), None);
        }
        assert!(
            matches!(
                a.update(21, 0.5),
                Some(Transition::Resolved { started_at: 0, .. })
            ),
            "normal for 10 ms and 2 ticks: resolved, dated from the first fire"
        );
    }

    fn tick(score: f64, novelty: Option<f64>, deviation: f64) -> Tick {
        Tick {
            ts: 0,
            score,
            novelty,
            deviation,
            value: 0.0,
            flat: false,
            rough: false,
        }
    }

    #[test]
    fn full_context_novelty_is_anomalous_at_level_1_even_at_a_low_score() {
        let mut j = Judge::new(AlarmParams::with_threshold(2.0));
        assert_eq!(j.judge(&tick(0.1, Some(0.8), 1.0)), None);
        assert_eq!(j.judge(&tick(0.1, Some(1.0), 1.0)), Some(1));
        assert_eq!(j.judge(&tick(0.1, None, 1.0)), None);
    }

    #[test]
    fn the_level_follows_the_grading_of_the_score() {
        // threshold 2.4, t2 0.2: bound 2.0, level 2 from N = 0.4 (score 2.8).
        let mut j = Judge::new(AlarmParams::with_threshold(2.4));
        assert_eq!(j.judge(&tick(2.39, None, 1.0)), None);
        assert_eq!(j.judge(&tick(2.4, None, 1.0)), Some(1));
        assert_eq!(j.judge(&tick(2.8, None, 1.0)), Some(2));
        assert_eq!(j.judge(&tick(9.0, None, 1.0)), Some(4));
    }

    #[test]
    fn direction_up_ignores_drops_and_down_ignores_rises() {
        let up = AlarmParams {
            direction: Direction::Up,
            ..AlarmParams::with_threshold(2.0)
        };
        let mut j = Judge::new(up);
        assert_eq!(j.judge(&tick(5.0, None, 1.0)), Some(4));
        assert_eq!(j.judge(&tick(5.0, None, -1.0)), None);
        let mut j = Judge::new(AlarmParams {
            direction: Direction::Down,
            ..up
        });
        assert_eq!(
            j.judge(&tick(5.0, None, 1.0)),
            None,
            "an overflow is normal"
        );
        assert_eq!(j.judge(&tick(5.0, Some(1.0), -1.0)), Some(4));
        let mut j = Judge::new(AlarmParams::with_threshold(2.0));
        assert_eq!(
            j.judge(&tick(5.0, None, -1.0)),
            Some(4),
            "both: either side"
        );
    }

    #[test]
    fn saturation_metrics_alarm_only_when_nearing_the_limit() {
        let p = AlarmParams {
            saturation: Some(SaturationParams {
                limit: 100.0,
                pct: 0.7,
                window_ms: 300_000,
                step_ms: 0,
                rises_near_limit: 2,
                rises_level2: 3,
                rises_level3: 5,
            }),
            ..AlarmParams::with_threshold(2.0)
        };
        let mut j = Judge::new(p);
        let at = |ts: i64, value: f64, deviation: f64| Tick {
            ts,
            score: 5.0,
            novelty: None,
            deviation,
            value,
            flat: false,
            rough: false,
        };
        // Anomalous but steady and far from the limit: not saturation.
        assert_eq!(j.judge(&at(0, 20.0, 1.0)), None);
        assert_eq!(j.judge(&at(10_000, 20.0, 1.0)), None);
        // Below normal never alarms.
        assert_eq!(j.judge(&at(20_000, 5.0, -1.0)), None);
        // Two rises to above 70 % of the limit: level 3.
        assert_eq!(j.judge(&at(30_000, 50.0, 1.0)), None, "one rise");
        assert_eq!(j.judge(&at(40_000, 75.0, 1.0)), Some(3));
    }

    #[test]
    fn a_new_level_is_announced_once_it_has_held_up_or_down() {
        let mut a = Hysteresis::new(AlarmParams {
            calm: calm(2),
            ..params(1, 2)
        });
        assert!(matches!(
            a.step(0, 2.0, Some(1)),
            Some(Transition::Fired { severity: 1, .. })
        ));
        assert_eq!(a.step(1, 3.0, Some(3)), None, "not held yet");
        assert!(matches!(
            a.step(2, 3.0, Some(3)),
            Some(Transition::Changed {
                severity: 3,
                started_at: 0,
                ..
            })
        ));
        assert_eq!(a.step(3, 2.0, Some(2)), None, "one tick lower: not yet");
        assert!(
            matches!(
                a.step(4, 2.0, Some(2)),
                Some(Transition::Changed { severity: 2, .. })
            ),
            "lower for the whole hold: announced"
        );
    }
}
