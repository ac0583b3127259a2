#!/usr/bin/env bash
# Where a request's cost goes: system calls, context switches and CPU time per
# request of the front server (the process fio talks to), for the multipath
# plugin on one path (mp1) and nbdkit's own nbd plugin (nbdplugin), both in
# front of one `nbdkit memory` upstream on a Unix socket; mp1-iscsi is the
# plugin on one iSCSI path (tgtd on 127.0.0.1, a 1 GiB image on tmpfs). See
# bench/README.md ("Profile").
#
#   bench/profile.sh                         # both targets, QD1 and QD32
#   TARGETS=mp1 WORKLOADS=rr4k-qd32 bench/profile.sh
#   TARGETS=mp1-iscsi bench/profile.sh       # needs tgtd
#
# Each fio job does a fixed number of requests (REQUESTS_QD1, REQUESTS_QD32),
# so counts divide exactly. Two passes per job: `perf stat` (CPU time, context
# switches, system calls; per thread) and `perf trace -s` (system calls by
# name; it slows the server, so its pass gives counts, not times).
#
# Environment:
#   MP_PLUGIN      plugin .so (default: <repo>/build/nbdkit-multipath-plugin.so)
#   TARGETS        subset of "nbdplugin mp1 mp2 mp1-iscsi" (default: nbdplugin mp1)
#   WORKLOADS      subset of "rr4k-qd1 rr4k-qd32" (default: both)
#   REQUESTS_QD1   requests per QD1 job (20000)
#   REQUESTS_QD32  requests per QD32 job (100000)
#   MP_ARGS        extra plugin arguments for mp1 and mp2
#   BENCH_OUT      directory to keep the perf outputs and profile.md in
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MP_SOURCE=${MP_SOURCE:-$(cd "$here/.." && pwd)}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
bench_args "${BASH_SOURCE[0]}" "$@"

TARGETS=${TARGETS:-nbdplugin mp1}
WORKLOADS=${WORKLOADS:-rr4k-qd1 rr4k-qd32}
REQUESTS_QD1=${REQUESTS_QD1:-20000}
REQUESTS_QD32=${REQUESTS_QD32:-100000}
MP_ARGS=${MP_ARGS:-}
BENCH_OUT=${BENCH_OUT:-}

MP_TEST_NAME=profile
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh
source "$MP_SOURCE/tests/integration/functions.sh"
# shellcheck source-path=SCRIPTDIR source=../tests/integration/iscsi.sh
source "$MP_SOURCE/tests/integration/iscsi.sh"
mp_init
mp_require fio
mp_require perf
_mp_require_python
read -r -a targets <<<"$TARGETS"
read -r -a workloads <<<"$WORKLOADS"
read -r -a mp_args <<<"$MP_ARGS"
[[ $REQUESTS_QD1 =~ ^[1-9][0-9]*$ && $REQUESTS_QD32 =~ ^[1-9][0-9]*$ ]] ||
  fail "REQUESTS_QD1 and REQUESTS_QD32 must be positive integers"
perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1 ||
  fail "perf cannot count system calls here (is /sys/kernel/tracing mounted, perf_event_paranoid <= 2?)"

workload_args() {
  case $1 in
    rr4k-qd1) wl_args=(--rw=randread --bs=4k --iodepth=1 --number_ios="$REQUESTS_QD1") ;;
    rr4k-qd32) wl_args=(--rw=randread --bs=4k --iodepth=32 --number_ios="$REQUESTS_QD32") ;;
    *) fail "unknown workload '$1' (rr4k-qd1 rr4k-qd32)" ;;
  esac
}

start_upstream u1 memory 1G
start_upstream u2 memory 1G
run_fio "$(upstream_uri u1)" --rw=write --bs=1m --iodepth=8 --size=100% || fail "prefill of u1 failed"
upstreams="nbdkit memory on a Unix socket"
for t in "${targets[@]}"; do
  case $t in
    nbdplugin | mp1 | mp2) ;;
    mp1-iscsi)
      [[ -n ${imgdir:-} ]] && continue
      bench_image_dir mp-profile
      dd if=/dev/urandom of="$imgdir/disk.img" bs=1M count=1024 iflag=fullblock status=none ||
        fail "cannot fill the iSCSI image"
      start_tgt a "$imgdir/disk.img"
      upstreams+="; mp1-iscsi: tgtd on 127.0.0.1 over a 1 GiB image on tmpfs"
      ;;
    *) fail "unknown target '$t' (nbdplugin mp1 mp2 mp1-iscsi)" ;;
  esac
done

# front_cmd T: the front server's nbdkit command line, into front.
front_cmd() {
  local sock=$MP_TMP/front.sock
  front=(nbdkit -f -U "$sock")
  case $1 in
    nbdplugin) front+=(nbd socket="$(server_sock u1)") ;;
    mp1) front+=("$MP_PLUGIN" "path=$(upstream_uri u1)" "${mp_args[@]}") ;;
    mp2) front+=("$MP_PLUGIN" "path=$(upstream_uri u1)" "path=$(upstream_uri u2)" "${mp_args[@]}") ;;
    mp1-iscsi) front+=("$MP_PLUGIN" "path=$(tgt_uri a)" "${mp_args[@]}") ;;
  esac
}

# profiled T W PASS PERF...: a new front server for target T under the perf
# command PERF (so that perf follows every thread nbdkit starts, including
# the ones it starts per connection), one fio job of workload W against it,
# then the server stopped; perf's output in $MP_TMP/T-W.PASS.
profiled() {
  local t=$1 w=$2 pass=$3 perf_pid nbdkit_pid uri=nbd+unix:///?socket=$MP_TMP/front.sock
  shift 3
  local out=$MP_TMP/$t-$w.$pass
  front_cmd "$t"
  rm -f "$MP_TMP/front.sock"
  "$@" -o "$out" -- "${front[@]}" </dev/null >>"$MP_TMP/front.log" 2>&1 &
  perf_pid=$!
  _mp_track "$perf_pid"
  wait_for "the front server ($t) to serve" 20 nbdinfo --size "$uri"
  workload_args "$w"
  MP_FIO_OUT=$MP_TMP/$t-$w.$pass.json run_fio "$uri" "${wl_args[@]}" \
    --norandommap --randrepeat=0 || fail "fio failed: $t $w"
  (($(fio_errors "$MP_FIO_JSON") == 0)) || fail "I/O errors: $t $w"
  nbdkit_pid=$(pgrep -P "$perf_pid" -x nbdkit) || fail "no nbdkit under perf ($t $w)"
  kill -TERM "$nbdkit_pid"
  wait "$perf_pid" || true
}

{
  echo "# nbd-multipath profile, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(uname -r), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tools: $(nbdkit --version | head -n 1), $(fio --version), $(perf --version)"
  need_mp=1
  bench_plugin_line
  echo "requests per job: QD1 $REQUESTS_QD1, QD32 $REQUESTS_QD32; upstream: $upstreams"
} >"$MP_TMP/header.txt"
cat "$MP_TMP/header.txt" >&2

for w in "${workloads[@]}"; do
  for t in "${targets[@]}"; do
    mp_log "$t $w: perf stat"
    profiled "$t" "$w" stat perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter
    cp "$MP_FIO_JSON" "$MP_TMP/$t-$w.json"
    mp_log "$t $w: perf trace"
    profiled "$t" "$w" trace perf trace -s
  done
done

"$MP_PYTHON" - "$MP_TMP" "$here" "${targets[*]}" "${workloads[*]}" \
  "$REQUESTS_QD1" "$REQUESTS_QD32" <<'EOF' >"$MP_TMP/profile.md"
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[2])
import profile_summary
profile_summary.main(sys.argv[1], sys.argv[3].split(), sys.argv[4].split(),
                     {"rr4k-qd1": int(sys.argv[5]), "rr4k-qd32": int(sys.argv[6])})
EOF
cat "$MP_TMP/header.txt" "$MP_TMP/profile.md"
if [[ -n $BENCH_OUT ]]; then
  mkdir -p "$BENCH_OUT"
  cp "$MP_TMP"/header.txt "$MP_TMP"/profile.md "$MP_TMP"/*.stat "$MP_TMP"/*.trace "$BENCH_OUT/"
  mp_log "results kept in $BENCH_OUT"
fi
