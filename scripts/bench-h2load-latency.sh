#!/usr/bin/env bash
# Acquire latency at a fixed rate, with h2load as the generator (a C client far cheaper per call than
# quotad-bench's one thread, which cannot send half of a saturating rate on a slow VM). quotad pinned to core
# 0, h2load to core 1; RATE calls/s in all, spread over 4 connections (h2load's --rps is per connection),
# 16 streams each, for DURATION seconds; p50/p90/p99/p999 of each call's time from its send to its answer, read from
# h2load's per-request log. h2load waits for a stream before sending when all 16 are busy, so a stall
# delays the sends behind it (not fully open loop: compare builds by the same script, alternated).
# STORE=redis runs quotad on a redis-server of its own (port REDIS_PORT, default 6391, no persistence)
# pinned to core REDIS_CPU (default 1). Cores: QUOTAD_CPU (default 0) and H2LOAD_CPU (default 1); "all"
# leaves a process unpinned.
#   RATE=17000 DURATION=10 scripts/bench-h2load-latency.sh
#   SERVER=path/to/quotad RATE=17000 scripts/bench-h2load-latency.sh
#   STORE=redis RATE=8000 QUOTAD_CPU=0 H2LOAD_CPU=0 REDIS_CPU=1 scripts/bench-h2load-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client"; exit 1; }
rate=${RATE:-17000}
seconds=${DURATION:-10}
conns=4
server=${SERVER:-target/release/quotad}
out=${OUT:-target/bench-h2load-latency}
mkdir -p "$out"
[ -n "${SERVER:-}" ] || cargo build --release -p quotad-server -p quotad-tools --bins >/dev/null
printf '\x00\x00\x00\x00\x0e\x0a\x0abench.rate\x18\x01' >"$out/acquire.bin"
pin() { # cpu -> the command prefix that runs on that core ("all": anywhere); taskset execs, so $! is the process
  if [ "$1" != all ]; then echo "taskset -c $1"; fi
}
config=examples/bench.toml
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done' EXIT
if [ "${STORE:-memory}" = redis ]; then
  rport=${REDIS_PORT:-6391}
  $(pin "${REDIS_CPU:-1}") redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
    >"$out/redis.log" 2>&1 &
  pids+=($!)
  until redis-cli -p "$rport" PING >/dev/null 2>&1; do sleep 0.1; done
  config="$out/redis.toml"
  { printf 'store = "redis"\n[redis]\nurl = "redis://127.0.0.1:%s"\nprefix = "lat:"\n' "$rport"
    sed "s|\"bench-rls\"|\"$PWD/examples/bench-rls\"|" examples/bench.toml; } >"$config"
fi
$(pin "${QUOTAD_CPU:-0}") "$server" --config "$config" >"$out/server.log" 2>&1 &
pid=$!
pids=("$pid" "${pids[@]}")
for _ in $(seq 1 100); do
  kill -0 $pid 2>/dev/null || { echo "quotad did not start:"; cat "$out/server.log"; exit 1; }
  curl -sf http://127.0.0.1:9464/metrics >/dev/null && break
  sleep 0.1
done
# A second of warm-up, then the measured run (h2load appends to its log: start it empty).
rm -f "$out/requests.tsv"
$(pin "${H2LOAD_CPU:-1}") h2load -n $((rate / 4)) -c $conns -m 16 -t 1 --rps $((rate / 4 / conns)) \
  -H 'content-type: application/grpc' -H 'te: trailers' -d "$out/acquire.bin" \
  "http://127.0.0.1:50051/quotad.v1.QuotaService/Acquire" >/dev/null
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
before=(); for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
$(pin "${H2LOAD_CPU:-1}") h2load -n $((rate * seconds)) -c $conns -m 16 -t 1 --rps $((rate / conns)) \
  --log-file="$out/requests.tsv" -H 'content-type: application/grpc' -H 'te: trailers' \
  -d "$out/acquire.bin" "http://127.0.0.1:50051/quotad.v1.QuotaService/Acquire" >"$out/h2load.txt"
python3 - "$out/requests.tsv" "$out/h2load.txt" <<'PY'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
ok = sorted(int(r[2]) for r in rows if r[1] == "200")
starts = [int(r[0]) for r in rows]
span = (max(starts) - min(starts)) / 1e6 or 1
q = lambda p: ok[min(len(ok) - 1, int(p * len(ok)))] / 1000
print(f"{len(ok)} of {len(rows)} answered 200, sent at {len(rows) / span:.0f}/s: "
      f"p50 {q(.5):.3f} ms, p90 {q(.9):.3f} ms, p99 {q(.99):.3f} ms, p99.9 {q(.999):.3f} ms, max {ok[-1] / 1000:.1f} ms")
PY
names=(quotad redis)
for i in "${!pids[@]}"; do
  echo "CPU ${names[$i]}: $(awk -v a="${before[$i]}" -v b="$(cpu "${pids[$i]}")" 'BEGIN { printf "%.2f s", b - a }')"
done
