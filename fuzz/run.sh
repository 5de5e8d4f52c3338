#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600), one after another, and prints a
# line per target: seconds, executions, and whether it crashed. Nightly toolchain and
# cargo-fuzz required (README.md). Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -u
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# Inputs longer than this are cut: every parser here reads at most a config file, one
# MQTT message or one log/segment record at a time, and 16 KiB covers all their seeds.
# The ack target gets a little more so its "over 16 KiB" refusal is reached.
max_len() {
    case "$1" in
        bridge_ack) echo 17408 ;;
        bridge_template | bridge_expr) echo 4096 ;;
        *) echo 16384 ;;
    esac
}

mkdir -p fuzz/work fuzz/logs
status=0
for t in "${targets[@]}"; do
    # The committed seeds stay as they are: what the fuzzer finds goes to fuzz/work/.
    mkdir -p "fuzz/work/$t"
    log="fuzz/logs/$t.log"
    # -a: debug assertions and overflow checks on, as in the crates' own tests.
    # -rss_limit_mb=512: the bound on memory (also the largest single allocation allowed).
    cargo +nightly fuzz run -a "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -max_len="$(max_len "$t")" \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
    if [ $rc -eq 0 ]; then verdict=ok; else verdict="FAILED (exit $rc, see $log)"; status=1; fi
    printf '%-18s %6ss %12s execs  %s\n' "$t" "$secs" "${execs:-?}" "$verdict"
done
exit $status
