#!/usr/bin/env bash
# The template unit nbd-multipath@.service: systemd-analyze verify accepts it,
# and its ExecStart and ExecReload, run as systemd would (NOTIFY_SOCKET, the
# runtime directory, the instance's config file) with this build's plugin
# and CLI: the plugin sends READY=1, ExecReload reloads through the control
# socket and the disk keeps serving, SIGTERM (KillSignal) stops it with
# status 0.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit systemd-analyze python3
mp_require_ctl
build=$(dirname "$MP_PLUGIN")
unit_in=$build/nbd-multipath@.service
[[ -f $unit_in ]] || mp_skip "the unit is not configured in $build"

# --- systemd-analyze verify, on an instance of the template ----------------
mkdir -p "$MP_TMP/units"
unit=$MP_TMP/units/nbd-multipath@disk1.service
# The CLI is not installed here: ExecReload points at this build's.
sed "s|^ExecReload=[^ ]*|ExecReload=$MP_CTL|" "$unit_in" >"$unit"
systemd-analyze verify --man=no "$unit" >"$MP_TMP/verify.log" 2>&1 ||
  { cat "$MP_TMP/verify.log" >&2; fail "systemd-analyze verify refused the unit"; }
# Warnings about the unit itself are printed but do not fail verify.
if grep -F "nbd-multipath@" "$MP_TMP/verify.log"; then
  fail "systemd-analyze verify warned about the unit"
fi
for key in Type=notify RuntimeDirectory=nbd-multipath/%i ExecReload= NoNewPrivileges=yes \
  ProtectSystem=strict CapabilityBoundingSet=; do
  grep -q "^$key" "$unit" || fail "the unit lacks $key"
done

# --- its commands, as systemd would run them --------------------------------
# ExecStart with the instance name, the runtime directory and /etc moved into
# $MP_TMP, the plugin name replaced by this build's plugin.
inst=disk1 run=$MP_TMP/run/nbd-multipath/disk1 etc=$MP_TMP/etc/nbd-multipath
mkdir -p "$run" "$etc"
make_image "$MP_TMP/disk.img" 4M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
cat >"$etc/$inst.yaml" <<YAML
paths:
  - { name: a, uri: "$(upstream_uri a)" }
  - { name: b, uri: "$(upstream_uri b)" }
durability: { shared-cache: true }
control: { socket: /run/nbd-multipath/$inst/ctl.sock }
YAML
sed -i "s|/run/nbd-multipath/|$MP_TMP/run/nbd-multipath/|" "$etc/$inst.yaml"
unit_cmd() {  # KEY: the command line of KEY= in the unit, continuation lines joined
  awk -v k="$1=" 'index($0, k) == 1 { on = 1; $0 = substr($0, length(k) + 1) }
    on { more = sub(/\\$/, ""); printf "%s ", $0; if (!more) exit }' "$unit" |
    sed -e "s|%i|$inst|g" -e "s|/run/nbd-multipath/|$MP_TMP/run/nbd-multipath/|g" \
      -e "s|/etc/nbd-multipath/|$etc/|g" -e 's|\$NBDKIT_OPTIONS||' \
      -e "s| multipath config=| $MP_PLUGIN config=|"
}
read -r -a start_cmd <<<"$(unit_cmd ExecStart)"
read -r -a reload_cmd <<<"$(unit_cmd ExecReload)"
[[ ${start_cmd[*]} == *"--log=syslog"* && ${start_cmd[*]} == *"$MP_PLUGIN config=$etc/$inst.yaml"* ]] ||
  fail "unexpected ExecStart: ${start_cmd[*]}"
# --log=syslog would send errors away from this test: the test reads stderr.
start_cmd=("${start_cmd[@]/--log=syslog/--log=stderr}")

# The notify socket systemd would listen on.
notify=$MP_TMP/notify.sock
python3 - "$notify" >"$MP_TMP/notify.out" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
msg = s.recv(4096).decode()
print(msg, flush=True)
PY
notify_pid=$!
kill_quietly() { kill "$1" 2>/dev/null || true; }
mp_on_cleanup kill_quietly "$notify_pid"
wait_for "the notify socket" 10 test -S "$notify"

mp_log "ExecStart: ${start_cmd[*]}"
env NOTIFY_SOCKET="$notify" ${MP_PRELOAD:+LD_PRELOAD=$MP_PRELOAD} "${start_cmd[@]}" \
  </dev/null >"$MP_TMP/unit.log" 2>&1 &
pid=$!
mp_on_cleanup kill_quietly "$pid"
wait_for "READY=1 from the plugin" 20 grep -q "^READY=1" "$MP_TMP/notify.out"
[[ -S $run/nbd.sock ]] || fail "ExecStart's NBD socket $run/nbd.sock does not exist at READY=1"
nbdinfo --size "nbd+unix:///?socket=$run/nbd.sock" >/dev/null || fail "no NBD handshake at READY=1"

# ExecReload through the control socket, a changed setting in the file.
wait_for "the control socket" 10 test -S "$run/ctl.sock"
sed -i 's/shared-cache: true/shared-cache: true }\ntimeouts: { attempt: 3s/' "$etc/$inst.yaml"
"${reload_cmd[@]}" >"$MP_TMP/reload.out" 2>&1 || { cat "$MP_TMP/reload.out" >&2; fail "ExecReload failed"; }
wait_for "the reload notice" 10 grep -q "notice: reload:" "$MP_TMP/unit.log"
# A file with an error: ExecReload fails (systemctl reload reports it).
echo "paths: [" >>"$etc/$inst.yaml"
if "${reload_cmd[@]}" >"$MP_TMP/reload2.out" 2>&1; then fail "ExecReload succeeded on a broken file"; fi
nbdinfo --size "nbd+unix:///?socket=$run/nbd.sock" >/dev/null || fail "the disk stopped serving"

kill -TERM "$pid"
wait "$pid"
rc=$?
assert_eq 0 "$rc" "exit status after SIGTERM"
if grep -E "(^|: )error: " "$MP_TMP/unit.log" | grep -v "reload refused"; then
  fail "error lines other than the refused reload"
fi
