# shellcheck shell=bash
# Helpers for nbd-multipath integration tests, in the style of nbdkit's own
# tests/functions.sh.  Every tests/integration/test-*.sh sources this file
# and calls mp_init first:
#
#   source "$(dirname "$0")/functions.sh"
#   mp_init
#   make_image "$MP_TMP/disk.img" 64M
#   start_upstream a file "$MP_TMP/disk.img"
#   start_multipath mp "path=$(upstream_uri a)"
#   write_pattern "$(mp_uri mp)" 1 64M
#   ...
#
# CMake runs each test with bash and these variables:
#   MP_PLUGIN    the built plugin (.so); defaults to $MP_SOURCE/build/...
#   MP_SOURCE    the repository root; defaults to two levels above this file
#   MP_SANITIZE  "" | address | thread: how the plugin was built
# Optional knobs:
#   MP_VERBOSE=1        run the multipath nbdkit with -v -D multipath.verbose=1
#   MP_KEEP_TMP=1       keep $MP_TMP (logs, images) after the test
#   MP_START_TIMEOUT    seconds a server gets to start serving (default 10;
#                       tripled for sanitizer builds)
#   MP_STOP_GRACE       seconds between SIGTERM and SIGKILL at cleanup
#   MP_LOG_LINES        lines of each log shown when a test fails (default 40)
# Exit status 77 means "skipped" (CMake's SKIP_RETURN_CODE).
#
# Rules the helpers keep, and that tests should keep too:
# - Servers listen on Unix sockets in $MP_TMP only (no TCP ports).
# - Nothing waits by sleeping: wait_for polls a condition against a deadline.
# - Every process started by start_* is stopped when the test exits, passes or
#   fails, or is interrupted (EXIT/INT/TERM/HUP trap; SIGCONT first, SIGTERM,
#   SIGKILL after a grace period).  nbdkit also gets --exit-with-parent so that
#   even a SIGKILLed test shell leaves no server behind.
# - start_* must be called from the test's main shell (not inside $(...) or a
#   pipeline): the servers are its children, which is what lets the helpers
#   reap them and read their exit status.

set -euo pipefail
set -E  # ERR trap (last failing command) also inside functions
export LC_ALL=C

# Debian's python: the python3 first on PATH may be another build.  Only the
# standard library is used (json, struct, socket).
MP_PYTHON=${MP_PYTHON:-/usr/bin/python3}

# State of the servers started by this test, keyed by NAME.
declare -gA _MP_PID=()      # NAME -> pid of the current incarnation
declare -gA _MP_KIND=()     # NAME -> upstream | multipath
declare -gA _MP_READY=()    # NAME -> how start_* decided it was ready
declare -gA _MP_EXPECT_GONE=()  # pid -> 1 when the test killed it on purpose
declare -gA _MP_STOP_SIGNAL=()  # pid -> signal that stops it (default TERM)
declare -gA _MP_START=()    # pid -> start time (/proc/PID/stat field 22), so
                            # that a reused pid is never taken for ours
declare -ga _MP_ALL_PIDS=() # every pid ever started, for cleanup
declare -ga _MP_HOOKS=()    # commands (quoted) run at cleanup, last first
_MP_MAIN_PID=
_MP_T0=
_MP_LAST_ERR=
_MP_FIO_N=0
_MP_OWN_TMP=
# Never inherited: a test run from inside another test must not adopt (and
# at exit delete) the outer test's directory.
MP_TMP=

# ---------------------------------------------------------------- basics ----

# Microseconds since the epoch, into the variable _mp_now (no fork: this runs
# in polling loops).  EPOCHREALTIME's radix character follows the locale, so
# strip everything that is not a digit; it always has 6 decimals.
_mp_clock() { _mp_now=${EPOCHREALTIME//[!0-9]/}; }

# "2", "0.5", "10.25" seconds -> microseconds on stdout.
_mp_secs_to_us() {
  local s=$1 int frac
  [[ $s =~ ^([0-9]+)(\.([0-9]{0,6})[0-9]*)?$ ]] || { echo "bad number of seconds: $s" >&2; return 2; }
  int=${BASH_REMATCH[1]}
  frac=${BASH_REMATCH[3]:-}
  frac=${frac}000000
  echo $((10#$int * 1000000 + 10#${frac:0:6}))
}

# "4096", "64K", "64M", "1G", "64MiB" -> bytes (powers of 1024), on stdout.
mp_bytes() {
  local s=$1 n u
  [[ $s =~ ^([0-9]+)([KkMmGgTt]?)(i?B)?$ ]] || { echo "bad size: $s" >&2; return 2; }
  n=${BASH_REMATCH[1]} u=${BASH_REMATCH[2],,}
  case $u in
    "") echo $((10#$n)) ;;
    k) echo $((10#$n << 10)) ;;
    m) echo $((10#$n << 20)) ;;
    g) echo $((10#$n << 30)) ;;
    t) echo $((10#$n << 40)) ;;
  esac
}

# Microseconds -> "S.mmm".
_mp_us_to_s() { printf '%d.%03d' $(($1 / 1000000)) $(($1 / 1000 % 1000)); }

# Log a line to stderr, stamped with seconds since mp_init.
mp_log() {
  local ms=0
  if [[ -n $_MP_T0 ]]; then _mp_clock; ms=$(((_mp_now - _MP_T0) / 1000)); fi
  printf '[%d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2
}

# Fail the test.  The EXIT trap dumps the logs and stops every server.
fail() {
  # From the main shell, to the test's stderr even inside a redirection (a
  # wait_for condition); a subshell's goes where its stderr goes.
  if [[ -n ${_MP_ERR_FD:-} && $BASHPID == "${_MP_MAIN_PID:-}" ]]; then
    mp_log "FAIL: $*" 2>&"$_MP_ERR_FD"
  else
    mp_log "FAIL: $*"
  fi
  exit 1
}

# Skip the test (CTest SKIP_RETURN_CODE 77).
mp_skip() {
  mp_log "SKIP: $*"
  exit 77
}

# Skip unless every named command exists.
mp_require() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || mp_skip "required tool '$c' is not installed"
  done
}

_mp_require_python() {
  [[ -x $MP_PYTHON ]] || mp_skip "$MP_PYTHON is not installed"
}

# mp_require_ctl: sets MP_CTL to nbd-multipath-ctl (next to the plugin unless
# set); skips when it is not built and the plugin path was defaulted.
mp_require_ctl() {
  MP_CTL=${MP_CTL:-$(dirname "$MP_PLUGIN")/nbd-multipath-ctl}
  if [[ ! -x $MP_CTL ]]; then
    [[ -n $_MP_PLUGIN_DEFAULTED ]] && mp_skip "nbd-multipath-ctl not built: $MP_CTL (set MP_CTL)"
    fail "MP_CTL is not an executable: $MP_CTL"
  fi
}

# ctl_paths_active SOCKET NAME...: `show paths` on the control SOCKET answers
# within 5 s and lists each named path as active.
ctl_paths_active() {
  local sock=$1 out name
  shift
  out=$(timeout -k 5 20 "$MP_CTL" -s "$sock" --timeout 5 show paths) || return 1
  for name; do
    grep -Eq "^$name .* active " <<<"$out" || return 1
  done
}

assert_eq() {
  local expected=$1 actual=$2 what=${3:-value}
  [[ $expected == "$actual" ]] || fail "$what: expected '$expected', got '$actual'"
}

# assert_contains FILE ERE: the file has a line matching the extended regex.
assert_contains() {
  local file=$1 pattern=$2
  [[ -e $file ]] || fail "assert_contains: $file does not exist"
  grep -Eq -- "$pattern" "$file" || {
    mp_log "last lines of $file:"
    tail -n "${MP_LOG_LINES:-40}" "$file" >&2 || true
    fail "$file does not contain /$pattern/"
  }
}

assert_not_contains() {
  local file=$1 pattern=$2
  [[ -e $file ]] || return 0
  if grep -Eq -- "$pattern" "$file"; then
    grep -En -- "$pattern" "$file" | head -n 10 >&2 || true
    fail "$file contains /$pattern/"
  fi
}

# Run a command, expecting it to fail (for use with wait_for and in asserts).
not() { ! "$@"; }

# wait_for DESCRIPTION TIMEOUT_SECONDS COMMAND [ARGS...]
# Run COMMAND every 50 ms until it succeeds; fail the test when TIMEOUT (may
# be fractional) passes first.  COMMAND may be a shell function.  Each attempt
# should itself be bounded (use `timeout` for client tools that can hang).
wait_for() {
  local desc=$1 secs=$2 limit_us deadline out
  limit_us=$(_mp_secs_to_us "$secs") || fail "wait_for: bad timeout '$secs'"
  shift 2
  out=$MP_TMP/.wait_for.out
  _mp_clock
  deadline=$((_mp_now + limit_us))
  while :; do
    if "$@" >"$out" 2>&1; then
      return 0
    fi
    _mp_clock
    if ((_mp_now >= deadline)); then
      mp_log "last output of '$*':"
      tail -n 20 "$out" >&2 || true
      fail "timed out after ${secs}s waiting for: $desc"
    fi
    sleep 0.05
  done
}

# ---------------------------------------------------------- init/cleanup ----

# mp_init: temp dir, traps, tool checks, plugin path, sanitizer preload.
mp_init() {
  _MP_MAIN_PID=$BASHPID
  # The test's own stdout and stderr: fail() inside a redirected command
  # (wait_for's condition) still reports there, and so does the EXIT trap.
  exec {_MP_OUT_FD}>&1 {_MP_ERR_FD}>&2
  _mp_clock
  _MP_T0=$_mp_now
  MP_TEST_NAME=${MP_TEST_NAME:-$(basename "${BASH_SOURCE[1]:-$0}" .sh)}

  # Traps first, so that nothing started below can leak.  INT/TERM/HUP turn
  # into an exit, and the EXIT trap does the work once.
  trap '_MP_LAST_ERR="${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND (status $?)"' ERR
  trap _mp_on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP

  command -v nbdkit >/dev/null 2>&1 || mp_skip "nbdkit is not installed"
  command -v nbdinfo >/dev/null 2>&1 || mp_skip "nbdinfo (libnbd-bin) is not installed"
  command -v timeout >/dev/null 2>&1 || mp_skip "timeout (coreutils) is not installed"

  MP_SOURCE=${MP_SOURCE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
  _MP_PLUGIN_DEFAULTED=
  if [[ -z ${MP_PLUGIN:-} ]]; then
    MP_PLUGIN=$MP_SOURCE/build/nbdkit-multipath-plugin.so
    _MP_PLUGIN_DEFAULTED=1
  fi
  export MP_SOURCE MP_PLUGIN

  # A Unix socket path must fit in sun_path (108 bytes): keep the directory
  # short, falling back to /tmp when $TMPDIR is deep.
  local base=${TMPDIR:-/tmp}
  ((${#base} <= 48)) || base=/tmp
  MP_TMP=$(mktemp -d "$base/mp.XXXXXX")
  _MP_OWN_TMP=$MP_TMP
  export MP_TMP
  # Anything the tools put in a temp dir lands in ours and goes with it.
  export TMPDIR=$MP_TMP

  MP_PRELOAD=
  _MP_TIME_FACTOR=1
  case ${MP_SANITIZE:-} in
    "") ;;
    address)
      MP_PRELOAD=$("${MP_CC:-gcc}" -print-file-name=libasan.so)
      # nbdkit itself leaks at exit; leak reports would bury real errors.
      export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
      export UBSAN_OPTIONS="print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
      _MP_TIME_FACTOR=3
      ;;
    thread)
      MP_PRELOAD=$("${MP_CC:-gcc}" -print-file-name=libtsan.so)
      export TSAN_OPTIONS="suppressions=$MP_SOURCE/tests/sanitizer/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
      _MP_TIME_FACTOR=3
      ;;
    *) fail "MP_SANITIZE must be empty, address or thread, not '$MP_SANITIZE'" ;;
  esac
  # gcc prints the bare name back when it has no such library.
  if [[ -n $MP_PRELOAD && ! -e $MP_PRELOAD ]]; then
    fail "MP_SANITIZE=$MP_SANITIZE but the sanitizer runtime was not found ($MP_PRELOAD)"
  fi
  # nbdkit is a C program: libstdc++ arrives only with the plugin, too late for
  # the sanitizer's __cxa_throw interceptor, which then aborts on the first
  # C++ exception. Preload it right after the runtime (colon: one word).
  if [[ -n $MP_PRELOAD ]]; then
    MP_PRELOAD+=:$("${MP_CC:-gcc}" -print-file-name=libstdc++.so)
    # strerror without gettext: see tests/sanitizer/strerror_shim.c.
    [[ -n ${MP_SANITIZER_SHIM:-} ]] && MP_PRELOAD+=:$MP_SANITIZER_SHIM
  fi
  export MP_PRELOAD
  mp_log "test $MP_TEST_NAME: MP_TMP=$MP_TMP MP_PLUGIN=$MP_PLUGIN${MP_SANITIZE:+ MP_SANITIZE=$MP_SANITIZE}"
}

# mp_on_cleanup COMMAND [ARGS...]: run COMMAND at exit, after the servers
# are stopped and before $MP_TMP is removed (e.g. a directory outside
# $MP_TMP, a network namespace).  Hooks run last-registered first.
mp_on_cleanup() {
  _MP_HOOKS+=("$(printf '%q ' "$@")")
}

# Is the process running (exists, is not a zombie, and is the process we
# started rather than a later one that got the same pid)?
_mp_alive() {
  local stat f
  [[ -n ${1:-} ]] || return 1
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  read -r -a f <<<"${stat##*) }"
  [[ ${f[0]} != Z ]] || return 1
  [[ -z ${_MP_START[$1]:-} || ${_MP_START[$1]} == "${f[19]}" ]]
}

# Remember a new child's start time (see _mp_alive).
_mp_track() {
  local stat f
  _MP_ALL_PIDS+=("$1")
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
  read -r -a f <<<"${stat##*) }"
  _MP_START[$1]=${f[19]}
}

# Single-letter process state (R, S, T, Z...) or "gone".
_mp_state() {
  local stat
  if { read -r stat <"/proc/$1/stat"; } 2>/dev/null; then
    stat=${stat##*) }
    echo "${stat:0:1}"
  else
    echo gone
  fi
}

# Reap a child that has exited; its exit status goes to _mp_status
# (128+N for signal N, 127 when it was not our child).
_mp_reap() {
  _mp_status=0
  wait "$1" 2>/dev/null || _mp_status=$?
}

# Wait until every given pid is gone or TIMEOUT_US passes.  Returns 1 on
# timeout.
_mp_wait_gone() {
  local limit_us=$1 deadline p any
  shift
  _mp_clock
  deadline=$((_mp_now + limit_us))
  while :; do
    any=
    for p in "$@"; do
      if _mp_alive "$p"; then any=1; break; fi
    done
    [[ -z $any ]] && return 0
    _mp_clock
    ((_mp_now < deadline)) || return 1
    sleep 0.02
  done
}

# Every thread's stack of a process that hangs, into the test's log (gdb,
# when installed), so that a hang at exit can be read after the fact.
_mp_stacks() {
  command -v gdb >/dev/null || return 0
  mp_log "stacks of pid $1 ($(tr '\0' ' ' </proc/"$1"/cmdline 2>/dev/null | cut -c1-120)):"
  timeout 30 gdb -p "$1" -batch -nx -ex 'set pagination off' -ex 'thread apply all bt 12' \
    2>/dev/null | grep -E '^(Thread|#)' | head -n 200 >&2 || true
}

# Stop the given pids: SIGCONT (a stopped process would not act on SIGTERM),
# SIGTERM, wait up to the grace period, then SIGKILL.
_mp_terminate() {
  local grace_us p
  grace_us=$(_mp_secs_to_us "${MP_STOP_GRACE:-$((5 * _MP_TIME_FACTOR))}")
  for p in "$@"; do
    _mp_alive "$p" || continue
    # tgtd ignores SIGTERM: such servers name their own stop signal.
    kill -"${_MP_STOP_SIGNAL[$p]:-TERM}" "$p" 2>/dev/null || true
    kill -CONT "$p" 2>/dev/null || true
  done
  if ! _mp_wait_gone "$grace_us" "$@"; then
    for p in "$@"; do
      if _mp_alive "$p"; then
        mp_log "pid $p ignored SIGTERM for $(_mp_us_to_s "$grace_us")s: SIGKILL"
        _mp_stacks "$p"
        kill -KILL "$p" 2>/dev/null || true
      fi
    done
    _mp_wait_gone 10000000 "$@" || mp_log "warning: some of pids $* survived SIGKILL"
  fi
}

# Tail every log in $MP_TMP to stderr.
_mp_dump_logs() {
  local f n=${MP_LOG_LINES:-40} any=''
  [[ -n $MP_TMP && -d $MP_TMP ]] || return 0
  for f in "$MP_TMP"/*.log; do
    [[ -e $f ]] || continue
    printf '\n===== last %d lines of %s =====\n' "$n" "${f##*/}" >&2
    tail -n "$n" "$f" >&2 || true
    any=1
  done
  [[ -z $any ]] || printf '===== end of logs =====\n\n' >&2
}

# Problems a sanitizer or UBSan printed into a multipath log.
_MP_SANITIZER_RE='ERROR: AddressSanitizer|ERROR: LeakSanitizer|WARNING: ThreadSanitizer|runtime error:|SUMMARY: (Address|Thread|UndefinedBehavior)Sanitizer'

_mp_check_multipath_log() {
  local name=$1
  if [[ -e $MP_TMP/$name.log ]] && grep -Eq "$_MP_SANITIZER_RE" "$MP_TMP/$name.log"; then
    mp_log "sanitizer report in $name.log:"
    grep -En -A 30 "$_MP_SANITIZER_RE" "$MP_TMP/$name.log" | head -n 80 >&2 || true
    return 1
  fi
}

_mp_on_exit() {
  local rc=$? name pid problems=0 live=()
  # A subshell that exits ($(...), ( ... )) must not tear down the servers.
  [[ $BASHPID == "$_MP_MAIN_PID" ]] || return "$rc"
  trap - EXIT INT TERM HUP ERR
  set +e
  exec >&"$_MP_OUT_FD" 2>&"$_MP_ERR_FD"

  if ((rc != 0 && rc != 77)); then
    [[ -n $_MP_LAST_ERR ]] && mp_log "last failed command: $_MP_LAST_ERR"
    _mp_dump_logs
  fi

  # Multipath servers first, gracefully, so that a crash or a sanitizer
  # report at shutdown is seen; then the upstreams.
  for name in "${!_MP_PID[@]}"; do
    pid=${_MP_PID[$name]}
    [[ ${_MP_KIND[$name]} == multipath ]] && _mp_alive "$pid" && live+=("$pid")
  done
  ((${#live[@]})) && _mp_terminate "${live[@]}"
  for name in "${!_MP_PID[@]}"; do
    [[ ${_MP_KIND[$name]} == multipath ]] || continue
    pid=${_MP_PID[$name]}
    _mp_reap "$pid"
    if [[ -z ${_MP_EXPECT_GONE[$pid]:-} ]] && ((_mp_status != 0 && _mp_status != 127)); then
      mp_log "multipath server '$name' (pid $pid) exited with status $_mp_status (expected 0 after SIGTERM)"
      problems=1
    fi
    _mp_check_multipath_log "$name" || problems=1
  done

  live=()
  for pid in "${_MP_ALL_PIDS[@]}"; do
    _mp_alive "$pid" && live+=("$pid")
  done
  ((${#live[@]})) && _mp_terminate "${live[@]}"
  for pid in "${_MP_ALL_PIDS[@]}"; do _mp_reap "$pid"; done

  local i
  for ((i = ${#_MP_HOOKS[@]} - 1; i >= 0; i--)); do
    eval "${_MP_HOOKS[i]}" || mp_log "cleanup hook failed: ${_MP_HOOKS[i]}"
  done

  if ((rc == 0 && problems)); then
    _mp_dump_logs
    rc=1
  fi
  if [[ -n $MP_TMP && -d $MP_TMP && $MP_TMP == "$_MP_OWN_TMP" ]]; then
    if [[ -n ${MP_KEEP_TMP:-} ]]; then
      mp_log "kept $MP_TMP"
    else
      rm -rf "$MP_TMP"
    fi
  fi
  case $rc in
    0) mp_log "PASS: $MP_TEST_NAME" ;;
    77) ;;
    *) mp_log "FAIL: $MP_TEST_NAME (exit status $rc)" ;;
  esac
  exit "$rc"
}

# ---------------------------------------------------------------- servers ----

server_sock() { echo "$MP_TMP/$1.sock"; }
server_uri() { echo "nbd+unix:///?socket=$MP_TMP/$1.sock"; }
upstream_uri() { server_uri "$1"; }
mp_uri() { server_uri "$1"; }
server_pid() { echo "${_MP_PID[$1]:?no server named $1}"; }
server_log() { echo "$MP_TMP/$1.log"; }

# Error-filter trigger file of a server (use error-file=$(error_file NAME)),
# and switches for it.
error_file() { echo "$MP_TMP/$1.err"; }
inject_errors() { : >"$(error_file "$1")"; }
clear_errors() { rm -f "$(error_file "$1")"; }

# Pause-filter control socket (pause-control=$(pause_ctl NAME)).
pause_ctl() { echo "$MP_TMP/$1.ctl"; }

# Plugin debug flags: -v and -D multipath.verbose=1 when MP_VERBOSE is set.
# MP_NBDKIT_OPTS adds nbdkit options (e.g. -D multipath.unsafe_retry=1).
mp_debug_flags() {
  if [[ -n ${MP_VERBOSE:-} ]]; then
    echo "-v -D multipath.verbose=1 ${MP_NBDKIT_OPTS:-}"
  else
    echo "${MP_NBDKIT_OPTS:-}"
  fi
}

# Does the server accept an NBD connection and complete the handshake?
server_serves() {
  [[ -S $MP_TMP/$1.sock ]] && timeout 5 nbdinfo --size "$(server_uri "$1")" >/dev/null 2>&1
}

_mp_check_main_shell() {
  [[ $BASHPID == "$_MP_MAIN_PID" ]] ||
    fail "$1 must run in the test's main shell, not in \$(...), ( ) or a pipeline"
}

# _mp_launch NAME: start the server from its saved kind and arguments, wait
# until it is ready.  The arguments live in $MP_TMP/NAME.args (NUL-separated)
# so that restart_server can start the same server again.
_mp_launch() {
  local name=$1 kind=${_MP_KIND[$1]} ready=${_MP_READY[$1]}
  # Other kinds of server (tgt, see iscsi.sh) bring their own launcher.
  if declare -F "_mp_launch_$kind" >/dev/null; then
    "_mp_launch_$kind" "$name"
    return
  fi
  local sock=$MP_TMP/$name.sock pidfile=$MP_TMP/$name.pid log=$MP_TMP/$name.log
  local -a args cmd=() dbg=()
  mapfile -d '' -t args <"$MP_TMP/$name.args"

  # nbdkit does not remove its socket or pidfile at exit, and refuses to
  # bind over a stale socket.
  rm -f "$sock" "$pidfile"
  if [[ $kind == multipath ]]; then
    [[ -n $MP_PRELOAD ]] && cmd=(env "LD_PRELOAD=$MP_PRELOAD")
    read -r -a dbg <<<"$(mp_debug_flags)"
    cmd+=(nbdkit -f --exit-with-parent -U "$sock" -P "$pidfile" "${dbg[@]}" "$MP_PLUGIN" "${args[@]}")
  else
    cmd=(nbdkit -f --exit-with-parent -U "$sock" -P "$pidfile" "${args[@]}")
  fi
  printf '===== %s: %s\n' "$(date +%T.%N)" "${cmd[*]}" >>"$log"
  "${cmd[@]}" </dev/null >>"$log" 2>&1 &
  local pid=$!
  _MP_PID[$name]=$pid
  _mp_track "$pid"

  local limit_us deadline
  limit_us=$(_mp_secs_to_us "${MP_START_TIMEOUT:-$((10 * _MP_TIME_FACTOR))}")
  _mp_clock
  deadline=$((_mp_now + limit_us))
  while :; do
    if ! _mp_alive "$pid"; then
      _mp_reap "$pid"
      _MP_EXPECT_GONE[$pid]=1
      mp_log "last lines of $log:"
      tail -n "${MP_LOG_LINES:-40}" "$log" >&2
      fail "$kind server '$name' exited with status $_mp_status while starting"
    fi
    case $ready in
      nbd) server_serves "$name" && break ;;
      pidfile) [[ -s $pidfile ]] && break ;;  # written once the socket listens
      none) break ;;
    esac
    _mp_clock
    ((_mp_now < deadline)) || fail "$kind server '$name' did not start serving within $(_mp_us_to_s "$limit_us")s (see $log)"
    sleep 0.02
  done
  mp_log "started $kind '$name' (pid $pid)"
}

# _mp_start KIND [--ready=nbd|pidfile|none] NAME [ARGS...]
_mp_start() {
  local kind=$1 ready=nbd
  shift
  _mp_check_main_shell "start_$kind"
  if [[ ${1:-} == --ready=* ]]; then
    ready=${1#--ready=}
    shift
  fi
  case $ready in nbd | pidfile | none) ;; *) fail "bad --ready=$ready" ;; esac
  local name=${1:?start_$kind needs a NAME}
  shift
  [[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || fail "bad server name '$name'"
  [[ -n $MP_TMP ]] || fail "call mp_init first"
  if [[ -n ${_MP_PID[$name]:-} ]] && _mp_alive "${_MP_PID[$name]}"; then
    fail "a server named '$name' is already running"
  fi
  local sock=$MP_TMP/$name.sock
  ((${#sock} < 108)) || fail "socket path too long for sun_path: $sock"
  _MP_KIND[$name]=$kind
  _MP_READY[$name]=$ready
  if (($#)); then printf '%s\0' "$@"; fi >"$MP_TMP/$name.args"
  _mp_launch "$name"
}

# start_upstream [--ready=MODE] NAME [nbdkit args: filters, plugin, params]
# e.g. start_upstream a --filter=error file "$MP_TMP/disk.img" \
#        error-rate=100% error-file="$(error_file a)"
# Ready when an NBD handshake succeeds (--ready=pidfile: when the socket
# listens; --ready=none: right away).
start_upstream() { _mp_start upstream "$@"; }

# start_multipath [--ready=MODE] NAME [plugin args...]
# Runs nbdkit with $MP_PLUGIN (under the sanitizer runtime if MP_SANITIZE is
# set); stderr goes to $MP_TMP/NAME.log.  At cleanup the server must exit
# with status 0 after SIGTERM and its log must be free of sanitizer reports,
# or the test fails.
start_multipath() {
  if [[ ! -e $MP_PLUGIN ]]; then
    [[ -n $_MP_PLUGIN_DEFAULTED ]] && mp_skip "plugin not built: $MP_PLUGIN (set MP_PLUGIN)"
    fail "MP_PLUGIN does not exist: $MP_PLUGIN"
  fi
  _mp_start multipath "$@"
}

# kill_server NAME [SIGNAL]  (default KILL)
# Terminating signals wait until the process is gone and reap it.
kill_server() {
  local name=$1 sig=${2:-KILL} pid
  _mp_check_main_shell kill_server
  pid=$(server_pid "$name")
  _mp_alive "$pid" || fail "kill_server: '$name' (pid $pid) is not running"
  sig=${sig#SIG}
  case $sig in
    STOP | TSTP | CONT | USR1 | USR2 | WINCH | 19 | 20 | 18)
      kill -s "$sig" "$pid"
      return 0
      ;;
  esac
  _MP_EXPECT_GONE[$pid]=1
  kill -s "$sig" "$pid"
  # A stopped process acts on SIGTERM only once continued.
  kill -CONT "$pid" 2>/dev/null || true
  _mp_wait_gone 10000000 "$pid" || fail "'$name' (pid $pid) still running 10s after SIG$sig"
  _mp_reap "$pid"
  mp_log "killed '$name' (pid $pid) with SIG$sig, exit status $_mp_status"
}

# shutdown_server NAME: SIGTERM, wait, and for a multipath server check that
# it exited 0 with no sanitizer report.
shutdown_server() {
  local name=$1 pid
  _mp_check_main_shell shutdown_server
  pid=$(server_pid "$name")
  _mp_alive "$pid" || fail "shutdown_server: '$name' (pid $pid) is not running"
  _MP_EXPECT_GONE[$pid]=1
  _mp_terminate "$pid"
  _mp_reap "$pid"
  if [[ ${_MP_KIND[$name]} == multipath ]]; then
    ((_mp_status == 0)) || fail "multipath server '$name' exited with status $_mp_status after SIGTERM"
    _mp_check_multipath_log "$name" || fail "sanitizer report in $name.log"
  fi
  mp_log "shut down '$name' (exit status $_mp_status)"
}

# SIGSTOP a server and wait until the kernel reports it stopped.
stop_server() {
  local name=$1 pid
  pid=$(server_pid "$name")
  _mp_alive "$pid" || fail "stop_server: '$name' is not running"
  kill -STOP "$pid"
  wait_for "'$name' (pid $pid) to stop" 5 _mp_state_is "$pid" T
  mp_log "stopped '$name' (SIGSTOP)"
}

cont_server() {
  local name=$1 pid
  pid=$(server_pid "$name")
  kill -CONT "$pid"
  wait_for "'$name' (pid $pid) to continue" 5 not _mp_state_is "$pid" T
  mp_log "continued '$name' (SIGCONT)"
}

_mp_state_is() { [[ $(_mp_state "$1") == "$2" ]]; }

server_running() { _mp_alive "${_MP_PID[$1]:-}"; }

# Start a server again with the arguments it was first given, killing the old
# incarnation first (SIGTERM) if it still runs.
restart_server() {
  local name=$1 pid
  _mp_check_main_shell restart_server
  [[ -n ${_MP_KIND[$name]:-} ]] || fail "restart_server: no server named '$name'"
  pid=${_MP_PID[$name]}
  if _mp_alive "$pid"; then
    _MP_EXPECT_GONE[$pid]=1
    _mp_terminate "$pid"
    _mp_reap "$pid"
  fi
  _mp_launch "$name"
}

kill_upstream() { kill_server "$@"; }
stop_upstream() { stop_server "$@"; }
cont_upstream() { cont_server "$@"; }
restart_upstream() { restart_server "$@"; }
kill_multipath() { kill_server "$@"; }
restart_multipath() { restart_server "$@"; }
shutdown_multipath() { shutdown_server "$@"; }

# Run nbdkit in the foreground with the sanitizer preload, bounded in time,
# for one-shot checks: mp_nbdkit --dump-plugin "$MP_PLUGIN", or a config that
# must be refused: not mp_nbdkit -U "$MP_TMP/x.sock" "$MP_PLUGIN" bad=1.
# (Avoid --run under MP_SANITIZE=thread: the command inherits LD_PRELOAD.)
mp_nbdkit() {
  local -a pre=()
  [[ -n $MP_PRELOAD ]] && pre=(env "LD_PRELOAD=$MP_PRELOAD")
  timeout -k 5 "${MP_CMD_TIMEOUT:-60}" "${pre[@]}" nbdkit "$@"
}

# pause_requests NAME / resume_requests NAME: drive an upstream started with
# --filter=pause ... pause-control=$(pause_ctl NAME).  'p' is acknowledged
# with 'P' once requests already in flight have finished.
_mp_pause_cmd() {
  _mp_require_python
  timeout 10 "$MP_PYTHON" - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode())
ack = s.recv(1)
sys.exit(0 if ack == sys.argv[2].upper().encode() else 1)
EOF
}
pause_requests() { _mp_pause_cmd "$(pause_ctl "$1")" p || fail "pause of '$1' not acknowledged"; }
resume_requests() { _mp_pause_cmd "$(pause_ctl "$1")" r || fail "resume of '$1' not acknowledged"; }

# ----------------------------------------------------------------- images ----

# make_image PATH SIZE: a sparse, zero-filled image.
make_image() {
  local path=$1 size
  size=$(mp_bytes "$2")
  rm -f "$path"
  truncate -s "$size" "$path"
}

# Deterministic pattern: every 4 KiB block is one 32-byte record repeated
# 128 times: "MPPATTRN", seed, block number, a mix of both (little-endian
# 64-bit).  No block is all zeroes (so nbdcopy cannot turn it into a zero
# request) and a block written at the wrong offset or from another seed is
# told apart.  Files are cached per (seed, size) in $MP_TMP.
_mp_pattern_file() {
  local seed=$1 size=$2 f
  [[ $seed =~ ^[0-9]+$ ]] || fail "pattern seed must be a non-negative integer: $seed"
  f=$MP_TMP/.pattern-$seed-$size
  if [[ ! -e $f ]]; then
    _mp_require_python
    "$MP_PYTHON" - "$seed" "$size" "$f.tmp" <<'EOF'
import struct, sys
seed, size, out = int(sys.argv[1]) & (2**64 - 1), int(sys.argv[2]), sys.argv[3]
BS, M = 4096, 2**64 - 1
with open(out, "wb") as f:
    blk, left = 0, size
    while left > 0:
        chunk = []
        for _ in range(min(256, (left + BS - 1) // BS)):
            mix = ((seed * 0x9E3779B97F4A7C15) ^ (blk * 0xC2B2AE3D27D4EB4F) ^ 0x5555) & M
            chunk.append(struct.pack("<8sQQQ", b"MPPATTRN", seed, blk, mix) * (BS // 32))
            blk += 1
        data = b"".join(chunk)[:left]
        f.write(data)
        left -= len(data)
EOF
    mv "$f.tmp" "$f"
  fi
  echo "$f"
}

# write_pattern URI SEED SIZE: write the pattern for SEED over the first SIZE
# bytes through the NBD URI (plain writes, then a flush).
write_pattern() {
  local uri=$1 seed=$2 size f
  size=$(mp_bytes "$3")
  mp_require nbdcopy
  f=$(_mp_pattern_file "$seed" "$size")
  # -S 0: no zero detection, so every byte goes as NBD_CMD_WRITE.
  timeout -k 5 "${MP_COPY_TIMEOUT:-$((60 * _MP_TIME_FACTOR))}" \
    nbdcopy -S 0 --flush "$f" "$uri" 2>"$MP_TMP/.nbdcopy.err" || {
    cat "$MP_TMP/.nbdcopy.err" >&2
    mp_log "write_pattern seed $seed size $size to $uri failed"
    return 1
  }
}

# read_image URI SIZE OUTFILE: read the first SIZE bytes through the URI
# (NBD_CMD_READ for every byte: --no-extents, so holes are read too).
read_image() {
  local uri=$1 size out=$3 st
  size=$(mp_bytes "$2")
  mp_require nbdcopy
  # head stops after SIZE bytes; nbdcopy then dies of SIGPIPE (141), which is
  # fine.  A short file means the read failed.
  set +o pipefail
  timeout -k 5 "${MP_COPY_TIMEOUT:-$((60 * _MP_TIME_FACTOR))}" \
    nbdcopy --no-extents "$uri" - 2>"$MP_TMP/.nbdcopy.err" | head -c "$size" >"$out"
  set -o pipefail
  st=$(stat -c %s "$out")
  if ((st != size)); then
    cat "$MP_TMP/.nbdcopy.err" >&2
    mp_log "read of $uri stopped after $st of $size bytes"
    return 1
  fi
}

# verify_pattern URI SEED SIZE: every byte of the first SIZE bytes must be
# the pattern for SEED.  On a mismatch, reports the bad blocks and returns 1.
verify_pattern() {
  local uri=$1 seed=$2 size f rb=$MP_TMP/.readback
  size=$(mp_bytes "$3")
  f=$(_mp_pattern_file "$seed" "$size")
  read_image "$uri" "$size" "$rb" || return 1
  if cmp -s "$rb" "$f"; then
    rm -f "$rb"
    return 0
  fi
  "$MP_PYTHON" - "$rb" "$f" >&2 <<'EOF' || true
import struct, sys
BS = 4096
a, b = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
bad = [i for i in range(0, len(b), BS) if a[i:i + BS] != b[i:i + BS]]
print(f"verify_pattern: {len(bad)} of {(len(b) + BS - 1) // BS} blocks differ")
def desc(rec):
    if len(rec) < 32:
        return rec.hex()
    magic, seed, blk, _ = struct.unpack("<8sQQQ", rec[:32])
    if magic == b"MPPATTRN":
        return f"pattern seed {seed} block {blk}"
    return "zeroes" if rec == bytes(len(rec)) else rec[:32].hex()
for i in bad[:8]:
    print(f"  block {i // BS} (offset {i}): expected {desc(b[i:i + 32])}, got {desc(a[i:i + 32])}")
EOF
  rm -f "$rb"
  mp_log "verify_pattern seed $seed size $size on $uri failed"
  return 1
}

# -------------------------------------------------------------------- fio ----

# run_fio URI [fio args...]: fio with ioengine=nbd in the foreground.  JSON
# goes to $MP_FIO_JSON (by default a fresh $MP_TMP/fio-N.json per run; set
# MP_FIO_OUT to choose), which the fio_* helpers read by default; messages go
# to $MP_FIO_JSON.log.  Returns fio's exit status (non-zero on an I/O error
# unless --continue_on_error is given).  Bounded by MP_FIO_TIMEOUT (default
# 120 s): give --runtime/--time_based or --size yourself.
run_fio() {
  local uri=$1 st=0
  shift
  mp_require fio
  MP_FIO_JSON=${MP_FIO_OUT:-$MP_TMP/fio-$((++_MP_FIO_N)).json}
  _mp_fio_argv "$uri" "$MP_FIO_JSON" "$@"
  "${_mp_argv[@]}" >"$MP_FIO_JSON.log" 2>&1 || st=$?
  if ((st != 0)); then
    mp_log "fio exited with status $st (see ${MP_FIO_JSON##*/}.log):"
    head -n 5 "$MP_FIO_JSON.log" >&2 || true
  fi
  return "$st"
}

# The fio command line, into the array _mp_argv.  (An array rather than a
# function, so that `"${_mp_argv[@]}" &` makes timeout itself the background
# child: stopping it then stops fio too.)
_mp_fio_argv() {
  local uri=$1 json=$2
  shift 2
  _mp_argv=(timeout -k 5 "${MP_FIO_TIMEOUT:-120}"
    fio --name=mp --ioengine=nbd --uri="$uri"
    --output-format=json --output="$json" "$@")
}

# start_fio NAME URI [fio args...]: the same in the background (for I/O that
# must be running while a path fails).  JSON in $MP_TMP/NAME.json; stopped
# at cleanup like a server.  wait_fio NAME waits for it, sets MP_FIO_JSON and
# returns fio's exit status.
declare -gA _MP_FIO_PID=()
start_fio() {
  local name=$1 uri=$2
  shift 2
  mp_require fio
  _mp_check_main_shell start_fio
  _mp_fio_argv "$uri" "$MP_TMP/$name.json" "$@"
  "${_mp_argv[@]}" </dev/null >"$MP_TMP/$name.json.log" 2>&1 &
  _MP_FIO_PID[$name]=$!
  _mp_track "$!"
  mp_log "started fio '$name' (pid $!)"
}

wait_fio() {
  local name=$1 st=0
  _mp_check_main_shell wait_fio
  wait "${_MP_FIO_PID[$name]:?no fio named $name}" || st=$?
  MP_FIO_JSON=$MP_TMP/$name.json
  if ((st != 0)); then
    mp_log "fio '$name' exited with status $st (see $name.json.log):"
    head -n 5 "$MP_TMP/$name.json.log" >&2 || true
  fi
  return "$st"
}

# fio_stat [JSON] EXPR: sum over all jobs of a dotted field, e.g. read.iops,
# write.bw (KiB/s), read.total_ios; the special field "errors" counts I/O
# errors (total_err with --continue_on_error, else 1 per job that stopped on
# an error).  Prints a number.
fio_stat() {
  local json=$MP_FIO_JSON
  if (($# == 2)); then json=$1; shift; fi
  _mp_require_python
  "$MP_PYTHON" - "$json" "$1" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])  # fio may put notes before the JSON
total = 0
for job in doc["jobs"]:
    if sys.argv[2] == "errors":
        total += job.get("total_err", 1 if job.get("error", 0) else 0)
        continue
    v = job
    for k in sys.argv[2].split("."):
        v = v[k]
    total += v
print(round(total, 3) if isinstance(total, float) else total)
EOF
}

fio_errors() { fio_stat "${1:-$MP_FIO_JSON}" errors; }
# IOPS and MiB/s of reads plus writes.
fio_iops() {
  local j=${1:-$MP_FIO_JSON}
  "$MP_PYTHON" -c 'import sys; print(round(float(sys.argv[1]) + float(sys.argv[2]), 1))' \
    "$(fio_stat "$j" read.iops)" "$(fio_stat "$j" write.iops)"
}
fio_bw_mib() {
  local j=${1:-$MP_FIO_JSON}
  "$MP_PYTHON" -c 'import sys; print(round((float(sys.argv[1]) + float(sys.argv[2])) / 1024, 1))' \
    "$(fio_stat "$j" read.bw)" "$(fio_stat "$j" write.bw)"
}
