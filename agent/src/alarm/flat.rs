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
//! period does not teach that being stuck is normal.

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
}

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
                flat |= self.flat_ms > 0
                    && changes_by_nature
                    && run >= self.flat_ms
                    && run >= MIN_TICKS * dt
                    && run > 2 * d.normal_ms;
                continue;
            }
            // A run is learned when it ends, so that a stuck run, alarming by then, is not.
            if d.last.is_finite() && learn {
                d.normal_ms = d.normal_ms.max(self.prev_ts - d.since);
                d.repeats += d.run_repeats;
            }
            d.last = v;
            d.since = ts;
            d.run_repeats = 0;
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

    #[test]
    fn off_is_off() {
        let mut f = Flat::new(0, 1);
        assert!((0..1000).all(|t| !f.observe(t * S, &[1.0], true)));
    }
}
