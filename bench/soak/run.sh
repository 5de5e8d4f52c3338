#!/usr/bin/env bash
# Soak (issue 19, item 5): agent + bridge + mosquitto for DURATION seconds with the broker
# restarted every BROKER_EVERY seconds and the bridge's HTTP target failing 10 % of
# requests; RSS and fds over time, every alarm state accounted for (bench/soak/run.py).
# Exits 1 if an alarm state was lost or a process died.
#
# usage: [BIN=target/release] [HOSTS=50] [SPEED=60] [BROKER_EVERY=600] \
#        [OUT=bench/results-soak/<date>] bash bench/soak/run.sh DURATION
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:?usage: bench/soak/run.sh DURATION_SECONDS}
BIN=${BIN:-target/release}
OUT=${OUT:-bench/results-soak/$(date -u +%Y%m%d-%H%M%S)}
PATH=$PATH:/usr/sbin
command -v mosquitto >/dev/null || { echo "mosquitto is needed (apt-get install -y mosquitto)" >&2; exit 1; }
for b in lookout-agent lookout-bridge; do
    [ -x "$BIN/$b" ] || { echo "no $BIN/$b: cargo build --release" >&2; exit 1; }
done
mkdir -p "$OUT"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || true
status=0
python3 bench/soak/run.py --agent "$BIN/lookout-agent" --bridge "$BIN/lookout-bridge" \
    --duration "$DURATION" --hosts "${HOSTS:-50}" --speed "${SPEED:-60}" \
    --broker-every "${BROKER_EVERY:-600}" --out "$OUT" || status=$?
[ $status -eq 0 ] && rm -rf "$OUT/work"
exit $status
