"""Median tables for the bench scripts.

raw.csv has one row per fio (or iscsi-perf) run: round,target,workload,iops,mibs
and, where the script measures it, cpu_us: the front server's CPU time per
request in µs, machine_us: the whole machine's busy CPU time per request,
and busy_pct: the share of all cores busy. tables() turns it into Markdown
lines, headed by the run's header file, plus the medians, from which each
script adds its own ratio rows (CPU medians under the key (target, workload,
column)).
"""
import csv
import statistics

LABELS = {
    "rr4k-qd1": ("4K random read QD1", "iops", "IOPS"),
    "rr4k-qd32": ("4K random read QD32", "iops", "IOPS"),
    "seq1m-qd8": ("1M sequential read QD8", "mibs", "MiB/s"),
}

# Optional columns: (column, row label, cell format).
CPU_ROWS = [
    ("cpu_us", "CPU µs/request", "{:.1f}"),
    ("machine_us", "machine CPU µs/request", "{:.1f}"),
    ("busy_pct", "machine busy %", "{:.0f}"),
]


def _ordered(rows, key):
    seen = []
    for r in rows:
        if r[key] not in seen:
            seen.append(r[key])
    return seen


def tables(raw_csv, header_txt):
    """Returns (lines, medians by (target, workload), workloads in run order)."""
    rows = read_rows(raw_csv)
    with open(header_txt) as f:
        header = f.read().rstrip("\n")
    targets, workloads = _ordered(rows, "target"), _ordered(rows, "workload")
    out = [header, "", "Median over rounds (spread = (max-min)/2 as % of the median):", ""]
    out.append("| workload | metric | " + " | ".join(targets) + " |")
    out.append("|---|---|" + "---|" * len(targets))
    med = {}
    for w in workloads:
        name, key, unit = LABELS[w]
        cells = []
        for t in targets:
            v = [float(r[key]) for r in rows if r["target"] == t and r["workload"] == w]
            m = statistics.median(v)
            med[t, w] = m
            spread = (max(v) - min(v)) / 2 / m * 100 if m else 0
            cells.append(f"{m:,.0f} ±{spread:.0f}%" if key == "iops" else f"{m:,.1f} ±{spread:.0f}%")
        out.append(f"| {name} | {unit} | " + " | ".join(cells) + " |")
        for col, label, fmt in CPU_ROWS:
            if not rows or col not in rows[0]:
                continue
            cells = []
            for t in targets:
                v = [float(r[col]) for r in rows
                     if r["target"] == t and r["workload"] == w and r.get(col)]
                m = statistics.median(v) if v else None
                med[t, w, col] = m
                cells.append(fmt.format(m) if m is not None else "n/a")
            out.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return out, med, workloads


def read_rows(raw_csv):
    """The rows of raw.csv, as dicts."""
    with open(raw_csv) as f:
        return list(csv.DictReader(f))


def paired(rows, a, b, workload):
    """The median over rounds of a's metric over b's in the same round, or None.

    Each round runs every target back to back, so a round's ratio compares
    the targets on the machine as it was then; the machine's speed drifts
    (by up to 2x between minutes on a shared VM), which moves the medians
    over rounds of every target but much less the ratio within a round."""
    key = LABELS[workload][1]
    by_round = {}
    for r in rows:
        if r["workload"] != workload:
            continue
        by_round.setdefault(r["round"], {})[r["target"]] = float(r[key])
    ratios = [v[a] / v[b] for v in by_round.values() if a in v and v.get(b)]
    return statistics.median(ratios) if ratios else None


def write(path, lines):
    """Writes the Markdown to path and prints it."""
    text = "\n".join(lines) + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(text, end="")
