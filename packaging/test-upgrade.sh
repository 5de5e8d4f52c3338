#!/usr/bin/env bash
# Installs, upgrades and purges the built lookout-agent .deb with the real dpkg in a scratch
# root, to show what the conffiles control file promises: an edited /etc/lookout/agent.toml
# survives upgrades, an unedited one follows the package. Needs root and mount namespaces
# (unshare -m, overlayfs): the host's /usr is the scratch root's lower layer, so the
# maintainer scripts find sh and deb-systemd-helper, and every write lands in a temp dir.
#   bash packaging/test-upgrade.sh [AGENT.deb]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != --inside ]; then
  target_dir=${CARGO_TARGET_DIR:-$PWD/target}
  deb=${1:-$(ls -t "$target_dir"/debian/lookout-agent_*_"$(dpkg --print-architecture)".deb 2>/dev/null | head -n 1)}
  [ -f "$deb" ] || { echo "test-upgrade: no lookout-agent .deb; run packaging/build-debs.sh" >&2; exit 2; }
  command -v deb-systemd-helper >/dev/null || { echo "test-upgrade: needs init-system-helpers" >&2; exit 2; }
  exec unshare -m bash "$0" --inside "$(realpath "$deb")"
fi
deb=$2

work=$(mktemp -d)
trap 'umount -R "$work/root/usr" "$work/root/dev/null" 2>/dev/null; rm -rf "$work"' EXIT
root=$work/root
mount --make-rprivate /
mkdir -p "$root"/{usr,etc,tmp,dev,var/lib/dpkg/{info,updates}} "$work"/{upper,ovl}
touch "$root/var/lib/dpkg/status" "$root/dev/null"
mount -t overlay overlay -o "lowerdir=/usr,upperdir=$work/upper,workdir=$work/ovl" "$root/usr"
mount --bind /dev/null "$root/dev/null"
for d in bin sbin lib lib64; do [ -L "/$d" ] && ln -s "usr/$d" "$root/$d"; done

failures=0
expect() { # expect DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then echo "  ok    $what"; else echo "  MISS  $what"; failures=$((failures + 1)); fi
}
# A variant of the package: version $1; with $2, a different default config (a new upstream
# default, as a later release might ship).
variant() {
  local version=$1 new_default=${2:-} dir=$work/pkg-$1
  dpkg-deb -R "$deb" "$dir"
  sed -i "s/^Version: .*/Version: $version/" "$dir/DEBIAN/control"
  if [ -n "$new_default" ]; then
    echo "# $new_default" >>"$dir/etc/lookout/agent.toml"
    # The md5sums control file, if any, must match the new content.
    [ -f "$dir/DEBIAN/md5sums" ] && (cd "$dir" && find etc usr -type f -exec md5sum {} + >DEBIAN/md5sums)
  fi
  dpkg-deb -b --root-owner-group "$dir" "$work/agent_$version.deb" >/dev/null
  echo "$work/agent_$version.deb"
}
dpkg_() { dpkg --root="$root" --force-depends --force-confdef --force-confold "$@" >>"$work/dpkg.log" 2>&1; }
conf=$root/etc/lookout/agent.toml

echo "== install 0.1.0-1"
dpkg_ -i "$(variant 0.1.0-1)"
expect "config installed" test -f "$conf"
expect "unit enabled (multi-user.target.wants)" \
  test -L "$root/etc/systemd/system/multi-user.target.wants/lookout-agent.service"

echo "== upgrade to 0.1.1-1, same default config, unedited"
dpkg_ -i "$(variant 0.1.1-1)"
expect "config still the package's" cmp -s "$conf" "$work/pkg-0.1.1-1/etc/lookout/agent.toml"

echo "== edit the config, upgrade to 0.1.2-1 with the same default"
echo 'interval = "5s" # edited by the admin' >>"$conf"
cp "$conf" "$work/edited"
dpkg_ -i "$(variant 0.1.2-1)"
expect "edited config kept" cmp -s "$conf" "$work/edited"

echo "== upgrade to 0.1.3-1, whose default config changed"
dpkg_ -i "$(variant 0.1.3-1 'a new default in 0.1.3')"
expect "edited config kept" cmp -s "$conf" "$work/edited"
expect "new default beside it as agent.toml.dpkg-dist" grep -q 'a new default in 0.1.3' "$conf.dpkg-dist"

echo "== remove (config stays), then purge (config goes)"
dpkg_ -r lookout-agent
expect "binary removed" test ! -e "$root/usr/bin/lookout-agent"
expect "config kept after remove" test -f "$conf"
dpkg_ -P lookout-agent
expect "config removed by purge" test ! -e "$conf"

if [ "$failures" -ne 0 ]; then
  echo "test-upgrade: $failures check(s) failed; dpkg said:"
  cat "$work/dpkg.log"
  exit 1
fi
echo "test-upgrade: all checks passed"
