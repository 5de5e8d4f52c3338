//! One anomaly model: a set of dimensions scored together, as in the notebook's config
//! (`"system.cpu": ["user", "system"]`).
//!
//! Memory is fixed when the model is built. The training ring holds one `f32` per
//! dimension per tick, not whole lag vectors: the lag vectors of consecutive ticks overlap
//! in all but one value, so storing them would cost `n_lags + 1` times as much for the
//! same information. The trainer rebuilds the vectors in its own workspace (one per
//! trainer thread, not per model). Training swaps buffers instead of allocating, so a
//! model that has run for a year holds exactly what it held after its first fit.
//!
//! The ring is the short horizon (1,440 ticks: 24 minutes at 1 s). What happens once a
//! day (a backup, the morning load) would be new to it every day, so the model also keeps
//! a long horizon: one whole feature vector sampled, at a random tick, in each stride of
//! `long / long_samples` ticks (128 over 24 h: one per 11 minutes at 1 s), taken only from
//! ticks its decider judged normal, so that a fault is not remembered as normal for a
//! day. Every fit trains on the ring's vectors and these samples together.

use super::context::{Context, ContextParams};
use super::kmeans::{self, KMeansParams, Workspace};
use super::preprocess::DimPreprocessor;

/// How a vector's distance to a model's centres is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Mean distance to all centres: the notebook's score.
    Mean,
    /// Distance to the nearest centre: "how far from anything seen in training", which
    /// does not punish a vector for sitting in one of several normal regimes.
    Nearest,
}

/// What a score of 1.0 means.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Scale {
    /// The notebook's min–max scaling: 0 = the training vector nearest the centres,
    /// 1 = the farthest one. One outlier in the training window sets the scale for the
    /// next `train_every_n` ticks, which makes every later anomaly look small.
    MinMax,
    /// Distance divided by this quantile of the training vectors' distances: 1.0 = as far
    /// as the q-th training vector. A few outliers in the window do not move it.
    Quantile(f64),
}

/// The notebook's parameters plus what Lookout adds: the distance, the scale, the
/// ensemble and the learning gate.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
    pub distance: Distance,
    pub scale: Scale,
    /// Models of successive fits kept; a vector scores the lowest of their scores, so it
    /// is anomalous only when every one of them finds it so.
    pub ensemble: usize,
    /// Ticks ingested before the first fit; later fits follow `train_every_n`.
    pub min_train_points: usize,
    /// Context novelty beside the k-means score ([`ContextParams::OFF`] for none).
    pub context: ContextParams,
    /// Weight of the previous training set in the next fit (seed `003`'s iterative
    /// training), 0 to 1; 0 forgets it.
    pub decay: f64,
    /// Feature vectors kept from the long horizon (0: none, the ring is all it knows),
    /// one sampled in each stride of `long_stride` ticks.
    pub long_samples: usize,
    pub long_stride: usize,
    /// Refits start from the centres of the member they replace (and try `refit_restarts`
    /// k-means++ starts besides); `false`: every fit makes `n_init` fresh starts. Not in a snapshot
    /// (a restored model takes today's config's), so snapshots keep their format.
    #[serde(skip)]
    pub warm_start: bool,
    #[serde(skip)]
    pub refit_restarts: usize,
    /// Centre and scale each dimension by robust statistics of its training set, so that
    /// a dimension in volts does not drown one in g ([`robust_scale`]). Off only for parity
    /// with the notebook, which measures raw distances.
    pub scaling: bool,
    /// Leave out of training the vectors of ticks judged anomalous or alarming ([`Gate`]),
    /// so that a fault longer than a refit period is not learned as normal.
    pub gate: bool,
}

impl ModelParams {
    /// The seed notebook's parameters, exactly (parity with the reference depends on them).
    pub fn notebook() -> Self {
        Self {
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
            distance: Distance::Mean,
            scale: Scale::MinMax,
            ensemble: 1,
            min_train_points: 50,
            context: ContextParams::OFF,
            decay: 0.0,
            long_samples: 0,
            long_stride: 1,
            warm_start: false,
            refit_restarts: 0,
            scaling: false,
            gate: false,
        }
    }

    pub fn kmeans(&self) -> KMeansParams {
        KMeansParams {
            k: self.n_clusters,
            n_init: self.n_init,
            max_iter: self.max_iter,
            tol: 1e-4,
            seed: self.seed,
        }
    }

    /// Width of a feature vector for `n_dims` dimensions.
    pub fn width(&self, n_dims: usize) -> usize {
        n_dims * (self.n_lags + 1)
    }

    /// Values in a model's ring, and in the staging buffer a fit of it needs: the last
    /// `train_data_size + n_lags` ticks, one value per dimension.
    pub fn ring_len(&self, n_dims: usize) -> usize {
        (self.train_data_size.max(1) + self.n_lags) * n_dims
    }

    /// Values a fit's staging buffer holds: the ring, then the long horizon's vectors.
    pub fn staging_len(&self, n_dims: usize) -> usize {
        self.ring_len(n_dims) + self.long_samples * self.width(n_dims)
    }

    /// Training vectors a fit may have: the ring's and the long horizon's.
    pub fn max_rows(&self) -> usize {
        self.train_data_size.max(1) + self.long_samples
    }

    /// Ticks after one judged anomalous whose vectors still hold its values: the lags,
    /// and the smoothing window that carries a raw value into the next ticks' features.
    fn taint_span(&self) -> usize {
        self.n_lags + self.n_smoothing.max(1) - 1 + usize::from(self.diffs)
    }
}

/// The training rule of [`ModelParams::gate`]: a vector is left out of a fit when its own
/// tick, or any of the [`ModelParams::taint_span`] ticks before it, was judged anomalous
/// or came while the model's alarm was firing. A fit keeps the ensemble as it is when
/// fewer than [`Gate::MIN_KEPT_SHARE`] of the window's vectors are left: a fault that
/// fills the window is not a training set.
pub struct Gate;

impl Gate {
    pub const MIN_KEPT_SHARE: f64 = 0.25;
}

/// Scratch space for fits, one per trainer thread: the rebuilt lag vectors, their
/// distances and the k-means workspace; and, for fits run inline, the staging buffer
/// the training set is copied into.
#[derive(Debug)]
pub struct FitWorkspace {
    kmeans: Workspace,
    vectors: Vec<f64>,
    distances: Vec<f64>,
    /// Per dimension, the training set's centre and 1 / scale.
    shift: Vec<f64>,
    inv: Vec<f64>,
    staging: Box<[f32]>,
}

impl FitWorkspace {
    pub fn new(max_rows: usize, max_width: usize, max_k: usize) -> Self {
        Self {
            kmeans: Workspace::new(max_rows, max_width, max_k),
            vectors: vec![0.0; max_rows * max_width],
            distances: vec![0.0; max_rows],
            shift: Vec::with_capacity(max_width),
            inv: Vec::with_capacity(max_width),
            staging: Box::default(),
        }
    }

    pub fn fits(&self, rows: usize, width: usize, k: usize) -> bool {
        self.kmeans.fits(rows, width, k)
    }
}

/// A training set on its way to the trainer and back, with the buffers it travels in.
#[derive(Debug)]
pub struct TrainJob {
    /// Per tick, one value per dimension, oldest tick first; then `long_rows` whole
    /// feature vectors of the long horizon.
    pub data: Box<[f32]>,
    /// Ticks in `data`.
    pub ticks: usize,
    pub long_rows: usize,
    pub n_dims: usize,
    pub n_lags: usize,
    pub kmeans: KMeansParams,
    pub distance: Distance,
    pub scale: Scale,
    /// In: the previous fit's centres when `prior` is set. Out: the new centres.
    pub centres: Box<[f64]>,
    /// In: how many training vectors each previous centre had. Out: the new counts.
    pub counts: Box<[u32]>,
    /// Whether `centres` and `counts` carry a previous fit: the warm start of a refit, and
    /// the previous training set's summary when `decay` > 0.
    pub prior: bool,
    pub decay: f64,
    /// `Some(restarts)`: a refit starts from the previous centres (when `prior`), then
    /// tries `restarts` k-means++ starts; `None`: every fit starts afresh (`n_init`).
    pub warm: Option<usize>,
    /// In: which of the ring's vectors are kept (one bit per row, set = left out).
    /// Rows left out are not in `data`'s row count ([`TrainJob::rows`]).
    pub skip: Box<[u64]>,
    pub skipped: usize,
    pub scaling: bool,
    /// Out: each dimension's weight in the distance, `1 / scale²` (all 1 without
    /// scaling). The centres come back in the data's own units.
    pub weights: Box<[f64]>,
    /// Out: each dimension's normal range, its [`NORMAL_RANGE`] percentiles over the
    /// training set (low, high, then the next dimension's).
    pub normal: Box<[f64]>,
    /// How distances become scores; `None` when the fit failed.
    norm: Option<Norm>,
}

impl TrainJob {
    /// Vectors in the training set: the ring's lag vectors and the long horizon's.
    pub fn rows(&self) -> usize {
        self.ticks.saturating_sub(self.n_lags) - self.skipped + self.long_rows
    }

    fn skips(&self, row: usize) -> bool {
        self.skipped > 0 && self.skip[row / 64] & (1 << (row % 64)) != 0
    }

    pub fn width(&self) -> usize {
        self.n_dims * (self.n_lags + 1)
    }

    /// Rows the previous fit adds: each of its centres `decay × count` times. Weighting a
    /// centre by repetition is weighted k-means with integer weights, and a fit's centres
    /// with their counts are the k-point summary of its training set.
    fn prior_rows(&self) -> usize {
        if !self.prior || self.decay <= 0.0 {
            return 0;
        }
        self.counts
            .iter()
            .map(|&c| (self.decay * f64::from(c)).round() as usize)
            .sum()
    }

    /// Writes the training set into `vectors`: the ring's kept lag vectors, the long
    /// horizon's, then the previous fit's centres repeated for `decay`.
    fn fill_vectors(&self, vectors: &mut [f64], rows: usize) {
        let (w, lag_w) = (self.width(), self.n_lags + 1);
        let (real, prior) = vectors.split_at_mut(rows * w);
        let (recent, long) = real.split_at_mut((rows - self.long_rows) * w);
        let ring_rows = self.ticks.saturating_sub(self.n_lags);
        let kept = (0..ring_rows).filter(|&r| !self.skips(r));
        for (r, v) in kept.zip(recent.chunks_exact_mut(w)) {
            for (i, dim) in v.chunks_exact_mut(lag_w).enumerate() {
                for (j, x) in dim.iter_mut().enumerate() {
                    *x = f64::from(self.data[(r + j) * self.n_dims + i]);
                }
            }
        }
        let at = self.ticks * self.n_dims;
        for (x, &y) in long.iter_mut().zip(&self.data[at..at + self.long_rows * w]) {
            *x = f64::from(y);
        }
        let mut out = prior.chunks_exact_mut(w);
        for (c, &n) in self.centres.chunks_exact(w).zip(self.counts.iter()) {
            for _ in 0..(self.decay * f64::from(n)).round() as usize {
                if let Some(row) = out.next() {
                    row.copy_from_slice(c);
                }
            }
        }
    }

    /// Each dimension's centre and 1 / scale from this training set alone (the prior's
    /// centres are in the same units and are scaled with it), into `ws.shift` and
    /// `ws.inv`, and the training set in scaled units: the fit runs in them.
    fn scale(&self, ws: &mut FitWorkspace, rows: usize, total: usize) {
        let (n_dims, w, lag_w) = (self.n_dims, self.width(), self.n_lags + 1);
        ws.shift.clear();
        ws.shift.resize(n_dims, 0.0);
        ws.inv.clear();
        ws.inv.resize(n_dims, 1.0);
        if !self.scaling {
            return;
        }
        let scratch = &mut ws.distances[..rows];
        for d in 0..n_dims {
            let newest = d * lag_w + lag_w - 1;
            let (m, inv) = robust_scale(&ws.vectors[..rows * w], w, newest, scratch);
            ws.shift[d] = m;
            ws.inv[d] = inv;
        }
        let (shift, inv) = (&ws.shift, &ws.inv);
        transform(&mut ws.vectors[..total * w], w, lag_w, |d, x| {
            (x - shift[d]) * inv[d]
        });
    }

    /// Each dimension's normal range over the training set's own vectors (not the prior's
    /// repeated centres), in the data's units: before [`TrainJob::scale`].
    fn measure_normal(&mut self, ws: &mut FitWorkspace, rows: usize) {
        let (w, lag_w) = (self.width(), self.n_lags + 1);
        let scratch = &mut ws.distances[..rows];
        for (d, range) in self.normal.chunks_exact_mut(2).enumerate() {
            let newest = d * lag_w + lag_w - 1;
            for (v, row) in scratch
                .iter_mut()
                .zip(ws.vectors[..rows * w].chunks_exact(w))
            {
                *v = row[newest];
            }
            range[0] = percentile(scratch, NORMAL_RANGE.0);
            range[1] = percentile(scratch, NORMAL_RANGE.1);
        }
    }

    /// Fits the centres and the scale. Runs on the trainer thread (or inline in `replay`);
    /// allocates nothing when `ws` is large enough.
    pub fn run(&mut self, ws: &mut FitWorkspace) {
        let (rows, w, k) = (self.rows(), self.width(), self.kmeans.k);
        self.norm = None;
        if rows == 0 {
            return;
        }
        let total = rows + self.prior_rows();
        if !ws.fits(total, w, k) {
            *ws = FitWorkspace::new(total, w, k);
        }
        let lag_w = self.n_lags + 1;
        self.fill_vectors(&mut ws.vectors[..total * w], rows);
        self.measure_normal(ws, rows);
        self.scale(ws, rows, total);
        let vectors = &mut ws.vectors[..total * w];
        let fitted = match self.warm {
            Some(restarts) if self.prior => {
                // The previous centres are kept in the data's units: into this fit's.
                if self.scaling {
                    let (shift, inv) = (&ws.shift, &ws.inv);
                    transform(&mut self.centres, w, lag_w, |d, x| (x - shift[d]) * inv[d]);
                }
                kmeans::refit(
                    &self.kmeans,
                    vectors,
                    total,
                    w,
                    &mut ws.kmeans,
                    &mut self.centres,
                    restarts,
                )
            }
            _ => kmeans::fit(
                &self.kmeans,
                vectors,
                total,
                w,
                &mut ws.kmeans,
                &mut self.centres,
            )
            .is_some(),
        };
        if !fitted {
            return;
        }
        let vectors = &ws.vectors[..rows * w];
        let dists = &mut ws.distances[..rows];
        nearest_counts_and_distances(
            self.distance,
            vectors,
            &self.centres,
            k,
            &mut self.counts,
            dists,
        );
        let (lo, hi) = match self.scale {
            Scale::MinMax => dists
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &d| {
                    (lo.min(d), hi.max(d))
                }),
            Scale::Quantile(q) => {
                let at = ((rows - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
                let (_, v, _) = dists.select_nth_unstable_by(at, f64::total_cmp);
                (0.0, *v)
            }
        };
        let span = hi - lo;
        // Back to the data's units; the distance weighs each value by 1 / scale².
        let (shift, inv) = (&ws.shift, &ws.inv);
        if self.scaling {
            transform(&mut self.centres, w, lag_w, |d, x| x / inv[d] + shift[d]);
        }
        for (wt, &i) in self.weights.iter_mut().zip(inv.iter()) {
            *wt = i * i;
        }
        self.norm = Some(Norm {
            lo,
            hi,
            inv_span: (span > f64::EPSILON * hi.abs().max(1.0)).then(|| 1.0 / span),
        });
    }
}

/// One pass over the training vectors: how many have each centre as their nearest (the
/// first of equals), into `counts`, and each one's distance as scores measure it, into
/// `dists`.
fn nearest_counts_and_distances(
    kind: Distance,
    vectors: &[f64],
    centres: &[f64],
    k: usize,
    counts: &mut [u32],
    dists: &mut [f64],
) {
    let w = centres.len() / k.max(1);
    counts.fill(0);
    for (d, v) in dists.iter_mut().zip(vectors.chunks_exact(w)) {
        let (mut nearest, mut best) = (0, f64::INFINITY);
        let mut sum = 0.0;
        for (j, c) in centres.chunks_exact(w).enumerate() {
            let d2 = kmeans::dist2(v, c);
            if kind == Distance::Mean {
                sum += d2.sqrt();
            }
            if d2 < best {
                (nearest, best) = (j, d2);
            }
        }
        counts[nearest] += 1;
        *d = match kind {
            Distance::Nearest => best.sqrt(),
            Distance::Mean => sum / k as f64,
        };
    }
}

/// [`distance`] with each dimension weighted (`weights`: 1 / scale² of each): the
/// distance in scaled units to centres kept in the data's own.
///
/// The hottest loop of a scored tick (an ensemble of 12 fits of 6 centres is 72
/// distances). The number of dimensions is decided once, outside the loop over centres,
/// and one and two dimensions, the usual models, are written out: through [`wdist2`]'s
/// general chain of iterator adapters a 2-dimension tick was a call per centre and cost
/// three times a 1-dimension one. Every path sums in the same order: the same bits.
#[inline(always)]
fn weighted_distance(kind: Distance, x: &[f64], centres: &[f32], k: usize, weights: &[f64]) -> f64 {
    match *weights {
        // The shipped five lags: fixed-size blocks the compiler unrolls, the same sums.
        [w] if x.len() == 6 => {
            let x6 = lags6(x);
            over_centres(kind, x, centres, k, |_, c| w * dist2_6(x6, lags6_32(c)))
        }
        [w0, w1] if x.len() == 12 => {
            let (x0, x1) = (lags6(&x[..6]), lags6(&x[6..]));
            over_centres(kind, x, centres, k, |_, c| {
                w0 * dist2_6(x0, lags6_32(&c[..6])) + w1 * dist2_6(x1, lags6_32(&c[6..]))
            })
        }
        [w] => over_centres(kind, x, centres, k, |x, c| w * dist2_32(x, c)),
        [w0, w1] => {
            let lag_w = x.len() / 2;
            let (x0, x1) = x.split_at(lag_w);
            over_centres(kind, x, centres, k, |_, c| {
                let (c0, c1) = c.split_at(lag_w);
                w0 * dist2_32(x0, c0) + w1 * dist2_32(x1, c1)
            })
        }
        _ => over_centres(kind, x, centres, k, |x, c| wdist2(x, c, weights)),
    }
}

/// The nearest (or mean) of `d2`'s squared distances from `x` to each of `k` centres.
#[inline(always)]
fn over_centres(
    kind: Distance,
    x: &[f64],
    centres: &[f32],
    k: usize,
    d2: impl Fn(&[f64], &[f32]) -> f64,
) -> f64 {
    let d = x.len();
    let it = centres[..k * d].chunks_exact(d).map(|c| d2(x, c));
    match kind {
        Distance::Mean => it.map(f64::sqrt).sum::<f64>() / k as f64,
        Distance::Nearest => it.fold(f64::INFINITY, f64::min).sqrt(),
    }
}

/// Squared distance with each dimension's block of lags weighted by its dimension's
/// weight, to a centre kept in `f32`.
#[inline(always)]
fn wdist2(x: &[f64], c: &[f32], weights: &[f64]) -> f64 {
    let lag_w = x.len() / weights.len().max(1);
    if weights.len() == 1 {
        return weights[0] * dist2_32(x, c);
    }
    x.chunks_exact(lag_w)
        .zip(c.chunks_exact(lag_w))
        .zip(weights)
        .map(|((x, c), w)| w * dist2_32(x, c))
        .sum()
}

fn lags6(x: &[f64]) -> &[f64; 6] {
    x.try_into().expect("a block of six lags")
}

fn lags6_32(c: &[f32]) -> &[f32; 6] {
    c.try_into().expect("a block of six lags")
}

/// [`dist2_32`] for six values, summed in the same order (four lanes, then the two
/// left over), so that each score keeps its bits.
#[inline(always)]
fn dist2_6(a: &[f64; 6], b: &[f32; 6]) -> f64 {
    let t = |i: usize| {
        let t = a[i] - f64::from(b[i]);
        t * t
    };
    ((t(0) + t(2)) + (t(1) + t(3))) + t(4) + t(5)
}

/// `kmeans::dist2` to an `f32` centre, summed in `f64` in the same four lanes.
#[inline(always)]
fn dist2_32(a: &[f64], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..4 {
            let t = x[i] - f64::from(y[i]);
            acc[i] += t * t;
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        let t = x - f64::from(y);
        s += t * t;
    }
    s
}

/// Serde for `f32` values written as `f64`: the centres were `f64` when snapshot format 4
/// was made, and an `f32` widens to `f64` exactly, so old and new snapshots read alike.
mod f32s_as_f64s {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::ser::{SerializeSeq, Serializer};

    pub fn serialize<S: Serializer>(values: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(values.len()))?;
        for &v in values {
            seq.serialize_element(&f64::from(v))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[f32]>, D::Error> {
        struct Widened;
        impl<'de> Visitor<'de> for Widened {
            type Value = Box<[f32]>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // The length hint comes from the input: capped so a forged length cannot
                // allocate before the elements are there.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(v) = seq.next_element::<f64>()? {
                    out.push(v as f32);
                }
                Ok(out.into_boxed_slice())
            }
        }
        d.deserialize_seq(Widened)
    }
}

/// Applies `f(dimension, value)` to every value of `rows` (whole feature vectors, each
/// dimension's `lag_w` values side by side).
fn transform(rows: &mut [f64], w: usize, lag_w: usize, f: impl Fn(usize, f64) -> f64) {
    for row in rows.chunks_exact_mut(w) {
        for (d, dim) in row.chunks_exact_mut(lag_w).enumerate() {
            for x in dim {
                *x = f(d, *x);
            }
        }
    }
}

/// A dimension's centre and 1 / scale from the training vectors' newest values of it (at
/// `at` in each row of width `w`): the median, and the larger of the median absolute
/// deviation × 1.4826 and the standard deviation. On normal data both are the standard
/// deviation. On a sparse or bursty series (disk reads: zero but for bursts) the MAD
/// collapses towards 0 and would blow every burst up to a giant, so the standard deviation
/// holds it; a fault cannot inflate it, since the gate keeps faults out of training. A
/// dimension constant in training is scaled by a floor of 0.1 % of its level (10⁻⁹ at 0),
/// so that any change of it is news without dividing by zero.
pub(crate) fn robust_scale(rows: &[f64], w: usize, at: usize, scratch: &mut [f64]) -> (f64, f64) {
    let n = rows.len() / w;
    if n == 0 {
        return (0.0, 1.0);
    }
    let values = &mut scratch[..n];
    for (v, row) in values.iter_mut().zip(rows.chunks_exact(w)) {
        *v = row[at];
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    let median = median_of(values);
    for v in values.iter_mut() {
        *v = (*v - median).abs();
    }
    let scale = (1.4826 * median_of(values)).max(var.sqrt());
    let floor = (1e-3 * median.abs()).max(1e-9);
    (median, 1.0 / scale.max(floor))
}

/// The value at rank `round((n − 1) × q)` of `values` (reordered), the rank rule of the
/// quantile scale.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let at = ((values.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    *values.select_nth_unstable_by(at, f64::total_cmp).1
}

fn median_of(values: &mut [f64]) -> f64 {
    let n = values.len();
    let (_, hi, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let hi = *hi;
    if n % 2 == 1 {
        return hi;
    }
    let lo = values[..n / 2]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    (lo + hi) / 2.0
}

/// How raw distances become scores: `(distance − lo) / (hi − lo)`, with
/// 1 / (hi − lo) taken once at fit time; `None` when hi = lo (flat training data).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct Norm {
    lo: f64,
    hi: f64,
    inv_span: Option<f64>,
}

impl Norm {
    /// When every training vector was equally far from the centres (flat training data)
    /// the notebook divides by zero; here a vector no farther than they were scores 0 and
    /// anything farther scores the cap, because on a flat series any change is news.
    #[inline(always)]
    fn score(&self, m: f64, cap: f64) -> f64 {
        match self.inv_span {
            // Multiplying by a reciprocal taken at fit time: a division here would be the
            // slowest instruction of the tick.
            Some(inv) => (m - self.lo) * inv,
            None if m <= self.hi + 1e-9 * self.hi.abs().max(1.0) => 0.0,
            None => cap,
        }
    }
}

/// Centres and counts buffers kept for the next fit. The training data travels in a
/// staging buffer the caller lends ([`Model::take_training_set`]): one pool shared by all
/// models instead of a copy of the ring in each, which would be a third of a model.
#[derive(Debug)]
struct Spare {
    centres: Box<[f64]>,
    counts: Box<[u32]>,
    skip: Box<[u64]>,
    weights: Box<[f64]>,
    normal: Box<[f64]>,
}

/// The percentiles a dimension's normal range spans: wide enough to hold a normal day's
/// ordinary swings, narrow enough that one burst in the training set does not stretch it.
pub const NORMAL_RANGE: (f64, f64) = (0.05, 0.95);

/// One dimension's part in the current tick's distance ([`Model::attribution`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DimShare {
    /// Share, 0 to 1, of the squared distance to the nearest centre.
    pub share: f64,
    /// The dimension's newest feature: its smoothed value (its change with `diffs`).
    pub value: f64,
    /// The same feature's [`NORMAL_RANGE`] over the newest fit's training set.
    pub normal: Option<(f64, f64)>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Model {
    params: ModelParams,
    dims: Vec<DimPreprocessor>,
    width: usize,
    /// The last `train_data_size + n_lags` ticks' features, one `f32` per dimension,
    /// oldest at `ring_head`.
    ring: Box<[f32]>,
    ring_head: usize,
    ring_len: usize,
    current: Box<[f64]>,
    has_current: bool,
    /// Values ingested so far: the notebook's step counter `n`.
    step: u64,
    fit_requested: bool,
    /// A fit was due but could not start (no staging buffer free, or one in flight): try
    /// again at the next tick instead of waiting for the next scheduled one.
    fit_pending: bool,
    /// `ensemble` sets of centres, and the scale of each, filled round-robin. Kept as
    /// `f32`, as the ring is: a centre is a mean of `f32` features, and at 2 dimensions the
    /// twelve members' centres are 3,456 bytes less. Saved as `f64`, so snapshots keep
    /// their format.
    #[serde(with = "f32s_as_f64s")]
    centres: Box<[f32]>,
    norms: Box<[Option<Norm>]>,
    /// Each member's distance weights, one per dimension.
    weights: Box<[f64]>,
    /// The step at which each member was installed.
    fitted_at: Box<[u64]>,
    /// Per ring slot, whether its tick was judged anomalous or alarming ([`Gate`]).
    marked: Box<[u64]>,
    /// The ring slot this tick's features went to, until the tick is judged.
    last_slot: Option<usize>,
    /// The gate is open before this step (one window after a new normal was accepted).
    ungated_until: u64,
    /// The rows the next fit leaves out, one bit per row; swapped with the spare's.
    #[serde(skip)]
    skip_scratch: Box<[u64]>,
    next_member: usize,
    /// Buffers lent to the trainer; `None` while a fit is in flight. Not in a snapshot:
    /// a restored model makes new ones ([`Model::restored`]).
    #[serde(skip)]
    spare: Option<Spare>,
    context: Context,
    /// Training vectors per centre of the newest fit, for `decay`.
    counts: Box<[u32]>,
    /// The long horizon: `long_samples` feature vectors, filled round-robin.
    long: Box<[f32]>,
    long_head: usize,
    long_len: usize,
    /// The step from which the next long-horizon sample is taken (at the first tick
    /// judged normal from then on).
    long_next: u64,
    /// Per dimension, the normal range (low, high) of the newest fit's training set.
    /// Saved after the rest of a snapshot ([`Model::normal_range`]), so that snapshots
    /// taken before it existed still read.
    #[serde(skip)]
    normal: Box<[f64]>,
    #[serde(skip)]
    normal_known: bool,
}

impl Model {
    pub fn new(params: ModelParams, n_dims: usize) -> Self {
        let dims: Vec<DimPreprocessor> = (0..n_dims)
            .map(|_| DimPreprocessor::new(params.n_smoothing, params.diffs, params.n_lags))
            .collect();
        let width = params.width(n_dims);
        let ring_len = params.ring_len(n_dims);
        let ring_ticks = ring_len / n_dims.max(1);
        let members = params.ensemble.max(1);
        let kw = params.n_clusters * width;
        Self {
            params,
            dims,
            width,
            ring: vec![0.0; ring_len].into_boxed_slice(),
            ring_head: 0,
            ring_len: 0,
            current: vec![0.0; width].into_boxed_slice(),
            has_current: false,
            step: 0,
            fit_requested: false,
            fit_pending: false,
            centres: vec![0.0f32; members * kw].into_boxed_slice(),
            norms: vec![None; members].into_boxed_slice(),
            weights: vec![1.0; members * n_dims].into_boxed_slice(),
            fitted_at: vec![0; members].into_boxed_slice(),
            marked: vec![0; ring_ticks.div_ceil(64)].into_boxed_slice(),
            last_slot: None,
            ungated_until: 0,
            skip_scratch: vec![0; ring_ticks.div_ceil(64)].into_boxed_slice(),
            next_member: 0,
            spare: Some(Spare {
                centres: vec![0.0; kw].into_boxed_slice(),
                counts: vec![0; params.n_clusters].into_boxed_slice(),
                skip: vec![0; ring_ticks.div_ceil(64)].into_boxed_slice(),
                weights: vec![1.0; n_dims].into_boxed_slice(),
                normal: vec![0.0; 2 * n_dims].into_boxed_slice(),
            }),
            context: Context::new(params.context, n_dims),
            counts: vec![0; params.n_clusters].into_boxed_slice(),
            long: vec![0.0; params.long_samples * width].into_boxed_slice(),
            long_head: 0,
            long_len: 0,
            long_next: sample_at(params.seed, 0, params.long_stride),
            normal: vec![0.0; 2 * n_dims].into_boxed_slice(),
            normal_known: false,
        }
    }

    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// A model read back from a snapshot, made ready to run with `params`: the buffers a
    /// fit borrows are made again (a fit in flight when the snapshot was taken is lost:
    /// the next one is due on schedule), and the parameters that do not change the
    /// model's shape (schedule, restarts, scale, cap) are today's config's. `None` when
    /// the snapshot does not fit `params` and `n_dims` (a config change the caller should
    /// have caught by its shape key).
    pub fn restored(mut self, params: ModelParams, n_dims: usize) -> Option<Self> {
        let fresh = Model::new(params, n_dims);
        let same_shape = self.dims.len() == n_dims
            && self.width == fresh.width
            && self.ring.len() == fresh.ring.len()
            && self.centres.len() == fresh.centres.len()
            && self.norms.len() == fresh.norms.len()
            && self.weights.len() == fresh.weights.len()
            && self.fitted_at.len() == fresh.fitted_at.len()
            && self.marked.len() == fresh.marked.len()
            && self.counts.len() == fresh.counts.len()
            && self.current.len() == fresh.current.len()
            && self.long.len() == fresh.long.len();
        if !same_shape {
            return None;
        }
        self.params = params;
        self.spare = fresh.spare;
        self.skip_scratch = fresh.skip_scratch;
        self.fit_pending = false;
        self.normal = fresh.normal;
        self.normal_known = false;
        Some(self)
    }

    /// Each dimension's normal range (low, high, then the next dimension's), for a
    /// snapshot; `None` before a fit has measured it.
    pub fn normal_range(&self) -> Option<&[f64]> {
        self.normal_known.then_some(&*self.normal)
    }

    /// Takes back what [`Model::normal_range`] saved. A snapshot without one (taken by an
    /// older agent) or of another length makes a trained model fit at its next tick, which
    /// measures it from the restored training ring.
    pub fn restore_normal_range(&mut self, saved: Option<&[f64]>) {
        match saved {
            Some(r) if r.len() == self.normal.len() && r.iter().all(|v| v.is_finite()) => {
                self.normal.copy_from_slice(r);
                self.normal_known = true;
            }
            _ => {
                self.normal_known = false;
                if self.is_trained() {
                    self.fit_pending = true;
                }
            }
        }
    }

    /// Ticks from the first value to the first complete feature vector.
    pub fn warmup_ticks(&self) -> u32 {
        self.dims.first().map_or(0, |d| d.warmup() as u32)
    }

    pub fn n_dims(&self) -> usize {
        self.dims.len()
    }

    /// Width of a feature vector: dimensions × (`n_lags` + 1).
    pub fn width(&self) -> usize {
        self.width
    }

    pub fn is_trained(&self) -> bool {
        self.norms.iter().any(Option::is_some)
    }

    pub fn is_training(&self) -> bool {
        self.spare.is_none()
    }

    /// Feeds one value per dimension, in the model's dimension order. Returns whether a
    /// fit is due at this step: the first once `min_train_points` values are in, then
    /// whenever `n % train_every_n == 0` (the notebook's schedule), and at every step
    /// after one that could not start. A non-finite value is refused without advancing
    /// the model.
    pub fn ingest(&mut self, values: &[f64]) -> Result<bool, NonFinite> {
        if values.len() != self.dims.len() || values.iter().any(|v| !v.is_finite()) {
            return Err(NonFinite);
        }
        let n = self.step;
        self.step += 1;
        self.context.push(values);
        let n_dims = self.dims.len();
        let ticks = self.ring.len() / n_dims.max(1);
        let mut slot = self.ring_head + self.ring_len;
        if slot >= ticks {
            slot -= ticks;
        }
        let mut produced = true;
        for (i, (p, &v)) in self.dims.iter_mut().zip(values).enumerate() {
            match p.push(v) {
                Some(f) => self.ring[slot * n_dims + i] = f as f32,
                None => produced = false,
            }
        }
        self.last_slot = produced.then_some(slot);
        if produced {
            self.marked[slot / 64] &= !(1 << (slot % 64));
            if self.ring_len < ticks {
                self.ring_len += 1;
            } else {
                self.ring_head += 1;
                if self.ring_head == ticks {
                    self.ring_head = 0;
                }
            }
        }
        self.has_current = self.dims.iter().all(DimPreprocessor::is_ready);
        if self.has_current {
            let w = self.params.n_lags + 1;
            for (i, p) in self.dims.iter().enumerate() {
                p.write_features(&mut self.current[i * w..(i + 1) * w]);
            }
        }
        let every = self.params.train_every_n.max(1) as u64;
        let due = n >= self.params.min_train_points as u64
            && (n.is_multiple_of(every) || !self.fit_requested);
        if due && !self.fit_requested {
            self.context.start();
            self.seed_context();
        }
        self.fit_requested |= due;
        self.fit_pending |= due;
        Ok(self.fit_pending)
    }

    /// The decider's judgement of this tick. A tick not `learn`able (anomalous or stuck
    /// once the model has settled, or while its alarm fires) is marked so that fits leave
    /// its vectors out ([`Gate`]); only a `normal` one may be the long horizon's due sample
    /// (it waits for the next normal tick otherwise).
    pub fn judged(&mut self, normal: bool, learn: bool) {
        if let Some(slot) = self.last_slot.take()
            && !learn
            && self.params.gate
            && self.step >= self.ungated_until
        {
            self.marked[slot / 64] |= 1 << (slot % 64);
        }
        self.offer_sample(normal);
    }

    /// Marks the last `n` ticks (this one included) as left out of training: an episode
    /// found to be a fault is left out from its start.
    pub fn mark_recent(&mut self, n: usize) {
        if !self.params.gate || self.step < self.ungated_until {
            return;
        }
        let ticks = self.ring.len() / self.dims.len().max(1);
        for i in 0..n.min(self.ring_len) {
            let slot = (self.ring_head + self.ring_len - 1 - i) % ticks;
            self.marked[slot / 64] |= 1 << (slot % 64);
        }
    }

    /// Takes the marks off the last `n` ticks: an episode held out while it was open ended
    /// before it was a fault, and what it held out is learned after all.
    pub fn unmark_recent(&mut self, n: usize) {
        let ticks = self.ring.len() / self.dims.len().max(1);
        for i in 0..n.min(self.ring_len) {
            let slot = (self.ring_head + self.ring_len - 1 - i) % ticks;
            self.marked[slot / 64] &= !(1 << (slot % 64));
        }
    }

    /// Drops the ensemble members fitted in the last `n` ticks: they took in the start of
    /// what has turned out to be a fault, and one member that finds it normal is enough to
    /// silence it (a tick scores the lowest of the members' scores). The oldest member is
    /// kept if every one would go, so that the model keeps scoring.
    pub fn forget_fits_within(&mut self, n: usize) {
        if !self.params.gate {
            return;
        }
        let since = self.step.saturating_sub(n as u64);
        let recent = |i: usize, m: &Self| m.norms[i].is_some() && m.fitted_at[i] >= since;
        let members = self.norms.len();
        let keep = (0..members)
            .filter(|&i| self.norms[i].is_some())
            .min_by_key(|&i| self.fitted_at[i])
            .filter(|_| (0..members).all(|i| self.norms[i].is_none() || recent(i, self)));
        for i in 0..members {
            if recent(i, self) && Some(i) != keep {
                self.norms[i] = None;
            }
        }
    }

    /// Forgets every mark: the ticks the gate left out become training data, for a new
    /// normal accepted after `accept_after` or ordered by an operator. The next tick fits,
    /// and the gate stays open for one window, so that the fits of that window learn the
    /// new normal as it goes on instead of leaving out what still looks new to them.
    pub fn accept_new_normal(&mut self) {
        self.marked.fill(0);
        self.ungated_until = self.step + self.params.train_data_size as u64;
        self.fit_requested = true;
        self.fit_pending = true;
    }

    fn offer_sample(&mut self, normal: bool) {
        if self.long.is_empty() || !self.has_current || !normal || self.step < self.long_next {
            return;
        }
        let w = self.width;
        let slot = self.long_head;
        for (x, &y) in self.long[slot * w..(slot + 1) * w]
            .iter_mut()
            .zip(self.current.iter())
        {
            *x = y as f32;
        }
        let n = self.long.len() / w;
        self.long_head = (slot + 1) % n;
        self.long_len = (self.long_len + 1).min(n);
        let stride = self.params.long_stride.max(1) as u64;
        self.long_next = sample_at(
            self.params.seed,
            self.step / stride + 1,
            self.params.long_stride,
        );
    }

    /// Long-horizon vectors held (at most `long_samples`).
    pub fn long_len(&self) -> usize {
        self.long_len
    }

    /// Marks the contexts of the training window as seen, at the first fit: the model
    /// learned those ticks as normal, so their order must not look new to the context
    /// detector either (without this, everything right after the first fit, or after a
    /// restart that replays familiar data, is "an order never seen before"). The ring
    /// holds smoothed values rather than raw ones: close enough to fall in the same bands.
    fn seed_context(&mut self) {
        let n_dims = self.dims.len();
        let ticks = self.ring.len() / n_dims.max(1);
        let mut values = vec![0.0; n_dims];
        for i in 0..self.ring_len {
            let slot = (self.ring_head + i) % ticks;
            for (d, v) in values.iter_mut().enumerate() {
                *v = f64::from(self.ring[slot * n_dims + d]);
            }
            self.context.remember(&values);
        }
        self.context.end_seeding();
    }

    /// The current vector's score, or `None` before the first fit: the lowest score any
    /// member of the ensemble gives it, capped at `anomaly_score_cap`.
    pub fn score(&self) -> Option<f64> {
        if !self.has_current {
            return None;
        }
        let cap = self.params.anomaly_score_cap;
        let k = self.params.n_clusters;
        let kw = k * self.width;
        let mut best: Option<f64> = None;
        let members = self
            .centres
            .chunks_exact(kw)
            .zip(self.weights.chunks_exact(self.dims.len()));
        for (norm, (centres, weights)) in self.norms.iter().zip(members) {
            if let Some(norm) = norm {
                let m = weighted_distance(self.params.distance, &self.current, centres, k, weights);
                let s = norm.score(m, cap);
                best = Some(best.map_or(s, |b: f64| b.min(s)));
            }
        }
        best.map(|s| s.min(cap))
    }

    /// Which side of normal the current tick lies on, for `direction` and saturation: the
    /// sum over dimensions of the newest feature minus the same feature of the nearest
    /// centre of the newest fit, each in its dimension's scaled units (so a dimension in
    /// volts does not outvote one in g). Positive above, negative below, 0 before any fit.
    pub fn deviation(&self) -> f64 {
        let members = self.norms.len();
        let newest = (self.next_member + members - 1) % members;
        if !self.has_current || self.norms[newest].is_none() {
            return 0.0;
        }
        let w = self.width;
        let kw = self.params.n_clusters * w;
        let centres = &self.centres[newest * kw..(newest + 1) * kw];
        let n_dims = self.dims.len();
        let weights = &self.weights[newest * n_dims..(newest + 1) * n_dims];
        let d2 = |c: &[f32]| wdist2(&self.current, c, weights);
        let nearest = centres
            .chunks_exact(w)
            .min_by(|a, b| d2(a).total_cmp(&d2(b)))
            .unwrap_or(&centres[..w]);
        let lag_w = self.params.n_lags + 1;
        (0..self.dims.len())
            .map(|i| {
                let at = i * lag_w + lag_w - 1;
                (self.current[at] - f64::from(nearest[at])) * weights[i].sqrt()
            })
            .sum()
    }

    /// Which dimensions put the current tick where it is, in dimension order; `None`
    /// before the first fit. The ensemble member that gives the tick its score (the lowest)
    /// is the one asked: each dimension's share is its part of the weighted squared
    /// distance (its lags together, in scaled units) to that member's nearest centre, so
    /// the shares sum to 1 (all 0 on a centre). With `distance = "mean"` the score is the
    /// mean distance to all centres, but "which dimension" still means "away from the
    /// nearest normal". Allocates: the decider asks only on anomalous ticks.
    pub fn attribution(&self) -> Option<Vec<DimShare>> {
        if !self.has_current {
            return None;
        }
        let (k, w, n_dims) = (self.params.n_clusters, self.width, self.dims.len());
        let cap = self.params.anomaly_score_cap;
        let kw = k * w;
        let members = self
            .centres
            .chunks_exact(kw)
            .zip(self.weights.chunks_exact(n_dims));
        let (_, centres, weights) = self
            .norms
            .iter()
            .zip(members)
            .filter_map(|(norm, (centres, weights))| {
                let norm = (*norm)?;
                let m = weighted_distance(self.params.distance, &self.current, centres, k, weights);
                Some((norm.score(m, cap), centres, weights))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))?;
        let d2 = |c: &[f32]| wdist2(&self.current, c, weights);
        let nearest = centres
            .chunks_exact(w)
            .min_by(|a, b| d2(a).total_cmp(&d2(b)))?;
        let lag_w = self.params.n_lags + 1;
        let parts = self
            .current
            .chunks_exact(lag_w)
            .zip(nearest.chunks_exact(lag_w))
            .zip(weights)
            .map(|((x, c), wt)| wt * dist2_32(x, c));
        let total: f64 = parts.clone().sum();
        let shares = parts.enumerate().map(|(d, part)| DimShare {
            share: if total > 0.0 { part / total } else { 0.0 },
            value: self.current[d * lag_w + lag_w - 1],
            normal: self
                .normal_known
                .then(|| (self.normal[2 * d], self.normal[2 * d + 1])),
        });
        Some(shares.collect())
    }

    /// Dimension `d` as the model saw it `back` features ago (0: the newest), from the
    /// training ring: its smoothed value, or its per-tick change with `diffs`. What a
    /// picture of the anomaly draws, read where it already is instead of kept twice.
    /// `None` beyond what the ring holds.
    pub fn recent(&self, d: usize, back: usize) -> Option<f64> {
        let n_dims = self.dims.len();
        if d >= n_dims || back >= self.ring_len {
            return None;
        }
        let ticks = self.ring.len() / n_dims;
        let slot = (self.ring_head + self.ring_len - 1 - back) % ticks;
        Some(f64::from(self.ring[slot * n_dims + d]))
    }

    /// Whether this tick's values became a feature in the ring ([`Model::recent`]): not
    /// while the smoothing or the differences are still filling.
    pub fn produced(&self) -> bool {
        self.last_slot.is_some()
    }

    /// Share of the last ticks whose context was never seen (see [`Context`]); `None`
    /// while learning or when the context detector is off.
    pub fn novelty(&self) -> Option<f64> {
        self.context.novelty()
    }

    /// Copies the training set, oldest tick first, into `data` (at least
    /// [`ModelParams::ring_len`] long) and lends it to a fit. Hands `data` back while
    /// another fit of this model is in flight (the fit stays pending) or before any
    /// complete vector exists (this fit is skipped).
    // The buffer comes back by value on purpose: boxing the error would allocate.
    #[allow(clippy::result_large_err)]
    pub fn take_training_set(&mut self, mut data: Box<[f32]>) -> Result<TrainJob, Box<[f32]>> {
        if self.ring_len <= self.params.n_lags {
            self.fit_pending = false;
            return Err(data);
        }
        let long_values = self.long_len * self.width;
        if data.len() < self.ring.len() + long_values {
            return Err(data);
        }
        let ring_rows = self.ring_len - self.params.n_lags;
        let skipped = self.mark_skips(ring_rows);
        if skipped > 0 && ((ring_rows - skipped) as f64) < Gate::MIN_KEPT_SHARE * ring_rows as f64 {
            // Mostly a fault: no fit, the ensemble stays as it is.
            self.fit_pending = false;
            return Err(data);
        }
        let Some(Spare {
            mut centres,
            mut counts,
            skip,
            weights,
            normal,
        }) = self.spare.take()
        else {
            return Err(data);
        };
        let skip = std::mem::replace(&mut self.skip_scratch, skip);
        self.fit_pending = false;
        let n_dims = self.dims.len();
        let ticks = self.ring.len() / n_dims;
        // Two copies of contiguous runs: the ring from its head to the end, then its start.
        let first = (ticks - self.ring_head).min(self.ring_len);
        let (a, b) = (self.ring_head * n_dims, (self.ring_head + first) * n_dims);
        data[..first * n_dims].copy_from_slice(&self.ring[a..b]);
        let rest = self.ring_len - first;
        data[first * n_dims..self.ring_len * n_dims].copy_from_slice(&self.ring[..rest * n_dims]);
        // The long horizon's vectors follow the ticks; their order does not matter to a fit.
        let at = self.ring_len * n_dims;
        data[at..at + long_values].copy_from_slice(&self.long[..long_values]);
        let members = self.norms.len();
        let newest = (self.next_member + members - 1) % members;
        // A warm refit continues the member it replaces, not the newest: each member is
        // then a chain of its own, and the ensemble keeps members that disagree (all
        // starting from the newest made them one clustering twelve times, and the lowest
        // score of twelve alike scores is no calmer than one). An empty slot (the first
        // round, or a member the gate dropped) gets a fresh fit. `decay` weighs in the
        // newest fit's summary, so it keeps starting from there.
        let source = if self.params.warm_start && self.params.decay <= 0.0 {
            self.next_member
        } else {
            newest
        };
        let prior = self.norms[source].is_some();
        if prior {
            let kw = centres.len();
            for (c, &v) in centres
                .iter_mut()
                .zip(&self.centres[source * kw..(source + 1) * kw])
            {
                *c = f64::from(v);
            }
            counts.copy_from_slice(&self.counts);
        }
        Ok(TrainJob {
            data,
            ticks: self.ring_len,
            long_rows: self.long_len,
            n_dims,
            n_lags: self.params.n_lags,
            kmeans: self.params.kmeans(),
            distance: self.params.distance,
            scale: self.params.scale,
            centres,
            counts,
            prior,
            decay: self.params.decay,
            warm: self.params.warm_start.then_some(self.params.refit_restarts),
            skip,
            skipped,
            scaling: self.params.scaling,
            weights,
            normal,
            norm: None,
        })
    }

    /// Fills `skip_scratch` with the ring rows [`Gate`] leaves out (row `r`: the vector
    /// ending at the ring's tick `r + n_lags`, oldest first); returns how many.
    fn mark_skips(&mut self, ring_rows: usize) -> usize {
        self.skip_scratch.fill(0);
        if !self.params.gate {
            return 0;
        }
        let ticks = self.ring.len() / self.dims.len().max(1);
        let span = self.params.taint_span();
        let n_lags = self.params.n_lags;
        // Ticks since the last marked one, walking the ring oldest first.
        let mut since = usize::MAX;
        let mut skipped = 0;
        for t in 0..self.ring_len {
            let slot = (self.ring_head + t) % ticks;
            if self.marked[slot / 64] & (1 << (slot % 64)) != 0 {
                since = 0;
            } else {
                since = since.saturating_add(1);
            }
            if t >= n_lags && since <= span {
                let row = t - n_lags;
                if row < ring_rows {
                    self.skip_scratch[row / 64] |= 1 << (row % 64);
                    skipped += 1;
                }
            }
        }
        skipped
    }

    /// Takes a finished fit back: a successful one replaces the oldest ensemble member,
    /// and the buffers are kept for the next fit. Returns the staging buffer to its owner.
    pub fn install(&mut self, job: TrainJob) -> Box<[f32]> {
        if let Some(norm) = job.norm {
            let kw = job.centres.len();
            let slot = self.next_member;
            for (c, &v) in self.centres[slot * kw..(slot + 1) * kw]
                .iter_mut()
                .zip(job.centres.iter())
            {
                *c = v as f32;
            }
            self.norms[slot] = Some(norm);
            let w = job.weights.len();
            self.weights[slot * w..(slot + 1) * w].copy_from_slice(&job.weights);
            self.fitted_at[slot] = self.step;
            self.next_member = (slot + 1) % self.norms.len();
            self.counts.copy_from_slice(&job.counts);
            if job.normal.iter().all(|v| v.is_finite()) {
                self.normal.copy_from_slice(&job.normal);
                self.normal_known = true;
            }
        }
        self.spare = Some(Spare {
            centres: job.centres,
            counts: job.counts,
            skip: job.skip,
            weights: job.weights,
            normal: job.normal,
        });
        job.data
    }

    /// Fits inline (for `replay` and tests) with the workspace's staging buffer; the agent
    /// uses the trainer thread instead.
    pub fn fit_now(&mut self, ws: &mut FitWorkspace) {
        let mut staging = std::mem::take(&mut ws.staging);
        let need = self.ring.len() + self.long.len();
        if staging.len() < need {
            staging = vec![0.0; need].into_boxed_slice();
        }
        ws.staging = match self.take_training_set(staging) {
            Ok(mut job) => {
                job.run(ws);
                self.install(job)
            }
            Err(staging) => staging,
        };
    }

    /// Sizes of every buffer and what it may hold, for tests that prove memory is bounded.
    pub fn buffer_report(&self) -> BufferReport {
        let spare_centres = self
            .spare
            .as_ref()
            .map_or(0, |s| s.centres.len() + s.weights.len());
        BufferReport {
            ring_len: self.ring_len * self.dims.len(),
            ring_capacity: self.ring.len(),
            spare_centres,
            centres: self.centres.len(),
            current: self.current.len(),
        }
    }

    /// Bytes this model holds, buffers included: what `BENCHMARKS.md` reports per model.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let r = self.buffer_report();
        let f32s = r.ring_capacity + self.long.len() + r.centres;
        let f64s = r.spare_centres + r.current;
        let pre: usize = self.dims.iter().map(DimPreprocessor::heap_bytes).sum();
        size_of::<Self>()
            + f32s * size_of::<f32>()
            + f64s * size_of::<f64>()
            + self.norms.len() * size_of::<Option<Norm>>()
            + self.dims.len() * size_of::<DimPreprocessor>()
            + pre
            + self.context.heap_bytes()
            + 2 * self.counts.len() * size_of::<u32>()
            + self.weights.len() * size_of::<f64>()
            + 2 * self.normal.len() * size_of::<f64>()
            + 3 * self.marked.len() * size_of::<u64>()
    }

    /// Workspace large enough to fit this model (the previous fit's rows included).
    pub fn workspace(&self) -> FitWorkspace {
        let rows = self.params.max_rows();
        // Rounding each centre's repeats can add up to one row per centre.
        let prior = if self.params.decay > 0.0 {
            (self.params.decay.min(1.0) * rows as f64).ceil() as usize + self.params.n_clusters
        } else {
            0
        };
        let mut ws = FitWorkspace::new(rows + prior, self.width, self.params.n_clusters);
        ws.staging = vec![0.0; self.ring.len() + self.long.len()].into_boxed_slice();
        ws
    }
}

/// The step at which stride `k`'s long-horizon sample is due: a tick of the stride chosen
/// by a hash of the seed and `k`, so that samples do not fall on the same second of every
/// hour (an hourly job would be always or never in them) and a run is reproducible.
fn sample_at(seed: u64, k: u64, stride: usize) -> u64 {
    let stride = stride.max(1) as u64;
    let mut x = seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    k * stride + x % stride
}

/// A value that is NaN or infinite, or a row with the wrong number of values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonFinite;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferReport {
    pub ring_len: usize,
    pub ring_capacity: usize,
    pub spare_centres: usize,
    pub centres: usize,
    pub current: usize,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::noise;

    pub(crate) fn notebook() -> ModelParams {
        ModelParams::notebook()
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Narrow(#[serde(with = "f32s_as_f64s")] Box<[f32]>);

    #[test]
    fn centres_kept_in_f32_are_saved_byte_for_byte_as_the_f64_centres_of_format_4() {
        let narrow: Box<[f32]> = vec![0.0, -1.5, 230.125, 1e-7, f32::MAX].into();
        let wide: Box<[f64]> = narrow.iter().map(|&v| f64::from(v)).collect();
        let saved = postcard::to_allocvec(&Narrow(narrow.clone())).unwrap();
        assert_eq!(saved, postcard::to_allocvec(&wide).unwrap());
        // A snapshot an older agent wrote with f64 centres reads back.
        let old: Narrow = postcard::from_bytes(&postcard::to_allocvec(&wide).unwrap()).unwrap();
        assert_eq!(old.0, narrow);
        // A forged length is an error once the bytes run out, not an allocation.
        assert!(postcard::from_bytes::<Narrow>(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0]).is_err());
    }

    fn wave(i: u64) -> [f64; 2] {
        let t = i as f64;
        [
            10.0 + (t * 0.3).sin() * 2.0 + (t * 1.7).cos() * 0.3,
            5.0 + (t * 0.11).cos(),
        ]
    }

    /// The ring alone knows the last `window` ticks; the long horizon remembers what came
    /// before them. After 300 ticks at another level, the old level is new to a model
    /// without it and familiar to one with it; and samples are only taken from ticks
    /// the decider judged normal.
    #[test]
    fn the_long_horizon_remembers_what_the_window_forgot() {
        let score_on_return = |long_samples: usize| {
            let p = ModelParams {
                diffs: false,
                n_clusters: 2,
                train_data_size: 100,
                train_every_n: 50,
                min_train_points: 100,
                distance: Distance::Nearest,
                scale: Scale::Quantile(0.99),
                long_samples,
                long_stride: 10,
                ..notebook()
            };
            let mut m = Model::new(p, 1);
            let mut ws = m.workspace();
            let noise = |i: u64| ((i * 7919) % 13) as f64 * 0.1;
            let level = |i: u64| {
                if (1000..1300).contains(&i) {
                    50.0
                } else {
                    10.0
                }
            };
            let mut last = None;
            for i in 0..1310u64 {
                if m.ingest(&[level(i) + noise(i)]).unwrap() {
                    m.fit_now(&mut ws);
                }
                m.judged(true, true);
                last = m.score();
            }
            (last.unwrap(), m.long_len())
        };
        let (without, _) = score_on_return(0);
        let (with, kept) = score_on_return(64);
        assert_eq!(kept, 64, "the long horizon is full");
        assert!(without >= 4.0, "new to the window alone: {without}");
        assert!(with < 1.0, "familiar from the long horizon: {with}");

        let p = ModelParams {
            long_samples: 8,
            long_stride: 2,
            ..notebook()
        };
        let mut m = Model::new(p, 1);
        for i in 0..100 {
            m.ingest(&[i as f64]).unwrap();
            m.judged(false, false);
        }
        assert_eq!(m.long_len(), 0, "anomalous ticks are not remembered");
    }

    /// The shipped shape of a model, small enough for a test: levels, nearest centre,
    /// quantile scale, scaling and gate as given.
    fn shipped(scaling: bool, gate: bool) -> ModelParams {
        ModelParams {
            diffs: false,
            n_smoothing: 3,
            n_lags: 5,
            n_clusters: 6,
            train_data_size: 400,
            train_every_n: 100,
            min_train_points: 400,
            anomaly_score_cap: 10.0,
            distance: Distance::Nearest,
            scale: Scale::Quantile(0.99),
            ensemble: 4,
            scaling,
            gate,
            ..notebook()
        }
    }

    /// Scores of `rows` through a model of `p`, fitting inline; each tick judged at
    /// `threshold` (anomalous ticks stay out of training when the gate is on).
    fn scores(p: ModelParams, rows: &[Vec<f64>], threshold: f64) -> Vec<Option<f64>> {
        let mut m = Model::new(p, rows[0].len());
        let mut ws = m.workspace();
        rows.iter()
            .map(|r| {
                if m.ingest(r).unwrap() {
                    m.fit_now(&mut ws);
                }
                let s = m.score();
                let ok = s.is_none_or(|s| s < threshold);
                m.judged(ok, ok);
                s
            })
            .collect()
    }

    #[test]
    fn scaling_one_dimension_by_1000_and_shifting_it_changes_no_score() {
        let rows = |a: f64, b: f64| -> Vec<Vec<f64>> {
            (0..1500u64)
                .map(|i| {
                    let jump = if (1200..1260).contains(&i) { 3.0 } else { 0.0 };
                    vec![
                        a * (20.0 + noise(i, 1) + jump) + b,
                        5.0 + 0.5 * noise(i, 2) + (i as f64 * 0.05).sin(),
                    ]
                })
                .collect()
        };
        let plain = scores(shipped(true, true), &rows(1.0, 0.0), 1.75);
        let moved = scores(shipped(true, true), &rows(1000.0, 12345.0), 1.75);
        let mut compared = 0;
        for (i, (a, b)) in plain.iter().zip(&moved).enumerate() {
            match (a, b) {
                // The ring keeps f32: 1000 × 20 + 12345 has 7 significant digits, so the
                // two runs differ in the last ones, not in anything a threshold sees.
                (Some(a), Some(b)) => {
                    assert!(
                        (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                        "row {i}: {a} vs {b}"
                    );
                    compared += 1;
                }
                (None, None) => {}
                _ => panic!("row {i}: {a:?} vs {b:?}"),
            }
        }
        assert!(compared > 1000);
        assert!(
            plain[1230].unwrap() >= 1.75,
            "the jump is seen: {:?}",
            plain[1230]
        );
    }

    #[test]
    fn a_shift_of_the_smallest_dimension_by_ten_of_its_deviations_alarms() {
        // Volts (230 ± 3) beside g (0.03 ± 0.002); at row 1200 the g dimension moves by
        // 10 of its standard deviations, the volts do not.
        let rows: Vec<Vec<f64>> = (0..1400u64)
            .map(|i| {
                let shift = if i >= 1200 { 0.02 } else { 0.0 };
                vec![
                    230.0 + 3.0 * noise(i, 3),
                    0.03 + 0.002 * noise(i, 4) * 1.7 + shift,
                ]
            })
            .collect();
        let peak = |p| {
            scores(p, &rows, 1.75)[1210..1300]
                .iter()
                .map(|s| s.unwrap())
                .fold(0.0, f64::max)
        };
        let scaled = peak(shipped(true, true));
        let raw = peak(shipped(false, true));
        assert!(scaled >= 1.75, "scaled: the shift alarms ({scaled})");
        assert!(
            raw < 1.75,
            "raw volts drown it ({raw}): the reason for scaling"
        );
    }

    /// Volts, percent and g side by side; only the percent moves. Its values repeat
    /// 40.0, 40.1, ... 49.9 (a window of 400 holds each four times), so the training
    /// set's 5th and 95th percentiles are known: ranks 20 and 379 of 400, 40.5 and 49.4.
    #[test]
    fn only_the_dimension_that_moved_is_blamed_beside_its_normal_range() {
        let p = ModelParams {
            n_smoothing: 1,
            ..shipped(true, false)
        };
        let mut m = Model::new(p, 3);
        let mut ws = m.workspace();
        assert_eq!(m.attribution(), None, "nothing before a fit");
        let row = |i: u64, jump: f64| {
            [
                230.0 + 3.0 * noise(i, 7),
                40.0 + (i % 100) as f64 * 0.1 + jump,
                0.03 + 0.002 * noise(i, 8),
            ]
        };
        for i in 0..1200u64 {
            if m.ingest(&row(i, 0.0)).unwrap() {
                m.fit_now(&mut ws);
            }
        }
        let calm = m.attribution().unwrap();
        assert_eq!(calm.len(), 3);
        let sum: f64 = calm.iter().map(|d| d.share).sum();
        assert!((sum - 1.0).abs() < 1e-9, "shares sum to 1: {sum}");
        let (lo, hi) = calm[1].normal.expect("measured at the fit");
        assert!(
            (lo - 40.5).abs() < 1e-4 && (hi - 49.4).abs() < 1e-4,
            "{lo}–{hi}"
        );
        let (vlo, vhi) = calm[0].normal.unwrap();
        assert!(
            vlo > 225.0 && vlo < 229.0 && vhi > 231.0 && vhi < 235.0,
            "{vlo}–{vhi}"
        );
        let (glo, ghi) = calm[2].normal.unwrap();
        assert!(
            glo > 0.027 && glo < 0.03 && ghi > 0.03 && ghi < 0.033,
            "{glo}–{ghi}"
        );

        // No refit from here on: the jump is judged against what was learned.
        for i in 1200..1206u64 {
            m.ingest(&row(i, 30.0)).unwrap();
        }
        assert!(m.score().unwrap() >= 1.75, "the jump is anomalous");
        let moved = m.attribution().unwrap();
        assert!(moved[1].share > 0.8, "{moved:?}");
        assert_eq!(
            moved[1].value,
            row(1205, 30.0)[1],
            "its value, unsmoothed here"
        );
        assert_eq!(moved[1].normal, calm[1].normal, "the range is the fit's");
    }

    #[test]
    fn a_fault_longer_than_the_window_is_not_learned_while_the_gate_is_on() {
        // A level shift of 600 ticks: refits every 100 over a window of 400 would take it
        // in within 400 ticks; the gate keeps it out, so it scores anomalous to its end.
        let rows: Vec<Vec<f64>> = (0..2200u64)
            .map(|i| {
                let fault = if (1000..1600).contains(&i) { 6.0 } else { 0.0 };
                vec![10.0 + noise(i, 5) + fault]
            })
            .collect();
        let during = |gate| -> usize {
            scores(shipped(true, gate), &rows, 1.75)[1010..1600]
                .iter()
                .filter(|s| s.is_some_and(|s| s < 1.75))
                .count()
        };
        assert_eq!(during(true), 0, "gated: anomalous from start to end");
        assert!(
            during(false) > 100,
            "ungated: learned as normal within the fault"
        );
        let after = scores(shipped(true, true), &rows, 1.75)[1700..]
            .iter()
            .filter(|s| s.is_some_and(|s| s >= 1.75))
            .count();
        assert!(after < 10, "normal again after it: {after} anomalous ticks");
    }

    #[test]
    fn accepting_a_new_normal_learns_it_at_the_next_fit() {
        let p = shipped(true, true);
        let mut m = Model::new(p, 1);
        let mut ws = m.workspace();
        let mut last = None;
        for i in 0..2000u64 {
            let v = 10.0 + noise(i, 6) + if i >= 1000 { 6.0 } else { 0.0 };
            if i == 1500 {
                m.accept_new_normal();
            }
            if m.ingest(&[v]).unwrap() {
                m.fit_now(&mut ws);
            }
            last = m.score();
            let ok = last.is_none_or(|s| s < 1.75);
            m.judged(ok, ok);
            if i == 1499 {
                assert!(last.unwrap() >= 1.75, "not yet accepted: {last:?}");
            }
        }
        assert!(last.unwrap() < 1.75, "accepted: {last:?}");
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
        p.min_train_points = 30;
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
    fn deviation_says_which_side_of_normal_the_tick_is_on() {
        let mut p = notebook();
        p.diffs = false;
        let mut m = Model::new(p, 1);
        let mut ws = m.workspace();
        assert_eq!(m.deviation(), 0.0, "no fit yet");
        for i in 0..51 {
            if m.ingest(&[10.0 + (i % 3) as f64]).unwrap() {
                m.fit_now(&mut ws);
            }
        }
        for _ in 0..4 {
            m.ingest(&[50.0]).unwrap();
        }
        assert!(m.deviation() > 0.0, "{}", m.deviation());
        for _ in 0..4 {
            m.ingest(&[-50.0]).unwrap();
        }
        assert!(m.deviation() < 0.0, "{}", m.deviation());
    }

    /// Fits on a cluster at 0 and then on one at 10: without decay the new fit forgets
    /// 0; with decay 1 the old training set weighs as much as the new one.
    fn centre_after_a_move(decay: f64, warm_start: bool) -> f64 {
        let p = ModelParams {
            warm_start,
            diffs: false,
            n_smoothing: 1,
            n_lags: 0,
            n_clusters: 1,
            train_data_size: 100,
            train_every_n: 100,
            min_train_points: 100,
            decay,
            ..notebook()
        };
        let mut m = Model::new(p, 1);
        let mut ws = m.workspace();
        for i in 0..201 {
            // The first fit (at n = 100) sees only zeros, the second only tens.
            let v = if i <= 100 { 0.0 } else { 10.0 };
            if m.ingest(&[v]).unwrap() {
                m.fit_now(&mut ws);
            }
        }
        let kw = m.params.n_clusters * m.width;
        let newest = (m.next_member + m.norms.len() - 1) % m.norms.len();
        f64::from(m.centres[newest * kw])
    }

    #[test]
    fn decay_weighs_the_previous_training_set_into_the_next_fit() {
        // A warm start only says where the rounds begin: the previous training set weighs
        // in through `decay` alone, and the same with or without it.
        for warm in [false, true] {
            assert_eq!(centre_after_a_move(0.0, warm), 10.0);
            assert!((centre_after_a_move(1.0, warm) - 5.0).abs() < 1e-9);
            assert!((centre_after_a_move(0.25, warm) - 8.0).abs() < 1e-9);
        }
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
                assert_eq!(r.spare_centres, start.spare_centres);
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
