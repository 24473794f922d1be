#!/usr/bin/env bash
# The status page in a real browser (README, "Status page"): starts quotad on its embedded default config on
# free ports, drives /status in Debian's headless chromium with playwright-core (scripts/browser), sends a
# ReportThrottle with grpcurl while the page is open, and saves a screenshot to target/status-page.png.
# Needs: a built quotad (QUOTAD_BIN, default target/debug/quotad), chromium (apt-get install chromium), node
# and npm, grpcurl on the PATH (.ci/run puts it in .venv), redis-server and redis-cli. Then the header again
# on a Redis store whose maxmemory-policy evicts, with the slices a node holds of the default config's
# local_share resource (scripts/browser/status-store.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${QUOTAD_BIN:-target/debug/quotad}
free() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free)
metrics=$(free)
QUOTAD_SERVER__LISTEN="127.0.0.1:$port" QUOTAD_METRICS__LISTEN="127.0.0.1:$metrics" "$bin" >target/status-page-quotad.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
up() { python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $1)))"; }
for _ in $(seq 1 100); do
  up "$port" && up "$metrics" && break
  sleep 0.1
done
up "$port" || { echo "quotad did not start:"; cat target/status-page-quotad.log; exit 1; }
(cd scripts/browser && npm ci --silent --no-audit --no-fund)
# A little traffic first, so the charts have something to draw.
for _ in 1 2 3; do
  grpcurl -plaintext -d '{"resource": "bedrock.invoke"}' "127.0.0.1:$port" quotad.v1.QuotaService/Acquire >/dev/null
done
for t in $(printf "acme %.0s" $(seq 14)) $(printf "globex %.0s" $(seq 12)); do
  grpcurl -plaintext -d "{\"resource\": \"partner.stripe\", \"descriptors\": {\"tenant\": \"$t\"}}" "127.0.0.1:$port" quotad.v1.QuotaService/Acquire >/dev/null
done
for _ in 1 2 3; do
  grpcurl -plaintext -d '{"domain": "edge", "descriptors": [{"entries": [{"key": "user", "value": "a"}]}]}' \
    "127.0.0.1:$port" envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit >/dev/null
done
export THROTTLE_CMD="grpcurl -plaintext -d '{\"resource\": \"bedrock.invoke\", \"retry_after\": \"20s\", \"message\": \"HTTP 429 from the browser test\"}' 127.0.0.1:$port quotad.v1.QuotaService/ReportThrottle >/dev/null"
timeout 120 node scripts/browser/status-page.mjs "http://127.0.0.1:$metrics/status" "$PWD/target/status-page.png"

# The header on a Redis store whose maxmemory-policy would evict quotad's keys (a Redis of its own).
kill $pid 2>/dev/null || true
rport=$(free)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --maxmemory 1gb \
  --maxmemory-policy allkeys-lru >target/status-page-redis.log 2>&1 &
rpid=$!
trap 'kill $pid $rpid 2>/dev/null || true' EXIT
until redis-cli -p "$rport" PING >/dev/null 2>&1; do sleep 0.1; done
port=$(free)
metrics=$(free)
QUOTAD_STORE=redis QUOTAD_REDIS__URL="redis://127.0.0.1:$rport" QUOTAD_SERVER__LISTEN="127.0.0.1:$port" \
  QUOTAD_METRICS__LISTEN="127.0.0.1:$metrics" "$bin" >target/status-page-quotad-redis.log 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  up "$port" && up "$metrics" && break
  sleep 0.1
done
up "$metrics" || { echo "quotad on Redis did not start:"; cat target/status-page-quotad-redis.log; exit 1; }
# Traffic on the default config's local_share resource, so this node holds a slice of it when the page looks.
(for _ in $(seq 1 60); do
  grpcurl -plaintext -d '{"resource": "maps.geocode"}' "127.0.0.1:$port" quotad.v1.QuotaService/Acquire >/dev/null
done) &
timeout 60 node scripts/browser/status-store.mjs "http://127.0.0.1:$metrics/status" "$PWD/target/status-page-redis.png"
