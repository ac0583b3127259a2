#!/usr/bin/env bash
# Log levels an operator can alert on: a healthy two-path start, a copy, a
# SIGHUP reload and a clean stop print no error line (routine events are
# notices); a killed path prints exactly one error line, naming the path and
# why, however many reconnects fail while it stays down.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit
mp_require nbdcopy
mp_require_ctl

make_image "$MP_TMP/disk.img" 8M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"

CTL_SOCK=$MP_TMP/ctl.sock
cat >"$MP_TMP/mp.yaml" <<YAML
paths:
  - { name: alpha, uri: "$(upstream_uri a)" }
  - { name: beta, uri: "$(upstream_uri b)" }
timeouts: { attempt: 1s, connect: 1s }
failover: { reconnect-min: 20ms, reconnect-max: 50ms }
checker: { interval: 50ms }
durability: { shared-cache: true }
control: { socket: "$CTL_SOCK" }
YAML
ctl() { timeout -k 5 30 "$MP_CTL" -s "$CTL_SOCK" "$@"; }
# error_lines LOG: nbdkit's error lines (our errors go through nbdkit_error).
error_lines() { grep -E '(^|: )error: ' "$1" || true; }
reconnects_of() { ctl --json show paths | python3 -c '
import json, sys
print(next(p["reconnects"] for p in json.load(sys.stdin) if p["name"] == sys.argv[1]))' "$1"; }

# --- healthy: start, copy, reload (SIGHUP), stop: notices, no errors ---------
start_multipath mp config="$MP_TMP/mp.yaml"
log=$(server_log mp)
wait_for "both paths active" 10 ctl_paths_active "$CTL_SOCK" alpha beta
nbdcopy --flush "$MP_TMP/disk.img" "$(mp_uri mp)"
sed -i 's/attempt: 1s/attempt: 2s/' "$MP_TMP/mp.yaml"
kill -HUP "$(server_pid mp)"
wait_for "the SIGHUP reload" 10 grep -q "notice: reload:" "$log"
server_serves mp || fail "the disk stopped serving after SIGHUP"
shutdown_server mp
assert_contains "$log" "multipath: notice: path alpha: probing -> active: probe read succeeded"
assert_contains "$log" "multipath: notice: group: \\(none\\) -> default: a path is usable"
errs=$(error_lines "$log")
[[ -z $errs ]] || fail "a healthy start, copy, reload and stop printed error lines:
$errs"
mp_log "healthy run: $(grep -c 'notice:' "$log") notices, 0 errors"

# --- a killed path: one error line, naming it, for the whole outage ---------
start_multipath mp2 config="$MP_TMP/mp.yaml"
log2=$(server_log mp2)
wait_for "both paths active" 10 ctl_paths_active "$CTL_SOCK" alpha beta
kill_upstream a KILL
wait_for "alpha to fail" 10 grep -q "path alpha: active -> failed" "$log2"
# Several reconnects fail while a is down; none of them is an error.
reconnected_5_times() { (($(reconnects_of alpha) >= 5)); }
wait_for "5 failed reconnects of alpha" 20 reconnected_5_times
nbdcopy --flush "$MP_TMP/disk.img" "$(mp_uri mp2)"  # beta serves alone
errs=$(error_lines "$log2")
n=$(grep -c . <<<"$errs")
((n == 1)) || fail "expected exactly one error line for the outage, got $n:
$errs"
grep -q "error: path alpha: active -> failed: " <<<"$errs" ||
  fail "the error line does not name the path and its reason: $errs"
failures=$(ctl --json show paths | python3 -c '
import json, sys
print(next(p["failures"] for p in json.load(sys.stdin) if p["name"] == "alpha"))')
assert_eq 1 "$failures" "failures of alpha (one outage)"
# The event ring keeps the failure, with the reconnects folded into one entry.
ctl show events >"$MP_TMP/events.txt"
assert_contains "$MP_TMP/events.txt" "active -> failed"
folded=$(grep -c "reconnecting" "$MP_TMP/events.txt" || true)
assert_eq 1 "$folded" "folded reconnect entries of alpha"
restart_upstream a
wait_for "alpha reinstated" 20 grep -q "notice: path alpha: .* -> active: reinstated" "$log2"
shutdown_server mp2
n=$(error_lines "$log2" | grep -c . || true)
assert_eq 1 "$n" "error lines after the reinstatement and a clean stop"
