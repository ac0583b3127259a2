#!/usr/bin/env bash
# Every request type reaches the upstream and means what it says: pread,
# pwrite (plain and FUA), flush, trim, zero (plain and fast), cache; and a
# request larger than a path's maximum block size is split (the upstreams
# refuse anything over 64 KiB).
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit
make_image "$MP_TMP/disk.img" 8M
for p in a b; do
  start_upstream $p --filter=blocksize-policy file "$MP_TMP/disk.img" \
    blocksize-maximum=65536 blocksize-error-policy=error
done
start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" selector=round-robin

"$MP_PYTHON" - "$(mp_uri mp)" "$(upstream_uri a)" <<'PY' || fail "request types"
import nbd, sys
mp, direct = nbd.NBD(), nbd.NBD()
mp.connect_uri(sys.argv[1])
direct.connect_uri(sys.argv[2])
MiB = 1 << 20
def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")

check(mp.can_flush() and mp.can_trim() and mp.can_zero() and mp.can_fua() and mp.can_cache(),
      "the disk offers flush, trim, zero, FUA and cache like its paths")
check(mp.can_multi_conn(), "the disk advertises multi-conn")
# Large requests: 4 MiB each, split into 64 KiB commands per path.
big = bytes((i * 7 + 3) % 251 for i in range(4 * MiB))
mp.pwrite(big, 2 * MiB)
check(mp.pread(4 * MiB, 2 * MiB) == big, "a 4 MiB write and read, split to the paths' 64 KiB maximum")
check(direct.pread(64 * 1024, 2 * MiB) == big[:64 * 1024], "the data reached the image")
# FUA write and flush.
mp.pwrite(b"F" * 4096, 0, nbd.CMD_FLAG_FUA)
mp.flush()
check(direct.pread(4096, 0) == b"F" * 4096, "FUA write, then flush")
# Zero (no hole), zero with may-trim, fast zero.
mp.zero(64 * 1024, 2 * MiB)
check(mp.pread(64 * 1024, 2 * MiB) == bytes(64 * 1024), "zero reads back as zeroes")
mp.zero(64 * 1024, 3 * MiB, nbd.CMD_FLAG_NO_HOLE)
check(mp.pread(64 * 1024, 3 * MiB) == bytes(64 * 1024), "zero with no-hole")
if mp.can_fast_zero():
    try:
        mp.zero(4096, 4 * MiB, nbd.CMD_FLAG_FAST_ZERO)
        check(mp.pread(4096, 4 * MiB) == bytes(4096), "fast zero")
    except nbd.Error as e:
        check(e.errno == "ENOTSUP", f"fast zero refused with ENOTSUP ({e})")
# Trim: contents afterwards are unspecified; the request must succeed (an
# error raises) and the range stay readable.
mp.trim(64 * 1024, 5 * MiB)
check(len(mp.pread(64 * 1024, 5 * MiB)) == 64 * 1024, "trim, then the range reads")
mp.cache(1 * MiB, 0)
check(mp.pread(4096, 0) == b"F" * 4096, "cache, then the data is unchanged")
# A request beyond the end is refused by nbdkit before it reaches us.
try:
    mp.pread(4096, 8 * MiB)
    check(False, "a read past the end fails")
except nbd.Error as e:
    check(e.errno in ("EINVAL", "ERANGE"), f"a read past the end fails ({e.errno})")
PY
