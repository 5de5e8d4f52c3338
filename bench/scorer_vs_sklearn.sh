#!/usr/bin/env bash
# Scorer benchmarks beside their peer, in one run: scikit-learn's KMeans(n_clusters=2,
# n_init=10) on the same vectors, then Lookout's criterion benches (scored tick, k-means
# fits, replay). Prints one table with medians and the ratio; BENCHMARKS.md quotes it.
#   bench/scorer_vs_sklearn.sh            # from the repository root; ~5 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${NAB_VENV:-/tmp/nab-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r ../shared/reference/requirements.txt
fi
out=$(mktemp -d)
"$venv/bin/python" bench/kmeans_sklearn.py --reps 20 > "$out/sklearn.jsonl"
cargo bench -q -p lookout-agent --bench scorer > "$out/criterion.txt" 2>&1 || { cat "$out/criterion.txt"; exit 1; }
python3 - "$out/sklearn.jsonl" target/criterion <<'PY'
import json, sys, pathlib
sk = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        sk[r["n"]] = r
crit = pathlib.Path(sys.argv[2])
def median_ns(group, bench):
    est = json.load(open(crit / group / bench / "new" / "estimates.json"))
    return est["median"]["point_estimate"]
tick = median_ns("scored_tick_seed_model_8d_k2", ".") if (crit / "scored_tick_seed_model_8d_k2" / "new").exists() else None
print("| benchmark | Lookout median | peer median (same run) | ratio |")
print("|---|---:|---:|---:|")
if tick is not None:
    print(f"| scored tick, seed model (8-value vectors, k = 2) | {tick:.1f} ns | Python reference 11-31 µs (reference/README) | - |")
for n in (1440, 21600):
    ours = median_ns("kmeans_fit_k2_n_init10", str(n)) / 1e6
    theirs = sk[n]["median_ms"]
    print(f"| k-means fit {n} x 8, k = 2, 10 restarts | {ours:.2f} ms | scikit-learn {sk[n]['sklearn']}: {theirs:.2f} ms | {theirs / ours:.1f}x faster |")
rep = median_ns("replay", "default_detector_200k_rows") / 1e9
print(f"| replay, built-in default detector | {200000 / rep / 1e6:.2f} M rows/s | - | - |")
rep = median_ns("replay", "notebook_detector_200k_rows") / 1e9
print(f"| replay, seed notebook detector | {200000 / rep / 1e6:.2f} M rows/s | - | - |")
PY
