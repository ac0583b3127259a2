#!/usr/bin/python3
"""Integrity workload for an NBD disk: checksummed blocks, flushes, checks.

Each of --connections threads opens its own NBD connection and owns the
blocks b with b % connections == thread index, so every thread knows the
newest acknowledged content of its blocks. A thread loops: write a block
(stamped with block number, generation and a checksum), read a block of its
own and compare with the newest acknowledged write, flush now and then.
At the end every owned block is read back and checked.

Reports one JSON object on stdout:
  ops, writes, reads, flushes, errors (client-visible I/O errors),
  wrong (reads that returned other than the newest acknowledged data),
  verified (blocks checked at the end), max_stall_ms (longest single
  request), seed.
A progress file (--progress) holds the number of completed operations, so a
test can poll for "the workload is running" instead of sleeping.
"""
import argparse
import hashlib
import json
import os
import random
import struct
import sys
import threading
import time

import nbd

BS = 4096


def block_data(block, gen, seed):
    head = struct.pack("<8sQQQ", b"MPWORKLD", seed, block, gen)
    body = (head * (BS // len(head) + 1))[: BS - 16]
    return body + hashlib.md5(body).digest()


def check(buf, block, gen, seed):
    if gen == 0:
        return True  # never written by us: any content
    return buf == block_data(block, gen, seed)


class Worker(threading.Thread):
    def __init__(self, args, index, stats, lock):
        super().__init__(daemon=True)
        self.a, self.i, self.stats, self.lock = args, index, stats, lock
        self.rng = random.Random(args.seed * 1000 + index)
        nblocks = args.size // BS
        self.blocks = list(range(index, nblocks, args.connections))
        self.gen = {b: 0 for b in self.blocks}
        self.local = dict(ops=0, writes=0, reads=0, flushes=0, errors=0, wrong=0,
                          verified=0, max_stall_ms=0.0)
        self.msgs = []

    def timed(self, fn, *a):
        t = time.monotonic()
        try:
            return fn(*a), None
        except nbd.Error as e:
            return None, e
        finally:
            ms = (time.monotonic() - t) * 1000
            if ms > self.local["max_stall_ms"]:
                self.local["max_stall_ms"] = ms

    def run(self):
        h = nbd.NBD()
        h.connect_uri(self.a.uri)
        deadline = time.monotonic() + self.a.duration
        n = 0
        while time.monotonic() < deadline and (self.a.ops == 0 or n < self.a.ops):
            if self.a.stop_file and os.path.exists(self.a.stop_file):
                break
            n += 1
            b = self.rng.choice(self.blocks)
            r = self.rng.random()
            if r < self.a.write_ratio:
                g = self.gen[b] + 1
                _, err = self.timed(h.pwrite, block_data(b, g, self.a.seed), b * BS)
                self.local["writes"] += 1
                if err:
                    self.local["errors"] += 1
                    self.msgs.append(f"write block {b}: {err}")
                else:
                    self.gen[b] = g
            else:
                buf, err = self.timed(h.pread, BS, b * BS)
                self.local["reads"] += 1
                if err:
                    self.local["errors"] += 1
                    self.msgs.append(f"read block {b}: {err}")
                elif not check(buf, b, self.gen[b], self.a.seed):
                    self.local["wrong"] += 1
                    self.msgs.append(f"read block {b}: not generation {self.gen[b]}")
            if self.a.flush_every and n % self.a.flush_every == 0:
                _, err = self.timed(h.flush)
                self.local["flushes"] += 1
                if err:
                    self.local["errors"] += 1
                    self.msgs.append(f"flush: {err}")
            self.local["ops"] += 1
            if n % 64 == 0:
                with self.lock:
                    self.stats["progress"] += 64
        # Final check of every block this thread owns.
        for b in self.blocks:
            buf, err = self.timed(h.pread, BS, b * BS)
            if err:
                self.local["errors"] += 1
                self.msgs.append(f"final read block {b}: {err}")
            elif not check(buf, b, self.gen[b], self.a.seed):
                self.local["wrong"] += 1
                self.msgs.append(f"final read block {b}: not generation {self.gen[b]}")
            else:
                self.local["verified"] += 1
        try:
            h.flush()
            h.shutdown()
        except nbd.Error as e:
            self.local["errors"] += 1
            self.msgs.append(f"final flush: {e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("uri")
    p.add_argument("--size", type=int, default=16 << 20, help="bytes of the disk to use")
    p.add_argument("--duration", type=float, default=5.0, help="seconds")
    p.add_argument("--ops", type=int, default=0, help="operations per connection (0: no limit)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--write-ratio", type=float, default=0.5)
    p.add_argument("--flush-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--progress", default=None, help="file updated with completed ops")
    p.add_argument("--stop-file", default=None,
                   help="stop (and verify) once this file exists")
    a = p.parse_args()
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    print(f"mp_workload: seed {a.seed}", file=sys.stderr)
    stats, lock = {"progress": 0}, threading.Lock()
    workers = [Worker(a, i, stats, lock) for i in range(a.connections)]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(0.1)
        if a.progress:
            with open(a.progress + ".tmp", "w") as f:
                f.write(str(stats["progress"]))
            os.replace(a.progress + ".tmp", a.progress)
    out = dict(seed=a.seed)
    for k in ("ops", "writes", "reads", "flushes", "errors", "wrong", "verified"):
        out[k] = sum(w.local[k] for w in workers)
    out["max_stall_ms"] = round(max(w.local["max_stall_ms"] for w in workers), 1)
    for w in workers:
        for m in w.msgs[:5]:
            print(f"mp_workload: connection {w.i}: {m}", file=sys.stderr)
    print(json.dumps(out))
    return 0 if out["errors"] == 0 and out["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
