#!/usr/bin/env bash
# Debian packages smartproxy-server, smartproxy-client and smartproxy-api from the release
# binaries in DIST/VERSION/ (scripts/release.sh), with nfpm and the configurations in
# packaging/ (docs/packaging.md). The .deb files go to DIST/VERSION/.
#
#   VERSION=0.2.0 NFPM=bin/nfpm scripts/package.sh     (or: make package ...)
set -euo pipefail
cd "$(dirname "$0")/.."

: "${VERSION:?VERSION=x.y.z is required}"
NFPM=${NFPM:-bin/nfpm}
DIST=${DIST:-$PWD/dist}
MAINTAINER=${MAINTAINER:-SmartProxy for OFTP2 maintainers <smartproxy@example.com>}
ARCH=${ARCH:-$(go env GOARCH)}
out="$DIST/$VERSION"
for b in smartproxy-server smartproxy-client smartproxy-api; do
  [ -x "$out/$b" ] || { echo "package: $out/$b is missing: run make release first" >&2; exit 2; }
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# The Debian changelog of each package: one entry a release, dated by the release's commit so
# that the same commit gives the same package.
date=$(git log -1 --format=%aD)

# gen PACKAGE USER CONFIG_DIRS GROUP_FILES: the maintainer scripts and the changelog of one
# package into $stage/PACKAGE/.
gen() {
  local pkg=$1 user=$2 dirs=$3 files=$4 s
  mkdir -p "$stage/$pkg"
  for s in postinst prerm postrm; do
    sed -e "s|@PACKAGE@|$pkg|g" -e "s|@USER@|$user|g" \
      -e "s|@CONFIG_DIRS@|$dirs|g" -e "s|@GROUP_FILES@|$files|g" \
      "packaging/scripts/$s" >"$stage/$pkg/$s"
  done
  printf '%s (%s) stable; urgency=medium\n\n  * Release %s; CHANGELOG.md beside this file lists the changes.\n\n -- %s  %s\n' \
    "$pkg" "$VERSION" "$VERSION" "$MAINTAINER" "$date" | gzip -9n >"$stage/$pkg/changelog.gz"
}
gen smartproxy-server smartproxy "/etc/smartproxy /etc/smartproxy/tunnel" ""
gen smartproxy-client smartproxy "/etc/smartproxy /etc/smartproxy/tunnel" "/etc/smartproxy/client.json"
gen smartproxy-api smartproxy-api "" ""

# The configurations name ${VERSION}, ${ARCH}, ${BIN_DIR}, ${STAGE} and ${MAINTAINER}; nfpm
# expands variables in a few fields only, so they are filled in here.
for pkg in smartproxy-server smartproxy-client smartproxy-api; do
  sed -e "s|\${VERSION}|$VERSION|g" -e "s|\${ARCH}|$ARCH|g" -e "s|\${BIN_DIR}|$out|g" \
    -e "s|\${STAGE}|$stage/$pkg|g" -e "s|\${MAINTAINER}|$MAINTAINER|g" \
    "packaging/$pkg.yaml" >"$stage/$pkg/nfpm.yaml"
  "$NFPM" package --config "$stage/$pkg/nfpm.yaml" --packager deb --target "$out/"
done
ls -1 "$out"/*.deb
