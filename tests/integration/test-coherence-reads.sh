#!/usr/bin/env bash
# Read-your-writes over upstreams that each keep their own write-back cache
# (nbdkit's cache filter in writeback mode, one per path, over one image):
# with every selector, on one connection and across four (a read on one
# connection after the write was acknowledged on another), every read returns
# the write just acknowledged. Dirty-range affinity turned off
# (-D multipath.unsafe_no_affinity=1) must be caught by the same check.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit
make_image "$MP_TMP/disk.img" 4M
export TMPDIR=$MP_TMP  # the cache filters' cache files
for p in a b; do
  start_upstream $p --filter=cache file "$MP_TMP/disk.img" cache=writeback cache-min-block-size=4096
done
seed=${MP_SEED:-$RANDOM}
mp_log "seed $seed (set MP_SEED to repeat)"

ryw() {
  "$MP_PYTHON" "$MP_SOURCE/tests/integration/coherence.py" ryw "$(mp_uri "$1")" \
    --blocks 64 --rounds 300 --reads 3 --seed "$seed" "${@:2}"
}

n=0
for sel in round-robin queue-length service-time; do
  n=$((n + 1))
  start_multipath "m$n" "$(upstream_uri a)" "$(upstream_uri b)" selector=$sel
  ryw "m$n" --connections 1 || fail "read-your-writes broken ($sel, one connection)"
  ryw "m$n" --connections 4 || fail "read-your-writes broken ($sel, four connections)"
  shutdown_multipath "m$n"
done

# The check can fail: without affinity, reads go to the other path's storage.
MP_NBDKIT_OPTS="-D multipath.unsafe_no_affinity=1" start_multipath mu \
  "$(upstream_uri a)" "$(upstream_uri b)" selector=round-robin
st=0
ryw mu --connections 4 || st=$?
((st == 3)) || fail "affinity switched off was not caught (status $st): the check cannot fail"
mp_log "affinity switched off: caught, as it must be"
