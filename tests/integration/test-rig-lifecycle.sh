#!/usr/bin/env bash
# rig up / status / down / gc: namespaces, veth pairs and the unreachable
# route appear and go; an upstream can be NBD or iSCSI (tgtd); `rig down`
# after a "crash" (processes killed, faults and a flapper left active)
# leaves no process, namespace, link, route, nft table or state; a second
# `down` is a no-op; `rig gc SUBNET` cleans up a rig whose state is lost,
# by namespace.
source "$(dirname "$0")/functions.sh"
mp_init
RIG=$MP_SOURCE/container/rig
why=$("$RIG" check 2>&1) || mp_skip "the rig cannot run here: $why"
# No plugin code runs here.
[[ -z ${MP_SANITIZE:-} ]] || mp_skip "no plugin code runs in this test (MP_SANITIZE=$MP_SANITIZE)"

kinds=nbd,nbd
have_iscsi=""
if command -v tgtd >/dev/null && command -v iscsi-inq >/dev/null; then
  kinds=nbd,iscsi
  have_iscsi=1
else
  mp_log "no tgtd or iscsi-inq: both paths are NBD"
fi

export RIG_NAME=life-$$
mp_on_cleanup "$RIG" --name "gc-$$" down
mp_on_cleanup "$RIG" down
"$RIG" up --paths 2 --kinds "$kinds" --no-multipath --size 16M >"$MP_TMP/up.log" 2>&1 || {
  cat "$MP_TMP/up.log" >&2
  fail "rig up failed"
}
eval "$("$RIG" env)"
n=$(cut -d. -f3 <<<"$RIG_SUBNET")
mp_log "rig $RIG_NAME: subnet $RIG_SUBNET, paths $RIG_P1_URI $RIG_P2_URI"

# What up made.
[[ $(ip route show "$RIG_SUBNET") == unreachable* ]] || fail "no unreachable route for $RIG_SUBNET"
# An address of the subnet that no veth has must not be routable.
not ip route get "10.231.$n.200" >/dev/null 2>&1 || fail "10.231.$n.200 is routable: $(ip route get "10.231.$n.200")"
grep -Eq "^$RIG_P1_NS( |$)" <<<"$(ip netns list)" || fail "namespace $RIG_P1_NS missing"
grep -Eq "^$RIG_P2_NS( |$)" <<<"$(ip netns list)" || fail "namespace $RIG_P2_NS missing"
timeout 5 nbdinfo --size "$RIG_P1_URI" >/dev/null || fail "p1 does not serve NBD at $RIG_P1_URI"
"$RIG" status >"$MP_TMP/status" 2>&1
assert_contains "$MP_TMP/status" "^  p1 +nbd +nbd://10\.231\.$n\.6:10809 +running"
if [[ -n $have_iscsi ]]; then
  assert_contains "$MP_TMP/status" "^  p2 +iscsi +iscsi://10\.231\.$n\.10:3260/"
  timeout 10 iscsi-inq "$RIG_P2_URI" >"$MP_TMP/inq" 2>&1 || fail "iscsi-inq $RIG_P2_URI failed: $(cat "$MP_TMP/inq")"
  assert_contains "$MP_TMP/inq" "Peripheral Device Type:DIRECT_ACCESS"
  timeout 10 iscsi-readcapacity16 "$RIG_P2_URI" >"$MP_TMP/cap" 2>&1 || fail "iscsi-readcapacity16 failed"
  assert_contains "$MP_TMP/cap" "Total size:16777216"
  # Faults act on iSCSI upstreams too: stopped tgtd -> a hang; heal -> back.
  "$RIG" fail p2 stop
  st=0
  timeout 2 iscsi-inq "$RIG_P2_URI" >/dev/null 2>&1 || st=$?
  assert_eq 124 "$st" "iscsi-inq against a stopped tgtd (124: hung until timeout)"
  "$RIG" heal p2
  "$RIG" fail p2 kill
  not timeout 5 iscsi-inq "$RIG_P2_URI" >/dev/null 2>&1 || fail "iscsi-inq worked against a killed tgtd"
  "$RIG" heal p2
  timeout 10 iscsi-inq "$RIG_P2_URI" >/dev/null 2>&1 || fail "iscsi-inq failed after heal (restart)"
fi

# A second rig: another name, another subnet; `up` refuses a name in use.
not "$RIG" up --paths 1 --no-multipath >/dev/null 2>&1 || fail "rig up accepted a name already up"
"$RIG" --name "gc-$$" up --paths 1 --no-multipath --size 1M >"$MP_TMP/up-gc.log" 2>&1 || {
  cat "$MP_TMP/up-gc.log" >&2
  fail "second rig up failed"
}
gc_subnet=$("$RIG" --name "gc-$$" env | sed -n 's/^RIG_SUBNET=//p')
gc_n=$(cut -d. -f3 <<<"$gc_subnet")
gc_dir=$("$RIG" --name "gc-$$" env | sed -n 's/^RIG_DIR=//p')
[[ $gc_subnet != "$RIG_SUBNET" ]] || fail "two rigs on one subnet"

# "Crash": faults left active, a flapper running, an upstream and its
# parent shell SIGKILLed behind the rig's back.
"$RIG" fail p1 blackhole
"$RIG" fail p2 flap 300ms "$([[ -n $have_iscsi ]] && echo stop || echo reset)"
"$RIG" fail p1 bandwidth 1mbit 2>/dev/null && fail "a second fault on p1 was accepted"
pids=$(for ns in "$RIG_P1_NS" "$RIG_P2_NS"; do ip netns pids "$ns"; done | tr '\n' ' ')
flapper=$(awk '{ print $1 }' "$RIG_DIR/p2/flap.proc")
read -r p1pid _ <"$RIG_DIR/p1/proc"
kill -KILL "$p1pid"
mp_log "processes in the namespaces: $pids; flapper $flapper"

"$RIG" down
for p in $pids $flapper; do
  [[ $(_mp_state "$p") == @(gone|Z) ]] || fail "pid $p survived rig down: $(tr '\0' ' ' <"/proc/$p/cmdline")"
done
if grep -q "^mprig${n}p" <<<"$(ip netns list)"; then fail "namespaces left: $(ip netns list | grep "^mprig${n}p")"; fi
if grep -Eq ": mr${n}[hu][0-9]+[@:]" <<<"$(ip -o link show)"; then fail "veth links left"; fi
[[ -z $(ip route show "$RIG_SUBNET") ]] || fail "route left: $(ip route show "$RIG_SUBNET")"
[[ ! -e $RIG_DIR ]] || fail "state left in $RIG_DIR"
if [[ -n $have_iscsi ]]; then
  [[ ! -e /var/run/tgtd/socket.$((20000 + n * 64 + 2)) ]] || fail "tgtd control socket left"
fi
"$RIG" down 2>"$MP_TMP/down2.log" || fail "a second rig down failed"
assert_contains "$MP_TMP/down2.log" "nothing to do"
"$RIG" status >/dev/null 2>&1 && fail "status of a rig that is down succeeded"

# gc: the second rig's state is lost (as after a reboot of /run or an rm);
# its upstream still runs in its namespace. gc finds it by namespace.
gc_pids=$(ip netns pids "mprig${gc_n}p1" | tr '\n' ' ')
[[ -n $gc_pids ]] || fail "nothing runs in mprig${gc_n}p1"
rm -rf "$gc_dir"
"$RIG" gc "$gc_n" 2>"$MP_TMP/gc.log" || fail "rig gc failed: $(cat "$MP_TMP/gc.log")"
assert_contains "$MP_TMP/gc.log" "subnet $gc_n belong to no rig"
for p in $gc_pids; do
  [[ $(_mp_state "$p") == @(gone|Z) ]] || fail "pid $p survived rig gc"
done
if grep -q "^mprig${gc_n}p" <<<"$(ip netns list)"; then fail "gc left namespaces"; fi
[[ -z $(ip route show "$gc_subnet") ]] || fail "gc left the route"
