#!/usr/bin/env bash
# Benchmark of the multipath plugin over iSCSI paths, beside libiscsi's own
# iscsi-perf against the same tgtd target.  See bench/README.md, "iSCSI paths".
#
#   bench/iscsi-bench.sh                            # all targets, 3 rounds
#   TARGETS="iscsi-perf mp1" bench/iscsi-bench.sh   # without the second path
#   ROUNDS=5 RUNTIME=10 BENCH_OUT=/tmp/res bench/iscsi-bench.sh
#
# Targets (all read one image on tmpfs, served by tgtd as LUN 1):
#   iscsi-perf  libiscsi's iscsi-perf, one iSCSI session straight to tgtd "a"
#   mp1         fio (ioengine=nbd) -> nbdkit multipath, one path: tgtd "a"
#   mp2         fio (ioengine=nbd) -> nbdkit multipath, two paths: tgtd "a"
#               and tgtd "b" (a second tgtd process on the same image)
#
# Environment:
#   MP_PLUGIN  plugin .so (default: <repo>/build/nbdkit-multipath-plugin.so)
#   TARGETS    subset of "iscsi-perf mp1 mp2" (default: all)
#   WORKLOADS  subset of "rr4k-qd1 rr4k-qd32 seq1m-qd8" (default: all)
#   ROUNDS     rounds; each round runs every workload on every target (3)
#   RUNTIME    measured seconds per run (5)
#   RAMP       warm-up seconds per run, not measured (1)
#   SIZE       size of the disk, a multiple of 1M (1G)
#   SELECTOR   path selector of mp2 (round-robin)
#   MP_ARGS    extra plugin arguments for mp1 and mp2 (e.g. "timeout=5s")
#   BENCH_OUT  directory to keep raw.csv, summary.md and every fio JSON and
#              iscsi-perf output in
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MP_SOURCE=${MP_SOURCE:-$(cd "$here/.." && pwd)}

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
bench_args "${BASH_SOURCE[0]}" "$@"

ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-5}
RAMP=${RAMP:-1}
TARGETS=${TARGETS:-iscsi-perf mp1 mp2}
WORKLOADS=${WORKLOADS:-rr4k-qd1 rr4k-qd32 seq1m-qd8}
SIZE=${SIZE:-1G}
SELECTOR=${SELECTOR:-round-robin}
MP_ARGS=${MP_ARGS:-}
BENCH_OUT=${BENCH_OUT:-}

# Server life cycle (mktemp -d directory, Unix sockets for nbdkit, tgtd on
# 127.0.0.1 port 0, everything stopped on any exit) and the fio wrappers.
MP_TEST_NAME=iscsi-bench
# shellcheck source-path=SCRIPTDIR source=../tests/integration/functions.sh
source "$MP_SOURCE/tests/integration/functions.sh"
# shellcheck source-path=SCRIPTDIR source=../tests/integration/iscsi.sh
source "$MP_SOURCE/tests/integration/iscsi.sh"
mp_init
_mp_require_python

die() { fail "$*"; }

# ---------------------------------------------------------- validation ----
bench_read_common
size=$(mp_bytes "$SIZE") || die "bad SIZE '$SIZE'"
((size > 0 && size % (1 << 20) == 0)) || die "SIZE must be a positive multiple of 1M"
need_mp='' need_b=''
for t in "${targets[@]}"; do
  case $t in
    iscsi-perf) mp_require iscsi-perf ;;
    mp1) need_mp=1 ;;
    mp2) need_mp=1 need_b=1 ;;
    *) die "unknown target '$t' (iscsi-perf mp1 mp2)" ;;
  esac
done
if [[ -n $need_mp ]]; then
  mp_require fio
  [[ -e $MP_PLUGIN ]] || die "plugin not found: $MP_PLUGIN (build it, set MP_PLUGIN, or run TARGETS=iscsi-perf)"
fi

# Workload -> fio arguments (one job, one NBD connection, iodepth requests in
# flight on it) and iscsi-perf arguments (one session, -m requests in
# flight, -b blocks of the LU's 512-byte logical block per request).
workload_args() {
  case $1 in
    rr4k-qd1) wl_fio=(--rw=randread --bs=4k --iodepth=1) wl_perf=(-r -b 8 -m 1) wl_bytes=4096 ;;
    rr4k-qd32) wl_fio=(--rw=randread --bs=4k --iodepth=32) wl_perf=(-r -b 8 -m 32) wl_bytes=4096 ;;
    seq1m-qd8) wl_fio=(--rw=read --bs=1m --iodepth=8) wl_perf=(-b 2048 -m 8) wl_bytes=1048576 ;;
    *) return 1 ;;
  esac
}
for w in "${workloads[@]}"; do
  workload_args "$w" || die "unknown workload '$w' (rr4k-qd1 rr4k-qd32 seq1m-qd8)"
done

# ------------------------------------------------------------- servers ----
# One image on tmpfs, filled with random (non-zero, incompressible) data so
# that reads hit allocated pages; tgtd "a" (and "b" for mp2) serve it as
# LUN 1 with the same target id, hence the same LU identifier: two paths to
# one disk.
bench_image_dir mp-iscsi-bench
img=$imgdir/disk.img
mp_log "filling $SIZE image with random data"
dd if=/dev/urandom of="$img" bs=1M count=$((size >> 20)) iflag=fullblock status=none ||
  die "prefill of the image failed"
start_tgt a "$img"
[[ -n $need_b ]] && start_tgt b "$img"

declare -A uri=()
for t in "${targets[@]}"; do
  case $t in
    iscsi-perf) uri[$t]=$(tgt_uri a) ;;
    mp1)
      start_multipath mp1 "path=$(tgt_uri a)" "${mp_args[@]}"
      uri[$t]=$(mp_uri mp1)
      ;;
    mp2)
      start_multipath mp2 "path=$(tgt_uri a)" "path=$(tgt_uri b)" "selector=$SELECTOR" "${mp_args[@]}"
      uri[$t]=$(mp_uri mp2)
      ;;
  esac
done

# -------------------------------------------------------------- iscsi-perf ----
# iscsi-perf has no warm-up and prints only whole-run averages at the end,
# but with -l it prints one line per second of the run ("iops current N"
# for the last interval of about 1 s).  Run it for RAMP + RUNTIME + 2
# seconds, drop the first RAMP lines and average the next RUNTIME ones.
# Sets perf_iops; fails on an error, a short run or an unexpected request
# size.
run_iscsi_perf() {
  local out=$1 w=$2 st=0
  timeout -k 5 $((RAMP + RUNTIME + 60)) \
    iscsi-perf -l -t $((RAMP + RUNTIME + 2)) "${wl_perf[@]}" "${uri[iscsi-perf]}" >"$out" 2>&1 || st=$?
  if ((st != 0)) || ! grep -q '^finished\.' "$out"; then
    tail -n 5 "$out" >&2 || true
    mp_log "iscsi-perf exited with status $st (see ${out##*/})"
    return 1
  fi
  grep -q "transfer size of [0-9]* blocks ($wl_bytes byte)" "$out" ||
    { mp_log "iscsi-perf did not use $wl_bytes-byte requests for $w (LU block size not 512?)"; return 1; }
  perf_iops=$("$MP_PYTHON" - "$out" "$RAMP" "$RUNTIME" <<'EOF'
import re, sys
text = open(sys.argv[1], errors="replace").read()
ramp, runtime = int(sys.argv[2]), int(sys.argv[3])
cur = [int(m) for m in re.findall(r"iops current (\d+)", text)]
if len(cur) < ramp + runtime:
    sys.exit(f"iscsi-perf printed {len(cur)} per-second lines, {ramp + runtime} needed")
v = cur[ramp:ramp + runtime]
print(round(sum(v) / len(v), 1))
EOF
  ) || return 1
}

# ---------------------------------------------------------------- runs ----
raw=$MP_TMP/raw.csv
echo "round,target,workload,iops,mibs" >"$raw"

{
  echo "# nbd-multipath iSCSI bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(nproc) cores, $(uname -r), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "tools: tgtd $(tgtd --version 2>&1 | head -n 1), libiscsi-bin $(dpkg-query -W -f '${Version}' libiscsi-bin 2>/dev/null || echo '?') (iscsi-perf), $(nbdkit --version | head -n 1), $(fio --version 2>/dev/null || echo 'no fio')"
  bench_plugin_line
  echo "image: $SIZE of random data on $shm; rounds: $ROUNDS; per run: ${RAMP}s ramp + ${RUNTIME}s measured"
  echo "targets: ${targets[*]}; workloads: ${workloads[*]}$([[ -n $need_b ]] && echo "; mp2 selector: $SELECTOR")${MP_ARGS:+; MP_ARGS: $MP_ARGS}"
} >"$MP_TMP/header.txt"
cat "$MP_TMP/header.txt" >&2

for ((r = 1; r <= ROUNDS; r++)); do
  bench_round_order "$r"
  for w in "${workloads[@]}"; do
    workload_args "$w"
    for t in "${order[@]}"; do
      if [[ $t == iscsi-perf ]]; then
        run_iscsi_perf "$MP_TMP/r$r-$t-$w.txt" "$w" || die "iscsi-perf failed: round $r, $w"
        iops=$perf_iops
        mibs=$("$MP_PYTHON" -c 'import sys; print(round(float(sys.argv[1]) * int(sys.argv[2]) / 2**20, 1))' "$iops" "$wl_bytes")
      else
        bench_fio "$r" "$t" "$w" "${uri[$t]}" "${wl_fio[@]}"
      fi
      bench_record "$r" "$t" "$w"
    done
  done
done

# ------------------------------------------------------------- summary ----
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$MP_TMP/header.txt"
"$MP_PYTHON" - "$raw" "$MP_TMP/summary.md" "$MP_TMP/header.txt" "$here" <<'EOF' || die "summary failed"
import sys
sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, sys.argv[4])
import summary
out, med, workloads = summary.tables(sys.argv[1], sys.argv[3])
ratios = [(mp, w) for mp in ("mp1", "mp2") for w in workloads
          if (mp, w) in med and med.get(("iscsi-perf", w))]
if ratios:
    out += ["", "| ratio (ours / iscsi-perf) | value |", "|---|---|"]
    for mp, w in ratios:
        out.append(f"| {summary.LABELS[w][0]}, {mp} | {med[mp, w] / med['iscsi-perf', w]:.2f} |")
summary.write(sys.argv[2], out)
EOF
if [[ -n $BENCH_OUT ]]; then
  mkdir -p "$BENCH_OUT/runs"
  cp "$raw" "$MP_TMP/summary.md" "$BENCH_OUT/"
  cp "$MP_TMP"/r*-*.json "$MP_TMP"/r*-*.txt "$BENCH_OUT/runs/" 2>/dev/null || true
  mp_log "results kept in $BENCH_OUT"
fi
