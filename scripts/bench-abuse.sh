#!/usr/bin/env bash
# A benchmark, not a test: does one abusive client hurt another client? quotad (release build) is pinned to
# core 0 and a well-behaved client (quotad-bench, open loop, RATE Acquire+Release calls/s) to core 1; its p99
# is measured quiet, then while scripts/abuse.py (at nice 19 on core ABUSE_CORE, default 1) tries to hold
# 1,000 streams open, resets streams in a loop, floods PINGs and keeps 200 idle connections, all from
# 127.0.0.2. On this 2-core machine the abuser's own work has to run on one of the two cores. On core 1 (the
# default) it shares the measured client's core at nice 19, as a remote abuser would cost the server only
# its traffic. On core 0 it shares the server's core: nice 19 yields the CPU, but the kernel's loopback
# processing of its packets (softirq) runs there at full priority, which no remote abuser could do.
# The server's peak RSS is sampled throughout. Prints each run; RUNS alternates quiet/abuse.
#
#   RUNS=3 RATE=2000 SECONDS_EACH=10 ABUSE_CORE=1 scripts/bench-abuse.sh
#
# Loopback only; every step is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
rate=${RATE:-2000}
secs=${SECONDS_EACH:-10}
abuse_core=${ABUSE_CORE:-1}
python=${PYTHON:-.venv/bin/python}
"$python" -c 'import h2' 2>/dev/null || "$python" -m pip install --quiet h2==4.1.0
cargo build --release -q -p quotad-server -p quotad-tools --bins
bin=target/release/quotad
bench=target/release/quotad-bench
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
config=$(mktemp)
cat >"$config" <<EOF
[server]
listen = "127.0.0.1:$port"
[metrics]
enabled = false
[[resources]]
name = "bench"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }
EOF
RUST_LOG=warn taskset -c 0 "$bin" --config "$config" >/dev/null 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; rm -f "$config"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  "$python" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $port)))" && break
  sleep 0.1
done
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }

measure() { # $1: quiet | abuse
  local peak_file abuse_pid="" sampler out
  peak_file=$(mktemp)
  ( peak=0; while kill -0 "$pid" 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" >"$peak_file"; sleep 0.2; done ) &
  sampler=$!
  if [ "$1" = abuse ]; then
    taskset -c "$abuse_core" nice -n 19 timeout $((secs + 60)) "$python" scripts/abuse.py --port "$port" --seconds $((secs + 2)) \
      >"$peak_file.abuse" &
    abuse_pid=$!
    sleep 1
  fi
  out=$(taskset -c 1 timeout $((secs + 60)) "$bench" --target "http://127.0.0.1:$port" --call acquire-release \
    --resource bench --rate "$rate" --duration "${secs}s" --warmup 1s --connections 1 --threads 1 --json --no-progress)
  [ -n "$abuse_pid" ] && wait "$abuse_pid" || true
  kill "$sampler" 2>/dev/null || true
  local p99 errors
  p99=$("$python" -c 'import json,sys; print(json.load(sys.stdin)["latency"]["p99_us"])' <<<"$out")
  errors=$("$python" -c 'import json,sys; d=json.load(sys.stdin); print(sum(d["errors"].values()) if isinstance(d["errors"], dict) else d["errors"])' <<<"$out")
  echo "$1 p99_us=$p99 errors=$errors peak_rss_kb=$(cat "$peak_file" 2>/dev/null || rss) abuser=$(cat "$peak_file.abuse" 2>/dev/null || echo -)"
  rm -f "$peak_file" "$peak_file.abuse"
}

echo "== quotad $(git rev-parse --short HEAD) on core 0; client $rate calls/s open loop on core 1; abuser on core $abuse_core; ${secs}s each"
echo "start rss_kb=$(rss)"
for i in $(seq 1 "$runs"); do
  measure quiet
  measure abuse
done
echo "end rss_kb=$(rss)"
