#!/usr/bin/env bash
# Cross-builds lookout-agent and lookout-bridge for an ARM device, on an x86_64 Debian
# machine, as root:
#   bash packaging/cross-build.sh aarch64    # aarch64-unknown-linux-gnu (arm64: Pi 3/4/5, Jetson)
#   bash packaging/cross-build.sh armv7      # armv7-unknown-linux-gnueabihf (armhf: 32-bit Pi OS)
# The first run installs debootstrap (and qemu-user) on the host and makes a Debian sid
# chroot with Debian's rustc and the target's std (LOOKOUT_CHROOT, default
# /srv/lookout-sid); later runs reuse it. Both release binaries end up in
#   ${CARGO_TARGET_DIR:-target}/<triple>/release/lookout-{agent,bridge}
# where `bash packaging/build-debs.sh arm64|armhf` packages them. Safe to rerun; the bind
# mounts are undone on exit. docs/packaging.md, "Cross builds for ARM".
set -euo pipefail
source "$(dirname "$0")/cross-env.sh"

[ $# -eq 1 ] || {
  echo "usage: $0 aarch64|armv7" >&2
  exit 2
}
target_names "$1"
need_root
host_tools qemu-aarch64=qemu-user qemu-arm=qemu-user flock=util-linux file=file

mkdir -p "$(dirname "$chroot_dir")"
exec 9>"$chroot_dir.lock"
flock 9 # one build or test at a time per chroot (they share mounts and target dir)

ensure_chroot
echo "   chroot ready after $SECONDS s"
mount_for_build
echo "== $(chroot "$chroot_dir" rustc --version), building for $triple"
in_chroot "cargo build --release --locked --target $triple -p lookout-agent -p lookout-bridge"
echo "   built after $SECONDS s"

out=$host_target_dir/$triple/release
mkdir -p "$out"
for bin in lookout-agent lookout-bridge; do
  cp "$chroot_dir$chroot_target_dir/$triple/release/$bin" "$out/$bin"
done
unmount_all
echo
for bin in lookout-agent lookout-bridge; do
  printf '%s\t%s bytes\n' "$out/$bin" "$(stat -c %s "$out/$bin")"
  file -b "$out/$bin" 2>/dev/null | sed 's/^/  /' || true
done
# The binary runs: its --version under the emulator, against the target's sysroot.
"$qemu" -L "$sysroot" "$out/lookout-agent" --version
"$qemu" -L "$sysroot" "$out/lookout-bridge" --version
