#!/usr/bin/env bash
# Every NBD command with every flag, advertised or not, and odd offsets and
# lengths, through libnbd with strict mode off: the disk answers each with a
# result or an error and never aborts. Three kinds of paths: zero and fast
# zero supported, zero without fast zero (the disk still advertises fast
# zero and answers it with ENOTSUP; nbdkit asserts on an unadvertised one),
# and no zero at all.
source "$(dirname "$0")/functions.sh"
mp_init
_mp_require_python
make_image "$MP_TMP/disk.img" 16M

# run_case NAME [FILTER PARAM]
run_case() {
  local name=$1
  shift
  local -a filter=() param=()
  (($#)) && filter=("$1") param=("$2")
  start_upstream "$name-a" "${filter[@]}" file "$MP_TMP/disk.img" "${param[@]}"
  start_upstream "$name-b" "${filter[@]}" file "$MP_TMP/disk.img" "${param[@]}"
  start_multipath "$name" "$(upstream_uri "$name-a")" "$(upstream_uri "$name-b")" shared-cache=true
  "$MP_PYTHON" "$MP_SOURCE/tests/integration/nbd_flags.py" "$(mp_uri "$name")" \
    >"$MP_TMP/$name.json" 2>"$MP_TMP/$name.flags.log" ||
    { cat "$MP_TMP/$name.flags.log" >&2; server_running "$name" || fail "$name: the disk died"; fail "$name: nbd_flags.py failed"; }
  mp_log "$name: $(<"$MP_TMP/$name.json")"
  server_running "$name" || fail "$name: the disk died"
  assert_not_contains "$(server_log "$name")" "Assertion|Aborted"
  server_serves "$name" || fail "$name: the disk no longer serves"
}

run_case fast
run_case slowzero --filter=nozero fastzeromode=none
# A fast zero on paths that cannot do it fails with ENOTSUP, at once.
grep -q '"ENOTSUP"' "$MP_TMP/slowzero.json" || fail "slowzero: no fast zero was refused with ENOTSUP"
run_case nozero --filter=nozero zeromode=none
