# shellcheck shell=sh
# Guest half of bench/dm-compare.sh: fio on one block device while the host
# breaks the paths on a schedule.
#
#   mp.mode=mp  /dev/nbd0 -> the multipath disk (10.0.2.100)
#   mp.mode=dm  Linux dm-multipath over /dev/nbd0 -> upstream A (10.0.2.101)
#               and /dev/nbd1 -> upstream B (10.0.2.102), one priority group,
#               selector mp.selector, queue_if_no_path; a small checker
#               loop stands in for multipathd (see below).
#   mp.nbdtimeout  nbd-client -t (seconds), both modes
#   mp.runtime     fio seconds; mp.fio: extra fio options, "+" for spaces
#
# Markers: fio-start, fio-done, finished, and in dm mode path-failed / reinstated
# events.  fio's JSON report goes to ttyS2 (the host's NAME.out file).
# Slot variables (addr_a, dev_b...) are set and read through eval.
# shellcheck disable=SC2034,SC2154
DM=mpath
T=${MP_nbdtimeout:-5}
# ioctl mode (-L): when its socket closes, the device fails I/O at once; with
# netlink, I/O on a dead connection waits for the -t timeout first.
NBDOPTS="-L -t $T"

# dm mode: path slot (a, b) -> address and current nbd device.
addr_a=10.0.2.101
addr_b=10.0.2.102
next_nbd=0

# new_nbd SLOT SECONDS: attach the slot's server on the next free nbd device; sets
# dev_SLOT.
new_nbd() {
  eval "addr=\$addr_$1"
  d=/dev/nbd$next_nbd
  # shellcheck disable=SC2086
  ATTACH_TIMEOUT=$2 attach "$d" "$addr" $NBDOPTS >/tmp/attach.log 2>&1 || return 1
  next_nbd=$((next_nbd + 1))
  eval "dev_$1=$d"
}

sectors() { echo $(($(blockdev --getsize64 "$1") / 512)); }

dm_table() {
  echo "0 $(sectors "$dev_a") multipath 1 queue_if_no_path 0 1 1 ${MP_selector:-round-robin} 0 2 1 $dev_a 1 $dev_b 1"
}

# dm path state of a device: A (active) or F (failed), from dmsetup status
# ("... MAJ:MIN A|F fail_count ...").
path_state() {
  mm=$(cat "/sys/block/${1#/dev/}/dev")
  "$B"/dmsetup status "$DM" | awk -v d="$mm" '{for (i = 1; i < NF; i++) if ($i == d) {print $(i + 1); exit}}'
}

# The stand-in for multipathd: every 200 ms, a failed path whose server
# answers again gets a fresh nbd device (the old one is dead for good: the
# kernel does not reconnect a device configured by nbd-client -L), swapped
# into the map with a noflush reload, as multipathd does.
checker() {
  while [ ! -e /tmp/checker.stop ]; do
    for s in a b; do
      eval "old=\$dev_$s"
      st=$(path_state "$old")
      if [ "$st" = F ] && [ ! -e "/tmp/failed.$s" ]; then
        : >"/tmp/failed.$s"
        mark path-failed "$s" "$old" "$(now_ms)"
      fi
      [ "$st" = F ] || continue
      # A hung server hangs the handshake: give up after 2 s.
      if ! new_nbd "$s" 2; then
        { echo "$(now_ms) attach $s on /dev/nbd$next_nbd failed:"; cat /tmp/attach.log; } >>/tmp/checker.log
        continue
      fi
      if "$B"/dmsetup suspend --noflush --nolockfs "$DM" &&
        "$B"/dmsetup reload "$DM" --table "$(dm_table)" &&
        "$B"/dmsetup resume --noflush "$DM"; then
        rm -f "/tmp/failed.$s"
        eval "mark reinstated $s \$dev_$s $(now_ms)"
        "$B"/nbd-client -d "$old" >/dev/null 2>&1 || true
      else
        mark checker-error "reload with $(dm_table) failed"
        "$B"/dmsetup resume --noflush "$DM" || true
      fi
    done
    sleep 0.2
  done
}

export DM_DISABLE_UDEV=1
case ${MP_mode:?} in
  mp)
    # shellcheck disable=SC2086
    attach /dev/nbd0 10.0.2.100 $NBDOPTS || die "nbd-client could not attach the multipath disk"
    next_nbd=1
    target=/dev/nbd0
    ;;
  dm)
    new_nbd a 30 || die "nbd-client could not attach upstream A: $(cat /tmp/attach.log)"
    new_nbd b 30 || die "nbd-client could not attach upstream B: $(cat /tmp/attach.log)"
    "$B"/dmsetup create "$DM" --noudevsync --table "$(dm_table)" || die "dmsetup create failed"
    wait_until 10 test -b "/dev/mapper/$DM" || die "no /dev/mapper/$DM"
    mark table "$(dm_table)"
    target=/dev/mapper/$DM
    checker &
    checker_pid=$!
    ;;
  *) die "mp.mode must be mp or dm" ;;
esac
mark attached "$target"

mark fio-start "$(now_ms)"
# shellcheck disable=SC2046
"$B"/fio --name=w --filename="$target" --ioengine=libaio --direct=1 \
  --rw=randrw --rwmixread=50 --bs=4k --iodepth=4 --size=64M \
  --time_based --runtime="${MP_runtime:-40}" --continue_on_error=all \
  --output-format=json --output=/tmp/fio.json $(echo "${MP_fio:-}" | tr '+' ' ') \
  >/tmp/fio.log 2>&1
st=$?
mark fio-done "$st" "$(now_ms)"
stty -F /dev/ttyS2 raw -echo 2>/dev/null || true
cat /tmp/fio.json >/dev/ttyS2
if [ "$MP_mode" = dm ]; then
  : >/tmp/checker.stop
  wait "$checker_pid"
  "$B"/dmsetup status "$DM"
  "$B"/dmsetup remove "$DM" --noudevsync || true
fi
dmesg | grep -E 'nbd|device-mapper|multipath' | tail -n 30
[ ! -e /tmp/checker.log ] || tail -n 20 /tmp/checker.log
mark finished
