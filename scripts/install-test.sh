#!/usr/bin/env bash
# Install test of the Debian packages (docs/packaging.md, "The install test"): builds a release
# with a throwaway production key and the three packages, runs lintian (an error fails), then
# installs, checks, removes and purges the packages in a throwaway root inside a private mount
# namespace. The machine's own /usr, /etc and /var are only the read-only lower layers of overlay
# mounts there: every write lands in a temporary directory. Needs root, unshare and overlayfs,
# lintian and systemd-analyze (Debian packages lintian and systemd).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-0.2.0}
GO=${GO:-go}

fail() {
  echo "install-test: FAIL: $*" >&2
  exit 1
}

# inside ROOT DEBDIR: runs in the private mount namespace (the script calls itself).
inside() {
  local work=$1 debs=$2 R=$1/root d
  for d in usr etc var; do
    mkdir -p "$R/$d" "$work/upper/$d" "$work/overwork/$d"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/upper/$d,workdir=$work/overwork/$d" "$R/$d"
  done
  for d in bin sbin lib lib32 lib64 libx32; do
    if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$R/$d"; fi
  done
  mkdir -p "$R/proc" "$R/dev" "$R/run" "$R/tmp" "$R/root"
  chmod 1777 "$R/tmp"
  mount -t proc proc "$R/proc"
  mount --bind /dev "$R/dev"
  mkdir -p "$R/tmp/debs"
  cp "$debs"/*.deb "$R/tmp/debs/"
  in_root() { chroot "$R" "$@"; }

  local debfiles=() f
  for f in "$R"/tmp/debs/*.deb; do debfiles+=("/tmp/debs/${f##*/}"); done
  in_root dpkg -i "${debfiles[@]}" >"$work/dpkg-install.log" 2>&1 ||
    { cat "$work/dpkg-install.log" >&2; fail "dpkg -i"; }

  local checks=0
  # want_stat PATH MODE OWNER:GROUP
  want_stat() {
    local got
    # stat inside the root: owner names from the root's own passwd and group files.
    got=$(in_root stat -c '%a %U:%G' "$1" 2>/dev/null) || fail "$1 is missing"
    [ "$got" = "$2 $3" ] || fail "$1 is '$got', want '$2 $3'"
    checks=$((checks + 1))
  }
  want_stat /usr/bin/smartproxy-server 755 root:root
  want_stat /usr/bin/smartproxy-client 755 root:root
  want_stat /usr/bin/smartproxy-api 755 root:root
  for p in smartproxy-server smartproxy-client smartproxy-api; do
    want_stat /lib/systemd/system/$p.service 644 root:root
    want_stat /etc/default/$p 644 root:root
    want_stat /usr/share/doc/$p/copyright 644 root:root
    want_stat /usr/share/doc/$p/changelog.gz 644 root:root
    want_stat /usr/share/doc/$p/packaging.md 644 root:root
    grep -qx "/etc/default/$p" "$R/var/lib/dpkg/info/$p.conffiles" || fail "/etc/default/$p is not a conffile of $p"
    # Enabled (the [Install] section's link) ...
    [ -L "$R/etc/systemd/system/multi-user.target.wants/$p.service" ] || fail "$p.service is not enabled"
    # ... and never started: no maintainer script starts or restarts it.
    if grep -Eq 'deb-systemd-invoke (start|restart)|systemctl .*(start|restart)' "$R/var/lib/dpkg/info/$p.postinst"; then
      fail "$p.postinst starts the service"
    fi
    # The documentation the unit names is installed.
    local doc
    doc=$(sed -n 's|^Documentation=file:||p' "$R/lib/systemd/system/$p.service")
    [ -n "$doc" ] && [ -f "$R$doc" ] || fail "$p.service names Documentation=file:$doc, which is not installed"
    grep -q '^LimitCORE=0$' "$R/lib/systemd/system/$p.service" || fail "$p.service lacks LimitCORE=0"
    checks=$((checks + 4))
  done
  want_stat /usr/share/doc/smartproxy-server/operations.md 644 root:root
  want_stat /usr/share/doc/smartproxy-client/configuration.md 644 root:root
  want_stat /usr/share/doc/smartproxy-api/backend.md 644 root:root
  want_stat /etc/smartproxy 750 root:smartproxy
  want_stat /etc/smartproxy/tunnel 750 root:smartproxy
  want_stat /etc/smartproxy/client.json 640 root:smartproxy
  want_stat /var/lib/smartproxy-server 700 smartproxy:smartproxy
  want_stat /var/lib/smartproxy-client 700 smartproxy:smartproxy
  want_stat /var/lib/smartproxy-api 700 smartproxy-api:smartproxy-api
  want_stat /etc/smartproxy/client-token 600 root:root
  for f in /etc/smartproxy/client.json /etc/smartproxy/client-token; do
    grep -qx "$f" "$R/var/lib/dpkg/info/smartproxy-client.conffiles" || fail "$f is not a conffile"
  done

  # Users and groups: system accounts without a login.
  local u ent
  for u in smartproxy smartproxy-api; do
    ent=$(in_root getent passwd "$u") || fail "no user $u"
    [ "$(echo "$ent" | cut -d: -f6)" = /nonexistent ] || fail "user $u: home is not /nonexistent: $ent"
    case $(echo "$ent" | cut -d: -f7) in */nologin | */false) ;; *) fail "user $u has a login shell: $ent" ;; esac
    [ "$(echo "$ent" | cut -d: -f3)" -lt 1000 ] || fail "user $u is not a system user: $ent"
    in_root getent group "$u" >/dev/null || fail "no group $u"
    checks=$((checks + 1))
  done

  # The units as systemd reads them; the binaries they start are the installed ones.
  local units=(/lib/systemd/system/smartproxy-server.service /lib/systemd/system/smartproxy-client.service /lib/systemd/system/smartproxy-api.service)
  in_root systemd-analyze verify "${units[@]}" >"$work/verify.log" 2>&1 ||
    { cat "$work/verify.log" >&2; fail "systemd-analyze verify"; }
  if [ -s "$work/verify.log" ]; then cat "$work/verify.log" >&2; fail "systemd-analyze verify printed warnings"; fi
  checks=$((checks + 1))

  # The installed binaries are the release.
  for p in smartproxy-server smartproxy-client smartproxy-api; do
    in_root /usr/bin/$p -v | grep -q "^$p $VERSION (commit " || fail "$p -v does not print $VERSION"
    checks=$((checks + 1))
  done

  # Removal keeps the conffiles and the state (here a stand-in for the backend's database),
  # drops the binaries and units.
  echo state >"$R/var/lib/smartproxy-api/smartproxy-api.db"
  in_root dpkg -r smartproxy-server smartproxy-client smartproxy-api >"$work/dpkg-remove.log" 2>&1 ||
    { cat "$work/dpkg-remove.log" >&2; fail "dpkg -r"; }
  for f in /etc/default/smartproxy-server /etc/default/smartproxy-client /etc/default/smartproxy-api /etc/smartproxy/client.json /etc/smartproxy/client-token; do
    [ -f "$R$f" ] || fail "dpkg -r removed the conffile $f"
    checks=$((checks + 1))
  done
  for f in /usr/bin/smartproxy-server /lib/systemd/system/smartproxy-client.service /usr/bin/smartproxy-api; do
    [ ! -e "$R$f" ] || fail "dpkg -r left $f"
  done
  [ -f "$R/var/lib/smartproxy-api/smartproxy-api.db" ] || fail "dpkg -r removed the backend's database"
  # Purge removes the conffiles and forgets the enablement.
  in_root dpkg -P smartproxy-server smartproxy-client smartproxy-api >"$work/dpkg-purge.log" 2>&1 ||
    { cat "$work/dpkg-purge.log" >&2; fail "dpkg -P"; }
  [ ! -e "$R/etc/default/smartproxy-client" ] || fail "dpkg -P left /etc/default/smartproxy-client"
  [ ! -L "$R/etc/systemd/system/multi-user.target.wants/smartproxy-server.service" ] || fail "dpkg -P left the unit enabled"
  checks=$((checks + 2))
  echo "install-test: $checks checks passed in the throwaway root"
}

if [ "${1:-}" = --inside ]; then
  inside "$2" "$3"
  exit 0
fi

[ "$(id -u)" = 0 ] || fail "needs root (dpkg and mounts in a private mount namespace)"
for tool in lintian systemd-analyze unshare dpkg-deb; do
  command -v "$tool" >/dev/null || fail "$tool is missing (Debian packages lintian, systemd, util-linux, dpkg)"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$GO" run ./cmd/smartproxy-license keygen --out "$work/signing.pem" --key-id install-test >"$work/keygen.txt"
sed -n 's/^public key: *//p' "$work/keygen.txt" >"$work/keys.txt"
make -s package VERSION="$VERSION" LICENSE_KEYS="$work/keys.txt" DIST="$work/dist" >"$work/package.log" 2>&1 ||
  { cat "$work/package.log" >&2; fail "make package"; }
debs=$work/dist/$VERSION
[ "$(ls "$debs"/*.deb | wc -l)" = 3 ] || fail "make package did not build three .deb files: $(ls "$debs")"

# lintian: no error; the warnings are listed (docs/packaging.md names them).
errors=0
for deb in "$debs"/*.deb; do
  out=$(lintian --tag-display-limit 0 "$deb" 2>&1 || true)
  [ -n "$out" ] && echo "$out"
  if echo "$out" | grep -q '^E: '; then errors=$((errors + 1)); fi
done
[ "$errors" = 0 ] || fail "lintian reports errors"

# The mounts live and die with the namespace: nothing is left mounted on the machine.
unshare --mount --propagation private "$0" --inside "$work" "$debs"
