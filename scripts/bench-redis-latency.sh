#!/usr/bin/env bash
# Acquire latency through one quotad node on a Redis of its own, open loop (quotad-bench --rate, paced by
# the kernel's timer), at each RATES value for DURATION; prints p50..max and the CPU seconds Redis, quotad
# and the generator used, and Redis's own time per FCALL (INFO commandstats) over the whole run (BENCHMARKS.md).
# Cores: QUOTAD_CPU, BENCH_CPU, REDIS_CPU ("all" = unpinned; default Redis alone on core 1, quotad and
# the generator on core 0), WORKERS = quotad's server.worker_threads (default 1).
# BENCH_THREADS = the generator's worker threads, BENCH_ARGS = more quotad-bench options
# (e.g. --connections 1).
#   RATES="2000 4000 5776" scripts/bench-redis-latency.sh
#   QUOTAD_CPU=all BENCH_CPU=all REDIS_CPU=all WORKERS=0 RATES=5776 scripts/bench-redis-latency.sh
#   RESOURCE=bench.final RATES=14000 scripts/bench-redis-latency.sh   # grants that hold nothing
# Each rate also prints the server's own Acquire latency: quotad_request_duration_seconds{rpc="Acquire"} over
# the measured run (two scrapes of /metrics: after quotad-bench's 1 s warm-up, and at its end), its p50 and p99 interpolated within the buckets as Prometheus's
# histogram_quantile does. QUOTAD_BIN runs another quotad build (e.g. an earlier commit's, to compare), with
# BENCH_CONFIG its examples/bench.toml.
# STORE=memory: the same node, generator and cores on the in-memory store (the baseline: what the machine
# gives without Redis; Redis still runs, idle).
#   STORE=memory QUOTAD_CPU=all BENCH_CPU=all WORKERS=0 RATES="1000 2000 4700" scripts/bench-redis-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-6392}
out=${OUT:-target/bench-redis-latency}
mkdir -p "$out"
cargo build --release -p quotad-server -p quotad-tools --bins >/dev/null
pin() { [ "$1" = all ] || echo "taskset -c $1"; }
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null' EXIT
$(pin "${REDIS_CPU:-1}") redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
  >"$out/redis.log" 2>&1 &
redis=$!
pids+=("$redis")
until redis-cli -p "$port" PING >/dev/null 2>&1; do sleep 0.1; done
{
  [ "${STORE:-redis}" = memory ] ||
    printf 'store = "redis"\n[redis]\nurl = "redis://127.0.0.1:%s"\nprefix = "lat:"\n' "$port"
  sed -e 's/127.0.0.1:50051/127.0.0.1:50081/' -e 's/127.0.0.1:9464/127.0.0.1:9481/' \
    -e "s/^\[server\]/[server]\nworker_threads = ${WORKERS:-1}/" \
    -e "s|\"bench-rls\"|\"$PWD/examples/bench-rls\"|" "${BENCH_CONFIG:-examples/bench.toml}"
} >"$out/node.toml"
RUST_LOG=warn $(pin "${QUOTAD_CPU:-0}") "${QUOTAD_BIN:-target/release/quotad}" --config "$out/node.toml" >"$out/node.log" 2>&1 &
quotad=$!
pids+=("$quotad")
for _ in $(seq 1 100); do
  curl -sf http://127.0.0.1:9481/metrics >/dev/null && break
  sleep 0.1
done
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
server_latency() { # before.txt after.txt -> the Acquire histogram's change between two scrapes
  python3 - "$1" "$2" <<'PY'
import re, sys
def buckets(path):
    b = {}
    for line in open(path):
        m = re.match(r'quotad_request_duration_seconds_bucket\{rpc="Acquire",le="([^"]+)"\} (\d+)', line)
        if m:
            b[float("inf") if m[1] == "+Inf" else float(m[1])] = int(m[2])
    return b
a, b = buckets(sys.argv[1]), buckets(sys.argv[2])
les = sorted(b)
d = [b[le] - a.get(le, 0) for le in les]
total = d[-1]
def q(p):
    rank, prev_le, prev_n = p * total, 0.0, 0
    for le, n in zip(les, d):
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1)
        prev_le, prev_n = le, n
    return prev_le
under = lambda x: 100.0 * d[les.index(x)] / max(total, 1)
print(f"server (Acquire histogram): {total} calls, p50 {q(0.5) * 1e3:.2f} ms, p99 {q(0.99) * 1e3:.2f} ms; "
      f"within 1 ms {under(0.001):.1f} %, 2.5 ms {under(0.0025):.1f} %, 10 ms {under(0.01):.1f} %")
PY
}
for rate in ${RATES:-2000 4000 5776}; do
  redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
  # The server's histogram from the end of quotad-bench's 1 s warm-up.
  (sleep 1; curl -sf http://127.0.0.1:9481/metrics >"$out/metrics-before.txt") &
  scrape=$!
  r0=$(cpu "$redis"); q0=$(cpu "$quotad")
  # bash's `time` gives the generator's own user + system CPU seconds.
  TIMEFORMAT='%U %S'
  gen=$({ time $(pin "${BENCH_CPU:-0}") target/release/quotad-bench --target http://127.0.0.1:50081 \
    --resource "${RESOURCE:-bench.rate}" --duration "${DURATION:-10s}" --no-progress --rate "$rate" ${BENCH_THREADS:+--threads "$BENCH_THREADS"} ${BENCH_ARGS:-} \
    >"$out/bench.txt" 2>&1; } 2>&1)
  line=$(grep latency "$out/bench.txt")
  fcall=$(redis-cli -p "$port" INFO commandstats | sed -n 's/^cmdstat_fcall:.*usec_per_call=\([0-9.]*\).*/\1/p')
  echo "$rate/s:$line | CPU redis $(awk -v a="$r0" -v b="$(cpu "$redis")" 'BEGIN { printf "%.2f", b - a }') s," \
    "quotad $(awk -v a="$q0" -v b="$(cpu "$quotad")" 'BEGIN { printf "%.2f", b - a }') s," \
    "quotad-bench $(echo "$gen" | awk '{ printf "%.2f", $1 + $2 }') s; FCALL ${fcall} µs"
  wait "$scrape"
  curl -sf http://127.0.0.1:9481/metrics >"$out/metrics-after.txt"
  echo "   $(server_latency "$out/metrics-before.txt" "$out/metrics-after.txt")"
done
