#!/usr/bin/env bash
# Live reload under I/O: 100 reloads adding and removing path c (and changing b's weight and
# the selector) while a read/write workload runs, with zero client errors; a broken file and a
# file that would leave no serving path are refused and change nothing; --dry-run changes nothing.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/workload.sh"
mp_init
mp_require nbdkit
_mp_require_python

mp_require_ctl

make_image "$MP_TMP/disk.img" 16M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
start_upstream c file "$MP_TMP/disk.img"
# d is never started: a path to it cannot serve.

CTL_SOCK=$MP_TMP/ctl.sock
CFG=$MP_TMP/disk.yaml
# write_config WITH_C B_WEIGHT SELECTOR: paths a, b (and c), replaced atomically.
write_config() {
  {
    echo "paths:"
    echo "  - { name: a, uri: \"$(upstream_uri a)\" }"
    echo "  - { name: b, uri: \"$(upstream_uri b)\", weight: $2 }"
    if (($1)); then echo "  - { name: c, uri: \"$(upstream_uri c)\" }"; fi
    cat <<YAML
selector: $3
timeouts: { attempt: 2s, connect: 2s }
checker: { interval: 200ms }
durability: { shared-cache: true }
control: { socket: "$CTL_SOCK" }
YAML
  } >"$CFG.new"
  mv -f "$CFG.new" "$CFG"
}
write_config 0 1 service-time
start_multipath mp config="$CFG"

# ctl ARGS...: the CLI on this disk's socket, bounded in time.
ctl() { timeout -k 5 30 "$MP_CTL" -s "$CTL_SOCK" "$@"; }
# expect_rc EXPECTED NAME ARGS...: stdout to $MP_TMP/NAME.out, stderr to NAME.err.
expect_rc() {
  local want=$1 name=$2 rc=0
  shift 2
  ctl "$@" >"$MP_TMP/$name.out" 2>"$MP_TMP/$name.err" || rc=$?
  if ((rc != want)); then
    cat "$MP_TMP/$name.out" "$MP_TMP/$name.err" >&2
    fail "nbd-multipath-ctl $*: exit status $rc, expected $want"
  fi
}
# py EXPR: a Python expression over the JSON on stdin (named r), printed.
py() {
  "$MP_PYTHON" -c 'import json, sys
r = json.load(sys.stdin)
v = eval("(" + sys.argv[1] + ")")
print(v if isinstance(v, str) else json.dumps(v))' "$1"
}
path_is() {
  [[ $(ctl --json show paths | py "[p['state'] for p in r if p['name'] == '$1'] == ['$2']") == true ]]
}
both_active() { path_is a active && path_is b active; }
# What show paths says, minus the counters.
paths_now() { ctl --json show paths | py "sorted((p['name'], p['uri'], p['state']) for p in r)"; }
progress() { cat "$MP_TMP/w.progress" 2>/dev/null || echo 0; }
# One flush through the disk: a path removed with unflushed writes leaves
# after the next flush.
flush_disk() {
  timeout 30 "$MP_PYTHON" -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1]); h.flush(); h.shutdown()' "$(mp_uri mp)"
}
c_gone() {
  flush_disk
  [[ $(ctl --json show paths | py "len([p for p in r if p['name'] == 'c'])") == 0 ]]
}

wait_for "paths a and b to be active" 20 both_active

start_workload w "$(mp_uri mp)" --duration 20 --connections 4
wait_for "the workload to get going" 20 workload_progress_over w 200
progress_before=$(progress)

# --- 100 reloads: c joins (odd) and leaves (even) ---
selectors=(round-robin queue-length service-time)
c_served=0
for ((i = 1; i <= 100; i++)); do
  weight=1
  ((i % 3 == 0)) && weight=$((i % 7 + 1))
  write_config $((i % 2)) "$weight" "${selectors[(i / 10) % 3]}"
  expect_rc 0 "reload$i" reload
  if ((i % 2)); then
    grep -q '^add c; ' "$MP_TMP/reload$i.out" || fail "reload $i: $(cat "$MP_TMP/reload$i.out")"
    if ((i % 4 == 1)); then
      # Now and then c serves before it goes: its removal then drains real I/O.
      wait_for "c to be active (reload $i)" 20 path_is c active
      c_served=$((c_served + 1))
    fi
  else
    grep -q '; remove c; ' "$MP_TMP/reload$i.out" || fail "reload $i: $(cat "$MP_TMP/reload$i.out")"
  fi
done
progress_after=$(progress)
mp_log "100 reloads done; workload operations meanwhile: $((progress_after - progress_before))"
((progress_after > progress_before)) || fail "no I/O completed during the reloads"
((c_served == 25)) || fail "c served only $c_served times"
both_active || fail "after the reloads: $(paths_now)"
wait_for "the last c to drain and leave" 20 c_gone
ctl --json show events | py "any(e['subject'] == 'path c' and e['what'] == 'draining -> removed' for e in r)" |
  grep -qx true || fail "no 'path c: draining -> removed' event: $(ctl show events | tail -n 20)"

# --- a file with an error: refused, nothing changes ---
before=$(paths_now)
printf 'paths:\n  - { name: a, uri: "%s" }\n  - { name: b, uri: [\n' "$(upstream_uri a)" >"$CFG"
expect_rc 1 broken reload
assert_contains "$MP_TMP/broken.err" 'reload refused, the running configuration stays: .*disk\.yaml:[0-9]+:[0-9]+: '
expect_rc 1 broken-dry reload --dry-run
assert_contains "$MP_TMP/broken-dry.err" 'disk\.yaml:[0-9]+:[0-9]+: '
assert_eq "$before" "$(paths_now)" "show paths after a broken file"

# --- only a path that cannot serve now: refused, nothing changes ---
cat >"$CFG" <<YAML
paths:
  - { name: d, uri: "$(upstream_uri d)" }
durability: { shared-cache: true }
control: { socket: "$CTL_SOCK" }
YAML
expect_rc 1 nopath reload
assert_contains "$MP_TMP/nopath.err" 'no path that serves I/O now would remain'
expect_rc 1 nopath-dry reload --dry-run
assert_contains "$MP_TMP/nopath-dry.err" 'no path that serves I/O now would remain'
assert_eq "$before" "$(paths_now)" "show paths after a refused reload"

# --- --dry-run: says what would change, changes nothing ---
write_config 1 5 round-robin
expect_rc 0 dry reload --dry-run
assert_contains "$MP_TMP/dry.out" '^dry run: add c; remove none; change b; set paths\.b\.weight: [0-9]+ -> 5, selector: [a-z-]+ -> round-robin$'
assert_eq "$before" "$(paths_now)" "show paths after reload --dry-run"
write_config 0 1 service-time
expect_rc 0 same reload
# The paths are as before; the loop above left another selector in force.
assert_contains "$MP_TMP/same.out" '^add none; remove none; change none; set selector: queue-length -> service-time$'

wait_workload w
assert_workload_clean w
[[ $(ctl --json show stats | py "r['failed_requests']") == 0 ]] ||
  fail "requests failed: $(ctl show stats)"
assert_eq "$before" "$(paths_now)" "show paths at the end"
