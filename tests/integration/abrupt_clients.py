#!/usr/bin/python3
"""Clients that hang up with requests in flight, as a killed qemu would.

Each of --parallel workers runs --rounds rounds. A round forks a child that
connects, queues --reads reads of --read-size bytes and --writes writes of
--write-size bytes (at random offsets in [--offset, --offset + --span)),
waits until the first reply arrived (so the rest are in flight, on the wire
or in the server), and exits without closing the connection: the kernel
resets it under the server's feet. The parent counts the rounds whose child
got that far.

Reports one JSON object on stdout: rounds, completed (children that queued
and saw a reply), failed (children that could not connect or got no reply),
seed. Exit status 1 when any round failed.
"""
import argparse
import json
import os
import random
import sys
import threading
import time

import nbd


def child(a, rng):
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.connect_uri(a.uri)
    wbuf = nbd.Buffer.from_bytearray(bytearray(rng.randbytes(a.write_size)))
    span_r = max(1, (a.span - a.read_size) // 4096)
    span_w = max(1, (a.span - a.write_size) // 4096)
    cmds = []
    for i in range(max(a.reads, a.writes)):
        if i < a.reads:
            off = a.offset + rng.randrange(span_r) * 4096
            cmds.append(h.aio_pread(nbd.Buffer(a.read_size), off))
        if i < a.writes:
            off = a.offset + rng.randrange(span_w) * 4096
            cmds.append(h.aio_pwrite(wbuf, off))
    deadline = time.monotonic() + a.reply_timeout
    while not h.aio_peek_command_completed():
        if time.monotonic() > deadline:
            os._exit(3)
        h.poll(100)
    # Gone, with the rest in flight: no NBD_CMD_DISC, no shutdown.
    os._exit(0)


def worker(a, index, out):
    rng = random.Random(a.seed * 1000 + index)
    done = failed = 0
    for r in range(a.rounds):
        seed = rng.randrange(1 << 31)
        pid = os.fork()
        if pid == 0:
            try:
                child(a, random.Random(seed))
            except BaseException as e:  # noqa: BLE001 - report and die, never return
                print(f"abrupt_clients: worker {index} round {r}: {e}", file=sys.stderr)
                os._exit(2)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) == 0:
            done += 1
        else:
            failed += 1
    out[index] = (done, failed)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("uri")
    p.add_argument("--rounds", type=int, default=50, help="rounds per worker")
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--reads", type=int, default=32)
    p.add_argument("--read-size", type=int, default=1 << 20)
    p.add_argument("--writes", type=int, default=16)
    p.add_argument("--write-size", type=int, default=64 << 10)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--span", type=int, default=16 << 20)
    p.add_argument("--reply-timeout", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    print(f"abrupt_clients: seed {a.seed}", file=sys.stderr)
    out = {}
    ts = [threading.Thread(target=worker, args=(a, i, out)) for i in range(a.parallel)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    done = sum(d for d, _ in out.values())
    failed = sum(f for _, f in out.values())
    print(json.dumps(dict(rounds=a.rounds * a.parallel, completed=done, failed=failed,
                          seed=a.seed)))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
