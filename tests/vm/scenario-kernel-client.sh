# shellcheck shell=sh
# Guest half of tests/integration/test-vm-kernel-client.sh: the kernel NBD
# client on the multipath disk, an ext4 file system, files written with
# checksums (a "progress N" marker after each synced round) until the host
# sends "stop"; then the files are read back from the disk and checked, and
# the file system is unmounted and checked with e2fsck.
#
# mp.server: address of the disk (port 10809); mp.nbdtimeout: nbd-client -t (seconds);
# mp.rounds: upper bound on rounds (the host normally stops us first).
dev=/dev/nbd0
attach "$dev" "${MP_server:?}" -t "${MP_nbdtimeout:-60}" || die "nbd-client could not attach $dev"
mark attached "$(blockdev --getsize64 "$dev")"
"$B"/mke2fs -q -t ext4 -F "$dev" || die "mke2fs failed"
mount -t ext4 "$dev" /mnt || die "mount failed"
mark mounted

# Each round overwrites 4 of 128 file slots (32 MiB in all) with 256 KiB
# from /dev/urandom, keeps their sums in RAM (not on the disk under test),
# then syncs: the round is on the disk when its progress marker appears.
mkdir -p /tmp/sums
round=0
while ! ctl_has stop; do
  round=$((round + 1))
  [ "$round" -le "${MP_rounds:-3000}" ] || die "the host never sent stop ($round rounds)"
  for i in 1 2 3 4; do
    f=f$((round % 32)).$i
    dd if=/dev/urandom of="/mnt/$f" bs=64k count=4 2>/dev/null || die "write of $f in round $round failed"
    (cd /mnt && sha256sum "$f") >"/tmp/sums/$f"
  done
  sync || die "sync failed in round $round"
  mark progress "$round"
done
mark writes-done "$round"
cat /tmp/sums/* >/tmp/sums.all
files=$(wc -l </tmp/sums.all)

# Read back from the disk, not the page cache.
sync
echo 3 >/proc/sys/vm/drop_caches
(cd /mnt && sha256sum -c -s /tmp/sums.all) || die "checksum mismatch"
mark verified "$files"
umount /mnt || die "umount failed"
"$B"/e2fsck -fn "$dev" >/tmp/fsck.out 2>&1 || {
  cat /tmp/fsck.out
  die "e2fsck -fn found problems"
}
mark fsck-clean
"$B"/nbd-client -d "$dev" || die "nbd-client -d failed"
if dmesg | grep -Eq 'I/O error|EXT4-fs (error|warning)|Buffer I/O'; then
  dmesg | grep -E 'nbd|I/O|EXT4' | tail -n 20
  die "the kernel logged I/O errors"
fi
mark finished "$files"
