#!/usr/bin/env bash
# The main job, end to end: a control plane on SQLite, a workspace, a tenant and grants, a one-shot
# mount ticket, a real FUSE mount written and read, a revocation, and the same `cat` refused with
# "Permission denied" (with the measured delay), then the tenant torn down. Prints every answer.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}

scripts/install-deps.sh
echo "== building"
cargo build --workspace --bins --release --quiet
control_bin="$target/release/grantfs-control"
agent_bin="$target/release/grantfs-agent"

work=$(mktemp -d /tmp/grantfs-demo.XXXXXX)
mnt="$work/mnt"
export GRANTFS_RUNTIME_DIR="$work/run"
control_pid=""
cleanup() {
  if grep -q " $mnt " /proc/self/mountinfo 2>/dev/null; then
    "$agent_bin" unmount "$mnt" >/dev/null 2>&1 || umount -l "$mnt" 2>/dev/null || true
  fi
  [ -n "$control_pid" ] && kill "$control_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$mnt" "$work/state" "$work/data"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
api() { # api METHOD PATH [JSON]: prints the request and the answer
  local method=$1 path=$2 body=${3:-}
  printf '\033[2m%s %s %s\033[0m\n' "$method" "$path" "$body" >&2
  local args=(-sS -X "$method" -H "Authorization: Bearer $key" -w '\n%{http_code}')
  [ -n "$body" ] && args+=(-H 'content-type: application/json' -d "$body")
  local out status
  out=$(curl "${args[@]}" "$url$path")
  status=${out##*$'\n'}
  out=${out%$'\n'*}
  printf '%s\n' "$out" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=2))' >&2
  echo "   -> HTTP $status" >&2
  printf '%s' "$out"
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

say "starting grantfs-control (SQLite in $work/state)"
"$control_bin" serve --listen 127.0.0.1:0 --state-dir "$work/state" --keepalive-seconds 2 >"$work/control.log" 2>&1 &
control_pid=$!
for _ in $(seq 200); do [ -s "$work/state/control.addr" ] && [ -s "$work/state/admin.key" ] && break; sleep 0.05; done
url=$(cat "$work/state/control.addr")
key=$(cat "$work/state/admin.key")
echo "listening on $url; the admin API key is in $work/state/admin.key (mode $(stat -c %a "$work/state/admin.key"))"

say "a workspace that outlives every runtime"
api POST /v1/workspaces '{"name":"my-workspace"}' >/dev/null
say "a tenant, linked to the platform's own customer id"
api POST /v1/tenants '{"slug":"acme","external_id":"cust_42","metadata":{"plan":"pro"}}' >/dev/null
say "explicit grants: runtime-scoped read-only, and tenant-wide read-write with a TTL"
ro_grant=$(api POST /v1/grants '{"workspace":"admin/my-workspace","tenant_slug":"acme","runtime_id":"task-ro","mode":"ro"}' | field '["id"]')
api POST /v1/grants '{"workspace":"admin/my-workspace","tenant_slug":"acme","mode":"rw","ttl_seconds":3600}' >/dev/null
say "a ro grant is never widened"
api POST /v1/tickets '{"tenant_slug":"acme","runtime_id":"task-ro","workspace":"admin/my-workspace","mode":"rw","ttl_seconds":600}' >/dev/null || true

say "one-shot mount ticket for runtime task-123 (picks the tenant-wide rw grant)"
issued=$(api POST /v1/tickets '{"tenant_slug":"acme","runtime_id":"task-123","workspace":"admin/my-workspace","mode":"rw","ttl_seconds":600}')
ticket=$(printf '%s' "$issued" | field '["mount_ticket"]')
session=$(printf '%s' "$issued" | field '["session_id"]')

say "mounting on the runtime host: grantfs-agent mount admin/my-workspace $mnt --ticket-stdin"
start=$(date +%s%N)
printf '%s' "$ticket" | "$agent_bin" mount admin/my-workspace "$mnt" --ticket-stdin --data-root "$work/data"
echo "mount command returned after $(( ($(date +%s%N) - start) / 1000000 )) ms"
"$agent_bin" status

say "the runtime writes and reads"
echo "hello from task-123" > "$mnt/notes.txt"
mkdir -p "$mnt/src" && printf 'fn main() {}\n' > "$mnt/src/main.rs"
( set -x; cat "$mnt/notes.txt"; ls -l "$mnt" "$mnt/src" )
echo "backing directory: $(ls "$work/data/admin/my-workspace")"
exec 3<"$mnt/notes.txt"   # a descriptor opened before the revocation

say "a single-use ticket: exchanging it again is refused"
api POST /v1/sessions/exchange "{\"ticket\":\"$ticket\"}" >/dev/null || true

say "revoking every grant of runtime task-123 (POST /v1/grants/revoke), then stat in a tight loop"
# The revoke call and the probe run in one process, so the delay printed is the mount's, not a
# process start's.
python3 - "$url" "$key" "$mnt/notes.txt" <<'PY'
import json, os, sys, time, urllib.request
url, key, path = sys.argv[1:4]
os.stat(path); os.stat(path)  # warm: the kernel now answers stat from its cache
req = urllib.request.Request(url + "/v1/grants/revoke", method="POST",
    data=json.dumps({"tenant_slug": "acme", "runtime_id": "task-123"}).encode(),
    headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
t0 = time.perf_counter()
body = urllib.request.urlopen(req).read().decode()
t1 = time.perf_counter()
while True:
    try:
        os.stat(path)
    except PermissionError:
        t2 = time.perf_counter()
        break
    if time.perf_counter() - t1 > 2:
        sys.exit("still served 2 s after the revoke call returned")
print("POST /v1/grants/revoke ->", body)
print(f"revoke call took {(t1 - t0) * 1000:.1f} ms; stat on the mount failed with EACCES "
      f"{(t2 - t1) * 1000:.2f} ms after the call returned")
PY
( set -x; cat "$mnt/notes.txt" ) || true
( set -x; cat <&3 ) || true
( set -x; ls "$mnt" ) || true
( set -x; touch "$mnt/new-file" ) || true
exec 3<&-
"$agent_bin" status
api GET "/v1/sessions/$session" >/dev/null

say "the data stays in the workspace; a new ticket for task-123 is a new authorization (the tenant-wide grant still stands)"
cat "$work/data/admin/my-workspace/notes.txt"
api POST /v1/tickets '{"tenant_slug":"acme","runtime_id":"task-123","workspace":"admin/my-workspace","mode":"ro","ttl_seconds":60}' | field '["grant_id"]' >/dev/null

say "the customer churned: tearing down the tenant"
api DELETE /v1/tenants/acme >/dev/null
api GET "/v1/grants?tenant_slug=acme&include_inactive=true" >/dev/null
api DELETE "/v1/grants/$ro_grant" >/dev/null

say "unmounting"
"$agent_bin" unmount "$mnt"
echo
echo "demo complete: mounted, written, revoked, refused with EACCES."
