#!/usr/bin/env bash
# Builds the hub's container image with no registry:
#   1. a Debian 12 minbase root filesystem by debootstrap, cached in
#      /var/tmp/wingman-debootstrap-bookworm.tar, imported as
#      wingman-base:bookworm (`docker import`);
#   2. the hub package (packaging/build-debs.sh; or HUB_DEB=path/to.deb);
#   3. `docker build` with the Dockerfile here -> wingman-hub:<version> and
#      wingman-hub:latest.
#
#   packaging/container/build-image.sh
#
# Then see compose.yaml, or:
#   docker run --rm --user root -v wingman-etc:/etc/wingman -v wingman-data:/var/lib/wingman-hub \
#     wingman-hub init --yes --listen 0.0.0.0:8080 --public-addr hub.lan:4433
#   docker run -d -v wingman-etc:/etc/wingman -v wingman-data:/var/lib/wingman-hub \
#     -p 127.0.0.1:8080:8080 -p 4433:4433/udp wingman-hub
set -euo pipefail
cd "$(dirname "$0")/../.."

base_tar=${BASE_TAR:-/var/tmp/wingman-debootstrap-bookworm.tar}
base_image=wingman-base:bookworm
bash packaging/container/rootfs.sh "$base_tar"
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  docker import "$base_tar" "$base_image" >/dev/null
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
if [ -n "${HUB_DEB:-}" ]; then
  cp "$HUB_DEB" "$ctx/wingman-hub.deb"
else
  PACKAGES=wingman-hub bash packaging/build-debs.sh -o "$ctx/out"
  mv "$ctx"/out/wingman-hub_*.deb "$ctx/wingman-hub.deb"
fi
version=$(dpkg-deb -f "$ctx/wingman-hub.deb" Version)
cp packaging/container/Dockerfile "$ctx/Dockerfile"
docker build --force-rm --build-arg "BASE=$base_image" -t "wingman-hub:${version//[^A-Za-z0-9_.-]/_}" -t wingman-hub:latest "$ctx"
docker image ls wingman-hub
