#!/usr/bin/env bash
# The long runs that do not fit scripts/test.sh's 20 minutes (run by `scripts/test.sh --long`):
# the reference-model property test with 5,000 cases, every fuzz target for 10 minutes, and a soak
# of the end-to-end revocation tests repeated 10 times.
set -euo pipefail
cd "$(dirname "$0")/.."
export REQUIRE_FUSE=1

echo "== property test: 5,000 random interleavings"
PROPTEST_CASES=5000 cargo test --release -p grantfs-control --test model

if [ -x scripts/fuzz.sh ]; then
  echo "== fuzzing: 600 s per target"
  scripts/fuzz.sh "${FUZZ_SECONDS:-600}"
fi

echo "== soak: the revocation e2e tests, 10 rounds"
cargo build --workspace --bins --quiet
for round in $(seq 1 "${SOAK_ROUNDS:-10}"); do
  echo "-- round $round"
  cargo test --test e2e revoke -- --test-threads=4
done
