//! Graded severity (seed `003`): how far past the model's bound a score went.
//!
//! With `N` the relative excess of the score over the bound, `N` below the tolerance `t2`
//! is normal and `N` in `[t2 + i·step, t2 + (i+1)·step)` is level `i + 1`, at most 4. The
//! bound is `threshold / (1 + t2)`, so that `N` reaches `t2` exactly at `threshold`: the
//! alarm starts where the detector's threshold says (the detection figures in
//! docs/quality.md do not move with `t2`), and `t2` and `step` decide how fast it
//! escalates above it.

/// `t2` and `step` of the seed, checked in config (`0 ≤ t2 < 0.4`, `step > 0`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Grading {
    pub t2: f64,
    pub step: f64,
}

impl Default for Grading {
    fn default() -> Self {
        Self { t2: 0.2, step: 0.2 }
    }
}

impl Grading {
    /// Level 1–4 for a score at or above `threshold`, 0 below it (normal).
    pub fn level(&self, score: f64, threshold: f64) -> u8 {
        if !(score.is_finite() && threshold.is_finite()) || threshold <= 0.0 || score < threshold {
            return 0;
        }
        let bound = threshold / (1.0 + self.t2);
        let n = score / bound - 1.0;
        // A tiny epsilon so that a score exactly on a band edge lands in the upper band
        // despite the rounding of the division.
        let i = ((n - self.t2) / self.step + 1e-9).floor();
        (1.0 + i).clamp(1.0, 4.0) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// threshold 1.2 with t2 0.2 puts the bound at 1.0, so N = score − 1.
    #[test]
    fn each_band_boundary_starts_its_level() {
        let g = Grading::default();
        let t = 1.2;
        assert_eq!(g.level(1.19, t), 0, "N 0.19 < t2: normal");
        assert_eq!(g.level(1.2, t), 1, "N = t2: level 1");
        assert_eq!(g.level(1.39, t), 1);
        assert_eq!(g.level(1.4, t), 2, "N = t2 + step: level 2");
        assert_eq!(g.level(1.59, t), 2);
        assert_eq!(g.level(1.6, t), 3);
        assert_eq!(g.level(1.8, t), 4);
        assert_eq!(g.level(100.0, t), 4, "capped at 4");
    }

    #[test]
    fn step_and_t2_change_the_bands() {
        let g = Grading { t2: 0.1, step: 0.5 };
        // threshold 1.1 with t2 0.1: bound 1.0; level 2 from N = 0.6.
        assert_eq!(g.level(1.1, 1.1), 1);
        assert_eq!(g.level(1.59, 1.1), 1);
        assert_eq!(g.level(1.6, 1.1), 2);
        assert_eq!(g.level(2.1, 1.1), 3);
    }

    #[test]
    fn nonsense_is_normal() {
        let g = Grading::default();
        assert_eq!(g.level(f64::NAN, 1.0), 0);
        assert_eq!(g.level(2.0, f64::NAN), 0);
        assert_eq!(g.level(2.0, 0.0), 0);
    }
}
