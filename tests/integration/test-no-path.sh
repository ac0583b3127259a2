#!/usr/bin/env bash
# All paths down. Queue policy: a request waits and completes when a path
# returns. Fail policy: EIO comes promptly. SIGTERM with requests queued ends
# promptly and cleanly.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit
make_image "$MP_TMP/disk.img" 4M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"

# One read of 4 KiB at offset 0 through URI; exit status 0 if it worked.
read_once() {
  "$MP_PYTHON" -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.pread(4096, 0)' "$1"
}
write_config() {  # NAME POLICY
  cat >"$MP_TMP/$1.yaml" <<YAML
paths:
  - { name: a, uri: "$(upstream_uri a)" }
  - { name: b, uri: "$(upstream_uri b)" }
timeouts: { attempt: 500ms, connect: 500ms }
checker: { interval: 100ms }
no-path: { policy: $2, max-time: 60s }
durability: { shared-cache: true }
YAML
}

# --- queue ---
write_config q queue
MP_VERBOSE=1 start_multipath mq config="$MP_TMP/q.yaml"
kill_upstream a KILL
kill_upstream b KILL
wait_for "the disk to have no usable path" 10 grep -q "group: default -> (none)" "$(server_log mq)"
read_once "$(mp_uri mq)" &
reader=$!
_mp_track "$reader"
wait_for "the read to be queued" 10 grep -q "read at 0 queued: no usable path (1 queued)" "$(server_log mq)"
kill -0 "$reader" 2>/dev/null || fail "the read ended while no path was usable"
restart_upstream a
wait "$reader" || fail "the queued read failed once a path came back"
mp_log "queued read completed after path a returned"

# --- SIGTERM with a request queued ---
kill_upstream a KILL
wait_for "the disk to have no usable path again" 10 \
  bash -c "[[ \$(grep -c 'group: default -> (none)' '$(server_log mq)') -ge 2 ]]"
read_once "$(mp_uri mq)" &
reader=$!
_mp_track "$reader"
wait_for "the second read to be queued" 10 \
  bash -c "[[ \$(grep -c 'read at 0 queued: no usable path' '$(server_log mq)') -ge 2 ]]"
_mp_clock
t0=$_mp_now
shutdown_multipath mq
_mp_clock
mp_log "SIGTERM with a queued request: exited in $(_mp_us_to_s $((_mp_now - t0)))s"
((_mp_now - t0 < 5000000 * _MP_TIME_FACTOR)) || fail "SIGTERM took more than 5 s with a request queued"
if wait "$reader"; then fail "the queued read succeeded although the server shut down"; fi

# --- fail ---
restart_upstream a
restart_upstream b
write_config f fail
start_multipath mf config="$MP_TMP/f.yaml"
read_once "$(mp_uri mf)" || fail "read with paths up failed"
kill_upstream a KILL
kill_upstream b KILL
wait_for "the disk to have no usable path" 10 grep -q "group: default -> (none)" "$(server_log mf)"
_mp_clock
t0=$_mp_now
if read_once "$(mp_uri mf)" 2>"$MP_TMP/fail.err"; then fail "read succeeded with no path"; fi
_mp_clock
assert_contains "$MP_TMP/fail.err" "Input/output error"
((_mp_now - t0 < 2000000 * _MP_TIME_FACTOR)) || fail "EIO took more than 2 s under the fail policy"
