#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) root filesystem tarball with debootstrap
# (--variant=minbase), for `docker import`. The tarball is the cache: when it
# already exists nothing is rebuilt (delete it to refresh).
#
#   packaging/container/rootfs.sh TARBALL [PACKAGE,PACKAGE...]
#
# The optional second argument goes to debootstrap --include (e.g. systemd).
# DEBIAN_MIRROR overrides the mirror (default http://deb.debian.org/debian).
set -euo pipefail
tarball=${1:?usage: rootfs.sh TARBALL [PACKAGES]}
include=${2:-}
[ -s "$tarball" ] && exit 0

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "== installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q debootstrap >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; }
fi

root=$(mktemp -d /var/tmp/wingman-rootfs.XXXXXX)
cleanup() {
  # debootstrap mounts /proc and /sys inside the target; a failed run can
  # leave them mounted. Unmount before deleting.
  awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf "$root" "$tarball.tmp"
}
trap cleanup EXIT

echo "== debootstrap bookworm (minbase${include:+, +$include}) -> $tarball"
debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$root" \
  "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$root.log" 2>&1 ||
  { tail -30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# No package cache or lists in the image: nothing is installed from a
# network inside the containers.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
ls -l "$tarball"
