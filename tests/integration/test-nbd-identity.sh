#!/usr/bin/env bash
# NBD path identity by export description (NBD_INFO_DESCRIPTION). A path whose
# upstream is replaced by another disk of the same size, with another
# description, on the same socket is refused at reconnect and never
# reinstated: reads keep returning the first disk's data through the other
# path. At start-up, mismatched descriptions (or one path without any) and a
# pinned export-description: that differs are refused.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdcopy
MP_CTL=${MP_CTL:-$(dirname "$MP_PLUGIN")/nbd-multipath-ctl}
[[ -x $MP_CTL ]] || mp_skip "nbd-multipath-ctl not built: $MP_CTL (set MP_CTL)"
# The exportname filter sets the description (exportdesc=fixed:TEXT).
nbdkit --filter=exportname null exportdesc=fixed:x --run true >/dev/null 2>&1 ||
  mp_skip "nbdkit's exportname filter is not installed"

make_image "$MP_TMP/disk.img" 16M
cp "$(_mp_pattern_file 2 $((16 << 20)))" "$MP_TMP/other.img"  # another disk, same size
described() {  # described NAME IMAGE DESCRIPTION: an upstream that reports DESCRIPTION
  start_upstream "$1" --filter=exportname file "$2" exportdesc=fixed:"$3"
}
described a "$MP_TMP/disk.img" disk-1
described b "$MP_TMP/disk.img" disk-1

# expect_refusal NAME PATTERN ARGS...: the server refuses to start, and says PATTERN.
expect_refusal() {
  local name=$1 pattern=$2 st=0
  shift 2
  MP_CMD_TIMEOUT=30 mp_nbdkit -f -U "$MP_TMP/$name.sock" "$MP_PLUGIN" "$@" >"$MP_TMP/$name.out" 2>&1 ||
    st=$?
  ((st != 0 && st != 124)) || fail "$name: not refused (status $st)"
  assert_contains "$MP_TMP/$name.out" "error: $pattern"
  mp_log "$name: $(grep -m1 -E "$pattern" "$MP_TMP/$name.out")"
}

# --- start-up ---
described c "$MP_TMP/other.img" disk-2
start_upstream plain file "$MP_TMP/disk.img"  # no description
expect_refusal mismatch \
  "path path2 has export description 'disk-2' but path path1 has export description 'disk-1': every NBD path must serve the same disk" \
  "$(upstream_uri a)" "$(upstream_uri c)"
expect_refusal missing \
  "path path2 has no export description but path path1 has export description 'disk-1'" \
  "$(upstream_uri a)" "$(upstream_uri plain)"
printf 'export-description: disk-9\npaths:\n  - uri: %s\n' "$(upstream_uri a)" >"$MP_TMP/pinned.yaml"
expect_refusal pinned \
  "path path1 has export description 'disk-1' but the config's export-description: is 'disk-9'" \
  config="$MP_TMP/pinned.yaml"
shutdown_server c
shutdown_server plain

# --- a path replaced by another disk is refused at reconnect ---
CTL_SOCK=$MP_TMP/ctl.sock
cat >"$MP_TMP/mp.yaml" <<YAML
export-description: disk-1
paths:
  - {name: a, uri: "$(upstream_uri a)"}
  - {name: b, uri: "$(upstream_uri b)"}
failover: {reconnect-min: 20ms, reconnect-max: 100ms}
checker: {interval: 50ms}
control: {socket: "$CTL_SOCK"}
# Identity only: on a busy machine the latency selector's rare picks of one
# path can measure it slow enough to make it marginal, which is not "refused".
outlier: {enabled: false}
YAML
start_multipath mp config="$MP_TMP/mp.yaml"
ctl() { timeout -k 5 30 "$MP_CTL" -s "$CTL_SOCK" "$@"; }
write_pattern "$(mp_uri mp)" 1 16M
verify_pattern "$(mp_uri mp)" 1 16M
ctl show paths >"$MP_TMP/paths.out"
assert_contains "$MP_TMP/paths.out" '^a .* active '

kill_upstream a
described a "$MP_TMP/other.img" disk-2  # same socket, same size, another disk
refused() {
  ctl show paths >"$MP_TMP/paths.out" &&
    grep -E "^a: failed: refused: its export description 'disk-2' differs from the disk's 'disk-1': it may serve another disk" "$MP_TMP/paths.out"
}
wait_for "path a refused for its export description" 20 refused
# Reconnects keep being refused; every read comes from disk-1 (through b).
for _ in 1 2 3; do verify_pattern "$(mp_uri mp)" 1 16M || fail "read another disk's data"; done
refusals() {  # at least $1 reconnects of a, the last refused, in show events (folded: one entry)
  local n
  ctl show events >"$MP_TMP/events.out" &&
    n=$(sed -nE "s/^.*path a +reconnecting \(([0-9]+) attempts so far\) +connecting -> failed: refused: its export description 'disk-2'.*/\1/p" "$MP_TMP/events.out") &&
    [[ -n $n ]] && ((n >= $1))
}
wait_for "three refused reconnects of a" 10 refusals 3
refused >/dev/null || fail "path a is no longer refused: $(cat "$MP_TMP/paths.out")"
# After the kill, a went to failed and never back to probing or active.
awk '/path a .*-> failed/ {f = 1} f && /path a .*-> (probing|active)/ {bad = 1} END {exit !bad}' \
  "$MP_TMP/events.out" && fail "path a was reinstated: $(cat "$MP_TMP/events.out")"

# The right disk back on a's socket: a is reinstated.
kill_upstream a
described a "$MP_TMP/disk.img" disk-1
wait_for "path a active again" 20 bash -c "timeout 10 '$MP_CTL' -s '$CTL_SOCK' show paths | grep -qE '^a .* active '"
verify_pattern "$(mp_uri mp)" 1 16M
shutdown_multipath mp
