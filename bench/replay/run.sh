#!/usr/bin/env bash
# Replay throughput of the built-in default detector (no flags, as a user runs it) on a
# generated single-metric series: bench/replay/gen.py writes it into a temporary folder
# (10,000,000 rows at 60 s, seed 1, ~280 MB, removed at the end), then `replay` runs
# RUNS times and the median wall time gives rows per second. With BASE=<binary>, that
# binary runs the same series in the same session, its runs interleaved with ours so that
# both see the same machine, and the ratio is printed.
#
#   bench/replay/run.sh                                   # this tree (built first)
#   BASE=/tmp/main/lookout-agent bench/replay/run.sh      # and a peer binary
#   BIN=path ROWS=1000000 RUNS=5 bench/replay/run.sh      # a given binary, other sizes
#
# Python 3 only. Single-threaded: replay fits inline, one core.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
ROWS="${ROWS:-10000000}"
INTERVAL="${INTERVAL:-60}"
SEED="${SEED:-1}"
RUNS="${RUNS:-3}"
PY="${PYTHON:-python3}"
if [ -z "${BIN:-}" ]; then
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/lookout-agent"
  cargo build --release -q -p lookout-agent --manifest-path "$ROOT/Cargo.toml"
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$PY" "$ROOT/bench/replay/gen.py" "$ROWS" "$INTERVAL" "$SEED" "$TMP/series.csv"

# One replay of the series; prints its wall time in seconds.
run_once() {
  local start end
  start=$(date +%s.%N)
  "$1" replay --input "$TMP/series.csv" --output "$TMP/out.csv"
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

declare -a ours=() base=()
for i in $(seq "$RUNS"); do
  ours+=("$(run_once "$BIN")")
  echo "run $i: $BIN ${ours[-1]} s" >&2
  if [ -n "${BASE:-}" ]; then
    base+=("$(run_once "$BASE")")
    echo "run $i: $BASE ${base[-1]} s" >&2
  fi
done

# Median seconds of the arguments, and rows/s at that median.
summary() {
  "$PY" - "$ROWS" "$@" <<'END'
import statistics, sys
rows, secs = int(sys.argv[1]), [float(s) for s in sys.argv[2:]]
m = statistics.median(secs)
print(f"{m:.3f} {rows / m:.0f}")
END
}

read -r ours_s ours_rps <<< "$(summary "${ours[@]}")"
echo "rows: $ROWS at ${INTERVAL}s, seed $SEED; median of $RUNS runs"
printf '%-50s %9.3f s %12s rows/s\n' "$BIN" "$ours_s" "$ours_rps"
if [ -n "${BASE:-}" ]; then
  read -r base_s base_rps <<< "$(summary "${base[@]}")"
  printf '%-50s %9.3f s %12s rows/s\n' "$BASE" "$base_s" "$base_rps"
  echo "ratio: $(echo "scale=2; $base_s / $ours_s" | bc)x"
fi
