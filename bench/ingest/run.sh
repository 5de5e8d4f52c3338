#!/usr/bin/env bash
# The cost of device models: 1,000 devices at 1 reading/s each into one agent (issue 18,
# item 5; targets ≤ 5 % of one core and ≤ 64 MiB resident). The same agent, config and
# load run twice in one go: once with a device model over the readings, once without (the
# readings still arrive and are parsed for nothing), so the difference is the models'.
# CPU is the agent's own user+system time over the measured window (not wall time, so a
# busy machine disturbs it less); RSS is VmRSS at the end. The window starts after every
# model's first fit (150 ticks) and lasts longer than one refit round (train.every, 360
# ticks), so it holds scoring and refits in their steady proportion.
#
# usage: BIN=target/release/lookout-agent [DEVICES=1000] [WARMUP=170] [MEASURE=400] \
#        [OUT=bench/results-ingest] bash bench/ingest/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/lookout-agent}
DEVICES=${DEVICES:-1000}
WARMUP=${WARMUP:-170}
MEASURE=${MEASURE:-400}
OUT=${OUT:-bench/results-ingest}
mkdir -p "$OUT"
command -v mosquitto >/dev/null || { echo "mosquitto is needed (apt-get install -y mosquitto)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no agent binary at $BIN: cargo build --release -p lookout-agent" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
sleep 0.5

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

run() { # name, extra config
  local name=$1 extra=$2 cfg="$work/$1.toml"
  { cat configs/agent.toml; printf '\n%s\n' "$extra"; } > "$cfg"
  "$BIN" run --config "$cfg" --set broker.enabled=false --set "mqtt.url=mqtt://127.0.0.1:$port" \
    --set agent.host=bench --set "snapshots.dir=$work/models-$name" --set "outbox.dir=$work/outbox-$name" --set "buffer.dir=$work/buffer-$name" \
    >"$OUT/agent-$name.log" 2>&1 &
  local pid=$!
  sleep 1
  python3 bench/ingest/publish.py "$port" "$DEVICES" $((WARMUP + MEASURE + 5)) &
  local pub=$!
  sleep "$WARMUP"
  local t0; t0=$(ticks $pid)
  sleep "$MEASURE"
  local t1; t1=$(ticks $pid)
  local rss; rss=$(rss_kib $pid)
  wait $pub || true
  kill -TERM $pid; wait $pid || true
  local cpu; cpu=$(echo "scale=2; 100 * ($t1 - $t0) / $hz / $MEASURE" | bc)
  echo "$name cpu_pct_of_one_core=$cpu rss_mib=$(echo "scale=1; $rss / 1024" | bc)" | tee -a "$OUT/result.txt"
}

: > "$OUT/result.txt"
echo "devices=$DEVICES rate=1/s warmup=${WARMUP}s measure=${MEASURE}s bin=$BIN $(date -u +%FT%TZ)" | tee -a "$OUT/result.txt"
run without ""
run with "$(printf '[models.sensor]\ndevice = "dev-*"\nmetrics = ["temp"]\nmax_instances = %d\n' "$DEVICES")"
grep -h "device models: readings taken" "$OUT"/agent-with.log | tail -1 || true
