#!/usr/bin/env bash
# Builds both Debian packages for this machine's architecture (amd64 here):
#
#   packaging/build-debs.sh
#
# -> target/debian/wingman-agent_<version>-1_amd64.deb
#    target/debian/wingman-hub_<version>-1_amd64.deb
#    (under $CARGO_TARGET_DIR/debian when CARGO_TARGET_DIR is set)
#
# Extra arguments go to both `cargo deb` runs, e.g. `--deb-version 0.2.0-1`,
# `--no-build` (repackage what is built), or `--target aarch64-unknown-linux-gnu`
# for arm64 (cross toolchain needed: packaging/README.md, "arm64").
# PACKAGES="wingman-hub" builds only that one. The release profile (thin LTO,
# stripped) is the workspace's.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "== installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

for pkg in ${PACKAGES:-wingman-agent wingman-hub}; do
  cargo deb --locked -p "$pkg" "$@"
done
