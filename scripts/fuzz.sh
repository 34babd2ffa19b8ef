#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ (ticket, api_json, sse) for SECONDS each (default 20) and
# fails on the first crash, panic, timeout or out-of-memory. A crash leaves its input in
# fuzz/artifacts/<target>/; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>
#
# Usage: scripts/fuzz.sh [SECONDS]
#   short run (CI, scripts/test.sh):  scripts/fuzz.sh 20
#   long run (before a release):      scripts/fuzz.sh 600   (10 min per target)
#   one target:                       FUZZ_TARGETS=ticket scripts/fuzz.sh 600
#
# How it runs here (stable toolchain, no nightly needed):
# - cargo-fuzz needs nightly-only rustc flags (-Zsanitizer, -Cpasses=sancov); RUSTC_BOOTSTRAP=1
#   lets the stable compiler accept them.
# - --sanitizer none by default: the targets are safe Rust (no unsafe in grantfs), so
#   AddressSanitizer finds nothing extra and only slows the run and the build; panics, overflow
#   checks (debug assertions are on) and libFuzzer's -rss_limit_mb / -timeout still catch what
#   matters. FUZZ_SANITIZER=address also works here (stable + RUSTC_BOOTSTRAP=1).
# - The committed seeds in fuzz/corpus/<target>/ are read-only inputs; what the fuzzer learns
#   goes to a scratch corpus under the target dir, so a run never dirties the work tree.
#   `scripts/fuzz.sh --regen-seeds` rewrites the seeds (fuzz/examples/seeds.rs).
# - libFuzzer caps inputs at -max_len (4096 bytes here); larger inputs (1 MB bodies, 100k '[')
#   are covered by control/tests/hostile.rs instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--regen-seeds" ]; then
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/fuzz-seeds" \
    cargo run --quiet --manifest-path fuzz/Cargo.toml --example seeds
  exit 0
fi

secs="${1:-20}"
targets="${FUZZ_TARGETS:-ticket api_json sse}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

fuzz_flags=(--sanitizer "${FUZZ_SANITIZER:-none}" --target-dir "$target_dir")
echo "== cargo fuzz build (${targets})"
# shellcheck disable=SC2086
for t in $targets; do
  cargo fuzz build "${fuzz_flags[@]}" "$t"
done

for t in $targets; do
  scratch="$target_dir/corpus/$t"
  log="$target_dir/$t.log"
  mkdir -p "$scratch" "fuzz/artifacts/$t"
  echo "== fuzz $t for ${secs}s"
  if ! cargo fuzz run "${fuzz_flags[@]}" "$t" "$scratch" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz.sh: target $t failed; the input is in fuzz/artifacts/$t/ (full log: $log)" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log" |
    tr '\n' ' '
  echo
done
echo "fuzz.sh: ${targets} ran ${secs}s each without a crash"
