#!/usr/bin/env bash
# Hedged reads: one of two paths is SIGSTOPped while verified random reads
# run. With a 5 s attempt timeout, reads complete through hedges to the
# other path far sooner (a functional bound: under half the attempt timeout,
# where without hedges a read on the stopped path waits the whole 5 s), with
# zero client errors and every block verified; the stopped path is not taken
# down by losing races. MP_HEDGE=false runs it with hedging off (it must fail).
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit
mp_require_ctl

size=$((16 << 20))
make_image "$MP_TMP/disk.img" "$size"
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
write_pattern "$(upstream_uri a)" 7 "$size" || fail "cannot write the pattern"
CTL_SOCK=$MP_TMP/ctl.sock
# percentile 99 and max-share 20: hedges are rare before the stop, so the
# budget has saved up its burst when the stop comes. service-time, not the
# default latency selector: the test needs reads to land on a when it stops,
# and the latency selector may give a slower-looking path (under a sanitizer,
# 138 of 8679 reads) none at all, so there is no read for a hedge to rescue.
cat >"$MP_TMP/mp.yaml" <<YAML
paths:
  - { name: a, uri: "$(upstream_uri a)" }
  - { name: b, uri: "$(upstream_uri b)" }
selector: service-time
timeouts: { attempt: 5s, request: 30s, connect: 2s }
durability: { shared-cache: true }
hedge: { enabled: ${MP_HEDGE:-true}, percentile: 99, max-share: 20 }
control: { socket: "$CTL_SOCK" }
YAML
start_multipath mp config="$MP_TMP/mp.yaml"
ctl() { timeout -k 5 30 "$MP_CTL" -s "$CTL_SOCK" "$@"; }
stat_of() { ctl --json show stats | "$MP_PYTHON" -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

stop_file=$MP_TMP/reads.stop
"$MP_PYTHON" "$MP_SOURCE/tests/integration/pattern_reads.py" "$(mp_uri mp)" --seed 7 \
  --size "$size" --connections 4 --duration 120 --stop-file "$stop_file" \
  --progress "$MP_TMP/reads.progress" </dev/null >"$MP_TMP/reads.json" 2>"$MP_TMP/reads.log" &
reads_pid=$!
_mp_track "$reads_pid"
progress() { [[ -s $MP_TMP/reads.progress ]] && cat "$MP_TMP/reads.progress" || echo 0; }
progress_over() { (($(progress) > $1)); }
wait_for "the reads to get going" 30 progress_over 1000

sent_before=$(stat_of hedges_sent)
won_before=$(stat_of hedges_won)
stop_upstream a
stopped_at=$(progress)
mp_log "a stopped after $stopped_at reads ($sent_before hedges sent, $won_before won so far)"
# Reads go on while a is stopped: 2000 more, and some of them through hedges.
wait_for "2000 reads with a stopped" 60 progress_over $((stopped_at + 2000))
: >"$stop_file"
st=0
wait "$reads_pid" || st=$?
cat "$MP_TMP/reads.log" >&2
report=$(<"$MP_TMP/reads.json")
mp_log "reads: $report"
ctl show stats >&2
ctl show paths >&2

val() { "$MP_PYTHON" -c "import json,sys; print(json.loads(sys.argv[1])['$1'])" "$report"; }
((st == 0)) || fail "the reads exited with status $st"
(($(val errors) == 0)) || fail "$(val errors) client-visible read errors"
(($(val wrong) == 0)) || fail "$(val wrong) reads returned wrong data"
(($(val verified) == $(val blocks))) || fail "$(val verified) of $(val blocks) blocks verified"
max_ms=$(val max_ms)
"$MP_PYTHON" -c "import sys; sys.exit(0 if $max_ms < 2500 else 1)" ||
  fail "the longest read took $max_ms ms: not under half the 5 s attempt timeout"
sent=$(stat_of hedges_sent)
won=$(stat_of hedges_won)
mp_log "hedges: $sent sent, $won won, $(stat_of hedges_refused) refused"
((sent > sent_before)) || fail "no hedge was sent while a was stopped"
((won > won_before)) || fail "no hedge won while a was stopped"
# No path went down: the stopped path only lost races (its attempts were
# never timed out, since each read it held was answered by the other path).
grep -q "path a: active -> failed" "$(server_log mp)" && fail "path a was taken down"
cont_upstream a
wait_for "a and b to be active after SIGCONT" 10 ctl_paths_active "$CTL_SOCK" a b
