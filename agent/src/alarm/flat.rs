//! Flat lines: a sensor or collector that is stuck repeats its last reading exactly, and a
//! distance-based score cannot see it (a repeated ordinary value is close to normal). So
//! for each dimension the time its value has not changed is measured against the longest
//! such time seen while the model was not alarming: a dimension unchanged for at least
//! `flat` and for more than twice its longest normal run is flat, and the tick anomalous.
//!
//! Only a dimension that changes at (almost) every tick can look flat: one that repeats
//! values in more than 1 % of its normal ticks (an idle disk writing 0 bytes, a rounded
//! percentage, an error counter at 0 for hours) repeats by nature, and a long repeat is
//! nothing new for it. A run that ends while the model alarms is not learned, so a stuck
//! period does not teach that being stuck is normal; nor is a run that was flat at any of
//! its ticks, even if no alarm was firing when it ended (its alarm was held back by
//! `suppress`, or resolved): one missed stuck sensor or collector dropout would otherwise
//! teach a run twice as long is normal, and the next would be missed too. Only an operator
//! (or `train.accept_after`) makes such a run normal, through [`Flat::accept`].

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Dim {
    last: f64,
    /// When the current run of equal values began, and its repeats so far.
    since: i64,
    run_repeats: u64,
    /// The longest run (ms) that ended while not alarming.
    normal_ms: i64,
    /// Ticks while not alarming, and how many of them repeated the previous value.
    ticks: u64,
    repeats: u64,
    /// The current run was flat at some tick. Kept out of `Dim`'s serialized layout, which
    /// snapshot formats 3 and 4 fix; a snapshot carries it in [`Flat::marks`].
    #[serde(skip)]
    flagged: bool,
    /// The operator accepted the current run as normal: not flat until it ends, then learned.
    #[serde(skip)]
    accepted: bool,
}

const FLAGGED: u8 = 1;
const ACCEPTED: u8 = 2;

/// Share of repeated values above which a dimension repeats by nature.
const REPEATS_BY_NATURE: f64 = 0.01;

/// A run must also be this many ticks: at a 5-minute interval two equal readings are not
/// a stuck sensor yet.
const MIN_TICKS: i64 = 10;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flat {
    /// 0: off.
    flat_ms: i64,
    dims: Vec<Dim>,
    /// Time of the previous tick (a run lasts until the tick before the change).
    prev_ts: i64,
}

impl Flat {
    pub fn new(flat_ms: i64, n_dims: usize) -> Self {
        Self {
            flat_ms,
            dims: vec![
                Dim {
                    last: f64::NAN,
                    since: 0,
                    run_repeats: 0,
                    normal_ms: 0,
                    ticks: 0,
                    repeats: 0,
                    flagged: false,
                    accepted: false,
                };
                n_dims
            ],
            prev_ts: 0,
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.dims.len() * std::mem::size_of::<Dim>()
    }

    /// The same memory with today's setting.
    pub fn adopt(self, flat_ms: i64) -> Self {
        Self { flat_ms, ..self }
    }

    /// Each dimension's current run's marks (flat at some tick, accepted), for a snapshot.
    pub fn marks(&self) -> Vec<u8> {
        self.dims
            .iter()
            .map(|d| (u8::from(d.flagged) * FLAGGED) | (u8::from(d.accepted) * ACCEPTED))
            .collect()
    }

    /// Takes back [`Flat::marks`]; marks for another number of dimensions are ignored.
    pub fn set_marks(&mut self, marks: &[u8]) {
        if marks.len() != self.dims.len() {
            return;
        }
        for (d, &m) in self.dims.iter_mut().zip(marks) {
            d.flagged = m & FLAGGED != 0;
            d.accepted = m & ACCEPTED != 0;
        }
    }

    /// What every dimension repeats now is normal (a relearn order): the current runs are
    /// not flat however long they last, and are learned when they end.
    pub fn accept(&mut self) {
        for d in &mut self.dims {
            d.flagged = false;
            d.accepted = true;
        }
    }

    /// Feeds one tick's values; `learn`: runs that end now may teach what is normal (the
    /// model is not alarming). Returns whether a dimension is flat.
    pub fn observe(&mut self, ts: i64, values: &[f64], learn: bool) -> bool {
        let mut flat = false;
        let dt = (ts - self.prev_ts).max(1);
        for (d, &v) in self.dims.iter_mut().zip(values) {
            if learn {
                d.ticks += 1;
            }
            if v == d.last {
                d.run_repeats += 1;
                let run = ts - d.since;
                let changes_by_nature = (d.repeats as f64) < REPEATS_BY_NATURE * d.ticks as f64;
                let stuck = self.flat_ms > 0
                    && !d.accepted
                    && changes_by_nature
                    && run >= self.flat_ms
                    && run >= MIN_TICKS * dt
                    && run > 2 * d.normal_ms;
                d.flagged |= stuck;
                flat |= stuck;
                continue;
            }
            // A run is learned when it ends, so that a stuck run, alarming by then or flat
            // at some tick, is not. Its repeats still count towards the share that tells a
            // series repeating by nature (its first long run is flat, and must not stay so).
            if d.last.is_finite() {
                if d.accepted || (learn && !d.flagged) {
                    d.normal_ms = d.normal_ms.max(self.prev_ts - d.since);
                }
                if d.accepted || learn {
                    d.repeats += d.run_repeats;
                }
            }
            d.last = v;
            d.since = ts;
            d.run_repeats = 0;
            d.flagged = false;
            d.accepted = false;
        }
        self.prev_ts = ts;
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    #[test]
    fn a_frozen_value_is_flat_after_the_setting_and_twice_the_longest_normal_run() {
        let mut f = Flat::new(60 * S, 2);
        // Normal: dimension 1 repeats for up to 10 s at a time.
        for t in 0..600 {
            let v = [t as f64, (t / 10) as f64];
            assert!(!f.observe(t * S, &v, true), "tick {t}");
        }
        // Dimension 0 freezes at t = 600.
        let mut first = None;
        for t in 600..800 {
            if f.observe(t * S, &[600.0, (t / 10) as f64], true) && first.is_none() {
                first = Some(t);
            }
        }
        assert_eq!(first, Some(660), "flat after 60 s");
    }

    #[test]
    fn constant_by_nature_is_learned_and_a_stuck_run_is_not() {
        let mut f = Flat::new(60 * S, 1);
        // Zero for 5 minutes at a time, normally.
        for t in 0..3000 {
            let v = if (t / 300) % 2 == 0 { 0.0 } else { t as f64 };
            f.observe(t * S, &[v], true);
        }
        for t in 3000..3500 {
            assert!(
                !f.observe(t * S, &[0.0], true),
                "a 5-minute zero run is normal: {t}"
            );
        }
        // A run that ends while alarming does not teach.
        let mut g = Flat::new(60 * S, 1);
        for t in 0..100 {
            g.observe(t * S, &[t as f64], true);
        }
        for t in 100..500 {
            g.observe(t * S, &[1.0], false);
        }
        g.observe(500 * S, &[2.0], false);
        for t in 501..600 {
            g.observe(t * S, &[t as f64], true);
        }
        let flat_at = (600..800).find(|&t| g.observe(t * S, &[5.0], true));
        assert_eq!(flat_at, Some(660));
    }

    /// The seed-2 fleet's misses: a collector dropout (zeros for 90 s) whose alarm was held
    /// back taught that 90 s of one value is normal, and the stuck sensor of 150 s after it
    /// was never flat.
    #[test]
    fn a_flat_run_is_not_learned_even_when_no_alarm_fired() {
        let mut f = Flat::new(60 * S, 1);
        // Five hours of a value that changes at every tick: 90 repeats are well under 1 %.
        let day = 5 * 3600;
        for t in 0..day {
            f.observe(t * S, &[t as f64], true);
        }
        // The dropout: flat from its 60th second, ending while nothing fires.
        let hits = (day..day + 90)
            .filter(|&t| f.observe(t * S, &[0.0], true))
            .count();
        assert_eq!(hits, 30);
        for t in day + 90..day + 600 {
            f.observe(t * S, &[t as f64], true);
        }
        let start = day + 600;
        let flat_at = (start..start + 200).find(|&t| f.observe(t * S, &[7.0], true));
        assert_eq!(flat_at, Some(start + 60), "the dropout was not learned");
        // Across a snapshot, the mark of the run in progress is kept.
        let marks = f.marks();
        let mut g = Flat::new(60 * S, 1);
        g.set_marks(&marks);
        assert_eq!(g.marks(), marks);
    }

    #[test]
    fn an_accepted_run_is_not_flat_and_is_learned_when_it_ends() {
        let mut f = Flat::new(60 * S, 1);
        for t in 0..600 {
            f.observe(t * S, &[t as f64], true);
        }
        assert!((600..700).any(|t| f.observe(t * S, &[3.0], true)));
        f.accept();
        assert!((700..2000).all(|t| !f.observe(t * S, &[3.0], true)));
        for t in 2000..2100 {
            f.observe(t * S, &[t as f64], true);
        }
        // A run up to twice the accepted one (1,400 s) is normal now.
        assert!((2100..3000).all(|t| !f.observe(t * S, &[4.0], true)));
    }

    #[test]
    fn off_is_off() {
        let mut f = Flat::new(0, 1);
        assert!((0..1000).all(|t| !f.observe(t * S, &[1.0], true)));
    }
}
