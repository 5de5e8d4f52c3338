//! Turns one dimension's raw values into its slice of a model's feature vector, exactly as
//! the notebook does: rolling mean over `n_smoothing`, first differences if `diffs`, and
//! the last `n_lags + 1` of those, oldest first.
//!
//! The notebook recomputes this from a list of recent raw values every step; here two
//! small rings of fixed capacity hold only what the next step needs, so a tick costs a
//! few additions and one copy, and allocates nothing.

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DimPreprocessor {
    n_smoothing: usize,
    diffs: bool,
    /// The last `n_smoothing` raw values, a ring; `raw_pos` is the oldest once full.
    raw: Box<[f64]>,
    raw_pos: usize,
    raw_len: usize,
    /// Previous smoothed value, for differences.
    prev: Option<f64>,
    /// The last `n_lags + 1` features, each stored twice (at `i` and `i + width`) so that
    /// the window is always one contiguous slice starting at `feat_pos`, oldest first:
    /// writing the features is a single copy.
    feats: Box<[f64]>,
    feat_pos: usize,
    feat_len: usize,
}

impl DimPreprocessor {
    pub fn new(n_smoothing: usize, diffs: bool, n_lags: usize) -> Self {
        let n_smoothing = n_smoothing.max(1);
        Self {
            n_smoothing,
            diffs,
            raw: vec![0.0; n_smoothing].into_boxed_slice(),
            raw_pos: 0,
            raw_len: 0,
            prev: None,
            feats: vec![0.0; 2 * (n_lags + 1)].into_boxed_slice(),
            feat_pos: 0,
            feat_len: 0,
        }
    }

    /// Width of this dimension's slice of the feature vector: `n_lags + 1`.
    #[inline]
    pub fn width(&self) -> usize {
        self.feats.len() / 2
    }

    /// Bytes of its two rings.
    pub fn heap_bytes(&self) -> usize {
        (self.raw.len() + self.feats.len()) * std::mem::size_of::<f64>()
    }

    /// Raw values needed before the first complete feature slice.
    pub fn warmup(&self) -> usize {
        self.n_smoothing + self.width() - 1 + usize::from(self.diffs)
    }

    /// Feeds one raw value; returns the feature it produced (the newest value of the lag
    /// window), `None` while smoothing or differencing still warms up.
    #[inline]
    pub fn push(&mut self, value: f64) -> Option<f64> {
        let n = self.n_smoothing;
        self.raw[self.raw_pos] = value;
        self.raw_pos += 1;
        if self.raw_pos == n {
            self.raw_pos = 0;
        }
        if self.raw_len < n {
            self.raw_len += 1;
            if self.raw_len < n {
                return None;
            }
        }
        // Summed oldest to newest, as Python's sum() does, so values match the reference
        // to the last bit. The oldest value sits at raw_pos.
        let mut sum = 0.0;
        for v in &self.raw[self.raw_pos..] {
            sum += v;
        }
        for v in &self.raw[..self.raw_pos] {
            sum += v;
        }
        let smoothed = sum / n as f64;
        let feature = if self.diffs {
            let prev = self.prev.replace(smoothed);
            match prev {
                Some(p) => smoothed - p,
                None => return None,
            }
        } else {
            smoothed
        };
        let w = self.width();
        self.feats[self.feat_pos] = feature;
        self.feats[self.feat_pos + w] = feature;
        self.feat_pos += 1;
        if self.feat_pos == w {
            self.feat_pos = 0;
        }
        if self.feat_len < w {
            self.feat_len += 1;
        }
        Some(feature)
    }

    #[inline]
    pub fn is_ready(&self) -> bool {
        self.feat_len == self.width()
    }

    /// Writes the slice (oldest first) into `out`, which must be `width()` long.
    /// Call only when [`is_ready`](Self::is_ready).
    #[inline]
    pub fn write_features(&self, out: &mut [f64]) {
        debug_assert!(self.is_ready());
        let w = self.width();
        copy_short(out, &self.feats[self.feat_pos..self.feat_pos + w]);
    }
}

/// `dst.copy_from_slice(src)` for the few values of a feature vector. A slice copy of
/// unknown length becomes a call to memmove, which costs more than the whole rest of a
/// scored tick; copies of four fixed values are done in registers.
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [f64], src: &[f64]) {
    let mut d = dst.chunks_exact_mut(4);
    let mut s = src.chunks_exact(4);
    for (a, b) in (&mut d).zip(&mut s) {
        let b: &[f64; 4] = b.try_into().expect("chunks of four");
        let a: &mut [f64; 4] = a.try_into().expect("chunks of four");
        *a = *b;
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = *b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(xs: &[f64], n_smoothing: usize, diffs: bool, n_lags: usize) -> Option<Vec<f64>> {
        let mut p = DimPreprocessor::new(n_smoothing, diffs, n_lags);
        for &x in xs {
            p.push(x);
        }
        p.is_ready().then(|| {
            let mut out = vec![0.0; p.width()];
            p.write_features(&mut out);
            out
        })
    }

    fn assert_close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }

    /// The notebook's printed example: the `system.cpu|user` raw history at its last step,
    /// with `n_smoothing` 3, diffs and 3 lags. The notebook rounds each step to 2 decimals
    /// (a quirk we do not copy), so its printout is compared at that precision.
    #[test]
    fn matches_the_seed_worked_example() {
        let raw = [
            1.2531328, 1.2531328, 1.9950125, 1.9950125, 1.9950125, 1.9950125, 1.9950125, 2.0, 2.0,
        ];
        // smoothed: 1.50, 1.75, 1.995, 1.995, 1.995, 1.9966, 1.9983
        // diffs:    0.247, 0.247, 0, 0, 0.0017, 0.0017 -> last 4
        let got = run(&raw, 3, true, 3).unwrap();
        let rounded: Vec<f64> = got.iter().map(|v| (v * 100.0).round() / 100.0).collect();
        assert_close(&rounded, &[0.0, 0.0, 0.0, 0.0]);
        let exact_smoothed = |i: usize| (raw[i] + raw[i + 1] + raw[i + 2]) / 3.0;
        let expected: Vec<f64> = (2..6)
            .map(|i| exact_smoothed(i + 1) - exact_smoothed(i))
            .collect();
        assert_close(&got, &expected);
    }

    #[test]
    fn smoothing_diffs_and_lags_step_by_step() {
        let xs = [1.0, 2.0, 3.0, 5.0, 8.0, 13.0];
        // smoothed over 2: 1.5 2.5 4 6.5 10.5 ; diffs: 1 1.5 2.5 4 ; last 3
        assert_close(&run(&xs, 2, true, 2).unwrap(), &[1.5, 2.5, 4.0]);
        // without diffs: last 3 smoothed
        assert_close(&run(&xs, 2, false, 2).unwrap(), &[4.0, 6.5, 10.5]);
        // no smoothing, no diffs: the raw lag window
        assert_close(&run(&xs, 1, false, 3).unwrap(), &[3.0, 5.0, 8.0, 13.0]);
    }

    #[test]
    fn not_ready_until_the_warmup_is_over() {
        let p = DimPreprocessor::new(3, true, 3);
        assert_eq!(p.warmup(), 7);
        let xs: Vec<f64> = (0..7).map(f64::from).collect();
        assert!(run(&xs[..6], 3, true, 3).is_none());
        assert!(run(&xs, 3, true, 3).is_some());
    }
}
