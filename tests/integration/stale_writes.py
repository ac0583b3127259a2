#!/usr/bin/python3
"""Drives the stale-write scenario against a multipath disk.

Path A (the serving group) runs nbdkit's pause filter. Each round, with
--connections writers at once, each on its own range:
  1. pause A;
  2. write W1 to the range: it sits in A, times out and is retried on B;
  3. write W2 (newer) to the same range via B: acknowledged;
  4. resume A (its server applies the old W1 late), or kill it (-9);
  5. wait until things settle, then check.
A reader thread per writer keeps reading the range after W2 was
acknowledged: it must never see W1 again. At the end of a round the range
must hold W2, read through the disk and read straight from the image file.

Exit status: 0 all good; 3 stale data was seen (the failure this guards
against); 1 anything else (client errors, timeouts).
"""
import argparse
import os
import random
import signal
import socket
import sys
import threading
import time

import nbd

BS = 4096


def pause_cmd(ctl, c):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(ctl)
    s.sendall(c.encode())
    ack = s.recv(1)
    s.close()
    if ack != c.upper().encode():
        raise RuntimeError(f"pause control answered {ack!r} to {c!r}")


def data(tag, rnd, conn, nblocks):
    stamp = f"{tag} round {rnd} conn {conn} ".encode()
    return (stamp * (BS * nblocks // len(stamp) + 1))[: BS * nblocks]


def count(log, pattern):
    try:
        with open(log, errors="replace") as f:
            return f.read().count(pattern)
    except FileNotFoundError:
        return 0


def wait_until(what, cond, timeout):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("uri")
    p.add_argument("--image", required=True)
    p.add_argument("--pause-control", required=True)
    p.add_argument("--log", required=True, help="the multipath server's log (verbose)")
    p.add_argument("--mode", choices=["resume", "kill"], default="resume")
    p.add_argument("--pid-file", help="path A's pid file (kill mode)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--blocks", type=int, default=16, help="blocks per range")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--settle", type=float, default=10.0, help="seconds to wait for the image")
    p.add_argument("--resume-after", type=float, default=None,
                   help="resume A this many seconds after pausing it, while W2 may still wait")
    a = p.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"stale_writes: seed {seed}", file=sys.stderr)
    rng = random.Random(seed)
    stale = False
    handles = []
    for _ in range(a.connections):
        h = nbd.NBD()
        h.connect_uri(a.uri)
        handles.append(h)
    span = a.blocks * BS

    for rnd in range(a.rounds):
        # A serves (failback immediate) before each round.
        reinstated = count(a.log, "-> active")
        slots = handles[0].get_size() // span
        if slots < a.connections:
            raise SystemExit("stale_writes: the disk is too small for these ranges")
        offsets = [s * span for s in rng.sample(range(slots), a.connections)]
        w1 = [data("W1", rnd, i, a.blocks) for i in range(a.connections)]
        w2 = [data("W2", rnd, i, a.blocks) for i in range(a.connections)]
        failures_before = count(a.log, "active -> failed")
        pause_cmd(a.pause_control, "p")
        resumer = None
        if a.resume_after is not None:
            resumer = threading.Timer(a.resume_after, pause_cmd, (a.pause_control, "r"))
            resumer.start()
        errors, seen_old = [], []
        acked_w2 = [threading.Event() for _ in range(a.connections)]
        stop = threading.Event()

        def writer(i):
            try:
                time.sleep(rng.random() * 0.05)
                handles[i].pwrite(w1[i], offsets[i])  # stuck on A, retried on B
                handles[i].pwrite(w2[i], offsets[i])
                acked_w2[i].set()
            except nbd.Error as e:
                errors.append(f"conn {i}: {e}")

        def reader(i):
            h = nbd.NBD()
            h.connect_uri(a.uri)
            acked_w2[i].wait()
            while not stop.is_set():
                try:
                    got = h.pread(span, offsets[i])
                except nbd.Error as e:
                    errors.append(f"reader {i}: {e}")
                    return
                if got != w2[i]:
                    seen_old.append(f"round {rnd} conn {i}: a read returned "
                                    + ("W1" if got == w1[i] else "other data")
                                    + " after W2 was acknowledged")
                    return
            h.shutdown()

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(a.connections)]
        threads += [threading.Thread(target=reader, args=(i,), daemon=True)
                    for i in range(a.connections)]
        for t in threads:
            t.start()
        for t in threads[: a.connections]:
            t.join()
        if count(a.log, "active -> failed") == failures_before:
            errors.append("path A was never failed: W1 did not go to the paused path")
        time.sleep(rng.random() * 0.2)  # randomized: how long A stays hung after W2
        if resumer:
            resumer.join()
        elif a.mode == "resume":
            pause_cmd(a.pause_control, "r")
        else:
            with open(a.pid_file) as f:
                os.kill(int(f.read()), signal.SIGKILL)
        # Settled: the image holds W2 everywhere (give a late W1 and our
        # re-apply time to land; in the unsafe variant W1 stays).
        def image_has_w2():
            with open(a.image, "rb") as f:
                return all(os.pread(f.fileno(), span, o) == w for o, w in zip(offsets, w2))
        try:
            if a.mode == "resume":
                wait_until("path A to be reinstated", lambda: count(a.log, "-> active") > reinstated,
                           a.settle)
            wait_until("the image to hold W2", image_has_w2, a.settle)
        except TimeoutError as e:
            print(f"stale_writes: round {rnd}: {e}", file=sys.stderr)
        stop.set()
        for t in threads[a.connections:]:
            t.join(5)
        for i, h in enumerate(handles):
            got = h.pread(span, offsets[i])
            if got != w2[i]:
                seen_old.append(f"round {rnd} conn {i}: the disk holds "
                                + ("W1" if got == w1[i] else "other data") + ", not W2")
        if not image_has_w2():
            seen_old.append(f"round {rnd}: the image file does not hold W2")
        for m in errors:
            print(f"stale_writes: error: {m}", file=sys.stderr)
        for m in seen_old:
            print(f"stale_writes: STALE: {m}", file=sys.stderr)
        if errors:
            return 1
        if seen_old:
            stale = True
            break
        print(f"stale_writes: round {rnd} ok", file=sys.stderr)
        if a.mode == "kill":
            break
    return 3 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
