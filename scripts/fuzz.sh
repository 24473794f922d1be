#!/usr/bin/env bash
# Runs each cargo fuzz target for FUZZ_SECONDS (default 60) with libFuzzer and AddressSanitizer. Not in CI
# (a minute per target is a search, not a check). The machine's stable toolchain runs it: RUSTC_BOOTSTRAP=1
# lets it take the sanitizer flags cargo fuzz passes. Crashes land in server/fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh                 # all targets, a minute each
#   FUZZ_SECONDS=600 scripts/fuzz.sh request
set -euo pipefail
cd "$(dirname "$0")/../server"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request config lease_id cert_name)
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 2>&1 | tail -n 25
done
