//! Turns one dimension's raw values into its slice of a model's feature vector, exactly as
//! the notebook does: rolling mean over `n_smoothing`, first differences if `diffs`, and
//! the last `n_lags + 1` of those, oldest first.
//!
//! The notebook recomputes this from a list of recent raw values every step; here two
//! small rings of fixed capacity hold only what the next step needs, so a tick costs a
//! few additions and allocates nothing.

/// A fixed-capacity ring of the most recent values, oldest first when read.
#[derive(Clone, Debug)]
struct Ring {
    buf: Box<[f64]>,
    head: usize,
    len: usize,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Self {
            buf: vec![0.0; cap.max(1)].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, v: f64) {
        let cap = self.buf.len();
        self.buf[(self.head + self.len) % cap] = v;
        if self.len < cap {
            self.len += 1;
        } else {
            self.head = (self.head + 1) % cap;
        }
    }

    fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// `i`-th oldest value.
    fn get(&self, i: usize) -> f64 {
        self.buf[(self.head + i) % self.buf.len()]
    }
}

#[derive(Clone, Debug)]
pub struct DimPreprocessor {
    n_smoothing: usize,
    diffs: bool,
    n_lags: usize,
    raw: Ring,
    smoothed: Ring,
}

impl DimPreprocessor {
    pub fn new(n_smoothing: usize, diffs: bool, n_lags: usize) -> Self {
        let n_smoothing = n_smoothing.max(1);
        Self {
            n_smoothing,
            diffs,
            n_lags,
            raw: Ring::new(n_smoothing),
            smoothed: Ring::new(n_lags + 1 + usize::from(diffs)),
        }
    }

    /// Width of this dimension's slice of the feature vector.
    pub fn width(&self) -> usize {
        self.n_lags + 1
    }

    /// Raw values needed before the first complete feature slice.
    pub fn warmup(&self) -> usize {
        self.n_smoothing + self.n_lags + usize::from(self.diffs)
    }

    pub fn push(&mut self, value: f64) {
        self.raw.push(value);
        if self.raw.is_full() {
            // Summed oldest to newest, as Python's sum() does, so values match the
            // reference to the last bit.
            let mut sum = 0.0;
            for i in 0..self.n_smoothing {
                sum += self.raw.get(i);
            }
            self.smoothed.push(sum / self.n_smoothing as f64);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.smoothed.is_full()
    }

    /// Writes the slice (oldest first) into `out`, which must be `width()` long.
    /// Call only when [`is_ready`](Self::is_ready).
    pub fn write_features(&self, out: &mut [f64]) {
        debug_assert!(self.is_ready());
        debug_assert_eq!(out.len(), self.width());
        if self.diffs {
            for (i, o) in out.iter_mut().enumerate() {
                *o = self.smoothed.get(i + 1) - self.smoothed.get(i);
            }
        } else {
            for (i, o) in out.iter_mut().enumerate() {
                *o = self.smoothed.get(i);
            }
        }
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
