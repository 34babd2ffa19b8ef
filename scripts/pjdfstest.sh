#!/usr/bin/env bash
# Runs the POSIX conformance suite pjdfstest (the Rust rewrite from crates.io) against a live
# grantfs mount, and compares its failures with the committed known-failure list
# tests/pjdfstest/known-failures.txt (one test name per line, with the reason after a '#').
# Exit 0 only when every failure is a known one. Usage: scripts/pjdfstest.sh [--native]
# (--native runs the suite on a plain directory of the same file system, as a baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
PJD_VERSION=0.2.2

scripts/install-deps.sh
if ! command -v pjdfstest >/dev/null || ! pjdfstest --help >/dev/null 2>&1; then
  echo "pjdfstest: installing pjdfstest $PJD_VERSION from crates.io"
  cargo install pjdfstest --version "$PJD_VERSION" --locked --quiet
fi
getent group tests >/dev/null || groupadd tests
getent passwd tests >/dev/null || useradd -g tests -M -s /usr/sbin/nologin tests

work=$(mktemp -d /tmp/grantfs-pjd.XXXXXX)
control_pid=""
mnt="$work/mnt"
cleanup() {
  if [ -n "${mnt:-}" ] && grep -q " $mnt " /proc/self/mountinfo; then
    GRANTFS_RUNTIME_DIR="$work/run" "$target/debug/grantfs-agent" unmount "$mnt" >/dev/null 2>&1 || umount -l "$mnt" || true
  fi
  [ -n "$control_pid" ] && kill "$control_pid" 2>/dev/null || true
  rm -rf "$work" "${secondary:-}"
}
trap cleanup EXIT

cat > "$work/pjdfstest.toml" <<TOML
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}
[settings]
naptime = 0.01
allow_remount = false
[dummy_auth]
entries = [["nobody", "nogroup"], ["tests", "tests"]]
TOML

mkdir -p "$mnt"
if [ "${1:-}" = "--native" ]; then
  testdir="$work/native"
  mkdir -p "$testdir"
else
  cargo build --workspace --bins --quiet
  mkdir -p "$work/state" "$work/data" "$work/run"
  "$target/debug/grantfs-control" serve --listen 127.0.0.1:0 --state-dir "$work/state" >"$work/control.log" 2>&1 &
  control_pid=$!
  for _ in $(seq 100); do [ -s "$work/state/control.addr" ] && [ -s "$work/state/admin.key" ] && break; sleep 0.05; done
  url=$(cat "$work/state/control.addr"); key=$(cat "$work/state/admin.key")
  curl -fsS -H "Authorization: Bearer $key" -H 'content-type: application/json' "$url/v1/workspaces" -d '{"name":"pjd"}' >/dev/null
  ticket=$(curl -fsS -H "Authorization: Bearer $key" -H 'content-type: application/json' "$url/v1/tickets" \
    -d '{"tenant_slug":"pjd","runtime_id":"pjdfstest","workspace":"pjd","mode":"rw","ttl_seconds":3600}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["mount_ticket"])')
  # allow_other: pjdfstest switches to the dummy users.
  printf '%s' "$ticket" | GRANTFS_RUNTIME_DIR="$work/run" "$target/debug/grantfs-agent" mount admin/pjd "$mnt" \
    --ticket-stdin --data-root "$work/data" --allow-other >/dev/null
  testdir="$mnt"
  chmod 0755 "$work" "$mnt"
fi
chmod 0755 "$work" "$testdir"

# A second, distinct file system for the cross-device cases (EXDEV).
secondary=$(mktemp -d /dev/shm/grantfs-pjd2.XXXXXX 2>/dev/null || mktemp -d)
chmod 0755 "$secondary"
set +e
(cd "$testdir" && pjdfstest -c "$work/pjdfstest.toml" -p "$testdir" -s "$secondary") >"$work/pjd.out" 2>&1
rc=$?
set -e
failed=$(grep -E '^[^ ]+ +FAILED$' "$work/pjd.out" | awk '{print $1}' | sort -u || true)
skipped_n=$(grep -cE '^[^ ]+ +skipped$' "$work/pjd.out" || true)
known=$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' tests/pjdfstest/known-failures.txt 2>/dev/null | grep -v '^$' | sort -u || true)
passed_n=$(grep -cE '^[^ ]+ +ok$' "$work/pjd.out" || true)
failed_n=$(printf '%s\n' "$failed" | grep -c . || true)
unexpected=$(comm -23 <(printf '%s\n' "$failed" | grep . || true) <(printf '%s\n' "$known" | grep . || true))
fixed=$(comm -13 <(printf '%s\n' "$failed" | grep . || true) <(printf '%s\n' "$known" | grep . || true))
if [ -n "$fixed" ] && [ "${1:-}" != "--native" ]; then
  echo "pjdfstest: known failures that now pass (remove them from tests/pjdfstest/known-failures.txt):"
  printf '  %s\n' $fixed
fi
if [ -n "$unexpected" ]; then
  echo "pjdfstest: unexpected failures:"
  for t in $unexpected; do grep -A12 -E "^$t +FAILED" "$work/pjd.out" | head -14; done
  echo "pjdfstest: $passed_n passed, $failed_n failed"
  [ -n "${PJD_KEEP:-}" ] && cp "$work/pjd.out" "$PJD_KEEP"
  exit 1
fi
echo "pjdfstest ($testdir): $passed_n ok, $skipped_n skipped, $failed_n known failures (exit $rc)"
echo "pjdfstest: $passed_n passed, 0 failed, $skipped_n skipped"
