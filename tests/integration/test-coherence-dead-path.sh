#!/usr/bin/env bash
# A path that dies holding dirty ranges (its own write-back cache, no shared
# cache, no multi-conn): `show paths` showed its dirty bytes; after its kill -9
# reads of its ranges do not wait for it (they go to the other path and may
# return the data from before the lost writes, as the README says); the next
# flush fails with EIO (the writes may be lost); once the path's server is
# back the disk serves and flushes normally, and what is written then holds.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit
mp_require_ctl
make_image "$MP_TMP/disk.img" 4M
export TMPDIR=$MP_TMP  # the cache filters' cache files
for p in a b; do
  start_upstream $p --filter=multi-conn --filter=cache file "$MP_TMP/disk.img" \
    cache=writeback cache-min-block-size=4096 multi-conn-mode=disable
done
cat >"$MP_TMP/disk.yaml" <<YAML
paths:
  - { name: a, uri: "$(upstream_uri a)" }
  - { name: b, uri: "$(upstream_uri b)" }
selector: round-robin
timeouts: { attempt: 500ms, request: 2s, connect: 500ms }
failover: { reconnect-min: 50ms, reconnect-max: 200ms }
control: { socket: "$MP_TMP/ctl.sock" }
YAML
start_multipath mp config="$MP_TMP/disk.yaml"
wait_for "both paths active" 10 ctl_paths_active "$MP_TMP/ctl.sock" a b

nbd_py() { "$MP_PYTHON" -c "import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
$1" "$(mp_uri mp)"; }

# Eight blocks, spread over both paths by round-robin, none flushed.
nbd_py 'for i in range(8): h.pwrite(bytes([0x40 + i]) * 4096, (16 + i) * 4096)' ||
  fail "the writes failed"
"$MP_CTL" -s "$MP_TMP/ctl.sock" show paths >"$MP_TMP/paths.txt" || fail "show paths failed"
assert_contains "$MP_TMP/paths.txt" "a: .* bytes in .* dirty ranges not yet flushed on it"
assert_contains "$MP_TMP/paths.txt" "b: .* bytes in .* dirty ranges not yet flushed on it"

kill_upstream a KILL
# Reads of every block complete, without an error, within the request timeout.
nbd_py 'for i in range(8): h.pread(4096, (16 + i) * 4096)' || fail "reads after the kill failed"
# The flush: EIO, because a's writes may be lost.
st=0
nbd_py 'h.flush()' 2>"$MP_TMP/flush.err" || st=$?
((st != 0)) || fail "the flush after a dirty path died succeeded: its writes may be lost"
assert_contains "$MP_TMP/flush.err" "Input/output error"

restart_upstream a
wait_for "a to be reinstated" 20 ctl_paths_active "$MP_TMP/ctl.sock" a b
nbd_py '
for i in range(8): h.pwrite(bytes([0x60 + i]) * 4096, (16 + i) * 4096)
h.flush()
for i in range(8):
    assert h.pread(4096, (16 + i) * 4096) == bytes([0x60 + i]) * 4096, i' ||
  fail "the disk did not serve and flush normally once the path was back"
for i in 0 1 2 3 4 5 6 7; do
  want=$(printf '%02x' $((0x60 + i)))
  got=$(od -An -tx1 -j $(((16 + i) * 4096)) -N1 "$MP_TMP/disk.img" | tr -d ' ')
  [[ $got == "$want" ]] || fail "block $((16 + i)) holds $got in the image after the flush, not $want"
done
