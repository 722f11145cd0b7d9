#!/usr/bin/env bash
# bench-e2e.sh — OFTP2 transfers end to end, direct TLS against HAProxy against the SmartProxy
# pair, with CPU per GiB, peak RSS, fairness and a head-of-line check; the results go into
# docs/benchmarks.md (section "End to end against HAProxy") and docs/bench-e2e.svg.
#
# Called by `make bench-e2e` after `make build`. It makes the certificates with the demo's helper
# (scripts/demosetup) and `smartproxy-server pki init`, a license for this host with
# `smartproxy-license issue --dev`, then runs scripts/benche2e, which starts the receivers, HAProxy
# and the SmartProxy pair and measures. Everything listens on 127.0.0.1; the files live in tmpfs
# (BENCH_DIR, default /dev/shm/smartproxy-bench-e2e), which the script removes at the end.
#
# HAProxy comes from the Debian package `haproxy`: installed here when missing and running as
# root, else the script says how to install it and stops.
#
# Environment: BENCH_ROUNDS (3), BENCH_SCALE (1: file sizes factor; 0.05 for a quick trial),
# BENCH_WORKLOADS ("1x1024,8x128,100x16": SESSIONSxMIB), BENCH_HOL (true), BENCH_HOL_ROUNDS (6),
# BENCH_ONE_THREAD (true: also the pair with GOMAXPROCS=1 per daemon, path smartproxy-1t), BENCH_DOC
# (docs/benchmarks.md; empty: print the table only), BENCH_PROFILE_DIR (empty; a directory: CPU
# profiles of both daemons, 15 s during one more 8-session run, for `go tool pprof -top`).
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-./bin}
GO=${GO:-go}
RUN=${BENCH_DIR:-/dev/shm/smartproxy-bench-e2e}
DOC=${BENCH_DOC-docs/benchmarks.md}

fail() {
  printf 'bench-e2e: %s\n' "$*" >&2
  exit 1
}

for b in smartproxy-server smartproxy-client smartproxy-license oftp2; do
  [[ -x $BIN/$b ]] || fail "$BIN/$b is missing: run make build (or make bench-e2e)"
done
if ! command -v haproxy >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "bench-e2e: installing HAProxy (Debian package haproxy)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  else
    fail "HAProxy is needed as the comparison: install the Debian package (sudo apt-get install haproxy) and run again"
  fi
fi
# Each file is held up to twice (source and received copy) in tmpfs: 1 GiB source, 1.6 GiB received.
avail=$(df -Pk "$(dirname "$RUN")" | awk 'NR == 2 {print $4}')
[[ ${avail:-0} -gt $((4 * 1024 * 1024)) ]] || echo "bench-e2e: warning: less than 4 GiB free under $(dirname "$RUN")" >&2

rm -rf "$RUN"
mkdir -p "$RUN"
trap 'rm -rf "$RUN"' EXIT

"$GO" build -o "$RUN/demosetup" ./scripts/demosetup
"$GO" build -o "$RUN/benche2e" ./scripts/benche2e
"$RUN/demosetup" certs --dir "$RUN/certs" --partner-id O0013000000PARTNER --company-id O0013000000COMPANY >/dev/null
"$BIN/smartproxy-server" pki init --dir "$RUN/tunnel" >/dev/null
"$BIN/smartproxy-license" issue --dev --proxy-id "$("$BIN/smartproxy-server" -L)" --customer "bench-e2e" --days 1 \
  --out "$RUN/license" >/dev/null

args=(--bin "$BIN" --dir "$RUN/work" --certs "$RUN/certs" --tunnel "$RUN/tunnel" --license "$RUN/license"
  --rounds "${BENCH_ROUNDS:-3}" --scale "${BENCH_SCALE:-1}" --workloads "${BENCH_WORKLOADS:-1x1024,8x128,100x16}"
  --hol="${BENCH_HOL:-true}" --hol-rounds "${BENCH_HOL_ROUNDS:-6}" --one-thread="${BENCH_ONE_THREAD:-true}"
  --profile "${BENCH_PROFILE_DIR:-}")
if [[ -n $DOC ]]; then
  args+=(--doc "$DOC" --svg "$(dirname "$DOC")/bench-e2e.svg")
fi
"$RUN/benche2e" "${args[@]}"
