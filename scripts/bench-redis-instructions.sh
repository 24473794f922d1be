#!/usr/bin/env bash
# Instructions per Acquire step inside Redis (BENCHMARKS.md "The Redis store's own cost"): a
# redis-server of its own under callgrind runs the Redis store's Acquire step with bench-redis.sh's reference
# command (redis-benchmark, 4 connections, random lease ids, the limits of examples/bench.toml's bench.rate),
# 2,000 calls of warm-up, then N counted. Instructions are repeatable whatever else the machine does, so two
# versions of the script can be compared where seconds on a shared VM cannot. About a minute per run.
#   scripts/bench-redis-instructions.sh                      # the repository's script (its protocol filled in)
#   LUA=/tmp/variant.lua TTL=3600000000000 N=6000 scripts/bench-redis-instructions.sh   # a script file as it is
# TTL: the leases' (ns). RATE: the level's limit,period(ns),burst; RATE=1,1000000000,1 denies all but the
# first of each second (the cost of a denial). redis-benchmark gives each __rand_int__ its own number, so the
# lease key and the id inside it differ: the expiry set still trims, but finds no lease to reclaim.
#   RATE=1,1000000000,1 scripts/bench-redis-instructions.sh
# STEP: what each call runs. `acq` (default) the Acquire step above; `rate` the Acquire step of a grant that
# holds nothing (the same level, `settlement = false`: no lease record); `hit` the step of Envoy's
# ShouldRateLimit (one descriptor's fixed-window counter, never over); `gcra` a minimal exact GCRA function
# (TIME, GET, the arithmetic, SET PX), the floor any rate decision in Redis costs.
# `rate-id` the same with a fresh request_id each call (its replay record written).
#   STEP=rate scripts/bench-redis-instructions.sh
#   STEP=hit scripts/bench-redis-instructions.sh
#   STEP=gcra scripts/bench-redis-instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind"; exit 1; }
lua=${LUA:-}
port=${PORT:-6395}
n=${N:-6000}
ttl=${TTL:-1000000000}
rate=${RATE:-1000000000,1000000000,1000000000}
out=$(mktemp -d)
trap 'kill "$redis" 2>/dev/null; wait 2>/dev/null; rm -rf "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" redis-server --port "$port" --bind 127.0.0.1 \
  --save "" --appendonly no >"$out/redis.log" 2>&1 &
redis=$!
until redis-cli -p "$port" PING >/dev/null 2>&1; do sleep 0.5; done
step=${STEP:-acq}
if [ "$step" = gcra ]; then
  cat >"$out/lib.lua" <<'LUA'
#!lua name=quotad_bench
-- A minimal exact GCRA: the key holds the theoretical arrival time (ns); ARGV: interval (ns), burst.
redis.register_function('quotad_bench', function(keys, args)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000000 + tonumber(t[2]) * 1000
  local interval, burst = tonumber(args[1]), tonumber(args[2])
  local tat = tonumber(redis.call('GET', keys[1]) or '0')
  if tat < now then tat = now end
  if tat + interval - now > burst * interval then return 0 end
  tat = tat + interval
  redis.call('SET', keys[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000000) + 1)
  return 1
end)
LUA
elif [ -n "$lua" ]; then
  { echo '#!lua name=quotad_bench'; sed 's/__QUOTAD_FUNCTION__/quotad_bench/' "$lua"; } >"$out/lib.lua"
else
  { echo '#!lua name=quotad_bench'; cargo run -q --release -p quotad-server --example redis_script quotad_bench; } >"$out/lib.lua"
fi
redis-cli -p "$port" -x FUNCTION LOAD REPLACE <"$out/lib.lua" >/dev/null
run() {
  case "$step" in
    gcra) redis-benchmark -p "$port" -c 4 -P 1 -n "$1" -q FCALL quotad_bench 1 'b{q1}G' 1 1000000000 \
      >/dev/null 2>&1; return ;;
    rate) redis-benchmark -p "$port" -c 4 -P 1 -n "$1" -q FCALL quotad_bench 2 'b{q1}R4:rate' \
      'b{q1}L4:rate' rate '' 'b{q1}' 1 '' 1 "$rate" >/dev/null 2>&1; return ;;
    rate-id) redis-benchmark -p "$port" -c 4 -P 1 -n "$1" -r 100000000 -q FCALL quotad_bench 3 'b{q1}R4:rate' \
      'b{q1}L4:rate' 'b{q1}I__rand_int__' rate '' 'b{q1}' 1 "7|00000000000000aa|$ttl|300000000000" 1 "$rate" \
      >/dev/null 2>&1; return ;;
    hit) redis-benchmark -p "$port" -c 4 -P 1 -n "$1" -q FCALL quotad_bench 1 'b{q1}L6:bench' hit '' 'b{q1}' 1 \
      1 4000000000,1000000000,4000000000,fixed_window 1 enforced 0 >/dev/null 2>&1; return ;;
  esac
  redis-benchmark -p "$port" -c 4 -P 1 -n "$1" -r 100000000 -q \
    FCALL quotad_bench 5 'b{q1}R4:rate' 'b{q1}R4:rate' 'b{q1}l:__rand_int__' 'b{q1}R4:rate' 'b{q1}L4:rate' \
    acq '' 'b{q1}' 1 "$ttl" '__rand_int__' rate rate 1000000000 3600000000000 '' '' '' 300000000000 '' '' \
    100000000 '' '' '' 1 '' "$rate" '' 1000000000 '' '' '' >/dev/null 2>&1
}
run 2000
callgrind_control -z "$redis" >/dev/null 2>&1
run "$n"
callgrind_control -d "$redis" >/dev/null 2>&1
sleep 1
f=$(ls -t "$out"/cg.out* | head -1)
total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "${lua:-the repository script} ($step): $((total / n)) instructions per FCALL ($n calls)"
