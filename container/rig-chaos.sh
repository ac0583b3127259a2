# shellcheck shell=bash
# `rig chaos`: the integrity workload (tests/integration/mp_workload.py) over
# the rig's multipath disk while a schedule of faults runs against its paths.
# Sourced by container/rig after rig-lib.sh.
#
# A schedule is one command a line, "AT VERB ARGS", AT in seconds after the
# workload got going ("1.5", "1500ms"), in non-decreasing order; # starts a
# comment:
#   0.5  fail p1 kill
#   2    heal p1
#   2    wait-active p1 10     # until the disk uses p1 again (at most 10 s)
#   2.5  fail p2 stop
#   4    heal p2
# VERBs: fail PATH MODE [ARG...] | heal PATH|all | wait-active PATH [SECONDS]
# | wait-state PATH STATE [SECONDS] (STATE as `nbd-multipath-ctl show paths`
# prints it: active, failed, ...).
#
# The runner counts healthy paths as the schedule goes: a path is down from
# `fail` with kill, stop, blackhole, reset, refuse, errors or flap, loss of
# 50% or more, or slow at least the attempt timeout, until its `heal`. When
# the count reached 0 the report says "no healthy path during ...": client
# errors then are not a failure of the disk. Wrong data always is.

chaos_usage() {
  cat <<'EOF'
usage: rig chaos [OPTIONS] [SCHEDULE-FILE | -]
  -e, --at 'AT VERB ARGS'  one schedule line (repeatable; instead of a file)
  --duration SECONDS       least workload length (default: last event + 3, at
                           least 5); the workload also runs until the schedule
                           is done, so its final check follows every heal
  --connections N          workload connections (default 4)
  --size SIZE              bytes of the disk to use (default 16M, at most the image)
  --seed N                 workload seed (default random; printed)
  --json FILE              also write the report as JSON
  --keep-faults            do not heal the paths the schedule touched at the end
  --workload FILE          mp_workload.py to run (default: the repository's)
Exit status: 0 pass; 1 disk failure (wrong data, or client errors while a
path was healthy throughout); 3 client errors while no path was healthy;
2 usage or rig errors.
EOF
}

# Is "MODE ARG" a path that cannot serve?
chaos_mode_down() {
  local mode=$1 arg=${2:-}
  case $mode in
    kill | stop | blackhole | reset | refuse | errors | flap) return 0 ;;
    loss) ((arg >= 50)) ;;
    slow) ((arg >= TIMEOUT_MS)) ;;
    *) return 1 ;;
  esac
}

chaos_ctl_state() {
  local ctl=$1 path=$2
  "$ctl" -s "$CTL_SOCK" --timeout 3 --json show paths |
    "$RIG_PYTHON" -c '
import json, sys
doc = json.load(sys.stdin)
paths = doc["paths"] if isinstance(doc, dict) and "paths" in doc else doc
for p in paths:
    if p.get("name") == sys.argv[1]:
        print(p.get("state", ""))' "$path"
}

chaos_state_is() { [[ $(chaos_ctl_state "$1" "$2") == "$3" ]]; }

cmd_chaos() {
  local duration="" connections=4 size=16M seed="" json="" keep="" workload=""
  local file=""
  local -a lines=()
  while (($#)); do
    case $1 in
      -e | --at) lines+=("${2:?$1 needs a schedule line}"); shift 2 ;;
      --duration) duration=$2; shift 2 ;;
      --connections) connections=$2; shift 2 ;;
      --size) size=$2; shift 2 ;;
      --seed) seed=$2; shift 2 ;;
      --json) json=$2; shift 2 ;;
      --keep-faults) keep=1; shift ;;
      --workload) workload=$2; shift 2 ;;
      -h | --help) chaos_usage; return 0 ;;
      -) file=/dev/stdin; shift ;;
      -*) chaos_usage >&2; echo "rig chaos: unknown option '$1'" >&2; return 2 ;;
      *) file=$1; shift ;;
    esac
  done
  load_env
  require_root
  [[ -n $MULTIPATH ]] || { log "chaos: rig '$RIG_NAME' has no multipath server"; return 2; }
  [[ -n $workload ]] || workload=$RIG_SRC/tests/integration/mp_workload.py
  [[ -e $workload ]] || { log "chaos: no workload at $workload (--workload)"; return 2; }
  if [[ -n $file ]]; then
    local l
    while IFS= read -r l || [[ -n $l ]]; do lines+=("$l"); done <"$file"
  fi

  # Parse and check the whole schedule before anything runs.
  local -a at=() cmd=()
  local l t words last=0 i
  for l in "${lines[@]}"; do
    l=${l%%#*}
    read -r -a words <<<"$l"
    ((${#words[@]})) || continue
    ((${#words[@]} >= 2)) || { log "chaos: bad line '$l' (AT VERB ARGS)"; return 2; }
    t=$(chaos_at_ms "${words[0]}") || { log "chaos: bad time '${words[0]}'"; return 2; }
    ((t >= last)) || { log "chaos: '$l' is earlier than the line before it"; return 2; }
    last=$t
    case ${words[1]} in
      fail) ((${#words[@]} >= 4)) || { log "chaos: '$l': fail PATH MODE [ARG]"; return 2; } ;;
      heal) ((${#words[@]} == 3)) || { log "chaos: '$l': heal PATH|all"; return 2; } ;;
      wait-active) ((${#words[@]} >= 3)) || { log "chaos: '$l': wait-active PATH [SECONDS]"; return 2; } ;;
      wait-state) ((${#words[@]} >= 4)) || { log "chaos: '$l': wait-state PATH STATE [SECONDS]"; return 2; } ;;
      *) log "chaos: '$l': unknown verb '${words[1]}'"; return 2 ;;
    esac
    [[ ${words[2]} == all ]] || (path_index "${words[2]}" >/dev/null) || return 2
    at+=("$t")
    cmd+=("${words[*]:1}")
  done
  if [[ -z $duration ]]; then
    duration=$(((last + 3000 + 999) / 1000))
    ((duration >= 5)) || duration=5
  fi
  local duration_ms
  duration_ms=$(chaos_at_ms "$duration") || { log "chaos: bad --duration '$duration' (seconds, e.g. 6 or 2.5)"; return 2; }
  local bytes img
  bytes=$(size_bytes "$size")
  img=$(stat -c %s "$IMAGE")
  ((bytes <= img)) || bytes=$img

  # Healthy-path bookkeeping: down[i]=1 while path i cannot serve; the
  # timeline holds "ms count" each time the count changes.
  local -a down=() touched=() timeline=()
  local healthy=$NPATHS d mode_line
  for ((i = 1; i <= NPATHS; i++)); do
    down[i]=0
    d=$(pdir "$i")
    if [[ -s $d/mode ]]; then
      mode_line=$(<"$d/mode")
      # shellcheck disable=SC2086 # "MODE ARG" into two words
      if chaos_mode_down $mode_line; then down[i]=1; healthy=$((healthy - 1)); fi
    fi
  done
  timeline+=("0 $healthy")

  local ctl=""
  ctl=$(multipath_ctl 2>/dev/null) || ctl=""
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/rig-chaos.XXXXXX")
  local wl_pid t0 st=0
  # The workload stops when we create $work/stop: after --duration and after
  # the last schedule line (a wait-active may outlast --duration). Its own
  # --duration is only a bound in case we die.
  local -a wl_args=("$workload" "nbd+unix:///?socket=$SOCK" --duration $((duration_ms / 1000 + 3600))
    --connections "$connections" --size "$bytes" --progress "$work/progress"
    --stop-file "$work/stop")
  [[ -n $seed ]] && wl_args+=(--seed "$seed")
  "$RIG_PYTHON" "${wl_args[@]}" </dev/null >"$work/report.json" 2>"$work/workload.log" &
  wl_pid=$!
  # Stop the workload if we are interrupted; heal what we broke.
  trap 'kill "$wl_pid" 2>/dev/null || true' EXIT
  if ! poll 30 chaos_progress "$work/progress"; then
    log "chaos: the workload did not get going in 30 s:"
    cat "$work/workload.log" >&2
    return 2
  fi
  t0=$(now_ms)
  echo "chaos: rig '$RIG_NAME', $NPATHS paths, ${#cmd[@]} events, workload ${duration}s x $connections connections over $bytes bytes"

  local k now started verb p mode arg rc=0 idx secs
  for ((k = 0; k < ${#cmd[@]}; k++)); do
    chaos_sleep_until "$t0" "${at[k]}"
    read -r verb p mode arg _ <<<"${cmd[k]}"
    now=$(($(now_ms) - t0))
    started=$now
    printf '  [+%d.%03ds] %s\n' $((now / 1000)) $((now % 1000)) "${cmd[k]}"
    case $verb in
      fail | heal)
        # shellcheck disable=SC2086 # the command's words
        if ! "$RIG_HOME/rig" --name "$RIG_NAME" ${cmd[k]} 2>"$work/rig.err"; then
          sed 's/^/    /' "$work/rig.err"
          log "chaos: '${cmd[k]}' failed: stopping"
          rc=2
          break
        fi
        local -a which=()
        if [[ $p == all ]]; then
          for ((i = 1; i <= NPATHS; i++)); do which+=("$i"); done
        else
          which=("$(path_index "$p")")
        fi
        for idx in "${which[@]}"; do
          touched[idx]=1
          local was=${down[idx]}
          if [[ $verb == heal ]]; then
            down[idx]=0
          elif chaos_mode_down "$mode" "$arg"; then
            down[idx]=1
          fi
          healthy=$((healthy + was - down[idx]))
        done
        # Counted pessimistically: down from the start of a fail command,
        # healthy from the end of a heal.
        now=$(($(now_ms) - t0))
        [[ $verb == fail ]] && now=$started
        timeline+=("$now $healthy")
        ;;
      wait-active | wait-state)
        local want=active
        secs=${mode:-10}
        if [[ $verb == wait-state ]]; then want=$mode secs=${arg:-10}; fi
        [[ -n $ctl ]] || { log "chaos: $verb needs nbd-multipath-ctl (MP_CTL)"; rc=2; break; }
        if ! poll "$secs" chaos_state_is "$ctl" "p$(path_index "$p")" "$want"; then
          log "chaos: p$(path_index "$p") did not become $want within ${secs}s"
          rc=2
          break
        fi
        ;;
    esac
  done

  # A schedule that stopped on an error stops the workload at once.
  ((rc != 0)) || chaos_sleep_until "$t0" "$duration_ms"
  : >"$work/stop"
  # The final check reads every block once; bound the wait anyway.
  local limit=120 waited=0
  while kill -0 "$wl_pid" 2>/dev/null && ((waited < limit * 10)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$wl_pid" 2>/dev/null; then
    log "chaos: the workload is still running ${limit}s after it was told to stop: killing it"
    kill -KILL "$wl_pid" 2>/dev/null || true
  fi
  wait "$wl_pid" 2>/dev/null || st=$?
  trap - EXIT
  local t_end=$(($(now_ms) - t0))

  if [[ -z $keep ]]; then
    for ((i = 1; i <= NPATHS; i++)); do
      [[ -n ${touched[i]:-} ]] || continue
      "$RIG_HOME/rig" --name "$RIG_NAME" heal "p$i" 2>/dev/null || log "chaos: heal p$i failed"
    done
  fi

  grep -v '^mp_workload: seed' "$work/workload.log" | head -n 20 | sed 's/^/  /' >&2 || true
  local verdict_rc=0 server=alive
  if ! record_pid "$RIG_DIR/mp.proc" >/dev/null; then
    server=dead
    log "chaos: the multipath server is gone; the end of $RIG_DIR/mp.log:"
    tail -n 5 "$RIG_DIR/mp.log" >&2
  fi
  "$RIG_PYTHON" - "$work/report.json" "$NPATHS" "$t_end" "$st" "${json:-}" "$server" "${timeline[@]}" <<'EOF' || verdict_rc=$?
import json, sys
report, npaths, t_end, status, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
server = sys.argv[6]
points = [tuple(int(x) for x in p.split()) for p in sys.argv[7:]]
try:
    w = json.load(open(report))
except (OSError, ValueError):
    print(f"chaos: the workload wrote no report (exit status {status})")
    sys.exit(1)
# Intervals with no healthy path, from the timeline of (ms, healthy count).
gaps, start = [], None
for ms, n in points:
    if n == 0 and start is None:
        start = ms
    elif n > 0 and start is not None:
        gaps.append((start, ms))
        start = None
if start is not None:
    gaps.append((start, t_end))
min_healthy = min(n for _, n in points)
print(f"client errors:   {w['errors']}")
print(f"longest stall:   {w['max_stall_ms']} ms")
print(f"blocks verified: {w['verified']}")
print(f"blocks wrong:    {w['wrong']}")
print(f"operations:      {w['ops']} (seed {w['seed']})")
print(f"healthy paths:   min {min_healthy} of {npaths}")
if gaps:
    spans = ", ".join(f"{a / 1000:.3f}-{b / 1000:.3f} s" for a, b in gaps)
    total = sum(b - a for a, b in gaps) / 1000
    print(f"no healthy path during {spans} ({total:.3f} s in all)")
if server != "alive":
    verdict, rc = "FAIL: the multipath server died", 1
elif w["wrong"] > 0 and not (gaps and w["errors"] > 0):
    verdict, rc = "FAIL: reads returned wrong data", 1
elif w["verified"] == 0:
    verdict, rc = "FAIL: no block was verified", 1
elif w["errors"] > 0 and gaps:
    # A write that failed may still have reached the image; the workload
    # then counts later reads of that block as wrong.
    extra = (f"; the {w['wrong']} wrong reads may be writes that failed yet landed"
             if w["wrong"] else "")
    verdict, rc = (f"NO HEALTHY PATH: {w['errors']} client errors while no path was healthy "
                   f"(not a failure of the disk{extra})"), 3
elif w["errors"] > 0:
    verdict, rc = f"FAIL: {w['errors']} client errors while a path was healthy throughout", 1
else:
    verdict, rc = "PASS", 0
print(f"verdict: {verdict}")
if out:
    w.update(paths=npaths, min_healthy=min_healthy, no_healthy_ms=gaps,
             verdict=verdict.split(":")[0].lower().replace(" ", "-"), timeline_ms=points)
    with open(out, "w") as f:
        json.dump(w, f)
        f.write("\n")
sys.exit(rc)
EOF
  rm -rf "$work"
  ((rc == 0)) || return "$rc"
  return "$verdict_rc"
}

chaos_progress() { [[ -s $1 ]] && (($(<"$1") > 0)); }

# chaos_sleep_until T0 MS: the schedule's own clock, not a synchronisation:
# sleeps until MS milliseconds after T0 (now_ms), if that is still ahead.
chaos_sleep_until() {
  local wait_ms=$(($1 + $2 - $(now_ms)))
  ((wait_ms <= 0)) || sleep "$(awk -v m="$wait_ms" 'BEGIN { printf "%.3f", m / 1000 }')"
}

# "1.5", "2", "1500ms", "1.5s" -> milliseconds.
chaos_at_ms() {
  [[ $1 =~ ^[0-9]+(\.[0-9]+)?(ms|s)?$ ]] || return 1
  duration_ms "$1"
}
