#!/usr/bin/env bash
# Cross-check of the Acquire vs Health/Check throughput ratio with a second, independent load tool: h2load
# (Debian's nghttp2-client, `apt-get install nghttp2-client`), a C HTTP/2 client cheap enough per call that
# the server, not the generator, is the bottleneck. quotad pinned to core 0, h2load to core 1, 64 streams in
# flight (4 connections x 16), N calls per run, each figure the median of RUNS runs, calls alternating.
#   scripts/bench-h2load.sh                     # target/release/quotad
#   SERVER=path/to/quotad RUNS=5 N=500000 scripts/bench-h2load.sh
#   CONNS=1 STREAMS=1 scripts/bench-h2load.sh   # 1 in flight (default 4 connections x 16 streams = 64)
#   PIN=none scripts/bench-h2load.sh            # quotad on every core, h2load unpinned too
# h2load counts HTTP 200 and does not read grpc-status: the script reads /metrics afterwards to show that
# every Acquire was granted and none failed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client"; exit 1; }
runs=${RUNS:-3}
n=${N:-300000}
server=${SERVER:-target/release/quotad}
out=${OUT:-target/bench-h2load}
mkdir -p "$out"
[ -n "${SERVER:-}" ] || cargo build --release -p quotad-server -p quotad-tools --bins >/dev/null
# gRPC frames: a 5-byte prefix (not compressed, 4-byte big-endian length) and the encoded message.
# AcquireRequest{resource: "bench.rate" (field 1), permits: 1 (field 3)}; HealthCheckRequest{} is empty.
printf '\x00\x00\x00\x00\x0e\x0a\x0abench.rate\x18\x01' >"$out/acquire.bin"
printf '\x00\x00\x00\x00\x00' >"$out/health.bin"

conns=${CONNS:-4}
streams=${STREAMS:-16}
server_cpu=(taskset -c 0)
client_cpu=(taskset -c 1)
if [ "${PIN:-}" = none ]; then server_cpu=(); client_cpu=(); fi
"${server_cpu[@]}" "$server" --config examples/bench.toml >"$out/server.log" 2>&1 &
pid=$!
# Waits for it to exit, so that a next run's server finds the ports free.
trap 'kill $pid 2>/dev/null && wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  kill -0 $pid 2>/dev/null || { echo "quotad did not start:"; cat "$out/server.log"; exit 1; }
  curl -sf http://127.0.0.1:9464/metrics >/dev/null && break
  sleep 0.1
done
call() { # name, path, file
  "${client_cpu[@]}" h2load -n "$n" -c "$conns" -m "$streams" -t 1 -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$3" "http://127.0.0.1:50051$2" >"$out/$1.txt"
  awk '/^finished in/ {gsub(",", "", $4); print $4}' "$out/$1.txt"
}
for i in $(seq 1 "$runs"); do
  h=$(call "health-$i" /grpc.health.v1.Health/Check "$out/health.bin")
  a=$(call "acquire-$i" /quotad.v1.QuotaService/Acquire "$out/acquire.bin")
  echo "run $i: Health/Check $h req/s, Acquire $a req/s"
  echo "$h $a" >>"$out/runs.txt.$$"
done
curl -s http://127.0.0.1:9464/metrics | grep -E '^quotad_acquires_total\{resource="bench.rate",decision="granted"|^quotad_errors_total' || true
python3 - "$out/runs.txt.$$" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
h = statistics.median(r[0] for r in rows)
a = statistics.median(r[1] for r in rows)
print(f"median of {len(rows)}: Health/Check {h:.0f} req/s, Acquire {a:.0f} req/s, ratio {a / h:.3f}")
PY
rm -f "$out/runs.txt.$$"
