#!/usr/bin/python3
"""Sends every NBD command with every flag, advertised or not, and odd
geometry, through libnbd with strict mode off; reports what came back.

A request may succeed or fail (the server decides), and the server may even
hang up on a request the protocol forbids: then the tool reconnects and goes
on. What must never happen is that the server goes away for good. The first
128 KiB are written with a pattern first and must still hold it at the end
(no request here writes there).

Reports one JSON object on stdout: requests, ok, errors (per errno name),
reconnects, pattern_ok.
"""
import errno
import json
import sys

import nbd

KNOWN = [nbd.CMD_FLAG_FUA, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_DF, nbd.CMD_FLAG_REQ_ONE,
         nbd.CMD_FLAG_FAST_ZERO]
PROTECTED = 128 << 10


def flag_sets():
    # Every combination of the known flags and the next bit (payload length
    # in newer protocol versions), then every other bit alone and all at once.
    low = KNOWN + [1 << 5]
    for m in range(1 << len(low)):
        yield sum(f for i, f in enumerate(low) if m >> i & 1)
    for b in range(6, 16):
        yield 1 << b
    yield 0xFFFF


class Client:
    def __init__(self, uri):
        self.uri = uri
        self.reconnects = 0
        self.open()

    def open(self):
        self.h = nbd.NBD()
        self.h.set_strict_mode(0)
        self.h.connect_uri(self.uri)
        self.size = self.h.get_size()

    def call(self, fn):
        try:
            fn(self.h)
            return None
        except nbd.Error as e:
            if not self.h.aio_is_ready():
                self.reconnects += 1
                self.open()
            return errno.errorcode.get(e.errno or 0, str(e.errno))


def main():
    uri = sys.argv[1]
    c = Client(uri)
    pattern = bytes((i * 7) & 0xFF for i in range(PROTECTED))
    c.h.pwrite(pattern, 0)
    c.h.flush()
    size = c.size
    mid = PROTECTED + (64 << 10)
    geometry = [(mid, 4096), (mid + 1, 511), (mid, 0), (size - 4096, 8192), (size, 4096),
                (size + (1 << 20), 4096), ((1 << 63) - 4096, 4096), (mid, 65 << 20)]
    stats = dict(requests=0, ok=0, errors={})

    def record(err):
        stats["requests"] += 1
        if err is None:
            stats["ok"] += 1
        else:
            stats["errors"][err] = stats["errors"].get(err, 0) + 1

    def bs_cb(*_):
        return 0

    for flags in flag_sets():
        for off, n in geometry:
            small = min(n, 1 << 20)
            record(c.call(lambda h: h.pread(small, off, flags)))
            record(c.call(lambda h: h.pwrite(bytes(small), off, flags)))
            record(c.call(lambda h: h.trim(n, off, flags)))
            record(c.call(lambda h: h.zero(n, off, flags)))
            record(c.call(lambda h: h.cache(n, off, flags)))
            record(c.call(lambda h: h.block_status(max(n, 1), off, bs_cb, flags)))
        record(c.call(lambda h: h.flush(flags)))
    stats["reconnects"] = c.reconnects
    back = c.h.pread(PROTECTED, 0)
    stats["pattern_ok"] = back == pattern
    c.h.shutdown()
    print(json.dumps(stats, sort_keys=True))
    return 0 if stats["pattern_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
