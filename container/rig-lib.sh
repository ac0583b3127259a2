# shellcheck shell=bash
# The rig's commands (up, down, status, fail, heal) and their helpers; sourced
# by container/rig, which sets RIG_HOME, RIG_SRC, RIG_ROOT, RIG_NAME, RIG_DIR.
#
# State of one rig, in $RIG_DIR (all plain files, so that `rig down` works
# after any crash, from another shell):
#   rig.env          SUBNET, NPATHS, IMAGE, SOCK, CTL_SOCK, TIMEOUT_MS, ...
#   p<i>/kind        nbd | iscsi
#   p<i>/proc        "PID STARTTIME" of the upstream (nbdkit or tgtd)
#   p<i>/cmd         its command line, NUL-separated (heal after kill reruns it)
#   p<i>/mode        the active fault ("slow 200"), absent when healthy
#   p<i>/flap.proc   the background flapper, while `flap` is active
#   p<i>/errors      exists while `errors` is active (nbdkit error-file)
#   p<i>/delay       milliseconds while `slow` is active (delayfile filter)
#   mp.proc, mp.status, mp.log, disk.yaml, disk.sock, ctl.sock

# ------------------------------------------------------------------ basics --

: "${RIG_HOME:?set by container/rig}" "${RIG_ROOT:?}" "${RIG_NAME:?}"

log() { printf 'rig: %s\n' "$*" >&2; }
die() {
  printf 'rig: %s\n' "$*" >&2
  exit 1
}

now_ms() { echo $((${EPOCHREALTIME//[!0-9]/} / 1000)); }

# poll SECONDS COMMAND...: run COMMAND every 50 ms until it succeeds; 1 when
# SECONDS pass first. Each attempt must be bounded by itself.
poll() {
  local limit_ms deadline
  limit_ms=$(awk -v s="$1" 'BEGIN { printf "%d", s * 1000 }')
  shift
  deadline=$(($(now_ms) + limit_ms))
  until "$@" >/dev/null 2>&1; do
    (($(now_ms) < deadline)) || return 1
    sleep 0.05
  done
}

require_root() {
  ((EUID == 0)) || die "needs root (network namespaces, nft, tc)"
  local c
  for c in ip nft tc ss nbdkit nbdinfo timeout setsid flock; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' is not installed"
  done
}

# Durations: "250ms", "2s", "1.5s", "1.5" (seconds) -> milliseconds.
duration_ms() {
  local s=$1
  [[ $s =~ ^([0-9]+(\.[0-9]+)?)(ms|s)?$ ]] || die "bad duration '$s' (e.g. 500ms, 2s)"
  if [[ ${BASH_REMATCH[3]} == ms ]]; then
    awk -v v="${BASH_REMATCH[1]}" 'BEGIN { printf "%d", v }'
  else
    awk -v v="${BASH_REMATCH[1]}" 'BEGIN { printf "%d", v * 1000 }'
  fi
}

# Rates as tc writes them: "8mbit", "512kbit", "1gbit", "100000bit" or a bare
# number of bits per second; also "1mbps" (bytes). -> bits per second.
rate_bps() {
  local s=${1,,} n u
  [[ $s =~ ^([0-9]+(\.[0-9]+)?)([kmg]?)(bit|bps)?$ ]] || die "bad rate '$1' (e.g. 8mbit, 512kbit)"
  n=${BASH_REMATCH[1]} u=${BASH_REMATCH[3]}
  awk -v n="$n" -v u="$u" -v b="${BASH_REMATCH[4]}" 'BEGIN {
    m = (u == "k") ? 1000 : (u == "m") ? 1000000 : (u == "g") ? 1000000000 : 1
    if (b == "bps") m *= 8
    printf "%d", n * m }'
}

# Sizes: 4096, 64K, 64M, 1G -> bytes.
size_bytes() {
  local s=$1
  [[ $s =~ ^([0-9]+)([KkMmGg]?)$ ]] || die "bad size '$s' (e.g. 64M)"
  case ${BASH_REMATCH[2],,} in
    "") echo $((BASH_REMATCH[1])) ;;
    k) echo $((BASH_REMATCH[1] << 10)) ;;
    m) echo $((BASH_REMATCH[1] << 20)) ;;
    g) echo $((BASH_REMATCH[1] << 30)) ;;
  esac
}

# ------------------------------------------------------- process records --
# A record is "PID STARTTIME" (field 22 of /proc/PID/stat), so that a pid the
# kernel has since given to another process is never taken for ours.

proc_start() {
  local stat f
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  read -r -a f <<<"${stat##*) }"
  echo "${f[19]}"
}

proc_state() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || { echo gone; return 0; }
  stat=${stat##*) }
  echo "${stat:0:1}"
}

record_proc() {
  local st
  st=$(proc_start "$2") || return 1
  echo "$2 $st" >"$1"
}

# record_pid FILE: the pid of a live recorded process, else status 1.
record_pid() {
  local pid st
  [[ -s $1 ]] || return 1
  read -r pid st <"$1" || return 1
  [[ $(proc_start "$pid" 2>/dev/null) == "$st" ]] || return 1
  [[ $(proc_state "$pid") != Z ]] || return 1
  echo "$pid"
}

gone() { [[ $(proc_start "$1" 2>/dev/null) != "$2" || $(proc_state "$1") == Z ]]; }

# Stop a recorded process: SIGCONT (a stopped one ignores SIGTERM), SIGTERM,
# then SIGKILL after GRACE seconds.
stop_record() {
  local file=$1 grace=${2:-5} pid st
  [[ -s $file ]] || return 0
  read -r pid st <"$file" || return 0
  if pid=$(record_pid "$file"); then
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    if ! poll "$grace" gone "$pid" "$st"; then
      log "pid $pid ignored SIGTERM for ${grace}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      poll 5 gone "$pid" "$st" || log "warning: pid $pid survived SIGKILL"
    fi
  fi
  rm -f "$file"
}

# ---------------------------------------------------------------- naming --

load_env() {
  [[ -s $RIG_DIR/rig.env ]] || die "no rig named '$RIG_NAME' (no $RIG_DIR/rig.env): rig up first"
  # shellcheck source=/dev/null
  source "$RIG_DIR/rig.env"
}

ns_name() { echo "mprig${SUBNET}p$1"; }
host_if() { echo "mr${SUBNET}h$1"; }
up_if() { echo "mr${SUBNET}u$1"; }
host_addr() { echo "10.231.$SUBNET.$((4 * $1 + 1))"; }
up_addr() { echo "10.231.$SUBNET.$((4 * $1 + 2))"; }
pdir() { echo "$RIG_DIR/p$1"; }
tgt_port() { echo $((12000 + SUBNET * 64 + $1)); } # tgtd control port (-C, at most 32767); see teardown_net
iqn() { echo "iqn.2025-01.org.nbd-multipath:rig.$SUBNET.p$1"; }

path_kind() { cat "$(pdir "$1")/kind"; }

path_uri() {
  case $(path_kind "$1") in
    nbd) echo "nbd://$(up_addr "$1"):$NBD_PORT" ;;
    iscsi) echo "iscsi://$(up_addr "$1"):$ISCSI_PORT/$(iqn "$1")/1" ;;
  esac
}

# "p2", "2", "path2" -> 2.
path_index() {
  local p=${1:?PATH missing} i
  i=${p#path}
  i=${i#p}
  { [[ $i =~ ^[0-9]+$ ]] && ((10#$i >= 1 && 10#$i <= NPATHS)); } || die "no path '$p' in rig '$RIG_NAME' (p1..p$NPATHS)"
  echo $((10#$i))
}

in_ns() {
  local ns
  ns=$(ns_name "$1")
  shift
  ip netns exec "$ns" "$@"
}

multipath_ctl() {
  local c
  for c in "${MP_CTL:-}" "$RIG_SRC/build/nbd-multipath-ctl"; do
    [[ -n $c && -x $c ]] && { echo "$c"; return 0; }
  done
  command -v nbd-multipath-ctl
}

# -------------------------------------------------------------- upstreams --

# The upstream's command line, saved so that heal after kill reruns it.
upstream_cmd() {
  local i=$1 d
  d=$(pdir "$i")
  case $(path_kind "$i") in
    nbd)
      local -a filt=(--filter=error) params=(error-rate=100% "error-file=$d/errors")
      if [[ -e $RIG_DIR/nbdkit-delayfile-filter.so ]]; then
        filt+=("--filter=$RIG_DIR/nbdkit-delayfile-filter.so")
        params+=("delay-file=$d/delay")
      fi
      printf '%s\0' nbdkit -f -i "$(up_addr "$i")" -p "$NBD_PORT" -P "$d/nbdkit.pid" \
        "${filt[@]}" file "$IMAGE" "${params[@]}"
      ;;
    iscsi)
      printf '%s\0' tgtd -f -C "$(tgt_port "$i")" --iscsi "portal=$(up_addr "$i"):$ISCSI_PORT"
      ;;
  esac
}

nbd_serves() { timeout 3 nbdinfo --size "$1" >/dev/null 2>&1; }
tgt_answers() { timeout 3 tgtadm -C "$1" --op show --mode system >/dev/null 2>&1; }

# Start upstream i in its namespace and wait until it serves.
start_upstream() {
  local i=$1 d pid
  local -a cmd
  d=$(pdir "$i")
  mapfile -d '' -t cmd <"$d/cmd"
  rm -f "$d/nbdkit.pid" "$d/proc" "$d/server.pid"
  printf '===== %s: %s\n' "$(date +%T.%N)" "${cmd[*]}" >>"$d/log"
  # nbdkit sets PR_SET_PDEATHSIG (SIGTERM) even without --exit-with-parent,
  # so it must not be the child of this short-lived command: a small shell
  # in its own session (setsid) is its parent, waits for it and lives as
  # long as it does. It writes the server's pid to server.pid.
  # shellcheck disable=SC2016 # expanded by the inner shell
  ip netns exec "$(ns_name "$i")" setsid bash -c \
    '"$@" & echo "$!" >"$0.tmp"; mv "$0.tmp" "$0"; wait "$!"' "$d/server.pid" \
    "${cmd[@]}" </dev/null >>"$d/log" 2>&1 &
  poll 5 test -s "$d/server.pid" || die "p$i: upstream did not start (see $d/log)"
  pid=$(<"$d/server.pid")
  record_proc "$d/proc" "$pid" || die "p$i: upstream exited at once (see $d/log)"
  case $(path_kind "$i") in
    nbd)
      poll 15 nbd_serves "$(path_uri "$i")" || die "p$i: nbdkit does not serve $(path_uri "$i") (see $d/log)"
      ;;
    iscsi)
      local cp
      cp=$(tgt_port "$i")
      poll 15 tgt_answers "$cp" || die "p$i: tgtd does not answer on control port $cp (see $d/log)"
      tgtadm -C "$cp" --lld iscsi --op new --mode target --tid 1 -T "$(iqn "$i")"
      tgtadm -C "$cp" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$IMAGE"
      tgtadm -C "$cp" --lld iscsi --op bind --mode target --tid 1 -I ALL
      ;;
  esac
  record_pid "$d/proc" >/dev/null || die "p$i: upstream died while starting (see $d/log)"
}

stop_upstream() {
  local i=$1 d pid
  d=$(pdir "$i")
  [[ -d $d ]] || return 0
  if [[ $(cat "$d/kind" 2>/dev/null) == iscsi ]] && pid=$(record_pid "$d/proc"); then
    # tgtd ignores SIGTERM: delete its target, then the daemon itself.
    kill -CONT "$pid" 2>/dev/null || true
    local cp
    cp=$(tgt_port "$i")
    timeout 5 tgtadm -C "$cp" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
    timeout 5 tgtadm -C "$cp" --op delete --mode system >/dev/null 2>&1 || true
  fi
  stop_record "$d/proc" 3
  if [[ $(cat "$d/kind" 2>/dev/null) == iscsi ]]; then
    rm -f "/var/run/tgtd/socket.$(tgt_port "$i")" "/var/run/tgtd/socket.$(tgt_port "$i").lock"
  fi
}

# ---------------------------------------------------------------- check --

# Can this machine run a rig? Prints the reason and returns 1 when not.
# Tests skip on it.
cmd_check() {
  local ns=mprig-check-$$ c why=""
  if ((EUID != 0)); then
    echo "not root"
    return 1
  fi
  for c in ip nft tc ss nbdkit nbdinfo timeout setsid flock awk; do
    command -v "$c" >/dev/null 2>&1 || { echo "'$c' is not installed"; return 1; }
  done
  ip netns add "$ns" 2>/dev/null || { echo "ip netns add fails (no network namespaces here)"; return 1; }
  if ! ip netns exec "$ns" nft add table inet rigcheck 2>/dev/null; then
    why="nft does not work in a network namespace"
  elif ! ip -n "$ns" link add rigck0 type veth peer name rigck1 2>/dev/null; then
    why="no veth pairs"
  elif ! ip netns exec "$ns" tc qdisc add dev rigck0 root tbf rate 1mbit burst 32k latency 100ms 2>/dev/null; then
    why="no tc tbf"
  fi
  ip netns del "$ns" 2>/dev/null || true
  [[ -z $why ]] || { echo "$why"; return 1; }
  echo "ok"
}

# ------------------------------------------------------------------- up --

subnet_taken() {
  local n=$1 f
  for f in "$RIG_ROOT"/*/rig.env; do
    [[ -e $f ]] || continue
    grep -qx "SUBNET=$n" "$f" && return 0
  done
  [[ -n $(ip route show "10.231.$n.0/24" 2>/dev/null) ]] && return 0
  grep -q "^mprig${n}p" <<<"$(ip netns list 2>/dev/null)" && return 0
  return 1
}

build_delay_filter() {
  local src=$RIG_HOME/filters/delayfile.c out=$RIG_DIR/nbdkit-delayfile-filter.so
  if [[ -n ${RIG_DELAY_FILTER:-} ]]; then
    cp "$RIG_DELAY_FILTER" "$out"
    return 0
  fi
  if ! command -v cc >/dev/null 2>&1 || [[ ! -e /usr/include/nbdkit-filter.h ]]; then
    log "no cc or nbdkit-filter.h (nbdkit-plugin-dev): the 'slow' mode is unavailable"
    return 0
  fi
  cc -shared -fPIC -O2 -Wall -o "$out" "$src" 2>"$RIG_DIR/filter-build.log" ||
    { log "building $src failed (see $RIG_DIR/filter-build.log): 'slow' is unavailable"; rm -f "$out"; }
}

write_config() {
  local i
  {
    echo "# Written by container/rig for rig '$RIG_NAME'; edit it and run"
    echo "# nbd-multipath-ctl -s $CTL_SOCK reload to change the running disk."
    echo "paths:"
    for ((i = 1; i <= NPATHS; i++)); do
      printf '  - name: p%d\n    uri: %s\n' "$i" "$(path_uri "$i")"
    done
    [[ -n $SELECTOR ]] && echo "selector: $SELECTOR"
    echo "timeouts:"
    echo "  attempt: ${TIMEOUT_MS}ms"
    echo "  connect: 2s"
    echo "failover:"
    echo "  reconnect-max: 1s"
    echo "no-path:"
    echo "  policy: $NO_PATH"
    echo "checker:"
    echo "  interval: 500ms"
    echo "durability:"
    echo "  shared-cache: true  # one image on one host: one page cache"
    echo "control:"
    echo "  socket: $CTL_SOCK"
  } >"$RIG_DIR/disk.yaml"
}

mp_started() { [[ -s $RIG_DIR/mp.status ]] || nbd_serves "nbd+unix:///?socket=$SOCK"; }

start_multipath() {
  local plugin=$1 pid
  local -a pre=() dbg=()
  shift
  [[ -n ${RIG_PRELOAD:-${MP_PRELOAD:-}} ]] && pre=(env "LD_PRELOAD=${RIG_PRELOAD:-$MP_PRELOAD}")
  [[ -n ${MP_VERBOSE:-} ]] && dbg=(-v -D multipath.verbose=1)
  rm -f "$SOCK" "$RIG_DIR/mp.pid" "$RIG_DIR/mp.status"
  printf '===== %s: nbdkit %s config=%s %s\n' "$(date +%T.%N)" "$plugin" "$RIG_DIR/disk.yaml" "$*" >>"$RIG_DIR/mp.log"
  # A small shell waits for nbdkit (which dies with its parent, see
  # start_upstream) and keeps its exit status, so that
  # `rig down` can say whether the server shut down cleanly.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c '"$@"; echo $? >"$0"' "$RIG_DIR/mp.status" \
    "${pre[@]}" nbdkit -f -U "$SOCK" -P "$RIG_DIR/mp.pid" "${dbg[@]}" "$@" \
    "$plugin" "config=$RIG_DIR/disk.yaml" </dev/null >>"$RIG_DIR/mp.log" 2>&1 &
  record_proc "$RIG_DIR/mp.wrapper" $! || true
  # Ready when it serves; given up on at once when it exited.
  if ! poll "${RIG_START_TIMEOUT:-30}" mp_started || [[ -s $RIG_DIR/mp.status ]]; then
    tail -n 20 "$RIG_DIR/mp.log" >&2
    die "the multipath server does not serve $SOCK (see $RIG_DIR/mp.log)"
  fi
  pid=$(cat "$RIG_DIR/mp.pid")
  record_proc "$RIG_DIR/mp.proc" "$pid"
}

cmd_up() {
  local npaths=2 kinds="" image="" size=64M subnet="" plugin=${MP_PLUGIN:-} timeout=1s
  local selector="" no_path=queue multipath=1 i
  local -a mpopts=() kindv=()
  while (($#)); do
    case $1 in
      --paths) npaths=$2; shift 2 ;;
      --kinds) kinds=$2; shift 2 ;;
      --image) image=$2; shift 2 ;;
      --size) size=$2; shift 2 ;;
      --subnet) subnet=$2; shift 2 ;;
      --plugin) plugin=$2; shift 2 ;;
      --timeout) timeout=$2; shift 2 ;;
      --selector) selector=$2; shift 2 ;;
      --no-path) no_path=$2; shift 2 ;;
      --no-multipath) multipath=""; shift ;;
      --mp-opt) mpopts+=("$2"); shift 2 ;;
      *) die "up: unknown option '$1'" ;;
    esac
  done
  require_root
  { [[ $npaths =~ ^[0-9]+$ ]] && ((npaths >= 1 && npaths <= MAX_PATHS)); } || die "--paths must be 1..$MAX_PATHS"
  if [[ -n $kinds ]]; then
    IFS=, read -r -a kindv <<<"$kinds"
    ((${#kindv[@]} == npaths)) || die "--kinds names ${#kindv[@]} kinds for $npaths paths"
  else
    for ((i = 0; i < npaths; i++)); do kindv+=(nbd); done
  fi
  for i in "${kindv[@]}"; do
    case $i in
      nbd) ;;
      iscsi) { command -v tgtd && command -v tgtadm; } >/dev/null || die "iscsi paths need tgt (tgtd, tgtadm)" ;;
      *) die "bad kind '$i' (nbd or iscsi)" ;;
    esac
  done
  if [[ -n $multipath ]]; then
    [[ -n $plugin ]] || plugin=$RIG_SRC/build/nbdkit-multipath-plugin.so
    [[ -e $plugin || $plugin == multipath ]] || die "no multipath plugin at $plugin (--plugin or MP_PLUGIN)"
  fi
  local timeout_ms
  timeout_ms=$(duration_ms "$timeout")

  mkdir -p "$RIG_ROOT"
  # One `up` at a time picks a subnet.
  exec 9>"$RIG_ROOT/.lock"
  flock -w 30 9 || die "another rig up holds $RIG_ROOT/.lock"
  if [[ -e $RIG_DIR/rig.env ]]; then
    die "rig '$RIG_NAME' exists ($RIG_DIR): rig --name $RIG_NAME down first"
  fi
  if [[ -n $subnet ]]; then
    { [[ $subnet =~ ^[0-9]+$ ]] && ((subnet >= 1 && subnet <= 254)); } || die "--subnet must be 1..254"
    subnet_taken "$subnet" && die "subnet 10.231.$subnet.0/24 is in use"
  else
    for ((subnet = 1; subnet <= 254; subnet++)); do
      subnet_taken "$subnet" || break
    done
    ((subnet <= 254)) || die "no free subnet 10.231.1-254.0/24"
  fi
  rm -rf "$RIG_DIR"
  mkdir -p "$RIG_DIR"
  SUBNET=$subnet NPATHS=$npaths TIMEOUT_MS=$timeout_ms SELECTOR=$selector NO_PATH=$no_path
  SOCK=$RIG_DIR/disk.sock CTL_SOCK=$RIG_DIR/ctl.sock
  ((${#CTL_SOCK} < 108)) || die "state directory too deep for a Unix socket: $RIG_DIR"
  if [[ -z $image ]]; then
    image=$RIG_DIR/disk.img
    truncate -s "$(size_bytes "$size")" "$image"
  fi
  IMAGE=$(readlink -f "$image")
  [[ -f $IMAGE ]] || die "no image file $image"
  # rig.env first: from here on, `rig down` can undo whatever was made.
  {
    printf '%s=%q\n' SUBNET "$SUBNET" NPATHS "$NPATHS" IMAGE "$IMAGE" SOCK "$SOCK" \
      CTL_SOCK "$CTL_SOCK" TIMEOUT_MS "$TIMEOUT_MS" SELECTOR "$SELECTOR" NO_PATH "$NO_PATH" \
      MULTIPATH "$multipath"
  } >"$RIG_DIR/rig.env"
  flock -u 9
  # A failure below leaves a half-built rig: take it down again.
  trap 'log "up failed: tearing down"; cmd_down >/dev/null 2>&1 || true' EXIT

  ip route add unreachable "10.231.$SUBNET.0/24"
  build_delay_filter
  for ((i = 1; i <= npaths; i++)); do
    local d ns hif uif
    d=$(pdir "$i") ns=$(ns_name "$i") hif=$(host_if "$i") uif=$(up_if "$i")
    mkdir -p "$d"
    echo "${kindv[i - 1]}" >"$d/kind"
    ip netns add "$ns"
    ip link add "$hif" type veth peer name "$uif" netns "$ns"
    ip addr add "$(host_addr "$i")/30" dev "$hif"
    ip link set "$hif" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(up_addr "$i")/30" dev "$uif"
    ip -n "$ns" link set "$uif" up
    upstream_cmd "$i" >"$d/cmd"
    start_upstream "$i"
  done
  if [[ -n $multipath ]]; then
    write_config
    start_multipath "$plugin" "${mpopts[@]}"
  fi
  trap - EXIT
  cmd_status
}

# ----------------------------------------------------------------- down --

# Tear down subnet N's namespaces, links and route, whatever state is left.
teardown_net() {
  local n=$1 ns pid
  for ns in $(ip netns list 2>/dev/null | awk -v p="^mprig${n}p[0-9]+$" '$1 ~ p { print $1 }'); do
    # Whatever still runs in the namespace, recorded or not.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
    if ! poll 5 ns_empty "$ns"; then log "warning: processes left in $ns: $(ip netns pids "$ns" | tr '\n' ' ')"; fi
    ip netns del "$ns" 2>/dev/null || log "warning: could not delete namespace $ns"
  done
  # Host ends normally go with the namespace; a crash between `link add`
  # and the move may leave one.
  local l
  for l in $(ip -o link show 2>/dev/null | awk -F': ' -v p="^mr${n}[hu][0-9]+(@|$)" '$2 ~ p { sub(/@.*/, "", $2); print $2 }'); do
    ip link del "$l" 2>/dev/null || true
  done
  ip route del unreachable "10.231.$n.0/24" 2>/dev/null || true
  # tgtd's control sockets (it leaves them behind when killed).
  local i p
  for ((i = 1; i <= MAX_PATHS; i++)); do
    p=$(SUBNET=$n tgt_port "$i")
    rm -f "/var/run/tgtd/socket.$p" "/var/run/tgtd/socket.$p.lock"
  done
}

ns_empty() { [[ -z $(ip netns pids "$1" 2>/dev/null) ]]; }

cmd_down() {
  require_root
  if [[ ! -e $RIG_DIR/rig.env ]]; then
    [[ -d $RIG_DIR ]] && rm -rf "$RIG_DIR"
    log "no rig '$RIG_NAME': nothing to do"
    return 0
  fi
  # shellcheck source=/dev/null
  source "$RIG_DIR/rig.env"
  local i status=0 d
  for ((i = 1; i <= NPATHS; i++)); do
    d=$(pdir "$i")
    [[ -d $d ]] || continue
    stop_record "$d/flap.proc" 5
  done
  # The multipath server first, gracefully, so that its exit status means
  # something; then the upstreams.
  if [[ -e $RIG_DIR/mp.proc ]]; then
    stop_record "$RIG_DIR/mp.proc" "${RIG_STOP_GRACE:-10}"
    poll 5 test -s "$RIG_DIR/mp.status" || true
    stop_record "$RIG_DIR/mp.wrapper" 2
    if [[ -s $RIG_DIR/mp.status ]]; then
      status=$(<"$RIG_DIR/mp.status")
      ((status == 0)) || log "the multipath server exited with status $status (log: $RIG_DIR/mp.log)"
    fi
  fi
  for ((i = 1; i <= NPATHS; i++)); do stop_upstream "$i"; done
  teardown_net "$SUBNET"
  if [[ -n ${RIG_KEEP:-} ]]; then
    mv "$RIG_DIR/rig.env" "$RIG_DIR/rig.env.down"
    log "kept $RIG_DIR (RIG_KEEP)"
  else
    rm -rf "$RIG_DIR"
  fi
  log "rig '$RIG_NAME' is down"
  return "$((status != 0))"
}

# Tear down what crashed tests or shells left: rigs none of whose processes
# (multipath server, upstreams) still runs, and namespaces of subnets no rig
# claims. With SUBNET arguments, only those subnets are looked at.
cmd_gc() {
  require_root
  local f name n only=" $* " claimed=" " sub
  for n in "$@"; do [[ $n =~ ^[0-9]+$ ]] || die "gc: SUBNET must be a number (the N of 10.231.N.0/24)"; done
  for f in "$RIG_ROOT"/*/rig.env; do
    [[ -e $f ]] || continue
    name=${f%/rig.env}
    name=${name##*/}
    sub=$(sed -n 's/^SUBNET=//p' "$f")
    if (($#)) && [[ $only != *" $sub "* ]]; then
      claimed+="$sub "
    elif "$RIG_HOME/rig" --name "$name" _alive; then
      claimed+="$sub "
    else
      log "gc: nothing of rig '$name' runs: down"
      "$RIG_HOME/rig" --name "$name" down || true
    fi
  done
  for n in $(ip netns list 2>/dev/null | sed -n 's/^mprig\([0-9]*\)p[0-9]*.*/\1/p' | sort -u); do
    [[ $claimed == *" $n "* ]] && continue
    (($#)) && [[ $only != *" $n "* ]] && continue
    log "gc: namespaces of subnet $n belong to no rig: removing"
    teardown_net "$n"
  done
  for n in "$@"; do
    [[ $claimed == *" $n "* ]] || ip route del unreachable "10.231.$n.0/24" 2>/dev/null || true
  done
}

# Does any process of the rig still run?
rig_alive() {
  local i
  load_env
  # A rig being brought up has no server yet: leave it a minute.
  [[ -n $(find "$RIG_DIR/rig.env" -newermt '-60 seconds' 2>/dev/null) ]] && return 0
  record_pid "$RIG_DIR/mp.proc" >/dev/null && return 0
  for ((i = 1; i <= NPATHS; i++)); do
    record_pid "$(pdir "$i")/proc" >/dev/null && return 0
  done
  return 1
}

# --------------------------------------------------------------- status --

path_line() {
  local i=$1 d pid state mode="" extra=""
  d=$(pdir "$i")
  if pid=$(record_pid "$d/proc"); then
    case $(proc_state "$pid") in T | t) state="stopped($pid)" ;; *) state="running($pid)" ;; esac
  else
    state=dead pid=-
  fi
  [[ -s $d/mode ]] && mode=$(<"$d/mode")
  [[ -s $d/flap.phase ]] && extra=" (now $(<"$d/flap.phase"))"
  printf '  p%-3s %-6s %-50s %-16s %s\n' "$i" "$(path_kind "$i")" "$(path_uri "$i")" "$state" "${mode:-healthy}$extra"
}

cmd_status() {
  load_env
  local i pid ctl
  echo "rig '$RIG_NAME': subnet 10.231.$SUBNET.0/24, state $RIG_DIR"
  echo "image: $IMAGE"
  if [[ -n $MULTIPATH ]]; then
    if pid=$(record_pid "$RIG_DIR/mp.proc"); then
      echo "disk: nbd+unix:///?socket=$SOCK   (multipath pid $pid)"
    else
      echo "disk: DOWN (multipath server not running; log $RIG_DIR/mp.log)"
    fi
    echo "control: nbd-multipath-ctl -s $CTL_SOCK show paths"
  fi
  echo "paths:"
  for ((i = 1; i <= NPATHS; i++)); do path_line "$i"; done
  if [[ -n $MULTIPATH && -S $CTL_SOCK ]] && ctl=$(multipath_ctl); then
    echo "multipath view:"
    "$ctl" -s "$CTL_SOCK" --timeout 3 show paths 2>&1 | sed 's/^/  /' || true
  fi
}

cmd_env() {
  load_env
  local i
  printf 'RIG_NAME=%q\nRIG_DIR=%q\nRIG_SUBNET=10.231.%d.0/24\nRIG_PATHS=%d\n' \
    "$RIG_NAME" "$RIG_DIR" "$SUBNET" "$NPATHS"
  printf 'RIG_IMAGE=%q\nRIG_SOCK=%q\nRIG_URI=%q\nRIG_CTL_SOCK=%q\nRIG_LOG=%q\n' \
    "$IMAGE" "$SOCK" "nbd+unix:///?socket=$SOCK" "$CTL_SOCK" "$RIG_DIR/mp.log"
  for ((i = 1; i <= NPATHS; i++)); do
    printf 'RIG_P%d_URI=%q\nRIG_P%d_NS=%q\n' "$i" "$(path_uri "$i")" "$i" "$(ns_name "$i")"
  done
}

cmd_uri() {
  load_env
  path_uri "$(path_index "${1:-}")"
}

# ---------------------------------------------------------------- faults --

# Replace the namespace's nft table with one holding these rules.
nft_rules() {
  local i=$1 in=$2 out=$3
  in_ns "$i" nft -f - <<EOF
table inet rig
delete table inet rig
table inet rig {
  chain input {
    type filter hook input priority 0; policy accept;
    $in
  }
  chain output {
    type filter hook output priority 0; policy accept;
    $out
  }
}
EOF
}

# Apply MODE to path i (no bookkeeping: fail and the flapper call this).
apply_mode() {
  local i=$1 mode=$2 arg=${3:-} d pid
  d=$(pdir "$i")
  case $mode in
    kill)
      local st
      pid=$(record_pid "$d/proc") || die "p$i: the upstream is not running"
      read -r _ st <"$d/proc"
      kill -KILL "$pid"
      poll 5 gone "$pid" "$st" || die "p$i: pid $pid survived SIGKILL"
      ;;
    stop)
      pid=$(record_pid "$d/proc") || die "p$i: the upstream is not running"
      kill -STOP "$pid"
      poll 5 proc_state_is "$pid" T || die "p$i: pid $pid did not stop"
      ;;
    blackhole)
      nft_rules "$i" 'iifname != "lo" counter drop' 'oifname != "lo" counter drop'
      ;;
    reset)
      # Every TCP segment from outside is answered with a reset, and the
      # connections open now are aborted (the server's end sends a reset).
      nft_rules "$i" 'iifname != "lo" meta l4proto tcp counter reject with tcp reset' ''
      in_ns "$i" ss -K -t state connected >/dev/null 2>&1 || true
      ;;
    refuse)
      nft_rules "$i" 'iifname != "lo" tcp flags & (syn | ack) == syn counter reject with tcp reset' ''
      ;;
    errors)
      [[ $(path_kind "$i") == nbd ]] || die "p$i: 'errors' needs an nbd upstream (tgt has no error injection)"
      touch "$d/errors"
      ;;
    slow)
      [[ $arg =~ ^[0-9]+$ ]] || die "slow needs milliseconds: slow 200"
      [[ $(path_kind "$i") == nbd ]] || die "p$i: 'slow' needs an nbd upstream"
      [[ -e $RIG_DIR/nbdkit-delayfile-filter.so ]] || die "'slow' is unavailable: the delayfile filter was not built"
      echo "$arg" >"$d/delay.tmp"
      mv "$d/delay.tmp" "$d/delay"
      ;;
    bandwidth)
      local bps bytes burst
      bps=$(rate_bps "${arg:?bandwidth needs a rate: bandwidth 8mbit}")
      ((bps >= 8000)) || die "bandwidth below 8kbit is not useful"
      bytes=$((bps / 8))
      # A burst of 1/20 s of traffic, at least one 64 KiB GSO segment.
      burst=$((bytes / 20 > 65536 ? bytes / 20 : 65536))
      # tbf on both ends of the upstream's own veth pair: its end shapes what
      # it sends (read data), the host end what it is sent (write data).
      # (nft "limit rate over N bytes/second" lets a whole second of traffic
      # through first, and this kernel has no tc police action.)
      in_ns "$i" tc qdisc replace dev "$(up_if "$i")" root tbf rate "${bps}bit" burst "$burst" latency 200ms
      tc qdisc replace dev "$(host_if "$i")" root tbf rate "${bps}bit" burst "$burst" latency 200ms
      ;;
    loss)
      { [[ $arg =~ ^[0-9]+$ ]] && ((arg >= 1 && arg <= 100)); } || die "loss needs a percentage 1..100"
      # numgen values are 0..99: "< 100" is refused, so 100% is a plain drop.
      local match="numgen random mod 100 < $arg"
      ((arg == 100)) && match=""
      nft_rules "$i" "iifname != \"lo\" $match counter drop" "oifname != \"lo\" $match counter drop"
      ;;
    *) die "unknown mode '$mode'" ;;
  esac
}

proc_state_is() { [[ $(proc_state "$1") == "$2" ]]; }

# Undo every fault on path i (whichever is active; idempotent), but leave a
# flapper alone (heal stops it first).
undo_faults() {
  local i=$1 d pid
  d=$(pdir "$i")
  in_ns "$i" nft delete table inet rig 2>/dev/null || true
  in_ns "$i" tc qdisc del dev "$(up_if "$i")" root 2>/dev/null || true
  tc qdisc del dev "$(host_if "$i")" root 2>/dev/null || true
  rm -f "$d/errors" "$d/delay"
  if pid=$(record_pid "$d/proc"); then
    kill -CONT "$pid" 2>/dev/null || true
    poll 5 not_stopped "$pid" || die "p$i: pid $pid stays stopped after SIGCONT"
  else
    start_upstream "$i"
  fi
}

not_stopped() { [[ $(proc_state "$1") != [Tt] ]]; }

cmd_fail() {
  load_env
  require_root
  local i mode=${2:-} arg=${3:-} d
  i=$(path_index "${1:-}")
  d=$(pdir "$i")
  [[ -n $mode ]] || die "usage: rig fail PATH MODE [ARG]"
  if [[ -s $d/mode ]]; then
    die "p$i already has '$(<"$d/mode")' active: rig heal p$i first"
  fi
  if [[ $mode == flap ]]; then
    local period down=${4:-blackhole}
    period=$(duration_ms "${arg:?flap needs a period: flap 2s [MODE]}")
    ((period >= 100)) || die "flap period below 100ms is not useful"
    case $down in kill | stop | blackhole | reset | refuse | errors) ;; *) die "flap can take a path down with kill, stop, blackhole, reset, refuse or errors, not '$down'" ;; esac
    RIG_NAME=$RIG_NAME RIG_ROOT=$RIG_ROOT setsid "$RIG_HOME/rig" _flap "$i" "$period" "$down" \
      </dev/null >>"$d/flap.log" 2>&1 &
    record_proc "$d/flap.proc" $! || die "the flapper exited at once (see $d/flap.log)"
    echo "flap ${period}ms $down" >"$d/mode"
  else
    apply_mode "$i" "$mode" "$arg"
    echo "$mode${arg:+ $arg}" >"$d/mode"
  fi
  log "p$i: $(<"$d/mode")"
}

cmd_heal() {
  load_env
  require_root
  local target=${1:-} i
  [[ -n $target ]] || die "usage: rig heal PATH|all"
  if [[ $target == all ]]; then
    for ((i = 1; i <= NPATHS; i++)); do heal_one "$i"; done
  else
    heal_one "$(path_index "$target")"
  fi
}

heal_one() {
  local i=$1 d
  d=$(pdir "$i")
  stop_record "$d/flap.proc" 10
  rm -f "$d/flap.phase"
  undo_faults "$i"
  if [[ -s $d/mode ]]; then
    log "p$i: healed ($(<"$d/mode"))"
    rm -f "$d/mode"
  fi
}

# The background flapper: MODE for PERIOD, healthy for PERIOD, again. It
# finishes the step it is in when told to stop (SIGTERM), so that heal never
# races a half-done restart.
cmd_flapper() {
  local i=$1 period=$2 mode=$3 stop="" d
  load_env
  d=$(pdir "$i")
  trap 'stop=1' TERM
  FLAP_PHASE=$d/flap.phase
  trap 'rm -f "$FLAP_PHASE"' EXIT
  while [[ -z $stop ]]; do
    (apply_mode "$i" "$mode") || log "flap p$i: $mode failed"
    echo down >"$d/flap.phase"
    echo "$(date +%T.%N) down" >&2
    flap_pause "$period"
    (undo_faults "$i") || log "flap p$i: heal failed"
    echo up >"$d/flap.phase"
    echo "$(date +%T.%N) up" >&2
    [[ -n $stop ]] && break
    flap_pause "$period"
  done
}

# Sleep PERIOD ms, returning early on SIGTERM (wait is interrupted by the
# trap; sleep is the flapper's clock, not a synchronisation).
flap_pause() {
  sleep "$(awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }')" &
  wait $! 2>/dev/null || true
  kill $! 2>/dev/null || true
}
