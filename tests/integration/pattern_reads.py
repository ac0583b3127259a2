#!/usr/bin/python3
"""Verified random reads of a disk holding write_pattern's pattern (functions.sh).

Each of --connections threads opens its own NBD connection and reads random
4 KiB blocks until --stop-file exists (or --duration passes), checking each
against the pattern for --seed; then every block of the disk is read once
more and checked. Prints one JSON object:
  reads, errors (client-visible I/O errors), wrong (reads that returned other
  than the pattern), verified (blocks checked in the final pass), blocks,
  max_ms (the longest single read, final pass included).
--progress FILE is rewritten with the number of reads done, every 64.
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
M = 2**64 - 1


def expected(seed, blk):
    mix = ((seed * 0x9E3779B97F4A7C15) ^ (blk * 0xC2B2AE3D27D4EB4F) ^ 0x5555) & M
    return struct.pack("<8sQQQ", b"MPPATTRN", seed, blk, mix) * (BS // 32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--size", type=int, required=True, help="bytes of the disk to read")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--duration", type=float, default=60.0, help="seconds at most")
    p.add_argument("--stop-file", default=None)
    p.add_argument("--progress", default=None)
    a = p.parse_args()
    blocks = a.size // BS
    lock = threading.Lock()
    tot = dict(reads=0, errors=0, wrong=0, verified=0, max_ms=0.0)
    msgs = []

    def read(h, blk, acc):
        t = time.monotonic()
        try:
            buf = h.pread(BS, blk * BS)
            err = None
        except nbd.Error as e:
            buf, err = None, e
        ms = (time.monotonic() - t) * 1000
        acc["max_ms"] = max(acc["max_ms"], ms)
        if err:
            acc["errors"] += 1
            msgs.append(f"read block {blk}: {err}")
            return False
        if buf != expected(a.seed, blk):
            acc["wrong"] += 1
            msgs.append(f"read block {blk}: not the pattern")
            return False
        return True

    def worker(i):
        acc = dict(reads=0, errors=0, wrong=0, verified=0, max_ms=0.0)
        rng = random.Random(i)
        h = nbd.NBD()
        h.connect_uri(a.uri)
        deadline = time.monotonic() + a.duration
        while time.monotonic() < deadline:
            if a.stop_file and os.path.exists(a.stop_file):
                break
            read(h, rng.randrange(blocks), acc)
            acc["reads"] += 1
            if acc["reads"] % 64 == 0 and a.progress:
                with lock:
                    tot["reads"] += 64
                    with open(a.progress + ".tmp", "w") as f:
                        f.write(str(tot["reads"]))
                    os.replace(a.progress + ".tmp", a.progress)
                acc["reads"] -= 64
        for blk in range(i, blocks, a.connections):  # the final pass, shared out
            acc["verified"] += read(h, blk, acc)
        h.shutdown()
        with lock:
            for k in ("reads", "errors", "wrong", "verified"):
                tot[k] += acc[k]
            tot["max_ms"] = max(tot["max_ms"], acc["max_ms"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(a.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tot["blocks"] = blocks
    tot["max_ms"] = round(tot["max_ms"], 1)
    for m in msgs[:20]:
        print(m, file=sys.stderr)
    print(json.dumps(tot))
    return 0 if tot["errors"] == 0 and tot["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
