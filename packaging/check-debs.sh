#!/usr/bin/env bash
# Inspects the .debs that packaging/build-debs.sh built and exits non-zero on any miss:
#   bash packaging/check-debs.sh [ARCH] [AGENT.deb BRIDGE.deb]
# ARCH: this machine's Debian architecture (the default), arm64 or armhf. Without .deb
# arguments it takes the newest target/debian/lookout-{agent,bridge}_*_ARCH.deb
# (CARGO_TARGET_DIR is honoured). For each package it checks, with dpkg-deb -I/-c and the
# extracted files: the binary in /usr/bin, the config in /etc/lookout listed in the
# conffiles control file (so upgrades keep an edited copy), the systemd unit with every
# hardening line and the maintainer scripts that enable and start it, the man page
# (renders without groff warnings), the docs; then runs the installed binary's
# check-config on the installed config (an arm64 or armhf binary under qemu-user, against
# the sysroot of packaging/cross-build.sh's chroot), `systemd-analyze verify` on the unit,
# and prints `systemd-analyze security --offline=yes` exposure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

for tool in dpkg-deb systemd-analyze groff man zgrep; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "check-debs: $tool is missing (apt-get install dpkg systemd groff-base man-db gzip)" >&2
    exit 2
  }
done

arch=$(dpkg --print-architecture)
# How the installed binary is run: directly, or under the emulator for a foreign one.
run=()
case ${1:-} in
arm64 | armhf)
  arch=$1
  shift
  # shellcheck source=packaging/cross-env.sh
  source packaging/cross-env.sh
  if [ "$arch" = arm64 ]; then target_names aarch64; else target_names armv7; fi
  command -v "$qemu" >/dev/null 2>&1 && [ -d "$sysroot" ] || {
    echo "check-debs: $arch binaries run under $qemu -L $sysroot (qemu-user and packaging/cross-build.sh)" >&2
    exit 2
  }
  run=("$qemu" -L "$sysroot")
  ;;
"$arch") shift ;;
esac

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
newest() { ls -t "$target_dir"/debian/"$1"_*_"$arch".deb 2>/dev/null | head -n 1; }
if [ $# -eq 2 ]; then
  agent_deb=$1 bridge_deb=$2
else
  agent_deb=$(newest lookout-agent) bridge_deb=$(newest lookout-bridge)
fi

failures=0
ok() { printf '  ok    %s\n' "$1"; }
miss() { printf '  MISS  %s\n' "$1"; failures=$((failures + 1)); }
check() { # check DESCRIPTION COMMAND...: ok when the command succeeds
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then ok "$what"; else miss "$what"; fi
}

# Lines every unit must carry (exact, whole lines), beside the per-package ones below.
hardening=(
  "Type=notify"
  "NotifyAccess=main"
  "DynamicUser=yes"
  "ProtectSystem=strict"
  "NoNewPrivileges=yes"
  "PrivateTmp=yes"
  "PrivateDevices=yes"
  "ProtectKernelTunables=yes"
  "ProtectKernelModules=yes"
  "ProtectKernelLogs=yes"
  "ProtectControlGroups=yes"
  "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"
  "RestrictNamespaces=yes"
  "LockPersonality=yes"
  "MemoryDenyWriteExecute=yes"
  "SystemCallArchitectures=native"
  "SystemCallFilter=@system-service"
  "CapabilityBoundingSet="
  "Restart=on-failure"
  "RestartPreventExitStatus=2"
  "KillMode=mixed"
)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# check_deb PACKAGE CRATE_DIR CONFIG DEB STATE_DIR HOME_LINE STOP_TIMEOUT
check_deb() {
  local pkg=$1 bin=$1 crate=$2 conf=$3 deb=$4 state=$5 home=$6 stop=$7
  echo "== $pkg: ${deb:-(no .deb found)}"
  if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    miss "$pkg .deb exists (run packaging/build-debs.sh first)"
    return
  fi
  local info contents root=$scratch/$pkg ctl=$scratch/$pkg.control
  info=$(dpkg-deb -I "$deb") || { miss "dpkg-deb -I reads $deb"; return; }
  contents=$(dpkg-deb -c "$deb") || { miss "dpkg-deb -c reads $deb"; return; }
  mkdir -p "$root" "$ctl"
  if ! dpkg-deb -x "$deb" "$root" || ! dpkg-deb -e "$deb" "$ctl"; then
    miss "extract $deb"
    return
  fi

  # Control data.
  check "Package: $pkg" grep -qx " Package: $pkg" <<<"$info"
  check "Architecture: $arch" grep -qx " Architecture: $arch" <<<"$info"
  check "Depends names libc6" grep -q "^ Depends: .*libc6" <<<"$info"
  # cargo-deb wraps a Cargo description of 80 characters or more into the long one.
  local synopsis
  synopsis=$(sed -n 's/^description = "\(.*\)"$/\1/p' "$crate/Cargo.toml")
  check "synopsis is Cargo's description, on one line" grep -qxF "Description: $synopsis" "$ctl/control"
  check "conffiles lists /etc/lookout/$conf (kept on upgrade when edited)" \
    grep -qx "/etc/lookout/$conf" "$ctl/conffiles"
  check "conffiles lists nothing else" test "$(wc -l <"$ctl/conffiles")" -eq 1
  check "postinst enables the unit" grep -q "deb-systemd-helper enable $pkg.service" "$ctl/postinst"
  check "postinst (re)starts the unit" grep -q "deb-systemd-invoke .*$pkg.service" "$ctl/postinst"
  check "prerm stops the unit on removal" grep -q "deb-systemd-invoke stop $pkg.service" "$ctl/prerm"
  check "postrm purges the unit's state" grep -q "deb-systemd-helper purge $pkg.service" "$ctl/postrm"

  # Files, owners and modes.
  check "/usr/bin/$bin root:root 0755" grep -qE "^-rwxr-xr-x (root/root|0/0) .* \./usr/bin/$bin$" <<<"$contents"
  check "/etc/lookout/$conf root:root 0644" \
    grep -qE "^-rw-r--r-- (root/root|0/0) .* \./etc/lookout/$conf$" <<<"$contents"
  check "installed config is the shipped configs/$conf" cmp -s "$root/etc/lookout/$conf" "configs/$conf"
  local unit
  unit=$(grep -oE "\./(usr/)?lib/systemd/system/$pkg\.service$" <<<"$contents" | head -n 1)
  check "systemd unit $pkg.service in /usr/lib/systemd/system" test -n "$unit"
  check "man page /usr/share/man/man1/$bin.1.gz" grep -qE "\./usr/share/man/man1/$bin\.1\.gz$" <<<"$contents"
  for doc in copyright README.md; do
    check "/usr/share/doc/$pkg/$doc" grep -qE "\./usr/share/doc/$pkg/$doc$" <<<"$contents"
  done
  check "nothing outside /usr, /etc" \
    test -z "$(awk '{print $6}' <<<"$contents" | grep -vE '^\./(usr|etc)(/|$)|^\./$')"

  # The man page renders cleanly and covers what a man page must.
  local man=$root/usr/share/man/man1/$bin.1.gz
  if [ -f "$man" ]; then
    check "man page renders without groff warnings" \
      test -z "$(zcat "$man" | groff -man -Tutf8 -ww -z 2>&1)"
    for section in NAME SYNOPSIS DESCRIPTION COMMANDS OPTIONS FILES "EXIT STATUS" SIGNALS; do
      check "man page has $section" zgrep -q "^\.SH \"\?$section\"\?$" "$man"
    done
  fi

  # The unit: every hardening line, and none that would break the service.
  local unit_file=$root/${unit#./}
  if [ -n "$unit" ] && [ -f "$unit_file" ]; then
    for line in "${hardening[@]}" "StateDirectory=lookout/$state" "$home" "TimeoutStopSec=$stop" \
      "ExecStart=/usr/bin/$bin run --config /etc/lookout/$conf"; do
      check "unit: $line" grep -qxF "$line" "$unit_file"
    done
    check "unit: no ProcSubset=pid (hides /proc/stat, /proc/sys/kernel/hostname)" \
      bash -c "! grep -q '^ProcSubset=pid' '$unit_file'"
    # verify resolves ExecStart= and the default dependencies (sysinit.target, ...) in the
    # root it is given, and looks up Documentation=man: pages with man(1): give the
    # extracted package systemd's own units beside it and point MANPATH at its pages.
    cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/" 2>/dev/null
    local verify
    verify=$(MANPATH=$root/usr/share/man systemd-analyze verify --root="$root" "$unit_file" 2>&1)
    if [ -z "$verify" ]; then ok "systemd-analyze verify: clean"; else
      miss "systemd-analyze verify: clean"
      sed 's/^/        /' <<<"$verify"
    fi
    local exposure
    exposure=$(systemd-analyze security --offline=yes --root="$root" "$unit_file" 2>&1 |
      grep -o 'Overall exposure level for .*')
    if [ -n "$exposure" ]; then ok "systemd-analyze security: $exposure"; else
      miss "systemd-analyze security --offline=yes reports an exposure level"
    fi
  fi

  # The installed binary accepts the installed config.
  local out
  if out=$(cd "$scratch" && "${run[@]}" "$root/usr/bin/$bin" check-config --config "$root/etc/lookout/$conf" 2>&1); then
    ok "installed $bin check-config accepts the installed $conf"
  else
    miss "installed $bin check-config accepts the installed $conf"
    sed 's/^/        /' <<<"$out"
  fi
  check "installed $bin --version" "${run[@]}" "$root/usr/bin/$bin" --version
  if [ ${#run[@]} -gt 0 ]; then
    check "/usr/bin/$bin is an ELF for $arch" \
      bash -c "file -b '$root/usr/bin/$bin' | grep -q '$([ "$arch" = arm64 ] && echo 'ARM aarch64' || echo 'ARM, EABI5')'"
  fi
  printf '  size  %s bytes (.deb), %s bytes (binary)\n' "$(stat -c %s "$deb")" \
    "$(stat -c %s "$root/usr/bin/$bin")"
}

check_deb lookout-agent agent agent.toml "$agent_deb" agent "ProtectHome=read-only" 15s
check_deb lookout-bridge broker-bridge bridge.toml "$bridge_deb" bridge "ProtectHome=yes" 30s

echo
if [ "$failures" -eq 0 ]; then
  echo "check-debs: all checks passed"
else
  echo "check-debs: $failures check(s) failed"
  exit 1
fi
