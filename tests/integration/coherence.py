#!/usr/bin/python3
"""Coherence over upstreams that each keep their own write-back cache.

Three modes, each seeded (the seed is printed; --seed repeats a run):

ryw     Read-your-writes. --rounds times: write one 4 KiB block (of --blocks)
        on a random connection, then read it back --reads times, each on a
        random connection (often another one than the writer's). Every read
        must return the block just acknowledged. Prints "wrong reads: W of R".

crash   Rewrites across paths, then a crash. --connections threads write
        random blocks (each write stamped with block and generation; writes to
        one block never overlap in time, so its generations are ordered) and
        flush now and then, for --seconds. Each completed flush covers every
        write acknowledged before it was sent. The expectation (per block, the
        newest generation a completed flush covers) goes to --expect. The
        caller then kills every upstream and the disk with -9.

check   Reads the image file straight (after the kill) and compares it with
        --expect: every block must hold at least that generation.

Exit status: 0 all good; 3 the failure this guards against was seen (wrong
reads, or a block older than a completed flush covers); 1 anything else.
"""
import argparse
import json
import os
import random
import struct
import sys
import threading
import time

import nbd

BS = 4096
MAGIC = b"MPCOHERE"


def block_data(block, gen):
    head = struct.pack("<8sQQ", MAGIC, block, gen)
    return (head * (BS // len(head) + 1))[:BS]


def block_gen(buf, block):
    """The generation a block holds: 0 for never written, None for garbage."""
    if buf == bytes(BS):
        return 0
    magic, b, gen = struct.unpack_from("<8sQQ", buf)
    if magic != MAGIC or b != block or buf != block_data(block, gen):
        return None
    return gen


def connect(uri, n):
    hs = []
    for _ in range(n):
        h = nbd.NBD()
        h.connect_uri(uri)
        hs.append(h)
    return hs


def ryw(a, rng):
    hs = connect(a.uri, a.connections)
    gen = 0
    wrong = reads = 0
    for rnd in range(a.rounds):
        b = rng.randrange(a.blocks)
        gen += 1
        w = rng.randrange(len(hs))
        hs[w].pwrite(block_data(b, gen), b * BS)
        for _ in range(a.reads):
            r = rng.randrange(len(hs))
            got = hs[r].pread(BS, b * BS)
            reads += 1
            if got != block_data(b, gen):
                wrong += 1
                if wrong <= 5:
                    print(f"coherence: round {rnd}: block {b} written on connection {w}, read on "
                          f"{r}: generation {block_gen(got, b)} instead of {gen}", file=sys.stderr)
    for h in hs:
        h.shutdown()
    print(f"coherence: wrong reads: {wrong} of {reads}", file=sys.stderr)
    return 3 if wrong else 0


def crash(a, rng):
    hs = connect(a.uri, a.connections)
    lock = threading.Lock()
    busy = set()          # blocks being written now
    next_gen = [0] * a.blocks
    acked = [0] * a.blocks     # newest acknowledged generation
    covered = [0] * a.blocks   # newest generation a completed flush covers
    counts = {"writes": 0, "flushes": 0}
    errors = []
    stop = time.monotonic() + a.seconds
    seeds = [rng.randrange(1 << 31) for _ in hs]

    def worker(i):
        r = random.Random(seeds[i])
        h = hs[i]
        try:
            while time.monotonic() < stop:
                if r.random() < a.flush_ratio:
                    with lock:
                        snap = list(acked)
                    h.flush()
                    with lock:
                        counts["flushes"] += 1
                        for b in range(a.blocks):
                            covered[b] = max(covered[b], snap[b])
                    continue
                with lock:
                    b = r.randrange(a.blocks)
                    if b in busy:
                        continue
                    busy.add(b)
                    next_gen[b] += 1
                    g = next_gen[b]
                try:
                    h.pwrite(block_data(b, g), b * BS)
                finally:
                    with lock:
                        busy.discard(b)
                        acked[b] = max(acked[b], g)
                        counts["writes"] += 1
        except nbd.Error as e:
            errors.append(f"connection {i}: {e}")

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(len(hs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if not errors:
        # One last flush: every block's newest write is covered, and with it
        # every rewrite left dirty in two caches at once.
        with lock:
            snap = list(acked)
        try:
            hs[0].flush()
            counts["flushes"] += 1
            covered[:] = [max(c, s) for c, s in zip(covered, snap)]
        except nbd.Error as e:
            errors.append(f"the last flush: {e}")
    with open(a.expect, "w") as f:
        json.dump({"covered": covered, "acked": acked}, f)
    print(f"coherence: {counts['writes']} writes, {counts['flushes']} flushes over "
          f"{a.blocks} blocks; {sum(1 for c in covered if c)} blocks covered by a flush",
          file=sys.stderr)
    for e in errors:
        print(f"coherence: error: {e}", file=sys.stderr)
    # No shutdown: the connections stay up until the caller's kill -9.
    return 1 if errors else 0


def check(a):
    with open(a.expect) as f:
        exp = json.load(f)
    older = garbage = 0
    with open(a.image, "rb") as f:
        for b, want in enumerate(exp["covered"]):
            g = block_gen(os.pread(f.fileno(), BS, b * BS), b)
            if g is None:
                garbage += 1
            elif g < want:
                older += 1
                if older <= 5:
                    print(f"coherence: block {b} holds generation {g}, but generation {want} "
                          f"was acknowledged before a completed flush", file=sys.stderr)
    print(f"coherence: {older} blocks older than a completed flush covers, {garbage} garbled, "
          f"of {len(exp['covered'])}", file=sys.stderr)
    if garbage:
        return 1
    return 3 if older else 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["ryw", "crash", "check"])
    p.add_argument("uri", nargs="?")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--blocks", type=int, default=64)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--reads", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--flush-ratio", type=float, default=0.1)
    p.add_argument("--expect")
    p.add_argument("--image")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    if a.mode == "check":
        return check(a)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"coherence: {a.mode}: seed {seed}", file=sys.stderr)
    rng = random.Random(seed)
    return ryw(a, rng) if a.mode == "ryw" else crash(a, rng)


if __name__ == "__main__":
    sys.exit(main())
