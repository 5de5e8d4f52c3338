//! The picture's data: a model's last ticks (time, score, level, each dimension as the
//! model sees it) in a ring allocated when the model is made, so that a firing alarm can
//! carry what the model saw ([`Window`]) and a person can judge the anomaly by looking at
//! it. The ring never grows: `picture_points` ticks, whatever the uptime.

use lookout_shared::payload::{Window, WindowSeries};

use super::attribution::round_sig;

/// Series a window carries at most: the picture has room for three lines, and a model of
/// many dimensions (every thermal zone) must not make an alarm grow with it.
pub const MAX_SERIES: usize = 3;

/// `picture_points` at most: 600 ticks of three series keep an alarm under about 40 KB of
/// JSON.
pub const MAX_POINTS: usize = 600;

/// The ring. `f32` is enough for a picture and halves its memory; a missing value (no
/// score yet, no complete feature vector yet) is NaN.
#[derive(Clone, Debug)]
pub struct Trace {
    n_dims: usize,
    /// Where the next tick goes, and how many ticks are held.
    head: usize,
    len: usize,
    ts: Box<[i64]>,
    score: Box<[f32]>,
    level: Box<[u8]>,
    /// `n_dims` values per tick, tick after tick.
    values: Box<[f32]>,
}

impl Trace {
    /// A ring of `points` ticks of `n_dims` values; 0 keeps nothing.
    pub fn new(points: usize, n_dims: usize) -> Self {
        let points = points.min(MAX_POINTS);
        Self {
            n_dims,
            head: 0,
            len: 0,
            ts: vec![0; points].into_boxed_slice(),
            score: vec![f32::NAN; points].into_boxed_slice(),
            level: vec![0; points].into_boxed_slice(),
            values: vec![f32::NAN; points * n_dims].into_boxed_slice(),
        }
    }

    fn capacity(&self) -> usize {
        self.ts.len()
    }

    /// Takes one tick; `view(d)` is dimension `d` as the model sees it, if it sees one yet.
    pub fn push(
        &mut self,
        ts: i64,
        score: Option<f64>,
        level: u8,
        view: impl Fn(usize) -> Option<f64>,
    ) {
        let cap = self.capacity();
        if cap == 0 {
            return;
        }
        let at = self.head;
        self.ts[at] = ts;
        self.score[at] = score.map_or(f32::NAN, |s| s as f32);
        self.level[at] = level;
        let row = &mut self.values[at * self.n_dims..(at + 1) * self.n_dims];
        for (d, v) in row.iter_mut().enumerate() {
            *v = view(d).map_or(f32::NAN, |x| x as f32);
        }
        self.head = (at + 1) % cap;
        self.len = (self.len + 1).min(cap);
    }

    /// Slots of the held ticks, oldest first.
    fn slots(&self) -> impl Iterator<Item = usize> + '_ {
        let cap = self.capacity();
        let start = (self.head + cap - self.len) % cap.max(1);
        (0..self.len).map(move |i| (start + i) % cap)
    }

    /// The window of dimensions `dims` (indices in the model's order), named by `names`,
    /// with each one's normal range from `normal` (low, high per dimension, as
    /// [`crate::scorer::Model::normal_range`] holds them); `None` when nothing is held.
    pub fn window(
        &self,
        dims: &[usize],
        names: &[String],
        normal: Option<&[f64]>,
    ) -> Option<Window> {
        if self.len == 0 {
            return None;
        }
        let finite = |x: f32| x.is_finite().then(|| round_sig(f64::from(x)));
        let series = dims
            .iter()
            .filter(|&&d| d < self.n_dims)
            .take(MAX_SERIES)
            .map(|&d| WindowSeries {
                name: names.get(d).cloned().unwrap_or_else(|| (d + 1).to_string()),
                values: self
                    .slots()
                    .map(|s| finite(self.values[s * self.n_dims + d]))
                    .collect(),
                normal: normal
                    .and_then(|r| Some([*r.get(2 * d)?, *r.get(2 * d + 1)?]))
                    .map(|[lo, hi]| [round_sig(lo), round_sig(hi)]),
            })
            .collect();
        Some(Window {
            ts: self.slots().map(|s| self.ts[s]).collect(),
            score: self.slots().map(|s| finite(self.score[s])).collect(),
            level: self.slots().map(|s| self.level[s]).collect(),
            series,
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.ts.len() * 8 + self.score.len() * 4 + self.level.len() + self.values.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}")).collect()
    }

    #[test]
    fn the_ring_keeps_the_newest_ticks_oldest_first_and_never_grows() {
        let mut t = Trace::new(4, 2);
        let bytes = t.heap_bytes();
        for i in 0..10 {
            let score = (i >= 2).then_some(i as f64);
            t.push(i * 1000, score, u8::from(i == 9) * 3, |d| {
                Some((i * 10 + d as i64) as f64)
            });
        }
        assert_eq!(t.heap_bytes(), bytes);
        let w = t
            .window(&[1, 0], &names(2), Some(&[0.0, 1.0, 2.0, 3.0]))
            .unwrap();
        assert!(w.is_consistent());
        assert_eq!(w.ts, vec![6000, 7000, 8000, 9000]);
        assert_eq!(w.score, vec![Some(6.0), Some(7.0), Some(8.0), Some(9.0)]);
        assert_eq!(w.level, vec![0, 0, 0, 3]);
        assert_eq!(w.series[0].name, "d1");
        assert_eq!(w.series[0].values[3], Some(91.0));
        assert_eq!(w.series[0].normal, Some([2.0, 3.0]));
        assert_eq!(w.series[1].values[0], Some(60.0));
    }

    #[test]
    fn missing_scores_and_values_are_nulls_and_a_short_ring_is_partial() {
        let mut t = Trace::new(8, 1);
        assert!(t.window(&[0], &names(1), None).is_none());
        t.push(1, None, 0, |_| None);
        t.push(2, Some(f64::NAN), 0, |_| Some(f64::INFINITY));
        t.push(3, Some(1.5), 2, |_| Some(4.25));
        let w = t.window(&[0, 5], &names(1), None).unwrap();
        assert_eq!(w.ts, vec![1, 2, 3]);
        assert_eq!(w.score, vec![None, None, Some(1.5)]);
        assert_eq!(
            w.series.len(),
            1,
            "an index beyond the model's dimensions is skipped"
        );
        assert_eq!(w.series[0].values, vec![None, None, Some(4.25)]);
        assert_eq!(w.series[0].normal, None);
    }

    #[test]
    fn at_most_three_series_and_six_hundred_points_and_zero_keeps_nothing() {
        let mut t = Trace::new(10_000, 5);
        for i in 0..700 {
            t.push(i, Some(1.0), 0, |_| Some(1.0));
        }
        let w = t.window(&[0, 1, 2, 3, 4], &names(5), None).unwrap();
        assert_eq!(w.series.len(), MAX_SERIES);
        assert_eq!(w.ts.len(), MAX_POINTS);
        let mut off = Trace::new(0, 3);
        off.push(1, Some(1.0), 1, |_| Some(1.0));
        assert!(off.window(&[0], &names(3), None).is_none());
        assert_eq!(off.heap_bytes(), 0);
    }
}
