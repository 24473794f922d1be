#!/usr/bin/env bash
# Envoy's ShouldRateLimit (one descriptor) against quotad's own Acquire, on the in-memory store, with h2load
# (Debian's nghttp2-client): quotad pinned to core 0, h2load to core 1, 64 streams in flight (4 connections x
# 16), N calls per run, each figure the median of RUNS runs, calls alternating.
#   scripts/bench-rls.sh                        # target/release/quotad, examples/bench.toml
#   SERVER=path/to/quotad RUNS=5 N=500000 scripts/bench-rls.sh
# h2load counts HTTP 200 and does not read grpc-status: the script reads /metrics afterwards to show every
# call was answered OK (granted Acquires, OK rate limit answers).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client"; exit 1; }
runs=${RUNS:-3}
n=${N:-300000}
server=${SERVER:-target/release/quotad}
out=${OUT:-target/bench-rls}
mkdir -p "$out"
[ -n "${SERVER:-}" ] || cargo build --release -p quotad-server >/dev/null
# gRPC frames: a 5-byte prefix and the encoded message. AcquireRequest{resource: "bench.rate", permits: 1};
# RateLimitRequest{domain: "bench", descriptors: [{entries: [{key: "client", value: "a"}]}]}.
printf '\x00\x00\x00\x00\x0e\x0a\x0abench.rate\x18\x01' >"$out/acquire.bin"
printf '\x00\x00\x00\x00\x16\x0a\x05bench\x12\x0d\x0a\x0b\x0a\x06client\x12\x01a' >"$out/rls.bin"

taskset -c 0 "$server" --config examples/bench.toml >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  kill -0 $pid 2>/dev/null || { echo "quotad did not start:"; cat "$out/server.log"; exit 1; }
  curl -sf http://127.0.0.1:9464/metrics >/dev/null && break
  sleep 0.1
done
call() { # name, path, file
  taskset -c 1 h2load -n "$n" -c "${CONNS:-4}" -m "${STREAMS:-16}" -t 1 -H 'content-type: application/grpc' \
    -H 'te: trailers' -d "$3" "http://127.0.0.1:50051$2" >"$out/$1.txt"
  awk '/^finished in/ {gsub(",", "", $4); print $4}' "$out/$1.txt"
}
: >"$out/runs.txt"
for i in $(seq 1 "$runs"); do
  a=$(call "acquire-$i" /quotad.v1.QuotaService/Acquire "$out/acquire.bin")
  r=$(call "rls-$i" /envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit "$out/rls.bin")
  echo "run $i: Acquire $a req/s, ShouldRateLimit $r req/s"
  echo "$a $r" >>"$out/runs.txt"
done
curl -s http://127.0.0.1:9464/metrics |
  grep -E '^quotad_acquires_total\{resource="bench.rate"|^quotad_rls_requests_total|^quotad_errors_total' || true
python3 - "$out/runs.txt" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
a = statistics.median(r[0] for r in rows)
r = statistics.median(r[1] for r in rows)
print(f"median of {len(rows)}: Acquire {a:.0f} req/s, ShouldRateLimit {r:.0f} req/s, ratio {r / a:.3f}")
PY
