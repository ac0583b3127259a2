# shellcheck shell=sh
# Smoke scenario: attach /dev/nbd0 to $MP_server:10809, read and write
# one block, detach.
attach /dev/nbd0 "${MP_server:?}" -t 30 || die "nbd-client failed"
mark attached "$(blockdev --getsize64 /dev/nbd0)"
dd if=/dev/urandom of=/tmp/blk bs=4096 count=1 2>/dev/null
dd if=/tmp/blk of=/dev/nbd0 bs=4096 count=1 oflag=direct 2>/dev/null || die "write failed"
dd if=/dev/nbd0 of=/tmp/back bs=4096 count=1 iflag=direct 2>/dev/null || die "read failed"
cmp /tmp/blk /tmp/back || die "read back differs"
mark roundtrip ok
"$B"/nbd-client -d /dev/nbd0 || die "nbd-client -d failed"
mark detached
