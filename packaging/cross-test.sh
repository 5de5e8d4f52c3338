#!/usr/bin/env bash
# Tests an ARM build under emulation (qemu-user), on an x86_64 Debian machine, as root:
#   bash packaging/cross-test.sh aarch64|armv7 [unit|smoke|all]     (default: all)
# unit:  builds the unit tests of all four crates (`cargo test --lib --bins`) for the
#        target in the cross-build chroot (packaging/cross-env.sh), in the workspace's
#        `cross-test` profile (optimised, with debug assertions and overflow checks on),
#        and runs each test binary under qemu-aarch64 / qemu-arm with -L the target's
#        sysroot, printing each one's wall time. The
#        integration tests (agent/tests/, tests/) are left out: they start mosquitto and the
#        binaries as child processes and take minutes natively; the smoke test covers the
#        cross-built binaries end to end instead.
# smoke: runs the cross-built agent (packaging/cross-build.sh first) with its embedded
#        broker on two simulated hosts at 300x speed, the cross-built bridge with a `file`
#        target, and mosquitto_sub on the host; passes when scores and a firing alarm are
#        published and the bridge wrote that alarm to its file, within SMOKE_SECONDS
#        (default 60). Exits 1 on any failure.
set -euo pipefail
source "$(dirname "$0")/cross-env.sh"

[ $# -ge 1 ] && [ $# -le 2 ] || {
  echo "usage: $0 aarch64|armv7 [unit|smoke|all]" >&2
  exit 2
}
target_names "$1"
what=${2:-all}
need_root
host_tools qemu-aarch64=qemu-user qemu-arm=qemu-user flock=util-linux mosquitto_sub=mosquitto-clients

# Unit tests that cannot pass under qemu-user for a reason of the emulator, not of ARM;
# each is skipped by its full name (libtest's --skip with --exact) and named in the
# output. Never a test that is only slow: those run.
#   lookout-bridge notify::exec::tests::a_missing_program_is_permanent: glibc's
#     posix_spawn (which Rust's Command uses) reports a failed execve to the parent through
#     memory shared with the child, a clone(CLONE_VM|CLONE_VFORK); qemu-user (7.2, Debian
#     12) runs that clone as a plain fork, so the parent sees a child that exited with
#     status 127 instead of spawn() failing with ENOENT (seen with qemu-aarch64 -strace).
#     On a device, and on x86_64 in `cargo test`, the test runs and passes.
qemu_skips=(notify::exec::tests::a_missing_program_is_permanent)

unit_tests() {
  mkdir -p "$(dirname "$chroot_dir")"
  exec 9>"$chroot_dir.lock"
  flock 9
  ensure_chroot
  mount_for_build
  echo "== building the unit tests for $triple (profile cross-test), after $SECONDS s"
  local list
  list=$(in_chroot "cargo test --locked --profile cross-test --target $triple --workspace --lib --bins --no-run \
    --message-format=json-render-diagnostics" |
    grep '"executable":"/' |
    sed -n 's/.*"manifest_path":"\([^"]*\)".*"executable":"\([^"]*\)".*/\1 \2/p')
  unmount_all
  exec 9>&-
  echo "   built after $SECONDS s"
  [ -n "$list" ] || {
    echo "no test binaries were built" >&2
    exit 1
  }
  local passed=0 failed=0 manifest exe out began logs=$host_target_dir/cross-test-$triple
  local skip=(--exact) name
  for name in "${qemu_skips[@]}"; do skip+=(--skip "$name"); done
  echo "skipped under $qemu (the emulator's limits, above): ${qemu_skips[*]}"
  mkdir -p "$logs"
  while read -r manifest exe; do
    echo "== $qemu: $(basename "$exe") (in $(dirname "$manifest"))"
    began=$SECONDS
    # cargo runs unit tests in the package's directory; so does this.
    # The whole output is kept: $logs/<binary>.log.
    if out=$(cd "$(dirname "$manifest")" && timeout 1800 "$qemu" -L "$sysroot" "$chroot_dir$exe" "${skip[@]}" 2>&1); then
      printf '%s\n' "$out" >"$logs/$(basename "$exe").log"
    else
      printf '%s\n' "$out" >"$logs/$(basename "$exe").log"
      failed=$((failed + 1))
      printf '%s\n' "$out" | grep -vE '^test .* \.\.\. ok$' | tail -n 60
      echo "FAILED after $((SECONDS - began)) s: $exe (whole output: $logs/$(basename "$exe").log)"
      continue
    fi
    printf '%s\n' "$out" | grep -E '^test result:'
    echo "   $((SECONDS - began)) s"
    passed=$((passed + 1))
  done <<<"$list"
  echo "unit tests under $qemu: $passed binaries passed, $failed failed, after $SECONDS s"
  [ "$failed" -eq 0 ]
}

smoke() {
  local out=$host_target_dir/$triple/release seconds=${SMOKE_SECONDS:-60}
  for bin in lookout-agent lookout-bridge; do
    [ -x "$out/$bin" ] || {
      echo "$out/$bin is missing: run packaging/cross-build.sh $1 first" >&2
      exit 1
    }
  done
  local dir port pids=()
  dir=$(mktemp -d)
  port=$((20000 + RANDOM % 30000))
  # Ends only the processes this function started, by PID.
  trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' RETURN
  echo "== smoke: $qemu lookout-agent (embedded broker on 127.0.0.1:$port), lookout-bridge, ${seconds}s at most"
  (cd "$dir" && exec env STATE_DIRECTORY="$dir/agent-state" "$qemu" -L "$sysroot" "$out/lookout-agent" run \
    --config "$repo/configs/agent.toml" --simulate 2 --speed 300 \
    --set broker.listen="127.0.0.1:$port" --set mqtt.url="mqtt://127.0.0.1:$port" \
    >"$dir/agent.log" 2>&1) &
  pids+=($!)
  local started=$SECONDS scores='' alarm='' delivered=''
  # The broker comes up under emulation in a second or two; both clients retry anyway.
  sleep 2
  mosquitto_sub -h 127.0.0.1 -p "$port" -v -t 'lookout/#' >"$dir/sub.log" 2>&1 &
  pids+=($!)
  (cd "$dir" && exec "$qemu" -L "$sysroot" "$out/lookout-bridge" run \
    --config "$repo/configs/bridge.toml" --set mqtt.url="mqtt://127.0.0.1:$port" \
    >"$dir/bridge.log" 2>&1) &
  pids+=($!)
  while [ $((SECONDS - started)) -lt "$seconds" ]; do
    sleep 1
    [ -n "$scores" ] || scores=$(grep -m1 -E '^lookout/sim-[12]/scores/[^ ]+ \{.*"learning":false' "$dir/sub.log" || true)
    [ -n "$alarm" ] || alarm=$(grep -m1 -E '^lookout/sim-[12]/alarms/[^ ]+ \{.*"state":"firing"' "$dir/sub.log" || true)
    [ -n "$delivered" ] || delivered=$(grep -m1 '"state":"firing"' "$dir/alarms.log" 2>/dev/null || true)
    if [ -n "$scores" ] && [ -n "$alarm" ] && [ -n "$delivered" ]; then break; fi
  done
  local took=$((SECONDS - started)) fail=0
  report() { # report WHAT FOUND
    if [ -n "$2" ]; then printf '  ok    %s: %.160s\n' "$1" "$2"; else
      printf '  MISS  %s\n' "$1"
      fail=1
    fi
  }
  report "a score (learning false) on lookout/<host>/scores/<model>" "$scores"
  report "a firing alarm on lookout/<host>/alarms/<model>" "$alarm"
  report "the bridge's file target (alarms.log) holds a firing alarm" "$delivered"
  if [ "$fail" -ne 0 ]; then
    for log in agent bridge sub; do
      echo "-- $log.log (last 15 lines)"
      tail -n 15 "$dir/$log.log" 2>/dev/null || true
    done
    echo "smoke test on $triple: FAILED after ${took}s"
    return 1
  fi
  echo "smoke test on $triple: passed in ${took}s"
}

case $what in
unit) unit_tests ;;
smoke) smoke "$1" ;;
all)
  unit_tests
  smoke "$1"
  ;;
*)
  echo "unknown step '$what': use unit, smoke or all" >&2
  exit 2
  ;;
esac
