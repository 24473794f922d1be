#!/usr/bin/env bash
# Checks README.md's "minimal mTLS setup" as a new user would follow it, against a real quotad on loopback:
#   1. the README's openssl commands make a CA, a server and a worker certificate;
#   2. the README's config starts quotad with TLS, required client certificates and a plaintext health port;
#   3. the README's grpcurl calls work as written (ports substituted);
#   4. the Python worker and the Rust example worker work over mTLS, on the embedded default's resources;
#   5. a client without a certificate is refused.
# Needs: a built quotad (QUOTAD_BIN), python3 with examples/python/requirements.txt, grpcurl and openssl.
# Bounded: every step has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$(realpath "${QUOTAD_BIN:-target/debug/quotad}")
worker=$(realpath "${RUST_WORKER:-target/debug/examples/worker}")
python=${PYTHON:-python3}
free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    "$python" -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $1)))" && return 0
    sleep 0.1
  done
  echo "nothing listens on $1"; return 1
}
readme_block() { awk "/<!-- $1:begin -->/{on=1; next} /<!-- $1:end -->/{on=0} on && !/^\`\`\`/" README.md; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

echo "== README: the openssl commands"
certs=$(readme_block mtls-certs)
[ -n "$certs" ] || { echo "no mtls-certs block in README.md"; exit 1; }
(cd "$work" && printf '%s\n' "$certs" | timeout 60 bash -euo pipefail) 2>&1 | grep -v '^\.\|^-\|^+' || true
[ -s "$work/certs/worker.pem" ] || { echo "the README's commands made no worker certificate"; exit 1; }

echo "== README: the config, started as written (ports substituted)"
tls_port=$(free_port); health_port=$(free_port)
readme_block mtls-config | sed "s/50443/$tls_port/; s/50052/$health_port/" >"$work/quotad-mtls.toml"
(cd "$work" && exec "$bin" --config quotad-mtls.toml >"$work/readme.log" 2>&1) &
pids+=($!)
wait_port "$tls_port"

echo "== README: the grpcurl calls"
readme_block mtls-call | sed "s/50443/$tls_port/; s/50052/$health_port/" | (cd "$work" && timeout 60 bash -euo pipefail -x)

echo "== a client without a certificate is refused"
if (cd "$work" && timeout 20 grpcurl -cacert certs/ca.pem -d '{"resource": "example.api"}' "127.0.0.1:$tls_port" quotad.v1.QuotaService/Acquire) 2>/dev/null; then
  echo "served without a client certificate"; exit 1
fi

echo "== the Python and Rust workers over mTLS, on the embedded default config's resources"
port=$(free_port)
{
  "$bin" --print-default-config
  printf '\n[server.tls]\ncert = "%s"\nkey = "%s"\nclient_ca = "%s"\n' \
    "$work/certs/server.pem" "$work/certs/server.key" "$work/certs/ca.pem"
  printf '\n[[auth.identities]]\nname = "worker-1"\nroles = ["worker"]\ncertificate_names = ["worker-1.quotad.test"]\n'
} >"$work/default-mtls.toml"
QUOTAD_SERVER__LISTEN="127.0.0.1:$port" QUOTAD_METRICS__ENABLED=false "$bin" --config "$work/default-mtls.toml" \
  >"$work/default.log" 2>&1 &
pids+=($!)
wait_port "$port"
timeout 120 "$python" "$root/examples/python/worker.py" --target "127.0.0.1:$port" \
  --ca "$work/certs/ca.pem" --cert "$work/certs/worker.pem" --key "$work/certs/worker.key"
out=$(QUOTAD_CA="$work/certs/ca.pem" QUOTAD_CLIENT_CERT="$work/certs/worker.pem" QUOTAD_CLIENT_KEY="$work/certs/worker.key" \
  timeout 120 "$worker" "https://127.0.0.1:$port")
printf '%s\n' "$out"
grep -q "job 5: downstream answered 200" <<<"$out" || { echo "the Rust worker did not finish over mTLS"; exit 1; }
echo "mtls: 5 passed, 0 failed"
