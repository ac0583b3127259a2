#!/usr/bin/env bash
# The Linux kernel NBD client on the multipath disk, in a VM (Debian's cloud
# kernel under qemu): ext4 is made, mounted and written with checksummed
# files while one path is killed (kill -9) and brought back, then another
# is hung (SIGSTOP) and resumed.  The guest must see no I/O error, read every
# file back intact, and find the file system clean; the host checks the
# image too.  The guest reaches the disk only through qemu user networking
# (restrict=on) and a socat relay per connection; see tests/vm/vm-lib.sh.
# shellcheck source=functions.sh
source "$(dirname "$0")/functions.sh"
# shellcheck source=../vm/vm-lib.sh
source "$(dirname "$0")/../vm/vm-lib.sh"
mp_init
# Under a sanitizer the plugin is slow and TCG is slow: together they take
# too long for the suite.
[[ -z ${MP_SANITIZE:-} ]] || mp_skip "not run under MP_SANITIZE=$MP_SANITIZE (too slow with an emulated VM)"
vm_require
vm_fetch_kernel || mp_skip "no guest kernel: $VM_FETCH_ERR"

make_image "$MP_TMP/disk.img" 128M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
start_multipath mp "$(upstream_uri a)" "$(upstream_uri b)" \
  selector=round-robin timeout=1s connect-timeout=1s shared-cache=true
mplog=$(server_log mp)

vm_build_initramfs "$MP_TMP/initrd" nbd
vm_forward 10.0.2.100 "$(server_sock mp)"
# nbd-client -t 60: the kernel must not give up on the disk while the
# multipath server fails over (1 s attempt timeout).
vm_start vm kernel-client "$MP_TMP/initrd" mp.server=10.0.2.100 mp.nbdtimeout=60
vm_wait_marker vm mounted 120

# The number of lines of the multipath log matching ERE.
log_count() { grep -c -- "$1" "$mplog" || true; }
log_count_over() { (($(log_count "$1") > $2)); }
# Wait for two more synced rounds in the guest: I/O goes on.
guest_goes_on() {
  local n
  n=$(vm_marker_value vm progress)
  vm_wait_counter vm progress $((n + 1)) "$1"
  mp_log "guest at round $(vm_marker_value vm progress)"
}

guest_goes_on 60
reinstated='path path1: .* -> active: reinstated'
r1=$(log_count "$reinstated")
kill_upstream a KILL
wait_for "path1 to fail" 20 grep -q "path path1: active -> failed" "$mplog"
guest_goes_on 60
restart_upstream a
wait_for "path1 to be reinstated" 30 log_count_over "$reinstated" "$r1"
guest_goes_on 60

stop_upstream b
wait_for "path2 to fail on a timeout" 20 grep -q "path path2: active -> failed: .*timed out" "$mplog"
guest_goes_on 60
cont_upstream b
wait_for "path2 to be reinstated" 30 grep -q "path path2: .* -> active: reinstated" "$mplog"
guest_goes_on 60

vm_send vm stop
vm_wait_marker vm writes-done 60
vm_wait_marker vm verified 120
vm_wait_marker vm fsck-clean 120
vm_wait_marker vm 'finished [0-9]+' 60
vm_wait_exit vm 60
vm_markers vm | grep -qx "exit 0" || fail "the guest scenario did not exit 0"
vm_assert_no_kernel_errors vm
rounds=$(vm_marker_value vm progress)
mp_log "guest verified $(vm_marker_value vm finished) files, written over $rounds rounds"
((rounds >= 10)) || fail "only $rounds rounds: the failure schedule alone spans at least 10"

# The host's view of the image (the file plugin writes through to the
# file, whose page cache e2fsck reads).
shutdown_multipath mp
e2fsck -fn "$MP_TMP/disk.img" >"$MP_TMP/host-fsck.log" 2>&1 ||
  { cat "$MP_TMP/host-fsck.log" >&2; fail "e2fsck -fn on the image found problems"; }
mp_log "host e2fsck -fn: clean"
