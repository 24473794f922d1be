#!/usr/bin/env bash
# The Redis store's cost (BENCHMARKS.md, "Several nodes on one Redis"). One redis-server of its own:
#   1. redis-benchmark: FCALL of quotad's own function doing the Acquire step (the reference: what Redis
#      itself sustains for this script at 64 in flight; the issue asks for EVALSHA of a script of similar size,
#      and quotad calls its library with FCALL, the same script without re-running its definitions);
#   2. quotad-bench against one quotad node (store = "redis") at 64 in flight, closed loop;
#   3. an open loop at half of (2)'s rate, for p99;
#   4. three nodes at once, 64 in flight each.
# Each step prints the CPU seconds every process used (from /proc), since on a 2-core machine the cores, not
# quotad, set the ceiling. Needs redis-server, redis-cli, redis-benchmark (apt-get install redis-server
# redis-tools). About 2 minutes.
#   scripts/bench-redis.sh                 # DURATION=10s, PORT=6390
#   RESOURCE=bench.final scripts/bench-redis.sh   # grants that hold nothing (the lean `rate` step)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-6390}
dur=${DURATION:-10s}
out=${OUT:-target/bench-redis}
prefix=bench:
# shellcheck source=scripts/lib/redis-nodes.sh
. scripts/lib/redis-nodes.sh

resource=${RESOURCE:-bench.rate}
echo "== redis-benchmark: FCALL of the Redis store's Acquire step for $resource, 64 connections, no pipelining"
{ echo '#!lua name=quotad_bench'; cargo run -q --release -p quotad-server --example redis_script quotad_bench; } >"$out/library.lua"
redis-cli -p "$port" -x FUNCTION LOAD REPLACE <"$out/library.lua" >/dev/null
r0=$(cpu "$redis")
if [ "$resource" = bench.final ]; then
  # KEYS: resource hash, the level. ARGV: rate, now (empty: Redis TIME), shard prefix, permits, replay (none),
  # 1 level: its rate.
  redis-benchmark -p "$port" -c 64 -P 1 -n 300000 -q \
    FCALL quotad_bench 2 'b{q1}R4:rate' 'b{q1}L4:rate' \
    rate '' 'b{q1}' 1 '' 1 '1000000000,1000000000,1000000000' | tr '\r' '\n' | tail -1 \
    | tee "$out/redis-benchmark.txt"
else
  # KEYS: resource hash, breaker (none: the resource hash), lease (random), request id (none), the level.
  # ARGV: acq, now (empty: Redis TIME), shard prefix, permits, ttl, lease hex, resource, rule, default and max
  # ttl, client id, owner, fingerprint, window, adaptive, breaker, concurrency retry, held, bypass, final,
  # 1 level: partition, rate, max in flight, max debt, shadow, reserved tokens and slots. The rate and burst
  # are those of examples/bench.toml's bench.rate.
  redis-benchmark -p "$port" -c 64 -P 1 -n 300000 -r 100000000 -q \
    FCALL quotad_bench 5 'b{q1}R4:rate' 'b{q1}R4:rate' 'b{q1}l:__rand_int__' 'b{q1}R4:rate' 'b{q1}L4:rate' \
    acq '' 'b{q1}' 1 1000000000 '__rand_int__' rate rate 1000000000 3600000000000 '' '' '' 300000000000 '' '' \
    100000000 '' '' '' 1 '' '1000000000,1000000000,1000000000' '' 1000000000 '' '' '' \
    | tr '\r' '\n' | tail -1 | tee "$out/redis-benchmark.txt"
fi
echo "   redis CPU: $(awk -v a="$r0" -v b="$(cpu "$redis")" 'BEGIN { printf "%.2f s", b - a }')"
redis-cli -p "$port" FLUSHALL >/dev/null


bench() { # port extra-args... -> JSON summary
  target/release/quotad-bench --target "http://127.0.0.1:$1" --resource "$resource" --duration "$dur" \
    --no-progress --json "${@:2}"
}

rate_of() { python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["calls_per_second"]))' "$1"; }
p99_of() { python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["latency"]["p99_us"]))' "$1"; }

echo "== one node, 64 in flight"
n1=$(node 50071); pids+=("$n1"); wait_port 50071
r0=$(cpu "$redis"); q0=$(cpu "$n1")
bench 50071 --concurrency 64 >"$out/one.json"
echo "   $(rate_of "$out/one.json") calls/s, p99 $(p99_of "$out/one.json") µs;" \
  "CPU: quotad $(awk -v a="$q0" -v b="$(cpu "$n1")" 'BEGIN { printf "%.2f", b - a }') s," \
  "redis $(awk -v a="$r0" -v b="$(cpu "$redis")" 'BEGIN { printf "%.2f", b - a }') s"

half=$(( $(rate_of "$out/one.json") / 2 ))
echo "== one node, open loop at $half calls/s (half of the above)"
# Step 2 left ~100,000 one-second leases: let them expire and be swept first, so this is the steady state,
# not a backlog of reclaims.
live='local n = 0 for s = 0, 63 do n = n + redis.call("ZCARD", "bench:{q" .. s .. "}x") end return n'
until [ "$(redis-cli -p "$port" EVAL "$live" 0)" -lt 100 ]; do
  sleep 0.5
done
bench 50071 --rate "$half" >"$out/half.json"
echo "   p99 $(p99_of "$out/half.json") µs, $(rate_of "$out/half.json") calls/s served"

echo "== three nodes, 64 in flight each"
n2=$(node 50072); pids+=("$n2"); wait_port 50072
n3=$(node 50073); pids+=("$n3"); wait_port 50073
r0=$(cpu "$redis"); a0=$(cpu "$n1"); b0=$(cpu "$n2"); c0=$(cpu "$n3")
bench 50071 --concurrency 64 --threads 1 >"$out/three-1.json" &
j1=$!
bench 50072 --concurrency 64 --threads 1 >"$out/three-2.json" &
j2=$!
bench 50073 --concurrency 64 --threads 1 >"$out/three-3.json" &
j3=$!
wait "$j1" "$j2" "$j3"
total=$(( $(rate_of "$out/three-1.json") + $(rate_of "$out/three-2.json") + $(rate_of "$out/three-3.json") ))
echo "   $total calls/s in all ($(rate_of "$out/three-1.json") + $(rate_of "$out/three-2.json") + $(rate_of "$out/three-3.json"));" \
  "CPU: quotad $(awk -v a="$a0" -v b="$(cpu "$n1")" 'BEGIN { printf "%.2f", b - a }')," \
  "$(awk -v a="$b0" -v b="$(cpu "$n2")" 'BEGIN { printf "%.2f", b - a }')," \
  "$(awk -v a="$c0" -v b="$(cpu "$n3")" 'BEGIN { printf "%.2f", b - a }') s," \
  "redis $(awk -v a="$r0" -v b="$(cpu "$redis")" 'BEGIN { printf "%.2f", b - a }') s"
echo "== Redis commandstats (script calls)"
redis-cli -p "$port" INFO commandstats | grep -E 'cmdstat_(fcall|zadd):' || true
