#!/usr/bin/env bash
# Flush over paths: writes go through both paths, a flush reaches every path
# that carried writes, then every upstream is killed (-9) and restarted, and
# all the data is there.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit
make_image "$MP_TMP/disk.img" 8M
for p in a b; do
  start_upstream $p --filter=log file "$MP_TMP/disk.img" logfile="$MP_TMP/$p.ops"
done
# No shared-cache: the strict rule, a flush must reach each dirty path.
start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" selector=round-robin

write_pattern "$(mp_uri mp)" 7 8M || fail "writing the pattern failed"
for p in a b; do
  assert_contains "$MP_TMP/$p.ops" "Write id="
  assert_contains "$MP_TMP/$p.ops" "Flush id="
done
# The last flush on each path comes after its last write.
for p in a b; do
  last_write=$(grep -n "Write id=" "$MP_TMP/$p.ops" | tail -1 | cut -d: -f1)
  last_flush=$(grep -n "Flush id=" "$MP_TMP/$p.ops" | tail -1 | cut -d: -f1)
  ((last_flush > last_write)) || fail "path $p: no flush after its last write"
done

kill_upstream a KILL
kill_upstream b KILL
restart_upstream a
restart_upstream b
wait_for "a path to be reinstated" 20 grep -q "active: reinstated" "$(server_log mp)"
verify_pattern "$(mp_uri mp)" 7 8M || fail "data lost after the flush and kill -9"
cmp -s "$MP_TMP/disk.img" "$(_mp_pattern_file 7 "$(mp_bytes 8M)")" || fail "the image file differs from what was written"
