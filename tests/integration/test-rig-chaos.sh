#!/usr/bin/env bash
# The integrity workload over a rig's multipath disk while `rig chaos` runs a
# schedule of remote faults of every kind. A schedule that always leaves a
# path healthy must end with 0 client errors and 0 wrong blocks. A second
# rig next to it (its own subnet) with no-path=fail loses both paths at once:
# the report must say "no healthy path during ...", not "disk failure".
source "$(dirname "$0")/functions.sh"
mp_init
_mp_require_python
RIG=$MP_SOURCE/container/rig
why=$("$RIG" check 2>&1) || mp_skip "the rig cannot run here: $why"
if [[ ! -e $MP_PLUGIN ]]; then
  [[ -n $_MP_PLUGIN_DEFAULTED ]] && mp_skip "plugin not built: $MP_PLUGIN (set MP_PLUGIN)"
  fail "MP_PLUGIN does not exist: $MP_PLUGIN"
fi
[[ -n ${MP_CTL:-} ]] || MP_CTL=$MP_SOURCE/build/nbd-multipath-ctl
[[ -x $MP_CTL ]] || mp_skip "nbd-multipath-ctl not built: $MP_CTL (set MP_CTL)"
export MP_CTL

A=chaos-a-$$ B=chaos-b-$$
mp_on_cleanup "$RIG" --name "$A" down
mp_on_cleanup "$RIG" --name "$B" down

rig_up() {
  local name=$1
  shift
  "$RIG" --name "$name" up "$@" >"$MP_TMP/up-$name.log" 2>&1 || {
    cat "$MP_TMP/up-$name.log" >&2
    fail "rig up $name failed"
  }
}
rig_up "$A" --paths 3 --size 32M --timeout 1s
rig_up "$B" --paths 2 --size 16M --timeout 1s --no-path fail
subnet_a=$("$RIG" --name "$A" env | sed -n 's/^RIG_SUBNET=//p')
subnet_b=$("$RIG" --name "$B" env | sed -n 's/^RIG_SUBNET=//p')
mp_log "rig $A on $subnet_a, rig $B on $subnet_b"
[[ $subnet_a != "$subnet_b" ]] || fail "two rigs share subnet $subnet_a"

# Every mode that takes a path down, one or two paths at a time; each heal
# is followed by wait-active where the next step needs that path.
cat >"$MP_TMP/schedule" <<'EOF'
# at   command
0.5    fail p1 kill
0.5    fail p3 bandwidth 16mbit   # degraded, still healthy
1.5    fail p2 stop
2.5    heal p1
2.5    wait-active p1 20
3      heal p2
3      fail p1 blackhole
4      heal p3
4      fail p2 errors
5      heal p1
5      wait-active p1 20
5.5    heal p2
5.5    fail p3 reset
6.5    heal p3
6.5    fail p2 refuse
7.5    heal p2
7.5    wait-active p3 20
7.5    fail p1 flap 500ms
9      heal p1
9      fail p2 slow 2000          # slower than the 1 s attempt timeout
10     heal p2
EOF
st=0
"$RIG" --name "$A" chaos --duration 12 --connections 4 --json "$MP_TMP/a.json" \
  "$MP_TMP/schedule" >"$MP_TMP/chaos-a.out" 2>&1 || st=$?
cat "$MP_TMP/chaos-a.out" >&2
((st == 0)) || fail "chaos on $A exited with status $st"
field() { "$MP_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
assert_eq 0 "$(field "$MP_TMP/a.json" errors)" "client errors ($A)"
assert_eq 0 "$(field "$MP_TMP/a.json" wrong)" "wrong blocks ($A)"
assert_eq 4096 "$(field "$MP_TMP/a.json" verified)" "blocks verified ($A: 16 MiB in 4 KiB blocks)"
(($(field "$MP_TMP/a.json" min_healthy) >= 1)) || fail "the schedule left no healthy path"
assert_contains "$MP_TMP/chaos-a.out" '^verdict: PASS$'
assert_not_contains "$MP_TMP/chaos-a.out" 'no healthy path'
# Every fault was undone: no nft table, no qdisc, every upstream running.
for i in 1 2 3; do
  ns=$("$RIG" --name "$A" env | sed -n "s/^RIG_P${i}_NS=//p")
  not ip netns exec "$ns" nft list table inet rig >/dev/null 2>&1 || fail "p$i: an nft table is left after chaos"
done
"$RIG" --name "$A" status >"$MP_TMP/status-a" 2>&1
assert_not_contains "$MP_TMP/status-a" 'stopped|dead|flap|kill|blackhole'

# Both paths of B down at once, no-path=fail: client errors, reported as a
# time without a healthy path (exit status 3), never as a disk failure. p2's
# attempts time out 1 s after its blackhole, at 2.5 s; both stay down until
# 3.5 s, so the disk is surely without a path for a while (a heal at 2.5 s
# raced the timeout: a p1 back in time took the retries, with no error).
# The workload's final check of every block waits for p1 to be back: on a
# slow machine the heal alone outlasted a fixed 6 s workload, and no block
# was verified.
st=0
"$RIG" --name "$B" chaos --duration 6 --json "$MP_TMP/b.json" \
  -e '1 fail p1 kill' -e '1.5 fail p2 blackhole' -e '3.5 heal all' -e '3.5 wait-active p1 30' \
  >"$MP_TMP/chaos-b.out" 2>&1 || st=$?
cat "$MP_TMP/chaos-b.out" >&2
assert_eq 3 "$st" "exit status of chaos without a healthy path"
assert_contains "$MP_TMP/chaos-b.out" '^no healthy path during [0-9.]+-[0-9.]+ s'
assert_contains "$MP_TMP/chaos-b.out" '^verdict: NO HEALTHY PATH: [0-9]+ client errors'
(($(field "$MP_TMP/b.json" errors) > 0)) || fail "no-path=fail without a path gave no client error"
# Once p1 is back every block reads without error in the final check; a block
# whose failed write landed anyway counts as wrong there, not as verified.
v=$(field "$MP_TMP/b.json" verified) w=$(field "$MP_TMP/b.json" wrong)
((v + w >= 4096)) || fail "$B: only $v blocks verified and $w wrong of 4096 in the final check after p1 was back"
assert_eq 0 "$(field "$MP_TMP/b.json" min_healthy)" "min healthy paths ($B)"

# The multipath servers shut down cleanly (status 0, no sanitizer report).
for r in "$A" "$B"; do
  dir=$("$RIG" --name "$r" env | sed -n 's/^RIG_DIR=//p')
  RIG_KEEP=1 "$RIG" --name "$r" down 2>>"$MP_TMP/down.log" || fail "rig down $r: the multipath server did not exit 0"
  cp "$dir/mp.log" "$MP_TMP/mp-$r.log"
  rm -rf "$dir"
  if grep -Eq "$_MP_SANITIZER_RE" "$MP_TMP/mp-$r.log"; then
    grep -E -A 30 "$_MP_SANITIZER_RE" "$MP_TMP/mp-$r.log" | head -n 60 >&2
    fail "sanitizer report in the multipath log of $r"
  fi
done
