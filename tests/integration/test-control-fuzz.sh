#!/usr/bin/env bash
# The control socket under a seeded fuzzer while a verified workload runs on a
# two-path disk: thousands of random and mutated lines over several
# connections at once, some sessions answered line by line, some half-closed,
# some ending in a line without newline, some closed abruptly (with a reset)
# or never read. Afterwards the disk must be up, `show paths` must answer, both
# paths must be active, and the workload must have seen no error and no wrong
# block. MP_FUZZ_SEED=N reproduces a run (the seed is printed).
source "$(dirname "$0")/functions.sh"
source "$(dirname "$0")/workload.sh"
mp_init
mp_require nbdkit
_mp_require_python

mp_require_ctl

SEED=${MP_FUZZ_SEED:-$((RANDOM * 32768 + RANDOM))}
mp_log "fuzz seed $SEED (MP_FUZZ_SEED=$SEED reproduces this run)"

make_image "$MP_TMP/disk.img" 16M
start_upstream a file "$MP_TMP/disk.img"
start_upstream b file "$MP_TMP/disk.img"

# Path names the fuzzer never produces (it cannot shorten a name to them),
# and one group: no request it can form takes I/O away from the disk.
CTL_SOCK=$MP_TMP/ctl.sock
cat >"$MP_TMP/mp.yaml" <<YAML
paths:
  - { name: alpha, uri: "$(upstream_uri a)", group: g }
  - { name: bravo, uri: "$(upstream_uri b)", group: g }
groups:
  - { name: g, priority: 0 }
timeouts: { attempt: 1s, connect: 1s }
checker: { interval: 200ms }
durability: { shared-cache: true }
control: { socket: "$CTL_SOCK" }
# The fuzzer loads the machine: a path the latency selector seldom picks can
# look 5x slower than its peer (seen under asan) and go marginal. That is the
# engine measuring load, not a control line taking a path away, which is what
# this test looks for (test-slow-path covers outlier detection).
outlier: { enabled: false }
YAML
start_multipath mp config="$MP_TMP/mp.yaml"

ctl() { timeout -k 5 30 "$MP_CTL" -s "$CTL_SOCK" --timeout 10 "$@"; }
both_active() { ctl_paths_active "$CTL_SOCK" alpha bravo; }
wait_for "both paths to be active" 20 both_active

start_workload w "$(mp_uri mp)" --duration 12 --connections 2 --seed "$SEED"
wait_for "the workload to get going" 20 workload_progress_over w 200

timeout 60 "$MP_PYTHON" - "$CTL_SOCK" "$SEED" <<'PY' || fail "the fuzzer failed (seed $SEED)"
import json, random, socket, struct, sys, threading, time

path, seed = sys.argv[1], int(sys.argv[2])
SESSIONS, THREADS, BUDGET_S = 100000, 6, 10  # sessions: until the budget runs out

COMMANDS = [("show paths", []), ("show groups", []), ("show topology", []), ("show stats", []),
            ("show events", []), ("help", []), ("fail", ["no-such-path"]),
            ("reinstate", ["no-such-path"]), ("drain", ["zz-zz"]), ("switch-group", ["g"]),
            ("switch-group", ["no-group"]), ("queueing", ["on"]), ("reload", ["--dry-run"]),
            ("reset-stats", [])]
TOKENS = [b"1e999", b"-1e999", b"123456789012345678901234567890", b"-0", b"1e-999", b"NaN",
          b"true", b"null", b'"', b"\\", b"\\u0000", b"\\ud800", b"\xff", b"\xc3", b"\xc3\x28",
          b"\xed\xa0\x80", b"\r", b"\t", b"\x00", b"\x7f", b"{}", b"[]", b",", b":", b"}", b"]",
          b',"command":"show stats"', b',"args":["zz-zz"]', b',"args":{"x":1}', b'"command":"help",']

def valid(rng):
    name, args = rng.choice(COMMANDS)
    req = {"command": name}
    if args or rng.random() < 0.2:
        req["args"] = args
    return json.dumps(req).encode()

def token(rng):
    t = rng.choice(TOKENS)
    r = rng.random()
    if r < 0.15:
        return b"[" * rng.randint(1, 3000) + t
    if r < 0.25:
        return bytes([rng.randrange(256)])
    return t

def mutate(rng, line):
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(line))
        k = rng.randrange(8)
        if k == 0 and line:
            i = rng.randrange(len(line))
            line = line[:i] + bytes([line[i] ^ rng.randint(1, 255)]) + line[i + 1:]
        elif k == 1:
            line = line[:at]
        elif k in (2, 3):
            line = line[:at] + token(rng) + line[at:]
        elif k == 4:
            o = valid(rng)
            f = rng.randrange(len(o))
            line = line[:at] + o[f:f + rng.randint(0, len(o) - f)] + line[at:]
        elif k == 5:
            d = rng.randint(1, 12 if rng.random() < 0.5 else 3000)
            line = b"[" * d + line + b"]" * rng.randint(0, d)
        elif k == 6:
            c = line.rfind(b"}")
            if c > 0:
                line = line[:c] + rng.choice([b',"command":"help"', b',"args":["zz-zz"]']) + line[c:]
        else:
            line = line[:at] + bytes([rng.randrange(256)]) * rng.randint(1, 300) + line[at:]
    return line

def fuzz_line(rng):
    r = rng.random()
    if r < 0.1:
        line = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    elif r < 0.2:
        line = valid(rng)
    else:
        line = mutate(rng, valid(rng))
    return line.replace(b"\n", b" ")  # exactly one request each

def check_response(raw, where):
    r = json.loads(raw)  # raises on anything but JSON
    assert isinstance(r, dict) and isinstance(r.get("ok"), bool), f"{where}: {raw[:200]!r}"
    if not r["ok"]:
        assert isinstance(r.get("error"), str) and r["error"] and "\n" not in r["error"], \
            f"{where}: {raw[:200]!r}"
        assert "internal error" not in r["error"], f"{where}: {r['error']}"
    return r["ok"]

def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(path)
    return s

def read_lines(s, want, where):
    buf, got = b"", []
    while len(got) < want:
        d = s.recv(65536)
        if not d:
            raise AssertionError(f"{where}: EOF after {len(got)} of {want} responses")
        buf += d
        *lines, buf = buf.split(b"\n")
        got += lines
    return got, buf

stats = dict(lines=0, answered=0, refused=0, sessions=0, kinds={})
lock = threading.Lock()
errors = []

def session(rng, n):
    kind = rng.choice(["lockstep", "pipelined", "half-close", "unterminated", "reset",
                       "never-read"])
    lines = [fuzz_line(rng) for _ in range(rng.randint(1, 80))]
    where = f"session {n} ({kind}, seed {seed})"
    s = connect()
    ok = refused = 0
    try:
        if kind == "lockstep":  # one line, one answer, sent in random pieces
            for l in lines:
                data = l + rng.choice([b"\n", b"\r\n"])
                while data:
                    k = rng.randint(1, len(data))
                    s.sendall(data[:k])
                    data = data[k:]
                (r,), rest = read_lines(s, 1, where)
                assert rest == b"", where
                if check_response(r, where): ok += 1
                else: refused += 1
        elif kind in ("pipelined", "half-close"):
            s.sendall(b"\n".join(lines) + (b"\n" if kind == "pipelined" else b""))
            if kind == "half-close":  # the last line needs no newline
                s.shutdown(socket.SHUT_WR)
            # After a half-close an empty last line is no line at all.
            want = len(lines) - (kind == "half-close" and lines[-1] == b"")
            got, rest = read_lines(s, want, where)
            for r in got:
                if check_response(r, where): ok += 1
                else: refused += 1
            if kind == "half-close":
                assert rest == b"" and s.recv(1) == b"", f"{where}: no EOF after the answers"
        elif kind == "unterminated":  # a line that never ends, then gone
            s.sendall(b"\n".join(lines))
        elif kind == "reset":  # abrupt close: RST, with requests in flight
            s.sendall(b"\n".join(lines) + b"\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif kind == "never-read":  # requests, no reading, gone
            s.sendall((b"\n".join(lines) + b"\n") * 5)
    finally:
        s.close()
    with lock:
        stats["sessions"] += 1
        stats["lines"] += len(lines)
        stats["answered"] += ok
        stats["refused"] += refused
        stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1

def worker(i):
    rng = random.Random(seed * 100 + i)
    deadline = time.monotonic() + BUDGET_S
    n = i
    try:
        while n < SESSIONS and time.monotonic() < deadline:
            session(rng, n)
            n += THREADS
    except Exception as e:
        errors.append(f"thread {i}: {e!r}")

threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
t0 = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
stats["seconds"] = round(time.monotonic() - t0, 1)
print(json.dumps(stats))
if errors:
    sys.exit("FAILED: " + "; ".join(errors[:5]))
if stats["lines"] < 5000:
    sys.exit(f"FAILED: only {stats['lines']} lines sent")
PY

server_running mp || fail "the disk died under the fuzzer (seed $SEED)"
both_active || fail "a path is not active after the fuzzer: $(ctl show paths)"
ctl --json show events | "$MP_PYTHON" -c 'import json, sys
sys.exit(any(e["subject"].startswith("path") and e["what"].endswith(("-> failed", "-> draining"))
             for e in json.load(sys.stdin)))' || fail "a path left service during the fuzzer: $(ctl show events)"
wait_workload w
assert_workload_clean w
assert_not_contains "$(server_log mp)" 'internal error'
mp_log "after the fuzzer: disk up, both paths active, workload $(<"$MP_TMP/w.json")"
