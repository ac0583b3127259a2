#!/usr/bin/env bash
# SIGSTOP one path: its requests complete on the other path within the
# attempt timeout plus a margin; after SIGCONT the path is reinstated.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/workload.sh"
mp_init
mp_require nbdkit
make_image "$MP_TMP/disk.img" 16M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" \
  selector=round-robin timeout=1s connect-timeout=1s shared-cache=true

start_workload w "$(mp_uri mp)" --duration 6 --connections 4
wait_for "the workload to get going" 20 workload_progress_over w 500
stop_upstream a
wait_for "path1 to fail" 10 grep -q "path path1: active -> failed: .*timed out" "$(server_log mp)"
wait_workload w
assert_workload_clean w
# Attempt timer 1 s; the margin covers scheduling on a loaded 2-core machine.
stall=$(workload_stat w max_stall_ms)
mp_log "longest request: $stall ms"
"$MP_PYTHON" -c "import sys; sys.exit(0 if $stall < 1000 + ${MP_STALL_MARGIN_MS:-1500} * $_MP_TIME_FACTOR else 1)" ||
  fail "a request took $stall ms: more than the 1 s attempt timeout plus the margin"
cont_upstream a
wait_for "path1 to be reinstated" 30 grep -q "path path1: .* -> active: reinstated" "$(server_log mp)"
