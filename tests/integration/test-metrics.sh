#!/usr/bin/env bash
# The Prometheus endpoint: after a known workload (N 4 KiB writes, M reads),
# a scrape over the metrics Unix socket shows exactly N client writes, at
# least M reads, path counters covering them and the path active; unknown
# targets get 404; the socket is 0600 and goes away at shutdown. Then the
# same over TCP with listen: 127.0.0.1:0 (the port is read from the log),
# and a non-loopback listen address is refused at start-up. Last, two paths,
# one of which fails with EIO under traffic: `promtool check metrics` finds
# nothing to say about that scrape, the latency histograms are cumulative
# with +Inf equal to _count, and the write histogram counts every write.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit curl promtool
_mp_require_python
"$MP_PYTHON" -c 'import nbd' 2>/dev/null || mp_skip "the Python nbd module (python3-libnbd) is not installed"

N=37 # 4 KiB writes
M=23 # 4 KiB reads
make_image "$MP_TMP/disk.img" 8M
start_upstream a file "$MP_TMP/disk.img"

write_config() { # FILE METRICS-LINE [MORE-YAML]
  cat >"$1" <<YAML
paths:
  - { name: a, uri: "$(upstream_uri a)" }
checker: { interval: 200ms }
$2
${3:-}
YAML
}

# workload URI: N writes of distinct 4 KiB blocks, then M reads checking them.
workload() {
  timeout 60 "$MP_PYTHON" - "$1" "$N" "$M" <<'PY'
import nbd, sys
uri, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
h = nbd.NBD()
h.connect_uri(uri)
for i in range(n):
    h.pwrite(bytes([i % 251 + 1]) * 4096, i * 4096)
for i in range(m):
    if h.pread(4096, i * 4096) != bytes([i % 251 + 1]) * 4096:
        sys.exit(f"block {i} reads back wrong")
h.shutdown()
PY
}

# metric FILE SERIES: the value of one sample line (SERIES is the name with
# its labels exactly as rendered), or fail.
metric() {
  local v
  v=$(awk -v k="$2" '$1 == k { print $2; found = 1 } END { exit !found }' "$1") ||
    fail "no sample '$2' in ${1##*/}"
  echo "$v"
}

check_scrape() { # FILE: the numbers the workload must have produced
  local f=$1 v
  assert_contains "$f" '^# TYPE nbd_multipath_op_requests_total counter$'
  assert_contains "$f" '^# HELP nbd_multipath_path_state '
  v=$(metric "$f" 'nbd_multipath_op_requests_total{op="write"}')
  assert_eq "$N" "$v" "client write requests"
  v=$(metric "$f" 'nbd_multipath_op_bytes_total{op="write"}')
  assert_eq "$((N * 4096))" "$v" "client write bytes"
  for e in EIO ENOSPC EPERM other; do
    v=$(metric "$f" "nbd_multipath_op_errors_total{op=\"write\",errno=\"$e\"}")
    assert_eq 0 "$v" "client write errors ($e)"
  done
  v=$(metric "$f" 'nbd_multipath_op_requests_total{op="read"}')
  ((v >= M)) || fail "client read requests: expected at least $M, got $v"
  v=$(metric "$f" 'nbd_multipath_path_requests_total{path="a",group="default"}')
  ((v >= N + M)) || fail "path a requests: expected at least $((N + M)), got $v"
  v=$(metric "$f" 'nbd_multipath_path_state{path="a",group="default",state="active"}')
  assert_eq 1 "$v" "path a active"
  v=$(metric "$f" 'nbd_multipath_path_state{path="a",group="default",state="failed"}')
  assert_eq 0 "$v" "path a failed"
  v=$(metric "$f" 'nbd_multipath_serving_group{group="default"}')
  assert_eq 1 "$v" "serving group"
  v=$(metric "$f" 'nbd_multipath_failed_requests_total')
  assert_eq 0 "$v" "failed requests"
}

# lint FILE: promtool's linter has nothing to say about the exposition.
lint() {
  promtool check metrics <"$1" >"$1.lint" 2>&1 ||
    fail "promtool check metrics on ${1##*/}: $(cat "$1.lint")"
  [[ ! -s $1.lint ]] || fail "promtool check metrics on ${1##*/} printed: $(cat "$1.lint")"
}

# check_histograms FILE: in every *_bucket series, le ascends and the counts
# never fall; the +Inf bucket equals the series' _count. Prints the number
# of series checked.
check_histograms() {
  awk '
    function fail(msg) { print FILENAME ": " msg > "/dev/stderr"; bad = 1 }
    /^#/ { next }
    $1 ~ /_bucket\{/ {
      series = $1; sub(/,?le="[^"]*"/, "", series); sub(/_bucket\{/, "{", series)
      sub(/\{\}$/, "", series)
      match($1, /le="[^"]*"/); le = substr($1, RSTART + 4, RLENGTH - 5)
      lev = (le == "+Inf") ? "inf" : le + 0
      if (series in last_le) {
        if (last_le[series] == "inf" || (lev != "inf" && lev <= last_le[series]))
          fail("le does not ascend in " $1)
        if ($2 + 0 < last_n[series]) fail("bucket count falls in " $1)
      } else n++
      last_le[series] = lev; last_n[series] = $2 + 0
      if (le == "+Inf") inf[series] = $2 + 0
      next
    }
    $1 ~ /_count(\{|$)/ { c = $1; sub(/_count/, "", c); count[c] = $2 + 0 }
    END {
      for (s in last_le) {
        if (!(s in inf)) fail("no +Inf bucket for " s)
        else if (!(s in count)) fail("no _count for " s)
        else if (inf[s] != count[s]) fail("+Inf " inf[s] " != _count " count[s] " for " s)
      }
      if (bad) exit 1
      print n
    }' "$1"
}

# ---- over the Unix socket
MSOCK=$MP_TMP/metrics.sock
write_config "$MP_TMP/mp.yaml" "metrics: { socket: \"$MSOCK\" }"
start_multipath mp config="$MP_TMP/mp.yaml"
[[ -S $MSOCK ]] || fail "the metrics socket $MSOCK was not created"
assert_eq 600 "$(stat -c %a "$MSOCK")" "mode of the metrics socket"

workload "$(mp_uri mp)" || fail "the workload failed"
curl -sS --max-time 10 --unix-socket "$MSOCK" -D "$MP_TMP/unix.head" \
  -o "$MP_TMP/unix.prom" http://localhost/metrics || fail "scraping over the Unix socket failed"
assert_contains "$MP_TMP/unix.head" '^HTTP/1\.[01] 200 '
assert_contains "$MP_TMP/unix.head" '^Content-Type: text/plain; version=0\.0\.4'
check_scrape "$MP_TMP/unix.prom"
lint "$MP_TMP/unix.prom"

code=$(curl -sS --max-time 10 --unix-socket "$MSOCK" -o /dev/null -w '%{http_code}' \
  http://localhost/other) || fail "curl of /other failed"
assert_eq 404 "$code" "status of /other"
code=$(curl -sS --max-time 10 --unix-socket "$MSOCK" -o /dev/null -w '%{http_code}' \
  -X POST http://localhost/metrics) || fail "curl POST failed"
assert_eq 405 "$code" "status of POST /metrics"

# A second scrape sees the counters move with more I/O.
workload "$(mp_uri mp)" || fail "the second workload failed"
curl -sS --max-time 10 --unix-socket "$MSOCK" -o "$MP_TMP/unix2.prom" http://localhost/metrics ||
  fail "the second scrape failed"
assert_eq "$((2 * N))" "$(metric "$MP_TMP/unix2.prom" 'nbd_multipath_op_requests_total{op="write"}')" \
  "client writes after two workloads"

shutdown_multipath mp
[[ ! -e $MSOCK ]] || fail "the metrics socket is still there after shutdown"

# ---- over loopback TCP, port 0: the plugin logs the port it got (an
# information line, shown with -v -D multipath.verbose=1).
write_config "$MP_TMP/tcp.yaml" "metrics: { listen: 127.0.0.1:0 }"
MP_VERBOSE=1 start_multipath mptcp config="$MP_TMP/tcp.yaml"
wait_for "the metrics address in the log" 10 \
  grep -qE 'metrics: listening on 127\.0\.0\.1:[0-9]+' "$(server_log mptcp)"
addr=$(grep -oE 'metrics: listening on 127\.0\.0\.1:[0-9]+' "$(server_log mptcp)" | tail -n 1)
addr=${addr##* }
port=${addr##*:}
((port > 0)) || fail "the logged metrics port is $port"
mp_log "metrics endpoint at $addr"

workload "$(mp_uri mptcp)" || fail "the workload over mptcp failed"
curl -sS --max-time 10 -D "$MP_TMP/tcp.head" -o "$MP_TMP/tcp.prom" "http://$addr/metrics" ||
  fail "scraping over TCP failed"
assert_contains "$MP_TMP/tcp.head" '^HTTP/1\.[01] 200 '
check_scrape "$MP_TMP/tcp.prom"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "http://$addr/") ||
  fail "curl of / failed"
assert_eq 404 "$code" "status of /"
shutdown_multipath mptcp

# ---- two paths, one failing with EIO under traffic: every family populated
make_image "$MP_TMP/disk2.img" 8M
start_upstream e --filter=error file "$MP_TMP/disk2.img" error-rate=100% \
  error-file="$(error_file e)"
start_upstream f file "$MP_TMP/disk2.img"
MSOCK2=$MP_TMP/metrics2.sock
cat >"$MP_TMP/two.yaml" <<YAML
paths:
  - { name: e, uri: "$(upstream_uri e)" }
  - { name: f, uri: "$(upstream_uri f)" }
selector: round-robin
checker: { interval: 200ms }
durability: { shared-cache: true }
metrics: { socket: "$MSOCK2" }
YAML
start_multipath two config="$MP_TMP/two.yaml"
scrape2() { curl -sS --max-time 10 --unix-socket "$MSOCK2" -o "$1" http://localhost/metrics; }
workload "$(mp_uri two)" || fail "the workload on two healthy paths failed"
inject_errors e
workload "$(mp_uri two)" || fail "the workload with path e failing failed"
e_failed() {
  scrape2 "$MP_TMP/two.prom" &&
    grep -qxF 'nbd_multipath_path_state{path="e",group="default",state="failed"} 1' "$MP_TMP/two.prom"
}
wait_for "path e to be failed in the metrics" 10 e_failed
scrape2 "$MP_TMP/two.prom" || fail "scraping the two-path server failed"
lint "$MP_TMP/two.prom"
series=$(check_histograms "$MP_TMP/two.prom") || fail "the latency histograms are malformed"
((series == 6 + 2)) || fail "expected 8 latency histogram series (6 request types, 2 paths), got $series"
v=$(metric "$MP_TMP/two.prom" 'nbd_multipath_op_latency_seconds_count{op="write"}')
assert_eq "$((2 * N))" "$v" "writes in the write latency histogram"
assert_eq "$((2 * N))" "$(metric "$MP_TMP/two.prom" 'nbd_multipath_op_requests_total{op="write"}')" \
  "client write requests on two paths"
v=$(metric "$MP_TMP/two.prom" 'nbd_multipath_op_latency_seconds_bucket{op="write",le="10"}')
assert_eq "$((2 * N))" "$v" "writes within 10 s"
v=$(metric "$MP_TMP/two.prom" 'nbd_multipath_op_latency_seconds_sum{op="write"}')
awk -v s="$v" 'BEGIN { exit !(s > 0 && s < 60) }' || fail "write latency sum $v s is not in (0, 60)"
v=$(metric "$MP_TMP/two.prom" 'nbd_multipath_path_errors_total{path="e",group="default",error="eio"}')
((v >= 1)) || fail "path e EIO errors: expected at least 1, got $v"
assert_eq 0 "$(metric "$MP_TMP/two.prom" 'nbd_multipath_op_errors_total{op="write",errno="EIO"}')" \
  "client write EIO errors (failed over to f)"
v=$(metric "$MP_TMP/two.prom" 'nbd_multipath_path_latency_seconds_count{path="f",group="default"}')
((v >= N)) || fail "path f attempts in its latency histogram: expected at least $N, got $v"
assert_contains "$MP_TMP/two.prom" '^nbd_multipath_build_info\{version="[^"]+",nbdkit="[^"]+",libnbd="[^"]+",libiscsi="[^"]+".*\} 1$'
shutdown_multipath two

# ---- a non-loopback listen address is refused, and says why
write_config "$MP_TMP/bad.yaml" "metrics: { listen: 0.0.0.0:9100 }"
if mp_nbdkit -f -U "$MP_TMP/bad.sock" "$MP_PLUGIN" config="$MP_TMP/bad.yaml" \
  >"$MP_TMP/bad.out" 2>&1; then
  fail "a config with metrics.listen 0.0.0.0:9100 was accepted"
fi
assert_contains "$MP_TMP/bad.out" "bad\.yaml:[0-9]+:[0-9]+: metrics\.listen address '0\.0\.0\.0' is not a loopback address: .*no authentication"
