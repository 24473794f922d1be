#!/usr/bin/env bash
# Capacity leasing (local_share) against one step per decision (BENCHMARKS.md, "Slices of a hot bucket").
# One redis-server of its own and three quotad nodes on it (examples/bench.toml), quotad-bench against one
# node (step 0) and then against each at once, 64 in flight per node:
#   1. bench.final: a grant that holds nothing, one Redis step per decision (the single-step path);
#   2. bench.hot: the same grants from slices (local_share = { max_fraction = 0.05, ttl = "200ms" }, 100,000/s),
#      then with a request_id on every call (each remembered by the node that granted it);
#   3. bench.hot.over: 5,000/s with more demand than that, uneven load (64, 16 and 4 in flight): each node's
#      share, and the fleet's admitted count against burst + rate x elapsed.
# Each step prints decisions per second, Redis calls (INFO commandstats) per decision and the CPU seconds
# every process used (from /proc; the generators' from bash's `time`). Needs redis-server and redis-cli.
# About two minutes.
#   scripts/bench-share.sh            # DURATION=10s, PORT=6391
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-6391}
dur=${DURATION:-10s}
out=${OUT:-target/bench-share}
prefix=share:
# shellcheck source=scripts/lib/redis-nodes.sh
. scripts/lib/redis-nodes.sh

fcalls() { redis-cli -p "$port" INFO commandstats | tr -d '\r' | awk -F'[=,]' '/^cmdstat_fcall:/ { print $2 }'; }

n1=$(node 50081); pids+=("$n1")
n2=$(node 50082); pids+=("$n2")
n3=$(node 50083); pids+=("$n3")
wait_port 50081; wait_port 50082; wait_port 50083

run() { # name resource concurrency1 concurrency2 concurrency3 [quotad-bench args...]
  local name=$1 resource=$2
  local f0 r0 a0 b0 c0 j=()
  f0=$(fcalls); r0=$(cpu "$redis"); a0=$(cpu "$n1"); b0=$(cpu "$n2"); c0=$(cpu "$n3")
  local i=1
  rm -f "$out/$name"-*.json "$out/$name"-*.time
  for c in "$3" "$4" "$5"; do
    # 0: no load on that node. bash's `time` gives each generator's own user + system CPU seconds.
    if [ "$c" != 0 ]; then
      ( TIMEFORMAT='%U %S'; time target/release/quotad-bench --target "http://127.0.0.1:$((50080 + i))" \
          --resource "$resource" --duration "$dur" --concurrency "$c" --threads 1 --no-progress --json \
          "${@:6}" >"$out/$name-$i.json" ) 2>"$out/$name-$i.time" &
      j+=($!)
    fi
    i=$((i + 1))
  done
  wait "${j[@]}"
  local made=$(( $(fcalls) - f0 ))
  python3 - "$out/$name" "$made" "$resource" <<'PY'
import json, sys
base, made, resource = sys.argv[1], int(sys.argv[2]), sys.argv[3]
import os
runs = [json.load(open(f"{base}-{i}.json")) for i in (1, 2, 3) if os.path.exists(f"{base}-{i}.json")]
gen = [sum(map(float, open(f"{base}-{i}.time").read().split()[-2:])) for i in (1, 2, 3)
       if os.path.exists(f"{base}-{i}.time")]
calls = sum(r["calls"] for r in runs)
granted = [r["decisions"].get("granted", 0) for r in runs]
seconds = max(r["seconds"] for r in runs)
rates = " + ".join("{:,.0f}".format(r["calls_per_second"]) for r in runs)
by_node = " / ".join("{:,}".format(g) for g in granted)
total = sum(r["calls_per_second"] for r in runs)
print(f"   {total:,.0f} decisions/s in all ({rates}); granted {sum(granted):,} ({by_node}) of {calls:,}")
print(f"   Redis calls: {made:,} for {calls:,} decisions = {made / calls:.4f} per decision")
print("   CPU: quotad-bench " + ", ".join(f"{g:.2f}" for g in gen) + " s")
PY
  echo "   CPU: quotad $(awk -v a="$a0" -v b="$(cpu "$n1")" 'BEGIN { printf "%.2f", b - a }')," \
    "$(awk -v a="$b0" -v b="$(cpu "$n2")" 'BEGIN { printf "%.2f", b - a }')," \
    "$(awk -v a="$c0" -v b="$(cpu "$n3")" 'BEGIN { printf "%.2f", b - a }') s," \
    "redis $(awk -v a="$r0" -v b="$(cpu "$redis")" 'BEGIN { printf "%.2f", b - a }') s"
}

echo "== 0. one node, bench.final (one Redis step per decision), 64 in flight"
run one-node bench.final 64 0 0
echo "== 0. one node, bench.hot (slices: local_share), 64 in flight"
run one-node-hot bench.hot 64 0 0
echo "== 1. three nodes, bench.final (one Redis step per decision), 64 in flight each"
run one bench.final 64 64 64
echo "== 2. three nodes, bench.hot (slices: local_share), 64 in flight each"
run hot bench.hot 64 64 64
echo "== 2b. three nodes, bench.hot with a request_id on every call (as the Rust and Python clients send)"
run hot-ids bench.hot 64 64 64 --request-ids
echo "== 3. three nodes, bench.hot.over (5,000/s, burst 5,000), uneven: 64, 16 and 4 in flight"
# No warm-up: the bucket's burst is part of what the measured window may admit.
run over bench.hot.over 64 16 4 --warmup 0s
python3 - "$out/over" <<'PY'
import json, sys
runs = [json.load(open(f"{sys.argv[1]}-{i}.json")) for i in (1, 2, 3)]
granted = sum(r["decisions"].get("granted", 0) for r in runs)
seconds = max(r["seconds"] for r in runs)
# The runs start within a few ms of each other; the bound counts from the first call to the last answer.
bound = 5000 + 5000 * seconds
demand = [r["calls"] for r in runs]
shares = " / ".join("%.2f" % (r["decisions"].get("granted", 0) / max(granted, 1)) for r in runs)
demand_shares = " / ".join("%.2f" % (d / sum(demand)) for d in demand)
print(f"   fleet admitted {granted:,} in {seconds:.2f} s; bound burst + rate x elapsed = {bound:,.0f} "
      f"({granted / bound:.3f} of it); demand by node {demand} ({demand_shares}), admitted by node {shares}")
PY
for p in 50081 50082 50083; do
  printf '   node %s: ' "$p"
  python3 - "$p" <<'PY'
import sys, urllib.request
m = urllib.request.urlopen(f"http://127.0.0.1:{int(sys.argv[1]) + 1000}/metrics").read().decode()
v = {l.split(" ")[0]: l.split(" ")[1] for l in m.splitlines() if l.startswith("quotad_share_") and " " in l}
print(", ".join(f"{k.removeprefix('quotad_share_')} {x}" for k, x in v.items() if "{" not in k))
PY
done
