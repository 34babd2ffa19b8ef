#!/usr/bin/env bash
# The control-plane and revocation benchmarks: one-shot tickets/s (against /healthz in the same
# run), revocation fan-out to 10,000 open event streams, revoke → EACCES on real FUSE mounts, the
# issue #5 load run (200 ticket clients, 20 busy mounts, revocations arriving; pass/fail), and the
# session gate's per-syscall check (criterion). Writes one JSON file per benchmark into $1
# (default target/bench-results/); scripts/bench.sh calls this and reports on the files.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${1:-$root/target/bench-results}
mkdir -p "$out"
out=$(cd "$out" && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

echo "== building (release)" >&2
cargo build --release --quiet -p grantfs-bench -p grantfs-control -p grantfs-agent
bench="$target/release/grantfs-bench"
ctl=(--control-bin "$target/release/grantfs-control")

echo "== tickets" >&2
"$bench" tickets "${ctl[@]}" --seconds "${BENCH_TICKETS_SECONDS:-10}" --concurrency 32 >"$out/tickets.json"
echo "== fanout" >&2
"$bench" fanout "${ctl[@]}" --streams "${BENCH_FANOUT_STREAMS:-10000}" >"$out/fanout.json"
echo "== revoke-latency" >&2
if [ -e /dev/fuse ]; then
  "$bench" revoke-latency "${ctl[@]}" --agent-bin "$target/release/grantfs-agent" \
    --n "${BENCH_REVOKE_N:-200}" --probe all >"$out/revoke-latency.json"
else
  echo "/dev/fuse is missing: skipping revoke-latency" >&2
  [ "${REQUIRE_FUSE:-0}" = 1 ] && exit 1
fi
echo "== load" >&2
load_failed=0
if [ -e /dev/fuse ]; then
  # Exits 1 when a check fails, after writing its JSON: keep going, fail at the end.
  "$bench" load "${ctl[@]}" --agent-bin "$target/release/grantfs-agent" \
    --seconds "${BENCH_LOAD_SECONDS:-30}" >"$out/load.json" || load_failed=1
else
  echo "/dev/fuse is missing: skipping load" >&2
  [ "${REQUIRE_FUSE:-0}" = 1 ] && exit 1
fi
echo "== session gate (criterion)" >&2
cargo bench --quiet -p grantfs-agent --bench gate >"$out/gate.txt"
"$bench" gate-summary "$target/criterion" >"$out/gate.json"

echo "== results in $out" >&2
for f in tickets fanout revoke-latency load gate; do
  if [ -f "$out/$f.json" ]; then echo "$out/$f.json"; fi
done
if [ "$load_failed" = 1 ]; then
  echo "load: a check failed (target_met false in $out/load.json)" >&2
  exit 1
fi
