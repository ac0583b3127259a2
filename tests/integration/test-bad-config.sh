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

# Huge values: refused at once and in little memory (a 10 MB selector: once
# 6.6 s and 1.4 GB; 100 MB: 12 GB), under a 512 MiB address-space limit
# (not under a sanitizer, whose shadow memory needs terabytes of it).
huge() {  # huge NAME PREFIX: PREFIX, then a 100 MiB value of x
  { printf '%s' "$2"; head -c 100M /dev/zero | tr '\0' x; echo; } >"$MP_TMP/$1.yaml"
  echo "$MP_TMP/$1.yaml"
}
limited() {
  if [[ -z ${MP_SANITIZE:-} ]]; then prlimit --as=$((512 << 20)) -- "$@"; else "$@"; fi
}
for key in selector failover; do
  case $key in
    selector) f=$(huge sel $'paths:\n  - uri: nbd://x\nselector: ') ;;
    failover) f=$(huge eio $'paths:\n  - uri: nbd://x\nfailover:\n  eio: ') ;;
  esac
  st=0
  limited timeout 10 ${MP_PRELOAD:+env LD_PRELOAD=$MP_PRELOAD} \
    nbdkit -f -U "$MP_TMP/refused.sock" "$MP_PLUGIN" config="$f" >"$MP_TMP/huge.log" 2>&1 || st=$?
  ((st != 0 && st != 124)) || { cat "$MP_TMP/huge.log" >&2; fail "huge $key value: status $st"; }
  assert_contains "$MP_TMP/huge.log" "error: $f: the file is larger than 256 KiB, the most a configuration may be"
  (($(grep -c . "$MP_TMP/huge.log") == 1)) || fail "huge $key value: more than one line of output"
  rm -f "$f"
  mp_log "huge $key value refused: $(cut -c1-120 "$MP_TMP/huge.log")"
done
# Just under the file limit, one value over the value limit.
printf -v v '%*s' 200000 ''
expect_refused "$Y/long.yaml:3:11: selector is 200000 bytes long, more than the 4096 any value may have" \
  config="$(yaml long $'paths:\n  - uri: nbd://x\nselector: '"${v// /x}")"
expect_refused "command line: timeout '-1' is negative: durations must be positive" nbd://x timeout=-1
expect_refused "command line: .*contains a control character \(%00\)" 'nbd+unix:///?socket=/a.sock%00x'
expect_refused "command line: .*'tls=require', which libnbd ignores: nbd\+unix:// never uses TLS, so use nbds\+unix://" \
  'nbd+unix:///?socket=/a.sock&tls=require'
expect_refused "$Y/rlo.yaml:2:26: path name 'a.u202eb' contains a blank, control or invisible character \(U\+202E\)" \
  config="$(yaml rlo $'paths:\n  - {uri: nbd://x, name: "a\u202eb"}')"

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
