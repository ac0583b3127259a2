#!/usr/bin/env bash
# Self-test of tests/integration/functions.sh.  Needs nbdkit, nbdinfo, nbdcopy
# and fio, not the multipath plugin: where a "multipath" server is needed,
# nbdkit's own nbd plugin stands in for it.
#
#   MP_SOURCE=/work/main bash tests/integration/test-harness-selftest.sh
#
# Checks: two upstreams over one image (write through one, read through the
# other); verify_pattern catches a wrong seed and a single bad block; kill -9
# and restart; SIGSTOP makes a client hang until SIGCONT; the error filter
# fails requests only while its error-file exists; the pause filter; fio in
# the foreground and background; start_multipath / shutdown checks; and that
# cleanup stops every server when a test fails, is interrupted or is killed.
# shellcheck disable=SC2016,SC2119  # child scripts are single-quoted on purpose; fio_* default to $MP_FIO_JSON
FUNCS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/functions.sh"
# shellcheck source-path=SCRIPTDIR source=functions.sh
source "$FUNCS"
mp_init
mp_require nbdcopy fio

SIZE=64M

# ------------------------------------------------------ pure helpers ----
assert_eq 67108864 "$(mp_bytes 64M)" "mp_bytes 64M"
assert_eq 4096 "$(mp_bytes 4KiB)" "mp_bytes 4KiB"
assert_eq 1073741824 "$(mp_bytes 1G)" "mp_bytes 1G"
assert_eq 2500000 "$(_mp_secs_to_us 2.5)" "_mp_secs_to_us 2.5"
assert_eq 300000 "$(_mp_secs_to_us 0.3)" "_mp_secs_to_us 0.3"

# Milliseconds since the epoch (for checking that waits are bounded).
now_ms() { _mp_clock; echo $((_mp_now / 1000)); }

# A pid that is not our child is gone once it is absent or a zombie.
pid_gone() { [[ $(_mp_state "$1") == gone || $(_mp_state "$1") == Z ]]; }

# ------------------------------------- two upstreams over one image ----
make_image "$MP_TMP/disk.img" "$SIZE"
start_upstream a file "$MP_TMP/disk.img"
start_upstream b --filter=error file "$MP_TMP/disk.img" \
  error-rate=100% error-file="$(error_file b)"
A=$(upstream_uri a)
B=$(upstream_uri b)
assert_eq "nbd+unix:///?socket=$MP_TMP/a.sock" "$A" "upstream_uri a"
assert_eq "$(mp_bytes $SIZE)" "$(nbdinfo --size "$B")" "size seen through b"

t0=$(now_ms)
write_pattern "$A" 7 "$SIZE"
verify_pattern "$B" 7 "$SIZE"
mp_log "64 MiB pattern written and verified in $(($(now_ms) - t0)) ms"

# verify_pattern must notice another seed...
if verify_pattern "$B" 8 "$SIZE" 2>"$MP_TMP/verify-seed.out"; then
  fail "verify_pattern accepted the pattern of another seed"
fi
assert_contains "$MP_TMP/verify-seed.out" "16384 of 16384 blocks differ"
# ...and a single damaged block (written behind the servers' backs: the
# file plugin reads through the page cache, so both servers see it).
printf 'X' | dd of="$MP_TMP/disk.img" bs=1 seek=$((100 * 4096 + 1234)) conv=notrunc status=none
if verify_pattern "$A" 7 "$SIZE" 2>"$MP_TMP/verify-block.out"; then
  fail "verify_pattern missed a one-byte change in block 100"
fi
assert_contains "$MP_TMP/verify-block.out" "1 of 16384 blocks differ"
assert_contains "$MP_TMP/verify-block.out" "block 100 \\(offset 409600\\)"
write_pattern "$B" 7 "$SIZE"
verify_pattern "$A" 7 "$SIZE"

# ---------------------------------------------------- kill -9, restart ----
old=$(server_pid a)
kill_upstream a
not server_running a || fail "a still running after kill -9"
pid_gone "$old" || fail "pid $old still exists after kill_upstream"
# The socket file is stale now: a client fails at once instead of hanging.
t0=$(now_ms)
if timeout 5 nbdinfo --size "$A" >/dev/null 2>&1; then fail "a still serves after kill -9"; fi
(($(now_ms) - t0 < 2000)) || fail "a client of a killed server did not fail fast"
restart_upstream a
new=$(server_pid a)
[[ $new != "$old" ]] || fail "restart_upstream kept pid $old"
verify_pattern "$A" 7 "$SIZE"

# ------------------------------------------------- SIGSTOP / SIGCONT ----
stop_upstream a
assert_eq T "$(_mp_state "$(server_pid a)")" "state of a stopped server"
t0=$(now_ms)
st=0
timeout 2 nbdinfo --size "$A" >/dev/null 2>&1 || st=$?
elapsed=$(($(now_ms) - t0))
assert_eq 124 "$st" "exit status of a client of a stopped server under timeout 2"
((elapsed >= 1900)) || fail "client of a stopped server returned after ${elapsed} ms, expected a 2 s hang"
cont_upstream a
wait_for "a to serve again after SIGCONT" 5 server_serves a
verify_pattern "$A" 7 "$SIZE"

# ---------------------------------------- error filter + error-file ----
inject_errors b
if read_image "$B" 1M "$MP_TMP/should-fail" 2>"$MP_TMP/read-b.out"; then
  fail "reads through b succeeded while $(error_file b) exists"
fi
run_fio "$B" --rw=randread --bs=4k --iodepth=4 --runtime=1 --time_based \
  --continue_on_error=all || fail "fio with continue_on_error failed"
errs=$(fio_errors)
((errs > 0)) || fail "fio saw no errors while the error-file exists"
assert_eq 0 "$(fio_stat read.io_bytes)" "bytes read while the error-file exists"
mp_log "error filter on: $errs fio errors"
# Without continue_on_error fio stops at the first error with a non-zero exit.
if run_fio "$B" --rw=randread --bs=4k --size=1M 2>/dev/null; then
  fail "fio succeeded while the error-file exists"
fi
clear_errors b
verify_pattern "$B" 7 "$SIZE"
run_fio "$B" --rw=randread --bs=4k --iodepth=8 --runtime=1 --time_based
assert_eq 0 "$(fio_errors)" "fio errors after the error-file is gone"
iops=$(fio_iops)
mib=$(fio_bw_mib)
mp_log "error filter off: $iops IOPS, $mib MiB/s"
[[ $iops != 0 && $iops != 0.0 ]] || fail "fio reported 0 IOPS"

# fio in the background, e.g. while a path fails.
start_fio bg "$A" --rw=randrw --bs=64k --iodepth=4 --runtime=1 --time_based
wait_fio bg
assert_eq 0 "$(fio_errors)" "background fio errors"
assert_eq "$MP_TMP/bg.json" "$MP_FIO_JSON" "MP_FIO_JSON after wait_fio"
((${#_MP_FIO_PID[@]} == 1)) || fail "start_fio did not record its pid"
write_pattern "$A" 7 "$SIZE" # fio wrote over the pattern

# ------------------------------------------------------- pause filter ----
start_upstream p --filter=pause memory 1M pause-control="$(pause_ctl p)"
P=$(upstream_uri p)
pause_requests p
# A client started now hangs until resumed.  (It is not killed while paused:
# nbdkit 1.32 can abort with "raw_send_socket: Assertion `sock >= 0'" when
# it sends paused replies to a client that has gone away.)
timeout 20 nbdcopy --no-extents "$P" null: &
client=$!
_mp_track "$client"
st=0
timeout 2 tail --pid="$client" -f /dev/null || st=$?
assert_eq 124 "$st" "a client of a paused server still running after 2 s"
resume_requests p
wait "$client" || fail "the client of a paused server failed after resume"
shutdown_server p

# ------------------------------------------------------------ wait_for ----
wait_for "b to serve" 5 server_serves b
flag=$MP_TMP/flag
( # A condition that becomes true while we poll.
  sleep 0.3
  : >"$flag"
) &
helper=$!
wait_for "the flag file" 5 test -e "$flag"
wait "$helper"

# ---------------------------------------------- start_multipath, with ----
# nbdkit's nbd plugin standing in for ours (same command line shape: a
# plugin .so and key=value args), run under MP_PRELOAD when MP_SANITIZE is set.
plugindir=$(nbdkit --dump-config | sed -n 's/^plugindir=//p')
NBDPLUGIN=$plugindir/nbdkit-nbd-plugin.so
MEMPLUGIN=$plugindir/nbdkit-memory-plugin.so
[[ -e $NBDPLUGIN && -e $MEMPLUGIN ]] || fail "no nbd or memory plugin in $plugindir"
(
  # In a subshell so that MP_PLUGIN stays the real plugin for the children below.
  MP_PLUGIN=$NBDPLUGIN
  # A subshell must not be able to start servers (they would escape cleanup).
  start_multipath m "uri=$A"
) 2>"$MP_TMP/subshell.out" && fail "start_multipath ran in a subshell"
assert_contains "$MP_TMP/subshell.out" "must run in the test's main shell"
saved_plugin=$MP_PLUGIN
MP_PLUGIN=$NBDPLUGIN
start_multipath m "uri=$A"
verify_pattern "$(mp_uri m)" 7 "$SIZE"
if [[ -n $MP_PRELOAD ]]; then
  grep -q "$(basename "$MP_PRELOAD")" "/proc/$(server_pid m)/maps" ||
    fail "MP_PRELOAD ($MP_PRELOAD) not loaded in the multipath nbdkit"
fi
shutdown_multipath m
MP_PLUGIN=$saved_plugin

# ----------------------------------------- cleanup, in child tests ----
# Each child is a test of its own (sources functions.sh, calls mp_init); it
# writes the pids it started to $OUT.pids.  Its "multipath" plugin is nbdkit's
# memory plugin: `start_multipath m 1M` serves a 1 MiB RAM disk.
run_child() { # NAME SCRIPT -> exit status in $child_st, output in $MP_TMP/NAME.out
  local name=$1
  printf 'source %q\nmp_init\n%s\n' "$FUNCS" "$2" >"$MP_TMP/$name.sh"
  child_st=0
  OUT=$MP_TMP/$name MP_PLUGIN=$MEMPLUGIN MP_TEST_NAME=$name \
    timeout -k 5 60 bash "$MP_TMP/$name.sh" >"$MP_TMP/$name.out" 2>&1 || child_st=$?
}
check_pids_gone() { # NAME
  local p
  [[ -s $MP_TMP/$1.pids ]] || fail "child $1 recorded no pids"
  for p in $(<"$MP_TMP/$1.pids"); do
    wait_for "pid $p of child $1 to be gone" 10 pid_gone "$p"
  done
}

# A failing test: its servers (one of them stopped) are stopped, its logs
# shown, its temp dir removed, and its status is 1.
run_child fails '
start_upstream u memory 1M
start_upstream s memory 1M
stop_upstream s
echo "$(server_pid u) $(server_pid s)" >"$OUT.pids"
echo "$MP_TMP" >"$OUT.tmp"
fail "deliberate failure"'
assert_eq 1 "$child_st" "exit status of a failing child test"
check_pids_gone fails
assert_contains "$MP_TMP/fails.out" "FAIL: deliberate failure"
assert_contains "$MP_TMP/fails.out" "===== last [0-9]+ lines of u.log"
[[ ! -e $(<"$MP_TMP/fails.tmp") ]] || fail "failing child left its MP_TMP behind"

# A command failing under set -e: reported with its line.
run_child errexit '
start_upstream u memory 1M
echo "$(server_pid u)" >"$OUT.pids"
false'
assert_eq 1 "$child_st" "exit status of a child stopped by set -e"
check_pids_gone errexit
assert_contains "$MP_TMP/errexit.out" "last failed command: .*false"

# wait_for gives up at its deadline, and fails the test.
t0=$(now_ms)
run_child waits '
start_upstream u memory 1M
echo "$(server_pid u)" >"$OUT.pids"
wait_for "something that never happens" 0.5 false'
elapsed=$(($(now_ms) - t0))
assert_eq 1 "$child_st" "exit status of a child whose wait_for timed out"
assert_contains "$MP_TMP/waits.out" "timed out after 0.5s waiting for: something that never happens"
((elapsed < 8000)) || fail "wait_for 0.5 took ${elapsed} ms"
check_pids_gone waits

# A multipath server that dies by itself, or prints a sanitizer report,
# fails a test that would otherwise pass.
run_child crash '
start_multipath m 1M
echo "$(server_pid m)" >"$OUT.pids"
kill -9 "$(server_pid m)"'
assert_eq 1 "$child_st" "exit status of a child whose multipath server crashed"
assert_contains "$MP_TMP/crash.out" "multipath server 'm' .* exited with status 137"
check_pids_gone crash
run_child sanitizer '
start_multipath m 1M
echo "$(server_pid m)" >"$OUT.pids"
echo "==1==ERROR: AddressSanitizer: heap-use-after-free (fake)" >>"$(server_log m)"'
assert_eq 1 "$child_st" "exit status of a child with a sanitizer report"
assert_contains "$MP_TMP/sanitizer.out" "sanitizer report in m.log"
check_pids_gone sanitizer
# ...while a clean one passes.
run_child passes '
start_multipath m 1M
start_upstream u memory 1M
echo "$(server_pid m) $(server_pid u)" >"$OUT.pids"'
assert_eq 0 "$child_st" "exit status of a passing child"
check_pids_gone passes
# A missing plugin: skip when MP_PLUGIN was defaulted, fail when it was given.
printf 'source %q\nmp_init\nstart_multipath m\n' "$FUNCS" >"$MP_TMP/noplugin.sh"
st=0
env -u MP_PLUGIN MP_SOURCE="$MP_TMP/nowhere" bash "$MP_TMP/noplugin.sh" >/dev/null 2>&1 || st=$?
assert_eq 77 "$st" "defaulted, missing plugin"
st=0
MP_PLUGIN=$MP_TMP/nowhere.so bash "$MP_TMP/noplugin.sh" >/dev/null 2>&1 || st=$?
assert_eq 1 "$st" "given, missing plugin"

# Interrupted (SIGTERM, as CTest's timeout or a ^C would): cleanup runs.
printf 'source %q\nmp_init\nstart_upstream u memory 1M\necho "$(server_pid u)" >"$OUT.pids.tmp"\nmv "$OUT.pids.tmp" "$OUT.pids"\nwait_for forever 60 false\n' \
  "$FUNCS" >"$MP_TMP/interrupted.sh"
OUT=$MP_TMP/interrupted bash "$MP_TMP/interrupted.sh" >"$MP_TMP/interrupted.out" 2>&1 &
child=$!
_mp_track "$child"
wait_for "interrupted child to start its server" 10 test -s "$MP_TMP/interrupted.pids"
kill -TERM "$child"
st=0
wait "$child" || st=$?
assert_eq 143 "$st" "exit status of a child test stopped by SIGTERM"
check_pids_gone interrupted

# SIGKILLed: no trap runs, but --exit-with-parent takes the servers down.
OUT=$MP_TMP/killed bash "$MP_TMP/interrupted.sh" >"$MP_TMP/killed.out" 2>&1 &
child=$!
_mp_track "$child"
wait_for "killed child to start its server" 10 test -s "$MP_TMP/killed.pids"
kill -KILL "$child"
wait "$child" || true
check_pids_gone killed

mp_log "functions.sh self-test passed"
