//! The picture's data: a model's last ticks, so that a firing alarm can carry what the
//! model saw ([`Window`]) and a person can judge the anomaly by looking at it.
//!
//! The values are not kept twice: the model's training ring already holds every
//! dimension as the model sees it, tick by tick ([`Model::recent`]). This ring adds only
//! what the model does not keep, six bytes a tick: the time since the previous tick, and
//! the score and level packed in 16 bits. It is allocated when the model is made and never
//! grows: `picture_points` ticks whatever the uptime.
//!
//! [`Model::recent`]: crate::scorer::Model::recent

use lookout_shared::payload::{Window, WindowSeries};

use super::attribution::round_sig;
use crate::scorer::Model;

/// Series a window carries at most: the picture has room for three lines, and a model of
/// many dimensions (every thermal zone) must not make an alarm grow with it.
pub const MAX_SERIES: usize = 3;

/// `picture_points` at most: 600 ticks of three series keep an alarm under about 30 KB of
/// JSON.
pub const MAX_POINTS: usize = 600;

/// The packed tick: bit 15 says the tick's values became a feature in the model's ring,
/// bits 12–14 hold its level, bits 0–11 its score in `SCORE_STEPS` steps of the cap.
const PRODUCED: u16 = 1 << 15;
const NO_SCORE: u16 = 0x0FFF;
const SCORE_STEPS: f64 = 4094.0;

#[derive(Clone, Debug)]
pub struct Trace {
    /// Scores are capped here (`anomaly_score_cap`): the packed score's full scale.
    cap: f64,
    /// Where the next tick goes, and how many ticks are held.
    head: usize,
    len: usize,
    newest_ts: i64,
    /// Milliseconds since the tick before, per tick.
    dt: Box<[u32]>,
    packed: Box<[u16]>,
}

impl Trace {
    /// A ring of `points` ticks (at most [`MAX_POINTS`]; 0 keeps nothing) for scores
    /// capped at `cap`.
    pub fn new(points: usize, cap: f64) -> Self {
        let points = points.min(MAX_POINTS);
        Self {
            cap: if cap.is_finite() && cap > 0.0 {
                cap
            } else {
                10.0
            },
            head: 0,
            len: 0,
            newest_ts: 0,
            dt: vec![0; points].into_boxed_slice(),
            packed: vec![0; points].into_boxed_slice(),
        }
    }

    /// Takes one tick of `model`, which has just ingested it.
    pub fn push(&mut self, ts: i64, score: Option<f64>, level: u8, model: &Model) {
        let cap = self.packed.len();
        if cap == 0 {
            return;
        }
        let dt = if self.len == 0 {
            0
        } else {
            ts - self.newest_ts
        };
        self.dt[self.head] = u32::try_from(dt.max(0)).unwrap_or(u32::MAX);
        self.newest_ts = ts;
        let score = score.filter(|s| s.is_finite()).map_or(NO_SCORE, |s| {
            (s.clamp(0.0, self.cap) / self.cap * SCORE_STEPS).round() as u16
        });
        let produced = if model.produced() { PRODUCED } else { 0 };
        self.packed[self.head] = produced | (u16::from(level.min(7)) << 12) | score;
        self.head = (self.head + 1) % cap;
        self.len = (self.len + 1).min(cap);
    }

    /// The window of `model`'s dimensions `dims` (indices in its order, the first three
    /// taken), named by `names`, with each one's normal range from the model; `None` when
    /// nothing is held.
    pub fn window(&self, model: &Model, dims: &[usize], names: &[String]) -> Option<Window> {
        if self.len == 0 {
            return None;
        }
        let cap = self.packed.len();
        let dims: Vec<usize> = dims
            .iter()
            .copied()
            .filter(|&d| d < model.n_dims())
            .take(MAX_SERIES)
            .collect();
        let mut w = Window::default();
        let mut values: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(self.len); dims.len()];
        // Newest first, counting features back into the model's ring; reversed below.
        let (mut ts, mut back) = (self.newest_ts, 0);
        for i in 0..self.len {
            let slot = (self.head + cap - 1 - i) % cap;
            let p = self.packed[slot];
            w.ts.push(ts);
            ts -= i64::from(self.dt[slot]);
            let score = p & NO_SCORE;
            w.score
                .push((score != NO_SCORE).then(|| {
                    (f64::from(score) / SCORE_STEPS * self.cap * 1000.0).round() / 1000.0
                }));
            w.level.push(((p >> 12) & 7) as u8);
            let produced = p & PRODUCED != 0;
            for (v, &d) in values.iter_mut().zip(&dims) {
                v.push(
                    produced
                        .then(|| model.recent(d, back))
                        .flatten()
                        .map(round_sig),
                );
            }
            back += usize::from(produced);
        }
        w.ts.reverse();
        w.score.reverse();
        w.level.reverse();
        let normal = model.normal_range();
        w.series = dims
            .iter()
            .zip(values)
            .map(|(&d, mut values)| {
                values.reverse();
                WindowSeries {
                    name: names.get(d).cloned().unwrap_or_else(|| (d + 1).to_string()),
                    values,
                    normal: normal
                        .and_then(|r| Some([*r.get(2 * d)?, *r.get(2 * d + 1)?]))
                        .map(|[lo, hi]| [round_sig(lo), round_sig(hi)]),
                }
            })
            .collect();
        Some(w)
    }

    pub fn heap_bytes(&self) -> usize {
        self.dt.len() * size_of::<u32>() + self.packed.len() * size_of::<u16>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scorer::ModelParams;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}")).collect()
    }

    /// A model of `n_dims` fed `ticks` ticks whose values say their tick and dimension,
    /// traced in a ring of `points`.
    fn traced(points: usize, n_dims: usize, ticks: i64) -> (Model, Trace) {
        let params = ModelParams {
            n_smoothing: 1,
            diffs: false,
            ..ModelParams::notebook()
        };
        let mut model = Model::new(params, n_dims);
        let mut trace = Trace::new(points, 10.0);
        for i in 0..ticks {
            let values: Vec<f64> = (0..n_dims).map(|d| (i * 10 + d as i64) as f64).collect();
            model.ingest(&values).unwrap();
            let score = (i >= 2).then_some(i as f64 / 10.0);
            trace.push(i * 1000 + i % 3, score, u8::from(i % 4 == 3) * 3, &model);
        }
        (model, trace)
    }

    #[test]
    fn the_ring_keeps_the_newest_ticks_oldest_first_and_never_grows() {
        let (model, trace) = traced(4, 2, 2);
        let bytes = trace.heap_bytes();
        assert_eq!(bytes, 4 * 6);
        let (model2, trace) = traced(4, 2, 10);
        assert_eq!(trace.heap_bytes(), bytes);
        drop(model);
        let w = trace.window(&model2, &[1, 0], &names(2)).unwrap();
        assert!(w.is_consistent());
        assert_eq!(w.ts, vec![6000, 7001, 8002, 9000]);
        for (got, want) in w.score.iter().zip([0.6, 0.7, 0.8, 0.9]) {
            assert!((got.unwrap() - want).abs() <= 0.002, "{:?}", w.score);
        }
        assert_eq!(w.level, vec![0, 3, 0, 0]);
        assert_eq!(w.series[0].name, "d1");
        assert_eq!(
            w.series[0].values,
            vec![Some(61.0), Some(71.0), Some(81.0), Some(91.0)]
        );
        assert_eq!(w.series[1].values[0], Some(60.0));
    }

    #[test]
    fn missing_scores_are_nulls_and_a_short_ring_is_partial() {
        let (model, trace) = traced(8, 1, 0);
        assert!(trace.window(&model, &[0], &names(1)).is_none());
        let (model, trace) = traced(8, 1, 3);
        let w = trace.window(&model, &[0, 5], &names(1)).unwrap();
        assert_eq!(w.ts, vec![0, 1001, 2002]);
        assert_eq!(w.score[..2], [None, None]);
        assert!((w.score[2].unwrap() - 0.2).abs() <= 0.002, "{:?}", w.score);
        assert_eq!(
            w.series.len(),
            1,
            "an index beyond the model's dimensions is skipped"
        );
        assert_eq!(w.series[0].values, vec![Some(0.0), Some(10.0), Some(20.0)]);
        assert_eq!(w.series[0].normal, None, "no fit yet");
    }

    #[test]
    fn ticks_before_the_first_feature_have_no_values_and_later_ones_line_up() {
        // Smoothing over 3: the first two ticks make no feature.
        let params = ModelParams {
            n_smoothing: 3,
            diffs: false,
            ..ModelParams::notebook()
        };
        let mut model = Model::new(params, 1);
        let mut trace = Trace::new(10, 10.0);
        for i in 0..5 {
            model.ingest(&[i as f64 * 3.0]).unwrap();
            trace.push(i * 1000, None, 0, &model);
        }
        let w = trace.window(&model, &[0], &names(1)).unwrap();
        assert_eq!(
            w.series[0].values,
            vec![None, None, Some(3.0), Some(6.0), Some(9.0)]
        );
    }

    #[test]
    fn at_most_three_series_and_six_hundred_points_and_zero_keeps_nothing() {
        let (model, trace) = traced(10_000, 5, 700);
        let w = trace.window(&model, &[0, 1, 2, 3, 4], &names(5)).unwrap();
        assert_eq!(w.series.len(), MAX_SERIES);
        assert_eq!(w.ts.len(), MAX_POINTS);
        assert_eq!(*w.series[2].values.last().unwrap(), Some(6992.0));
        let (model, off) = traced(0, 3, 10);
        assert!(off.window(&model, &[0], &names(3)).is_none());
        assert_eq!(off.heap_bytes(), 0);
    }

    #[test]
    fn scores_keep_three_decimals_up_to_the_cap_and_gaps_keep_their_length() {
        let model = Model::new(ModelParams::notebook(), 1);
        let mut t = Trace::new(4, 10.0);
        t.push(1_000, Some(1.75), 2, &model);
        t.push(1_000 + 3_600_000, Some(25.0), 4, &model);
        t.push(2_000 + 3_600_000, Some(f64::NAN), 0, &model);
        let w = t.window(&model, &[0], &names(1)).unwrap();
        assert!((w.score[0].unwrap() - 1.75).abs() < 0.003, "{:?}", w.score);
        assert_eq!(w.score[1], Some(10.0), "capped");
        assert_eq!(w.score[2], None);
        assert_eq!(w.ts, vec![1_000, 3_601_000, 3_602_000]);
        assert_eq!(w.level, vec![2, 4, 0]);
    }
}
