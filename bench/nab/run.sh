#!/usr/bin/env bash
# Detection quality on NAB's DEV set: replays every DEV series through the agent's
# default detector (no flags, as a user runs it), scores the outputs with the shared
# evaluator and prints the published detectors' rows with Lookout's added.
#
#   bench/nab/run.sh                          # the shipped default
#   bench/nab/run.sh --set detector.train.ensemble=1   # an ablation: any replay flags pass through
#   OUT=/tmp/nab-lookout bench/nab/run.sh      # where outputs and result.json go
#   BIN=/path/to/lookout-agent bench/nab/run.sh  # score a given binary (no build)
#
# Needs ../shared (beside the repo root) for the data and evaluate.py; Python 3 only.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
OUT="${OUT:-${TMPDIR:-/tmp}/lookout-nab}"
PY="${PYTHON:-python3}"
if [ -z "${BIN:-}" ]; then
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/lookout-agent"
  cargo build --release -q -p lookout-agent --manifest-path "$ROOT/Cargo.toml"
fi
rm -rf "$OUT" && mkdir -p "$OUT"
start=$(date +%s.%N)
rows=0
while read -r path; do
  case "$path" in ''|'#'*) continue ;; esac
  rel="${path#data/}"
  mkdir -p "$OUT/$(dirname "$rel")"
  "$BIN" replay --input "$SHARED/data/nab/$path" --output "$OUT/$rel" "$@"
  rows=$((rows + $(wc -l < "$SHARED/data/nab/$path") - 1))
done < "$SHARED/reference/dev.txt"
secs=$(echo "$(date +%s.%N) - $start" | bc)
"$PY" "$SHARED/reference/evaluate.py" score "$OUT" --set dev --json "$OUT/result.json" > "$OUT/score.txt"
"$PY" "$ROOT/bench/nab/table.py" "$OUT/result.json" --label "Lookout default${*:+ ($*)}"
echo
echo "replayed $rows rows in ${secs}s (15 processes, fits included); outputs in $OUT"
