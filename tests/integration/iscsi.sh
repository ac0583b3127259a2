# shellcheck shell=bash
# tgtd (the Linux SCSI target framework, in user space) as an iSCSI upstream,
# sourced after functions.sh. A tgt server is tracked like any other: kill,
# stop, cont and restart_server work on it, and it is stopped at exit.
#
# start_tgt NAME IMAGE [options]   one tgtd with one target, LUN 1 on IMAGE
#   --tid N            target id (default 1); tgt derives the LU's identifier
#                      (VPD 0x83) from it, so another tid is another LU
#   --iqn IQN          target name (default iqn.2026-11.org.nbd-multipath:disk)
#   --chap USER SECRET require CHAP with this account
#   --params K=V,...   logical unit parameters (e.g. thin_provisioning=1)
# tgt_uri NAME [USER%SECRET]   prints the path URI of its LUN 1
# tgt_lu NAME online|offline   takes the LUN offline or back online
#
# tgtd listens on 127.0.0.1, port 0 at first start; a restart reuses the port
# it got. It ignores SIGTERM, so it is stopped with SIGKILL.

declare -gA _MP_TGT_CTL=() _MP_TGT_PORT=() _MP_TGT_IQN=()

start_tgt() {
  local name=$1 image=$2 tid=1 iqn=iqn.2026-11.org.nbd-multipath:disk chap_user= chap_secret= params=
  shift 2
  mp_require tgtd tgtadm ss
  while (($#)); do
    case $1 in
      --tid) tid=$2; shift 2 ;;
      --iqn) iqn=$2; shift 2 ;;
      --chap) chap_user=$2; chap_secret=$3; shift 3 ;;
      --params) params=$2; shift 2 ;;
      *) fail "start_tgt: unknown option '$1'" ;;
    esac
  done
  _MP_TGT_IQN[$name]=$iqn
  # The tgtd control socket is /var/run/tgtd/socket.N: pick a free N.
  local ctl
  for _ in {1..50}; do
    ctl=$((1000 + RANDOM % 30000)) # tgtd refuses -C above 32767
    [[ -e /var/run/tgtd/socket.$ctl ]] || break
  done
  _MP_TGT_CTL[$name]=$ctl
  _MP_TGT_PORT[$name]=0
  mp_on_cleanup rm -f "/var/run/tgtd/socket.$ctl" "/var/run/tgtd/socket.$ctl.lock"
  _mp_start tgt --ready=none "$name" "$image" "$tid" "$iqn" "$chap_user" "$chap_secret" "$params"
}

_tgtadm() {
  local name=$1
  shift
  tgtadm -C "${_MP_TGT_CTL[$name]}" --lld iscsi "$@"
}

_tgt_listening_port() {
  ss -Hltnp 2>/dev/null | awk -v pid="pid=$1," 'index($0, pid) { n = split($4, a, ":"); print a[n]; exit }'
}

_mp_launch_tgt() {
  local name=$1 log=$MP_TMP/$1.log
  local -a a
  mapfile -d '' -t a <"$MP_TMP/$name.args"
  local image=${a[0]} tid=${a[1]} iqn=${a[2]} chap_user=${a[3]} chap_secret=${a[4]} params=${a[5]}
  local port=${_MP_TGT_PORT[$name]} ctl=${_MP_TGT_CTL[$name]}
  local -a cmd=(tgtd -f -C "$ctl" --iscsi "portal=127.0.0.1:$port")
  mkdir -p /var/run/tgtd
  printf '===== %s: %s\n' "$(date +%T.%N)" "${cmd[*]}" >>"$log"
  "${cmd[@]}" </dev/null >>"$log" 2>&1 &
  local pid=$!
  _MP_PID[$name]=$pid
  _MP_STOP_SIGNAL[$pid]=KILL
  _mp_track "$pid"
  wait_for "tgtd '$name' to take commands" $((10 * _MP_TIME_FACTOR)) \
    _tgt_up "$name" "$pid"
  _tgtadm "$name" --op new --mode target --tid "$tid" -T "$iqn"
  _tgtadm "$name" --op new --mode logicalunit --tid "$tid" --lun 1 -b "$image"
  [[ -z $params ]] ||
    _tgtadm "$name" --op update --mode logicalunit --tid "$tid" --lun 1 --params "$params"
  _tgtadm "$name" --op bind --mode target --tid "$tid" -I ALL
  if [[ -n $chap_user ]]; then
    _tgtadm "$name" --op new --mode account --user "$chap_user" --password "$chap_secret"
    _tgtadm "$name" --op bind --mode account --tid "$tid" --user "$chap_user"
  fi
  if ((port == 0)); then
    port=$(_tgt_listening_port "$pid")
    [[ $port =~ ^[0-9]+$ ]] || fail "tgtd '$name' (pid $pid) listens on no TCP port"
    _MP_TGT_PORT[$name]=$port
  fi
  mp_log "started tgt '$name' (pid $pid, 127.0.0.1:$port, $iqn)"
}

_tgt_up() {
  _mp_alive "$2" || fail "tgtd '$1' exited while starting (see $MP_TMP/$1.log)"
  _tgtadm "$1" --op show --mode sys >/dev/null 2>&1
}

tgt_uri() {
  local name=$1 cred=${2:-}
  echo "iscsi://${cred:+$cred@}127.0.0.1:${_MP_TGT_PORT[$name]}/${_MP_TGT_IQN[$name]}/1"
}

tgt_lu() {
  local name=$1 state=$2 online
  local -a a
  mapfile -d '' -t a <"$MP_TMP/$name.args"
  case $state in
    online) online=1 ;;
    offline) online=0 ;;
    *) fail "tgt_lu: use online or offline, not '$state'" ;;
  esac
  _tgtadm "$name" --op update --mode logicalunit --tid "${a[1]}" --lun 1 --params "online=$online"
  mp_log "LUN 1 of tgt '$name' is $state"
}
