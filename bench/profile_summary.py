"""Tables for bench/profile.sh: per-request costs from perf stat and perf trace."""
import json
import os
import re


def requests(path):
    text = open(path).read()
    doc = json.loads(text[text.index("{"):])
    job = doc["jobs"][0]
    return job["read"]["total_ios"] + job["write"]["total_ios"], job["read"]["iops"]


def stat(path):
    """perf stat -x, : {event: value} over the whole process."""
    events = {}
    for line in open(path):
        f = line.strip().split(",")
        if len(f) < 3 or line.startswith("#"):
            continue
        try:
            events[f[2]] = float(f[0])
        except ValueError:
            continue
    return events


def trace(path):
    """perf trace -s: [(thread, {syscall: calls})], one entry per thread."""
    threads = []
    head = re.compile(r"^\s*(\S+) \((\d+)\), \d+ events")
    row = re.compile(r"^\s+([a-z_0-9]+)\s+(\d+)\s+\d+\s+[\d.]+")
    for line in open(path):
        m = head.match(line)
        if m:
            threads.append((f"{m.group(1)}/{m.group(2)}", {}))
            continue
        m = row.match(line)
        if m and threads:
            threads[-1][1][m.group(1)] = int(m.group(2))
    return threads


def per_req(calls, n, top):
    items = sorted(calls.items(), key=lambda kv: -kv[1])[:top]
    return ", ".join(f"{k} {v / n:.2f}" for k, v in items if v / n >= 0.01)


def main(d, targets, workloads, fixed):
    print("| workload | target | IOPS | CPU µs/req | syscalls/req | context switches/req |")
    print("|---|---|---|---|---|---|")
    detail = []
    for w in workloads:
        for t in targets:
            base = os.path.join(d, f"{t}-{w}")
            n, iops = requests(base + ".stat.json")
            ev = stat(base + ".stat")
            cpu = ev.get("task-clock", 0) * 1000 / n  # msec -> µs
            sc = ev.get("raw_syscalls:sys_enter", 0) / n
            cs = ev.get("context-switches", 0) / n
            print(f"| {w} | {t} | {iops:,.0f} | {cpu:.1f} | {sc:.2f} | {cs:.2f} |")
            nt, _ = requests(base + ".trace.json")
            threads = trace(base + ".trace")
            total = {}
            for _, calls in threads:
                for k, v in calls.items():
                    total[k] = total.get(k, 0) + v
            busy = [(name, calls) for name, calls in threads if sum(calls.values()) >= nt / 100]
            busy.sort(key=lambda tc: -sum(tc[1].values()))
            detail.append(f"| {w} | {t} | {per_req(total, nt, 8)} | {len(busy)} | " +
                          "; ".join(f"{sum(c.values()) / nt:.2f} ({per_req(c, nt, 4)})" for _, c in busy[:3]) + " |")
    print()
    print("| workload | target | system calls per request, by name | threads with ≥ 0.01 calls/req | the busiest threads: calls/req (by name) |")
    print("|---|---|---|---|---|")
    for line in detail:
        print(line)
