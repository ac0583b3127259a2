#!/usr/bin/env bash
# Bad iSCSI input gets one clear message each: malformed URIs, a wrong IQN,
# wrong CHAP credentials, a LUN of another size, a LUN of another identity,
# and an identity the config pins. CHAP from the URI and from a secret file
# works against a target that requires it.
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/iscsi.sh"
mp_init
make_image "$MP_TMP/disk.img" 16M
make_image "$MP_TMP/small.img" 8M
start_tgt a "$MP_TMP/disk.img" --chap alice s3cret-pass
start_tgt other "$MP_TMP/disk.img" --tid 2 --iqn iqn.2026-11.org.nbd-multipath:other
start_tgt small "$MP_TMP/small.img"

# expect_refusal NAME PATTERN ARGS...: the server refuses to start, and its
# log says PATTERN.
expect_refusal() {
  local name=$1 pattern=$2
  shift 2
  if MP_CMD_TIMEOUT=30 mp_nbdkit -f -U "$MP_TMP/$name.sock" "$MP_PLUGIN" "$@" >"$MP_TMP/$name.out" 2>&1; then
    fail "$name: the server started"
  fi
  assert_contains "$MP_TMP/$name.out" "$pattern"
  mp_log "$name: $(grep -m1 -E "$pattern" "$MP_TMP/$name.out")"
}

port=${_MP_TGT_PORT[a]}
expect_refusal no-lun "must name a target and a LUN after the host" \
  "iscsi://127.0.0.1:$port/iqn.2026-11.org.nbd-multipath:disk"
expect_refusal bad-lun "LUN 'x' in .* is not a LUN number" \
  "iscsi://127.0.0.1:$port/iqn.2026-11.org.nbd-multipath:disk/x"
expect_refusal bad-iqn "target 'disk' in .* is not an iSCSI name" "iscsi://127.0.0.1:$port/disk/1"
expect_refusal bad-port "port '99999' in .* is not a port number" \
  "iscsi://127.0.0.1:99999/iqn.2026-11.org.nbd-multipath:disk/1"
expect_refusal wrong-iqn "path path1 .* is unreachable at start-up: .*Target not found.*: check the target name" \
  "iscsi://alice%s3cret-pass@127.0.0.1:$port/iqn.2026-11.org.nbd-multipath:nosuch/1"
expect_refusal wrong-chap "path path1 .* is unreachable at start-up: .*Authentication failure.*: check the CHAP user and secret" \
  "iscsi://alice%wrong@127.0.0.1:$port/iqn.2026-11.org.nbd-multipath:disk/1"
assert_not_contains "$MP_TMP/wrong-chap.out" "alice%wrong"  # the password stays out of the log
expect_refusal no-chap "path path1 .* is unreachable at start-up: .*login failed" \
  "$(tgt_uri a)"
expect_refusal other-size "path path2 has size 8388608 but path path1 has size 16777216" \
  "$(tgt_uri a alice%s3cret-pass)" "$(tgt_uri small)"
expect_refusal other-lu "path path2 reaches LU [a-z0-9.]+ but path path1 names LU" \
  "$(tgt_uri a alice%s3cret-pass)" "iscsi://127.0.0.1:${_MP_TGT_PORT[other]}/iqn.2026-11.org.nbd-multipath:other/1"

# CHAP from a YAML file with the secret in a file; a pinned identity.
printf 's3cret-pass\n' >"$MP_TMP/secret"
cat >"$MP_TMP/chap.yaml" <<YAML
paths:
  - name: a
    uri: $(tgt_uri a)
    chap:
      user: alice
      secret-file: $MP_TMP/secret
YAML
start_multipath chap config="$MP_TMP/chap.yaml"
write_pattern "$(mp_uri chap)" 3 16M
verify_pattern "$(mp_uri chap)" 3 16M
shutdown_multipath chap

cat >"$MP_TMP/pinned.yaml" <<YAML
identity: naa.600000000000000000000000000000ff
paths:
  - uri: $(tgt_uri a alice%s3cret-pass)
YAML
expect_refusal pinned "path path1 reaches LU naa\\.[0-9a-f]+ but the config's identity: names LU naa.600000000000000000000000000000ff" \
  config="$MP_TMP/pinned.yaml"

cat >"$MP_TMP/badchap.yaml" <<YAML
paths:
  - uri: $(tgt_uri a)
    chap:
      user: alice
      secret-file: $MP_TMP/no-such-file
YAML
expect_refusal badchap "badchap.yaml:5:[0-9]+: cannot read chap.secret-file .*no-such-file" \
  config="$MP_TMP/badchap.yaml"
