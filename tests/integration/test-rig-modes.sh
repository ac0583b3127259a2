#!/usr/bin/env bash
# Every `rig fail` mode is real: a client of the RAW upstream (its own
# address in its namespace, not through multipath) sees the hang, the reset,
# the refusal, the EIO, the latency or the cap, and `rig heal` brings the
# service back. Timing checks are one-sided and generous.
source "$(dirname "$0")/functions.sh"
mp_init
_mp_require_python
RIG=$MP_SOURCE/container/rig
why=$("$RIG" check 2>&1) || mp_skip "the rig cannot run here: $why"
# The multipath plugin takes no part: a sanitizer build adds nothing here.
[[ -z ${MP_SANITIZE:-} ]] || mp_skip "no plugin code runs in this test (MP_SANITIZE=$MP_SANITIZE)"

export RIG_NAME=modes-$$
mp_on_cleanup "$RIG" down
"$RIG" up --paths 1 --no-multipath --size 16M >"$MP_TMP/up.log" 2>&1 || {
  cat "$MP_TMP/up.log" >&2
  fail "rig up failed"
}
eval "$("$RIG" env)"
URI=$RIG_P1_URI
mp_log "raw upstream: $URI (namespace $RIG_P1_NS)"

# probe.py URI OP [COUNT] [--held 'rig args']: one NBD client doing COUNT
# requests: OP is read or write (4 KiB), readmb or writemb (1 MiB). With --held it
# connects first, runs `rig ARGS` (the fault), prints "held", then does OP
# on that connection; else it connects after nothing. Prints
# "ok MS" or "err MS ERRNO-NAME" for the whole operation.
cat >"$MP_TMP/probe.py" <<'EOF'
import errno, subprocess, sys, time
import nbd
uri, op = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
held = sys.argv[5] if len(sys.argv) > 5 and sys.argv[4] == "--held" else None
h = nbd.NBD()
if held:
    h.connect_uri(uri)
    subprocess.run(held, shell=True, check=True)
    print("held", flush=True)
t = time.monotonic()
try:
    if not held:
        h.connect_uri(uri)
    size = 1 << 20 if op.endswith("mb") else 4096
    for i in range(count):
        if op.startswith("read"):
            h.pread(size, (i * size) % (8 << 20))
        else:
            h.pwrite(b"\xa5" * size, (i * size) % (8 << 20))
    print(f"ok {(time.monotonic() - t) * 1000:.0f}")
except nbd.Error as e:
    name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else e.string
    print(f"err {(time.monotonic() - t) * 1000:.0f} {name}")
EOF

# probe SECONDS OP [COUNT] [--held 'ARGS']: the probe's output on one line
# ("held err 3 ECONNRESET"), or "hang" when it had not finished after
# SECONDS ("hang after held" when the fault was in place).
probe() {
  local secs=$1 out st=0
  shift
  out=$(timeout -k 2 "$secs" "$MP_PYTHON" "$MP_TMP/probe.py" "$URI" "$@" 2>"$MP_TMP/probe.err") || st=$?
  if ((st == 124 || st == 137)); then
    echo "hang${out:+ after $out}"
  elif ((st != 0)); then
    echo "probe failed ($st): $(tail -n 1 "$MP_TMP/probe.err")"
  else
    tr '\n' ' ' <<<"$out" | sed 's/ *$//'
  fi
}

# expect WHAT ERE ACTUAL
expect() {
  [[ $3 =~ $2 ]] || fail "$1: expected /$2/, got '$3'"
  mp_log "$1: $3"
}

held() { printf '%q --name %q fail p1 %s' "$RIG" "$RIG_NAME" "$*"; }

# ms of an "ok MS" / "err MS X" line.
ms_of() { read -r _ ms _ <<<"$1" && echo "$ms"; }

heal_and_check() {
  "$RIG" heal p1 2>>"$MP_TMP/rig.log"
  expect "after heal ($1)" '^ok [0-9]+$' "$(probe 10 read)"
}

expect "healthy" '^ok [0-9]+$' "$(probe 10 read)"

# kill: the process is gone; a connection open at the time and a new one
# both fail at once.
r=$(probe 10 read 1 --held "$(held kill)")
expect "kill, open connection" '^held err [0-9]+ ' "$r"
r=$(probe 10 read)
expect "kill, new connection" '^err [0-9]+ ECONNREFUSED$' "$r"
(($(ms_of "$r") < 2000)) || fail "kill: the refusal took $(ms_of "$r") ms"
heal_and_check kill

# stop: SIGSTOP; requests on an open connection and new handshakes hang.
expect "stop, open connection" '^hang after held$' "$(probe 2 read 1 --held "$(held stop)")"
expect "stop, new connection" '^hang$' "$(probe 2 read)"
heal_and_check stop

# blackhole: every packet dropped; both hang.
expect "blackhole, open connection" '^hang after held$' "$(probe 2 read 1 --held "$(held blackhole)")"
expect "blackhole, new connection" '^hang$' "$(probe 2 read)"
heal_and_check blackhole

# reset: the open connection is reset, new ones are reset at SYN.
r=$(probe 10 read 1 --held "$(held reset)")
expect "reset, open connection" '^held err [0-9]+ E(CONNRESET|NOTCONN|PIPE)$' "$r"
r=$(probe 10 read)
expect "reset, new connection" '^err [0-9]+ ECONNREFUSED$' "$r"
(($(ms_of "$r") < 2000)) || fail "reset: took $(ms_of "$r") ms"
heal_and_check reset

# refuse: new connections are refused; an open one keeps working.
r=$(probe 10 read 1 --held "$(held refuse)")
expect "refuse, open connection" '^held ok [0-9]+$' "$r"
expect "refuse, new connection" '^err [0-9]+ ECONNREFUSED$' "$(probe 10 read)"
heal_and_check refuse

# errors: the server answers every request with EIO.
"$RIG" fail p1 errors 2>>"$MP_TMP/rig.log"
expect "errors, read" '^err [0-9]+ EIO$' "$(probe 10 read)"
expect "errors, write" '^err [0-9]+ EIO$' "$(probe 10 write)"
heal_and_check errors

# slow 300: each request takes at least 300 ms more (one-sided).
"$RIG" fail p1 slow 300 2>>"$MP_TMP/rig.log"
r=$(probe 10 read 3)
expect "slow 300, 3 reads" '^ok [0-9]+$' "$r"
(($(ms_of "$r") >= 900)) || fail "slow 300: 3 reads took $(ms_of "$r") ms, expected >= 900"
heal_and_check slow
r=$(probe 10 read 3)
(($(ms_of "$r") < 900)) || fail "after heal, 3 reads still took $(ms_of "$r") ms"

# bandwidth 8mbit (1 MB/s): 2 MiB each way take about 2 s; assert the rate
# is at most twice the cap. (Healthy, the same takes a few ms.)
"$RIG" fail p1 bandwidth 8mbit 2>>"$MP_TMP/rig.log"
for op in readmb writemb; do
  r=$(probe 30 "$op" 2)
  expect "bandwidth 8mbit, 2 MiB $op" '^ok [0-9]+$' "$r"
  ms=$(ms_of "$r")
  # 2 MiB at 2 MB/s would take 1049 ms.
  ((ms >= 1049)) || fail "bandwidth 8mbit: 2 MiB $op in $ms ms is over twice the cap"
done
heal_and_check bandwidth

# loss 100: nothing gets through. loss 25: packets are dropped (the nft
# counters in the upstream's namespace say so) while TCP retransmits: the
# reads end slowly or not within the probe's limit, but never in an error.
"$RIG" fail p1 loss 100 2>>"$MP_TMP/rig.log"
expect "loss 100" '^hang$' "$(probe 2 read)"
"$RIG" heal p1 2>>"$MP_TMP/rig.log"
"$RIG" fail p1 loss 25 2>>"$MP_TMP/rig.log"
r=$(probe 8 read 5)
dropped=$(ip netns exec "$RIG_P1_NS" nft list table inet rig | awk '/counter packets/ { for (i = 1; i < NF; i++) if ($i == "packets") n += $(i + 1) } END { print n + 0 }')
mp_log "loss 25: 5 reads: $r; $dropped packets dropped"
((dropped > 0)) || fail "loss 25: no packet was dropped"
[[ $r =~ ^(ok [0-9]+|hang)$ ]] || fail "loss 25: expected success or a hang, got '$r'"
heal_and_check loss

# flap 400ms reset: the upstream alternates between refusing and serving,
# until heal stops the flapper.
"$RIG" fail p1 flap 400ms reset 2>>"$MP_TMP/rig.log"
seen_ok="" seen_err=""
flap_seen_both() {
  case $(probe 5 read) in
    ok*) seen_ok=1 ;;
    err*) seen_err=1 ;;
  esac
  [[ -n $seen_ok && -n $seen_err ]]
}
deadline=$((SECONDS + 10))
until flap_seen_both; do
  ((SECONDS < deadline)) || fail "flap: in 10 s saw ok=${seen_ok:-no} err=${seen_err:-no}"
  sleep 0.05
done
mp_log "flap: saw both service and refusal"
flapper=$(awk '{ print $1 }' "$RIG_DIR/p1/flap.proc")
heal_and_check flap
[[ $(_mp_state "$flapper") == @(gone|Z) ]] || fail "flap: the flapper (pid $flapper) survived heal"
for i in 1 2 3 4 5; do
  expect "after flap heal, probe $i" '^ok [0-9]+$' "$(probe 5 read)"
done
