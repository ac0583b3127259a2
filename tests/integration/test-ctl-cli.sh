#!/usr/bin/env bash
# nbd-multipath-ctl for operators: --version, errors as JSON under --json,
# ASCII output without a UTF-8 locale, per-command help, show config (the
# effective settings, secrets redacted), reload --dry-run listing every
# changed setting, and show topology's multipath -ll-like header.
source "$(dirname "$0")/functions.sh"
mp_init
mp_require nbdkit python3
mp_require_ctl

make_image "$MP_TMP/disk.img" 4M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"
CTL_SOCK=$MP_TMP/ctl.sock
cat >"$MP_TMP/mp.yaml" <<YAML
paths:
  - { name: a, uri: "$(upstream_uri a)", group: fast }
  - { name: b, uri: "$(upstream_uri b)", group: slow }
groups:
  - { name: fast, priority: 10 }
  - { name: slow, priority: 0 }
timeouts: { attempt: 1s }
durability: { shared-cache: true }
control: { socket: "$CTL_SOCK" }
YAML
start_multipath mp config="$MP_TMP/mp.yaml"
ctl() { timeout -k 5 30 "$MP_CTL" -s "$CTL_SOCK" "$@"; }
wait_for "both paths active" 10 ctl_paths_active "$CTL_SOCK" a b

# --version
"$MP_CTL" --version | grep -Eq '^nbd-multipath-ctl [0-9]+\.[0-9]+\.[0-9]+$' || fail "--version"

# --json: errors are one JSON object on stdout, with the exit status.
set +e
out=$(ctl --json fail nosuchpath 2>"$MP_TMP/err.txt")
rc=$?
set -e
assert_eq 1 "$rc" "exit status of a refused request"
[[ ! -s $MP_TMP/err.txt ]] || fail "--json printed on stderr: $(cat "$MP_TMP/err.txt")"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["exit_status"] == 1 and "nosuchpath" in d["error"], d' "$out" ||
  fail "--json error is not a JSON object: $out"
set +e
out=$("$MP_CTL" --json -s "$MP_TMP/none.sock" show paths 2>/dev/null)
rc=$?
set -e
assert_eq 3 "$rc" "exit status with no server"
python3 -c 'import json,sys; assert json.loads(sys.argv[1])["exit_status"] == 3' "$out" ||
  fail "--json unreachable error is not JSON: $out"

# ASCII only under LC_ALL=C; the header of show topology.
LC_ALL=C ctl show topology >"$MP_TMP/topo.txt"
LC_ALL=C ctl show paths >>"$MP_TMP/topo.txt"
if LC_ALL=C grep -nP '[^\x00-\x7f]' "$MP_TMP/topo.txt"; then fail "non-ASCII output under LC_ALL=C"; fi
assert_contains "$MP_TMP/topo.txt" '^disk  .*size=4\.0MiB \(4194304 bytes\)  block=[0-9]+  rw$'
assert_contains "$MP_TMP/topo.txt" '^selector=latency  no-path=queue \(queueing on, 0 waiting\)  failback=immediate$'
assert_contains "$MP_TMP/topo.txt" '^fast  priority 10  serving$'
assert_contains "$MP_TMP/topo.txt" '^slow  priority 0  standby$'
assert_contains "$MP_TMP/topo.txt" '^`-- a  active  nbd\+unix://'

# One usage line in --help; per-command help.
n=$("$MP_CTL" --help | grep -c '^Usage:' || true)
assert_eq 1 "$n" "usage lines in --help"
"$MP_CTL" reload --help | grep -q '^Usage: nbd-multipath-ctl \[OPTIONS\] reload \[--dry-run\]$' ||
  fail "reload --help"
# help COMMAND is COMMAND --help; show --help lists every show command.
"$MP_CTL" help fail | grep -q '^Usage: nbd-multipath-ctl \[OPTIONS\] fail PATH$' || fail "help fail"
"$MP_CTL" show --help >"$MP_TMP/show-help.txt"
for what in paths groups topology stats events config; do
  assert_contains "$MP_TMP/show-help.txt" "^  show $what "
done
"$MP_CTL" help show events | grep -q '^Usage: nbd-multipath-ctl \[OPTIONS\] show events$' ||
  fail "help show events"
st=0
"$MP_CTL" show >"$MP_TMP/show.txt" 2>&1 || st=$?
assert_eq 2 "$st" "exit status of a bare show"
assert_contains "$MP_TMP/show.txt" "show events or show config"

# show config: the effective settings.
ctl show config >"$MP_TMP/config.txt"
assert_contains "$MP_TMP/config.txt" '^timeouts\.attempt: 1s$'
assert_contains "$MP_TMP/config.txt" '^timeouts\.request: 30s$'  # a default
assert_contains "$MP_TMP/config.txt" '^paths\.a\.group: fast$'
assert_contains "$MP_TMP/config.txt" "^source: $MP_TMP/mp.yaml\$"

# reload --dry-run lists a changed timeout (not only paths), and changes nothing.
sed -i 's/attempt: 1s/attempt: 2s/' "$MP_TMP/mp.yaml"
ctl reload --dry-run >"$MP_TMP/dry.txt"
assert_contains "$MP_TMP/dry.txt" '^dry run: add none; remove none; change none; set timeouts\.attempt: 1s -> 2s$'
ctl show config | grep -q '^timeouts\.attempt: 1s$' || fail "a dry run changed the setting"
ctl reload >/dev/null
ctl show config | grep -q '^timeouts\.attempt: 2s$' || fail "reload did not apply the setting"
