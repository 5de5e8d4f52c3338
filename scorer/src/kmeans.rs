//! k-means for the scorer's small, low-dimensional training sets.
//!
//! Seeding is greedy k-means++ (as scikit-learn does it: several candidates per centre,
//! keep the one that lowers the potential most), the best of `n_init` restarts by inertia
//! is kept, and iterations use Hamerly's bounds: after the first few rounds almost every
//! point is shown by its bounds to keep its centre, so a round costs O(n) instead of
//! O(n·k·d). The result equals Lloyd's algorithm; only the work skipped differs.
//!
//! All buffers live in a [`Workspace`] sized once for the largest model, so fitting
//! allocates nothing.

use lookout_shared::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KMeansParams {
    pub k: usize,
    /// Restarts with different seeds; the lowest inertia wins.
    pub n_init: usize,
    pub max_iter: usize,
    /// Convergence when the centres move less than `tol` × the data's mean variance
    /// (squared), scikit-learn's definition.
    pub tol: f64,
    pub seed: u64,
}

impl Default for KMeansParams {
    fn default() -> Self {
        Self {
            k: 2,
            n_init: 10,
            max_iter: 300,
            tol: 1e-4,
            seed: 0,
        }
    }
}

/// Scratch space for one fit at a time.
#[derive(Debug)]
pub struct Workspace {
    max_rows: usize,
    d: usize,
    k: usize,
    labels: Vec<usize>,
    upper: Vec<f64>,
    lower: Vec<f64>,
    closest_d2: Vec<f64>,
    sums: Vec<f64>,
    counts: Vec<usize>,
    centres: Vec<f64>,
    shift: Vec<f64>,
    half_sep: Vec<f64>,
    /// k = 2 path: side of the bisecting hyperplane per row, and the sum of all rows.
    side: Vec<u8>,
    total: Vec<f64>,
}

impl Workspace {
    pub fn new(max_rows: usize, d: usize, k: usize) -> Self {
        Self {
            max_rows,
            d,
            k,
            labels: vec![0; max_rows],
            upper: vec![0.0; max_rows],
            lower: vec![0.0; max_rows],
            closest_d2: vec![0.0; max_rows],
            sums: vec![0.0; k * d],
            counts: vec![0; k],
            centres: vec![0.0; k * d],
            shift: vec![0.0; k],
            half_sep: vec![0.0; k],
            side: vec![0; max_rows],
            total: vec![0.0; d],
        }
    }

    pub fn fits(&self, rows: usize, d: usize, k: usize) -> bool {
        rows <= self.max_rows && d == self.d && k <= self.k
    }
}

/// Sums `term(a[i], b[i])` with four independent partial sums, so that the compiler can
/// use SIMD lanes (a single running sum forces one dependent add after another).
#[inline(always)]
fn lanes4(a: &[f64], b: &[f64], term: impl Fn(f64, f64) -> f64) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..4 {
            acc[l] += term(x[l], y[l]);
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += term(*x, *y);
    }
    s
}

#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    lanes4(a, b, |x, y| x * y)
}

/// Squared Euclidean distance.
#[inline(always)]
pub(crate) fn dist2(a: &[f64], b: &[f64]) -> f64 {
    lanes4(a, b, |x, y| (x - y) * (x - y))
}

/// Fits `k` centres to `rows` vectors of width `d` stored row-major in `data`, writing them
/// to `out` (`k·d` long). Returns the inertia (sum of squared distances to the nearest
/// centre), or `None` when there is nothing to fit (no rows, or `ws` too small).
///
/// With fewer distinct rows than `k`, some centres coincide; the score stays defined.
pub fn fit(
    params: &KMeansParams,
    data: &[f64],
    rows: usize,
    d: usize,
    ws: &mut Workspace,
    out: &mut [f64],
) -> Option<f64> {
    // Monomorphised for the usual widths (dimensions × (n_lags + 1)) so the compiler
    // unrolls and vectorises the per-row loops; 0 is the general version.
    macro_rules! widths {
        ($($w:literal)*) => {
            match d {
                $($w => fit_d::<$w>(params, data, rows, d, ws, out),)*
                _ => fit_d::<0>(params, data, rows, d, ws, out),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 14 16 18 20 24)
}

/// [`fit`] for a refit, warm-started: `out` holds the previous fit's centres on entry and
/// they are the first start, followed by `restarts` k-means++ starts drawn from the seed as
/// [`fit`] draws them; the lowest inertia wins. A window that moved by a quarter has its
/// optimum next to the previous one, so the warm start converges in a few rounds where a
/// fresh start needs seeding and tens of rounds. A previous centre that no row is nearest
/// to any more (the series moved away from it) is moved to the row farthest from its own
/// centre before the rounds start, so a level shift does not leave the fit with fewer
/// clusters than `k`. With no restarts the inertia is not computed (nothing to compare):
/// returns `false` only when there is nothing to fit, as [`fit`]'s `None`.
pub fn refit(
    params: &KMeansParams,
    data: &[f64],
    rows: usize,
    d: usize,
    ws: &mut Workspace,
    out: &mut [f64],
    restarts: usize,
) -> bool {
    macro_rules! widths {
        ($($w:literal)*) => {
            match d {
                $($w => fit_from::<$w>(params, data, rows, d, ws, out, Some(restarts)),)*
                _ => fit_from::<0>(params, data, rows, d, ws, out, Some(restarts)),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 14 16 18 20 24).is_some()
}

fn fit_d<const D: usize>(
    params: &KMeansParams,
    data: &[f64],
    rows: usize,
    d: usize,
    ws: &mut Workspace,
    out: &mut [f64],
) -> Option<f64> {
    fit_from::<D>(params, data, rows, d, ws, out, None)
}

/// The fit behind [`fit`] (`warm` = `None`: `n_init` k-means++ starts) and [`refit`]
/// (`Some(restarts)`: `out`'s centres, then `restarts` k-means++ starts). Returns the
/// inertia, NaN when a single warm start had nothing to compare it with.
fn fit_from<const D: usize>(
    params: &KMeansParams,
    data: &[f64],
    rows: usize,
    d: usize,
    ws: &mut Workspace,
    out: &mut [f64],
    warm: Option<usize>,
) -> Option<f64> {
    let d = if D == 0 { d } else { D };
    let k = params.k;
    if rows == 0 || d == 0 || k == 0 || data.len() < rows * d || out.len() < k * d {
        return None;
    }
    if !ws.fits(rows, d, k) {
        return None;
    }
    let data = &data[..rows * d];
    let tol = params.tol * mean_variance(data, rows, d);
    let starts = warm.map_or(params.n_init.max(1), |r| r + 1);
    if k == 2 && warm.is_none() {
        ws.total[..d].fill(0.0);
        for x in data.chunks_exact(d) {
            for (t, v) in ws.total[..d].iter_mut().zip(x) {
                *t += v;
            }
        }
    }
    let mut rng = Rng::from_seed(params.seed);
    let mut best = f64::INFINITY;
    for start in 0..starts {
        let lloyd = Lloyd {
            max_iter: params.max_iter,
            tol,
            // `fit` has always returned the inertia; a refit computes it to compare starts.
            inertia: warm.is_none() || starts > 1,
        };
        let inertia = if warm.is_some() && start == 0 {
            ws.centres[..k * d].copy_from_slice(&out[..k * d]);
            // Hamerly's start measures every row anyway: moving empty centres costs
            // nothing more when none is empty.
            hamerly::<D>(data, rows, d, k, lloyd, true, ws)
        } else {
            seed_plus_plus::<D>(data, rows, d, k, &mut rng, ws);
            if k == 2 && warm.is_none() {
                lloyd_two::<D>(data, rows, d, lloyd, ws)
            } else {
                hamerly::<D>(data, rows, d, k, lloyd, false, ws)
            }
        };
        if starts == 1 {
            out[..k * d].copy_from_slice(&ws.centres[..k * d]);
            return Some(inertia);
        }
        if inertia < best {
            best = inertia;
            out[..k * d].copy_from_slice(&ws.centres[..k * d]);
        }
    }
    Some(best)
}

/// How Lloyd's iterations stop, and whether the caller needs the inertia (one more pass
/// over the rows) to compare starts.
#[derive(Clone, Copy)]
struct Lloyd {
    max_iter: usize,
    tol: f64,
    inertia: bool,
}

fn mean_variance(data: &[f64], rows: usize, d: usize) -> f64 {
    let mut total = 0.0;
    for j in 0..d {
        let mut mean = 0.0;
        for r in 0..rows {
            mean += data[r * d + j];
        }
        mean /= rows as f64;
        let mut var = 0.0;
        for r in 0..rows {
            let t = data[r * d + j] - mean;
            var += t * t;
        }
        total += var / rows as f64;
    }
    total / d as f64
}

/// Greedy k-means++: each new centre is the best of `2 + ln k` candidates drawn with
/// probability proportional to the squared distance to the nearest centre so far.
fn seed_plus_plus<const D: usize>(
    data: &[f64],
    rows: usize,
    d: usize,
    k: usize,
    rng: &mut Rng,
    ws: &mut Workspace,
) {
    let d = if D == 0 { d } else { D };
    let row = |i: usize| &data[i * d..(i + 1) * d];
    let first = rng.below(rows);
    ws.centres[..d].copy_from_slice(row(first));
    let mut potential = 0.0;
    for i in 0..rows {
        let v = dist2(row(i), row(first));
        ws.closest_d2[i] = v;
        potential += v;
    }
    let trials = 2 + (k as f64).ln() as usize;
    for c in 1..k {
        let mut best_idx = rng.below(rows);
        let mut best_pot = f64::INFINITY;
        for _ in 0..trials {
            let idx = if potential > 0.0 {
                let target = rng.uniform() * potential;
                let mut acc = 0.0;
                let mut pick = rows - 1;
                for i in 0..rows {
                    acc += ws.closest_d2[i];
                    if acc > target {
                        pick = i;
                        break;
                    }
                }
                pick
            } else {
                rng.below(rows)
            };
            let cand = row(idx);
            let mut pot = 0.0;
            for i in 0..rows {
                pot += ws.closest_d2[i].min(dist2(row(i), cand));
            }
            if pot < best_pot {
                best_pot = pot;
                best_idx = idx;
            }
        }
        let cand = row(best_idx);
        ws.centres[c * d..(c + 1) * d].copy_from_slice(cand);
        if c + 1 == k {
            // The distances to the nearest centre are only needed to draw another one.
            break;
        }
        potential = 0.0;
        for i in 0..rows {
            let v = ws.closest_d2[i].min(dist2(row(i), cand));
            ws.closest_d2[i] = v;
            potential += v;
        }
    }
}

/// Nearest and second-nearest centre of `x`: (index, distance, second distance).
#[inline(always)]
fn nearest_two(x: &[f64], centres: &[f64], k: usize, d: usize) -> (usize, f64, f64) {
    let (mut a, mut d1, mut d2) = (0, f64::INFINITY, f64::INFINITY);
    for j in 0..k {
        let v = dist2(x, &centres[j * d..(j + 1) * d]);
        if v < d1 {
            d2 = d1;
            d1 = v;
            a = j;
        } else if v < d2 {
            d2 = v;
        }
    }
    (a, d1.sqrt(), d2.sqrt())
}

/// Lloyd's iterations with Hamerly's upper/lower bounds; returns the inertia.
///
/// Each row keeps an upper bound on the distance to its centre and a lower bound on the
/// distance to any other: while the first stays below the larger of the second and half
/// the gap to the nearest other centre, the row cannot have changed centre and costs no
/// distance.
///
/// Its steps are helpers marked `#[inline(always)]`: inlined, `d` stays the constant of
/// `fit_d::<D>` inside their loops, and the fit compiles to what it was as one function
/// (the same instruction count under cachegrind).
fn hamerly<const D: usize>(
    data: &[f64],
    rows: usize,
    d: usize,
    k: usize,
    lloyd: Lloyd,
    move_empty: bool,
    ws: &mut Workspace,
) -> f64 {
    let d = if D == 0 { d } else { D };
    assign_all(data, rows, d, k, ws);
    // Each round fills at least the centres it moves; k rounds bound it.
    for _ in 0..if move_empty { k } else { 0 } {
        if !move_empty_centres(data, d, k, rows, ws) {
            break;
        }
        assign_all(data, rows, d, k, ws);
    }
    for _ in 0..lloyd.max_iter {
        if move_centres(d, k, ws) <= lloyd.tol {
            break;
        }
        let shifts = largest_two_shifts(&ws.shift[..k]);
        half_separations(d, k, ws);
        if reassign(data, rows, d, k, shifts, ws) == 0 {
            break;
        }
    }
    if !lloyd.inertia {
        return f64::NAN;
    }
    let row = |i: usize| &data[i * d..(i + 1) * d];
    let mut inertia = 0.0;
    for i in 0..rows {
        let (_, d1, _) = nearest_two(row(i), &ws.centres, k, d);
        inertia += d1 * d1;
    }
    inertia
}

/// After [`assign_all`] from a warm start: each centre no row is nearest to goes to the
/// row farthest from every centre, one after the other (each move brings rows nearer), as
/// k-means++ would place it. Returns whether any moved (the assignment must then be made
/// again: a moved centre may take every row of another).
#[inline(always)]
fn move_empty_centres(data: &[f64], d: usize, k: usize, rows: usize, ws: &mut Workspace) -> bool {
    let row = |i: usize| &data[i * d..(i + 1) * d];
    let mut moved = false;
    for j in 0..k {
        if ws.counts[j] > 0 {
            continue;
        }
        let (mut far, mut far_d) = (0, 0.0);
        for (i, &u) in ws.upper[..rows].iter().enumerate() {
            if u > far_d {
                (far, far_d) = (i, u);
            }
        }
        if far_d <= 0.0 {
            break; // every row sits on a centre
        }
        ws.centres[j * d..(j + 1) * d].copy_from_slice(row(far));
        for i in 0..rows {
            let v = dist2(row(i), row(far)).sqrt();
            ws.upper[i] = ws.upper[i].min(v);
        }
        moved = true;
    }
    moved
}

/// Hamerly's start: every row measured against every centre, its bounds exact, and the
/// clusters' sizes and sums counted from scratch.
#[inline(always)]
fn assign_all(data: &[f64], rows: usize, d: usize, k: usize, ws: &mut Workspace) {
    let row = |i: usize| &data[i * d..(i + 1) * d];
    ws.sums[..k * d].fill(0.0);
    ws.counts[..k].fill(0);
    for i in 0..rows {
        let (a, d1, d2) = nearest_two(row(i), &ws.centres, k, d);
        ws.labels[i] = a;
        ws.upper[i] = d1;
        ws.lower[i] = d2;
        ws.counts[a] += 1;
        for (s, x) in ws.sums[a * d..(a + 1) * d].iter_mut().zip(row(i)) {
            *s += x;
        }
    }
}

/// Moves each centre to the mean of its rows, records how far it went in `ws.shift`, and
/// returns the squared movement summed over all centres. An empty cluster keeps its centre.
#[inline(always)]
fn move_centres(d: usize, k: usize, ws: &mut Workspace) -> f64 {
    let mut total_shift2 = 0.0;
    for j in 0..k {
        let n = ws.counts[j];
        let mut moved2 = 0.0;
        if n > 0 {
            for t in 0..d {
                let c = ws.sums[j * d + t] / n as f64;
                let delta = c - ws.centres[j * d + t];
                moved2 += delta * delta;
                ws.centres[j * d + t] = c;
            }
        }
        ws.shift[j] = moved2.sqrt();
        total_shift2 += moved2;
    }
    total_shift2
}

/// The centre that moved most, how far, and how far the runner-up moved: a row's lower
/// bound drops by the largest movement of a centre other than its own.
#[inline(always)]
fn largest_two_shifts(shift: &[f64]) -> (usize, f64, f64) {
    let (mut r1, mut max1, mut max2) = (0, 0.0f64, 0.0f64);
    for (j, &s) in shift.iter().enumerate() {
        if s > max1 {
            max2 = max1;
            max1 = s;
            r1 = j;
        } else if s > max2 {
            max2 = s;
        }
    }
    (r1, max1, max2)
}

/// Half the distance from each centre to its nearest other centre, in `ws.half_sep`: a
/// row closer to its centre than that cannot be closer to another.
#[inline(always)]
fn half_separations(d: usize, k: usize, ws: &mut Workspace) {
    for j in 0..k {
        let mut m = f64::INFINITY;
        for o in 0..k {
            if o != j {
                m = m.min(dist2(
                    &ws.centres[j * d..(j + 1) * d],
                    &ws.centres[o * d..(o + 1) * d],
                ));
            }
        }
        ws.half_sep[j] = 0.5 * m.sqrt();
    }
}

/// Loosens every row's bounds by the centres' movement (`shifts` as
/// [`largest_two_shifts`] gives them), measures only the rows whose bounds no longer
/// prove they keep their centre, and moves those that changed between the clusters' sums.
/// Returns how many changed.
#[inline(always)]
fn reassign(
    data: &[f64],
    rows: usize,
    d: usize,
    k: usize,
    (r1, max1, max2): (usize, f64, f64),
    ws: &mut Workspace,
) -> usize {
    let row = |i: usize| &data[i * d..(i + 1) * d];
    let mut changed = 0usize;
    for i in 0..rows {
        let a = ws.labels[i];
        ws.upper[i] += ws.shift[a];
        ws.lower[i] -= if a == r1 { max2 } else { max1 };
        let bound = ws.half_sep[a].max(ws.lower[i]);
        if ws.upper[i] <= bound {
            continue;
        }
        let x = row(i);
        ws.upper[i] = dist2(x, &ws.centres[a * d..(a + 1) * d]).sqrt();
        if ws.upper[i] <= bound {
            continue;
        }
        let (na, d1, d2) = nearest_two(x, &ws.centres, k, d);
        ws.upper[i] = d1;
        ws.lower[i] = d2;
        if na != a {
            changed += 1;
            ws.labels[i] = na;
            ws.counts[a] -= 1;
            ws.counts[na] += 1;
            for (t, &v) in x.iter().enumerate() {
                ws.sums[a * d + t] -= v;
                ws.sums[na * d + t] += v;
            }
        }
    }
    changed
}

/// Lloyd's iterations for k = 2, the scorer's usual case, with one bound per row.
///
/// Row x belongs to c1 when D(x) = |x − c0| − |x − c1| > 0. When the centres move by δ0
/// and δ1, D moves by at most δ0 + δ1, so a row whose |D| exceeded the movement summed
/// since it was last measured cannot have changed side: a round reads one number per row
/// and measures only the few rows near the boundary. Only rows that change side touch the
/// sums. The result is exactly Lloyd's. Returns the inertia.
fn lloyd_two<const D: usize>(
    data: &[f64],
    rows: usize,
    d: usize,
    lloyd: Lloyd,
    ws: &mut Workspace,
) -> f64 {
    let d = if D == 0 { d } else { D };
    let mut sum1 = [0.0f64; 64];
    if d > sum1.len() || rows == 0 {
        return hamerly::<D>(data, rows, d, 2, lloyd, false, ws);
    }
    let Lloyd { max_iter, tol, .. } = lloyd;
    let sum1 = &mut sum1[..d];
    let mut n1 = 0usize;
    // Movement of the boundary summed over all rounds so far; a row is re-measured when
    // its bound (|D| when measured + the movement then) no longer exceeds it.
    let mut moved = 0.0f64;
    let bound = &mut ws.upper[..rows];
    bound.fill(f64::NEG_INFINITY);
    // No row is on either side yet (u8::MAX), so the first round assigns every row.
    ws.side[..rows].fill(u8::MAX);
    // While many rows still change side, bounds would fail anyway: decide by the bisecting
    // hyperplane, one dot product per row, and leave the bounds unknown (-inf).
    let mut use_bounds = false;
    let mut w = [0.0f64; 64];
    let w = &mut w[..d];
    for _ in 0..max_iter {
        let (c0, c1) = ws.centres[..2 * d].split_at(d);
        let mut half = 0.0;
        for t in 0..d {
            w[t] = c1[t] - c0[t];
            half += (c1[t] * c1[t] - c0[t] * c0[t]) * 0.5;
        }
        let mut changed = 0usize;
        for ((x, side), b) in data[..rows * d]
            .chunks_exact(d)
            .zip(ws.side[..rows].iter_mut())
            .zip(bound.iter_mut())
        {
            // A tie goes to c0, as an argmin over (c0, c1) decides.
            let s = if use_bounds {
                if *b > moved {
                    continue;
                }
                let (d0, d1) = (dist2(x, c0).sqrt(), dist2(x, c1).sqrt());
                *b = (d0 - d1).abs() + moved;
                u8::from(d1 < d0)
            } else {
                // Nearer c1 exactly when (c1 − c0)·x > (|c1|² − |c0|²) / 2.
                u8::from(dot(x, w) > half)
            };
            if s != *side {
                changed += 1;
                if s == 1 {
                    n1 += 1;
                    for t in 0..d {
                        sum1[t] += x[t];
                    }
                } else if *side == 1 {
                    n1 -= 1;
                    for t in 0..d {
                        sum1[t] -= x[t];
                    }
                }
                *side = s;
            }
        }
        let n0 = rows - n1;
        let (mut moved0, mut moved1) = (0.0, 0.0);
        let (c0, c1) = ws.centres[..2 * d].split_at_mut(d);
        for (t, &s1) in sum1.iter().enumerate() {
            if n0 > 0 {
                let c = (ws.total[t] - s1) / n0 as f64;
                moved0 += (c - c0[t]) * (c - c0[t]);
                c0[t] = c;
            }
            if n1 > 0 {
                let c = s1 / n1 as f64;
                moved1 += (c - c1[t]) * (c - c1[t]);
                c1[t] = c;
            }
        }
        moved += moved0.sqrt() + moved1.sqrt();
        if changed == 0 || moved0 + moved1 <= tol {
            break;
        }
        use_bounds |= changed * 16 < rows;
    }
    let (c0, c1) = ws.centres[..2 * d].split_at(d);
    data[..rows * d]
        .chunks_exact(d)
        .map(|x| dist2(x, c0).min(dist2(x, c1)))
        .sum()
}

/// Mean Euclidean distance from `x` to the `k` centres: the notebook's raw anomaly score.
#[inline(always)]
pub fn mean_distance(x: &[f64], centres: &[f64], k: usize) -> f64 {
    let d = x.len();
    if k == 2 && centres.len() >= 2 * d {
        // Both square roots side by side, so they overlap instead of queueing.
        let (c0, c1) = centres[..2 * d].split_at(d);
        let r = [dist2(x, c0), dist2(x, c1)].map(f64::sqrt);
        return (r[0] + r[1]) * 0.5;
    }
    let mut total = 0.0;
    for j in 0..k {
        total += dist2(x, &centres[j * d..(j + 1) * d]).sqrt();
    }
    total / k as f64
}

/// Euclidean distance from `x` to the nearest of the `k` centres.
///
/// The hottest loop of a scored tick (an ensemble of 12 fits of 6 centres is 72
/// distances): monomorphised for the usual widths so that each distance is a few
/// unrolled instructions instead of a loop over a length known only at run time. The sums
/// are [`dist2`]'s, in the same order, so every width gives the same bits.
#[inline(always)]
pub fn nearest_distance(x: &[f64], centres: &[f64], k: usize) -> f64 {
    macro_rules! widths {
        ($($w:literal)*) => {
            match x.len() {
                $($w => nearest_d2::<$w>(x, &centres[..k * $w]),)*
                d => nearest_d2::<0>(x, &centres[..k * d]),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 10 12 16).sqrt()
}

/// Squared distance from `x` to the nearest centre of `centres`, rows of `x.len()` values
/// (`W` when it is not 0).
#[inline(always)]
fn nearest_d2<const W: usize>(x: &[f64], centres: &[f64]) -> f64 {
    let w = if W == 0 { x.len() } else { W };
    let x = &x[..w];
    let mut best = f64::INFINITY;
    for c in centres.chunks_exact(w) {
        best = best.min(dist2(x, &c[..w]));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(centres: &[[f64; 2]], per: usize, spread: f64, seed: u64) -> Vec<f64> {
        let mut rng = Rng::from_seed(seed);
        let mut out = Vec::new();
        for c in centres {
            for _ in 0..per {
                out.push(c[0] + (rng.uniform() - 0.5) * spread);
                out.push(c[1] + (rng.uniform() - 0.5) * spread);
            }
        }
        out
    }

    fn sorted_centres(c: &[f64]) -> Vec<[f64; 2]> {
        let mut v: Vec<[f64; 2]> = c.chunks(2).map(|p| [p[0], p[1]]).collect();
        v.sort_by(|a, b| a[0].total_cmp(&b[0]));
        v
    }

    #[test]
    fn finds_well_separated_clusters() {
        let truth = [[0.0, 0.0], [10.0, 10.0], [20.0, -5.0]];
        let data = blobs(&truth, 200, 1.0, 3);
        let rows = data.len() / 2;
        let mut ws = Workspace::new(rows, 2, 3);
        let mut out = vec![0.0; 6];
        let params = KMeansParams {
            k: 3,
            ..Default::default()
        };
        let inertia = fit(&params, &data, rows, 2, &mut ws, &mut out).unwrap();
        for (got, want) in sorted_centres(&out).iter().zip(truth) {
            assert!(
                (got[0] - want[0]).abs() < 0.2 && (got[1] - want[1]).abs() < 0.2,
                "{got:?} vs {want:?}"
            );
        }
        // Uniform noise of width 1 in 2 dims: expected squared distance 2/12 per point.
        assert!(inertia < rows as f64 * 0.25, "inertia {inertia}");
    }

    #[test]
    fn same_seed_same_centres() {
        let data = blobs(&[[0.0, 0.0], [3.0, 1.0]], 100, 4.0, 9);
        let mut ws = Workspace::new(200, 2, 2);
        let (mut a, mut b) = (vec![0.0; 4], vec![0.0; 4]);
        let p = KMeansParams::default();
        fit(&p, &data, 200, 2, &mut ws, &mut a).unwrap();
        fit(&p, &data, 200, 2, &mut ws, &mut b).unwrap();
        assert_eq!(a, b);
    }

    /// Hamerly's bounds only skip work: the result must be a fixed point of Lloyd's step,
    /// i.e. every centre is the mean of the points nearest to it.
    #[test]
    fn result_is_a_lloyd_fixed_point() {
        // k = 3 takes the Hamerly path, k = 2 the bisecting-hyperplane path.
        for k in [2, 3] {
            assert_lloyd_fixed_point(k);
        }
    }

    fn assert_lloyd_fixed_point(k: usize) {
        let data = blobs(&[[0.0, 0.0], [2.0, 2.0], [4.0, 0.0]], 150, 3.0, 5);
        let rows = 450;
        let mut ws = Workspace::new(rows, 2, k);
        let mut c = vec![0.0; 2 * k];
        let p = KMeansParams {
            k,
            tol: 0.0,
            ..Default::default()
        };
        let inertia = fit(&p, &data, rows, 2, &mut ws, &mut c).unwrap();
        let mut sums = [[0.0f64; 2]; 3];
        let mut counts = [0usize; 3];
        let mut expected_inertia = 0.0;
        for r in 0..rows {
            let (a, d1, _) = nearest_two(&data[r * 2..r * 2 + 2], &c, k, 2);
            sums[a][0] += data[r * 2];
            sums[a][1] += data[r * 2 + 1];
            counts[a] += 1;
            expected_inertia += d1 * d1;
        }
        assert!(
            (inertia - expected_inertia).abs() < 1e-9 * expected_inertia,
            "k={k}"
        );
        for j in 0..k {
            assert!(counts[j] > 0);
            assert!((sums[j][0] / counts[j] as f64 - c[j * 2]).abs() < 1e-9);
            assert!((sums[j][1] / counts[j] as f64 - c[j * 2 + 1]).abs() < 1e-9);
        }
    }

    #[test]
    fn identical_points_and_tiny_sets_do_not_break() {
        let data = vec![1.0; 20];
        let mut ws = Workspace::new(10, 2, 2);
        let mut out = vec![0.0; 4];
        let inertia = fit(&KMeansParams::default(), &data, 10, 2, &mut ws, &mut out).unwrap();
        assert_eq!(inertia, 0.0);
        assert_eq!(out, vec![1.0; 4]);
        assert!(
            fit(
                &KMeansParams::default(),
                &data[..2],
                1,
                2,
                &mut ws,
                &mut out
            )
            .is_some()
        );
        assert!(fit(&KMeansParams::default(), &[], 0, 2, &mut ws, &mut out).is_none());
    }

    #[test]
    fn lower_bounds_drop_by_the_largest_shift_of_another_centre() {
        assert_eq!(largest_two_shifts(&[1.0, 3.0, 2.0]), (1, 3.0, 2.0));
        // Two centres moved as far: whichever a row belongs to, another moved that far too.
        assert_eq!(largest_two_shifts(&[3.0, 3.0, 1.0]), (0, 3.0, 3.0));
        assert_eq!(largest_two_shifts(&[0.0, 0.0]), (0, 0.0, 0.0));
    }

    fn inertia_of(data: &[f64], centres: &[f64], k: usize) -> f64 {
        data.chunks_exact(2)
            .map(|x| nearest_two(x, centres, k, 2).1.powi(2))
            .sum()
    }

    /// A refit's warm start on a window that moved: the same clustering as ten fresh
    /// starts (same centres, same inertia), from the previous window's centres.
    #[test]
    fn a_warm_refit_converges_to_the_clustering_of_fresh_starts() {
        let truth = [[0.0, 0.0], [10.0, 10.0], [20.0, -5.0], [5.0, 15.0]];
        let before = blobs(&truth, 150, 3.0, 11);
        let moved: Vec<[f64; 2]> = truth.iter().map(|c| [c[0] + 0.7, c[1] - 0.4]).collect();
        let after = blobs(&moved, 150, 3.0, 12);
        let (rows, k) = (600, 4);
        let mut ws = Workspace::new(rows, 2, k);
        let p = KMeansParams {
            k,
            ..Default::default()
        };
        let mut fresh = vec![0.0; 2 * k];
        let best = fit(&p, &after, rows, 2, &mut ws, &mut fresh).unwrap();
        let mut warm = vec![0.0; 2 * k];
        fit(&p, &before, rows, 2, &mut ws, &mut warm).unwrap();
        assert!(refit(&p, &after, rows, 2, &mut ws, &mut warm, 0));
        let inertia = inertia_of(&after, &warm, k);
        assert!((inertia - best).abs() <= 1e-9 * best, "{inertia} vs {best}");
        for (a, b) in sorted_centres(&warm).iter().zip(sorted_centres(&fresh)) {
            assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
        }
    }

    /// After a level shift every previous centre is far from the new data, and all rows
    /// are nearest to one of them: the others are moved onto the data, so the refit still
    /// has k clusters (no empty one) and finds the separated blobs.
    #[test]
    fn a_warm_refit_after_a_level_shift_uses_every_centre() {
        let truth = [[100.0, 100.0], [110.0, 100.0], [120.0, 100.0]];
        let data = blobs(&truth, 100, 1.0, 4);
        let (rows, k) = (300, 3);
        let mut ws = Workspace::new(rows, 2, k);
        let p = KMeansParams {
            k,
            ..Default::default()
        };
        let mut centres = vec![0.0, 0.0, 0.0, 1.0, 1.0, 0.0];
        assert!(refit(&p, &data, rows, 2, &mut ws, &mut centres, 0));
        for (got, want) in sorted_centres(&centres).iter().zip(truth) {
            assert!(
                (got[0] - want[0]).abs() < 0.2 && (got[1] - want[1]).abs() < 0.2,
                "{got:?} vs {want:?}"
            );
        }
        let mut counts = [0usize; 3];
        for x in data.chunks_exact(2) {
            counts[nearest_two(x, &centres, k, 2).0] += 1;
        }
        assert_eq!(counts, [100, 100, 100]);
    }

    /// Restarts besides the warm start keep the lowest inertia: never worse than the warm
    /// start alone, from a start that is a poor local optimum.
    #[test]
    fn refit_restarts_never_keep_a_worse_fit_than_the_warm_start() {
        let data = blobs(&[[0.0, 0.0], [6.0, 0.0], [3.0, 5.0]], 120, 2.0, 8);
        let (rows, k) = (360, 3);
        let mut ws = Workspace::new(rows, 2, k);
        let p = KMeansParams {
            k,
            ..Default::default()
        };
        // Two centres in one blob, one between the others: a poor local optimum.
        let poor = vec![-0.5, 0.0, 0.5, 0.0, 4.5, 2.5];
        let mut alone = poor.clone();
        assert!(refit(&p, &data, rows, 2, &mut ws, &mut alone, 0));
        let mut with = poor;
        assert!(refit(&p, &data, rows, 2, &mut ws, &mut with, 5));
        let (a, w) = (inertia_of(&data, &alone, k), inertia_of(&data, &with, k));
        assert!(w <= a * (1.0 + 1e-12), "{w} vs {a}");
    }

    /// The widths compiled apart give the bits of the general loop.
    #[test]
    fn nearest_distance_is_the_same_at_every_width() {
        let mut rng = Rng::from_seed(3);
        for w in 1..=20 {
            for _ in 0..200 {
                let x: Vec<f64> = (0..w).map(|_| rng.normal() * 10.0).collect();
                let c: Vec<f64> = (0..6 * w).map(|_| rng.normal() * 10.0).collect();
                let general = c
                    .chunks_exact(w)
                    .map(|c| dist2(&x, c))
                    .fold(f64::INFINITY, f64::min)
                    .sqrt();
                assert_eq!(
                    nearest_distance(&x, &c, 6).to_bits(),
                    general.to_bits(),
                    "w={w}"
                );
            }
        }
    }

    #[test]
    fn mean_distance_averages_over_centres() {
        let c = [0.0, 0.0, 6.0, 8.0];
        assert!((mean_distance(&[0.0, 0.0], &c, 2) - 5.0).abs() < 1e-12);
    }
}
