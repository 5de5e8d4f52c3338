# Sourced by cross-build.sh and cross-test.sh: the Debian sid chroot that cross-compiles
# for ARM, and the per-target names. Not meant to be run on its own.
#
# rustup cannot download another target's standard library where only the package
# registries are reachable; Debian ships each target's std as a package
# (libstd-rust-dev:arm64, :armhf) for its own rustc, so the builds happen in a Debian sid
# chroot made with debootstrap from the host's Debian mirror (docs/packaging.md,
# "Cross builds for ARM").
#
# Environment:
#   LOOKOUT_CHROOT   where the chroot lives (default /srv/lookout-sid); made once, reused
#                    while its stamp matches the package list below
#   LOOKOUT_MIRROR   Debian mirror for debootstrap (default: the host's apt mirror)
#   CARGO_TARGET_DIR the host's target dir: the binaries are copied to
#                    $CARGO_TARGET_DIR/<triple>/release/ (default: target/ in the repo)

chroot_dir=${LOOKOUT_CHROOT:-/srv/lookout-sid}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host_target_dir=${CARGO_TARGET_DIR:-$repo/target}
# The chroot's own cargo target dir (inside the chroot): kept between runs for
# incremental rebuilds, never mixed with the host compiler's artefacts.
chroot_target_dir=/srv/target-cross
# Everything the chroot needs; the stamp file records it, so a change here rebuilds.
chroot_packages=(rustc cargo libstd-rust-dev:arm64 libstd-rust-dev:armhf
  gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
  dpkg-dev)
chroot_stamp=$chroot_dir/.lookout-chroot-complete

# target_names TARGET: sets triple, gnu (the cross tools' prefix), sysroot (for qemu -L),
# qemu (the emulator), deb_arch.
target_names() {
  case $1 in
  aarch64)
    triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu qemu=qemu-aarch64 deb_arch=arm64
    ;;
  armv7)
    triple=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf qemu=qemu-arm deb_arch=armhf
    ;;
  *)
    echo "unknown target '$1': use aarch64 or armv7" >&2
    exit 2
    ;;
  esac
  sysroot=$chroot_dir/usr/$gnu
}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$(basename "$0"): debootstrap, chroot and mount need root" >&2
    exit 2
  fi
}

# host_tools TOOL=PACKAGE...: apt-get installs the packages whose tool is missing.
host_tools() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || need+=("${pair#*=}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing on the host: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

# The host's Debian mirror (the one apt already uses), for debootstrap.
host_mirror() {
  if [ -n "${LOOKOUT_MIRROR:-}" ]; then
    echo "$LOOKOUT_MIRROR"
    return
  fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' | grep -E '/debian/?$' | head -n 1)
  [ -n "$uri" ] || uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
    awk '{for (i = 2; i <= NF; i++) if ($i !~ /^\[/) {print $i; exit}}' |
    grep -E '/debian/?$' | head -n 1)
  echo "${uri:-http://deb.debian.org/debian}"
}

mounted=()
# mount_in SOURCE TARGET_IN_CHROOT: bind mount, remembered for unmount_all.
mount_in() {
  local dst=$chroot_dir$2
  mkdir -p "$dst"
  # A run killed before its EXIT trap leaves its mounts; one over a directory since
  # deleted or replaced (a clone made again at the same path) would hide the new one.
  if mountpoint -q "$dst" && [ "$(stat -Lc %d:%i "$1")" != "$(stat -Lc %d:%i "$dst")" ]; then
    umount -l "$dst"
  fi
  if ! mountpoint -q "$dst"; then
    mount --bind "$1" "$dst"
    mounted+=("$dst")
  fi
}
unmount_all() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || true
  done
  mounted=()
}

# The mounts a build needs: /proc, /dev, /sys, the repo at the same absolute path as on
# the host (so paths baked into test binaries, such as CARGO_MANIFEST_DIR, hold on the
# host too, where qemu runs them) and the host's cargo registry (no second download).
mount_for_build() {
  trap unmount_all EXIT
  trap 'exit 130' INT TERM
  mount_in /proc /proc
  mount_in /dev /dev
  mount_in /sys /sys
  mount_in "$repo" "$repo"
  local registry=${CARGO_HOME:-$HOME/.cargo}/registry
  mkdir -p "$registry"
  mount_in "$registry" /root/.cargo/registry
  cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
  mkdir -p "$chroot_dir/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$chroot_dir/etc/ssl/certs/host-ca.crt"
}

# Creates the chroot (debootstrap + cross toolchain) unless a complete one is there.
ensure_chroot() {
  local want
  want=$(printf '%s\n' "${chroot_packages[@]}")
  if [ -f "$chroot_stamp" ] && [ "$(cat "$chroot_stamp")" = "$want" ]; then
    return
  fi
  host_tools debootstrap=debootstrap
  local mirror
  mirror=$(host_mirror)
  if [ ! -x "$chroot_dir/usr/bin/apt-get" ] || [ ! -f "$chroot_dir/.lookout-debootstrap-done" ]; then
    echo "== debootstrap sid into $chroot_dir from $mirror"
    # A half-made chroot (an interrupted run) is not worth repairing.
    if [ -d "$chroot_dir" ]; then
      findmnt -rno TARGET | grep -F "$chroot_dir/" | sort -r | xargs -r -n1 umount -l
      rm -rf --one-file-system "$chroot_dir"
    fi
    mkdir -p "$(dirname "$chroot_dir")"
    debootstrap --variant=minbase sid "$chroot_dir" "$mirror" >"$chroot_dir.debootstrap.log" 2>&1 || {
      tail -n 30 "$chroot_dir.debootstrap.log" >&2
      echo "debootstrap failed (log: $chroot_dir.debootstrap.log)" >&2
      exit 1
    }
    rm -f "$chroot_dir.debootstrap.log"
    touch "$chroot_dir/.lookout-debootstrap-done"
  fi
  echo "== cross toolchain in the chroot: ${chroot_packages[*]}"
  # The mirror may be a frozen snapshot whose Release file has expired.
  echo 'Acquire::Check-Valid-Until "false";' >"$chroot_dir/etc/apt/apt.conf.d/99no-valid-until"
  # No recommends, no docs: a smaller chroot.
  printf 'APT::Install-Recommends "false";\n' >"$chroot_dir/etc/apt/apt.conf.d/99no-recommends"
  printf 'path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*\n' \
    >"$chroot_dir/etc/dpkg/dpkg.cfg.d/01lookout-nodoc"
  cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
  (
    trap unmount_all EXIT
    mount_in /proc /proc
    mount_in /dev /dev
    chroot "$chroot_dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      sh -ec "dpkg --add-architecture arm64; dpkg --add-architecture armhf
        apt-get update -qq
        apt-get install -y -qq ${chroot_packages[*]} >/dev/null
        apt-get clean"
  )
  echo "$want" >"$chroot_stamp"
}

# in_chroot COMMAND: runs a shell command in the chroot, in the repo, with the cross
# environment of the current target.
in_chroot() {
  local up=${triple^^} pass=()
  up=${up//-/_}
  # Cargo's profile overrides and job count pass through (.ci/run sets some).
  mapfile -t pass < <(env | grep -E '^CARGO_(PROFILE_[A-Z0-9_]+|BUILD_JOBS)=' || true)
  chroot "$chroot_dir" /usr/bin/env -i "${pass[@]}" \
    PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root CARGO_HOME=/root/.cargo \
    CARGO_TERM_COLOR=never CARGO_HTTP_CAINFO=/etc/ssl/certs/host-ca.crt \
    CARGO_TARGET_DIR="$chroot_target_dir" \
    "CARGO_TARGET_${up}_LINKER=$gnu-gcc" "CC_${triple//-/_}=$gnu-gcc" "AR_${triple//-/_}=$gnu-ar" \
    bash -ec "cd '$repo'; $1"
}
