#!/usr/bin/env bash
# The control socket and nbd-multipath-ctl against a live disk with two paths
# in two groups: every command (human and --json output), error messages and
# exit statuses, socket permissions, and bad input on the socket while a
# read/write workload runs (I/O stays clean, the socket keeps answering).
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/workload.sh"
mp_init
mp_require nbdkit
_mp_require_python

mp_require_ctl
# The tree glyphs and µ below need a UTF-8 locale (test-ctl-cli.sh checks ASCII under C).
export LC_ALL=C.UTF-8

make_image "$MP_TMP/disk.img" 16M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
start_upstream c file "$MP_TMP/disk.img"  # joins by reload

CTL_SOCK=$MP_TMP/ctl.sock
write_config() {  # FILE SOCKET MODE [extra path line]
  cat >"$1" <<YAML
paths:
  - { name: a, uri: "$(upstream_uri a)", group: fast }
  - { name: b, uri: "$(upstream_uri b)", group: slow }
${4:-}
groups:
  - { name: fast, priority: 10 }
  - { name: slow, priority: 0 }
timeouts: { attempt: 1s, connect: 1s }
checker: { interval: 200ms }
durability: { shared-cache: true }
control: { socket: "$2", mode: "$3" }
YAML
}
write_config "$MP_TMP/mp.yaml" "$CTL_SOCK" 0600
start_multipath mp config="$MP_TMP/mp.yaml"

# ctl ARGS...: the CLI on this disk's socket, bounded in time.
ctl() { timeout -k 5 30 "$MP_CTL" -s "$CTL_SOCK" "$@"; }
# ctl_run NAME ARGS...: stdout to $MP_TMP/NAME.out, stderr to NAME.err, exit
# status in ctl_rc.
ctl_run() {
  local name=$1
  shift
  ctl_rc=0
  ctl "$@" >"$MP_TMP/$name.out" 2>"$MP_TMP/$name.err" || ctl_rc=$?
}
# expect_rc EXPECTED NAME ARGS...: ctl_run, and the exit status must match.
expect_rc() {
  local want=$1
  shift
  ctl_run "$@"
  if ((ctl_rc != want)); then
    cat "$MP_TMP/$1.out" "$MP_TMP/$1.err" >&2
    fail "nbd-multipath-ctl ${*:2}: exit status $ctl_rc, expected $want"
  fi
}
# py EXPR: a Python expression over the JSON on stdin (named r), printed.
py() {
  "$MP_PYTHON" -c 'import json, sys
r = json.load(sys.stdin)
v = eval("(" + sys.argv[1] + ")")  # parenthesized: may span lines
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}
path_field() { ctl --json show paths | py "[p['$2'] for p in r if p['name'] == '$1'][0]"; }
path_is() { [[ $(path_field "$1" state) == "$2" ]]; }
serving_group() { ctl --json show groups | py "''.join(g['name'] for g in r if g['serving'])"; }
serving_is() { [[ $(serving_group) == "$1" ]]; }
stat_is_at_least() { (($(ctl --json show stats | py "r['$1']") >= $2)); }
both_active() { path_is a active && path_is b active; }

wait_for "paths a and b to be active" 20 both_active
write_pattern "$(mp_uri mp)" 1 4M

# --- show: human and JSON ---
expect_rc 0 paths show paths
assert_contains "$MP_TMP/paths.out" '^name +uri +group +state +inflight +requests +errors +timeouts +failovers +p50 +p99$'
assert_contains "$MP_TMP/paths.out" '^a +nbd\+unix:///\?socket=.*/a\.sock +fast +active +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9.]+(µs|ms|s) +[0-9.]+(µs|ms|s)$'
assert_contains "$MP_TMP/paths.out" '^b +nbd\+unix:///\?socket=.*/b\.sock +slow +active '
ctl --json show paths >"$MP_TMP/paths.json"
py "sorted(p['name'] for p in r) == ['a', 'b'] and all(p['state'] == 'active' for p in r)" \
  <"$MP_TMP/paths.json" | grep -qx true || fail "show paths --json: $(cat "$MP_TMP/paths.json")"
py "[p for p in r if p['name'] == 'a'][0]['requests'] > 0 and 'latency_p99_us' in r[0] and 'failovers' in r[0]" \
  <"$MP_TMP/paths.json" | grep -qx true || fail "show paths --json lacks counters: $(cat "$MP_TMP/paths.json")"
# --json may also follow the command.
ctl show paths --json | py "len(r)" | grep -qx 2 || fail "show paths --json (after the command)"

expect_rc 0 groups show groups
assert_contains "$MP_TMP/groups.out" '^fast  priority 10  serving$'
assert_contains "$MP_TMP/groups.out" '^└── a$'
assert_contains "$MP_TMP/groups.out" '^slow  priority 0$'
ctl --json show groups | py "r == [{'name': 'fast', 'priority': 10, 'serving': True, 'paths': ['a']},
  {'name': 'slow', 'priority': 0, 'serving': False, 'paths': ['b']}]" | grep -qx true ||
  fail "show groups --json: $(ctl --json show groups)"

expect_rc 0 topology show topology
assert_contains "$MP_TMP/topology.out" '^fast  priority 10  serving$'
assert_contains "$MP_TMP/topology.out" '^(└──|`--) a  active  nbd\+unix://'
assert_contains "$MP_TMP/topology.out" '^(└──|`--) b  active  nbd\+unix://'
ctl --json show topology | py "[(g['name'], [(p['name'], p['state']) for p in g['paths']]) for g in r['groups']]" |
  grep -qxF '[["fast", [["a", "active"]]], ["slow", [["b", "active"]]]]' || fail "show topology --json"

expect_rc 0 stats show stats
assert_contains "$MP_TMP/stats.out" '^requests: +[1-9][0-9]*$'
assert_contains "$MP_TMP/stats.out" '^queueing: +on$'
assert_contains "$MP_TMP/stats.out" '^op +requests +bytes +errors +p50 +p99$'
assert_contains "$MP_TMP/stats.out" '^write +[1-9][0-9]* +[0-9.]+(B|KiB|MiB) +0 '
ctl --json show stats | py "r['requests'] > 0 and r['queueing'] and
  [o for o in r['ops'] if o['op'] == 'write'][0]['bytes'] >= 4 << 20" | grep -qx true ||
  fail "show stats --json: $(ctl --json show stats)"

expect_rc 0 events show events
assert_contains "$MP_TMP/events.out" '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}  path a +probing -> active'
ctl --json show events | py "any(e['subject'] == 'path b' and e['what'].endswith('-> active') and e['unix_ms'] > 0 for e in r)" |
  grep -qx true || fail "show events --json"

# --- fail a: failed, and I/O continues on b ---
b_before=$(path_field b requests)
expect_rc 0 fail fail a
assert_contains "$MP_TMP/fail.out" '^ok$'
path_is a failed || fail "a is $(path_field a state) after fail a"
[[ $(path_field a reason) == *operator* ]] || fail "a's reason after fail: $(path_field a reason)"
a_before=$(path_field a requests)
verify_pattern "$(mp_uri mp)" 1 4M || fail "I/O with a failed"
(($(path_field b requests) > b_before)) || fail "I/O did not go to b with a failed"
(($(path_field a requests) == a_before)) || fail "I/O went to a although it is failed"
serving_is slow || fail "group slow does not serve with a failed"
expect_rc 0 topo2 show topology
assert_contains "$MP_TMP/topo2.out" '^└── a  failed  nbd\+unix://.*\(operator: fail\)$'
assert_contains "$MP_TMP/topo2.out" '^slow  priority 0  serving$'
expect_rc 0 paths2 show paths
assert_contains "$MP_TMP/paths2.out" '^a: failed: operator: fail$'

# --- reinstate a: reconnects, probes, active again ---
expect_rc 0 reinstate reinstate a
wait_for "a to be active again" 10 path_is a active
wait_for "group fast to serve again" 10 serving_is fast
expect_rc 1 reinstate2 reinstate a
assert_contains "$MP_TMP/reinstate2.err" '^nbd-multipath-ctl: path a is already active$'

# --- drain a: no new I/O; reinstate makes it active ---
expect_rc 0 drain drain a
path_is a draining || fail "a is $(path_field a state) after drain a"
a_before=$(path_field a requests)
verify_pattern "$(mp_uri mp)" 1 4M || fail "I/O with a draining"
(($(path_field a requests) == a_before)) || fail "new I/O went to a while draining"
expect_rc 0 reinstate3 reinstate a
path_is a active || fail "a is $(path_field a state) after reinstating a draining path"
wait_for "group fast to serve after the drain" 10 serving_is fast

# --- switch-group ---
expect_rc 0 switch switch-group slow
serving_is slow || fail "switch-group slow: $(serving_group) serves"
b_before=$(path_field b requests)
verify_pattern "$(mp_uri mp)" 1 1M || fail "I/O after switch-group slow"
(($(path_field b requests) > b_before)) || fail "I/O did not go to group slow"
expect_rc 0 switch2 switch-group fast
serving_is fast || fail "switch-group fast: $(serving_group) serves"
expect_rc 1 switch3 switch-group nope
assert_contains "$MP_TMP/switch3.err" "^nbd-multipath-ctl: no group named 'nope'"

# --- queueing off/on, fail-queued ---
expect_rc 0 qoff queueing off
assert_contains "$MP_TMP/qoff.out" '^queueing off$'
[[ $(ctl --json show stats | py "r['queueing']") == false ]] || fail "queueing off not in show stats"
expect_rc 0 qon queueing on
assert_contains "$MP_TMP/qon.out" '^queueing on$'
[[ $(ctl --json queueing on | py "r['queueing']") == true ]] || fail "queueing on --json"
expect_rc 0 fq0 fail-queued
assert_contains "$MP_TMP/fq0.out" '^failed 0 queued requests$'
# A request queued with every path failed by the operator, then failed by hand.
ctl fail a >/dev/null
ctl fail b >/dev/null
wait_for "no group to serve" 10 serving_is ""
"$MP_PYTHON" -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.pread(4096, 0)' "$(mp_uri mp)" 2>"$MP_TMP/queued.err" &
reader=$!
_mp_track "$reader"
wait_for "the read to wait for a path" 10 stat_is_at_least waiting 1
kill -0 "$reader" 2>/dev/null || fail "the read ended although no path is usable and queueing is on"
expect_rc 0 fq1 fail-queued
assert_contains "$MP_TMP/fq1.out" '^failed 1 queued request$'
if wait "$reader"; then fail "the queued read succeeded after fail-queued"; fi
ctl reinstate a >/dev/null
ctl reinstate b >/dev/null
wait_for "a and b to be active after fail-queued" 10 both_active

# --- reload --dry-run and reload ---
expect_rc 0 dry0 reload --dry-run
assert_contains "$MP_TMP/dry0.out" '^dry run: add none; remove none; change none$'
write_config "$MP_TMP/mp.yaml" "$CTL_SOCK" 0600 "  - { name: c, uri: \"$(upstream_uri c)\", group: slow }"
expect_rc 0 dry1 reload --dry-run
assert_contains "$MP_TMP/dry1.out" '^dry run: add c; remove none; change none$'
[[ $(ctl --json show paths | py "len(r)") == 2 ]] || fail "reload --dry-run changed the paths"
[[ $(ctl --json reload --dry-run | py "r['dry_run'] and r['summary']") == "add c; remove none; change none" ]] ||
  fail "reload --dry-run --json"
expect_rc 0 reload reload
assert_contains "$MP_TMP/reload.out" '^add c; remove none; change none$'
wait_for "c to be active after the reload" 10 path_is c active
ctl show groups >"$MP_TMP/groups2.out"
assert_contains "$MP_TMP/groups2.out" '^├── b$'
assert_contains "$MP_TMP/groups2.out" '^└── c$'
echo "paths: [ {" >"$MP_TMP/mp.yaml"  # broken: refused, nothing changes
expect_rc 1 reload2 reload
assert_contains "$MP_TMP/reload2.err" '^nbd-multipath-ctl: reload refused, the running configuration stays: .*mp\.yaml:'
path_is c active || fail "a refused reload changed path c"

# --- reset-stats ---
a_before=$(path_field a requests)
expect_rc 0 reset reset-stats
assert_contains "$MP_TMP/reset.out" '^ok$'
[[ $(ctl --json show stats | py "r['requests']") == 0 ]] || fail "reset-stats left requests: $(ctl show stats)"
# (The checker's probes of idle paths count as path requests: not zero, but few.)
(($(path_field a requests) < a_before)) || fail "reset-stats left a's requests ($a_before)"

# --- errors and exit statuses ---
expect_rc 2 unknown frobnicate
assert_contains "$MP_TMP/unknown.err" "^nbd-multipath-ctl: unknown command 'frobnicate': the commands are show paths, show groups, show topology, show stats, show events, show config, fail, reinstate, drain, switch-group, queueing, fail-queued, reload, reset-stats"
expect_rc 2 noargs fail
assert_contains "$MP_TMP/noargs.err" 'fail takes 1 argument \(fail PATH\), not 0'
expect_rc 2 show show
expect_rc 2 badq queueing maybe
expect_rc 2 none
expect_rc 1 nopath fail zz
assert_contains "$MP_TMP/nopath.err" "^nbd-multipath-ctl: no path named 'zz'"
[[ ! -s $MP_TMP/nopath.out ]] || fail "an error response printed to stdout"
ctl_rc=0
timeout 30 "$MP_CTL" -s "$MP_TMP/missing.sock" show paths >/dev/null 2>"$MP_TMP/missing.err" || ctl_rc=$?
((ctl_rc == 3)) || fail "missing socket: exit status $ctl_rc, expected 3"
assert_contains "$MP_TMP/missing.err" "^nbd-multipath-ctl: cannot connect to $MP_TMP/missing.sock: No such file or directory"
ctl_rc=0
NBD_MULTIPATH_CTL=$CTL_SOCK timeout 30 "$MP_CTL" show stats >/dev/null || ctl_rc=$?
((ctl_rc == 0)) || fail "\$NBD_MULTIPATH_CTL was not used (exit status $ctl_rc)"

# --- permissions ---
[[ $(stat -c %a "$CTL_SOCK") == 600 ]] || fail "mode 0600 gave $(stat -c %a "$CTL_SOCK")"
write_config "$MP_TMP/open.yaml" "$MP_TMP/ctl-open.sock" 0666
start_multipath open config="$MP_TMP/open.yaml"
[[ $(stat -c %a "$MP_TMP/ctl-open.sock") == 666 ]] || fail "mode 0666 gave $(stat -c %a "$MP_TMP/ctl-open.sock")"
if [[ $(id -u) == 0 ]] && command -v setpriv >/dev/null; then
  # The other user may traverse $MP_TMP and run a copy of the CLI; only the
  # socket's mode stands in the way.
  chmod 0711 "$MP_TMP"
  install -m 0755 "$MP_CTL" "$MP_TMP/ctl-copy"
  as_nobody() { timeout 30 setpriv --reuid=65534 --regid=65534 --clear-groups "$MP_TMP/ctl-copy" "$@"; }
  ctl_rc=0
  as_nobody -s "$CTL_SOCK" show paths >/dev/null 2>"$MP_TMP/nobody.err" || ctl_rc=$?
  ((ctl_rc == 3)) || fail "another user on a 0600 socket: exit status $ctl_rc, expected 3"
  assert_contains "$MP_TMP/nobody.err" "^nbd-multipath-ctl: cannot connect to $CTL_SOCK: Permission denied"
  as_nobody -s "$MP_TMP/ctl-open.sock" show paths >"$MP_TMP/nobody.out" ||
    fail "another user on a 0666 socket was refused"
  assert_contains "$MP_TMP/nobody.out" '^a +nbd\+unix:'
else
  mp_log "not root (or no setpriv): the other-user checks are skipped"
fi
shutdown_multipath open
[[ ! -e $MP_TMP/ctl-open.sock ]] || fail "the control socket was left behind at exit"

# --- bad input on the socket while I/O runs ---
start_workload w "$(mp_uri mp)" --duration 6 --connections 2
wait_for "the workload to get going" 20 workload_progress_over w 200
timeout 60 "$MP_PYTHON" - "$CTL_SOCK" <<'PY' || fail "bad input on the control socket"
import json, socket, sys, time

path = sys.argv[1]

def conn(timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s

def read_all(s):
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except ConnectionResetError:  # the server closed with our input unread
        pass
    return data

def line(s):
    data = b""
    while b"\n" not in data:
        d = s.recv(65536)
        if not d:
            break
        data += d
    return json.loads(data.split(b"\n")[0])

def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")

def ask():
    try:
        s = conn()
        s.sendall(b'{"command": "show stats"}\n')
        r = line(s)
        s.close()
        return r
    except (BrokenPipeError, ConnectionResetError, json.JSONDecodeError) as e:
        return {"ok": False, "error": repr(e)}

def answers():
    # A fresh connection is served; retried while abandoned ones are reaped.
    deadline = time.monotonic() + 10
    while True:
        r = ask()
        if r["ok"]:
            return True
        if time.monotonic() > deadline:
            print(f"last answer: {r}")
            return False

# Garbage bytes: an error, and the session goes on.
s = conn()
s.sendall(bytes(range(256)) + b"\n")
r = line(s)
check(not r["ok"] and "invalid JSON" in r["error"], "garbage bytes get an error")
s.sendall(b'{"command": "show paths"}\n')
check(line(s)["ok"], "the same session still answers")
s.close()

# A 1 MiB line without newline: an error, then the server closes.
s = conn()
try:
    s.sendall(b"x" * (1 << 20))
except (BrokenPipeError, ConnectionResetError):
    pass
data = read_all(s)
r = json.loads(data.split(b"\n")[0])
check(not r["ok"] and "longer than 65536 bytes" in r["error"], "a 1 MiB line is refused")
s.close()

# A client that sends many requests and reads nothing, kept open meanwhile.
hog = conn()
hog.setblocking(False)
sent, until = 0, time.monotonic() + 1
while time.monotonic() < until:  # until the server stops reading it (back-pressure)
    try:
        sent += hog.send(b'{"command": "show events"}\n' * 100)
    except BlockingIOError:
        time.sleep(0.01)
check(sent > 0, f"a client that does not read sent {sent} bytes of requests")

# Half-closed connections get their answers, then EOF.
for _ in range(20):
    s = conn()
    s.sendall(b'{"command": "show paths"}\n{"command": "show topology"}')
    s.shutdown(socket.SHUT_WR)
    lines = read_all(s).split(b"\n")
    s.close()
    if not (len(lines) == 3 and lines[2] == b"" and all(json.loads(l)["ok"] for l in lines[:2])):
        check(False, f"half-closed connection: {lines[:3]}")
check(True, "20 half-closed connections got both answers and EOF")

# Many connections opened and abandoned (more than the session cap), some
# with half a request.
conns = []
for i in range(150):
    s = conn()
    if i % 3 == 0:
        try:
            s.sendall(b'{"command": "sh')
        except (BrokenPipeError, ConnectionResetError):
            pass  # over the session cap: refused and closed
    conns.append(s)
r = ask()
check(r["ok"] or "too many control connections" in r["error"],
      f"with 150 connections open, a new one is answered at once ({r.get('error', 'ok')})")
for s in conns:
    s.close()
check(answers(), "the socket answers after 150 abandoned connections, with a client stuck")
hog.close()
check(answers(), "the socket answers after the stuck client left")
PY
wait_workload w
assert_workload_clean w
expect_rc 0 after show paths
assert_contains "$MP_TMP/after.out" '^a +nbd\+unix:.* +active '
ctl --json show stats | py "r['failed_requests']" | grep -qx 0 || fail "requests failed during the bad input"
