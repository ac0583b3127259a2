#!/usr/bin/env bash
# One path returns EIO (error filter): it is failed, the client sees no
# error, and it is reinstated once the errors stop.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/workload.sh"
mp_init
mp_require nbdkit
make_image "$MP_TMP/disk.img" 16M
start_upstream a --filter=error file "$MP_TMP/disk.img" error-rate=100% error-file="$(error_file a)"
start_upstream b file "$MP_TMP/disk.img"
start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" \
  selector=round-robin timeout=1s shared-cache=true

start_workload w "$(mp_uri mp)" --duration 5 --connections 4
wait_for "the workload to get going" 20 workload_progress_over w 500
inject_errors a
wait_for "path1 to fail with EIO" 10 grep -q "path path1: active -> failed: server returned EIO" "$(server_log mp)"
clear_errors a
wait_for "path1 to be reinstated" 20 grep -q "path path1: .* -> active: reinstated" "$(server_log mp)"
wait_workload w
assert_workload_clean w
