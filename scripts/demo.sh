#!/usr/bin/env bash
# The demo: two upstream NBD servers over one image, the multipath disk over
# both, a read+write integrity workload while one path is killed (-9) and
# later brought back, then what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

export MP_SOURCE=$PWD
# shellcheck source=../tests/integration/functions.sh
source tests/integration/functions.sh
source tests/integration/workload.sh
mp_init

make_image "$MP_TMP/disk.img" 64M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
MP_VERBOSE=1 start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" \
  selector=latency timeout=500ms connect-timeout=500ms shared-cache=true
log=$(server_log mp)

secs() { _mp_clock; echo $(((_mp_now - t0) / 1000)); }  # ms since the workload started
_mp_clock
t0=$_mp_now
start_workload w "$(mp_uri mp)" --size $((64 << 20)) --duration 8 --connections 4
wait_for "the workload to get going" 20 workload_progress_over w 3000
t_kill=$(secs)
kill_upstream a KILL
wait_for "path1 to fail" 10 grep -q "path path1: active -> failed" "$log"
t_failed=$(secs)
wait_for "more I/O on path2 alone" 20 workload_progress_over w $(($(<"$MP_TMP/w.progress") + 10000))
t_restart=$(secs)
restart_upstream a
wait_for "path1 to be reinstated" 20 grep -q "path path1: .* -> active: reinstated" "$log"
t_back=$(secs)
wait_workload w
shutdown_multipath mp

echo
echo "================ nbd-multipath demo ================"
printf '%8s ms  workload started (4 connections, 4 KiB reads and writes, flushes)\n' 0
printf '%8s ms  path1 killed with SIGKILL\n' "$t_kill"
printf '%8s ms  path1 failed:      %s\n' "$t_failed" \
  "$(grep -m1 'path path1: active -> failed' "$log" | sed 's/.*failed: //')"
printf '%8s ms  path1 restarted\n' "$t_restart"
printf '%8s ms  path1 back:        %s\n' "$t_back" \
  "$(grep -m1 'path path1: .* -> active: reinstated' "$log" | sed 's/.*active: //')"
echo
echo "Requests per path (from the plugin at shutdown):"
grep -E "debug: path path[0-9]: state=" "$log" | sed 's/.*debug: /  /'
grep -E "debug: requests=[0-9]+ failed=" "$log" | sed 's/.*debug: /  /'
echo
echo "Client: $(<"$MP_TMP/w.json")"
errors=$(workload_stat w errors)
wrong=$(workload_stat w wrong)
echo "Client errors: $errors   wrong reads: $wrong   blocks verified: $(workload_stat w verified)"
((errors == 0 && wrong == 0)) || { echo "DEMO FAILED"; exit 1; }
echo "Client errors: 0. Every block verified."
