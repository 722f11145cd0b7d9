#!/usr/bin/env bash
# demo.sh — run the whole SmartProxy for OFTP2 on loopback, configured from its backend, and
# deliver one file each way through it.
#
# Called by `make demo` after `make build`. It uses ./bin/{smartproxy-api,smartproxy-server,
# smartproxy-client,smartproxy-license,oftp2} and works in ./demo-run (DEMO_DIR), which it
# recreates:
#
#                           smartproxy-api (backend: SQLite, HTTPS)
#                                  ▲ -U/-T: config, license, events
#   partner (oftp2 send) ──TLS──► smartproxy-server ══tunnel══ smartproxy-client ──► oftp2 serve
#                                  (DMZ, no config)                                   (internal)
#   partner (oftp2 serve) ◄──TLS── smartproxy-server ══tunnel══ smartproxy-client ◄── oftp2 send
#                                  dials the route's partner      route listener       (internal,
#                                                                                       plain TCP)
#
# The demo's whole configuration (company certificate and key, trusted partner CA and its CRL,
# the partner, the partner port, the internal OFTP2 server, the license) is put into the
# backend with its admin CLI (smartproxy-api init, config set, ca add, crl import, partner add,
# license import, token create); the client follows the backend and configures the DMZ server.
# Only the certificates are made by a helper (go build ./scripts/demosetup).
#
# Exit status 0 means the incoming file arrived byte-identical at the internal OFTP2 server and the
# outgoing one at the partner's OFTP2 server, each sender received its end-to-end response (EERP),
# and the backend received the proxy's events; anything
# else fails with the log tails. The partner and tunnel ports are 6619 and 2878 when those are
# free on 127.0.0.1, else free high ports (DEMO_PARTNER_PORT, DEMO_TUNNEL_PORT change the
# preference; 0 means any); the backend's HTTPS port is always a free high port.
# Every process the script starts is stopped when it exits.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-./bin}
RUN=${DEMO_DIR:-./demo-run}
GO=${GO:-go}
PARTNER_ID=O0013000000PARTNER   # the calling side (initiator, sender)
PARTNER_PW=PARTNPW
COMPANY_ID=O0013000000COMPANY   # the internal OFTP2 server (responder, receiver)
COMPANY_PW=COMPANY
PROXY_CLIENT=demo-proxy         # the proxy client's name in the backend
WAIT_SECONDS=${WAIT_SECONDS:-30}

say() { printf '\n== %s\n' "$*"; }
logs() {
  local f
  for f in "$RUN"/logs/*.log; do
    [[ -s $f ]] || continue
    printf '\n--- %s (last 25 lines) ---\n' "$f" >&2
    tail -n 25 "$f" >&2
  done
}
fail() {
  printf '\ndemo FAILED: %s\n' "$*" >&2
  exit 1
}

for b in smartproxy-api smartproxy-server smartproxy-client smartproxy-license oftp2; do
  [[ -x $BIN/$b ]] || fail "$BIN/$b is missing: run make build (or make demo)"
done
if command -v sha256sum >/dev/null; then
  sha() { sha256sum "$1" | cut -d' ' -f1; }
else
  sha() { shasum -a 256 "$1" | cut -d' ' -f1; }
fi

rm -rf "$RUN"
mkdir -p "$RUN/logs" "$RUN/outgoing" "$RUN/pid" "$RUN/server" "$RUN/internal-outbox"
RUN=$(cd "$RUN" && pwd)
API_DIR=$RUN/api

PIDS=()
NAMES=()
# procname PID: the name of a process the script started.
procname() {
  local i
  for i in "${!PIDS[@]}"; do
    [[ ${PIDS[$i]} == "$1" ]] && echo "${NAMES[$i]}" && return
  done
  echo "?"
}
cleanup() {
  local status=$?
  local pid
  trap - EXIT INT TERM
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    { wait "$pid" || true; } 2>/dev/null
  done
  if [[ $status -ne 0 ]]; then
    logs
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# waitfor FILE PATTERN WHAT PID...: wait (bounded) until FILE contains PATTERN while every PID
# runs.
waitfor() {
  local file=$1 pattern=$2 what=$3 i pid
  shift 3
  for ((i = 0; i < WAIT_SECONDS * 20; i++)); do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    for pid in "$@"; do
      kill -0 "$pid" 2>/dev/null || fail "waiting for $what: process $pid ($(procname "$pid")) exited"
    done
    sleep 0.05
  done
  fail "$what: not within ${WAIT_SECONDS}s"
}

# serve NAME BASE ARGS...: start `oftp2 serve ARGS` on a free loopback port (report lines in
# BASE.out, its log in logs/) and wait until it listens; sets SERVED_PID and SERVED_ADDR.
serve() {
  local name=$1 base=$2 i
  shift 2
  "$BIN/oftp2" serve --listen 127.0.0.1:0 --addr-file "$base.addr" "$@" \
    >"$base.out" 2>"$RUN/logs/$(basename "$base").log" &
  SERVED_PID=$!
  PIDS+=("$SERVED_PID") NAMES+=("$name")
  for ((i = 0; i < WAIT_SECONDS * 20; i++)); do
    [[ -s $base.addr ]] && break
    kill -0 "$SERVED_PID" 2>/dev/null || fail "$name did not start"
    sleep 0.05
  done
  [[ -s $base.addr ]] || fail "$name did not report its address"
  SERVED_ADDR=$(cat "$base.addr")
}

# received OUT WHAT PID: the path of the file an `oftp2 serve` reported in its OUT file.
received() {
  local path
  waitfor "$1" '^received ' "$2 to store the file" "$3" >&2
  path=$(awk '$1 == "received" {print $2; exit}' "$1")
  [[ -n $path && -f $path ]] || fail "$2 reported no stored file"
  echo "$path"
}

# api ARGS...: the backend's admin CLI on the demo's database; its output is indented.
api() {
  local out
  out=$("$BIN/smartproxy-api" "$@" --data-dir "$API_DIR" 2>&1) || fail "smartproxy-api $*: $out"
  sed 's/^/  /' <<<"$out"
}

say "Helper for the demo's certificates (go build ./scripts/demosetup)"
"$GO" build -o "$RUN/demosetup" ./scripts/demosetup
SETUP=$RUN/demosetup

say "Tunnel PKI: smartproxy-server pki init"
"$BIN/smartproxy-server" pki init --dir "$RUN/tunnel" | sed 's/^/  /'

say "Company certificate, partner CA, partner certificate and CRL"
"$SETUP" certs --dir "$RUN/certs" --partner-id "$PARTNER_ID" --company-id "$COMPANY_ID" | sed 's/^/  /'

say "License for this host: smartproxy-license issue --dev --proxy-id \$(smartproxy-server -L)"
PROXY_ID=$("$BIN/smartproxy-server" -L)
"$BIN/smartproxy-license" issue --dev --proxy-id "$PROXY_ID" --customer "SmartProxy demo" --days 1 --out "$RUN/license" | sed 's/^/  /'

say "Internal OFTP2 server: oftp2 serve ($COMPANY_ID, plain TCP on loopback)"
serve "oftp2 serve" "$RUN/serve" --plain \
  --odette-id "$COMPANY_ID" --password "$COMPANY_PW" --partner "$PARTNER_ID:$PARTNER_PW" --dir "$RUN/inbox"
SERVE_PID=$SERVED_PID
INTERNAL=$SERVED_ADDR
echo "  listening on $INTERNAL"

say "Partner's OFTP2 server: oftp2 serve ($PARTNER_ID, TLS with the partner certificate, company CA required)"
serve "oftp2 serve (partner)" "$RUN/partner-serve" \
  --cert "$RUN/certs/partner.pem" --key "$RUN/certs/partner-key.pem" --ca "$RUN/certs/company-ca.pem" \
  --odette-id "$PARTNER_ID" --password "$PARTNER_PW" --partner "$COMPANY_ID:$COMPANY_PW" --dir "$RUN/partner-inbox"
PSERVE_PID=$SERVED_PID
PARTNER_SERVE=$SERVED_ADDR
echo "  listening on $PARTNER_SERVE"

# The standard ports when they are free, else free high ports (0: always a free high port).
PARTNER_ADDR=$("$SETUP" port "${DEMO_PARTNER_PORT:-6619}")
TUNNEL_ADDR=$("$SETUP" port "${DEMO_TUNNEL_PORT:-2878}")
# The route's listener: the original product's proxy-client port when it is free.
ROUTE_ADDR=$("$SETUP" port "${DEMO_ROUTE_PORT:-65433}")

say "Backend: smartproxy-api init --data-dir $API_DIR (database, TLS certificate, first token)"
INIT_OUT=$("$BIN/smartproxy-api" init --data-dir "$API_DIR" --client "$PROXY_CLIENT" 2>&1) ||
  fail "smartproxy-api init: $INIT_OUT"
# The token is printed once; it is not shown here (it is a secret), only that there is one.
TOKEN=$(grep -Eo 'spt_[A-Za-z0-9_-]+' <<<"$INIT_OUT" | head -n 1) || true
[[ -n $TOKEN ]] || fail "smartproxy-api init printed no token: $INIT_OUT"
grep -v "$TOKEN" <<<"$INIT_OUT" | sed 's/^/  /'
echo "  (token of proxy client $PROXY_CLIENT: ${TOKEN:0:8}…, kept for smartproxy-client -T)"

say "Backend: the demo's configuration, through the admin CLI"
api config set company_certificate "$RUN/certs/company.pem" company_key "$RUN/certs/company-key.pem" \
  partner_listen_address "$PARTNER_ADDR" internal_server.address "$INTERNAL" \
  internal_server.connect_timeout 10s limits.max_sessions 100 log_level info
api ca add "$RUN/certs/partner-ca.pem"
api crl import "$RUN/certs/partner-ca.crl"
printf '%s\n' "$PARTNER_PW" >"$RUN/certs/partner-password"
api partner add --odette-id "$PARTNER_ID" --name "Demo Partner" --password-file "$RUN/certs/partner-password" \
  --serial "$PARTNER_ID" --direction both
api route add --name to-partner --listen "$ROUTE_ADDR" --partner-address "$PARTNER_SERVE" \
  --partner-odette-id "$PARTNER_ID" --server-name localhost
api license import "$RUN/license"
say "Backend: what it holds now (smartproxy-api config show, partner list, route list)"
api config show
api partner list
api route list

say "Backend: smartproxy-api serve --listen 127.0.0.1:0 (HTTPS)"
"$BIN/smartproxy-api" serve --data-dir "$API_DIR" --listen 127.0.0.1:0 --metrics 127.0.0.1:0 --pid-file "$RUN/pid/smartproxy-api.pid" \
  >"$RUN/api.out" 2>"$RUN/logs/smartproxy-api.log" &
PIDS+=($!) NAMES+=("smartproxy-api serve")
API_PID=$!
waitfor "$RUN/api.out" "fingerprint: " "smartproxy-api serve to listen" "$API_PID"
API_ADDR=$(awk '/listening on https:\/\// {sub(/.*https:\/\//, ""); print; exit}' "$RUN/api.out")
API_FP=$(awk -F': ' '/fingerprint: / {print $2; exit}' "$RUN/api.out")
[[ -n $API_ADDR && -n $API_FP ]] || fail "smartproxy-api serve did not print its address and fingerprint"
sed 's/^/  /' "$RUN/api.out"

say "DMZ: smartproxy-server -i $TUNNEL_ADDR (no configuration and no license of its own)"
"$BIN/smartproxy-server" -i "$TUNNEL_ADDR" -l "$RUN/server/license" \
  --tunnel-cert "$RUN/tunnel/server.pem" --tunnel-key "$RUN/tunnel/server-key.pem" --tunnel-ca "$RUN/tunnel/tunnel-ca.pem" \
  --admin= --metrics= --pid-file "$RUN/pid/smartproxy-server.pid" 2>"$RUN/logs/smartproxy-server.log" &
PIDS+=($!) NAMES+=("smartproxy-server")
SERVER_PID=$!
waitfor "$RUN/logs/smartproxy-server.log" "waiting for a client tunnel" "smartproxy-server to listen" "$API_PID" "$SERVER_PID"
echo "  running (log: $RUN/logs/smartproxy-server.log)"

say "Inside: smartproxy-client -S $TUNNEL_ADDR -U https://$API_ADDR -T … --api-fingerprint …"
"$BIN/smartproxy-client" -S "$TUNNEL_ADDR" --tunnel-server-name localhost \
  -U "https://$API_ADDR" -T "$TOKEN" --api-fingerprint "$API_FP" --state-dir "$RUN/client-state" \
  --tunnel-cert "$RUN/tunnel/client.pem" --tunnel-key "$RUN/tunnel/client-key.pem" --tunnel-ca "$RUN/tunnel/tunnel-ca.pem" \
  --admin= --metrics= --pid-file "$RUN/pid/smartproxy-client.pid" 2>"$RUN/logs/smartproxy-client.log" &
PIDS+=($!) NAMES+=("smartproxy-client")
CLIENT_PID=$!
waitfor "$RUN/logs/smartproxy-server.log" "event=partner_listener_opened" \
  "the configuration from the backend to open the partner listener" "$API_PID" "$SERVER_PID" "$CLIENT_PID"
waitfor "$RUN/logs/smartproxy-server.log" 'msg="license valid"' \
  "the license from the backend to be valid in smartproxy-server" "$API_PID" "$SERVER_PID" "$CLIENT_PID"
echo "  the client fetched the configuration and the license from the backend and pushed both;"
echo "  partner listener open on $PARTNER_ADDR"
"$BIN/smartproxy-server" -V -l "$RUN/server/license" | sed 's/^/  smartproxy-server -V: /'

say "A sample EDI text file (format T, lines ending in CR LF)"
SAMPLE=$RUN/outgoing/invoices.edi
for i in $(seq 1 2000); do
  printf "UNH+%d+INVOIC:D:96A:UN'BGM+380+INV%06d+9'DTM+137:20240506:102'MOA+77:%d.00'UNT+5+%d'\r\n" "$i" "$i" "$((i * 7))" "$i"
done >"$SAMPLE"
ls -l "$SAMPLE" | sed 's/^/  /'

say "Partner: oftp2 send ($PARTNER_ID) → $PARTNER_ADDR, through the DMZ, waiting for the EERP"
"$BIN/oftp2" send --connect "$PARTNER_ADDR" --server-name localhost \
  --cert "$RUN/certs/partner.pem" --key "$RUN/certs/partner-key.pem" --ca "$RUN/certs/company-ca.pem" \
  --odette-id "$PARTNER_ID" --password "$PARTNER_PW" \
  --partner-id "$COMPANY_ID" --partner-password "$COMPANY_PW" \
  --format T "$SAMPLE" 2>"$RUN/logs/oftp2-send.log" | tee "$RUN/send.out" | sed 's/^/  /' ||
  fail "oftp2 send failed"
grep -q '^delivered ' "$RUN/send.out" || fail "the partner got no EERP"

RECEIVED=$(received "$RUN/serve.out" "the internal OFTP2 server" "$SERVE_PID")

say "Inside: the route listener for outgoing sessions"
waitfor "$RUN/logs/smartproxy-client.log" "event=route_listening" "smartproxy-client to listen for the route" "$CLIENT_PID"
echo "  smartproxy-client listens on $ROUTE_ADDR for the internal OFTP2 server (route to-partner → $PARTNER_SERVE)"

say "A sample file for the partner (format U)"
SAMPLE_OUT=$RUN/internal-outbox/despatch-advice.dat
head -c 300000 /dev/urandom >"$SAMPLE_OUT"
ls -l "$SAMPLE_OUT" | sed 's/^/  /'

say "Inside: oftp2 send ($COMPANY_ID) → route $ROUTE_ADDR (plain TCP), through the DMZ to the partner, waiting for the EERP"
"$BIN/oftp2" send --plain --connect "$ROUTE_ADDR" \
  --odette-id "$COMPANY_ID" --password "$COMPANY_PW" \
  --partner-id "$PARTNER_ID" --partner-password "$PARTNER_PW" \
  --format U "$SAMPLE_OUT" 2>"$RUN/logs/oftp2-send-out.log" | tee "$RUN/send-out.out" | sed 's/^/  /' ||
  fail "oftp2 send through the route failed"
grep -q '^delivered ' "$RUN/send-out.out" || fail "the internal sender got no EERP from the partner"
RECEIVED_OUT=$(received "$RUN/partner-serve.out" "the partner's OFTP2 server" "$PSERVE_PID")

say "What the proxy logged about the sessions"
grep -E 'event=(session_started|session_ended)' "$RUN/logs/smartproxy-server.log" | sed 's/^/  server: /'
grep -E 'event=(session_started|session_ended)' "$RUN/logs/smartproxy-client.log" | sed 's/^/  client: /'

say "The backend received the session's end: smartproxy-api events list --name session_ended"
EVENTS=""
for ((i = 0; i < WAIT_SECONDS * 10; i++)); do
  EVENTS=$("$BIN/smartproxy-api" events list --data-dir "$API_DIR" --name session_ended 2>&1) ||
    fail "smartproxy-api events list: $EVENTS"
  grep -q "$PARTNER_ID" <<<"$EVENTS" && break
  kill -0 "$CLIENT_PID" 2>/dev/null || fail "smartproxy-client exited"
  sleep 0.1
done
grep -q "$PARTNER_ID" <<<"$EVENTS" || fail "the backend received no session_ended event of $PARTNER_ID within ${WAIT_SECONDS}s"
sed 's/^/  /' <<<"$EVENTS"
say "All events the backend holds: smartproxy-api events list"
EVENTS=$("$BIN/smartproxy-api" events list --data-dir "$API_DIR" --limit 1000 2>&1) || fail "smartproxy-api events list: $EVENTS"
sed 's/^/  /' <<<"$EVENTS"
ALL_EVENTS=$(tail -n +2 <<<"$EVENTS" | grep -c . || true)

WANT=$(sha "$SAMPLE")
GOT=$(sha "$RECEIVED")
WANT_OUT=$(sha "$SAMPLE_OUT")
GOT_OUT=$(sha "$RECEIVED_OUT")
say "Result"
echo "  incoming (partner → inside):"
echo "    sent:     $SAMPLE"
echo "              sha256 $WANT"
echo "    received: $RECEIVED"
echo "              sha256 $GOT"
echo "    metadata: $(dirname "$RECEIVED")/.oftp2/received/$(basename "$RECEIVED").json"
echo "  outgoing (inside → partner):"
echo "    sent:     $SAMPLE_OUT"
echo "              sha256 $WANT_OUT"
echo "    received: $RECEIVED_OUT"
echo "              sha256 $GOT_OUT"
echo "  backend:  $ALL_EVENTS events stored in $API_DIR/smartproxy-api.db, among them the partner's session_ended"
[[ $WANT == "$GOT" ]] || fail "the received file differs from the sent one (incoming)"
[[ $WANT_OUT == "$GOT_OUT" ]] || fail "the file the partner received differs from the sent one (outgoing)"
echo
echo "OK: incoming: partner → smartproxy-server → tunnel → smartproxy-client → internal OFTP2 server;"
echo "    outgoing: internal OFTP2 server → smartproxy-client route → tunnel → smartproxy-server → partner:"
echo "    both files arrived byte-identical and each sender received the end-to-end response (EERP);"
echo "    the configuration came from the backend (smartproxy-api), which received the proxy's events."

# Web admin (docs/backend.md): a user "admin" with a password printed once.
ADMIN_PW=$("$BIN/smartproxy-api" user add admin --data-dir "$API_DIR" 2>&1 | awk '/shown once/ {print $NF}')
[[ -n $ADMIN_PW ]] || fail "smartproxy-api user add printed no password"
echo
echo "Web admin: https://$API_ADDR/admin/  (user admin, one-time password $ADMIN_PW; the certificate is self-signed, SHA-256 $API_FP)"
if [[ ${DEMO_UI:-0} == 1 ]]; then
  echo "The system keeps running for the web admin; press Ctrl-C to stop it."
  wait
fi
