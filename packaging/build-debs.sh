#!/usr/bin/env bash
# Builds lookout-agent and lookout-bridge .deb packages:
#   bash packaging/build-debs.sh [ARCH]
# ARCH is a Debian architecture: this machine's (the default, amd64 here), arm64 or armhf.
# Installs cargo-deb from crates.io when it is missing. For this machine's architecture it
# builds both release binaries in one cargo invocation; for arm64 and armhf it packages the
# binaries of packaging/cross-build.sh (aarch64, armv7, as root), running that first when
# they are missing, and runs cargo-deb in its chroot. It packages each binary without building again and prints the .deb paths
# (target/debian/*_ARCH.deb; CARGO_TARGET_DIR is honoured).
# Then: bash packaging/check-debs.sh [ARCH]
set -euo pipefail
cd "$(dirname "$0")/.."

native=$(dpkg --print-architecture)
arch=${1:-$native}
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
cross=''
case $arch in
"$native") ;;
arm64) cross=aarch64 ;;
armhf) cross=armv7 ;;
*)
  echo "build-debs: unknown architecture '$arch' (this machine's, $native, arm64 or armhf)" >&2
  exit 2
  ;;
esac

# The [package.metadata.deb] tables use keys that cargo-deb 2 and 3 both read; pin the
# major version so that a future one cannot change the packages under us.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb from crates.io"
  cargo install cargo-deb --locked --version '^3'
fi

debs=()
if [ -z "$cross" ]; then
  cargo build --release --locked -p lookout-agent -p lookout-bridge
  for pkg in lookout-agent lookout-bridge; do
    # --no-build: package the binary built above. cargo-deb prints the path it wrote.
    deb=$(cargo deb --locked -p "$pkg" --no-build --output "$target_dir/debian/")
    debs+=("$deb")
  done
else
  # cargo-deb runs in the cross-build chroot: its dpkg-shlibdeps works out Depends from
  # the target's libc6 and libgcc-s1, which the chroot has installed (libstd-rust-dev
  # pulls them in) and the host has not. With --target it takes the binaries from the
  # chroot's target/<triple>/release and names the architecture after the triple.
  source packaging/cross-env.sh
  target_names "$cross"
  built=$chroot_dir$chroot_target_dir/$triple/release
  if [ ! -x "$built/lookout-agent" ] || [ ! -x "$built/lookout-bridge" ]; then
    bash packaging/cross-build.sh "$cross"
  fi
  need_root
  exec 9>"$chroot_dir.lock"
  flock 9
  ensure_chroot
  mount_for_build
  install -m 0755 "$(command -v cargo-deb)" "$chroot_dir/usr/local/bin/cargo-deb"
  rm -rf "$chroot_dir/srv/debs-cross"
  in_chroot "for pkg in lookout-agent lookout-bridge; do
    cargo deb --locked -p \$pkg --no-build --target $triple --output /srv/debs-cross/; done"
  unmount_all
  mkdir -p "$target_dir/debian"
  for deb in "$chroot_dir"/srv/debs-cross/*.deb; do
    cp "$deb" "$target_dir/debian/"
    debs+=("$target_dir/debian/$(basename "$deb")")
  done
fi

echo
for deb in "${debs[@]}"; do
  printf '%s\t%s bytes\n' "$deb" "$(stat -c %s "$deb")"
done
