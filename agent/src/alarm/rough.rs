//! Restless series: an oscillation (a control loop hunting, a service flapping, a pump
//! cavitating) keeps every value inside its normal range and every few ticks' shape
//! ordinary, so neither the distance score nor the flat-line check sees it. What changes
//! is how much the series moves. For each dimension, its roughness is the mean absolute
//! change of its 3-tick average over the last `rough` (60 s: 60 ticks at 1 s); it is
//! measured against the roughest minute of a typical hour, the median over the last
//! [`HOURS`] hours of each hour's largest roughness. A dimension whose roughness has been
//! more than [`FACTOR`] times that for half the window is restless, and the tick anomalous.
//!
//! Why these choices:
//! - The 3-tick average takes out sampling jitter, which would otherwise dominate the
//!   sum of changes; a movement with a period of 10 s or more passes almost whole.
//! - Each change counts at most [`CAP`] times the bar, so a step or a spike, a few large
//!   changes, moves the window's mean by a fraction of the bar: a level shift or a blip
//!   is the distance score's to see, not this check's. An oscillation adds four times its
//!   amplitude every period, at every tick of it, for as long as it lasts.
//! - Each hour's maximum, not its typical value, because a host's normal work comes in
//!   bursts; the median of a day of them, because one rough hour (a nightly job, a fault
//!   that slipped in before it was flagged) must not set the bar for the next day.
//! - Learning leaves out the ticks within a window of a restless one, so a long
//!   oscillation does not teach that it is normal; [`Rough::forget`] is what a relearn
//!   order does.
//! - Nothing is judged before [`MIN_HOURS`] hours are known, nor for a dimension whose
//!   typical hour never moves (a counter at 0): any movement is new there, and that is the
//!   distance score's to judge.
//!
//! Memory per dimension: the window's changes (`f32`, at most [`MAX_WINDOW`]) and
//! [`HOURS`] hourly maxima, fixed at start.

use serde::{Deserialize, Serialize};

/// Hourly maxima kept: a day.
pub const HOURS: usize = 24;
/// Finished hours needed before a dimension is judged.
pub const MIN_HOURS: usize = 3;
/// How much rougher than the roughest minute of a typical hour is restless.
pub const FACTOR: f64 = 2.5;
/// The most one tick's change counts, in bars: a spike of a few ticks moves the window's
/// mean by at most a few CAP / window bars (0.4 bar for 6 changes in 60 ticks), so only a
/// movement that lasts can reach [`FACTOR`].
pub const CAP: f64 = 4.0;
/// Fewer ticks than this in the window and the check is off: at a 10 s interval a 60 s
/// window holds 6 changes, and oscillations faster than the interval alias away anyway.
pub const MIN_WINDOW: usize = 10;
/// The most ticks a window may hold (10 minutes at 1 s), which bounds the memory.
pub const MAX_WINDOW: usize = 600;

const HOUR_MS: i64 = 3_600_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Dim {
    /// The last three values, for the 3-tick average; `seen` counts up to 3.
    recent: [f64; 3],
    seen: u8,
    /// The previous tick's 3-tick average.
    avg: f64,
    /// |change of the average| at each of the last `window` ticks, a ring at `at`.
    changes: Vec<f32>,
    filled: usize,
    sum: f64,
    /// Consecutive ticks over the bar, and ticks since the dimension was last restless.
    over: usize,
    calm: usize,
    /// The hour in progress's largest learned roughness (negative: none yet).
    hour_max: f64,
    /// Finished hours' maxima, a ring of at most [`HOURS`] at `hour_at`.
    hours: Vec<f32>,
    hour_at: usize,
    /// Their median once there are [`MIN_HOURS`] and it is above 0: what is judged
    /// against, kept so that it is not recomputed at every tick.
    bar: Option<f64>,
}

impl Dim {
    fn new(window: usize) -> Self {
        Self {
            recent: [0.0; 3],
            seen: 0,
            avg: 0.0,
            changes: vec![0.0; window],
            filled: 0,
            sum: 0.0,
            over: 0,
            calm: usize::MAX,
            hour_max: -1.0,
            hours: Vec::with_capacity(HOURS),
            hour_at: 0,
            bar: None,
        }
    }

    /// The median of the known hours' maxima, once there are enough of them.
    fn median(&self) -> Option<f64> {
        if self.hours.len() < MIN_HOURS {
            return None;
        }
        let mut h: Vec<f32> = self.hours.clone();
        h.sort_by(f32::total_cmp);
        let n = h.len();
        let median = if n % 2 == 1 {
            f64::from(h[n / 2])
        } else {
            (f64::from(h[n / 2 - 1]) + f64::from(h[n / 2])) / 2.0
        };
        (median > 0.0).then_some(median)
    }

    fn close_hour(&mut self) {
        if self.hour_max < 0.0 {
            return;
        }
        let v = self.hour_max as f32;
        if self.hours.len() < HOURS {
            self.hours.push(v);
        } else {
            self.hours[self.hour_at] = v;
        }
        self.hour_at = (self.hour_at + 1) % HOURS;
        self.hour_max = -1.0;
        self.bar = self.median();
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rough {
    /// Ticks in the window; 0: off.
    window: usize,
    dims: Vec<Dim>,
    /// The hour (`ts / 1 h`) in progress.
    hour: Option<i64>,
    /// The last tick's largest roughness over its bar, for the alarm's summary.
    ratio: f64,
    /// Ring position in every dimension's `changes` (they advance together).
    at: usize,
}

impl Rough {
    /// `window` ticks (0, or fewer than [`MIN_WINDOW`]: off; at most [`MAX_WINDOW`]).
    pub fn new(window: usize, n_dims: usize) -> Self {
        let window = if window < MIN_WINDOW {
            0
        } else {
            window.min(MAX_WINDOW)
        };
        Self {
            window,
            dims: (0..n_dims).map(|_| Dim::new(window)).collect(),
            hour: None,
            ratio: 0.0,
            at: 0,
        }
    }

    pub fn n_dims(&self) -> usize {
        self.dims.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.dims.len()
            * (std::mem::size_of::<Dim>() + (self.window + HOURS) * std::mem::size_of::<f32>())
    }

    /// The same memory under today's window; another window starts afresh (a roughness
    /// over another span is another measure), and so does a memory whose parts do not fit
    /// together (a snapshot decoded from damaged bytes must not index out of bounds).
    pub fn adopt(self, window: usize) -> Self {
        let fresh = Self::new(window, self.dims.len());
        let fits = self.window == fresh.window
            && (self.window == 0 || self.at < self.window)
            && self.dims.iter().all(|d| {
                d.changes.len() == self.window
                    && d.hours.len() <= HOURS
                    && d.hour_at < HOURS
                    && d.seen <= 3
            });
        if fits { self } else { fresh }
    }

    /// Forgets what a typical hour looks like: the model was told that what it sees now is
    /// its new normal, so the next [`MIN_HOURS`] hours are learned before it judges again.
    pub fn forget(&mut self) {
        for d in &mut self.dims {
            d.hours.clear();
            d.hour_at = 0;
            d.hour_max = -1.0;
            d.over = 0;
            d.bar = None;
        }
    }

    /// How many times its bar the roughest dimension moved at the last tick (0 before one
    /// is judged).
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Feeds one tick at `ts` (Unix ms); returns whether a dimension is restless.
    pub fn observe(&mut self, ts: i64, values: &[f64]) -> bool {
        if self.window == 0 {
            return false;
        }
        let hour = ts.div_euclid(HOUR_MS);
        let new_hour = self.hour.is_some_and(|h| hour > h);
        if self.hour.is_none_or(|h| hour > h) {
            self.hour = Some(hour);
        }
        let window = self.window;
        let at = self.at;
        self.at = (at + 1) % window;
        let half = window / 2;
        let mut restless = false;
        let mut ratio: f64 = 0.0;
        for (d, &v) in self.dims.iter_mut().zip(values) {
            if new_hour {
                d.close_hour();
            }
            d.recent = [d.recent[1], d.recent[2], v];
            d.seen = (d.seen + 1).min(3);
            let n = usize::from(d.seen);
            let avg = d.recent[3 - n..].iter().sum::<f64>() / n as f64;
            // Each change counts at most CAP times the bar: a spike's few large changes
            // must not make a whole window rough, a swing's many do.
            let cap = d.bar.map_or(f64::INFINITY, |b| CAP * b);
            let change = if n > 1 {
                (avg - d.avg).abs().min(cap) as f32
            } else {
                0.0
            };
            d.avg = avg;
            // The exact sum once a lap, so that rounding cannot drift over a year.
            d.sum += f64::from(change) - f64::from(d.changes[at]);
            d.changes[at] = change;
            if at + 1 == window {
                d.sum = d.changes.iter().map(|&c| f64::from(c)).sum();
            }
            d.filled = (d.filled + 1).min(window);
            if d.filled < window {
                continue;
            }
            let roughness = d.sum.max(0.0) / window as f64;
            if let Some(bar) = d.bar {
                ratio = ratio.max(roughness / bar);
                if roughness > FACTOR * bar {
                    d.over += 1;
                } else {
                    d.over = 0;
                }
            }
            if d.over >= half.max(1) {
                restless = true;
                d.calm = 0;
            } else {
                d.calm = d.calm.saturating_add(1);
            }
            // A window that held a restless tick is not normal roughness.
            if d.calm > window {
                d.hour_max = d.hour_max.max(roughness);
            }
        }
        self.ratio = ratio;
        restless
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const H: i64 = 3600;

    /// A noisy series: a deterministic pseudo-random walk in ±1 around `level`.
    fn noise(t: i64) -> f64 {
        let x = (t as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(17);
        (x % 2000) as f64 / 1000.0 - 1.0
    }

    fn normal(r: &mut Rough, from: i64, to: i64) -> Vec<i64> {
        (from..to)
            .filter(|&t| r.observe(t * S, &[50.0 + noise(t), 20.0 + 0.1 * noise(t + 7)]))
            .collect()
    }

    #[test]
    fn an_oscillation_within_the_normal_range_is_restless_within_its_window() {
        let mut r = Rough::new(60, 2);
        assert!(
            normal(&mut r, 0, 5 * H).is_empty(),
            "normal noise is not restless"
        );
        // The second dimension swings by ±1, ten times its noise, every 30 s.
        let start = 5 * H;
        let first = (start..start + 600).find(|&t| {
            let swing = (std::f64::consts::TAU * (t - start) as f64 / 30.0).sin();
            r.observe(t * S, &[50.0 + noise(t), 20.0 + 0.1 * noise(t + 7) + swing])
        });
        let first = first.expect("the oscillation is restless") - start;
        assert!((30..=90).contains(&first), "after {first} ticks");
        assert!(r.ratio() > FACTOR);
    }

    #[test]
    fn a_level_shift_alone_is_not_restless() {
        let mut r = Rough::new(60, 2);
        normal(&mut r, 0, 5 * H);
        let hits = (5 * H..5 * H + 600)
            .filter(|&t| r.observe(t * S, &[80.0 + noise(t), 20.0 + 0.1 * noise(t + 7)]))
            .count();
        assert_eq!(hits, 0, "one step moves the window's sum once");
    }

    #[test]
    fn a_spike_of_a_few_ticks_is_not_restless() {
        let mut r = Rough::new(60, 2);
        normal(&mut r, 0, 5 * H);
        let start = 5 * H;
        let hits = (start..start + 600)
            .filter(|&t| {
                let spike = if (start..start + 3).contains(&t) {
                    100.0
                } else {
                    0.0
                };
                r.observe(t * S, &[50.0 + noise(t) + spike, 20.0 + 0.1 * noise(t + 7)])
            })
            .count();
        assert_eq!(hits, 0, "each of its changes counts at most CAP bars");
    }

    #[test]
    fn nothing_is_judged_before_three_hours_nor_on_a_constant_dimension() {
        let mut r = Rough::new(60, 1);
        // Constant for hours, then it moves: never judged (the bar is 0).
        for t in 0..5 * H {
            assert!(!r.observe(t * S, &[3.0]));
        }
        assert!((5 * H..6 * H).all(|t| !r.observe(t * S, &[3.0 + 10.0 * noise(t)])));
        // Moving from the start, then swinging within the first three hours: not judged.
        let mut r = Rough::new(60, 1);
        assert!((0..2 * H).all(|t| !r.observe(t * S, &[noise(t)])));
        assert!((2 * H..3 * H).all(|t| !r.observe(t * S, &[noise(t) + 50.0 * ((t % 20) as f64)])));
    }

    #[test]
    fn a_long_oscillation_is_not_learned_and_forget_starts_over() {
        let mut r = Rough::new(60, 1);
        for t in 0..4 * H {
            r.observe(t * S, &[noise(t)]);
        }
        let swing = |t: i64| 5.0 * (std::f64::consts::TAU * t as f64 / 20.0).sin();
        // Six hours of swinging: restless from its first minutes to its end.
        let start = 4 * H;
        let flagged = (start..start + 6 * H)
            .filter(|&t| r.observe(t * S, &[noise(t) + swing(t)]))
            .count() as i64;
        assert!(flagged > 6 * H - 120, "{flagged} of {} ticks", 6 * H);
        // Told it is the new normal: quiet while it learns the next three hours.
        r.forget();
        let end = start + 6 * H;
        assert!((end..end + 4 * H).all(|t| !r.observe(t * S, &[noise(t) + swing(t)])));
    }

    #[test]
    fn off_is_off_and_a_coarse_interval_turns_it_off() {
        for window in [0, MIN_WINDOW - 1] {
            let mut r = Rough::new(window, 1);
            assert!((0..5 * H).all(|t| !r.observe(t * S, &[noise(t) * ((t % 7) as f64)])));
            assert_eq!(r.heap_bytes(), std::mem::size_of::<Dim>() + HOURS * 4);
        }
    }
}
