#!/usr/bin/env bash
# iSCSI path failures under a checksummed workload: kill -9 a target (its
# writes wait for the LUN RESET at the next login), SIGSTOP one (its
# abandoned writes are aborted, then cleared by a LUN RESET when it is back),
# take a LUN offline. Zero client errors, every block checks out,
# and each path is reinstated once its target serves again.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/workload.sh"
source "$(dirname "$0")/iscsi.sh"
mp_init
make_image "$MP_TMP/disk.img" 16M
start_tgt a "$MP_TMP/disk.img"
start_tgt b "$MP_TMP/disk.img"
# One file on one host behind both targets: a flush on either covers both.
start_multipath mp "$(tgt_uri a)" "$(tgt_uri b)" \
  selector=round-robin timeout=1s connect-timeout=2s shared-cache=true
log=$(server_log mp)

mp_log "--- kill -9 target a"
start_workload w1 "$(mp_uri mp)" --duration 4 --connections 4 --seed 1
wait_for "the workload to get going" 20 workload_progress_over w1 300
kill_server a KILL
wait_for "path1 to fail" 10 grep -q "path path1: active -> failed" "$log"
restart_server a
wait_for "path1 to be reinstated" 30 grep -q "path path1: .* -> active: reinstated" "$log"
wait_workload w1
assert_workload_clean w1

mp_log "--- SIGSTOP target b"
start_workload w2 "$(mp_uri mp)" --duration 5 --connections 4 --seed 2
wait_for "the workload to get going" 20 workload_progress_over w2 300
stop_server b
wait_for "path2 to fail" 10 grep -q "path path2: active -> failed: .*timed out" "$log"
cont_server b
wait_for "path2 to be reinstated" 40 grep -q "path path2: .* -> active: reinstated" "$log"
wait_workload w2
assert_workload_clean w2

mp_log "--- LUN 1 of target a offline"
# tgt keeps serving READ and WRITE on an offline LU's open sessions; only
# TEST UNIT READY and new logins see NOT READY. So the workload runs clean,
# and the checker's TEST UNIT READY takes the path out once it is idle.
start_workload w3 "$(mp_uri mp)" --duration 3 --connections 4 --seed 3
wait_for "the workload to get going" 20 workload_progress_over w3 300
tgt_lu a offline
wait_workload w3
assert_workload_clean w3
wait_for "path1 to fail its checker probe" 15 \
  grep -q "path path1: active -> failed: checker probe failed" "$log"
n_back=$(grep -c "path path1: .* -> active: reinstated" "$log" || true)
tgt_lu a online
wait_for "path1 to be reinstated once online" 30 \
  eval '(($(grep -c "path path1: .* -> active: reinstated" "$log") > n_back))'
verify_blocks=$(workload_stat w3 verified)
mp_log "verified $verify_blocks blocks after the last round"
