//! Turns a model's stream of scores into alarm episodes with hysteresis: an alarm fires
//! after `for` consecutive anomalous ticks and resolves after `resolve_after` consecutive
//! normal ones, so a single noisy tick neither raises nor clears anything. After an
//! alarm fires, `suppress` ticks must pass before the same model fires again: an incident
//! is one notification, not one per wobble of the score around the threshold.

use crate::config::AlarmParams;

/// Severity 1–4 from how far the score went past the threshold: level 1 at the
/// threshold, one more level per 25 % beyond it, at most 4.
pub fn severity(score: f64, threshold: f64) -> u8 {
    if !(score.is_finite() && threshold.is_finite()) || threshold <= 0.0 || score < threshold {
        return 1;
    }
    let excess = (score - threshold) / threshold;
    (1.0 + (excess / 0.25).floor()).clamp(1.0, 4.0) as u8
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transition {
    Fired {
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

#[derive(Clone, Debug)]
pub struct Hysteresis {
    params: AlarmParams,
    anomalous_run: u32,
    normal_run: u32,
    /// Time of the first tick of the current anomalous run.
    run_started_at: i64,
    firing: Option<Firing>,
    /// Updates seen, and the update at which the last alarm fired.
    ticks: u64,
    last_fired: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Firing {
    started_at: i64,
    severity: u8,
}

impl Hysteresis {
    pub fn new(params: AlarmParams) -> Self {
        Self {
            params,
            anomalous_run: 0,
            normal_run: 0,
            run_started_at: 0,
            firing: None,
            ticks: 0,
            last_fired: None,
        }
    }

    pub fn is_firing(&self) -> bool {
        self.firing.is_some()
    }

    pub fn is_anomalous(&self, score: f64) -> bool {
        score >= self.params.threshold
    }

    /// Feeds one score at time `ts`; returns the transition it caused, if any.
    pub fn update(&mut self, ts: i64, score: f64) -> Option<Transition> {
        self.update_with(ts, score, None)
    }

    /// As [`update`](Self::update), with the model's context novelty: a tick is anomalous
    /// when its score reaches the threshold or its novelty reaches `context_threshold`.
    /// Severity still comes from the score.
    pub fn update_with(&mut self, ts: i64, score: f64, novelty: Option<f64>) -> Option<Transition> {
        let tick = self.ticks;
        self.ticks += 1;
        let quiet = self
            .last_fired
            .is_some_and(|t| tick - t < u64::from(self.params.suppress));
        let novel = novelty.is_some_and(|n| n >= self.params.context_threshold);
        if self.is_anomalous(score) || novel {
            if self.anomalous_run == 0 {
                self.run_started_at = ts;
            }
            self.anomalous_run = self.anomalous_run.saturating_add(1);
            self.normal_run = 0;
            let sev = severity(score, self.params.threshold);
            match &mut self.firing {
                Some(f) => {
                    f.severity = f.severity.max(sev);
                    None
                }
                None if self.anomalous_run >= self.params.for_ticks && !quiet => {
                    self.last_fired = Some(tick);
                    self.firing = Some(Firing {
                        started_at: self.run_started_at,
                        severity: sev,
                    });
                    Some(Transition::Fired {
                        started_at: self.run_started_at,
                        score,
                        severity: sev,
                    })
                }
                None => None,
            }
        } else {
            self.anomalous_run = 0;
            self.normal_run = self.normal_run.saturating_add(1);
            match self.firing {
                Some(f) if self.normal_run >= self.params.resolve_after => {
                    self.firing = None;
                    Some(Transition::Resolved {
                        started_at: f.started_at,
                        score,
                        severity: f.severity,
                    })
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(for_ticks: u32, resolve_after: u32) -> Hysteresis {
        Hysteresis::new(AlarmParams {
            threshold: 2.0,
            for_ticks,
            resolve_after,
            suppress: 0,
            context_threshold: 1.0,
        })
    }

    #[test]
    fn a_new_alarm_within_suppress_ticks_of_the_last_one_is_held_back() {
        let mut a = Hysteresis::new(AlarmParams {
            threshold: 2.0,
            for_ticks: 1,
            resolve_after: 1,
            suppress: 5,
            context_threshold: 1.0,
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
        assert_eq!(a.update(4, 3.0), None, "already firing");
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

    #[test]
    fn resolves_after_resolve_after_normal_ticks_and_keeps_peak_severity() {
        let mut a = h(1, 3);
        assert!(matches!(
            a.update(1, 2.0),
            Some(Transition::Fired { severity: 1, .. })
        ));
        a.update(2, 4.5);
        assert_eq!(a.update(3, 1.0), None);
        assert_eq!(
            a.update(4, 2.1),
            None,
            "an anomalous tick resets the normal run"
        );
        assert_eq!(a.update(5, 1.0), None);
        assert_eq!(a.update(6, 1.0), None);
        assert_eq!(
            a.update(7, 0.5),
            Some(Transition::Resolved {
                started_at: 1,
                score: 0.5,
                severity: 4
            })
        );
        assert!(!a.is_firing());
    }

    #[test]
    fn full_context_novelty_alarms_even_at_a_low_score() {
        let mut a = h(1, 1);
        assert_eq!(a.update_with(0, 0.1, Some(0.8)), None);
        assert!(matches!(
            a.update_with(1, 0.1, Some(1.0)),
            Some(Transition::Fired { severity: 1, .. })
        ));
        assert!(matches!(
            a.update_with(2, 0.1, None),
            Some(Transition::Resolved { .. })
        ));
    }

    #[test]
    fn severity_grows_with_the_excess_and_stops_at_four() {
        assert_eq!(severity(2.0, 2.0), 1);
        assert_eq!(severity(2.49, 2.0), 1);
        assert_eq!(severity(2.5, 2.0), 2);
        assert_eq!(severity(3.0, 2.0), 3);
        assert_eq!(severity(100.0, 2.0), 4);
        assert_eq!(severity(f64::NAN, 2.0), 1);
    }
}
