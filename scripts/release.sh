#!/usr/bin/env bash
# Release build: every binary of cmd/ with the version, the commit and the build date stamped in,
# the development license key refused and only the vendor's production public keys compiled in.
#
#   VERSION=0.2.0 LICENSE_KEYS=keys.txt scripts/release.sh     (or: make release ...)
#
# LICENSE_KEYS is a file of production public keys, one "keyid:base64" entry a line, as
# `smartproxy-license keygen` prints it after "public key:" (blank lines and # comments are
# ignored); docs/license.md says how a vendor makes and keeps them. The binaries go to
# DIST/VERSION/ (DIST defaults to ./dist); PROGRAMS (default ./cmd/...) limits the build to some.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
DIST=${DIST:-$PWD/dist}
: "${VERSION:?VERSION=x.y.z is required}"
: "${LICENSE_KEYS:?LICENSE_KEYS=FILE (production public keys, keyid:base64 a line) is required}"

if ! [[ $VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+(~[0-9A-Za-z.]+)?$ ]]; then
  echo "release: VERSION $VERSION is not x.y.z (optionally ~rc1)" >&2
  exit 2
fi
keys=()
while IFS= read -r line || [ -n "$line" ]; do
  line=${line%%#*}
  line=${line//[[:space:]]/}
  [ -z "$line" ] && continue
  # The same format license.ParseKeySet reads: key ID, colon, base64 of a 32-byte key.
  if ! [[ $line =~ ^[A-Za-z0-9._-]{1,64}:[A-Za-z0-9+/]{43}=$ ]]; then
    echo "release: $LICENSE_KEYS: \"$line\" is not keyid:base64pubkey" >&2
    exit 2
  fi
  if [[ ${line%%:*} == dev-1 ]]; then
    echo "release: $LICENSE_KEYS: key ID dev-1 is the development key's" >&2
    exit 2
  fi
  keys+=("$line")
done <"$LICENSE_KEYS"
if [ "${#keys[@]}" -eq 0 ]; then
  echo "release: $LICENSE_KEYS holds no key: a release would accept no license" >&2
  exit 2
fi
prodkeys=$(IFS=,; echo "${keys[*]}")

commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  commit+="+dirty"
  echo "release: warning: the work tree has uncommitted changes; the commit is stamped $commit" >&2
fi
# The commit's time, not the clock's: building the same commit twice gives the same binaries.
date=$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ)

ldflags="-s -w"
ldflags+=" -X smartproxy/internal/buildinfo.version=$VERSION"
ldflags+=" -X smartproxy/internal/buildinfo.commit=$commit"
ldflags+=" -X smartproxy/internal/buildinfo.date=$date"
ldflags+=" -X smartproxy/internal/license.allowDevKey=false"
ldflags+=" -X smartproxy/internal/license.productionKeys=$prodkeys"

out="$DIST/$VERSION"
mkdir -p "$out"
read -ra programs <<<"${PROGRAMS:-./cmd/...}"
# Position-independent executables, for address space randomisation (Debian builds PIE too).
CGO_ENABLED=0 "$GO" build -buildmode=pie -trimpath -buildvcs=false -ldflags "$ldflags" -o "$out/" "${programs[@]}"
echo "release $VERSION (commit $commit, $date) in $out:"
ls -1 "$out"
