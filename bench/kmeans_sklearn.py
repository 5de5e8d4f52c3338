#!/usr/bin/env python3
"""scikit-learn k-means baseline for Lookout's training benchmark.

Our target is Rust k-means training at least 10x faster than scikit-learn's
KMeans(n_clusters=2, n_init=10) on the same vectors. This script produces the
scikit-learn side of that comparison: time per fit (median and min, one thread,
as an agent would train) and the inertia, so the Rust fit can be checked for
quality as well as speed.

Input data (bench/data/, no header, 8 comma-separated floats per row) are real
NAB DEV CPU series preprocessed as the seed notebook does: rolling mean over 3,
first differences, last 4 values (n_lags 3) -> 4 values per dimension, without
the notebook's 2-decimal rounding (like the reference scorer's default). Two
series side by side play "user" and "system": row = [user x4, system x4],
oldest value first, rows aligned by position (the series' timestamps differ).
  - pairs are (CPU[i], CPU[i+1 mod 7]) over the seven 4,032-row DEV CPU series
    below, in this order; each series is preprocessed on its own (4,026 full
    vectors each, no vector spans two series) and the pairs' vectors are
    concatenated, cycling, until 21,600 rows (five full pairs + 1,470 rows of
    the sixth);
  - vectors_1440x8.csv is the first 1,440 rows of the same sequence (pair 0).

Usage, from the repository root:
  /tmp/nab-venv/bin/python bench/kmeans_sklearn.py --make-data   # rewrite bench/data/
  /tmp/nab-venv/bin/python bench/kmeans_sklearn.py [--reps 20]    # time the fits
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread; must be set before numpy loads

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.cluster import KMeans

REPO = Path(__file__).resolve().parent.parent
NAB = REPO / ".." / "shared" / "data" / "nab" / "data"
OUT = REPO / "bench" / "data"
CPU = [
    "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_77c1ca.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_ac20cd.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_c6585a.csv",
    "realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv",
    "realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv",
]
SIZES = (1440, 21600)
N_SMOOTHING, N_LAGS = 3, 3


def lagged_vectors(path: Path) -> np.ndarray:
    """All full notebook feature vectors of one series: shape (rows - 6, 4)."""
    x = np.loadtxt(path, delimiter=",", skiprows=1, usecols=1)
    smooth = sum(x[i:len(x) - N_SMOOTHING + 1 + i] for i in range(N_SMOOTHING)) / N_SMOOTHING
    d = np.diff(smooth)
    return np.lib.stride_tricks.sliding_window_view(d, N_LAGS + 1)


def make_data() -> None:
    blocks, total, i = [], 0, 0
    while total < max(SIZES):
        user, system = (lagged_vectors(NAB / CPU[(i + j) % len(CPU)]) for j in (0, 1))
        blocks.append(np.hstack([user, system]))
        total += len(blocks[-1])
        i += 1
    X = np.vstack(blocks)
    OUT.mkdir(parents=True, exist_ok=True)
    for n in SIZES:
        path = OUT / f"vectors_{n}x8.csv"
        with open(path, "w") as f:
            f.writelines(",".join(repr(float(v)) for v in row) + "\n" for row in X[:n])
        print(f"wrote {path.relative_to(REPO)} ({n} rows)")


def bench(reps: int) -> None:
    for n in SIZES:
        path = OUT / f"vectors_{n}x8.csv"
        X = np.loadtxt(path, delimiter=",", ndmin=2)
        km = KMeans(n_clusters=2, n_init=10, random_state=0)
        km.fit(X)  # warm-up, untimed
        times = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            km.fit(X)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        print(json.dumps({
            "impl": "sklearn", "file": str(path.relative_to(REPO)), "n": X.shape[0],
            "d": X.shape[1], "k": 2, "n_init": 10,
            "median_ms": round(statistics.median(times), 4), "min_ms": round(min(times), 4),
            "inertia": float(km.inertia_), "sklearn": sklearn.__version__,
        }), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-data", action="store_true", help="regenerate bench/data/ from NAB and exit")
    ap.add_argument("--reps", type=int, default=20, help="timed fits per file (default 20)")
    args = ap.parse_args()
    make_data() if args.make_data else bench(args.reps)
