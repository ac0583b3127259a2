#!/usr/bin/env bash
# The multipath disk next to Linux dm-multipath, under one failure schedule,
# in a VM with the kernel NBD client.  See bench/DM-COMPARE.md.
#
#   bench/dm-compare.sh                      # both modes, default schedule
#   MODES=dm RUNTIME=60 bench/dm-compare.sh
#
# Modes (one VM boot each, same kernel, initramfs and schedule):
#   mp  fio -> /dev/nbd0 -> multipath server -> upstreams A and B
#   dm  fio -> dm-multipath -> /dev/nbd0 -> A and /dev/nbd1 -> B
# Schedule, in seconds after fio starts:
#   T_KILL     kill -9 upstream A                     (5)
#   T_RESTART  start A again                          (10)
#   T_STOP     SIGSTOP upstream B, for STOP_FOR s     (20, 8)
# Environment:
#   MODES        "mp dm"
#   RUNTIME      fio seconds (40)
#   NBD_TIMEOUT  nbd-client -t in the guest, both modes (5)
#   SELECTOR     dm path selector: round-robin | service-time | queue-length
#   MP_ARGS      plugin arguments after the two paths
#                (default: selector=round-robin timeout=1s connect-timeout=1s shared-cache=true)
#   FIO_ARGS     extra fio options inside the guest, "+" for spaces
#   BENCH_OUT    directory to keep the fio JSON, serial logs and summary.md
#   MP_PLUGIN, MP_VM_CACHE, MP_VM_ACCEL: as for the tests
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MP_SOURCE=${MP_SOURCE:-$(cd "$here/.." && pwd)}

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
bench_args "${BASH_SOURCE[0]}" "$@"

MODES=${MODES:-mp dm}
RUNTIME=${RUNTIME:-40}
T_KILL=${T_KILL:-5}
T_RESTART=${T_RESTART:-10}
T_STOP=${T_STOP:-20}
STOP_FOR=${STOP_FOR:-8}
NBD_TIMEOUT=${NBD_TIMEOUT:-5}
SELECTOR=${SELECTOR:-round-robin}
MP_ARGS=${MP_ARGS:-selector=round-robin timeout=1s connect-timeout=1s shared-cache=true}
FIO_ARGS=${FIO_ARGS:-}
BENCH_OUT=${BENCH_OUT:-}

# Server life cycle, cleanup on any exit, fio JSON helpers.
MP_TEST_NAME=dm-compare
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh
source "$MP_SOURCE/tests/integration/functions.sh"
# shellcheck source-path=SCRIPTDIR source=../tests/vm/vm-lib.sh
source "$MP_SOURCE/tests/vm/vm-lib.sh"
mp_init
vm_require
mp_require dmsetup fio
_mp_require_python
((T_KILL < T_RESTART && T_RESTART < T_STOP && T_STOP + STOP_FOR + 5 <= RUNTIME)) ||
  fail "schedule must satisfy T_KILL < T_RESTART < T_STOP and T_STOP + STOP_FOR + 5 <= RUNTIME"
case $SELECTOR in round-robin | service-time | queue-length) ;; *) fail "bad SELECTOR=$SELECTOR" ;; esac
vm_fetch_kernel || fail "no guest kernel: $VM_FETCH_ERR"

read -r -a mp_args <<<"$MP_ARGS"
make_image "$MP_TMP/disk.img" 256M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" "${mp_args[@]}"
mplog=$(server_log mp)
vm_build_initramfs "$MP_TMP/initrd" --bin dmsetup --bin fio \
  nbd dm-multipath dm-round-robin dm-service-time dm-queue-length

# Microseconds since the epoch into _mp_now (functions.sh).
sleep_until() {
  _mp_clock
  local left=$(($1 - _mp_now))
  ((left <= 0)) || sleep "$(_mp_us_to_s "$left")"
}
log_count() { grep -c -- "$1" "$mplog" || true; }
log_count_over() { (($(log_count "$1") > $2)); }
markers_over() { (($(vm_markers "$1" | grep -c -- "$2" || true) > $3)); }

# wait_path_back MODE SLOT PATHNAME: the path is in use again, as each mode
# reports it (our log; the guest's checker).
wait_path_back() {
  local mode=$1 slot=$2 path=$3 before=$4
  if [[ $mode == mp ]]; then
    wait_for "$path to be reinstated" 60 log_count_over "path $path: .* -> active: reinstated" "$before"
  else
    wait_for "dm path $slot to be reinstated" 60 markers_over "$mode" "^reinstated $slot " "$before"
  fi
}
b_back_or_dead() {
  ! server_running b && return 0
  if [[ $1 == mp ]]; then log_count_over "path path2: .* -> active: reinstated" "$2"; else markers_over "$1" "^reinstated b " "$2"; fi
}
reinstated_count() {
  if [[ $1 == mp ]]; then log_count "path $3: .* -> active: reinstated"; else vm_markers "$1" | grep -c "^reinstated $2 " || true; fi
}

declare -A EVENTS=()
run_mode() {
  local mode=$1 t0 us r
  vm_forward 10.0.2.100 "$(server_sock mp)" "$MP_TMP/relay-$mode-mp.log"
  vm_forward 10.0.2.101 "$(server_sock a)" "$MP_TMP/relay-$mode-a.log"
  vm_forward 10.0.2.102 "$(server_sock b)" "$MP_TMP/relay-$mode-b.log"
  vm_start "$mode" dm-compare "$MP_TMP/initrd" "mp.mode=$mode" "mp.nbdtimeout=$NBD_TIMEOUT" \
    "mp.runtime=$RUNTIME" "mp.selector=$SELECTOR" ${FIO_ARGS:+"mp.fio=$FIO_ARGS"}
  vm_wait_marker "$mode" 'fio-start' 180
  _mp_clock
  t0=$_mp_now
  us=1000000
  EVENTS[$mode]=""
  ev() { EVENTS[$mode]+="$(_mp_clock; _mp_us_to_s $((_mp_now - t0))) $*; "; mp_log "[$mode] $*"; }

  sleep_until $((t0 + T_KILL * us))
  r=$(reinstated_count "$mode" a path1)
  kill_upstream a KILL
  ev "kill -9 A"
  sleep_until $((t0 + T_RESTART * us))
  restart_upstream a
  ev "A restarted"
  wait_path_back "$mode" a path1 "$r"
  ev "A back in use"

  sleep_until $((t0 + T_STOP * us))
  r=$(reinstated_count "$mode" b path2)
  stop_upstream b
  ev "SIGSTOP B"
  sleep_until $((t0 + (T_STOP + STOP_FOR) * us))
  cont_upstream b
  ev "SIGCONT B"
  # nbdkit 1.32 may abort after SIGCONT (raw_send_socket: Assertion
  # `sock >= 0') when clients that connected while it was stopped have gone:
  # start it again, as an operator would, and say so.
  wait_for "B back in use, or B dead" 60 b_back_or_dead "$mode" "$r"
  if ! server_running b; then
    ev "B died after SIGCONT ($(grep -a -m1 -o 'Assertion.*' "$(server_log b)" || echo 'no message'))"
    restart_upstream b
    ev "B restarted"
  fi
  wait_path_back "$mode" b path2 "$r"
  ev "B back in use"

  vm_wait_marker "$mode" 'fio-done' $((RUNTIME + 120))
  vm_wait_marker "$mode" 'finished' 60
  vm_wait_exit "$mode" 60
  [[ -s $MP_TMP/$mode.out ]] || fail "[$mode] the guest sent no fio report"
}

summary=$MP_TMP/summary.md
# Keep the evidence also when a run fails (the hook runs before $MP_TMP goes).
keep_results() {
  mkdir -p "$BENCH_OUT"
  cp "$MP_TMP"/*.md "$MP_TMP"/*.out "$MP_TMP"/*.log "$BENCH_OUT/" 2>/dev/null || true
}
[[ -z $BENCH_OUT ]] || mp_on_cleanup keep_results
{
  echo "| setup | client errors | longest I/O (ms) | read IOPS | write IOPS | MiB/s | fio status |"
  echo "|---|---|---|---|---|---|---|"
} >"$summary"
for mode in $MODES; do
  case $mode in mp | dm) ;; *) fail "MODES: mp and/or dm, not '$mode'" ;; esac
  mp_log "===== mode $mode"
  run_mode "$mode"
  j=$MP_TMP/$mode.out
  MP_FIO_JSON=$j
  errors=$(fio_stat "$j" errors)
  stall=$("$MP_PYTHON" -c 'import sys; print(round(max(float(sys.argv[1]), float(sys.argv[2])) / 1e6, 1))' \
    "$(fio_stat "$j" read.clat_ns.max)" "$(fio_stat "$j" write.clat_ns.max)")
  fst=$(vm_markers "$mode" | awk '$1 == "fio-done" {print $2}')
  label=$([[ $mode == mp ]] && echo "multipath disk, 1 nbd device" || echo "dm-multipath ($SELECTOR), 2 nbd devices")
  echo "| $label | $errors | $stall | $(fio_stat "$j" read.iops) | $(fio_stat "$j" write.iops) | $(fio_bw_mib "$j") | $fst |" >>"$summary"
  mp_log "[$mode] events: ${EVENTS[$mode]}"
  vm_markers "$mode" | grep -E '^(path-failed|reinstated|checker-error|table)' >&2 || true
  # Restore the upstreams for the next mode.
  server_running a || restart_upstream a
done
{
  echo
  echo "Schedule (s after fio start): kill -9 A at $T_KILL, restart at $T_RESTART; SIGSTOP B at $T_STOP for $STOP_FOR s."
  echo "fio: randrw 50/50, 4 KiB, iodepth 4, libaio, direct, $RUNTIME s; nbd-client -L -t $NBD_TIMEOUT; accel $(vm_accel)."
  echo "Multipath: $MP_ARGS."
  for mode in $MODES; do echo "Events ($mode): ${EVENTS[$mode]}"; done
} >>"$summary"
cat "$summary"
[[ -z $BENCH_OUT ]] || mp_log "results in $BENCH_OUT"
