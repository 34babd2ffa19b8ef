#!/usr/bin/env bash
# Filesystem benchmarks, one command: builds release binaries, mounts five targets side by side
# (the native directory, bindfs, libfuse's passthrough_ll, grantfs, grantfs with the gate compiled
# out), runs every workload on every target interleaved (A B C D E, A B C D E, ...) so the
# machine's drift hits all alike, and writes docs/BENCHMARKS.md with medians, ratios and SVG plots.
# Control-plane and revocation figures come from `grantfs-bench` (bench/control) when it is built.
#
#   scripts/bench.sh                 full run (~15 min on 2 cores): 3 runs, 5,000 files, 1 GiB
#   BENCH_QUICK=1 scripts/bench.sh   quick run: 1 run, 1,000 files, 256 MiB
# Knobs: BENCH_RUNS, BENCH_FILES, BENCH_BIG_MB, BENCH_TARGETS="native bindfs ptll grantfs excl nogate",
# BENCH_OUT (default docs/BENCHMARKS.md), BENCH_WORKDIR (default a fresh dir under /var/tmp, on
# the same file system as every target's backing directory), BENCH_SKIP_BUILD=1,
# BENCH_CONTROL=0 (skip the grantfs-bench hook). Needs root and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started_at=$EPOCHREALTIME

quick=${BENCH_QUICK:-0}
if [ "$quick" = 1 ]; then
  runs=${BENCH_RUNS:-1} files=${BENCH_FILES:-1000} big_mb=${BENCH_BIG_MB:-256}
  rand_secs=3 git_files=${BENCH_GIT_FILES:-1000} stat_passes=5
else
  runs=${BENCH_RUNS:-3} files=${BENCH_FILES:-5000} big_mb=${BENCH_BIG_MB:-1024}
  rand_secs=5 git_files=${BENCH_GIT_FILES:-5000} stat_passes=10
fi
git_touch=$(( git_files / 10 ))
small_size=4096
targets=(${BENCH_TARGETS:-native bindfs ptll grantfs excl nogate})
out_md=${BENCH_OUT:-$root/docs/BENCHMARKS.md}
plot_dir=$(dirname "$out_md")/bench
gate_target=${BENCH_TARGET_DIR:-$root/target-bench}
nogate_target=${BENCH_NOGATE_TARGET_DIR:-$root/target-bench-nogate}

log() { printf '\033[1m[bench %s]\033[0m %s\n' "$(date +%T)" "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (mounts, bindfs, apt-get)" >&2; exit 1; }
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -e /dev/fuse ] || { echo "bench.sh: /dev/fuse is missing" >&2; exit 1; }

# ---- dependencies (Debian packages) ----------------------------------------------------------
ptll_src=/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c
want=()
for pair in bindfs:bindfs fio:fio gcc:gcc pkg-config:pkg-config git:git python3:python3 \
  curl:curl fusermount3:fuse3 tar:tar; do
  command -v "${pair%%:*}" >/dev/null || want+=("${pair##*:}")
done
[ -e "$ptll_src" ] || want+=(libfuse3-dev)
if [ ${#want[@]} -gt 0 ]; then
  log "installing ${want[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
fi

# ---- build -------------------------------------------------------------------------------------
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  log "building release binaries ($gate_target, and $nogate_target with bench-no-gate)"
  CARGO_TARGET_DIR=$gate_target cargo build --release --quiet -p grantfs-agent -p grantfs-control \
    -p grantfs-bench
  CARGO_TARGET_DIR=$nogate_target cargo build --release --quiet -p grantfs-agent \
    --features grantfs-agent/bench-no-gate
fi
agent_bin=$gate_target/release/grantfs-agent
nogate_bin=$nogate_target/release/grantfs-agent
control_bin=$gate_target/release/grantfs-control

work=${BENCH_WORKDIR:-$(mktemp -d /var/tmp/grantfs-bench.XXXXXX)}
mkdir -p "$work/bin"
gcc -O2 -Wall -o "$work/bin/fsops" bench/fs/fsops.c
gcc -O2 -Wall -o "$work/bin/passthrough_ll" "$ptll_src" $(pkg-config --cflags --libs fuse3) -lpthread
fsops=$work/bin/fsops
results=$work/results.tsv
: >"$results"

# ---- targets -----------------------------------------------------------------------------------
declare -A MNT BACK
control_pid=""
cleanup() {
  set +e
  for t in "${targets[@]}"; do
    m=${MNT[$t]:-}
    [ -n "$m" ] && [ "$t" != native ] || continue
    if grep -qs " $m " /proc/self/mountinfo; then
      case $t in
        grantfs|excl) GRANTFS_RUNTIME_DIR=$work/run-$t "$agent_bin" unmount "$m" >/dev/null 2>&1 ;;
        nogate) GRANTFS_RUNTIME_DIR=$work/run-$t "$nogate_bin" unmount "$m" >/dev/null 2>&1 ;;
        *) fusermount3 -u "$m" 2>/dev/null ;;
      esac
      grep -qs " $m " /proc/self/mountinfo && umount -l "$m" 2>/dev/null
    fi
  done
  [ -n "$control_pid" ] && kill "$control_pid" 2>/dev/null
  [ -z "${BENCH_WORKDIR:-}" ] && [ "${BENCH_KEEP:-0}" != 1 ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_control() {
  "$control_bin" serve --listen 127.0.0.1:0 --state-dir "$work/state" >"$work/control.log" 2>&1 &
  control_pid=$!
  for _ in $(seq 200); do
    [ -s "$work/state/control.addr" ] && [ -s "$work/state/admin.key" ] && break
    sleep 0.05
  done
  url=$(cat "$work/state/control.addr")
  key=$(cat "$work/state/admin.key")
  api POST /v1/tenants '{"slug":"bench","external_id":"bench"}' >/dev/null
}
api() { # api METHOD PATH [JSON] -> body; fails on a non-2xx answer
  local args=(-sSf -X "$1" -H "Authorization: Bearer $key")
  [ -n "${3:-}" ] && args+=(-H 'content-type: application/json' -d "$3")
  curl "${args[@]}" "$url$2"
}

mount_grantfs() { # mount_grantfs TARGET AGENT_BIN [AGENT OPTIONS...]
  local t=$1 bin=$2 ws="bench-$1"
  shift 2
  api POST /v1/workspaces "{\"name\":\"$ws\"}" >/dev/null
  api POST /v1/grants "{\"workspace\":\"admin/$ws\",\"tenant_slug\":\"bench\",\"mode\":\"rw\"}" >/dev/null
  local ticket
  ticket=$(api POST /v1/tickets "{\"tenant_slug\":\"bench\",\"runtime_id\":\"bench-$t\",\"workspace\":\"admin/$ws\",\"mode\":\"rw\",\"ttl_seconds\":3600}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["mount_ticket"])')
  printf '%s' "$ticket" | GRANTFS_RUNTIME_DIR=$work/run-$t "$bin" mount "admin/$ws" "${MNT[$t]}" \
    --ticket-stdin --data-root "$work/$t/data" "$@" >/dev/null
  BACK[$t]=$work/$t/data/admin/$ws
}

mount_target() {
  local t=$1
  mkdir -p "$work/$t/mnt" "$work/$t/src"
  MNT[$t]=$work/$t/mnt
  BACK[$t]=$work/$t/src
  case $t in
    native) MNT[$t]=$work/$t/src ;;
    bindfs) bindfs "$work/$t/src" "${MNT[$t]}" ;;
    ptll) "$work/bin/passthrough_ll" -o "source=$work/$t/src" "${MNT[$t]}" ;;
    grantfs) mount_grantfs "$t" "$agent_bin" ;;
    excl) mount_grantfs "$t" "$agent_bin" --exclusive ;;
    nogate) mount_grantfs "$t" "$nogate_bin" ;;
    *) echo "unknown target $t" >&2; exit 1 ;;
  esac
  [ "$t" = native ] || grep -qs " ${MNT[$t]} " /proc/self/mountinfo || {
    echo "bench.sh: $t did not mount at ${MNT[$t]}" >&2; exit 1; }
}

# ---- measuring helpers -------------------------------------------------------------------------
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$results"; } # t wl run value unit
now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "print(f'{$2 - $1:.6f}')"; } # elapsed T0 T1 -> seconds
rate() { python3 -c "print(f'{$1 / $2:.3f}')"; }     # rate OPS SECONDS
fsops_rate() { local o; o=$("$fsops" "$@"); rate ${o% *} ${o#* }; }
fio_json() { # fio_json FIELD ARGS... -> read.bw_bytes etc. (bytes/s or IOPS)
  local field=$1; shift
  fio --output-format=json --ioengine=psync --fallocate=none --invalidate=0 "$@" |
    python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print(j$field)"
}
timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); elapsed "$t0" "$t1"; }
# A failed workload is recorded as "fail" and the run goes on (the report shows it).
try() { "$@" || { log "FAILED: $*"; return 0; }; }

# ---- workloads (each: TARGET RUN) --------------------------------------------------------------
wl_meta() {
  local t=$1 r=$2 m=${MNT[$1]} b=${BACK[$1]} v
  mkdir "$m/meta$r"
  v=$(fsops_rate create "$m/meta$r" "$files") && record "$t" create "$r" "$v" ops/s
  "$fsops" stat "$m/meta$r" "$files" 1 >/dev/null # warm-up pass
  v=$(fsops_rate stat "$m/meta$r" "$files" "$stat_passes") && record "$t" stat_warm "$r" "$v" ops/s
  sleep 2 # longer than bindfs/passthrough_ll's 1 s attribute timeout
  v=$(fsops_rate stat "$m/meta$r" "$files" 1) && record "$t" stat_aged "$r" "$v" ops/s
  v=$(fsops_rate unlink "$m/meta$r" "$files") && record "$t" unlink "$r" "$v" ops/s
  rmdir "$m/meta$r"
  # cold: first stat through the mount of files created behind its back in the backing dir
  mkdir "$b/cold$r"
  "$fsops" create "$b/cold$r" "$files" >/dev/null
  v=$(fsops_rate stat "$m/cold$r" "$files" 1) && record "$t" stat_cold "$r" "$v" ops/s
  rm -rf "$m/cold$r"
}

wl_small() {
  local t=$1 r=$2 m=${MNT[$1]} v
  mkdir "$m/small$r"
  v=$(fsops_rate write "$m/small$r" "$files" "$small_size") && record "$t" small_write "$r" "$v" files/s
  v=$(fsops_rate read "$m/small$r" "$files" "$small_size") && record "$t" small_read "$r" "$v" files/s
  rm -rf "$m/small$r"
}

wl_fio() {
  local t=$1 r=$2 f=${MNT[$1]}/big$r v
  local common=(--name=seq --filename="$f" --bs=1M --size="${big_mb}M")
  v=$(fio_json "['write']['bw_bytes']" "${common[@]}" --rw=write) &&
    record "$t" seq_write "$r" "$(rate "$v" 1048576)" MiB/s
  rm -f "$f"
  v=$(fio_json "['write']['bw_bytes']" "${common[@]}" --rw=write --end_fsync=1) &&
    record "$t" seq_write_fsync "$r" "$(rate "$v" 1048576)" MiB/s
  v=$(fio_json "['read']['bw_bytes']" "${common[@]}" --rw=read) &&
    record "$t" seq_read "$r" "$(rate "$v" 1048576)" MiB/s
  v=$(fio_json "['read']['iops']" --name=rand --filename="$f" --bs=4k --size="${big_mb}M" \
    --rw=randread --time_based --runtime="$rand_secs") && record "$t" rand_read_4k "$r" "$v" IOPS
  rm -f "$f"
}

wl_git() {
  local t=$1 r=$2 m=${MNT[$1]} v
  v=$(timed git clone -q --no-hardlinks "$work/git/src.git" "$m/repo$r") &&
    record "$t" git_clone "$r" "$v" s
  git -C "$m/repo$r" status --porcelain >/dev/null # settles racily-clean index entries
  sleep 2
  v=$(timed git -C "$m/repo$r" status) && record "$t" git_status "$r" "$v" s
  (cd "$m/repo$r" && find . -path ./.git -prune -o -type f -print | head -n "$git_touch" |
    xargs touch)
  v=$(timed git -C "$m/repo$r" add -A) && record "$t" git_add "$r" "$v" s
  rm -rf "$m/repo$r"
}

wl_tar() {
  local t=$1 r=$2 m=${MNT[$1]} v
  mkdir "$m/tar$r"
  v=$(timed tar -xf "$work/tree.tar" -C "$m/tar$r") && record "$t" tar_x "$r" "$v" s
  rm -rf "$m/tar$r"
}

# ---- fixtures: a generated source tree, its tarball and a bare git repository ----------------
make_fixtures() {
  python3 - "$work/tree" "$git_files" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(4)
for i in range(n):
    d = os.path.join(root, f"pkg{i // 500:02d}", f"mod{(i // 50) % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:05d}.rs"), "w") as f:
        size = int(rnd.lognormvariate(7.5, 1.0)) % 65536  # median ~1.8 KiB, like source code
        f.write(("// generated %d\n" % i) + "x" * size + "\n")
EOF
  tar -cf "$work/tree.tar" -C "$work/tree" .
  git -C "$work/tree" init -q
  git -C "$work/tree" -c user.name=bench -c user.email=bench@localhost add -A
  git -C "$work/tree" -c user.name=bench -c user.email=bench@localhost commit -qm fixture
  mkdir -p "$work/git"
  git clone -q --bare "$work/tree" "$work/git/src.git"
}

# ---- run ---------------------------------------------------------------------------------------
log "work dir $work; targets ${targets[*]}; runs $runs; files $files; big ${big_mb} MiB"
make_fixtures
start_control
for t in "${targets[@]}"; do mount_target "$t"; done
log "mounted: $(for t in "${targets[@]}"; do printf '%s=%s ' "$t" "${MNT[$t]}"; done)"

for wl in meta small fio git tar; do
  for r in $(seq 1 "$runs"); do
    for t in "${targets[@]}"; do
      log "$wl run $r/$runs on $t"
      try "wl_$wl" "$t" "$r"
    done
  done
done

# ---- hook: control-plane, mount and revocation figures from bench/control ---------------------
# >>> grantfs-bench hook (owned by bench/control): runs each subcommand below if the binary exists
#     and stores its JSON output for the report. Override with GRANTFS_BENCH_BIN and
#     GRANTFS_BENCH_CMDS (one subcommand with its arguments per line).
cp_dir=$work/control-json
mkdir -p "$cp_dir"
bench_bin=${GRANTFS_BENCH_BIN:-}
for cand in "$gate_target/release/grantfs-bench" "$root/target/release/grantfs-bench"; do
  [ -z "$bench_bin" ] && [ -x "$cand" ] && bench_bin=$cand
done
if [ "${BENCH_CONTROL:-1}" = 1 ] && [ -n "$bench_bin" ] && [ -x "$bench_bin" ]; then
  if [ "$quick" = 1 ]; then
    default_cmds=$'tickets --seconds 3 --baseline-seconds 2\nrevoke-latency --n 50\nfanout --streams 1000\nload --seconds 10 --revocations 10'
  else
    default_cmds=$'tickets\nrevoke-latency --n 200 --probe all\nfanout --streams 10000\nload'
  fi
  # The binaries this run built, not whatever sits next to the bench binary.
  bins=(--control-bin "$control_bin")
  i=0
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    i=$((i + 1))
    log "grantfs-bench $line"
    # shellcheck disable=SC2086 # the line is a subcommand with its arguments
    extra=("${bins[@]}")
    case $line in revoke-latency* | load*) extra+=(--agent-bin "$agent_bin") ;; esac
    if ! "$bench_bin" $line "${extra[@]}" >"$cp_dir/$i.json" 2>"$cp_dir/$i.log"; then
      log "grantfs-bench $line failed (see report)"
      printf '{"error": "exit status %s", "stderr_tail": %s}\n' "$?" \
        "$(tail -n 5 "$cp_dir/$i.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" \
        >"$cp_dir/$i.json"
    fi
    printf '%s\n' "$line" >"$cp_dir/$i.cmd"
  done <<<"${GRANTFS_BENCH_CMDS:-$default_cmds}"
else
  log "grantfs-bench not built (cargo build --release -p grantfs-bench): no control-plane figures"
fi
# <<< end of grantfs-bench hook

# ---- report ------------------------------------------------------------------------------------
cat >"$work/meta.json" <<EOF
{
  "date": "$(date -u +%FT%TZ)",
  "commit": "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo +dirty)",
  "kernel": "$(uname -r)",
  "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) x $(nproc)",
  "mem": "$(free -g | awk '/Mem:/ {print $2}') GiB",
  "fs": "$(df -T "$work" | awk 'NR==2 {print $2 " on " $1}')",
  "os": "$(. /etc/os-release && echo "$PRETTY_NAME")",
  "bindfs": "$(bindfs --version 2>&1 | head -1)",
  "fuse3": "$(pkg-config --modversion fuse3)",
  "fio": "$(fio --version)",
  "git": "$(git --version)",
  "rustc": "$(rustc --version)",
  "quick": $quick, "runs": $runs, "files": $files, "big_mb": $big_mb,
  "git_files": $git_files, "git_touch": $git_touch, "stat_passes": $stat_passes,
  "rand_secs": $rand_secs, "small_size": $small_size,
  "targets": "$(echo "${targets[*]}")",
  "seconds": $(python3 -c "print(round($EPOCHREALTIME - $started_at))")
}
EOF
python3 bench/fs/report.py --results "$results" --meta "$work/meta.json" \
  --control-dir "$cp_dir" --out "$out_md" --plots "$plot_dir"
log "wrote $out_md (+ $plot_dir/*.svg) in $(python3 -c "print(round($EPOCHREALTIME - $started_at))") s"
