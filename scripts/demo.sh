#!/usr/bin/env bash
# demo.sh — deliver a file between two OFTP2 endpoints on loopback.
#
# Called by `make demo` after `make build`. It uses ./bin/oftp2 and
# ./bin/smartproxy-server (for the certificates) and works in ./demo-run,
# which it recreates. Exit status 0 means the file arrived byte-identical and
# the sender received the end-to-end response (EERP); anything else fails.
#
# This demo runs two OFTP2 endpoints directly against each other, partner to
# internal server, over TLS 1.3 with client certificates. The SmartProxy will
# later be inserted between them; this is the baseline it must not change.
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-./bin}
RUN=./demo-run
PARTNER_ID=O0013000000PARTNER   # the calling side (initiator, sender)
COMPANY_ID=O0013000000COMPANY   # the called side (responder, receiver)

say() { printf '\n== %s\n' "$*"; }
fail() { printf '\ndemo FAILED: %s\n' "$*" >&2; exit 1; }

for b in oftp2 smartproxy-server; do
  [[ -x $BIN/$b ]] || fail "$BIN/$b is missing: run make build (or make demo)"
done
if command -v sha256sum >/dev/null; then
  sha() { sha256sum "$1" | cut -d' ' -f1; }
else
  sha() { shasum -a 256 "$1" | cut -d' ' -f1; }
fi

rm -rf "$RUN"
mkdir -p "$RUN/outgoing"

say "This demo runs two OFTP2 endpoints directly (no proxy yet; it will be inserted between them later)."

say "Certificates: a CA, a server certificate (localhost, 127.0.0.1) and a client certificate"
"$BIN/smartproxy-server" pki init --dir "$RUN/pki" >/dev/null
PKI=$RUN/pki
ls "$PKI"

say "A sample EDI text file (format T, lines ending in CR LF)"
SAMPLE=$RUN/outgoing/invoices.edi
for i in $(seq 1 2000); do
  printf "UNH+%d+INVOIC:D:96A:UN'BGM+380+INV%06d+9'DTM+137:20240506:102'MOA+77:%d.00'UNT+5+%d'\r\n" "$i" "$i" "$((i * 7))" "$i"
done >"$SAMPLE"
ls -l "$SAMPLE"

say "Starting the receiver: oftp2 serve ($COMPANY_ID) on a free loopback port"
"$BIN/oftp2" serve \
  --listen 127.0.0.1:0 --addr-file "$RUN/serve.addr" \
  --cert "$PKI/server.pem" --key "$PKI/server-key.pem" --ca "$PKI/tunnel-ca.pem" \
  --odette-id "$COMPANY_ID" --password COMPANY \
  --partner "$PARTNER_ID:PARTNER" \
  --dir "$RUN/inbox" >"$RUN/serve.out" 2>"$RUN/serve.log" &
SERVE_PID=$!
cleanup() {
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

for _ in $(seq 1 200); do
  [[ -s $RUN/serve.addr ]] && break
  kill -0 "$SERVE_PID" 2>/dev/null || { cat "$RUN/serve.log" >&2; fail "oftp2 serve did not start"; }
  sleep 0.05
done
[[ -s $RUN/serve.addr ]] || fail "oftp2 serve did not report its address"
ADDR=$(cat "$RUN/serve.addr")
echo "listening on $ADDR (log: $RUN/serve.log)"

say "Sending: oftp2 send ($PARTNER_ID) → $ADDR, waiting for the EERP"
"$BIN/oftp2" send \
  --connect "$ADDR" --server-name localhost \
  --cert "$PKI/client.pem" --key "$PKI/client-key.pem" --ca "$PKI/tunnel-ca.pem" \
  --odette-id "$PARTNER_ID" --password PARTNER \
  --partner-id "$COMPANY_ID" --partner-password COMPANY \
  --format T "$SAMPLE" | tee "$RUN/send.out"

say "Stopping the receiver"
cleanup
trap - EXIT

RECEIVED=$(awk '$1 == "received" {print $2; exit}' "$RUN/serve.out")
[[ -n $RECEIVED && -f $RECEIVED ]] || { cat "$RUN/serve.log" >&2; fail "the receiver reported no stored file"; }
grep -q '^delivered ' "$RUN/send.out" || fail "the sender got no EERP"

WANT=$(sha "$SAMPLE")
GOT=$(sha "$RECEIVED")
say "Result"
cat "$RUN/serve.out"
echo "sent:     $SAMPLE  sha256 $WANT"
echo "received: $RECEIVED  sha256 $GOT"
echo "metadata: $(dirname "$RECEIVED")/.oftp2/received/$(basename "$RECEIVED").json"
[[ $WANT == "$GOT" ]] || fail "the received file differs from the sent one"
echo
echo "OK: the file arrived byte-identical and the sender received the end-to-end response (EERP)."
