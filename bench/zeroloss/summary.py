#!/usr/bin/env python3
"""Table of bench/zeroloss_bench.sh's trials: summary.py RUN_DIR HB_MS HB_MISS.

The gap at the crash is the largest interval between two responses that ends within 500 ms of
the crash instant (from the client's list of gaps over 20 ms; "<20" if none did); "first" is the
one that spans the crash instant itself (the outage up to the takeover); the largest gap of the
whole trial is reported too (a starved client or machine can stall elsewhere).
"""
import csv
import os
import re
import statistics
import sys

run_dir, hb_ms, hb_miss = sys.argv[1], sys.argv[2], sys.argv[3]
rows = list(csv.DictReader(open(os.path.join(run_dir, "trials.tsv")), delimiter="\t"))
names = {"vmac": "tandem vmac, %s ms x %s" % (hb_ms, hb_miss),
         "garp": "tandem garp, %s ms x %s" % (hb_ms, hb_miss),
         "ka": "keepalived + conntrackd (strict), advert 10 ms"}


def crash_gap(r):
    log = os.path.join(run_dir, "client-%s-%s-%s.log" % (r["round"], r["client"], r["system"]))
    try:
        line = [x for x in open(log) if x.startswith("rrclient:")][-1]
    except (OSError, IndexError):
        return None
    crash = r.get("crash_ms") or ""
    if not crash:  # older runs: from "gap ends +X ms after the crash" and the largest gap's end
        m = re.search(r"gap ends ([+-]\d+) ms", r["victim"])
        end = re.search(r"max_gap_end=([\d.]+)", line)
        if not m or not end:
            return None
        crash = float(end.group(1)) * 1000 - int(m.group(1))
    crash = float(crash) / 1000
    gaps = re.search(r"gaps_over_20ms=(\S+)", line).group(1)
    first, largest = 0.0, 0.0
    for g in gaps.split(",") if gaps != "-" else []:
        ms, end = float(g.split("@")[0]), float(g.split("@")[1])
        start = end - ms / 1000
        # The request in flight at the kill (stamped just before it) is answered after the gap.
        if not first and start <= crash + 0.05 and end >= crash:
            first = ms
        if crash <= end <= crash + 0.5:
            largest = max(largest, ms)
    return largest, first


print("| client | system | gap at the crash per trial (ms) | median | worst | first gap (to the "
      "takeover) per trial | largest gap of the trial | errors | reconnects | loss probes + "
      "retrans |")
print("| --- | --- | --- | ---: | ---: | --- | --- | ---: | ---: | --- |")
order = []
for r in rows:
    if (r["client"], r["system"]) not in order:
        order.append((r["client"], r["system"]))
for cl, sy in order:
    sel = [r for r in rows if r["client"] == cl and r["system"] == sy]
    both = [crash_gap(r) for r in sel]
    cg = [b[0] if b else None for b in both]
    firsts = [b[1] if b else None for b in both]
    vals = [g for g in cg if g is not None]
    fmt = lambda g: "?" if g is None else ("<20" if g == 0 else "%.1f" % g)
    med = "%.1f" % statistics.median(vals) if vals else "-"
    worst = "%.1f" % max(vals) if vals else "-"
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
        cl, names.get(sy, sy), " ".join(fmt(g) for g in cg), med, worst,
        " ".join(fmt(g) for g in firsts),
        " ".join(r["gap_ms"] for r in sel),
        sum(int(r["errors"]) for r in sel if r["errors"].isdigit()),
        sum(int(r["reconnects"]) for r in sel if r["reconnects"].isdigit()),
        " ".join(r["probes"] for r in sel)))
