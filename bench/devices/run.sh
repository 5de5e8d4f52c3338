#!/usr/bin/env bash
# Multi-unit device benchmark (issue 24, item 5): labelled recordings of a simulated pump
# rig (gen.py: 8 sensors in 6 units, one fault each), each replayed through ONE model over
# all 8 sensor columns with the shipped configs/agent.toml, scored per row after the first
# 400 (score.py) by the replay's `firing` column. Prints a markdown table.
#
#   bench/devices/run.sh                                  # seeds 1-35, the fair settings below
#   bench/devices/run.sh --set detector.alarm.threshold=2.5   # extra replay flags (ablations)
#   SEEDS=36-70 OUT=/tmp/rig bench/devices/run.sh         # other recordings, another folder
#   BIN=/path/to/lookout-agent bench/devices/run.sh       # measure a given binary...
#   CONFIG=/path/to/agent.toml bench/devices/run.sh       # ...or config (default: configs/agent.toml)
#   FAIR= bench/devices/run.sh                            # the shipped config, nothing changed
#
# Real recordings instead of simulated ones: DATA= a folder of CSV files (searched
# recursively, e.g. a rig's valve1/*.csv, other/*.csv), LABEL= their 0/1 column, IGNORE=
# every column that is not a sensor, DELIM= their delimiter:
#
#   DATA=~/rig/data LABEL=anomaly IGNORE=anomaly,changepoint bench/devices/run.sh
#
# FAIR: what a replay of a short labelled recording needs and a device running for days
# does not (bench/devices/README.md says why): the first fit on the first 400 rows (the
# normal ones) instead of after 150 s, and no settling hour, so that the model may alarm
# from its first score. Everything else is the config as shipped.
#
# Needs Python 3 (standard library only).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/bench/devices"
OUT="${OUT:-${TMPDIR:-/tmp}/lookout-devices}"
SEEDS="${SEEDS:-1-35}"
DATA="${DATA:-}"
LABEL="${LABEL:-label}"
IGNORE="${IGNORE:-$LABEL}"
DELIM="${DELIM:-;}"
PY="${PYTHON:-python3}"
CONFIG="${CONFIG:-$ROOT/configs/agent.toml}"
FAIR="${FAIR-detector.train.min_points=400 detector.alarm.settle=0 detector.alarm.settle_for=0s}"
BIN="${BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --release -q -p lookout-agent --manifest-path "$ROOT/Cargo.toml"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/lookout-agent"
fi
sets=()
for kv in $FAIR; do sets+=(--set "$kv"); done

rm -rf "$OUT/out" && mkdir -p "$OUT/out"
if [ -z "$DATA" ]; then
  DATA="$OUT/data"
  rm -rf "$DATA"
  "$PY" "$HERE/gen.py" --seeds "$SEEDS" --out "$DATA" --delimiter "$DELIM" >/dev/null
fi
start=$(date +%s.%N)
n=0
while IFS= read -r rel; do
  mkdir -p "$OUT/out/$(dirname "$rel")"
  LOOKOUT_LOG=warn "$BIN" replay --config "$CONFIG" \
    --input "$DATA/$rel" --output "$OUT/out/$rel" \
    --delimiter "$DELIM" --ignore-columns "$IGNORE" "${sets[@]}" "$@"
  n=$((n + 1))
done < <(cd "$DATA" && find . -name '*.csv' | sed 's|^\./||' | sort)
secs=$(echo "$(date +%s.%N) - $start" | bc)
label="Lookout${FAIR:+, fair settings}${*:+ ($*)}"
"$PY" "$HERE/score.py" --data "$DATA" --out "$OUT/out" --label "$label" \
  --label-column "$LABEL" --json "$OUT/result.json"
echo
echo "$n recordings replayed in ${secs}s; recordings in $DATA, outputs in $OUT/out"
