#!/usr/bin/env bash
# Server-level figures for BENCHMARKS.md, on a 2-core machine: quotad pinned to core 0, quotad-bench to
# core 1 (taskset), release builds, examples/bench.toml. Prints one JSON summary per run, then a digest.
#   scripts/bench-server.sh            # everything (about 3 minutes)
#   RUNS=5 DURATION=10s scripts/bench-server.sh
# Not part of CI: figures on shared machines drift, so compare ratios measured in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
duration=${DURATION:-5s}
out=${OUT:-target/bench-server}
mkdir -p "$out"
cargo build --release -p quotad-server -p quotad-tools --bins >/dev/null
server=target/release/quotad
bench=target/release/quotad-bench

start_server() {
  "$@" taskset -c 0 "$server" --config examples/bench.toml >"$out/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    "$bench" --call health --requests 1 --warmup 0s --no-progress --json >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start"; cat "$out/server.log"; exit 1
}
stop_server() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
run() { # name, bench args...
  local name=$1; shift
  taskset -c 1 "$bench" --threads 1 --duration "$duration" --warmup 1s --json "$@" >"$out/$name.json"
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], round(d["calls_per_second"]), "calls/s  p50", d["latency"]["p50_us"], "p99", d["latency"]["p99_us"], "us", d["decisions"], d["errors"] or "")' "$out/$name.json" "$name"
}

echo "== Acquire vs Health/Check, closed loop, 64 in flight over 4 connections, metrics on"
start_server env
for i in $(seq 1 "$runs"); do
  run "health-$i" --call health --concurrency 64 --connections 4
  run "acquire-$i" --call acquire --resource bench.rate --concurrency 64 --connections 4
  run "acquire-release-$i" --call acquire-release --resource bench.rate --concurrency 64 --connections 4
done
sat=$(python3 -c 'import json,statistics,sys; print(statistics.median(json.load(open(f"{sys.argv[1]}/acquire-{i}.json"))["calls_per_second"] for i in range(1,int(sys.argv[2])+1)))' "$out" "$runs")
half=$(python3 -c "print(round($sat / 2))")
quarter=$(python3 -c "print(round($sat / 4))")
echo "== Scheduling stalls of each core on this machine (scripts/cpu-stalls.py, 5 s each)"
taskset -c 0 scripts/cpu-stalls.py | tee "$out/stalls-core0.json"
taskset -c 1 scripts/cpu-stalls.py | tee "$out/stalls-core1.json"
echo "== Open loop at half ($half calls/s) and a quarter ($quarter calls/s) of the saturated Acquire rate;"
echo "   Health/Check at the same rates is the baseline (the bare gRPC round trip on this machine)"
for i in $(seq 1 "$runs"); do
  run "open-$i" --call acquire --resource bench.rate --rate "$half" --connections 4
  run "open-health-$i" --call health --rate "$half" --connections 4
  run "open-quarter-$i" --call acquire --resource bench.rate --rate "$quarter" --connections 4
  run "open-quarter-health-$i" --call health --rate "$quarter" --connections 4
done
stop_server

echo "== 1M tenants (bench.tenants) on a fresh server: memory with a million live keys"
start_server env
rss0_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
taskset -c 1 "$bench" --threads 1 --call acquire-release --resource bench.tenants --keys 1000000 \
  --requests 1000000 --warmup 0s --concurrency 64 --json >"$out/keys.json"
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
live=$(python3 -c "import urllib.request; t=urllib.request.urlopen('http://127.0.0.1:9464/metrics').read().decode(); print([l.split()[1] for l in t.splitlines() if l.startswith('quotad_live_keys ')][0])")
echo "live keys $live, quotad RSS $((rss0_kb / 1024)) MB at start, $((rss_kb / 1024)) MB after"
echo "{\"live_keys\": $live, \"rss_start_kb\": $rss0_kb, \"rss_kb\": $rss_kb}" >"$out/keys-rss.json"
stop_server

echo "== Acquire with metrics on vs off: a fresh server for each run, alternating"
for i in $(seq 1 "$runs"); do
  start_server env
  run "acquire-metrics-$i" --call acquire --resource bench.rate --concurrency 64 --connections 4
  stop_server
  start_server env QUOTAD_METRICS__ENABLED=false
  run "acquire-nometrics-$i" --call acquire --resource bench.rate --concurrency 64 --connections 4
  stop_server
done

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def med(name, key=lambda d: d["calls_per_second"]):
    return statistics.median(key(json.load(open(f"{out}/{name}-{i}.json"))) for i in range(1, runs + 1))
h, a, ar = med("health"), med("acquire"), med("acquire-release")
m, n = med("acquire-metrics"), med("acquire-nometrics")
p99 = med("open", lambda d: d["latency"]["p99_us"])
p99q = med("open-quarter", lambda d: d["latency"]["p99_us"])
p99h = med("open-health", lambda d: d["latency"]["p99_us"])
p99qh = med("open-quarter-health", lambda d: d["latency"]["p99_us"])
print(f"median of {runs} runs:")
print(f"  Health/Check      {h:.0f} calls/s")
print(f"  Acquire           {a:.0f} calls/s   ratio to Health/Check {a / h:.3f}")
print(f"  Acquire+Release   {ar:.0f} pairs/s")
print(f"  Acquire, fresh server, metrics on {m:.0f} / off {n:.0f} calls/s: on/off {m / n:.3f}")
print(f"  open-loop p99 at half saturation: Acquire {p99:.0f} us, Health/Check {p99h:.0f} us")
print(f"  open-loop p99 at a quarter:       Acquire {p99q:.0f} us, Health/Check {p99qh:.0f} us")
PY
