#!/usr/bin/env bash
# The fleet benchmark (issue 17): a simulated fleet through the agent's own tick loop
# (`lookout-agent simulate`, fits inline, deterministic), 7 simulated days of normal
# behaviour (daily and weekly cycles, nightly backup and cron, normal bursts, drift), then
# 2 days with injected anomalies, for each seed given. Prints, per seed and in total:
# false alarms per host-day by severity (model and host level), recall of injected
# anomalies at severity >= 2 with median and p90 delay, severity changes per alarm.
#
#   bench/fleet/run.sh                     # seeds 1 2 3, 8 hosts, shipped config
#   SEEDS="11 12" HOSTS=16 bench/fleet/run.sh --set detector.alarm.threshold=2
#   OUT=/tmp/fleet bench/fleet/run.sh      # where the JSON lines and results go
#
# Any further arguments pass to `lookout-agent simulate` (--config, --set).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${OUT:-${TMPDIR:-/tmp}/lookout-fleet}"
SEEDS="${SEEDS:-1 2 3}"
HOSTS="${HOSTS:-8}"
NORMAL_DAYS="${NORMAL_DAYS:-7}"
ANOMALY_DAYS="${ANOMALY_DAYS:-2}"
PY="${PYTHON:-python3}"
BIN="${BIN:-}"   # a built binary to measure (default: build the release one)
START=1767571200000   # 2026-01-05 00:00 UTC, a Monday
DAY=86400000

if [ -z "$BIN" ]; then
  cargo build --release -q -p lookout-agent --manifest-path "$ROOT/Cargo.toml"
  BIN="$ROOT/target/release/lookout-agent"
fi
mkdir -p "$OUT"
normal_until=$((START + NORMAL_DAYS * DAY))
end=$((normal_until + ANOMALY_DAYS * DAY))
for seed in $SEEDS; do
  run="$OUT/seed-$seed.jsonl"
  start=$(date +%s)
  LOOKOUT_LOG=warn "$BIN" simulate --hosts "$HOSTS" --seed "$seed" \
    --duration "$((NORMAL_DAYS + ANOMALY_DAYS))days" --start-ms "$START" -o "$run" \
    --set "simulate.first_anomaly_after=${NORMAL_DAYS}days" "$@"
  echo "seed $seed: $((HOSTS * (NORMAL_DAYS + ANOMALY_DAYS))) host-days in $(( $(date +%s) - start ))s"
  "$PY" "$ROOT/bench/fleet/summarize.py" "$run" --start "$START" --normal-until "$normal_until" \
    --end "$end" --hosts "$HOSTS" --json "$OUT/seed-$seed.json" > /dev/null
done
"$PY" "$ROOT/bench/fleet/table.py" "$OUT"/seed-*.json
