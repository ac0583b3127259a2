"""Tables for bench/slow-paths.sh.

raw.csv: case,round,target,workload,iops,mibs,p50,p99,p999,hedge_share
(latencies in µs; hedge_share: hedges sent per client read, empty when
hedging is off), one row per fio run. For each case and workload: the median over rounds of
every target, with each selector's ratios to the reference (the healthy path
alone behind the same plugin, measured in the same run) and the issue's
targets:

  slow:      IOPS >= 0.95x alone, p99 <= 1.2x alone
  spiky:     p99 <= 1.2x alone, p99.9 <= 2x alone
  healthy:   IOPS within 3% of the best of the other selectors
  bandwidth: MiB/s >= 0.9x (fast alone + slow alone)

Usage: slow_summary.py RAW_CSV HEADER_TXT OUT_MD
"""
import csv
import statistics
import sys

UNITS = {"rr4k-qd32": "4K random read QD32", "rw64k-qd8": "64K random 70% read QD8",
         "seq1m-qd16": "1M sequential read QD16"}


def med(rows, key):
    return statistics.median(float(r[key]) for r in rows)


def share(rows):
    v = [float(r["hedge_share"]) for r in rows if r.get("hedge_share")]
    return f"{statistics.median(v) * 100:.1f}%" if v else "off"


def ms(us):
    return f"{us / 1000:.2f}" if us < 10000 else f"{us / 1000:.1f}"


def main(raw_csv, header_txt, out_md):
    with open(raw_csv) as f:
        rows = list(csv.DictReader(f))
    with open(header_txt) as f:
        out = [f.read().rstrip("\n"), ""]
    order = []
    for r in rows:
        if (r["case"], r["workload"]) not in order:
            order.append((r["case"], r["workload"]))
    for case, wl in order:
        sub = [r for r in rows if r["case"] == case and r["workload"] == wl]
        targets = []
        for r in sub:
            if r["target"] not in targets:
                targets.append(r["target"])
        m = {}
        for t in targets:
            tr = [r for r in sub if r["target"] == t]
            m[t] = {k: med(tr, k) for k in ("iops", "mibs", "p50", "p99", "p999")}
            m[t]["spread"] = (max(float(r["iops"]) for r in tr) - min(float(r["iops"]) for r in tr)) / 2
            m[t]["hedge"] = share(tr)
        ref = m.get("alone")
        out += [f"### {case}: {UNITS.get(wl, wl)} (median of {len(sub) // len(targets)} rounds)", ""]
        if case == "bandwidth":
            out += ["| target | MiB/s | vs fast+slow alone | p50 ms | p99 ms | p99.9 ms | hedge share | target ≥ 0.9x |",
                    "|---|---|---|---|---|---|---|---|"]
            both = m["alone"]["mibs"] + m.get("slowalone", {"mibs": 0})["mibs"]
            for t in targets:
                x = m[t]
                ratio = x["mibs"] / both if both else 0
                verdict = "" if t in ("alone", "slowalone") else ("met" if ratio >= 0.9 else "missed")
                name = {"alone": "fast path alone", "slowalone": "slow path alone"}.get(t, t)
                out.append(f"| {name} | {x['mibs']:.1f} | {ratio:.2f}x | {ms(x['p50'])} | {ms(x['p99'])} "
                           f"| {ms(x['p999'])} | {x['hedge']} | {verdict} |")
            out.append("")
            continue
        sels = [t for t in targets if t != "alone"]
        best_other = {t: max([m[o]["iops"] for o in sels if o != t] or [0]) for t in sels}
        out += ["| target | IOPS | vs alone | p50 ms | p99 ms | p99 vs alone | p99.9 ms | p99.9 vs alone "
                "| hedge share | target |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for t in targets:
            x = m[t]
            ri, r99, r999 = (x["iops"] / ref["iops"], x["p99"] / ref["p99"], x["p999"] / ref["p999"])
            if t == "alone":
                verdict = "(reference)"
            elif case == "slow":
                verdict = "met" if ri >= 0.95 and r99 <= 1.2 else "missed"
            elif case == "spiky":
                verdict = "met" if r99 <= 1.2 and r999 <= 2 else "missed"
            else:
                verdict = "met" if x["iops"] >= 0.97 * best_other[t] else "missed"
            name = "healthy path alone" if t == "alone" else t
            out.append(f"| {name} | {x['iops']:,.0f} ±{x['spread'] / x['iops'] * 100:.0f}% | {ri:.2f}x "
                       f"| {ms(x['p50'])} | {ms(x['p99'])} | {r99:.2f}x | {ms(x['p999'])} | {r999:.2f}x "
                       f"| {x['hedge']} | {verdict} |")
        out.append("")
    text = "\n".join(out) + "\n"
    with open(out_md, "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    main(*sys.argv[1:4])
