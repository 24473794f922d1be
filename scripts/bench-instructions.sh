#!/usr/bin/env bash
# Server-side cost per call in CPU instructions, counted by valgrind (callgrind): repeatable on a noisy
# shared machine where throughput drifts by 20% between runs. quotad runs under valgrind and h2load sends N
# and then 2N calls of one kind to fresh servers; the difference, divided by N, is the marginal cost of a
# call (startup, shutdown and the sweeper's fixed ticks cancel out). Acquire (bench.rate, every call granted;
# its expiry sweeping included) against Health/Check on the same binary gives the ratio.
# Needs valgrind and h2load (apt-get install valgrind nghttp2-client). About 2 minutes.
#   scripts/bench-instructions.sh            # N=20000, target/release/quotad
#   QUOTAD_METRICS__ENABLED=false scripts/bench-instructions.sh   # the same with metrics off
#   KINDS="health acquire release" scripts/bench-instructions.sh   # Release too (of a lease never issued:
#                                                                    the path's cost, the engine's least)
#   KINDS="acquire rls" scripts/bench-instructions.sh  # Envoy's ShouldRateLimit, one descriptor
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-20000}
server=${SERVER:-target/release/quotad}
out=${OUT:-target/bench-instructions}
mkdir -p "$out"
[ -n "${SERVER:-}" ] || cargo build --release -p quotad-server -p quotad-tools --bins >/dev/null
printf '\x00\x00\x00\x00\x0e\x0a\x0abench.rate\x18\x01' >"$out/acquire.bin"
printf '\x00\x00\x00\x00\x00' >"$out/health.bin"
# ReleaseRequest{lease_id: "0000000000000001"} (field 1): a well-formed id no server issued.
printf '\x00\x00\x00\x00\x12\x0a\x100000000000000001' >"$out/release.bin"
# RateLimitRequest{domain: "bench", descriptors: [{entries: [{key: "client", value: "a"}]}]} (KINDS=rls).
printf '\x00\x00\x00\x00\x16\x0a\x05bench\x12\x0d\x0a\x0b\x0a\x06client\x12\x01a' >"$out/rls.bin"

count() { # kind calls -> instructions
  QUOTAD_SERVER__DRAIN_DELAY=0s valgrind --tool=callgrind --callgrind-out-file="$out/$1-$2.out" \
    "$server" --config examples/bench.toml >"$out/$1-$2.log" 2>&1 &
  local pid=$!
  # Ready when the gRPC port accepts (works with metrics off too).
  for _ in $(seq 1 300); do
    python3 -c 'import socket; socket.create_connection(("127.0.0.1", 50051), 1).close()' 2>/dev/null && break
    sleep 0.2
  done
  local path=/grpc.health.v1.Health/Check
  [ "$1" = acquire ] && path=/quotad.v1.QuotaService/Acquire
  [ "$1" = release ] && path=/quotad.v1.QuotaService/Release
  [ "$1" = rls ] && path=/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit
  h2load -n "$2" -c 4 -m 16 -t 1 -H 'content-type: application/grpc' -H 'te: trailers' \
    -d "$out/$1.bin" "http://127.0.0.1:50051$path" >"$out/$1-$2.h2load"
  grep -q " $2 succeeded" "$out/$1-$2.h2load" || { echo "h2load: not every call succeeded"; exit 1; }
  kill -TERM "$pid"
  wait "$pid" || true
  # All the server's instructions, and those inside hyper's per-stream future (decode, handler, encode: the
  # part that does not depend on how the connection's reads and writes happened to batch, which varies
  # with timing from run to run).
  local stream
  stream=$(callgrind_annotate --inclusive=yes "$out/$1-$2.out" 2>/dev/null |
    grep -m1 'proto/h2/server.rs:<hyper::proto::h2::server::H2Stream' | awk '{gsub(",", "", $1); print $1}')
  echo "$(awk '/refs:/ {gsub(",", "", $4); print $4}' "$out/$1-$2.log") $stream"
}
declare -A per stream
for kind in ${KINDS:-health acquire}; do
  read -r one one_stream <<<"$(count "$kind" "$n")"
  read -r two two_stream <<<"$(count "$kind" $((2 * n)))"
  per[$kind]=$(( (two - one) / n ))
  stream[$kind]=$(( (two_stream - one_stream) / n ))
  echo "$kind: ${per[$kind]} instructions per call ($one for $n calls, $two for $((2 * n))), ${stream[$kind]} of them in the call's own stream"
done
[ -n "${per[health]:-}" ] && [ -n "${per[acquire]:-}" ] || exit 0
python3 -c "import sys; h, a, hs, s = map(int, sys.argv[1:]); print(f'an Acquire costs {a / h:.3f} Health/Checks: server-bound throughput ratio Acquire/Health {h / a:.3f}; per stream {s - hs} more instructions ({hs} vs {s})')" "${per[health]}" "${per[acquire]}" "${stream[health]}" "${stream[acquire]}"
