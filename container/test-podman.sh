#!/usr/bin/env bash
# Test of container/ (in scripts/test.sh's default variant, after the
# package test; ctest -L container): builds the images with podman, brings up
# compose.yaml (two upstreams, multipath, integrity client, fault injector),
# black-holes upstream-a and then fails upstream-b with EIO from the injector
# while the client runs, and checks that the client saw no error and every
# block verified. Everything it creates is removed at exit, pass or fail.
#
#   container/podman-setup.sh          # once per machine (root)
#   container/test-podman.sh           # about 6 min with a cold layer cache (it
#                                      # builds the Debian package in the image,
#                                      # unless MP_DEBS_DIR/debs/ holds it)
#
# Env: MP_CONTEXT   build context (default: the repository root)
#      MP_DEBS_DIR   a directory whose debs/ holds nbd-multipath_*.deb: the
#                    images install it instead of building it (scripts/test.sh
#                    hands on the package test's)
#      MP_KEEP_IMAGES=1   keep this run's image tags (the layer cache is kept
#                         anyway, so a second run builds in seconds)
#      WORKLOAD_SECONDS   the longest the client's workload may run (default
#                         600); the test stops it when the faults are done
# Exit 77 (skip) when podman, podman-compose or the base image is missing.
#
# podman-compose 1.0.3 (bookworm) cannot express network_mode
# "service:upstream-a": it passes the string to podman as is and adds the
# project network too, which podman refuses. The test runs podman-compose
# through a small shim that maps it to "container:<upstream-a's container>"
# and drops the extra network; everything else is stock podman-compose.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MP_SOURCE=${MP_SOURCE:-$(dirname "$here")}
export MP_SOURCE
# shellcheck source=SCRIPTDIR/../tests/integration/functions.sh
source "$MP_SOURCE/tests/integration/functions.sh"
mp_init

# A missing prerequisite skips the test, or fails it under
# MP_CONTAINERS_REQUIRED=1 (scripts/test.sh sets it after the setup).
cannot() {
  [[ -n ${MP_CONTAINERS_REQUIRED:-} ]] && fail "$1"
  mp_skip "$1"
}
((EUID == 0)) || cannot "needs root: podman runs rootful on these machines"
for tool in podman podman-compose ip; do
  command -v "$tool" >/dev/null || cannot "$tool is not installed: run container/podman-setup.sh first"
done
podman image exists docker.io/library/debian:bookworm ||
  cannot "no debian:bookworm image: run container/podman-setup.sh first"
[[ $(podman info --format '{{.Host.NetworkBackend}}') == netavark ]] ||
  cannot "podman's network backend is not netavark: run container/podman-setup.sh first"

context=${MP_CONTEXT:-$MP_SOURCE}
run=nbdmptest$$
export MP_IMAGE=localhost/nbd-multipath:$run
export MP_CLIENT_IMAGE=localhost/nbd-multipath-client:$run
export WORKLOAD_SECONDS=${WORKLOAD_SECONDS:-600}
# Podman gives compose networks /24s out of this pool. An unreachable route
# for all of it keeps any of their addresses from leaving the machine; the
# networks' own bridge routes are more specific and win while they exist.
pool=10.89.0.0/16
blocks=$((16 << 20 >> 12))  # the client's --size in 4 KiB blocks

cname() { echo "${run}_$1_1"; }  # podman-compose 1.0.3's container names

cat >"$MP_TMP/compose.py" <<'EOF'
import sys
import podman_compose as pc

net_args, to_args = pc.get_net_args, pc.container_to_args

def get_net_args(compose, cnt):
    return [] if cnt.get("network_mode") else net_args(compose, cnt)

def container_to_args(compose, cnt, detached=True):
    mode = cnt.get("network_mode") or ""
    if mode.startswith("service:"):
        peer = compose.container_names_by_service[mode[len("service:"):]][0]
        cnt = dict(cnt, network_mode="container:" + peer)
    return to_args(compose, cnt, detached)

pc.get_net_args, pc.container_to_args = get_net_args, container_to_args
sys.exit(pc.main())
EOF
compose() {
  "$MP_PYTHON" "$MP_TMP/compose.py" -p "$run" -f "$here/compose.yaml" "$@"
}

# Everything of this run, by the label podman-compose puts on it.
leftovers() {
  local f=label=io.podman.compose.project=$run
  podman ps -aq --filter "$f"
  podman network ls -q --filter "$f"
  podman volume ls -q --filter "$f"
}
passed=
teardown() {
  local f=label=io.podman.compose.project=$run svc ids
  if [[ -z $passed ]]; then
    for svc in multipath client upstream-a upstream-b; do
      mp_log "last lines of $svc's log:"
      podman logs --tail 20 "$(cname "$svc")" >&2 2>&1 || true
    done
  fi
  compose down -v >>"$MP_TMP/compose-down.log" 2>&1 || true
  # podman-compose 1.0.3 leaves networks (and anything after a failed up).
  mapfile -t ids < <(podman ps -aq --filter "$f")
  ((${#ids[@]} == 0)) || podman rm -f -t 0 "${ids[@]}" >/dev/null
  mapfile -t ids < <(podman network ls -q --filter "$f")
  ((${#ids[@]} == 0)) || podman network rm -f "${ids[@]}" >/dev/null
  mapfile -t ids < <(podman volume ls -q --filter "$f")
  ((${#ids[@]} == 0)) || podman volume rm -f "${ids[@]}" >/dev/null
}
remove_images() {
  [[ -n ${MP_KEEP_IMAGES:-} ]] && return 0
  podman rmi -i "$MP_IMAGE" "$MP_CLIENT_IMAGE" >/dev/null 2>&1 || true
}
# Hooks run last-registered first: containers, then images, then the route.
if [[ -z $(ip route show type unreachable "$pool") ]]; then
  ip route add unreachable "$pool"
  mp_on_cleanup ip route del unreachable "$pool"
fi
mp_on_cleanup remove_images
mp_on_cleanup teardown

# ------------------------------------------------------------------ build --
t0=$SECONDS
"$MP_SOURCE/scripts/build-nbdkit.sh" --debs-only "$context/container/nbdkit-debs" >"$MP_TMP/nbdkit-debs.log" 2>&1 ||
  { tail -n 30 "$MP_TMP/nbdkit-debs.log" >&2; fail "the fixed nbdkit's .debs"; }
# The package test's .deb when scripts/test.sh ran it first (MP_DEBS_DIR);
# otherwise the Containerfile's build stage builds it.
prebuilt=()
if compgen -G "${MP_DEBS_DIR:-/nonexistent}/debs/nbd-multipath_*.deb" >/dev/null; then
  prebuilt=(--build-context "debs=$MP_DEBS_DIR")
  mp_log "installing the package test's $(basename "$MP_DEBS_DIR"/debs/nbd-multipath_*.deb)"
fi
podman build "${prebuilt[@]}" -f "$here/Containerfile" --target server -t "$MP_IMAGE" "$context" \
  >"$MP_TMP/build-server.log" 2>&1 || { tail -n 30 "$MP_TMP/build-server.log" >&2; fail "server image build"; }
podman build "${prebuilt[@]}" -f "$here/Containerfile" --target client -t "$MP_CLIENT_IMAGE" "$context" \
  >"$MP_TMP/build-client.log" 2>&1 || { tail -n 30 "$MP_TMP/build-client.log" >&2; fail "client image build"; }
mp_log "images built in $((SECONDS - t0)) s: $(podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F ":$run" | tr '\n' ' ')"

# --------------------------------------------------------------------- up --
t0=$SECONDS
compose up -d --no-build >"$MP_TMP/compose-up.log" 2>&1 || { tail -n 30 "$MP_TMP/compose-up.log" >&2; fail "compose up"; }
for net in storage frontend; do
  subnet=$(podman network inspect "${run}_$net" --format '{{range .Subnets}}{{.Subnet}} {{end}}')
  [[ $subnet =~ ^10\.89\.[0-9]+\.0/24\ $ ]] || fail "network $net got $subnet, outside $pool"
  internal=$(podman network inspect "${run}_$net" --format '{{.Internal}}')
  assert_eq true "$internal" "network $net internal"
done
mp_log "compose up in $((SECONDS - t0)) s"

progress() { podman exec "$(cname client)" cat /tmp/workload.progress 2>/dev/null; }
# Fails the test at once (not at the deadline) if the client has exited.
progress_over() {
  local n
  running client || fail "the client exited early: $(podman logs --tail 5 "$(cname client)" 2>&1)"
  n=$(progress) && ((n > $1))
}
# state of a path as the multipath server sees it; counters with a key.
paths_json() { podman exec "$(cname multipath)" nbd-multipath-ctl --json show paths; }
path_field() {
  paths_json | "$MP_PYTHON" -c '
import json, sys
print({p["name"]: p for p in json.load(sys.stdin)}[sys.argv[1]][sys.argv[2]])' "$1" "$2"
}
path_is() { [[ $(path_field "$1" state) == "$2" ]]; }
running() { [[ $(podman inspect -f '{{.State.Running}}' "$(cname "$1")") == true ]]; }
on_upstream_side() { podman exec -i "$(cname injector)" "$@"; }
# raw COMMAND...: a client of a raw upstream (not through multipath), run in
# the multipath container, which is on the storage network; 5 s at most.
raw() { podman exec "$(cname multipath)" timeout 5 "$@"; }

wait_for "the client's workload to run" 120 progress_over 500
wait_for "both paths active" 10 eval 'path_is upstream-a active && path_is upstream-b active'

# ------------------------------------------- fault 1: blackhole upstream-a --
on_upstream_side nft -f - <<'EOF'
table inet mp_fault {
  chain in  { type filter hook input  priority -100; tcp dport 10809 counter drop; }
  chain out { type filter hook output priority -100; tcp sport 10809 counter drop; }
}
EOF
mp_log "upstream-a black-holed by the injector"
# Demonstrably real: a raw client of upstream-a hangs (timeout's 124), one of
# upstream-b does not.
rc=0; raw nbdinfo --size nbd://upstream-a >/dev/null 2>&1 || rc=$?
assert_eq 124 "$rc" "raw nbdinfo of black-holed upstream-a (124: hung until timeout)"
raw nbdinfo --size nbd://upstream-b >/dev/null || fail "upstream-b should still answer"
wait_for "multipath to take upstream-a out" 15 not path_is upstream-a active
n=$(progress)
wait_for "client I/O to go on over upstream-b" 20 progress_over $((n + 500))
# Read the whole listing first: with pipefail, a `| grep -q` that stops
# reading at its first match fails the pipeline whenever podman exec writes
# again after that (SIGPIPE), as one run showed.
rules=$(on_upstream_side nft list table inet mp_fault)
grep -Eq 'counter packets [1-9]' <<<"$rules" || fail "the blackhole dropped no packet: $rules"
on_upstream_side nft delete table inet mp_fault
mp_log "upstream-a healed"
wait_for "upstream-a reinstated" 20 path_is upstream-a active

# ---------------------------------------------- fault 2: EIO on upstream-b --
on_upstream_side touch /faults/upstream-b.errors
mp_log "upstream-b returns EIO (error filter on, from the injector)"
rc=0; raw nbdcopy nbd://upstream-b null: >/dev/null 2>&1 || rc=$?
((rc != 0 && rc != 124)) || fail "a raw read of upstream-b should fail at once, got status $rc"
wait_for "multipath to take upstream-b out" 15 not path_is upstream-b active
n=$(progress)
wait_for "client I/O to go on over upstream-a" 20 progress_over $((n + 500))
on_upstream_side rm /faults/upstream-b.errors
mp_log "upstream-b healed"
wait_for "upstream-b reinstated" 20 path_is upstream-b active

running client || fail "the workload ended before the fault schedule did: raise WORKLOAD_SECONDS"
fa=$(path_field upstream-a failures) fb=$(path_field upstream-b failures)
((fa > 0 && fb > 0)) || fail "multipath counted failures a=$fa b=$fb, expected both > 0"
mp_log "faults done; path failures: upstream-a $fa, upstream-b $fb"

# ---------------------------------------------------------------- verdict --
# The workload stops (and checks every block) once its stop file exists.
podman exec "$(cname client)" touch /tmp/workload.stop || fail "cannot stop the client's workload"
wait_for "the client to finish" 120 not running client
podman logs "$(cname client)" >"$MP_TMP/client.log" 2>&1
report=$(grep -E '^\{' "$MP_TMP/client.log" | tail -n 1) || true
[[ -n $report ]] || { cat "$MP_TMP/client.log" >&2; fail "the client printed no report"; }
mp_log "client report: $report"
report_stat() { "$MP_PYTHON" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$report" "$1"; }
assert_eq 0 "$(report_stat errors)" "client-visible errors"
assert_eq 0 "$(report_stat wrong)" "wrong blocks"
assert_eq "$blocks" "$(report_stat verified)" "blocks verified"
assert_eq 0 "$(podman inspect -f '{{.State.ExitCode}}' "$(cname client)")" "client exit status"

# --------------------------------------------------------------- teardown --
passed=1
teardown
left=$(leftovers)
[[ -z $left ]] || fail "left behind: $left"
mp_log "torn down; total $SECONDS s"
