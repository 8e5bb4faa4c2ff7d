#!/usr/bin/env bash
# Fuzzes the running collector against docs/openapi.yaml with schemathesis (PyPI): every response
# must match the document and no request may get a 5xx. Starts its own collector (debug build) on
# 127.0.0.1 with a fresh data dir and stops it (by PID) at the end. Requests carry the admin token,
# which also passes the read gate, so the admin endpoints are fuzzed past their token check too.
#
#   bash server/fuzz/schemathesis.sh [MAX_EXAMPLES]     # from the workspace root
#
# Needs: `pip install schemathesis` (tested with 4.32). "positive_data_acceptance" is excluded on
# purpose: a schema cannot express a valid ed25519 signature, so schema-valid reports are refused.
set -euo pipefail
cd "$(dirname "$0")/../.."
max_examples="${1:-200}"
command -v st >/dev/null || { echo "schemathesis (st) not found: pip install schemathesis" >&2; exit 2; }
cargo build -q -p shoal-collector --bin shoal-collector
work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
echo "read-0123456789abcdef" > "$work/read"
echo "enroll-0123456789abcdef" > "$work/enroll"
echo "admin-0123456789abcdef" > "$work/admin"
RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/debug/shoal-collector" serve --listen 127.0.0.1:0 --data "$work/data" \
    --token-file "$work/read" --enroll-token-file "$work/enroll" --admin-token-file "$work/admin" \
    > "$work/out" 2> "$work/log" &
pid=$!
for _ in $(seq 50); do [ -s "$work/out" ] && break; sleep 0.1; done
url="$(sed 's/^listening on //' "$work/out")"
[ -n "$url" ] || { echo "collector did not start:" >&2; cat "$work/log" >&2; exit 1; }
st run docs/openapi.yaml --url "$url" \
    -H "Authorization: Bearer admin-0123456789abcdef" \
    --checks all --exclude-checks positive_data_acceptance \
    --max-examples "$max_examples"
