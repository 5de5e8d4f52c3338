//! A small deterministic PRNG: SplitMix64 with Box-Muller normals.
//!
//! Tiny, fast and reproducible across platforms: k-means fits give the same centres on
//! every run and machine, and each simulated host owns independent streams derived from
//! `(seed, index, stream)`. Not for anything secret.

/// SplitMix64 (Steele, Lea and Flood 2014), the seeder of the xoshiro family.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    /// The second normal of the last Box-Muller pair.
    spare: Option<f64>,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// An independent stream for host `index` of run `seed`; `stream` separates the uses
    /// within one host (normal behaviour, anomaly schedule) so one never shifts the other.
    pub fn new(seed: u64, index: usize, stream: u64) -> Self {
        let host = mix((index as u64).wrapping_add(1).wrapping_mul(GOLDEN));
        let state = mix(mix(seed) ^ host.rotate_left(17) ^ mix(stream.wrapping_add(0x5157)));
        Self { state, spare: None }
    }

    /// A single stream from a seed (k-means restarts).
    pub fn from_seed(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    /// Uniform in `0..n`; `n` must be > 0. Multiply-shift keeps the bias below 2^-64 · n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let r = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Exponential with the given mean (finite: at most about 37 means).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::new(1, 1, 0).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(Rng::new(1, 1, 0).next_u64(), Rng::new(1, 2, 0).next_u64());
        assert_ne!(Rng::new(1, 1, 0).next_u64(), Rng::new(1, 1, 1).next_u64());
        assert_ne!(Rng::new(1, 1, 0).next_u64(), Rng::new(2, 1, 0).next_u64());
    }

    #[test]
    fn normals_have_unit_variance_and_zero_mean() {
        let mut rng = Rng::new(7, 3, 0);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn exponentials_have_the_requested_mean() {
        let mut rng = Rng::new(7, 3, 1);
        let n = 100_000;
        let mean = (0..n).map(|_| rng.exponential(45.0)).sum::<f64>() / n as f64;
        assert!((mean - 45.0).abs() < 1.0, "mean {mean}");
    }
}
