#!/usr/bin/env bash
# 200 clients hang up with reads and writes in flight, four at a time, while
# another client runs the verified workload: the disk stays up, the workload
# sees no error and no wrong block (a reply sent to the wrong client would
# show up as either), and the disk still serves afterwards.
# nbdkit 1.32.4 to 1.33.9 abort here (raw_send_socket: Assertion 'sock >= 0').
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/workload.sh"
mp_init
# Under tsan, one CI run of this test lost the disk 3 s in:
#   ThreadSanitizer failed to allocate 0x1ec1000076000 bytes at address
#   100000d8d000 (errno: 12)
# right after nbdkit logged "read data: NBD_CMD_WRITE: Bad message" for a
# client that hung up mid-write; run by hand on the same build it passed.
# Not yet diagnosed: until it is, this runs in the default and asan builds.
[[ ${MP_SANITIZE:-} != thread ]] || mp_skip "not run under tsan (a ThreadSanitizer shadow allocation failure, see the comment)"
_mp_require_python
make_image "$MP_TMP/disk.img" 64M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" shared-cache=true

# The workload owns the first 16 MiB; the hang-ups read and write above it.
start_workload w "$(mp_uri mp)" --size $((16 << 20)) --duration 600 --connections 2 \
  --stop-file "$MP_TMP/w.stop"
wait_for "the workload to get going" 20 workload_progress_over w 200

# Fewer under a sanitizer (each round is several times slower there).
default_rounds=50
[[ -z ${MP_SANITIZE:-} ]] || default_rounds=15
rounds=${MP_ABRUPT_ROUNDS:-$default_rounds}
mp_log "abrupt clients: 4 x $rounds rounds"
"$MP_PYTHON" "$MP_SOURCE/tests/integration/abrupt_clients.py" "$(mp_uri mp)" \
  --rounds "$rounds" --parallel 4 --offset $((16 << 20)) --span $((48 << 20)) \
  ${MP_ABRUPT_SEED:+--seed "$MP_ABRUPT_SEED"} >"$MP_TMP/abrupt.json" 2>"$MP_TMP/abrupt.log" ||
  { cat "$MP_TMP/abrupt.log" >&2; }
mp_log "abrupt clients: $(<"$MP_TMP/abrupt.json")"
server_running mp || fail "the disk died under abrupt disconnects"
assert_not_contains "$(server_log mp)" "Assertion|Aborted|raw_send_socket"
completed=$("$MP_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["completed"])' "$MP_TMP/abrupt.json")
((completed == 4 * rounds)) || fail "only $completed of $((4 * rounds)) abrupt clients got as far as hanging up mid-flight"

touch "$MP_TMP/w.stop"
wait_workload w
assert_workload_clean w
nbdinfo --size "$(mp_uri mp)" >/dev/null || fail "the disk stopped serving new clients"
