//! Host-level judgement (Netdata's "host anomaly rate"): how many of a host's models are
//! anomalous at once. One model's excursion is information; several models of one host
//! agreeing is what an operator wants to hear about, and it lets each of those models'
//! alarms escalate sooner (`alarm::calm`).
//!
//! A model counts as anomalous for `window` after its last anomalous tick, so models whose
//! anomalies are a few seconds apart still agree. The host's anomaly rate is the share of
//! its models counted so; with at least `min_models` of them the host is anomalous, and
//! its own alarm (`<prefix>/<host>/alarms/host`) goes through the same hysteresis and calm
//! severity as a model's, its graded level being the number of models agreeing (at most 4).
//!
//! Letting the models' own alarms escalate to levels 3–4 early takes more: at least
//! `min_models` of them must be *confirmed* within the window, their alarms firing at level
//! 2 or more (anomalous for `confirm` each). A level-1 blip of a chatty model (an error
//! rate near zero, a CPU blip that resolved) is information for the anomaly rate, not a
//! witness that turns another model's 50-second burst into a level-3 page.

use lookout_shared::config::Invalid;
use lookout_shared::duration::HumanDuration;
use lookout_shared::payload::AlarmState;
use serde::{Deserialize, Serialize};

use crate::alarm::publish::Episode;
use crate::alarm::{AlarmParams, Hysteresis, Transition};

use super::snapshot::{FORMAT, OLDEST_READ, Refused};

/// What a host judgement's snapshot starts with.
const MAGIC: &[u8; 8] = b"LKTHOST\0";

#[derive(Serialize)]
struct SnapOut<'a> {
    format: u32,
    saved_at: i64,
    last_anomalous: &'a [Option<i64>],
    hysteresis: &'a Hysteresis,
    /// Format 5's addition.
    last_confirmed: &'a [Option<i64>],
}

#[derive(Deserialize)]
struct SnapIn {
    format: u32,
    saved_at: i64,
    last_anomalous: Vec<Option<i64>>,
    hysteresis: Hysteresis,
}

/// The name of the host-level alarm (its topic level); no model may be called so.
pub const NAME: &str = "host";

/// `[host]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Raise the host-level alarm (the anomaly rate is published either way).
    pub alarm: bool,
    /// How long a model counts as anomalous after its last anomalous tick.
    pub window: HumanDuration,
    /// Models that must agree for the host to be anomalous.
    pub min_models: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            alarm: true,
            window: HumanDuration::from_secs(60),
            min_models: 2,
        }
    }
}

impl HostConfig {
    pub fn check(&self) -> Result<(), Invalid> {
        if self.min_models < 2 {
            return Err(Invalid::new(
                "min_models",
                "must be at least 2 (one model alone is that model's alarm)",
            ));
        }
        Ok(())
    }
}

/// One host's judgement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostJudge {
    window_ms: i64,
    min_models: usize,
    alarm: bool,
    /// Per model, the time of its last anomalous tick.
    last_anomalous: Vec<Option<i64>>,
    /// Per model, the time of its last anomalous tick with its alarm at level 2 or more.
    last_confirmed: Vec<Option<i64>>,
    hysteresis: Hysteresis,
}

/// What one tick says about the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTick {
    /// Share of models anomalous within the window.
    pub rate: f64,
    /// Indices of those models.
    pub anomalous: Vec<usize>,
    pub agreed: bool,
    pub transition: Option<Transition>,
}

impl HostJudge {
    /// `alarm` holds the calm severity and hysteresis of the models' `[detector.alarm]`.
    pub fn new(config: &HostConfig, n_models: usize, alarm: AlarmParams) -> Self {
        let params = AlarmParams {
            threshold: config.min_models as f64,
            for_ticks: 1,
            suppress: 0,
            settle: 0,
            ..alarm
        };
        Self {
            window_ms: config.window.0.as_millis() as i64,
            min_models: config.min_models,
            alarm: config.alarm,
            last_anomalous: vec![None; n_models],
            last_confirmed: vec![None; n_models],
            hysteresis: Hysteresis::new(params),
        }
    }

    /// Whether the host-level alarm is firing.
    pub fn is_firing(&self) -> bool {
        self.hysteresis.is_firing()
    }

    /// The judgement's state (its alarm may be firing), saved at `now`.
    pub fn snapshot(&self, now: i64) -> Vec<u8> {
        let out = SnapOut {
            format: FORMAT,
            saved_at: now,
            last_anomalous: &self.last_anomalous,
            hysteresis: &self.hysteresis,
            last_confirmed: &self.last_confirmed,
        };
        let mut bytes = MAGIC.to_vec();
        bytes.extend(postcard::to_allocvec(&out).unwrap_or_default());
        bytes
    }

    /// Takes a snapshot back for a host of `n_models` models; returns when it was saved.
    pub fn restore(&mut self, bytes: &[u8], n_models: usize) -> Result<i64, Refused> {
        let Some(bytes) = bytes.strip_prefix(MAGIC) else {
            return Err(Refused::Corrupt("not a Lookout host snapshot".into()));
        };
        let corrupt = |e: postcard::Error| Refused::Corrupt(e.to_string());
        let (s, rest): (SnapIn, _) = postcard::take_from_bytes(bytes).map_err(corrupt)?;
        // Formats 3 and 4 are format 5 without the confirmed models.
        if !(OLDEST_READ..=FORMAT).contains(&s.format) {
            return Err(Refused::Format { found: s.format });
        }
        let confirmed: Option<Vec<Option<i64>>> = if s.format >= 5 {
            Some(postcard::from_bytes(rest).map_err(corrupt)?)
        } else {
            None
        };
        if s.last_anomalous.len() != n_models {
            return Err(Refused::Shape);
        }
        self.last_confirmed = confirmed
            .filter(|c| c.len() == n_models)
            .unwrap_or_else(|| vec![None; n_models]);
        self.last_anomalous = s.last_anomalous;
        let params = self.hysteresis.params();
        self.hysteresis = s.hysteresis.adopt(params);
        Ok(s.saved_at)
    }

    /// Whether at least `min_models` models were confirmed (alarm at level 2 or more)
    /// within the window at `now`: the models' alarms escalate to 3–4 after `confirm`
    /// instead of `escalate`.
    pub fn agreed(&self, now: i64) -> bool {
        self.last_confirmed
            .iter()
            .filter(|t| t.is_some_and(|t| now - t <= self.window_ms))
            .count()
            >= self.min_models
    }

    /// One tick: which models were anomalous at `ts`. The host is anomalous at a tick
    /// when at least `min_models` models were anomalous within the window and one of them
    /// is at this tick: the window lets models agree whose anomalies are a little apart,
    /// but only fresh evidence counts as anomalous time (a window that merely has not
    /// expired yet is not evidence). `confirmed`: those of them whose alarm fires at level 2
    /// or more.
    pub fn tick(
        &mut self,
        ts: i64,
        anomalous: impl IntoIterator<Item = usize>,
        confirmed: &[usize],
    ) -> HostTick {
        for &i in confirmed {
            if let Some(t) = self.last_confirmed.get_mut(i) {
                *t = Some(ts);
            }
        }
        let mut fresh = false;
        for i in anomalous {
            if let Some(t) = self.last_anomalous.get_mut(i) {
                *t = Some(ts);
                fresh = true;
            }
        }
        let within: Vec<usize> = (0..self.last_anomalous.len())
            .filter(|&i| self.last_anomalous[i].is_some_and(|t| ts - t <= self.window_ms))
            .collect();
        let n = within.len();
        let agreed = n >= self.min_models;
        let level = (agreed && fresh).then(|| n.min(4) as u8);
        let transition = if self.alarm {
            self.hysteresis.step_agreed(ts, n as f64, level, agreed)
        } else {
            None
        };
        HostTick {
            rate: n as f64 / self.last_anomalous.len().max(1) as f64,
            anomalous: within,
            agreed,
            transition,
        }
    }

    /// The host alarm's episode change at `ts`, naming the models that agree.
    pub fn episode(&self, host: &str, ts: i64, t: Transition, models: &[&str]) -> Episode {
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
        let names = models.join(", ");
        let summary = match state {
            AlarmState::Firing => format!(
                "{host}: {} models anomalous together ({names}), severity {severity}",
                score as usize
            ),
            AlarmState::Resolved => format!("{host}: models agree again that all is normal"),
        };
        let mut labels = lookout_shared::payload::Labels::new();
        labels.insert("scope".into(), "host".into());
        if state == AlarmState::Firing {
            labels.insert("models".into(), names);
        }
        Episode {
            name: NAME.into(),
            source: NAME.into(),
            state,
            severity,
            ts,
            started_at,
            score,
            threshold: self.min_models as f64,
            summary,
            labels,
            dimensions: Vec::new(),
            explain: None,
            window: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::Calm;

    fn judge() -> HostJudge {
        let calm = AlarmParams {
            calm: Calm {
                confirm_ms: 30_000,
                escalate_ms: 300_000,
                hold_ms: 30_000,
                every_ms: 300_000,
            },
            resolve_after: 5,
            ..AlarmParams::with_threshold(1.0)
        };
        HostJudge::new(&HostConfig::default(), 5, calm)
    }

    #[test]
    fn one_model_is_not_the_host_two_within_the_window_are() {
        let mut j = judge();
        let t = j.tick(0, [0], &[]);
        assert!(!t.agreed && t.transition.is_none());
        assert_eq!(t.rate, 0.2);
        for s in 1..40 {
            assert!(!j.tick(s * 1000, [], &[]).agreed);
        }
        let t = j.tick(40_000, [3], &[]);
        assert!(
            t.agreed,
            "model 0 counts for a minute after its last anomalous tick"
        );
        assert!(matches!(
            t.transition,
            Some(Transition::Fired { severity: 1, .. })
        ));
        assert_eq!(t.anomalous, vec![0, 3]);
        // Two models anomalous for long enough: the host alarm reaches its level, 2 (the
        // number of models agreeing), at confirm.
        let mut last = None;
        for s in 41..=75 {
            let t = j.tick(s * 1000, [0, 3], &[]);
            if t.transition.is_some() {
                last = t.transition;
            }
        }
        assert!(
            matches!(last, Some(Transition::Changed { severity: 2, .. })),
            "{last:?}"
        );
        // Quiet for the window and then resolve_after ticks: resolved.
        let mut resolved = false;
        for s in 76..200 {
            resolved |= matches!(
                j.tick(s * 1000, [], &[]).transition,
                Some(Transition::Resolved { .. })
            );
        }
        assert!(resolved);
    }

    /// Models agreeing make the host anomalous (its rate and its own alarm) at once, but
    /// let the models' alarms escalate only once two of them fire at level 2 or more.
    #[test]
    fn escalation_needs_two_confirmed_models_and_survives_a_restart() {
        let mut j = judge();
        let t = j.tick(0, [0, 1], &[]);
        assert!(t.agreed, "the host is anomalous");
        assert!(!j.agreed(0), "but nothing is confirmed yet");
        j.tick(1000, [0, 1], &[0]);
        assert!(!j.agreed(1000), "one confirmed model is one witness");
        j.tick(2000, [0, 1], &[1]);
        assert!(j.agreed(2000), "two within the window");
        assert!(
            j.agreed(61_000) && !j.agreed(62_000),
            "model 0 for a minute after"
        );
        let bytes = j.snapshot(2000);
        let mut k = judge();
        k.restore(&bytes, 5).unwrap();
        assert!(k.agreed(2000));
    }

    #[test]
    fn at_least_two_models_are_needed() {
        let c = HostConfig {
            min_models: 1,
            ..HostConfig::default()
        };
        assert_eq!(c.check().unwrap_err().key, "min_models");
    }
}
