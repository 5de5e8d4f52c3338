#!/usr/bin/env bash
# lookout-bridge beside mqttwarn 0.36.1 and a control subscriber (mosquitto_sub), with the
# peer harness ../shared/bench/mqttwarn (see its README.md). ~12 minutes on 2 cores.
#
#   bench/bridge-vs-mqttwarn.sh            # build, throughput (harness), latency at 1,000/s
#   REPS=5 bench/bridge-vs-mqttwarn.sh     # more repetitions
#   SKIP_THROUGHPUT=1 / SKIP_LATENCY=1     # one half only
#
# 1. Throughput: the harness runs ONE subscriber per invocation (mqttwarn, or one
#    --subscriber-cmd), so this runs three invocations back to back, each with its own
#    fresh mosquitto on the same port: control (mosquitto_sub) + mqttwarn via the
#    harness's run.sh, then the bridge via run.sh --subscriber-cmd. N=20000 flooded
#    messages, $REPS repetitions, QoS 1 then QoS 0, a fresh subscriber process per rep.
# 2. Latency: the harness has no paced mode, so bench/bridge_latency.py publishes at
#    1,000 msg/s for 20 s (QoS 1) into control, mqttwarn and the bridge in ONE invocation
#    (one broker, repetitions interleaved) and times publish -> line in the file. The
#    bridge's persistent session (client id lookout-bridge-bench) is ended after each
#    run, so it does not collect the other subscribers' messages between its runs.
# 3. bench/bridge_summary.py prints the table for BENCHMARKS.md from the JSON results.
#
# The bridge always subscribes at QoS 1 (docs/bridge.md), whatever the harness's {qos}:
# in the harness's "QoS 0" round the publisher sends at QoS 0, so the broker delivers at
# QoS 0 to every subscriber (delivery QoS = min(publish, subscription)).
#
# Internal mode, used as the harness's --subscriber-cmd:
#   bench/bridge-vs-mqttwarn.sh subscriber PORT QOS OUTFILE RUNDIR
# renders RUNDIR/bridge.toml and execs the bridge (exec: the PID the harness measures
# for CPU and RSS is the bridge's own).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BRIDGE="${BRIDGE:-$ROOT/target/release/lookout-bridge}"

if [ "${1:-}" = subscriber ]; then
    port="$2" qos="$3" outfile="$4" rundir="$5"
    : "$qos"   # unused: the bridge subscribes at QoS 1 (see above)
    cat > "$rundir/bridge.toml" <<EOF
# Rendered by bench/bridge-vs-mqttwarn.sh for one benchmark run.
[bridge]
id = "bench"                 # fixed client id (lookout-bridge-bench): one persistent session
stats_interval = "3600s"
inhibit_offline = false
state_dir = "$rundir/state"  # the notification log, as shipped (fsync every 1 s)

[mqtt]
url = "mqtt://127.0.0.1:$port"
topics = ["alarms/#"]        # subscribed at QoS 1 (always)

[delivery]
dead_letter = "$rundir/dead-letter.jsonl"

[targets.alarms]
type = "file"
path = "$outfile"

[[routes]]
topic = "alarms/#"
targets = ["alarms"]
body = "{payload}"           # the payload verbatim, one line, as mqttwarn writes it
EOF
    exec "$BRIDGE" run --config "$rundir/bridge.toml"
fi

HARNESS="$ROOT/../shared/bench/mqttwarn"
VENV="${MQTTWARN_VENV:-/tmp/mqttwarn-venv}"
REPS="${REPS:-3}"
N="${N:-20000}"
TP_PORT="${TP_PORT:-18930}"
LAT_PORT="${LAT_PORT:-18931}"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="${RESULTS:-$ROOT/bench/results-bridge/$STAMP}"
SCRATCH="${SCRATCH:-/tmp/bridge-bench-$STAMP}"
mkdir -p "$RESULTS" "$SCRATCH"

(cd "$ROOT" && cargo build --release -p lookout-bridge)
echo "commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- broker-bridge shared Cargo.lock || echo '+dirty')" | tee "$RESULTS/commit.txt"

if [ "${SKIP_THROUGHPUT:-0}" != 1 ]; then
    # control (mosquitto_sub) then mqttwarn: the harness's own command
    "$HARNESS/run.sh" --port "$TP_PORT" --n "$N" --reps "$REPS" --results "$RESULTS" \
        --workdir "$SCRATCH/tp-mqttwarn" 2>&1 | tee "$RESULTS/throughput-control-mqttwarn.log" \
        || echo "control/mqttwarn throughput: exit $?" >&2
    # the bridge, same publisher, broker config and counting
    SKIP_CONTROL=1 "$HARNESS/run.sh" --port "$TP_PORT" --n "$N" --reps "$REPS" \
        --results "$RESULTS" --workdir "$SCRATCH/tp-bridge" --name lookout-bridge \
        --subscriber-cmd "$HERE/bridge-vs-mqttwarn.sh subscriber {port} {qos} {outfile} {rundir}" \
        2>&1 | tee "$RESULTS/throughput-bridge.log" \
        || echo "bridge throughput: exit $?" >&2
fi

if [ "${SKIP_LATENCY:-0}" != 1 ]; then
    timeout --kill-after=30 1200 "$VENV/bin/python" "$HERE/bridge_latency.py" \
        --harness "$HARNESS" --port "$LAT_PORT" --rate 1000 --duration 20 --qos 1 \
        --reps "$REPS" --workdir "$SCRATCH/latency" --json "$RESULTS/latency.json" \
        --purge-client-id lookout-bridge-bench \
        --sub control --sub mqttwarn \
        --sub "lookout-bridge=$HERE/bridge-vs-mqttwarn.sh subscriber {port} {qos} {outfile} {rundir}" \
        2>&1 | tee "$RESULTS/latency.log" \
        || echo "latency: exit $?" >&2
fi

python3 "$HERE/bridge_summary.py" "$RESULTS" | tee "$RESULTS/table.md"
echo "results: $RESULTS  scratch: $SCRATCH"
