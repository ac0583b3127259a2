#!/usr/bin/env bash
# A path that gets slow without failing: behind the delayfile filter, 20 ms
# on every request. It becomes marginal within 10 s with zero client errors
# and every block verified, `show paths` says why, and once the delay is
# removed it is re-admitted.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/workload.sh"
mp_init
mp_require nbdkit
mp_require cc
mp_require_ctl

filter=$MP_TMP/nbdkit-delayfile-filter.so
cc -shared -fPIC -O2 -o "$filter" "$MP_SOURCE/container/filters/delayfile.c" ||
  mp_skip "cannot build the delayfile filter (nbdkit-filter.h missing?)"
delay=$MP_TMP/b.delay
echo 0 >"$delay"

make_image "$MP_TMP/disk.img" 16M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b "--filter=$filter" file "$MP_TMP/disk.img" "delay-file=$delay"
CTL_SOCK=$MP_TMP/ctl.sock
# Round-robin keeps sending b its share, so it is measured by client I/O;
# short windows and ejection times keep the test short.
cat >"$MP_TMP/mp.yaml" <<YAML
paths:
  - { name: a, uri: "$(upstream_uri a)" }
  - { name: b, uri: "$(upstream_uri b)" }
selector: round-robin
timeouts: { attempt: 2s, connect: 2s }
durability: { shared-cache: true }
outlier: { window: 2s, min-samples: 10, base-ejection-time: 2s, probe-interval: 100ms }
control: { socket: "$CTL_SOCK" }
YAML
start_multipath mp config="$MP_TMP/mp.yaml"
ctl() { timeout -k 5 30 "$MP_CTL" -s "$CTL_SOCK" "$@"; }

start_workload w "$(mp_uri mp)" --duration 14 --connections 4
wait_for "the workload to get going" 20 workload_progress_over w 200
echo 20 >"$delay.new" && mv "$delay.new" "$delay"
_mp_clock
slow_at=$_mp_now
wait_for "b to become marginal" 10 grep -q "path b: active -> marginal: latency outlier" "$(server_log mp)"
_mp_clock
mp_log "b marginal after $(_mp_us_to_s $((_mp_now - slow_at))) s"
out=$(ctl show paths)
echo "$out" >&2
grep -Eq "^b .* marginal " <<<"$out" || fail "show paths does not list b as marginal"
grep -Eq "^b: marginal: latency outlier: median [0-9.]+ ms over [0-9]+ replies" <<<"$out" ||
  fail "show paths does not say why b is marginal"
ctl --json show paths | grep -Eq '"marginal": ?1[,}]' || fail "show paths --json has no marginal count of 1"

echo 0 >"$delay.new" && mv "$delay.new" "$delay"
wait_for "b to be re-admitted" 15 grep -q "path b: marginal -> active: re-admitted" "$(server_log mp)"
ctl show events | grep -q "marginal -> active" || fail "show events has no re-admission"
wait_workload w
assert_workload_clean w
