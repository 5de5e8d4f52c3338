#!/usr/bin/env bash
# Which release profile? Builds both binaries once per profile variant (each in its own
# target directory, so nothing is shared between variants), then measures:
#   - the size of lookout-agent (default features, and without the live view) and
#     lookout-bridge;
#   - the agent's RSS against mosquitto, with the peer harness that measures collectd
#     (../shared/bench/agent-peers/measure.py), collectd included in the same run;
#   - the scorer's speed (criterion: one scored tick, one default fit) for the variants
#     in TICK_VARIANTS, since opt-level "s"/"z" may trade speed for size.
#
#   bash bench/profile/run.sh                     # all variants, ~75 min on 2 cores
#   VARIANTS="current z-fat-abort" TICK_VARIANTS=current REPS=1 bash bench/profile/run.sh
#
# Results: bench/profile/results/<UTC stamp>/ (builds.tsv, ticks.tsv, footprint/*.json);
# python3 bench/profile/summary.py DIR prints the table of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PEERS_DIR=${PEERS_DIR:-$ROOT/../shared/bench/agent-peers}
VARIANTS=${VARIANTS:-"cargo-default current fat-unwind fat-abort s-fat-abort z-fat-abort"}
TICK_VARIANTS=${TICK_VARIANTS:-"current fat-abort s-fat-abort z-fat-abort"}
REPS=${REPS:-2}
DURATION=${DURATION:-60}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$ROOT/bench/profile/results/$STAMP}
mkdir -p "$OUT/footprint"

# name -> opt-level lto codegen-units panic strip. "current" is what Cargo.toml had
# before this measurement; cargo-default is Cargo's own release profile.
settings() {
  case $1 in
    cargo-default) echo "3 false 16 unwind none" ;;
    current)       echo "3 thin 1 unwind symbols" ;;
    fat-unwind)    echo "3 fat 1 unwind symbols" ;;
    fat-abort)     echo "3 fat 1 abort symbols" ;;
    s-fat-abort)   echo "s fat 1 abort symbols" ;;
    z-fat-abort)   echo "z fat 1 abort symbols" ;;
    thin-abort)    echo "3 thin 1 abort symbols" ;;
    s-fat-unwind)  echo "s fat 1 unwind symbols" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

# Overrides the workspace's [profile.release] (and [profile.bench], which inherits it)
# through Cargo's environment, so the variants need no edit of Cargo.toml.
use_variant() {
  read -r opt lto cgu panic strip <<<"$(settings "$1")"
  for p in RELEASE BENCH; do
    export CARGO_PROFILE_${p}_OPT_LEVEL=$opt CARGO_PROFILE_${p}_LTO=$lto \
      CARGO_PROFILE_${p}_CODEGEN_UNITS=$cgu CARGO_PROFILE_${p}_PANIC=$panic \
      CARGO_PROFILE_${p}_STRIP=$strip CARGO_PROFILE_${p}_DEBUG=false
  done
  export CARGO_TARGET_DIR=$ROOT/target/profile-$1
}

printf 'variant\topt_level\tlto\tcodegen_units\tpanic\tstrip\tagent_bytes\tagent_no_live_view_bytes\tbridge_bytes\tbuild_s\n' >"$OUT/builds.tsv"
for v in $VARIANTS; do
  use_variant "$v"
  echo "== build $v ($(settings "$v"))" >&2
  t0=$(date +%s)
  cargo build --release --locked -p lookout-agent -p lookout-bridge
  t1=$(date +%s)
  cp "$CARGO_TARGET_DIR/release/lookout-agent" "$OUT/lookout-agent.$v"
  agent=$(stat -c %s "$CARGO_TARGET_DIR/release/lookout-agent")
  bridge=$(stat -c %s "$CARGO_TARGET_DIR/release/lookout-bridge")
  cargo build --release --locked -p lookout-agent --no-default-features
  nolive=$(stat -c %s "$CARGO_TARGET_DIR/release/lookout-agent")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$v" $(settings "$v") \
    "$agent" "$nolive" "$bridge" $((t1 - t0)) >>"$OUT/builds.tsv"
done
unset CARGO_TARGET_DIR

# RSS and CPU: collectd once, then each variant's agent (default features), the same way,
# one after another in this run.
bash "$PEERS_DIR/run.sh" --peers collectd --reps "$REPS" --duration "$DURATION" \
  --results "$OUT/footprint"
for v in $VARIANTS; do
  python3 "$PEERS_DIR/measure.py" --name "lookout-agent.$v" --reps "$REPS" \
    --duration "$DURATION" --results "$OUT/footprint" \
    --agent-cmd "$OUT/lookout-agent.$v run --config configs/agent.toml --set broker.enabled=false --set mqtt.url=mqtt://127.0.0.1:{port}"
done
rm -f "$OUT"/lookout-agent.*

# Scorer speed: criterion, short runs, two rounds interleaved across variants so that a
# noisy spell does not land on one variant only.
printf 'round\tvariant\tbench\tmedian_ns\n' >"$OUT/ticks.tsv"
for round in 1 2; do
  for v in $TICK_VARIANTS; do
    use_variant "$v"
    echo "== bench $v round $round" >&2
    cargo bench --locked -p lookout-agent --bench scorer -- \
      --warm-up-time 1 --measurement-time 4 --noplot \
      'scored_tick/default|fit/default' 2>/dev/null \
      | python3 "$ROOT/bench/profile/summary.py" --criterion "$round" "$v" >>"$OUT/ticks.tsv"
  done
done

python3 "$ROOT/bench/profile/summary.py" "$OUT" | tee "$OUT/summary.md"
