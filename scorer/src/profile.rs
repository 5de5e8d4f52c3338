//! Daily seasonality: what is expected at this time of day (seed `004`'s "mean day", and
//! the periodicity of seed `003`'s detectors). A backup at 02:00, the morning load, a cron
//! job: each is new to a model that remembers minutes, every day, and would alarm every
//! day. The profile remembers, per half hour of the (UTC) day and for each of the last
//! [`DAYS`] days, the highest score of the model's anomalous ticks in it.
//!
//! An anomalous tick is expected when its half hour (or the one before or after it, for
//! jobs that start a little earlier or run a little longer) was anomalous on at least two
//! of the last [`DAYS`] completed days, and its score is at most [`WORSE`] times the
//! second-highest of those days' scores: the nightly job, not the nightly job gone wrong.
//! "Two days" is the point: what recurs at that time is expected, a one-off fault is not
//! excused by having happened once. So a nightly job stops alarming on the third night.
//!
//! The model's own anomalies, not its values, are remembered: a series without a daily
//! pattern, or whose anomalies are one-offs, is never excused, and nothing needs to be
//! decided about whether a series "is seasonal". Memory: `(DAYS + 1) × 48` floats per
//! model, fixed at start.

use serde::{Deserialize, Serialize};

/// Completed days kept.
pub const DAYS: usize = 3;
/// Bins per day (half hours).
pub const BINS: usize = 48;
/// How much worse than on earlier days an expected anomaly may be.
pub const WORSE: f64 = 1.5;

const DAY_MS: i64 = 86_400_000;
const BIN_MS: i64 = DAY_MS / BINS as i64;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Profile {
    /// `[slot][bin]`, slot = day % (DAYS + 1): the highest anomalous score, 0 for none.
    peaks: Vec<f32>,
    /// The day (since the epoch) the current slot belongs to; `None` before any tick.
    day: Option<i64>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            peaks: vec![0.0; (DAYS + 1) * BINS],
            day: None,
        }
    }
}

impl Profile {
    fn at(slot: usize, bin: usize) -> usize {
        slot * BINS + bin
    }

    fn slot(day: i64) -> usize {
        day.rem_euclid(DAYS as i64 + 1) as usize
    }

    /// Learns one tick at `ts` (Unix ms): its score when the model found it anomalous.
    /// Expected anomalies are learned too, so that a recurring job stays expected.
    pub fn observe(&mut self, ts: i64, anomalous: Option<f64>) {
        let day = ts.div_euclid(DAY_MS);
        match self.day {
            Some(d) if d == day => {}
            Some(d) if day < d => return, // time went back: learn nothing
            _ => {
                // A new day takes the oldest slot; days skipped are forgotten.
                let skipped = self
                    .day
                    .map_or(DAYS as i64 + 1, |d| (day - d).min(DAYS as i64 + 1));
                for k in 0..skipped {
                    let s = Self::slot(day - k);
                    self.peaks[Self::at(s, 0)..Self::at(s, 0) + BINS].fill(0.0);
                }
                self.day = Some(day);
            }
        }
        if let Some(score) = anomalous {
            let i = Self::at(Self::slot(day), (ts.rem_euclid(DAY_MS) / BIN_MS) as usize);
            self.peaks[i] = self.peaks[i].max(score.max(f64::MIN_POSITIVE) as f32);
        }
    }

    /// Whether an anomalous tick of `score` at `ts` is expected at this time of day.
    pub fn is_expected(&self, ts: i64, score: f64) -> bool {
        let Some(today) = self.day else {
            return false;
        };
        let bin = ts.rem_euclid(DAY_MS) / BIN_MS;
        let mut peaks = [0.0f32; DAYS];
        for (k, peak) in peaks.iter_mut().enumerate() {
            let slot = Self::slot(today - 1 - k as i64);
            for b in [bin - 1, bin, bin + 1] {
                // Neighbours across midnight belong to the neighbouring day; close enough.
                let b = b.rem_euclid(BINS as i64) as usize;
                *peak = peak.max(self.peaks[Self::at(slot, b)]);
            }
        }
        peaks.sort_by(|a, b| b.total_cmp(a));
        let second = f64::from(peaks[1]);
        second > 0.0 && score <= WORSE * second
    }

    pub fn heap_bytes(&self) -> usize {
        self.peaks.len() * std::mem::size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    /// A day whose 02:00–02:30 is anomalous at `score` (none when 0).
    fn day(p: &mut Profile, d: i64, score: f64) {
        for m in 0..(24 * 60) {
            let anomalous = ((120..150).contains(&m) && score > 0.0).then_some(score);
            p.observe(d * DAY_MS + m * MIN, anomalous);
        }
    }

    fn at(d: i64, minute: i64) -> i64 {
        d * DAY_MS + minute * MIN
    }

    #[test]
    fn a_nightly_job_is_expected_from_the_third_night_and_worse_is_not() {
        let mut p = Profile::default();
        day(&mut p, 0, 3.0);
        p.observe(at(1, 0), None);
        assert!(
            !p.is_expected(at(1, 130), 3.0),
            "second night: once is not a pattern"
        );
        day(&mut p, 1, 3.0);
        p.observe(at(2, 0), None);
        assert!(p.is_expected(at(2, 130), 3.0), "third night: expected");
        assert!(
            p.is_expected(at(2, 95), 3.0),
            "a little early: the bin before"
        );
        assert!(!p.is_expected(at(2, 200), 3.0), "not at 03:20");
        assert!(
            !p.is_expected(at(2, 130), 5.0),
            "the job gone wrong is not expected"
        );
    }

    #[test]
    fn a_one_off_is_never_expected_and_old_days_are_forgotten() {
        let mut p = Profile::default();
        day(&mut p, 0, 0.0);
        day(&mut p, 1, 4.0);
        day(&mut p, 2, 0.0);
        p.observe(at(3, 0), None);
        assert!(!p.is_expected(at(3, 130), 4.0));
        let mut q = Profile::default();
        day(&mut q, 0, 3.0);
        day(&mut q, 1, 3.0);
        q.observe(at(9, 0), None);
        assert!(
            !q.is_expected(at(9, 130), 3.0),
            "a week off: nothing recent"
        );
        q.observe(at(2, 0), Some(9.0));
        assert!(
            !q.is_expected(at(9, 130), 3.0),
            "time going back teaches nothing"
        );
    }
}
