# shellcheck shell=bash
# VM plumbing shared by tests/integration/test-vm-kernel-client.sh and
# bench/dm-compare.sh: a Debian cloud kernel (downloaded, never installed), an
# initramfs built from the host's own binaries, and qemu whose guest reaches
# the host only through per-connection socat relays to Unix sockets.
#
# Source it after tests/integration/functions.sh and mp_init:
#
#   source "$MP_SOURCE/tests/vm/vm-lib.sh"
#   vm_require                       # skips (77) when a tool is missing
#   vm_fetch_kernel || mp_skip "..." # sets VM_KVER, VM_VMLINUZ, VM_MODROOT
#   vm_build_initramfs "$MP_TMP/initrd" nbd dm-round-robin
#   vm_forward 10.0.2.100 "$(server_sock mp)"
#   vm_start vm kernel-client "$MP_TMP/initrd" mp.server=10.0.2.100
#   vm_wait_marker vm mounted 120
#   vm_send vm stop
#   vm_wait_exit vm 120
#
# Guest side: tests/vm/guest-init.sh becomes /init; it runs
# tests/vm/scenario-NAME.sh (NAME from mp.scenario= on the kernel command
# line), prints "@@MP-VM@@ WORD ..." marker lines on the serial console and
# powers off.  The host reads the console log ($MP_TMP/NAME.serial.log),
# talks to the guest through a second serial port (vm_send), and gets files
# (reports) through a third one, in $MP_TMP/NAME.out.
#
# Knobs:
#   MP_VM_CACHE    kernel cache (default ${XDG_CACHE_HOME:-$HOME/.cache}/nbd-multipath/vm)
#   MP_VM_ACCEL    tcg | kvm (default: kvm when /dev/kvm can be opened and a
#                  KVM guest actually starts, else tcg)
#   MP_VM_MEM      guest memory in MiB (default 768)
#   MP_VM_SMP      guest CPUs (default 1: the host's cores also run the servers)
#   MP_VM_TIMEOUT  hard limit on one qemu run, seconds (default 600)

VM_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VM_MARK='@@MP-VM@@'
# Guests reach servers at 10.0.2.1xx:10809 (guestfwd addresses: nothing
# else is reachable with restrict=on).
VM_NBD_PORT=10809
# Modules every guest loads (the NIC); scenarios add theirs.
VM_BASE_MODULES=(virtio_pci virtio_net)

declare -gA _VM_PID=()          # NAME -> pid of the qemu session leader
declare -ga _VM_FWD=()          # guestfwd= specs for the next vm_start
declare -ga _VM_ALL=()          # every qemu session leader, for cleanup

vm_cache_dir() { echo "${MP_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nbd-multipath/vm}"; }

# vm_require: skip unless the host tools the VM needs are installed.
vm_require() {
  mp_require qemu-system-x86_64 busybox nbd-client mke2fs e2fsck socat cpio \
    apt-get apt-cache dpkg-deb ldd flock ps
  [[ -x /bin/busybox ]] || mp_skip "/bin/busybox (busybox-static) is not installed"
  file_is_static /bin/busybox || mp_skip "/bin/busybox is not static (install busybox-static)"
}

file_is_static() { ! ldd "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------- kernel ----

# The real package behind linux-image-cloud-amd64 (linux-image-6.1.*-cloud-amd64).
_vm_kernel_pkg() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-6\.1\.[0-9.]+-[0-9]+-cloud-amd64$/ {print $2; exit}'
}

# Modules the guests need; vm_fetch_kernel checks the kernel ships them all.
VM_REQUIRED_MODULES=(nbd dm-mod dm-multipath dm-round-robin dm-service-time dm-queue-length
  virtio_pci virtio_net)

# vm_fetch_kernel: download (once) and unpack Debian's cloud kernel into the
# cache.  Sets VM_KVER (uname -r of the guest), VM_VMLINUZ and VM_MODROOT (the
# unpacked tree, with a modules.dep made by busybox depmod).  Returns 1 with a
# reason in VM_FETCH_ERR when it cannot.  Concurrent callers serialise on a
# lock in the cache.
vm_fetch_kernel() {
  local cache pkg ver dir lockfd rc=0
  VM_FETCH_ERR=
  cache=$(vm_cache_dir)
  mkdir -p "$cache" || { VM_FETCH_ERR="cannot create $cache"; return 1; }
  exec {lockfd}>"$cache/.lock"
  if ! flock -w 900 "$lockfd"; then
    VM_FETCH_ERR="timed out waiting for the lock on $cache"
    exec {lockfd}>&-
    return 1
  fi
  _vm_fetch_locked "$cache" || rc=$?
  exec {lockfd}>&-
  return "$rc"
}

_vm_fetch_locked() {
  local cache=$1 pkg ver dir tmp deb
  pkg=$(_vm_kernel_pkg)
  if [[ -z $pkg && $EUID -eq 0 ]]; then
    # No package lists yet (a fresh machine): fetch them once.
    mp_log "vm: apt-cache does not know linux-image-cloud-amd64; running apt-get update"
    apt-get update -qq >"$cache/apt-update.log" 2>&1 || true
    pkg=$(_vm_kernel_pkg)
  fi
  if [[ -z $pkg ]]; then
    # Offline: fall back on a kernel unpacked earlier.
    dir=$(find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-6.1.*-cloud-amd64_*' \
      -exec test -e '{}/.complete' ';' -print 2>/dev/null | sort -V | tail -n 1)
    [[ -n $dir ]] || { VM_FETCH_ERR="apt-cache cannot resolve linux-image-cloud-amd64 and nothing is cached in $cache"; return 1; }
    mp_log "vm: apt cannot resolve linux-image-cloud-amd64; using the cached ${dir##*/}"
    _vm_use_kernel "$dir"
    return
  fi
  ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '$1 == "Version:" {print $2; exit}')
  [[ -n $ver ]] || { VM_FETCH_ERR="apt-cache show $pkg gave no version"; return 1; }
  dir=$cache/${pkg}_$ver
  if [[ ! -e $dir/.complete ]]; then
    rm -rf "$dir" "$dir.tmp"
    tmp=$dir.tmp
    mkdir -p "$tmp/deb"
    mp_log "vm: downloading $pkg $ver into $cache"
    # Download as root into a root-owned directory: no _apt sandbox warning.
    if ! (cd "$tmp/deb" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver") >"$tmp/download.log" 2>&1; then
      if [[ $EUID -eq 0 ]]; then
        # Stale lists point at a version the mirror no longer has.
        mp_log "vm: download failed; apt-get update and one more try"
        apt-get update -qq >"$cache/apt-update.log" 2>&1 || true
        pkg=$(_vm_kernel_pkg)
        ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '$1 == "Version:" {print $2; exit}')
        rm -rf "$tmp" && mkdir -p "$tmp/deb"
        dir=$cache/${pkg}_$ver
        (cd "$tmp/deb" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$ver") >"$tmp/download.log" 2>&1 || {
          VM_FETCH_ERR="apt-get download $pkg=$ver failed: $(tail -n 2 "$tmp/download.log" | tr '\n' ' ')"
          return 1
        }
      else
        VM_FETCH_ERR="apt-get download $pkg=$ver failed: $(tail -n 2 "$tmp/download.log" | tr '\n' ' ')"
        return 1
      fi
    fi
    deb=$(find "$tmp/deb" -name '*.deb' | head -n 1)
    [[ -n $deb ]] || { VM_FETCH_ERR="apt-get download left no .deb in $tmp/deb"; return 1; }
    dpkg-deb -x "$deb" "$tmp/root" || { VM_FETCH_ERR="dpkg-deb -x $deb failed"; return 1; }
    rm -rf "$tmp/deb"
    local kver
    kver=$(find "$tmp/root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n 1)
    [[ -n $kver && -e $tmp/root/boot/vmlinuz-$kver ]] || { VM_FETCH_ERR="$pkg has no /boot/vmlinuz-<version> with modules"; return 1; }
    # The package leaves modules.dep to its postinst (depmod); busybox's
    # depmod writes one for the unpacked tree.
    busybox depmod -b "$tmp/root" "$kver" || { VM_FETCH_ERR="busybox depmod failed on $pkg"; return 1; }
    mv "$tmp" "$dir"
    : >"$dir/.complete"
    mp_log "vm: unpacked $pkg $ver ($kver)"
  fi
  _vm_use_kernel "$dir"
}

# Set VM_* from an unpacked kernel tree and check that it has every module
# the guests load.
# shellcheck disable=SC2034  # VM_* are the callers'
_vm_use_kernel() {
  local dir=$1 m missing=()
  VM_KVER=$(find "$dir/root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n 1)
  VM_VMLINUZ=$dir/root/boot/vmlinuz-$VM_KVER
  VM_MODROOT=$dir/root
  for m in "${VM_REQUIRED_MODULES[@]}"; do
    _vm_module_path "$m" >/dev/null || missing+=("$m")
  done
  if ((${#missing[@]})); then
    VM_FETCH_ERR="kernel $VM_KVER lacks modules: ${missing[*]}"
    return 1
  fi
  mp_log "vm: kernel $VM_KVER from ${dir##*/}"
}

# Path (relative to lib/modules/KVER) of a module by name; - and _ are the
# same in module names.
_vm_module_path() {
  local name=${1//-/_}
  awk -F: -v n="$name" '{
      f = $1; sub(/.*\//, "", f); sub(/\.ko(\.[a-z]+)?$/, "", f); gsub(/-/, "_", f)
      if (f == n) { print $1; found = 1; exit }
    } END { exit !found }' "$VM_MODROOT/lib/modules/$VM_KVER/modules.dep"
}

# The module and everything it depends on (modules.dep lists the closure).
_vm_module_closure() {
  local path
  path=$(_vm_module_path "$1") || return 1
  echo "$path"
  awk -F: -v p="$path" '$1 == p { n = split($2, d, " "); for (i = 1; i <= n; i++) print d[i] }' \
    "$VM_MODROOT/lib/modules/$VM_KVER/modules.dep"
}

# ------------------------------------------------------------- initramfs ----

# Copy an executable (to /usr/local/bin) and the shared libraries it loads (and the dynamic
# loader) into the staging tree, at the same paths.
_vm_copy_binary() {
  local stage=$1 bin=$2 lib
  bin=$(command -v "$bin") || fail "vm: no binary '$2' on the host"
  bin=$(readlink -f "$bin")
  # /usr/local/bin comes first on the guest's PATH, before busybox's
  # applets of the same names (mke2fs, e2fsck...).
  mkdir -p "$stage/usr/local/bin"
  cp -L "$bin" "$stage/usr/local/bin/"
  file_is_static "$bin" && return 0
  while read -r lib; do
    [[ -e $stage$lib ]] && continue
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

# vm_build_initramfs OUT [--bin PROG]... [MODULE]...
# A gzip'd newc cpio: busybox (static), nbd-client, mke2fs, e2fsck, the
# --bin programs with their libraries, the named kernel modules with their
# dependencies (and a modules.dep for them), /init and the scenarios.
vm_build_initramfs() {
  local out=$1 stage m p b
  shift
  local -a bins=(nbd-client mke2fs e2fsck) mods=("${VM_BASE_MODULES[@]}")
  while (($#)); do
    case $1 in
      --bin) bins+=("$2"); shift 2 ;;
      *) mods+=("$1"); shift ;;
    esac
  done
  stage=$(mktemp -d "$MP_TMP/initramfs.XXXXXX")
  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,mnt,root,etc,scenario,lib64}
  cp /bin/busybox "$stage/bin/busybox"
  ln -s busybox "$stage/bin/sh"
  for b in "${bins[@]}"; do _vm_copy_binary "$stage" "$b"; done
  # The loader, also for binaries whose ldd output named it differently.
  [[ -e $stage/lib64/ld-linux-x86-64.so.2 ]] || cp -L /lib64/ld-linux-x86-64.so.2 "$stage/lib64/"
  [[ -e /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$stage/etc/"
  ln -s /proc/mounts "$stage/etc/mtab"

  local kmods=$stage/lib/modules/$VM_KVER
  mkdir -p "$kmods"
  for m in "${mods[@]}"; do
    while read -r p; do
      mkdir -p "$kmods/$(dirname "$p")"
      cp "$VM_MODROOT/lib/modules/$VM_KVER/$p" "$kmods/$p"
    done < <(_vm_module_closure "$m" || fail "vm: kernel $VM_KVER has no module $m")
  done
  cp "$VM_MODROOT/lib/modules/$VM_KVER"/modules.{builtin,order} "$kmods/" 2>/dev/null || true
  busybox depmod -b "$stage" "$VM_KVER" || fail "vm: depmod for the initramfs failed"
  printf '%s\n' "${mods[@]}" >"$stage/etc/mp-vm-modules"

  cp "$VM_LIB_DIR/guest-init.sh" "$stage/init"
  chmod 755 "$stage/init"
  for p in "$VM_LIB_DIR"/scenario-*.sh "$VM_LIB_DIR"/guest-lib.sh; do
    cp "$p" "$stage/scenario/"
  done
  (cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$out"
  rm -rf "$stage"
  mp_log "vm: initramfs $(du -h "$out" | cut -f1) (modules: ${mods[*]}; programs: ${bins[*]})"
}

# ---------------------------------------------------------------- qemu ----

# Can KVM run a guest here?  /dev/kvm may exist and open, and qemu may even
# start, yet abort when the vCPU first runs (seen here under nested
# virtualisation: "failed to set MSR 0x10a"): let a guest with no kernel
# run its firmware for 2 s; only still running at the end (timeout's 124)
# counts as working.
_vm_kvm_works() {
  [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
  local st=0
  timeout 2 qemu-system-x86_64 -accel kvm -M pc -cpu host -nodefaults -display none \
    -monitor none -serial none </dev/null >/dev/null 2>&1 || st=$?
  ((st == 124))
}

vm_accel() {
  if [[ -z ${_VM_ACCEL:-} ]]; then
    _VM_ACCEL=${MP_VM_ACCEL:-}
    if [[ -z $_VM_ACCEL ]]; then
      if _vm_kvm_works; then _VM_ACCEL=kvm; else _VM_ACCEL=tcg; fi
    fi
  fi
  echo "$_VM_ACCEL"
}

# vm_forward ADDR SOCKET [LOG]: for the next vm_start, guest connections to
# ADDR:10809 (ADDR in 10.0.2.0/24, e.g. 10.0.2.100) go to the Unix socket
# SOCKET through a socat that qemu starts for that connection.  socat logs
# to LOG (-lf): without it, its messages would go to its stderr, which is
# the guest's TCP stream.  When the server end closes, socat exits and the
# guest sees its connection close: a dead server is passed on to the guest.
# One address per server, all on the NBD port, so the guest needs no port
# arguments.
vm_forward() {
  local addr=$1 sock=$2 log=${3:-$MP_TMP/relay-$1.log}
  if ! [[ $addr =~ ^10\.0\.2\.([0-9]+)$ ]] || ((BASH_REMATCH[1] < 100 || BASH_REMATCH[1] > 254)); then
    fail "vm_forward: address $addr is not in 10.0.2.100-254"
  fi
  [[ $sock$log != *[,\ ]* ]] || fail "vm_forward: no commas or spaces in paths ($sock, $log)"
  _VM_FWD+=("guestfwd=tcp:$addr:$VM_NBD_PORT-cmd:socat -d -d -lf $log - UNIX-CONNECT:$sock")
}

vm_serial_log() { echo "$MP_TMP/$1.serial.log"; }
vm_ctl_sock() { echo "$MP_TMP/$1.ctl.sock"; }

# vm_start NAME SCENARIO INITRD [KEY=VALUE...]: boot the VM in the
# background.  KEY=VALUE pairs go on the kernel command line (the guest
# reads mp.* ones as variables).  Console in $(vm_serial_log NAME).
vm_start() {
  local name=$1 scenario=$2 initrd=$3 accel log ctl netdev fwd
  shift 3
  _mp_check_main_shell vm_start
  accel=$(vm_accel)
  log=$(vm_serial_log "$name")
  ctl=$(vm_ctl_sock "$name")
  : >"$log"
  netdev="user,id=n0,restrict=on,ipv6=off"
  for fwd in "${_VM_FWD[@]}"; do netdev+=",$fwd"; done
  _VM_FWD=()
  local -a cmd=(timeout -k 5 "${MP_VM_TIMEOUT:-600}" qemu-system-x86_64
    -nodefaults -no-user-config -nographic -monitor none -no-reboot
    -machine "pc,accel=$accel" -cpu "$([[ $accel == kvm ]] && echo host || echo max)"
    -smp "${MP_VM_SMP:-1}" -m "${MP_VM_MEM:-768}"
    -kernel "$VM_VMLINUZ" -initrd "$initrd"
    -append "console=ttyS0 panic=-1 quiet loglevel=4 mp.scenario=$scenario $*"
    -chardev "file,id=con,path=$log" -serial chardev:con
    -chardev "socket,id=ctl,path=$ctl,server=on,wait=off" -serial chardev:ctl
    -chardev "file,id=out,path=$MP_TMP/$name.out" -serial chardev:out
    -netdev "$netdev" -device "virtio-net-pci,netdev=n0,romfile=")
  # qboot boots -kernel faster than SeaBIOS.
  [[ -e /usr/share/qemu/qboot.rom ]] && cmd+=(-bios /usr/share/qemu/qboot.rom)
  printf '%s\n' "${cmd[*]}" >"$MP_TMP/$name.qemu.cmd"
  # Its own session: qemu and the relays it spawns are found by session id
  # at cleanup.
  setsid "${cmd[@]}" </dev/null >"$MP_TMP/$name.qemu.log" 2>&1 &
  _VM_PID[$name]=$!
  _VM_ALL+=("$!")
  if ((${#_VM_ALL[@]} == 1)); then mp_on_cleanup _vm_cleanup; fi
  mp_log "vm: started '$name' (scenario $scenario, accel $accel, pid $!)"
}

# Every process of a VM's session (timeout, qemu, socat relays).
_vm_session_pids() { ps -o pid= --sid "$1" 2>/dev/null | tr -d ' '; }

_vm_cleanup() {
  local leader p
  local -a pids
  for leader in "${_VM_ALL[@]}"; do
    for p in $(_vm_session_pids "$leader"); do kill -TERM "$p" 2>/dev/null || true; done
  done
  for leader in "${_VM_ALL[@]}"; do
    mapfile -t pids < <(_vm_session_pids "$leader")
    ((${#pids[@]} == 0)) || _mp_wait_gone 5000000 "${pids[@]}" || true
    for p in $(_vm_session_pids "$leader"); do kill -KILL "$p" 2>/dev/null || true; done
    wait "$leader" 2>/dev/null || true
  done
}

vm_running() { [[ -n ${_VM_PID[$1]:-} ]] && kill -0 "${_VM_PID[$1]}" 2>/dev/null && [[ $(_mp_state "${_VM_PID[$1]}") != Z ]]; }

# Marker lines: "@@MP-VM@@ WORD ARGS".  _vm_marker_seen NAME ERE is true
# once a marker matching "WORD ARGS" is in the log; it fails the test when the
# guest reported a failure or qemu is gone.
_vm_marker_seen() {
  grep -aEq "^$VM_MARK ($2)" "$(vm_serial_log "$1")" || _vm_guest_broken "$1"
}

# True (and noted for _vm_check_state) when the guest reported a failure or
# qemu is gone: the waits end at once instead of at their deadline.
_vm_guest_broken() {
  local name=$1
  if grep -aEq "^$VM_MARK FAIL" "$(vm_serial_log "$name")"; then
    touch "$MP_TMP/.vm-failed-$name"
    return 0
  fi
  vm_running "$name" || { touch "$MP_TMP/.vm-gone-$name"; return 0; }
  return 1
}

_vm_check_state() {
  local name=$1 what=$2 log
  log=$(vm_serial_log "$name")
  if [[ -e $MP_TMP/.vm-failed-$name ]]; then
    grep -aE "^$VM_MARK" "$log" | tail -n 20 >&2
    fail "vm '$name' reported a failure while we waited for $what: $(grep -aE "^$VM_MARK FAIL" "$log" | head -n 1)"
  fi
  if [[ -e $MP_TMP/.vm-gone-$name ]]; then
    tail -n 40 "$log" >&2
    cat "$MP_TMP/$name.qemu.log" >&2 || true
    fail "vm '$name' exited while we waited for $what"
  fi
}

# vm_wait_marker NAME ERE SECONDS: wait for a marker line "WORD ARGS"
# matching ERE (anchored at the start of WORD).
vm_wait_marker() {
  local name=$1 re=$2 secs=$3
  wait_for "vm '$name' marker /$re/" "$secs" _vm_marker_seen "$name" "$re"
  _vm_check_state "$name" "/$re/"
}

# vm_markers NAME: the guest's marker lines so far, "WORD ARGS" (the serial
# console ends lines with CR LF).
vm_markers() {
  sed -n "s/\r\$//; s/^$VM_MARK //p" "$(vm_serial_log "$1")"
}

# The last value of a counter marker "WORD N", or 0.
vm_marker_value() {
  local v
  v=$(vm_markers "$1" | awk -v w="$2" '$1 == w && $2 ~ /^[0-9]+$/ {v = $2} END {print v + 0}')
  echo "${v:-0}"
}

_vm_counter_over() {
  (($(vm_marker_value "$1" "$2") > $3)) || _vm_guest_broken "$1"
}

# vm_wait_counter NAME WORD N SECONDS: wait until marker "WORD M" with M > N.
vm_wait_counter() {
  local name=$1 word=$2 n=$3 secs=$4
  wait_for "vm '$name' $word beyond $n" "$secs" _vm_counter_over "$name" "$word" "$n"
  _vm_check_state "$name" "$word > $n"
}

# vm_send NAME LINE: one line to the guest's control port (its ttyS1).
vm_send() {
  timeout 10 socat -u - "UNIX-CONNECT:$(vm_ctl_sock "$1")" <<<"$2" ||
    fail "vm: could not send '$2' to '$1'"
  mp_log "vm: sent '$2' to '$1'"
}

# vm_wait_exit NAME SECONDS: wait for the guest to power off; fails when
# qemu exits with an error.
vm_wait_exit() {
  local name=$1 secs=$2 pid st=0
  pid=${_VM_PID[$name]}
  wait_for "vm '$name' to power off" "$secs" not vm_running "$name"
  wait "$pid" 2>/dev/null || st=$?
  ((st == 0)) || { cat "$MP_TMP/$name.qemu.log" >&2; fail "vm '$name': qemu exited with status $st"; }
  mp_log "vm: '$name' powered off"
}

# Kernel messages that mean the guest saw a block-layer or file-system error.
VM_KERNEL_ERRORS_RE='I/O error|Buffer I/O error|EXT4-fs error|EXT4-fs warning|blk_update_request|Aborting journal|Remounting filesystem read-only|print_req_error'

vm_assert_no_kernel_errors() {
  local log
  log=$(vm_serial_log "$1")
  if grep -aEq "$VM_KERNEL_ERRORS_RE" "$log"; then
    grep -aEn "$VM_KERNEL_ERRORS_RE" "$log" | head -n 20 >&2
    fail "vm '$1': the guest kernel logged I/O or file-system errors"
  fi
}
