#!/usr/bin/env bash
# Every bad input is refused at start-up with one sentence: file:line:column
# for the YAML, and what to fix.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit

# expect_refused REGEX PLUGIN-ARGS...: nbdkit must exit non-zero, promptly,
# and print REGEX (an ERE) in an error line.
expect_refused() {
  local want=$1 out=$MP_TMP/refused.log st=0
  shift
  timeout 20 ${MP_PRELOAD:+env LD_PRELOAD=$MP_PRELOAD} \
    nbdkit -f -U "$MP_TMP/refused.sock" "$MP_PLUGIN" "$@" >"$out" 2>&1 || st=$?
  ((st != 0 && st != 124)) || { cat "$out" >&2; fail "not refused (status $st): $*"; }
  grep -qE "error: $want" "$out" || { cat "$out" >&2; fail "message does not match '$want'"; }
  mp_log "refused as expected: $(grep -m1 'error:' "$out")"
}
# yaml NAME TEXT: writes $MP_TMP/NAME.yaml and prints its path.
yaml() { printf '%s\n' "$2" >"$MP_TMP/$1.yaml"; echo "$MP_TMP/$1.yaml"; }

Y=$MP_TMP
expect_refused "$Y/none.yaml:1:8: paths: is empty" config="$(yaml none 'paths: []')"
expect_refused "$Y/key.yaml:3:5: unknown key 'wieght' .*did you mean 'weight'" \
  config="$(yaml key $'paths:\n  - uri: nbd://x\n    wieght: 2')"
expect_refused "$Y/type.yaml:3:13: weight must be an integer, not 'abc'" \
  config="$(yaml type $'paths:\n  - uri: nbd://x\n    weight: abc')"
expect_refused "$Y/range.yaml:3:13: weight must be from 1 to 1000" \
  config="$(yaml range $'paths:\n  - uri: nbd://x\n    weight: 5000')"
expect_refused "$Y/dup.yaml:3:12: path name 'a' is used on lines 2 and 3" \
  config="$(yaml dup $'paths:\n  - {name: a, uri: "nbd://x"}\n  - {name: a, uri: "nbd://y"}')"
expect_refused "$Y/group.yaml:2:29: unknown group 'fast'" \
  config="$(yaml group $'paths:\n  - {uri: "nbd://x", group: fast}')"
expect_refused "$Y/scheme.yaml:2:11: unsupported scheme 'http'" \
  config="$(yaml scheme $'paths:\n  - {uri: "http://x"}')"
expect_refused "$Y/sock.yaml:2:11: 'nbd\\+unix:///' has no socket=" \
  config="$(yaml sock $'paths:\n  - {uri: "nbd+unix:///"}')"
expect_refused "$Y/unit.yaml:1:21: timeouts.attempt '5' has no unit" \
  config="$(yaml unit $'timeouts: {attempt: 5}\npaths:\n  - {uri: "nbd://x"}')"
expect_refused "$Y/syntax.yaml:[0-9]+:[0-9]+: " config="$(yaml syntax $'paths:\n  - {uri: "nbd://x"')"
expect_refused "/nonexistent/disk.yaml: cannot read: No such file or directory" \
  config=/nonexistent/disk.yaml

# The quick form.
expect_refused "command line: unknown parameter 'foo'" nbd://x foo=1
expect_refused "command line: .*scheme 'http'" http://x
expect_refused "command line: .*no path" selector=round-robin
expect_refused "command line: .*selector" nbd://x selector=fastest

# Paths that do not reach the same disk.
make_image "$MP_TMP/small.img" 4M
make_image "$MP_TMP/big.img" 8M
start_upstream a file "$MP_TMP/small.img"
start_upstream b file "$MP_TMP/big.img"
expect_refused "path path2 has size 8388608 but path path1 has size 4194304" \
  "$(upstream_uri a)" "$(upstream_uri b)"
# No path reachable at all.
expect_refused "no path is reachable" "nbd+unix:///?socket=$MP_TMP/nothing.sock"
