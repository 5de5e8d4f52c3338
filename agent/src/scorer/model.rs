//! One anomaly model: a set of dimensions scored together, as in the notebook's config
//! (`"system.cpu": ["user", "system"]`).
//!
//! Memory is fixed when the model is built: the preprocessors' rings, a ring of the last
//! `train_data_size` feature vectors, one spare copy of it for the trainer and two sets of
//! centres. Training swaps buffers instead of allocating, so a model that has run for a
//! year holds exactly what it held after its first fit.

use super::kmeans::{self, KMeansParams, Workspace};
use super::preprocess::{DimPreprocessor, copy_short};

/// The notebook's parameters plus the k-means knobs the notebook left to scikit-learn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelParams {
    pub diffs: bool,
    pub n_smoothing: usize,
    pub n_lags: usize,
    pub n_clusters: usize,
    pub train_data_size: usize,
    pub train_every_n: usize,
    pub anomaly_score_cap: f64,
    pub n_init: usize,
    pub max_iter: usize,
    pub seed: u64,
}

impl ModelParams {
    pub fn kmeans(&self) -> KMeansParams {
        KMeansParams {
            k: self.n_clusters,
            n_init: self.n_init,
            max_iter: self.max_iter,
            tol: 1e-4,
            seed: self.seed,
        }
    }
}

/// A training set on its way to the trainer and back, with the buffers it travels in.
#[derive(Debug)]
pub struct TrainJob {
    pub data: Box<[f64]>,
    pub rows: usize,
    pub width: usize,
    pub kmeans: KMeansParams,
    /// Filled by the fit.
    pub centres: Box<[f64]>,
    /// Smallest and largest mean distance of a training vector to the fitted centres;
    /// `None` when the fit failed.
    pub range: Option<(f64, f64)>,
}

impl TrainJob {
    /// Fits the centres and the normalisation range. Runs on the trainer thread (or
    /// inline in `replay`); allocates nothing.
    pub fn run(&mut self, ws: &mut Workspace) {
        let w = self.width;
        let k = self.kmeans.k;
        self.range = kmeans::fit(
            &self.kmeans,
            &self.data,
            self.rows,
            w,
            ws,
            &mut self.centres,
        )
        .map(|_| {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for r in 0..self.rows {
                let m = kmeans::mean_distance(&self.data[r * w..(r + 1) * w], &self.centres, k);
                lo = lo.min(m);
                hi = hi.max(m);
            }
            (lo, hi)
        });
    }
}

/// How raw mean distances become scores: the training vectors' smallest and largest mean
/// distance, and 1 / (largest − smallest), `None` when they are equal (flat training data).
#[derive(Clone, Copy, Debug)]
struct Norm {
    lo: f64,
    hi: f64,
    inv_span: Option<f64>,
}

/// Training-set and centres buffers kept for the next fit.
type Spare = (Box<[f64]>, Box<[f64]>);

#[derive(Debug)]
pub struct Model {
    params: ModelParams,
    dims: Vec<DimPreprocessor>,
    width: usize,
    /// Last `train_data_size` complete feature vectors, row-major, oldest at `ring_head`.
    ring: Box<[f64]>,
    ring_head: usize,
    ring_len: usize,
    current: Box<[f64]>,
    has_current: bool,
    /// Values ingested so far: the notebook's step counter `n`.
    step: u64,
    centres: Box<[f64]>,
    norm: Option<Norm>,
    /// Buffers lent to the trainer; `None` while a fit is in flight.
    spare: Option<Spare>,
}

impl Model {
    pub fn new(params: ModelParams, n_dims: usize) -> Self {
        let dims: Vec<DimPreprocessor> = (0..n_dims)
            .map(|_| DimPreprocessor::new(params.n_smoothing, params.diffs, params.n_lags))
            .collect();
        let width = n_dims * (params.n_lags + 1);
        let cap = params.train_data_size.max(1);
        Self {
            params,
            dims,
            width,
            ring: vec![0.0; cap * width].into_boxed_slice(),
            ring_head: 0,
            ring_len: 0,
            current: vec![0.0; width].into_boxed_slice(),
            has_current: false,
            step: 0,
            centres: vec![0.0; params.n_clusters * width].into_boxed_slice(),
            norm: None,
            spare: Some((
                vec![0.0; cap * width].into_boxed_slice(),
                vec![0.0; params.n_clusters * width].into_boxed_slice(),
            )),
        }
    }

    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    pub fn n_dims(&self) -> usize {
        self.dims.len()
    }

    /// Width of a feature vector: dimensions × (`n_lags` + 1).
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn is_trained(&self) -> bool {
        self.norm.is_some()
    }

    pub fn is_training(&self) -> bool {
        self.spare.is_none()
    }

    /// Feeds one value per dimension, in the model's dimension order. Returns whether a
    /// fit is due at this step (the notebook's `n >= train_data_size and n % train_every_n
    /// == 0`). A non-finite value is refused without advancing the model: `false`.
    pub fn ingest(&mut self, values: &[f64]) -> Result<bool, NonFinite> {
        if values.len() != self.dims.len() || values.iter().any(|v| !v.is_finite()) {
            return Err(NonFinite);
        }
        let n = self.step;
        self.step += 1;
        for (p, &v) in self.dims.iter_mut().zip(values) {
            p.push(v);
        }
        self.has_current = self.dims.iter().all(DimPreprocessor::is_ready);
        if self.has_current {
            let w = self.params.n_lags + 1;
            for (i, p) in self.dims.iter().enumerate() {
                p.write_features(&mut self.current[i * w..(i + 1) * w]);
            }
            let cap = self.params.train_data_size.max(1);
            let mut slot = self.ring_head + self.ring_len;
            if slot >= cap {
                slot -= cap;
            }
            copy_short(
                &mut self.ring[slot * self.width..(slot + 1) * self.width],
                &self.current,
            );
            if self.ring_len < cap {
                self.ring_len += 1;
            } else {
                self.ring_head += 1;
                if self.ring_head == cap {
                    self.ring_head = 0;
                }
            }
        }
        let t = self.params.train_data_size as u64;
        let every = self.params.train_every_n.max(1) as u64;
        Ok(n >= t && n.is_multiple_of(every))
    }

    /// The current vector's score, or `None` before the first fit.
    ///
    /// When every training vector was equally far from the centres (flat training data)
    /// the notebook divides by zero; here a vector no farther than they were scores 0 and
    /// anything farther scores the cap, because on a flat series any change is news.
    pub fn score(&self) -> Option<f64> {
        let norm = self.norm.as_ref()?;
        if !self.has_current {
            return None;
        }
        let cap = self.params.anomaly_score_cap;
        let m = kmeans::mean_distance(&self.current, &self.centres, self.params.n_clusters);
        let s = match norm.inv_span {
            // Multiplying by a reciprocal taken at fit time: a division here would be the
            // slowest instruction of the tick.
            Some(inv) => (m - norm.lo) * inv,
            None if m <= norm.hi + 1e-9 * norm.hi.abs().max(1.0) => 0.0,
            None => cap,
        };
        Some(s.min(cap))
    }

    /// Lends the training set to a fit, oldest vector first. `None` while another fit is
    /// in flight or before any complete vector exists.
    pub fn take_training_set(&mut self) -> Option<TrainJob> {
        if self.ring_len == 0 {
            return None;
        }
        let (mut data, centres) = self.spare.take()?;
        let w = self.width;
        let cap = self.ring.len() / w;
        for r in 0..self.ring_len {
            let slot = (self.ring_head + r) % cap;
            data[r * w..(r + 1) * w].copy_from_slice(&self.ring[slot * w..(slot + 1) * w]);
        }
        Some(TrainJob {
            data,
            rows: self.ring_len,
            width: w,
            kmeans: self.params.kmeans(),
            centres,
            range: None,
        })
    }

    /// Takes a finished fit back: installs its centres if it succeeded and keeps the
    /// buffers for the next one.
    pub fn install(&mut self, mut job: TrainJob) {
        if let Some((lo, hi)) = job.range {
            std::mem::swap(&mut self.centres, &mut job.centres);
            let span = hi - lo;
            self.norm = Some(Norm {
                lo,
                hi,
                inv_span: (span > f64::EPSILON * hi.abs().max(1.0)).then(|| 1.0 / span),
            });
        }
        self.spare = Some((job.data, job.centres));
    }

    /// Fits inline (for `replay` and tests); the agent uses the trainer thread instead.
    pub fn fit_now(&mut self, ws: &mut Workspace) {
        if let Some(mut job) = self.take_training_set() {
            job.run(ws);
            self.install(job);
        }
    }

    /// Sizes of every buffer and what it may hold, for tests that prove memory is bounded.
    pub fn buffer_report(&self) -> BufferReport {
        let (spare_data, spare_centres) = self
            .spare
            .as_ref()
            .map_or((0, 0), |(d, c)| (d.len(), c.len()));
        BufferReport {
            ring_len: self.ring_len * self.width,
            ring_capacity: self.ring.len(),
            spare_data,
            spare_centres,
            centres: self.centres.len(),
            current: self.current.len(),
        }
    }

    /// Workspace large enough to fit this model.
    pub fn workspace(&self) -> Workspace {
        Workspace::new(
            self.params.train_data_size.max(1),
            self.width,
            self.params.n_clusters,
        )
    }
}

/// A value that is NaN or infinite, or a row with the wrong number of values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonFinite;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferReport {
    pub ring_len: usize,
    pub ring_capacity: usize,
    pub spare_data: usize,
    pub spare_centres: usize,
    pub centres: usize,
    pub current: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn notebook() -> ModelParams {
        ModelParams {
            diffs: true,
            n_smoothing: 3,
            n_lags: 3,
            n_clusters: 2,
            train_data_size: 25,
            train_every_n: 50,
            anomaly_score_cap: 5.0,
            n_init: 10,
            max_iter: 300,
            seed: 0,
        }
    }

    fn wave(i: u64) -> [f64; 2] {
        let t = i as f64;
        [
            10.0 + (t * 0.3).sin() * 2.0 + (t * 1.7).cos() * 0.3,
            5.0 + (t * 0.11).cos(),
        ]
    }

    #[test]
    fn trains_on_the_notebook_schedule_and_scores_after() {
        let mut m = Model::new(notebook(), 2);
        let mut ws = m.workspace();
        let mut due_at = Vec::new();
        for i in 0..200 {
            if m.ingest(&wave(i)).unwrap() {
                due_at.push(i);
                m.fit_now(&mut ws);
            }
            assert_eq!(m.score().is_some(), i >= 50, "step {i}");
        }
        assert_eq!(due_at, vec![50, 100, 150]);
    }

    #[test]
    fn score_is_normalised_and_capped() {
        let mut m = Model::new(notebook(), 2);
        let mut ws = m.workspace();
        for i in 0..51 {
            if m.ingest(&wave(i)).unwrap() {
                m.fit_now(&mut ws);
            }
        }
        let s = m.score().unwrap();
        assert!(
            s < 2.0,
            "an ordinary vector scores near the training range, got {s}"
        );
        for _ in 0..4 {
            m.ingest(&[1000.0, 5.0]).unwrap();
        }
        assert_eq!(
            m.score(),
            Some(5.0),
            "a huge jump is capped at anomaly_score_cap"
        );
    }

    #[test]
    fn flat_training_data_scores_zero_until_something_changes() {
        let mut p = notebook();
        p.train_every_n = 30;
        p.train_data_size = 30;
        let mut m = Model::new(p, 1);
        let mut ws = m.workspace();
        for _ in 0..31 {
            if m.ingest(&[7.0]).unwrap() {
                m.fit_now(&mut ws);
            }
        }
        assert_eq!(m.score(), Some(0.0));
        m.ingest(&[9.0]).unwrap();
        assert_eq!(m.score(), Some(5.0));
    }

    #[test]
    fn non_finite_values_are_refused_without_advancing() {
        let mut m = Model::new(notebook(), 2);
        assert_eq!(m.ingest(&[f64::NAN, 1.0]), Err(NonFinite));
        assert_eq!(m.ingest(&[1.0]), Err(NonFinite));
        assert_eq!(m.step, 0);
    }

    /// The memory promise: a million steps, fits every 50, and no buffer grows.
    #[test]
    fn a_million_steps_never_exceed_any_capacity() {
        let mut p = notebook();
        p.n_init = 1;
        let mut m = Model::new(p, 2);
        let mut ws = m.workspace();
        let start = m.buffer_report();
        for i in 0..1_000_000u64 {
            if m.ingest(&wave(i)).unwrap() {
                m.fit_now(&mut ws);
            }
            if i % 9973 == 0 {
                let r = m.buffer_report();
                assert!(r.ring_len <= r.ring_capacity);
                assert_eq!(r.ring_capacity, start.ring_capacity);
                assert_eq!(r.spare_data, start.spare_data);
                assert_eq!(r.centres, start.centres);
                assert_eq!(r.current, start.current);
            }
        }
        assert_eq!(m.buffer_report(), start_after_training(&start));
    }

    fn start_after_training(start: &BufferReport) -> BufferReport {
        BufferReport {
            ring_len: start.ring_capacity,
            ..*start
        }
    }
}
