#!/usr/bin/env bash
# Builds lookout-agent and lookout-bridge .deb packages for this machine's architecture:
#   bash packaging/build-debs.sh
# Installs cargo-deb from crates.io when it is missing, builds both release binaries in
# one cargo invocation, packages each without building again, and prints the .deb paths
# (target/debian/*.deb; CARGO_TARGET_DIR is honoured). Then: bash packaging/check-debs.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# The [package.metadata.deb] tables use keys that cargo-deb 2 and 3 both read; pin the
# major version so that a future one cannot change the packages under us.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing cargo-deb from crates.io"
  cargo install cargo-deb --locked --version '^3'
fi

cargo build --release --locked -p lookout-agent -p lookout-bridge

target_dir=${CARGO_TARGET_DIR:-$PWD/target}
debs=()
for pkg in lookout-agent lookout-bridge; do
  # --no-build: package the binary built above. cargo-deb prints the path it wrote.
  deb=$(cargo deb --locked -p "$pkg" --no-build --output "$target_dir/debian/")
  debs+=("$deb")
done

echo
for deb in "${debs[@]}"; do
  printf '%s\t%s bytes\n' "$deb" "$(stat -c %s "$deb")"
done
