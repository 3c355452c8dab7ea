#!/usr/bin/env bash
# Runs the conformance suites the way a user runs them, against our own code:
# `conformance bridge` against a bridge binary (simulated carrier), and
# `conformance bot` against the Rust and Python example echo bots. Also checks
# that the committed JSON Schema files match the protocol types.
#
# Reports go to target/conformance/ (JUnit XML, JSON, and the servers' logs).
# Exit code: 0 when every selected scenario of every run passed.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=${CARGO_TARGET_DIR:-target}
OUT=$TARGET/conformance
mkdir -p "$OUT"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --locked -q -p bridge -p examples -p conformance
BIN=$TARGET/debug

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits (at most 10 s) until something accepts TCP connections on a port.
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1 after 10 s" >&2
  return 1
}

# Runs one suite; on failure shows the servers' logs.
suite() {
  if ! timeout 600 "$BIN/conformance" "$@"; then
    echo "conformance $1 failed; server logs follow" >&2
    tail -n 40 "$OUT"/*.log >&2 || true
    return 1
  fi
}

echo "== conformance schema --check"
"$BIN/conformance" schema --check conformance/schema

echo "== conformance bridge (against our bridge)"
token="ci-$(date +%s)-$RANDOM"
http_port=$(free_port)
cat > "$work/bridge.toml" <<'EOF'
[calls]
ring_timeout_secs = 5

# A phone that answers and hangs up by itself, for stop-callended.
[[carrier.phones]]
prefix = "+99980"
ring_ms = 300
hangup_after_ms = 1500

# An extension that rings that phone, for transfer-extension.
[[sip.extensions]]
number = "201"
password = "conformance"
also_ring = ["+999800"]

# A flow that ends the call by itself (it rings that phone), for flow-transfer.
[[flows]]
id = "conformance_flow"
name = "Conformance"
entry_node = "agent"
[[flows.nodes]]
id = "agent"
type = "external_dial"
config = { phone_number = "+999800", timeout = 10 }
EOF
"$BIN/bridge" serve --no-sip --http "127.0.0.1:$http_port" --data-dir "$work/data" \
  --api-token "$token" --config "$work/bridge.toml" >"$OUT/bridge.log" 2>&1 &
pids+=($!)
wait_port "$http_port"
suite bridge --api "http://127.0.0.1:$http_port" --token "$token" \
  --hangup-number +999800 --flow-id conformance_flow --extension 201 --jobs 4 \
  --junit "$OUT/bridge.xml" --json "$OUT/bridge.json"

echo "== conformance bot (against the Rust echo bot)"
rust_port=$(free_port)
"$BIN/echo-bot" --listen "127.0.0.1:$rust_port" >"$OUT/echo-bot-rust.log" 2>&1 &
pids+=($!)
wait_port "$rust_port"
suite bot --url "ws://127.0.0.1:$rust_port/" --header "Authorization: Bearer ci" \
  --jobs 4 --junit "$OUT/bot-rust.xml" --json "$OUT/bot-rust.json"

echo "== conformance bot (against the Python echo bot)"
if python3 -c 'import websockets.asyncio.server' 2>/dev/null; then
  py_port=$(free_port)
  python3 examples/python/echo_bot.py --port "$py_port" >"$OUT/echo-bot-python.log" 2>&1 &
  pids+=($!)
  wait_port "$py_port"
  suite bot --url "ws://127.0.0.1:$py_port/" --header "Authorization: Bearer ci" \
    --jobs 4 --junit "$OUT/bot-python.xml" --json "$OUT/bot-python.json"
elif [ "${CI:-}" = true ]; then
  echo "python3 with websockets >= 13 is required in CI" >&2
  exit 1
else
  echo "SKIPPED: python3 with the websockets package is not installed"
fi
