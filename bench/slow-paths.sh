#!/usr/bin/env bash
# Slow paths: how each selector keeps (or loses) the disk's latency when one
# path gets slow without failing, against the healthy path alone behind the
# same plugin, side by side in one run.  See bench/README.md ("Slow paths").
#
#   bench/slow-paths.sh                             # every case, 3 rounds
#   CASES="slow healthy" ROUNDS=5 bench/slow-paths.sh
#   SELECTORS="latency service-time" bench/slow-paths.sh
#
# Environment:
#   MP_PLUGIN  plugin .so (default: <repo>/build/nbdkit-multipath-plugin.so)
#   CASES      subset of "slow spiky healthy bandwidth" (default: all)
#              slow:      two paths, one behind --filter=delay (10 ms on every request)
#              spiky:     two paths, one behind the spikes filter (2% of requests 50 ms)
#              healthy:   two healthy paths
#              bandwidth: paths behind --filter=rate at 800 and 200 Mbit/s
#   SELECTORS  selectors to compare, each NAME (outlier detection and hedged
#              reads off: the selector alone), NAME+outlier (outlier detection
#              on), NAME+hedge or NAME+outlier+hedge (hedged reads on too; the
#              default configuration is latency+outlier+hedge)
#              (default: latency service-time queue-length round-robin
#              latency+outlier service-time+outlier latency+outlier+hedge
#              service-time+outlier+hedge)
#              Targets with +hedge are configured by a YAML file with a control
#              socket (for the hedge counters): MP_ARGS does not apply to them.
#   ROUNDS     rounds; each round runs every target of a case once (3)
#   RUNTIME    measured seconds per fio job (5)
#   RAMP       warm-up seconds per fio job, not measured (1)
#   SIZE       size of the disk image on tmpfs (512M)
#   MP_ARGS    extra plugin arguments for every multipath target
#   BENCH_OUT  directory to keep raw.csv, summary.md and the fio JSON in
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MP_SOURCE=${MP_SOURCE:-$(cd "$here/.." && pwd)}

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
bench_args "${BASH_SOURCE[0]}" "$@"

ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
CASES=${CASES:-slow spiky healthy bandwidth}
SELECTORS=${SELECTORS:-latency service-time queue-length round-robin latency+outlier service-time+outlier latency+outlier+hedge service-time+outlier+hedge}
SIZE=${SIZE:-512M}
MP_ARGS=${MP_ARGS:-}
BENCH_OUT=${BENCH_OUT:-}

MP_TEST_NAME=slow-paths
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh
source "$MP_SOURCE/tests/integration/functions.sh"
mp_init
mp_require fio
mp_require cc
_mp_require_python
mp_require_ctl

# bench_read_common checks ROUNDS, RUNTIME, RAMP and reads MP_ARGS; the
# targets and workloads of this script come per case.
TARGETS=x WORKLOADS=x bench_read_common
read -r -a cases <<<"$CASES"
read -r -a selectors <<<"$SELECTORS"
((${#cases[@]})) || fail "CASES is empty"
((${#selectors[@]})) || fail "SELECTORS is empty"
for c in "${cases[@]}"; do
  case $c in slow | spiky | healthy | bandwidth) ;; *) fail "unknown case '$c' (slow spiky healthy bandwidth)" ;; esac
done
for s in "${selectors[@]}"; do
  [[ $s =~ ^[a-z-]+(\+outlier)?(\+hedge)?$ ]] ||
    fail "bad selector target '$s': use NAME, NAME+outlier, NAME+hedge or NAME+outlier+hedge"
  [[ $s == *+hedge && -n $MP_ARGS ]] &&
    fail "MP_ARGS does not apply to '$s' (configured by a YAML file): drop MP_ARGS or the +hedge targets"
done
[[ -e $MP_PLUGIN ]] || fail "plugin not found: $MP_PLUGIN (build it or set MP_PLUGIN)"
need_mp=1

# The spikes filter (container/filters/spikes.c), built for this run.
spikes=$MP_TMP/nbdkit-spikes-filter.so
cc -shared -fPIC -O2 -o "$spikes" "$MP_SOURCE/container/filters/spikes.c" ||
  fail "could not build the spikes filter (is nbdkit's filter header, nbdkit-filter.h, installed?)"

# Workload -> fio arguments.  unified_rw_reporting puts reads and writes in
# one "mixed" record: IOPS and percentiles over all requests.
workload_args() {
  case $1 in
    rr4k-qd32) wl_args=(--rw=randread --bs=4k --iodepth=32) ;;
    rw64k-qd8) wl_args=(--rw=randrw --rwmixread=70 --bs=64k --iodepth=8) ;;
    seq1m-qd16) wl_args=(--rw=read --bs=1m --iodepth=16) ;;
    *) return 1 ;;
  esac
}

bench_image_dir mp-slow
img=$imgdir/disk.img
make_image "$img" "$SIZE"
start_upstream fill file "$img"
run_fio "$(upstream_uri fill)" --rw=write --bs=1m --iodepth=8 --size=100% || fail "prefill failed"
shutdown_server fill

raw=$MP_TMP/raw.csv
echo "case,round,target,workload,iops,mibs,p50,p99,p999,hedge_share" >"$raw"
{
  echo "# nbd-multipath slow-path bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(uname -r), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tools: $(nbdkit --version | head -n 1), $(fio --version)"
  bench_plugin_line
  echo "image: $SIZE on tmpfs; rounds: $ROUNDS; per job: ${RAMP}s ramp + ${RUNTIME}s measured"
  echo "cases: ${cases[*]}; selectors: ${selectors[*]}${MP_ARGS:+; MP_ARGS: $MP_ARGS}"
} >"$MP_TMP/header.txt"
cat "$MP_TMP/header.txt" >&2

# slow_fio R T W URI [fio args]: one measured fio job, its JSON kept as
# r<R>-<T>-<W>.json; sets iops, mibs and the p50, p99, p999 latencies (µs)
# over all requests (reads and writes in fio's one "mixed" record). Fails on
# any I/O error.
slow_fio() {
  local r=$1 t=$2 w=$3 uri=$4
  shift 4
  MP_FIO_OUT=$MP_TMP/r$r-$t-$w.json run_fio "$uri" "$@" --unified_rw_reporting=1 \
    --percentile_list=50:99:99.9 --runtime="$RUNTIME" --time_based --ramp_time="$RAMP" \
    --norandommap --randrepeat=0 || fail "fio failed: round $r, $t, $w"
  read -r errs iops mibs p50 p99 p999 < <("$MP_PYTHON" - "$MP_FIO_JSON" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]
mixed = job["mixed"]
pct = mixed["clat_ns"]["percentile"]
print(job.get("error", 0), round(mixed["iops"], 1), round(mixed["bw"] / 1024, 1),
      *(round(pct[k] / 1000) for k in ("50.000000", "99.000000", "99.900000")))
PY
  )
  ((errs == 0)) || fail "I/O error $errs: round $r, $t, $w"
}

# hedge_counts T: hedges sent and client reads completed so far by target T
# (one with a control socket).
hedge_counts() {
  timeout -k 5 30 "$MP_CTL" -s "$MP_TMP/$1.ctl.sock" --json show stats | "$MP_PYTHON" -c '
import json, sys
d = json.load(sys.stdin)
print(d.get("hedges_sent", 0), next(o["requests"] for o in d["ops"] if o["op"] == "read"))'
}

# run_case CASE: starts the case's upstreams and one multipath server per
# target, runs the rounds, stops them all.
run_case() {
  local c=$1 w t r lab
  # Filters go before the plugin, their parameters after it.
  local -a slow_filter=() slow_params=() fast_filter=() fast_params=() ups refs workloads
  case $c in
    slow) slow_filter=(--filter=delay) slow_params=(rdelay=10ms wdelay=10ms) ;;
    spiky) slow_filter=("--filter=$spikes") slow_params=(spike-rate=2 spike-ms=50) ;;
    healthy) ;;
    bandwidth)
      fast_filter=(--filter=rate) fast_params=(rate=800M)
      slow_filter=(--filter=rate) slow_params=(rate=200M)
      ;;
  esac
  start_upstream "$c-h" "${fast_filter[@]}" file "$img" "${fast_params[@]}"
  start_upstream "$c-s" "${slow_filter[@]}" file "$img" "${slow_params[@]}"
  ups=("path=$(upstream_uri "$c-h")" "path=$(upstream_uri "$c-s")")
  # The reference: the healthy path alone, behind the same plugin.
  start_multipath "$c-alone" "${ups[0]}" outlier=false hedge=false "${mp_args[@]}"
  refs=("$c-alone")
  if [[ $c == bandwidth ]]; then
    start_multipath "$c-slowalone" "${ups[1]}" outlier=false hedge=false "${mp_args[@]}"
    refs+=("$c-slowalone")
    workloads=(seq1m-qd16)
  else
    workloads=(rr4k-qd32 rw64k-qd8)
  fi
  local sel out hedge name yaml
  local -A hedged=()
  for s in "${selectors[@]}"; do
    sel=${s%%+*} out=false hedge=false
    [[ $s == *+outlier* ]] && out=true
    [[ $s == *+hedge ]] && hedge=true
    # Server names take no '+': NAME+outlier runs as NAME.outlier.
    name=$c-${s//+/.}
    if [[ $hedge == true ]]; then
      hedged[$name]=1
      yaml=$MP_TMP/$name.yaml
      {
        echo "paths:"
        echo "  - { name: h, uri: \"$(upstream_uri "$c-h")\" }"
        echo "  - { name: s, uri: \"$(upstream_uri "$c-s")\" }"
        echo "selector: $sel"
        echo "outlier: { enabled: $out }"
        echo "hedge: { enabled: true }"
        echo "control: { socket: \"$MP_TMP/$name.ctl.sock\" }"
      } >"$yaml"
      start_multipath "$name" "config=$yaml"
    else
      start_multipath "$name" "${ups[@]}" "selector=$sel" "outlier=$out" hedge=false "${mp_args[@]}"
    fi
  done
  targets=("${refs[@]}")
  for s in "${selectors[@]}"; do targets+=("$c-${s//+/.}"); done
  for ((r = 1; r <= ROUNDS; r++)); do
    bench_round_order "$r"
    for w in "${workloads[@]}"; do
      workload_args "$w"
      for t in "${order[@]}"; do
        # Hedge share: extra reads sent by hedging per client read (ramp included).
        local share="" s0 n0 s1 n1
        [[ -n ${hedged[$t]:-} ]] && read -r s0 n0 < <(hedge_counts "$t")
        slow_fio "$r" "$t" "$w" "$(mp_uri "$t")" "${wl_args[@]}"
        if [[ -n ${hedged[$t]:-} ]]; then
          read -r s1 n1 < <(hedge_counts "$t")
          share=$("$MP_PYTHON" -c "print(round(($s1 - $s0) / max(1, $n1 - $n0), 5))")
        fi
        lab=${t#"$c"-} lab=${lab//./+}
        echo "$c,$r,$lab,$w,$iops,$mibs,$p50,$p99,$p999,$share" >>"$raw"
        printf '  %-9s round %d/%d %-26s %-10s %9s IOPS %7s MiB/s p50 %6sus p99 %6sus p99.9 %6sus hedges %s\n' \
          "$c" "$r" "$ROUNDS" "$lab" "$w" "$iops" "$mibs" "$p50" "$p99" "$p999" "${share:--}" >&2
      done
    done
  done
  for t in "${targets[@]}" "$c-h" "$c-s"; do shutdown_server "$t"; done
}

for c in "${cases[@]}"; do run_case "$c"; done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$MP_TMP/header.txt"
"$MP_PYTHON" "$here/slow_summary.py" "$raw" "$MP_TMP/header.txt" "$MP_TMP/summary.md" ||
  fail "summary failed"
if [[ -n $BENCH_OUT ]]; then
  mkdir -p "$BENCH_OUT/fio"
  cp "$raw" "$MP_TMP/summary.md" "$BENCH_OUT/"
  cp "$MP_TMP"/r*-*.json "$BENCH_OUT/fio/"
  mp_log "results kept in $BENCH_OUT"
fi
