#!/usr/bin/env bash
# Everything CI runs: installs what is missing, checks formatting and clippy, runs every test
# (unit, router, real server processes, real FUSE mounts) and pjdfstest against a live mount.
# Usage: scripts/test.sh [--long]   (--long adds the soak and fuzzing runs; see README)
set -euo pipefail
cd "$(dirname "$0")/.."
long=0
[ "${1:-}" = "--long" ] && long=1

scripts/install-deps.sh
export REQUIRE_FUSE=1
export RUST_BACKTRACE=1

log=$(mktemp /tmp/grantfs-test.XXXXXX)
trap 'rm -f "$log"' EXIT

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --bins --quiet
echo "== cargo test"
# Mount tests are I/O bound and the machine has 2 cores: a few threads keep them fast.
cargo test --workspace -- --test-threads=4 2>&1 | tee "$log"
echo "== pjdfstest against a live mount"
scripts/pjdfstest.sh 2>&1 | tee -a "$log"
echo "== fuzzing: a short run of every target (scripts/fuzz.sh; the long run is scripts/long.sh)"
scripts/fuzz.sh "${FUZZ_SECONDS:-10}" 2>&1 | tail -n 20
if [ "$long" = 1 ]; then
  echo "== long runs"
  scripts/long.sh 2>&1 | tee -a "$log"
fi

passed=$(grep -oE 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
pjd=$(grep -oE '^pjdfstest: [0-9]+ passed' "$log" | awk '{print $2}' | tail -1)
echo "cargo tests and pjdfstest cases:"
echo "test.sh: $((passed + ${pjd:-0})) passed, 0 failed"
