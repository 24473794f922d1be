#!/usr/bin/env bash
# The Python package (python/, README "Python"): run by .ci/run after the binaries are built.
#   1. the committed stubs match proto/ (python/stubs.py --check, grpcio-tools 1.75.1 in a venv of its own);
#   2. `pip install ./python` into a fresh venv (latest grpcio/protobuf), plus python/requirements-dev.txt;
#   3. mypy --strict on the package, and vermin holding it to Python 3.9;
#   4. pytest against real quotad processes (QUOTAD_BIN, default target/debug/quotad);
#   5. the examples/python package examples against servers on examples/bedrock.toml and
#      examples/disaster-recovery.toml.
# Needs python3 with venv. About a minute once the venvs exist.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${QUOTAD_BIN:-target/debug/quotad}
py=${PYTHON3:-python3}

echo "== python stubs match proto/"
[ -x .venv-stubs/bin/python ] || "$py" -m venv .venv-stubs
.venv-stubs/bin/pip install --quiet --disable-pip-version-check grpcio-tools==1.75.1
.venv-stubs/bin/python python/stubs.py --check

echo "== pip install ./python (fresh venv)"
rm -rf .venv-python
"$py" -m venv .venv-python
.venv-python/bin/pip install --quiet --disable-pip-version-check ./python -r python/requirements-dev.txt
.venv-python/bin/pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(quotad|grpcio|protobuf) '

echo "== mypy --strict, vermin (Python 3.9+)"
(cd python && ../.venv-python/bin/mypy)
.venv-python/bin/vermin -t=3.9- --no-tips --violations --eval-annotations python/src/quotad/*.py

echo "== pytest against a real quotad ($bin)"
# From python/: the package's source is under src/, so `import quotad` is the installed package.
(cd python && QUOTAD_BIN="$OLDPWD/$bin" ../.venv-python/bin/python -m pytest -q -p no:cacheprovider)

echo "== examples/python with the package"
port() { .venv-python/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
serve() { # config port
  env -u QUOTAD_BIN QUOTAD_SERVER__LISTEN="127.0.0.1:$2" QUOTAD_METRICS__ENABLED=false "$bin" --config "$1" >/dev/null 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do
    .venv-python/bin/python -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $2)))" && return
    sleep 0.1
  done
  echo "quotad on $1 did not start"; exit 1
}
b=$(port); serve examples/bedrock.toml "$b"
timeout 120 .venv-python/bin/python examples/python/bedrock_agent.py --target "127.0.0.1:$b"
d=$(port); serve examples/disaster-recovery.toml "$d"
timeout 120 .venv-python/bin/python examples/python/recovery_orchestrator.py --target "127.0.0.1:$d"
