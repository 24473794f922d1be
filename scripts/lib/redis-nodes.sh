# Shared by the benchmarks that run quotad nodes on a Redis of their own (bench-redis.sh, bench-share.sh):
# source it after setting `port` (Redis's), `out` (a folder) and `prefix` (the nodes' key prefix). It builds
# the release binaries, starts redis-server (pid in `redis`, killed on exit with every pid in `pids`), and
# defines `cpu PID`, `node PORT` (a quotad on examples/bench.toml, metrics on PORT + 1000; prints its pid) and
# `wait_port PORT`.
mkdir -p "$out"
cargo build --release -p quotad-server -p quotad-tools --bins >/dev/null
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$out/redis.log" 2>&1 &
redis=$!
pids+=("$redis")
until redis-cli -p "$port" PING >/dev/null 2>&1; do sleep 0.1; done

cpu() { # pid -> CPU seconds used so far
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

node() { # port -> starts a quotad node on the Redis, prints its pid
  {
    printf 'store = "redis"\n[redis]\nurl = "redis://127.0.0.1:%s"\nprefix = "%s"\n' "$port" "$prefix"
    # (The config lands in another folder: its relative paths are made absolute.)
    sed -e "s/127.0.0.1:50051/127.0.0.1:$1/" -e "s/127.0.0.1:9464/127.0.0.1:$(($1 + 1000))/" \
      -e "s|\"bench-rls\"|\"$PWD/examples/bench-rls\"|" examples/bench.toml
  } >"$out/node-$1.toml"
  RUST_LOG=warn target/release/quotad --config "$out/node-$1.toml" >"$out/node-$1.log" 2>&1 &
  echo $!
}

wait_port() {
  for _ in $(seq 1 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1).close()" 2>/dev/null && return
    sleep 0.1
  done
  echo "node on $1 did not start"; exit 1
}
