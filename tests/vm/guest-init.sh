#!/bin/sh
# /init of the test VM (busybox sh, PID 1): mounts, modules, network, then
# the scenario named by mp.scenario= on the kernel command line; prints
# "@@MP-VM@@ WORD ..." markers on the console and powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin

# shellcheck source=guest-lib.sh
. /scenario/guest-lib.sh

# mp.KEY=VALUE on the command line -> shell variable MP_KEY.
# The command line is one line of words.
# shellcheck disable=SC2013
for w in $(cat /proc/cmdline); do
  case $w in
    mp.*=*)
      k=${w%%=*}
      k=${k#mp.}
      case $k in *[!a-z0-9_]*) continue ;; esac
      eval "MP_$k=\${w#*=}"
      ;;
  esac
done

guest_main() {
  mark boot "$(uname -r)"
  while read -r m; do
    modprobe "$m" || die "modprobe $m failed"
  done </etc/mp-vm-modules
  wait_until 20 test -e /sys/class/net/eth0 || die "no eth0"
  ip link set lo up
  ip link set eth0 up
  # qemu user networking: 10.0.2.15 is the guest, the host forwards sit on
  # 10.0.2.100.
  ip addr add 10.0.2.15/24 dev eth0
  ctl_open
  # shellcheck disable=SC2154  # MP_scenario comes from the command line
  [ -r "/scenario/scenario-$MP_scenario.sh" ] || die "no scenario '$MP_scenario'"
  mark scenario "$MP_scenario"
  # shellcheck disable=SC1090
  . "/scenario/scenario-$MP_scenario.sh"
}

(guest_main)
st=$?
mark exit "$st"
sync
poweroff -f
