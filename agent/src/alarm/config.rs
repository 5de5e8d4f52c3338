//! The alarm's part of a detector: `[detector.alarm]` (when a score becomes an alarm, how
//! it is graded, which side of normal counts) and `[detector.saturation]` (seed `003`'s
//! saturation logic), as written in the config and as the alarm code runs on them.
//!
//! Every default is written once, in the `Default` impls below; the shipped
//! `configs/agent.toml` spells the same values out (a test keeps them equal).

use lookout_shared::config::Invalid;
use lookout_shared::duration::HumanDuration;
use serde::{Deserialize, Serialize};

use super::{Calm, Direction, Grading, SaturationParams};

/// What kind of metric a model watches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Any score past the threshold is anomalous (subject to `direction`).
    #[default]
    Normal,
    /// Memory, threads, connections: only a climb towards `[detector.saturation] limit`.
    Saturation,
}

/// `[detector.alarm]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlarmConfig {
    /// Score at or above which a tick is anomalous.
    pub threshold: f64,
    /// Consecutive anomalous ticks before an alarm fires.
    #[serde(rename = "for")]
    pub for_ticks: u32,
    /// Consecutive normal ticks before it resolves (and before a lower level is announced).
    pub resolve_after: u32,
    /// ...and for at least this long. At 1 s, `resolve_after` ticks are seconds: a long
    /// incident whose score dips for a moment (a refit, a pause in a backup) would resolve
    /// and fire again, one page per dip. Normal for this long first, it stays one alarm.
    pub resolve_for: HumanDuration,
    /// Ticks after an alarm fires before the same model may fire again.
    pub suppress: u32,
    /// Ticks a model scores after its first fit before it may alarm at all: what it
    /// flags must be out of sample, not the data it has just learned from.
    pub settle: u32,
    /// ...and for at least this long: at 1 s, `settle` ticks are minutes, and a model one
    /// or two fits old has seen too little of its series to tell unusual from new.
    pub settle_for: HumanDuration,
    /// A model that has scored for less than this has not yet seen a whole day of its
    /// series (the nightly backup, the morning load): what it finds unusual may be routine,
    /// so its alarms stay at level 1, information, never a page, and do not count towards
    /// the host's agreement. Saturation models are exempt (a climb towards the limit is
    /// news on the first day too). "0s": off.
    pub young_for: HumanDuration,
    /// A dimension unchanged for at least this long, and for more than twice its longest
    /// normal run, is stuck (`alarm::flat`); "0s": off.
    pub flat: HumanDuration,
    /// A dimension whose mean change over this window is more than 2.5 times that of a
    /// typical hour's roughest minute, for half the window, is restless (`alarm::rough`):
    /// an oscillation inside the normal range. Off when the window holds fewer than 10
    /// ticks at the model's interval; at most 600 ticks. "0s": off.
    pub rough: HumanDuration,
    /// Graded severity (seed `003`): tolerance band and step beyond the learned bound.
    pub t2: f64,
    pub step: f64,
    /// Calm severity (`alarm::calm`): anomalous time before level 2, before level 3–4,
    /// how long a new level must hold, and the least time between two changes in one
    /// direction.
    pub confirm: HumanDuration,
    pub escalate: HumanDuration,
    pub hold: HumanDuration,
    pub every: HumanDuration,
    pub direction: Direction,
    pub kind: Kind,
}

impl Default for AlarmConfig {
    fn default() -> Self {
        Self {
            threshold: 1.75,
            for_ticks: 1,
            resolve_after: 5,
            resolve_for: HumanDuration::from_secs(0),
            suppress: 288,
            settle: 360,
            settle_for: HumanDuration::from_secs(3600),
            young_for: HumanDuration::from_secs(86_400),
            flat: HumanDuration::from_secs(60),
            rough: HumanDuration::from_secs(60),
            t2: 0.2,
            step: 0.2,
            confirm: HumanDuration::from_secs(30),
            escalate: HumanDuration::from_secs(300),
            hold: HumanDuration::from_secs(30),
            every: HumanDuration::from_secs(300),
            direction: Direction::Both,
            kind: Kind::Normal,
        }
    }
}

/// `[detector.saturation]`: used when `[detector.alarm] kind = "saturation"`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaturationConfig {
    /// The metric's hard limit (100 for a percentage); required for saturation models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// Level 3 above this percentage of the limit after `rises_near_limit` rises...
    pub pct: f64,
    /// ...within this window; else level 2 after more than `rises_level2` rises and level
    /// 3 after more than `rises_level3`.
    pub window: HumanDuration,
    /// A rise is a step of this length whose mean is above the previous step's ("0s":
    /// every tick is a step): at 1 s, noise near a limit would otherwise be many rises.
    pub step: HumanDuration,
    pub rises_near_limit: u32,
    pub rises_level2: u32,
    pub rises_level3: u32,
}

impl Default for SaturationConfig {
    fn default() -> Self {
        Self {
            limit: None,
            pct: 70.0,
            window: HumanDuration::from_secs(300),
            step: HumanDuration::from_secs(30),
            rises_near_limit: 2,
            rises_level2: 3,
            rises_level3: 5,
        }
    }
}

/// When an anomalous score becomes an alarm and when it ends: the resolved form of
/// [`AlarmConfig`] and [`SaturationConfig`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlarmParams {
    pub threshold: f64,
    /// Consecutive anomalous ticks before firing.
    pub for_ticks: u32,
    /// Consecutive normal ticks before resolving, and the time they must span.
    pub resolve_after: u32,
    pub resolve_for_ms: i64,
    /// Ticks after an alarm fires during which the same model does not fire again.
    pub suppress: u32,
    /// Ticks scored after the first fit before any may be anomalous, and the time.
    pub settle: u32,
    pub settle_for_ms: i64,
    /// Milliseconds a dimension must be unchanged to be stuck (0: off).
    pub flat_ms: i64,
    /// A tick is also anomalous when this share of the last ticks had unseen contexts.
    pub context_threshold: f64,
    /// Severity levels above the threshold (seed `003`).
    pub grading: Grading,
    /// How a firing alarm's level may move.
    pub calm: Calm,
    pub direction: Direction,
    /// Set for `kind = "saturation"` models.
    pub saturation: Option<SaturationParams>,
}

impl AlarmParams {
    /// Threshold only: no hysteresis, suppression, direction or saturation; the seed's
    /// grading. For tests and tools that judge bare scores.
    pub fn with_threshold(threshold: f64) -> Self {
        Self {
            threshold,
            for_ticks: 1,
            resolve_after: 1,
            resolve_for_ms: 0,
            suppress: 0,
            settle: 0,
            settle_for_ms: 0,
            flat_ms: 0,
            context_threshold: 1.0,
            grading: Grading::default(),
            calm: Calm::default(),
            direction: Direction::Both,
            saturation: None,
        }
    }

    /// Checks both tables and resolves them. Keys in errors are relative to the detector
    /// table (`alarm.t2`, `saturation.limit`). `context_threshold` comes from the
    /// detector's context table, checked there.
    pub fn resolve(
        alarm: &AlarmConfig,
        saturation: &SaturationConfig,
        context_threshold: f64,
    ) -> Result<Self, Invalid> {
        let a = alarm;
        let checks: [(&str, bool, &str); 6] = [
            (
                "alarm.threshold",
                a.threshold.is_finite(),
                "must be a finite number",
            ),
            ("alarm.for", a.for_ticks >= 1, "must be at least 1 tick"),
            (
                "alarm.resolve_after",
                a.resolve_after >= 1,
                "must be at least 1 tick",
            ),
            (
                "alarm.t2",
                (0.0..0.4).contains(&a.t2),
                "must be at least 0 and below 0.4",
            ),
            (
                "alarm.step",
                a.step.is_finite() && a.step > 0.0,
                "must be above 0",
            ),
            (
                "saturation.pct",
                saturation.pct > 0.0 && saturation.pct <= 100.0,
                "must be above 0 and at most 100",
            ),
        ];
        if let Some((key, _, why)) = checks.iter().find(|(_, ok, _)| !ok) {
            return Err(Invalid::new(*key, why));
        }
        let saturation = match a.kind {
            Kind::Normal => None,
            Kind::Saturation => match saturation.limit {
                Some(limit) if limit.is_finite() && limit > 0.0 => Some(SaturationParams {
                    limit,
                    pct: saturation.pct / 100.0,
                    window_ms: saturation.window.0.as_millis() as i64,
                    step_ms: saturation.step.0.as_millis() as i64,
                    rises_near_limit: saturation.rises_near_limit,
                    rises_level2: saturation.rises_level2,
                    rises_level3: saturation.rises_level3,
                }),
                _ => {
                    return Err(Invalid::new(
                        "saturation.limit",
                        "kind = \"saturation\" needs a limit above 0",
                    ));
                }
            },
        };
        Ok(Self {
            threshold: a.threshold,
            for_ticks: a.for_ticks,
            resolve_after: a.resolve_after,
            resolve_for_ms: a.resolve_for.0.as_millis() as i64,
            suppress: a.suppress,
            settle: a.settle,
            settle_for_ms: a.settle_for.0.as_millis() as i64,
            flat_ms: a.flat.0.as_millis() as i64,
            context_threshold,
            grading: Grading {
                t2: a.t2,
                step: a.step,
            },
            calm: Calm {
                confirm_ms: a.confirm.0.as_millis() as i64,
                escalate_ms: a.escalate.0.as_millis() as i64,
                hold_ms: a.hold.0.as_millis() as i64,
                every_ms: a.every.0.as_millis() as i64,
            },
            direction: a.direction,
            saturation,
        })
    }
}
