#!/usr/bin/env bash
# kill -9 one path mid-workload: zero client errors, every byte checks out,
# and the path is reinstated once its server is back.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/workload.sh"
mp_init
mp_require nbdkit
make_image "$MP_TMP/disk.img" 16M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" \
  selector=round-robin timeout=1s shared-cache=true

start_workload w "$(mp_uri mp)" --duration 6 --connections 4
wait_for "the workload to get going" 20 workload_progress_over w 500
kill_upstream a KILL
wait_for "path1 to fail" 10 grep -q "path path1: active -> failed" "$(server_log mp)"
restart_upstream a
wait_for "path1 to be reinstated" 20 grep -q "path path1: .* -> active: reinstated" "$(server_log mp)"
wait_workload w
assert_workload_clean w
