#!/usr/bin/env bash
# Fleet load on the centre (issue 19, item 4); see run.py for the phases and what is
# measured. Needs mosquitto and release binaries.
#
# usage: [BIN=target/release] [HOSTS=1000] [NORMAL=60] [BURST=60] [SETTLE=30] \
#        [OUT=bench/results-fleet-load/<date>] bash bench/fleet-load/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release}
OUT=${OUT:-bench/results-fleet-load/$(date -u +%Y%m%d-%H%M%S)}
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || {
    echo "mosquitto is needed (apt-get install -y mosquitto)" >&2; exit 1; }
PATH=$PATH:/usr/sbin
for b in lookout-agent lookout-bridge; do
    [ -x "$BIN/$b" ] || { echo "no $BIN/$b: cargo build --release" >&2; exit 1; }
done
mkdir -p "$OUT"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || true
python3 bench/fleet-load/run.py --agent "$BIN/lookout-agent" --bridge "$BIN/lookout-bridge" \
    --hosts "${HOSTS:-1000}" --normal "${NORMAL:-60}" --burst "${BURST:-60}" \
    --settle "${SETTLE:-30}" --out "$OUT"
rm -rf "$OUT/work"
