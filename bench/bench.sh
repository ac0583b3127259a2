#!/usr/bin/env bash
# Benchmark of the multipath plugin against the upstream itself and against
# nbdkit's own nbd plugin, with fio (ioengine=nbd).  See bench/README.md.
#
#   bench/bench.sh                                  # all targets, 3 rounds
#   TARGETS="direct nbdplugin" bench/bench.sh       # without the plugin
#   ROUNDS=5 RUNTIME=10 BENCH_OUT=/tmp/res bench/bench.sh
#
# Environment:
#   MP_PLUGIN  plugin .so (default: <repo>/build/nbdkit-multipath-plugin.so)
#   TARGETS    subset of "direct nbdplugin mp1 mp2 base" (default: all but base)
#   WORKLOADS  subset of "rr4k-qd1 rr4k-qd32 seq1m-qd8" (default: all)
#   ROUNDS     rounds; each round runs every workload on every target (3)
#   RUNTIME    measured seconds per fio job (5)
#   RAMP       warm-up seconds per fio job, not measured (1)
#   BACKEND    file (a file on tmpfs, default) | memory (nbdkit memory plugin)
#   SIZE       size of the disk (1G)
#   MP_PLUGIN_BASE  another build of the plugin, for target base (mp1 with it)
#   MP_ARGS    extra plugin arguments for mp1, mp2 and base (e.g. "selector=...")
#   BENCH_OUT  directory to keep raw.csv, summary.md and the fio JSON in
#   CHECK=1    exit 1 when a ratio misses its target (base's ratios are shown, not judged)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MP_SOURCE=${MP_SOURCE:-$(cd "$here/.." && pwd)}

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
bench_args "${BASH_SOURCE[0]}" "$@"

ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
TARGETS=${TARGETS:-direct nbdplugin mp1 mp2}
WORKLOADS=${WORKLOADS:-rr4k-qd1 rr4k-qd32 seq1m-qd8}
BACKEND=${BACKEND:-file}
SIZE=${SIZE:-1G}
MP_ARGS=${MP_ARGS:-}
BENCH_OUT=${BENCH_OUT:-}
CHECK=${CHECK:-}

# The test helpers bring the server life cycle (Unix sockets in a mktemp -d
# directory, readiness polling, cleanup of every server on any exit) and the
# fio wrappers.
MP_TEST_NAME=bench
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh
source "$MP_SOURCE/tests/integration/functions.sh"
mp_init
mp_require fio
_mp_require_python

die() { fail "$*"; }

# ---------------------------------------------------------- validation ----
bench_read_common
need_mp='' need_u2=''
for t in "${targets[@]}"; do
  case $t in
    direct | nbdplugin) ;;
    mp1) need_mp=1 ;;
    mp2) need_mp=1 need_u2=1 ;;
    base)
      [[ -e ${MP_PLUGIN_BASE:-} ]] ||
        die "target base needs MP_PLUGIN_BASE, another build of the plugin (not found: '${MP_PLUGIN_BASE:-}')"
      ;;
    *) die "unknown target '$t' (direct nbdplugin mp1 mp2 base)" ;;
  esac
done
if [[ -n $need_mp && ! -e $MP_PLUGIN ]]; then
  die "plugin not found: $MP_PLUGIN (build it, set MP_PLUGIN, or run TARGETS=\"direct nbdplugin\")"
fi

# Workload -> fio arguments.  One job, one NBD connection; the queue depth
# is the number of requests fio keeps in flight on it.
workload_args() {
  case $1 in
    rr4k-qd1) wl_args=(--rw=randread --bs=4k --iodepth=1) ;;
    rr4k-qd32) wl_args=(--rw=randread --bs=4k --iodepth=32) ;;
    seq1m-qd8) wl_args=(--rw=read --bs=1m --iodepth=8) ;;
    *) return 1 ;;
  esac
}
for w in "${workloads[@]}"; do
  workload_args "$w" || die "unknown workload '$w' (rr4k-qd1 rr4k-qd32 seq1m-qd8)"
done

# ------------------------------------------------------------- servers ----
# Upstreams.  The file backend puts one image on tmpfs and serves it with
# two nbdkit file servers (u1, u2), so that mp2's two paths lead to the same
# data, as two paths to one disk should, and every target pays the same
# backend cost.  The memory backend is one RAM disk per server: mp2's second
# path then has other data, which is fine for a read benchmark only.
case $BACKEND in
  file)
    bench_image_dir mp-bench
    make_image "$imgdir/disk.img" "$SIZE"
    start_upstream u1 file "$imgdir/disk.img"
    [[ -n $need_u2 ]] && start_upstream u2 file "$imgdir/disk.img"
    ;;
  memory)
    start_upstream u1 memory "$SIZE"
    [[ -n $need_u2 ]] && start_upstream u2 memory "$SIZE"
    ;;
  *) die "BACKEND must be file or memory" ;;
esac

# Fill the disk with fio's (non-zero, incompressible) data so that reads hit
# allocated pages, not holes.
prefill() {
  run_fio "$(upstream_uri "$1")" --rw=write --bs=1m --iodepth=8 --size=100% ||
    die "prefill of $1 failed"
}
prefill u1
[[ -n $need_u2 && $BACKEND == memory ]] && prefill u2

declare -A uri=() front=()
for t in "${targets[@]}"; do
  case $t in
    direct) uri[$t]=$(upstream_uri u1) front[$t]=$(server_pid u1) ;;
    nbdplugin)
      # nbdkit's nbd plugin: one upstream connection per client connection.
      start_upstream nbdplugin nbd socket="$(server_sock u1)"
      uri[$t]=$(upstream_uri nbdplugin) front[$t]=$(server_pid nbdplugin)
      ;;
    mp1)
      start_multipath mp1 "path=$(upstream_uri u1)" "${mp_args[@]}"
      uri[$t]=$(mp_uri mp1) front[$t]=$(server_pid mp1)
      ;;
    mp2)
      start_multipath mp2 "path=$(upstream_uri u1)" "path=$(upstream_uri u2)" "${mp_args[@]}"
      uri[$t]=$(mp_uri mp2) front[$t]=$(server_pid mp2)
      ;;
    base)
      # mp1 with another build of the plugin, for a before/after in one run.
      MP_PLUGIN=$MP_PLUGIN_BASE start_multipath base "path=$(upstream_uri u1)" "${mp_args[@]}"
      uri[$t]=$(mp_uri base) front[$t]=$(server_pid base)
      ;;
  esac
done

# ---------------------------------------------------------------- runs ----
raw=$MP_TMP/raw.csv
echo "round,target,workload,iops,mibs,cpu_us,machine_us,busy_pct" >"$raw"

{
  echo "# nbd-multipath bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(uname -r), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tools: $(nbdkit --version | head -n 1), $(fio --version), $(nbdinfo --version | sed -n 2p)"
  bench_plugin_line
  echo "backend: $BACKEND $SIZE; rounds: $ROUNDS; per job: ${RAMP}s ramp + ${RUNTIME}s measured"
  echo "targets: ${targets[*]}; workloads: ${workloads[*]}${MP_ARGS:+; MP_ARGS: $MP_ARGS}"
} >"$MP_TMP/header.txt"
cat "$MP_TMP/header.txt" >&2

for ((r = 1; r <= ROUNDS; r++)); do
  bench_round_order "$r"
  for w in "${workloads[@]}"; do
    workload_args "$w"
    for t in "${order[@]}"; do
      BENCH_FRONT_PID=${front[$t]} bench_fio "$r" "$t" "$w" "${uri[$t]}" "${wl_args[@]}"
      bench_record "$r" "$t" "$w"
    done
  done
done

# ------------------------------------------------------------- summary ----
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$MP_TMP/header.txt"
st=0
"$MP_PYTHON" - "$raw" "$MP_TMP/summary.md" "$MP_TMP/header.txt" "$here" <<'EOF' || st=$?
import sys
sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, sys.argv[4])
import summary
out, med, workloads = summary.tables(sys.argv[1], sys.argv[3])
rows = summary.read_rows(sys.argv[1])
checks = [("QD32 4K", "rr4k-qd32", "nbdplugin", 1.5),
          ("QD1 4K", "rr4k-qd1", "nbdplugin", 1.0),
          ("1M seq", "seq1m-qd8", "direct", 0.8)]
# The verdict goes by the ratio within each round (the targets ran back to
# back), its median over rounds; the ratio of the medians is shown beside it.
out += ["", "| ratio | per round (median) | of the medians | target | verdict |",
        "|---|---|---|---|---|"]
missed = 0
for mp in ("mp1", "mp2", "base"):
    for name, w, base, goal in checks:
        a, b = med.get((mp, w)), med.get((base, w))
        if a is None or b is None or not b:
            out.append(f"| {name} {mp}/{base} | n/a | n/a | ≥ {goal} | not measured |")
            continue
        r = summary.paired(rows, mp, base, w)
        ok = r >= goal
        missed += not ok and mp != "base"  # the other build is for comparison only
        out.append(f"| {name} {mp}/{base} | {r:.2f} | {a / b:.2f} | ≥ {goal} | "
                   f"{'met' if ok else 'MISSED'} |")
# Context: what the nbd plugin costs against the upstream itself.
for name, w, _, _ in checks:
    a, b = med.get(("nbdplugin", w)), med.get(("direct", w))
    if a is not None and b:
        r = summary.paired(rows, "nbdplugin", "direct", w)
        out.append(f"| {name} nbdplugin/direct | {r:.2f} | {a / b:.2f} | (reference) | |")
# Where the CPU mostly bounds the job (the machine busy), the ceiling of any
# front server at the baseline's busy share: it costs at least what the
# upstream nbdkit itself costs a request (receive it, move the data, send the
# reply: direct's server CPU), on top of the machine's cost with direct (fio
# and the upstream). A loose bound for small requests, where a front server
# also hands each one to an upstream connection and waits for the reply.
for name, w, base, goal in checks:
    busy = med.get(("direct", w, "busy_pct"))
    dm, dc = med.get(("direct", w, "machine_us")), med.get(("direct", w, "cpu_us"))
    bm = med.get((base, w, "machine_us"))
    if busy is None or busy < 70 or not dm or dc is None or not bm:
        continue
    out.append(f"| {name} ceiling of a front server/{base} | | {bm / (dm + dc):.2f} | "
               f"(machine {bm:.0f} µs/request against at least {dm:.0f} + {dc:.0f}) | |")
summary.write(sys.argv[2], out)
sys.exit(3 if missed else 0)
EOF
((st == 0 || st == 3)) || die "summary failed (status $st)"
if [[ -n $BENCH_OUT ]]; then
  mkdir -p "$BENCH_OUT"
  cp "$raw" "$MP_TMP/summary.md" "$BENCH_OUT/"
  mkdir -p "$BENCH_OUT/fio"
  cp "$MP_TMP"/r*-*.json "$BENCH_OUT/fio/"
  mp_log "results kept in $BENCH_OUT"
fi
if [[ -n $CHECK ]] && ((st == 3)); then
  fail "a ratio missed its target"
fi
