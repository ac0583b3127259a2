#!/usr/bin/env bash
# File descriptors: the plugin raises its soft open-file limit to the hard
# limit at start-up; and with both limits then lowered to 64 (as under
# `ulimit -Hn 64`) and the descriptor table filled by NBD clients (each holds
# a socket and a pipe pair in nbdkit), 20 control requests in a row are
# answered, and the exhaustion is logged exactly once.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit prlimit
_mp_require_python

mp_require_ctl
hard=$(ulimit -Hn)
soft=$(ulimit -Sn)
[[ $hard == unlimited ]] || ((hard > 256)) ||
  mp_skip "the hard open-file limit is only $hard: cannot show the soft limit being raised"

make_image "$MP_TMP/disk.img" 16M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
CTL_SOCK=$MP_TMP/ctl.sock
cat >"$MP_TMP/mp.yaml" <<YAML
paths:
  - { name: a, uri: "$(upstream_uri a)" }
  - { name: b, uri: "$(upstream_uri b)" }
timeouts: { attempt: 1s, connect: 1s }
durability: { shared-cache: true }
control: { socket: "$CTL_SOCK" }
YAML

# --- the soft limit is raised to the hard limit ---
ulimit -Sn 64
start_multipath mp config="$MP_TMP/mp.yaml"
ulimit -Sn "$soft"
pid=$(server_pid mp)
read -r _ _ _ mp_soft mp_hard _ < <(grep '^Max open files' "/proc/$pid/limits")
mp_log "started with a soft limit of 64 (hard $hard): the server runs with $mp_soft/$mp_hard"
[[ $mp_soft == "$mp_hard" ]] || fail "soft open-file limit $mp_soft, not raised to the hard limit $mp_hard"
[[ $mp_hard == "$hard" || ($hard == unlimited && $mp_hard =~ ^[0-9]+$) ]] ||
  fail "hard open-file limit $mp_hard, expected $hard"

ctl() { timeout -k 5 20 "$MP_CTL" -s "$CTL_SOCK" --timeout 5 "$@"; }
both_active() { ctl_paths_active "$CTL_SOCK" a b; }
wait_for "both paths to be active" 20 both_active

# --- out of descriptors: limits 64/64 now, as under `ulimit -Hn 64` ---
prlimit --pid "$pid" --nofile=64:64 || fail "prlimit could not lower the server's limit"
# NBD clients, each holding a socket and a pipe pair in nbdkit, until fewer
# than 3 descriptors are free below the limit (at most 80), then held control
# sessions for the last ones: the table is full, and no client waits in
# nbdkit's backlog. (A queued NBD client makes nbdkit retry accept at once,
# forever, taking any descriptor that comes free: see the README's Limits.)
"$MP_PYTHON" - "$(server_sock mp)" "$CTL_SOCK" "$pid" "$MP_TMP/clients.ready" <<'PY' &
import os, socket, sys, time
nbd_sock, ctl_sock, pid, ready = sys.argv[1:]
def free():
    used = {int(f) for f in os.listdir(f"/proc/{pid}/fd")}
    return [n for n in range(64) if n not in used]
def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
held, nbd = [], 0
while len(free()) >= 3 and nbd < 80:
    s = connect(nbd_sock)
    s.settimeout(5)
    if not s.recv(8):  # nbdkit's greeting: its thread has its pipe
        sys.exit("nbdkit dropped an NBD client with descriptors free")
    held.append(s)
    nbd += 1
ctl = 0
deadline = time.monotonic() + 5
while free() and time.monotonic() < deadline:
    if len(held) < nbd + ctl + 1:
        held.append(connect(ctl_sock))
        ctl += 1
    time.sleep(0.01)
with open(ready, "w") as f:
    f.write(f"{nbd} NBD clients and {ctl} control sessions, {len(free())} descriptors free\n")
time.sleep(60)  # killed by the test once it is done
PY
clients=$!
_mp_track "$clients"
# Failing with the clients connected would leave nbdkit waiting on them at
# cleanup: they go first.
fail_fds() {
  mp_log "the server's descriptors: $(find "/proc/$pid/fd" -mindepth 1 -printf '%l\n' | sed 's/:.*//' | sort | uniq -c | tr -s '\n ' ' ')"
  kill "$clients" 2>/dev/null
  fail "$@"
}
fds_full() { (($(find "/proc/$pid/fd" -mindepth 1 | wc -l) >= 63)); }
wait_for "80 NBD clients to connect" 10 test -s "$MP_TMP/clients.ready"
mp_log "holding $(<"$MP_TMP/clients.ready")"
wait_for "the server to run out of descriptors" 10 fds_full
exhaust_line='out of file descriptors (limit 64)'
for i in $(seq 20); do
  ctl show paths >"$MP_TMP/paths$i.out" 2>"$MP_TMP/paths$i.err" ||
    fail_fds "show paths $i with no descriptors left: $(cat "$MP_TMP/paths$i.err")"
  assert_contains "$MP_TMP/paths$i.out" '^a .* active '
done
mp_log "20 control requests answered with $(find "/proc/$pid/fd" -mindepth 1 | wc -l) descriptors open (limit 64)"
n=$(grep -c "control socket $CTL_SOCK: $exhaust_line" "$(server_log mp)" || true)
((n == 1)) || fail_fds "the exhaustion was logged $n times, expected once"
mp_log "nbdkit's own accept failures meanwhile: $(grep -c 'accept: Too many open files' "$(server_log mp)" || true) log lines"

# --- descriptors back: the clients go, and everything answers ---
kill "$clients"
wait "$clients" 2>/dev/null || true
prlimit --pid "$pid" --nofile="$mp_soft:$mp_hard" || true
wait_for "the control socket to answer after the clients left" 10 both_active
nbdinfo --size "$(mp_uri mp)" >/dev/null || fail "the disk does not serve NBD after the clients left"
n=$(grep -c "$exhaust_line" "$(server_log mp)" || true)
((n == 1)) || fail "the exhaustion was logged $n times in all, expected once"
