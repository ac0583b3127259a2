# shellcheck shell=bash
# What the bench scripts share. bench_args works on its own; the rest needs
# tests/integration/functions.sh (fail, mp_log, run_fio, ...) sourced first.
# The functions set and read the sourcing script's globals (targets, raw, ...):
# shellcheck disable=SC2034,SC2153,SC2154

# bench_args SCRIPT [ARGS]: --help prints the script's header comment (up to
# `set -euo`); any other argument is a usage error.
bench_args() {
  local script=$1
  shift
  case ${1:-} in
    -h | --help) _bench_usage "$script"; exit 0 ;;
    "") ;;
    *) _bench_usage "$script" >&2; exit 2 ;;
  esac
}
_bench_usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$1"; }

# bench_read_common: TARGETS, WORKLOADS and MP_ARGS into the arrays targets,
# workloads and mp_args; ROUNDS, RUNTIME and RAMP checked.
bench_read_common() {
  read -r -a targets <<<"$TARGETS"
  read -r -a workloads <<<"$WORKLOADS"
  read -r -a mp_args <<<"$MP_ARGS"
  ((${#targets[@]})) || fail "TARGETS is empty"
  ((${#workloads[@]})) || fail "WORKLOADS is empty"
  [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || fail "ROUNDS must be a positive integer"
  [[ $RUNTIME =~ ^[1-9][0-9]*$ ]] || fail "RUNTIME must be a positive integer (seconds)"
  [[ $RAMP =~ ^[0-9]+$ ]] || fail "RAMP must be an integer (seconds)"
}

# bench_image_dir PREFIX: sets imgdir to a new directory on tmpfs (shm), or
# in $MP_TMP without one; removed at exit.
bench_image_dir() {
  shm=/dev/shm
  [[ -d $shm && -w $shm ]] || { mp_log "no writable /dev/shm: image in $MP_TMP"; shm=$MP_TMP; }
  imgdir=$(mktemp -d "$shm/$1.XXXXXX")
  mp_on_cleanup rm -rf "$imgdir"
}

# bench_plugin_line: the header line naming the plugin and the commit of the
# tree it lies in, which may be another worktree than this script's (when
# need_mp is set).
bench_plugin_line() {
  if [[ -n $need_mp ]]; then
    local rev
    rev=$(git -C "$(dirname "$MP_PLUGIN")" describe --always --dirty 2>/dev/null) || rev='?'
    echo "plugin: $MP_PLUGIN ($rev)"
  else
    echo "plugin: not used"
  fi
}

# bench_round_order R: sets order to the targets rotated by R-1, so that no
# target always runs right after the same neighbour (page cache, CPU
# frequency, other load).
bench_round_order() {
  local i n=${#targets[@]}
  order=()
  for ((i = 0; i < n; i++)); do order+=("${targets[(i + $1 - 1) % n]}"); done
}

# bench_fio R T W URI [fio args]: one measured fio job, its JSON kept as
# r<R>-<T>-<W>.json; sets iops and mibs. Fails on any I/O error. With
# BENCH_FRONT_PID set (the process fio talks to), also sets cpu_us: that
# process's CPU time (user + system, all threads) over the measured seconds,
# per request fio completed in them; and the whole machine's over the same
# seconds (every process: fio, the front server, the upstream): machine_us,
# its busy CPU time per request, and busy_pct, the share of all cores busy
# (near 100: the job is bound by CPU, and only less CPU per request on the
# whole machine makes it faster).
bench_fio() {
  local r=$1 t=$2 w=$3 uri=$4 errs sampler='' ticks0 ticks1 ios m0 m1
  shift 4
  unset cpu_us machine_us busy_pct
  if [[ -n ${BENCH_FRONT_PID:-} ]]; then
    # The ramp ends RAMP seconds after fio starts; the sampler notes the CPU
    # time then (fio's start-up takes milliseconds: a small overcount).
    (sleep "$RAMP" && _bench_cpu_ticks "$BENCH_FRONT_PID" >"$MP_TMP/cpu0" &&
      _bench_machine_ticks >"$MP_TMP/machine0") &
    sampler=$!
  fi
  MP_FIO_OUT=$MP_TMP/r$r-$t-$w.json run_fio "$uri" "$@" \
    --runtime="$RUNTIME" --time_based --ramp_time="$RAMP" --norandommap --randrepeat=0 ||
    fail "fio failed: round $r, $t, $w"
  errs=$(fio_errors "$MP_FIO_JSON")
  ((errs == 0)) || fail "$errs I/O errors: round $r, $t, $w"
  iops=$(fio_iops "$MP_FIO_JSON")
  mibs=$(fio_bw_mib "$MP_FIO_JSON")
  if [[ -n $sampler ]]; then
    ticks1=$(_bench_cpu_ticks "$BENCH_FRONT_PID")
    read -r -a m1 <<<"$(_bench_machine_ticks)"
    wait "$sampler" || fail "the CPU sampler failed: round $r, $t, $w"
    ticks0=$(<"$MP_TMP/cpu0")
    read -r -a m0 <<<"$(<"$MP_TMP/machine0")"
    ios=$(($(fio_stat "$MP_FIO_JSON" read.total_ios) + $(fio_stat "$MP_FIO_JSON" write.total_ios)))
    if ((ios > 0)); then
      cpu_us=$(((ticks1 - ticks0) * 1000000 / $(getconf CLK_TCK) / ios))
      machine_us=$(((m1[0] - m0[0]) * 1000000 / $(getconf CLK_TCK) / ios))
      ((m1[1] > m0[1])) && busy_pct=$(((m1[0] - m0[0]) * 100 / (m1[1] - m0[1])))
    fi
  fi
}

# _bench_machine_ticks: "BUSY TOTAL" clock ticks of all cores since boot
# (/proc/stat): busy is user, nice, system, irq and softirq; the total adds
# idle and iowait (time the hypervisor stole counts as neither).
_bench_machine_ticks() {
  local cpu user nice system idle iowait irq softirq _
  read -r cpu user nice system idle iowait irq softirq _ </proc/stat
  local busy=$((user + nice + system + irq + softirq))
  echo "$busy $((busy + idle + iowait))"
}

# _bench_cpu_ticks PID: utime + stime of the process, all its threads, in
# clock ticks (/proc/PID/stat fields 14 and 15, after the command's ")").
_bench_cpu_ticks() {
  local stat
  stat=$(<"/proc/$1/stat")
  read -r -a f <<<"${stat##*) }"
  echo $((f[11] + f[12]))
}

# bench_record R T W: appends the run (iops, mibs, and with cpu_us also
# machine_us and busy_pct) to raw.csv and shows it.
bench_record() {
  echo "$1,$2,$3,$iops,$mibs${cpu_us+,$cpu_us,${machine_us:-},${busy_pct:-}}" >>"$raw"
  printf '  round %d/%d  %-10s %-10s %10s IOPS %8s MiB/s%s%s\n' "$1" "$ROUNDS" "$2" "$3" "$iops" "$mibs" \
    "${cpu_us:+ $cpu_us µs CPU/request}" "${machine_us:+ (machine $machine_us µs, ${busy_pct:-?}% busy)}" >&2
}
