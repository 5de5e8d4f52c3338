//! Calm severity: how a firing alarm's severity is allowed to move, so that a pager sees
//! one message per real change and not one per wobble of the score.
//!
//! - **Evidence caps the level.** An episode starts at level 1 (information). It may reach
//!   level 2 once it has been anomalous for `confirm` in total, and levels 3–4 once it has
//!   been anomalous for `escalate`, or for `confirm` while at least two of the host's
//!   models (this one included) fire at level 2 or more (`decide::host`). A single short
//!   excursion is therefore level 1 however high its score was; the graded level (seed
//!   `003`) says how bad, the evidence says how sure.
//! - **Evidence must be recent to raise.** A gap of normal ticks longer than `hold`
//!   restarts the evidence a rise needs: an alarm kept open across a dip (`resolve_for`)
//!   does not climb to level 2 on blips minutes apart, each too short to mean anything.
//! - **A new level must hold.** The announced level follows the level most of the last
//!   `hold` was at: it rises to the lower quartile of the anomalous ticks' levels over
//!   that window and falls to their upper quartile, so a score that flickers between two
//!   bands changes nothing, and a few ticks just past the threshold do not hold a real
//!   incident at level 1.
//! - **At most one change per direction per `every`.**
//!
//! Time is the ticks' own (`ts`), so the rules read the same at 1 s and at 5 min: at 5 min
//! one anomalous tick is already 5 minutes of evidence.

use heapless::HistoryBuf;
use serde::{Deserialize, Serialize};

/// Ticks the hold window can look back over; a longer `hold` at a short interval sees the
/// last this-many ticks.
pub const HOLD_TICKS: usize = 64;

/// The policy's durations, in milliseconds; all zero: the graded level at once, every
/// change announced (no calm).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calm {
    pub confirm_ms: i64,
    pub escalate_ms: i64,
    pub hold_ms: i64,
    pub every_ms: i64,
}

/// One firing episode's severity.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Level {
    /// The level announced last.
    announced: u8,
    /// Anomalous time in this episode.
    anomalous_ms: i64,
    /// Anomalous time since the last gap longer than `hold`: the evidence a rise needs.
    streak_ms: i64,
    /// The last anomalous tick.
    last_anomalous: i64,
    /// Recent anomalous ticks: time and graded level.
    recent: HistoryBuf<(i64, u8), HOLD_TICKS>,
    last_up: Option<i64>,
    last_down: Option<i64>,
}

impl Calm {
    /// The highest level `anomalous_ms` of evidence allows.
    fn cap(&self, anomalous_ms: i64, agreed: bool) -> u8 {
        if anomalous_ms >= self.escalate_ms || (agreed && anomalous_ms >= self.confirm_ms) {
            4
        } else if anomalous_ms >= self.confirm_ms {
            2
        } else {
            1
        }
    }
}

impl Level {
    /// The episode's first tick: `dt_ms` of anomalous time, at `level`. Returns the level
    /// it fires at.
    pub fn fire(calm: &Calm, ts: i64, dt_ms: i64, level: u8, agreed: bool) -> Self {
        let mut recent = HistoryBuf::new();
        recent.write((ts, level));
        let announced = level.min(calm.cap(dt_ms, agreed)).max(1);
        Self {
            announced,
            anomalous_ms: dt_ms,
            streak_ms: dt_ms,
            last_anomalous: ts,
            recent,
            last_up: None,
            last_down: None,
        }
    }

    pub fn announced(&self) -> u8 {
        self.announced
    }

    /// A tick of a firing episode: `level` is the tick's graded level, `None` when the tick
    /// was not anomalous, and `dt_ms` the time since the previous tick. Returns the new
    /// level when it changes. A tick that is not anomalous changes nothing: the episode is
    /// on its way to resolving (hysteresis decides when), and a fall to level 1 just
    /// before the resolution would only be one more message.
    pub fn step(
        &mut self,
        calm: &Calm,
        ts: i64,
        dt_ms: i64,
        level: Option<u8>,
        agreed: bool,
    ) -> Option<u8> {
        let level = level?;
        self.anomalous_ms = self.anomalous_ms.saturating_add(dt_ms.max(0));
        let gap = ts - self.last_anomalous;
        self.last_anomalous = ts;
        self.streak_ms = if gap > calm.hold_ms.max(dt_ms) {
            dt_ms.max(0)
        } else {
            self.streak_ms.saturating_add(dt_ms.max(0))
        };
        self.recent.write((ts, level.max(1)));
        let since = ts - calm.hold_ms;
        let mut levels = [0u8; HOLD_TICKS];
        let mut n = 0;
        for &(t, l) in self.recent.oldest_ordered() {
            let inside = if calm.hold_ms == 0 {
                t == ts
            } else {
                t > since
            };
            if inside {
                levels[n] = l;
                n += 1;
            }
        }
        let levels = &mut levels[..n.max(1)];
        levels.sort_unstable();
        // The lower and upper quartiles: a level most of the window held, not one tick's.
        let m = n.max(1);
        let (lo, hi) = (levels[(m - 1) / 4], levels[m - 1 - (m - 1) / 4]);
        // The window must cover `hold` (or all the ticks it can keep) before a change.
        let oldest = self.recent.oldest_ordered().next().map_or(ts, |(t, _)| *t);
        let covered =
            calm.hold_ms == 0 || ts - oldest >= calm.hold_ms || self.recent.len() == HOLD_TICKS;
        let up = lo.min(calm.cap(self.streak_ms, agreed));
        let cap = calm.cap(self.anomalous_ms, agreed);
        let may = |last: Option<i64>| last.is_none_or(|t| ts - t >= calm.every_ms);
        // Rising needs the level to have held: all of the window at or above it.
        if up > self.announced && covered && may(self.last_up) {
            self.announced = up;
            self.last_up = Some(ts);
            return Some(up);
        }
        let down = hi.min(cap).max(1);
        if down < self.announced && covered && may(self.last_down) {
            self.announced = down;
            self.last_down = Some(ts);
            return Some(down);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn calm() -> Calm {
        Calm {
            confirm_ms: 30 * S,
            escalate_ms: 300 * S,
            hold_ms: 30 * S,
            every_ms: 300 * S,
        }
    }

    /// Feeds `levels` one second apart from t = 0 (the first fires); returns the changes.
    fn run(levels: &[Option<u8>], agreed: bool) -> (u8, Vec<(i64, u8)>) {
        let c = calm();
        let mut l = Level::fire(&c, 0, S, levels[0].unwrap_or(1), agreed);
        let first = l.announced();
        let mut changes = Vec::new();
        for (i, lv) in levels.iter().enumerate().skip(1) {
            let ts = i as i64 * S;
            if let Some(n) = l.step(&c, ts, S, *lv, agreed) {
                changes.push((ts / S, n));
            }
        }
        (first, changes)
    }

    #[test]
    fn a_short_excursion_stays_at_level_1_whatever_its_score() {
        let (first, changes) = run(&[Some(4); 20], false);
        assert_eq!((first, changes), (1, vec![]));
    }

    #[test]
    fn persistence_raises_to_2_after_confirm_and_to_4_after_escalate_once_each() {
        let (first, changes) = run(&[Some(4); 400], false);
        assert_eq!(first, 1);
        assert_eq!(
            changes,
            vec![(30, 2), (330, 4)],
            "2 at 30 s of evidence; 4 once the rate limit allows"
        );
    }

    #[test]
    fn agreement_of_the_host_escalates_at_confirm() {
        let (_, changes) = run(&[Some(4); 60], true);
        assert_eq!(changes, vec![(30, 4)]);
    }

    #[test]
    fn a_flickering_score_does_not_flap_the_severity() {
        // 3, 4, 3, 4 ... for ten minutes: one rise to 2, then to 3 (the lower quartile of
        // the window), never back and forth.
        let levels: Vec<Option<u8>> = (0..600)
            .map(|i| Some(if i % 2 == 0 { 3 } else { 4 }))
            .collect();
        let (_, changes) = run(&levels, false);
        assert_eq!(changes, vec![(30, 2), (330, 3)]);
    }

    #[test]
    fn a_lower_level_is_announced_once_it_has_held_and_not_twice_in_five_minutes() {
        let mut levels = vec![Some(4); 400];
        levels.extend(vec![Some(2); 100]);
        levels.extend(vec![Some(1); 100]);
        let (_, changes) = run(&levels, false);
        assert_eq!(
            changes,
            vec![(30, 2), (330, 4), (422, 2)],
            "down to 2 once three quarters of the last 30 s were; the next fall waits"
        );
    }

    #[test]
    fn a_few_ticks_just_past_the_threshold_do_not_hold_an_incident_at_level_1() {
        let levels: Vec<Option<u8>> = (0..60)
            .map(|i| Some(if i % 5 == 0 { 1 } else { 3 }))
            .collect();
        let (_, changes) = run(&levels, false);
        assert_eq!(changes, vec![(30, 2)]);
    }

    #[test]
    fn blips_minutes_apart_in_one_open_episode_stay_at_level_1() {
        // Five anomalous ticks every two minutes for twenty minutes: 50 s of anomalous
        // time in all, never 30 s without a gap longer than `hold`.
        let levels: Vec<Option<u8>> = (0..1200).map(|i| (i % 120 < 5).then_some(4)).collect();
        let (first, changes) = run(&levels, false);
        assert_eq!((first, changes), (1, vec![]));
    }

    #[test]
    fn a_dip_shorter_than_hold_keeps_the_evidence() {
        let mut levels = vec![Some(4); 20];
        levels.extend(vec![None; 10]);
        levels.extend(vec![Some(4); 20]);
        let (_, changes) = run(&levels, false);
        assert_eq!(
            changes,
            vec![(39, 2)],
            "ticks 0-19 and 30-39: 30 s of evidence"
        );
    }

    #[test]
    fn without_calm_the_graded_level_is_announced_at_once() {
        let c = Calm::default();
        let mut l = Level::fire(&c, 0, S, 3, false);
        assert_eq!(l.announced(), 3);
        assert_eq!(l.step(&c, S, S, Some(4), false), Some(4));
        assert_eq!(l.step(&c, 2 * S, S, Some(2), false), Some(2));
    }
}
