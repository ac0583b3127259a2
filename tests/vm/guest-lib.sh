# shellcheck shell=sh
# Helpers for the guest scenarios (busybox sh), sourced by /init.

MARK='@@MP-VM@@'
# Host programs copied in.  Called by full path: Debian's static busybox
# runs its own applet of the same name (mke2fs, nbd-client...) whatever
# PATH says.
B=/usr/local/bin

# mark WORD ARGS: one marker line on the console for the host to poll.
mark() { echo "$MARK $*"; }

# die MESSAGE: report a failure (the host stops waiting) and end the scenario.
die() {
  mark FAIL "$*"
  exit 1
}

# Milliseconds since boot.
now_ms() {
  read -r up _ </proc/uptime
  frac=${up#*.}
  echo $((${up%.*} * 1000 + ${frac#0} * 10))
}

# wait_until SECONDS COMMAND...: poll every 100 ms.  (Inside the guest there
# is no event to wait on for a sysfs entry or a device to appear.)
wait_until() {
  limit=$(($(now_ms) + $1 * 1000))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$(now_ms)" -lt "$limit" ] || return 1
    sleep 0.1
  done
}

# Control port: the host writes lines to ttyS1 (vm_send); a background cat
# collects them in /tmp/ctl.
ctl_open() {
  stty -F /dev/ttyS1 raw -echo 2>/dev/null || true
  : >/tmp/ctl
  cat /dev/ttyS1 >>/tmp/ctl &
}

# ctl_has WORD: the host has sent a line WORD.
ctl_has() { grep -qx "$1" /tmp/ctl; }

# ctl_wait WORD SECONDS
ctl_wait() { wait_until "$2" ctl_has "$1"; }

# attach DEV ADDR [nbd-client options]: connect a kernel nbd device to
# ADDR:10809 (newstyle, export ""; nbd-client 3.24 then prints a harmless
# "oldstyle protocol is no longer supported" warning).  Done when the
# device has its size: with -L (ioctl) that happens in nbd-client's
# background child, after the command itself has returned.
attach() {
  dev=$1 addr=$2
  shift 2
  # SIGKILL: nbd-client stuck in a handshake with a hung server outlives
  # SIGTERM.
  timeout -s KILL "${ATTACH_TIMEOUT:-30}" "$B"/nbd-client "$addr" "$dev" "$@" || return 1
  wait_until 10 has_size "$dev"
}

has_size() { [ "$(blockdev --getsize64 "$1" 2>/dev/null || echo 0)" -gt 0 ]; }
