//! Context novelty: has this short sequence of values been seen before?
//!
//! The k-means score measures how far a vector is from what was seen; it cannot see a
//! change whose values are all ordinary but whose order is not (a series that dips where
//! it never dipped, a plateau where it used to be noisy). CAD OSE (NAB's contextOSE) scores
//! such changes by remembering contexts; this is the same idea made small and bounded:
//!
//! - each raw value is quantised into `levels` bands of the range seen so far, plus one
//!   band below and one above it;
//! - the last `length` bands of a dimension form a context, stored as one bit in a set of
//!   `(levels + 2)^length` bits (1,000 bits for 8 levels and length 3: 125 bytes);
//! - a tick is novel when any dimension's context was never seen; the novelty is the
//!   share of novel ticks among the last `window`.
//!
//! Memory is two bit sets and a small ring per dimension, fixed at start. The range is
//! the one seen before the model's first fit and then stays put: re-taking it later would
//! move every band at once and make every context new (measured: a flood of false alarms
//! on the long DEV series). So that what was normal a month ago does not stay normal
//! forever, the sets rotate every `memory` ticks: a context is known if either the current
//! or the previous set has it.

/// Context parameters; `levels = 0` turns the detector off.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContextParams {
    pub levels: usize,
    pub length: usize,
    pub window: usize,
    /// Ticks per memory period (0: never forget).
    pub memory: usize,
}

impl ContextParams {
    pub const OFF: Self = Self {
        levels: 0,
        length: 0,
        window: 0,
        memory: 0,
    };

    pub fn enabled(&self) -> bool {
        self.levels > 0 && self.length > 0 && self.window > 0
    }

    /// Bits in one context set: `(levels + 2)^length`.
    pub fn bits(&self) -> usize {
        (self.levels + 2).pow(self.length as u32)
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Dim {
    /// Quantisation range, and the range of the values seen while learning it.
    lo: f64,
    span: f64,
    learn_lo: f64,
    learn_hi: f64,
    /// The last `length` bands, a ring.
    bands: Box<[u8]>,
    band_pos: usize,
    band_len: usize,
    current: Box<[u64]>,
    previous: Box<[u64]>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Context {
    params: ContextParams,
    dims: Vec<Dim>,
    /// Novel-tick flags of the last `window` ticks, newest in bit 0.
    recent: u64,
    recent_len: usize,
    /// Ticks since the period started; `None` until [`Context::start`].
    in_period: Option<usize>,
}

impl Dim {
    /// Quantises `v` into its band and appends it; once the last `length` bands are
    /// known, returns the index of their context: the bands, oldest first, as digits in
    /// base `levels + 2`.
    #[inline]
    fn push_band(&mut self, v: f64, levels: usize) -> Option<usize> {
        // Band 0 is below the range, 1..=levels inside it, levels + 1 above it.
        let band = if v < self.lo {
            0
        } else if v > self.lo + self.span {
            levels as u8 + 1
        } else if self.span > 0.0 {
            let q = ((v - self.lo) / self.span * levels as f64).floor() as usize;
            q.min(levels - 1) as u8 + 1
        } else {
            1
        };
        let n = self.bands.len();
        self.bands[self.band_pos] = band;
        self.band_pos = (self.band_pos + 1) % n;
        self.band_len = (self.band_len + 1).min(n);
        if self.band_len < n {
            return None;
        }
        let mut index = 0usize;
        for i in 0..n {
            index = index * (levels + 2) + usize::from(self.bands[(self.band_pos + i) % n]);
        }
        Some(index)
    }
}

impl Context {
    pub fn new(params: ContextParams, n_dims: usize) -> Self {
        let words = if params.enabled() {
            params.bits().div_ceil(64)
        } else {
            0
        };
        let dim = Dim {
            lo: 0.0,
            span: 0.0,
            learn_lo: f64::INFINITY,
            learn_hi: f64::NEG_INFINITY,
            bands: vec![0; params.length].into_boxed_slice(),
            band_pos: 0,
            band_len: 0,
            current: vec![0; words].into_boxed_slice(),
            previous: vec![0; words].into_boxed_slice(),
        };
        Self {
            params: ContextParams {
                window: params.window.min(64),
                ..params
            },
            dims: vec![dim; n_dims],
            recent: 0,
            recent_len: 0,
            in_period: None,
        }
    }

    /// Feeds one raw value per dimension. Before [`start`](Self::start) it only learns
    /// the range; after, it scores and remembers contexts.
    pub fn push(&mut self, values: &[f64]) {
        if !self.params.enabled() {
            return;
        }
        let Some(ticks) = self.in_period else {
            for (d, &v) in self.dims.iter_mut().zip(values) {
                d.learn_lo = d.learn_lo.min(v);
                d.learn_hi = d.learn_hi.max(v);
            }
            return;
        };
        if self.params.memory > 0 && ticks >= self.params.memory {
            self.rotate();
        }
        let levels = self.params.levels;
        let mut novel = false;
        let mut complete = true;
        for (d, &v) in self.dims.iter_mut().zip(values) {
            let Some(index) = d.push_band(v, levels) else {
                complete = false;
                continue;
            };
            let (word, bit) = (index / 64, 1u64 << (index % 64));
            let known = (d.current[word] | d.previous[word]) & bit != 0;
            d.current[word] |= bit;
            novel |= !known;
        }
        self.in_period = Some(ticks + 1);
        if complete {
            self.recent = (self.recent << 1) | u64::from(novel);
            self.recent_len = (self.recent_len + 1).min(self.params.window);
        }
    }

    /// Marks the context ending with `values` as seen, without scoring it: for the values
    /// the model learned from (see `Model::seed_context`). Call after [`start`](Self::start),
    /// then [`end_seeding`](Self::end_seeding).
    pub fn remember(&mut self, values: &[f64]) {
        if !self.params.enabled() || self.in_period.is_none() {
            return;
        }
        let levels = self.params.levels;
        for (d, &v) in self.dims.iter_mut().zip(values) {
            if let Some(index) = d.push_band(v, levels) {
                let (word, bit) = (index / 64, 1u64 << (index % 64));
                d.current[word] |= bit;
            }
        }
    }

    /// After seeding: the live stream starts its contexts afresh, so that none spans the
    /// seeded values and the live ones.
    pub fn end_seeding(&mut self) {
        for d in &mut self.dims {
            d.band_len = 0;
            d.band_pos = 0;
        }
    }

    /// Freezes the range learned so far and starts remembering contexts: called at the
    /// model's first fit, so both detectors start together.
    pub fn start(&mut self) {
        if self.in_period.is_none() && self.params.enabled() {
            self.rotate();
        }
    }

    fn rotate(&mut self) {
        let first = self.in_period.is_none();
        for d in &mut self.dims {
            if first && d.learn_lo <= d.learn_hi {
                d.lo = d.learn_lo;
                d.span = d.learn_hi - d.learn_lo;
            }
            std::mem::swap(&mut d.current, &mut d.previous);
            d.current.fill(0);
        }
        self.in_period = Some(0);
    }

    /// Share of novel ticks among the last `window`, once `window` ticks were scored.
    pub fn novelty(&self) -> Option<f64> {
        let w = self.params.window;
        if !self.params.enabled() || self.recent_len < w {
            return None;
        }
        let mask = if w == 64 { u64::MAX } else { (1u64 << w) - 1 };
        Some(f64::from((self.recent & mask).count_ones()) / w as f64)
    }

    pub fn heap_bytes(&self) -> usize {
        self.dims
            .iter()
            .map(|d| d.bands.len() + (d.current.len() + d.previous.len()) * 8)
            .sum::<usize>()
            + self.dims.len() * std::mem::size_of::<Dim>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ContextParams {
        ContextParams {
            levels: 4,
            length: 3,
            window: 2,
            memory: 0,
        }
    }

    #[test]
    fn a_repeating_pattern_becomes_known_and_a_new_order_is_novel() {
        let mut c = Context::new(params(), 1);
        for v in [0.0, 10.0] {
            c.push(&[v]);
        }
        c.start();
        // Range 0..10, 4 levels: 0, 5 and 9 fall in bands 1, 3 and 4.
        for _ in 0..10 {
            for v in [0.0, 5.0, 9.0] {
                c.push(&[v]);
            }
        }
        assert_eq!(
            c.novelty(),
            Some(0.0),
            "the cycle's three contexts are known"
        );
        c.push(&[9.0]);
        assert_eq!(c.novelty(), Some(0.5), "(5, 9, 9) was never seen");
        c.push(&[0.0]);
        assert_eq!(c.novelty(), Some(1.0), "(9, 9, 0) neither");
        c.push(&[5.0]);
        assert_eq!(c.novelty(), Some(0.5), "(9, 0, 5) was seen in the cycle");
    }

    #[test]
    fn values_beyond_the_range_have_their_own_bands() {
        let mut c = Context::new(params(), 1);
        c.push(&[0.0]);
        c.push(&[10.0]);
        c.start();
        for _ in 0..6 {
            c.push(&[5.0]);
        }
        assert_eq!(c.novelty(), Some(0.0));
        c.push(&[50.0]);
        assert_eq!(c.novelty(), Some(0.5));
        c.push(&[-50.0]);
        assert_eq!(c.novelty(), Some(1.0));
    }

    #[test]
    fn any_novel_dimension_makes_the_tick_novel() {
        let mut c = Context::new(params(), 2);
        c.push(&[0.0, 0.0]);
        c.push(&[10.0, 10.0]);
        c.start();
        for _ in 0..5 {
            c.push(&[5.0, 5.0]);
        }
        assert_eq!(c.novelty(), Some(0.0));
        c.push(&[5.0, 0.0]);
        assert_eq!(c.novelty(), Some(0.5));
    }

    #[test]
    fn memory_rotation_forgets_what_two_periods_did_not_see() {
        let mut c = Context::new(
            ContextParams {
                memory: 10,
                ..params()
            },
            1,
        );
        c.push(&[0.0]);
        c.push(&[10.0]);
        c.start();
        for v in [1.0, 1.0, 1.0, 9.0, 9.0, 9.0] {
            c.push(&[v]);
        }
        // Two full periods of 1.0 only: the set that saw (9, 9, 9) is rotated out.
        for _ in 0..24 {
            c.push(&[1.0]);
        }
        for _ in 0..3 {
            c.push(&[9.0]);
        }
        assert_eq!(c.novelty(), Some(1.0));
    }

    #[test]
    fn flat_training_range_still_tells_below_equal_and_above() {
        let mut c = Context::new(params(), 1);
        c.push(&[3.0]);
        c.start();
        for _ in 0..5 {
            c.push(&[3.0]);
        }
        assert_eq!(c.novelty(), Some(0.0));
        c.push(&[4.0]);
        assert_eq!(c.novelty(), Some(0.5));
    }

    #[test]
    fn off_costs_nothing_and_says_nothing() {
        let mut c = Context::new(ContextParams::OFF, 3);
        c.start();
        c.push(&[1.0, 2.0, 3.0]);
        assert_eq!(c.novelty(), None);
    }
}
