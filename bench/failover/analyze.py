"""Renders a failover_bench.sh run directory as markdown (stdout), and writes the figure's CSV.

  analyze.py RUN_DIR                    the report; RUN_DIR/failover-throughput.csv
  analyze.py --progress RUN_DIR TAG     one line about one trial (stderr of the bench)
"""
import csv, math, os, re, statistics, sys

ORDER = ["tandem-10", "tandem-10rt", "tandem-10x5", "tandem-10x5rt", "tandem-50", "tandem-100",
         "ka-strict", "ka-loose"]
NAMES = {
    "ka-strict": "keepalived + conntrackd, strict (tcp_loose=0)",
    "ka-loose": "keepalived + conntrackd, loose (kernel default)",
}


def name(sys_):
    if sys_.startswith("tandem-"):
        hb = sys_.split("-", 1)[1]
        rt = ""
        if hb.endswith("vmac"):
            hb = hb[:-4]
            rt = ", vmac takeover"
        if hb.endswith("rt"):
            hb, rt = hb[:-2], ", realtime (chrt -r 50)" + rt
        if "x" in hb:
            return "tandem, heartbeat %s ms x %s%s" % (tuple(hb.split("x")) + (rt,))
        return "tandem, heartbeat %s ms x 3%s" % (hb, rt)
    return NAMES.get(sys_, sys_)


def fields(path):
    """The key=value fields of a tcpcheck summary line in a file (empty dict if none)."""
    try:
        for line in open(path):
            if line.startswith("tcpcheck: conns="):
                return dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    except OSError:
        pass
    return {}


WINDOW_MS = 1500  # a gap counts as the failover's if it overlaps [crash, crash + WINDOW_MS]


def trace_gaps(run, tag, kind, crash_ms):
    """(largest gap overlapping the failover window, largest gap elsewhere) from a trace, or
    None if the trace has no gap column."""
    path = os.path.join(run, "traces", "%s-%s.csv" % (tag, kind))
    try:
        rows = list(csv.DictReader(open(path)))
    except OSError:
        return None
    if not rows or "max_gap_ms" not in rows[0]:
        return None
    # A client that received nothing in the 500 ms before the crash was not flowing (e.g. its
    # connection was still being set up): the trial says nothing about the failover for it.
    before = sum(int(r["rx_bytes"]) for r in rows
                 if crash_ms - 500 <= float(r["unix_ms"]) < crash_ms)
    if before == 0:
        return math.nan, None
    inside = outside = 0.0
    for r in rows:
        gap = float(r["max_gap_ms"])
        if gap == 0:
            continue
        end = float(r["unix_ms"]) + 10  # the bin's end: the gap ended at or before it
        if end >= crash_ms and end - gap <= crash_ms + WINDOW_MS:
            inside = max(inside, gap)
        else:
            outside = max(outside, gap)
    return inside, outside


def trial(run, tag, crash_ms=None):
    t = {}
    for k in ("stream", "rr", "held"):
        t[k] = fields(os.path.join(run, "trials", "%s-%s.txt" % (tag, k)))
    conns = ok = reset = failed = 0
    verified = 0
    for k in ("stream", "rr", "held"):
        f = t[k]
        conns += int(f.get("conns", 0))
        ok += int(f.get("ok", 0))
        failed += int(f.get("failed", 0))
        reset += int(f.get("reset", 0))
        verified += int(f.get("bytes_verified", 0))

    def gap(k):
        f = t[k]
        if not f or f.get("ok") != "1":
            return math.inf  # the client did not survive: no finite gap
        return float(f.get("max_gap_ms", "nan"))

    out = {}
    for k in ("stream", "rr"):
        g = trace_gaps(run, tag, k, crash_ms) if crash_ms is not None else None
        if g is None or math.isinf(gap(k)):
            out[k] = (gap(k), None)
        else:
            out[k] = g
    return {"stream_gap": out["stream"][0], "rr_gap": out["rr"][0],
            "stream_other": out["stream"][1], "rr_other": out["rr"][1],
            "conns": conns, "ok": ok,
            "failed": failed, "reset": reset, "verified": verified,
            "rr_trips": int(t["rr"].get("round_trips", 0) or 0)}


def fmt(v):
    if v is None:
        return "–"
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "failed"
    return "%.1f" % v


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    n = len(xs)
    if n % 2:
        return xs[n // 2]
    a, b = xs[n // 2 - 1], xs[n // 2]
    return math.inf if math.isinf(a) or math.isinf(b) else (a + b) / 2


def kv(path):
    out = {}
    try:
        for line in open(path):
            if line.startswith(("b_udp_fields:", "b_udp:")):
                k, v = line.split(":", 1)
                out[k] = v.strip()
            elif "=" in line and not line.startswith(("#", "tcpcheck")):
                k, v = line.strip().split("=", 1)
                out[k] = v
            elif line.startswith("tcpcheck:"):
                out["cr"] = dict(x.split("=", 1) for x in line.split()[1:] if "=" in x)
    except OSError:
        pass
    return out


def load_trace(run, tag, crash_ms, kind="stream"):
    rows = []
    try:
        with open(os.path.join(run, "traces", "%s-%s.csv" % (tag, kind))) as f:
            for r in csv.DictReader(f):
                rows.append((float(r["unix_ms"]) - crash_ms, int(r["rx_bytes"]),
                             int(r["round_trips"])))
    except OSError:
        pass
    return rows


def main():
    if sys.argv[1] == "--progress":
        run, tag = sys.argv[2], sys.argv[3]
        crash = None
        for row in csv.DictReader(open(os.path.join(run, "trials.tsv")), delimiter="\t"):
            if row["trial"] == tag:
                crash = float(row["crash_unix_ms"])
        t = trial(run, tag, crash)
        print("# %s: stream gap %s ms, rr gap %s ms, conns %d ok %d reset %d, verified %d B"
              % (tag, fmt(t["stream_gap"]), fmt(t["rr_gap"]), t["conns"], t["ok"], t["reset"],
                 t["verified"]))
        return
    run = sys.argv[1]
    trials = list(csv.DictReader(open(os.path.join(run, "trials.tsv")), delimiter="\t"))
    by_sys = {}
    for row in trials:
        t = trial(run, row["trial"], float(row["crash_unix_ms"]))
        t.update(row)
        by_sys.setdefault(row["system"], []).append(t)
    systems = [s for s in ORDER if s in by_sys] + sorted(s for s in by_sys if s not in ORDER)
    if systems:
        failover_tables(run, by_sys, systems)
    sync_and_bulk(run)


def failover_tables(run, by_sys, systems):
    try:
        loads = [float(line.split("\t")[1].split()[0])
                 for line in open(os.path.join(run, "loadavg.tsv"))]
        print("Load average (1 min) of the shared machine at the start of each trial: median "
              "%.1f, min %.1f, max %.1f (2 vCPU).\n" % (median(loads), min(loads), max(loads)))
    except (OSError, ValueError, IndexError):
        pass
    print("### Failover: the gap each client sees when the active is crashed\n")
    print("| System | trials | stream gap median, ms | stream gap worst, ms | rr gap median, ms "
          "| rr gap worst, ms | connections survived | bytes verified | resets | timeouts/other "
          "| takeover seen | spurious role changes (setup / under traffic) "
          "| largest gap outside the failover, ms (stream / rr) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in systems:
        ts = by_sys[s]
        sg = [t["stream_gap"] for t in ts if not math.isnan(t["stream_gap"])]
        rg = [t["rr_gap"] for t in ts if not math.isnan(t["rr_gap"])]
        conns = sum(t["conns"] for t in ts)
        ok = sum(t["ok"] for t in ts)
        normal = 1 if s.startswith("tandem") else 3  # role changes of a clean start
        setup = sum(max(0, int(t.get("setup_changes") or normal) - normal) for t in ts)
        spur = sum(int(t.get("spurious") or 0) for t in ts)
        def worst_other(k):
            v = [t[k] for t in ts if t[k] is not None]
            return fmt(max(v)) if v else "–"
        na = len(ts) - min(len(sg), len(rg))
        print("| %s | %s | %s | %s | %s | %s | %d / %d | %d | %d | %d | %d / %d | %d / %d "
              "| %s / %s |" % (
            name(s), ("%d" % len(ts)) + (" (%d n/a)" % na if na else ""),
            fmt(median(sg)), fmt(max(sg) if sg else None),
            fmt(median(rg)), fmt(max(rg) if rg else None),
            ok, conns, sum(t["verified"] for t in ts), sum(t["reset"] for t in ts),
            sum(t["failed"] - t["reset"] for t in ts),
            sum(int(t["takeover"]) for t in ts), len(ts), setup, spur,
            worst_other("stream_other"), worst_other("rr_other")))
    print()
    print("Per trial (round: stream gap / rr gap at the failover, ms; failed = the client's "
          "connection did not survive):\n")
    print("| System | " + " | ".join("round %d" % (i + 1) for i in
                                      range(max(len(v) for v in by_sys.values()))) + " |")
    print("|---|" + "---|" * max(len(v) for v in by_sys.values()))
    for s in systems:
        print("| %s | %s |" % (name(s), " | ".join(
            "%s / %s" % (fmt(t["stream_gap"]), fmt(t["rr_gap"])) for t in by_sys[s])))
    print()

    # The figure: per system, the trial with the median stream gap; throughput per 10 ms bin.
    series = {}
    for s in systems:
        ts = sorted((t for t in by_sys[s] if not math.isnan(t["stream_gap"])),
                    key=lambda t: t["stream_gap"])
        if not ts:
            continue
        t = ts[(len(ts) - 1) // 2]
        series[s] = (t["trial"], load_trace(run, t["trial"], float(t["crash_unix_ms"])))
    if series:
        lo, hi, step = -500, 1000, 10
        path = os.path.join(run, "failover-throughput.csv")
        with open(path, "w") as f:
            f.write("t_ms," + ",".join(series) + "\n")
            for b in range(lo, hi, step):
                vals = []
                for s, (_, rows) in series.items():
                    mbit = sum(x[1] for x in rows if b <= x[0] < b + step) * 8 / (step / 1000) / 1e6
                    vals.append("%.2f" % mbit)
                f.write("%d,%s\n" % (b, ",".join(vals)))
        print("Figure data: `%s` (stream throughput received by the client, Mbit/s per 10 ms "
              "bin, t = 0 at the crash; per system the trial with the median stream gap: %s).\n"
              % (os.path.basename(path), ", ".join("%s %s" % (s, v[0]) for s, v in
                                                    series.items())))



def sync_and_bulk(run):
    rows = []
    for s in ("tandem", "conntrackd"):
        d = kv(os.path.join(run, "sync-%s.txt" % s))
        if not d or "cr" not in d:
            continue
        n = int(d["cr"].get("ok", 0))
        if n == 0:
            continue
        scale = float(d["busy_seconds"]) / float(d["idle_seconds"])
        pk = (int(d["busy_packets"]) - int(d["idle_packets"]) * scale) / n
        by = (int(d["busy_bytes"]) - int(d["idle_bytes"]) * scale) / n
        upd = "–"
        if "busy_updates" in d:
            upd = "%.2f" % ((int(d["busy_updates"]) - int(d["idle_updates"]) * scale) / n)
        rows.append((s, n, upd, pk, by, int(d["idle_packets"]) / float(d["idle_seconds"])))
    if rows:
        print("### Sync cost in steady state (short connections, A → B)\n")
        print("| Sync channel | connections | updates per connection | UDP packets per "
              "connection | bytes per connection (IP) | idle packets/s (heartbeats) |")
        print("|---|---:|---:|---:|---:|---:|")
        for s, n, upd, pk, by, idle in rows:
            print("| %s | %d | %s | %.2f | %.0f | %.1f |" % (s, n, upd, pk, by, idle))
        print()

    groups = {}
    for fn in sorted(os.listdir(run)):
        m = re.match(r"bulk-(restart|absent)-(\d+)-(\d+)\.txt$", fn)
        if m:
            groups.setdefault((m.group(1), int(m.group(2))), []).append(
                kv(os.path.join(run, fn)))
    if groups:
        tck = os.sysconf("SC_CLK_TCK")
        print("### Bulk resync (B started next to an active A holding N flows)\n")
        print("| Variant | flows in A | B start → ready, ms (median; each) | B start → /status, "
              "ms | flows in B when ready | B CPU s | A CPU s | load average (1 min) before "
              "| A updates resent | B UDP rcvbuf drops (namespace total) | roles after (A / B) |")
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for (variant, n), ds in sorted(groups.items(), key=lambda x: (x[0][0] != "restart", x[0][1])):
            times = [int(d.get("start_to_ready_ms", 0)) for d in ds if d.get("ready") == "1"]
            last = ds[-1]
            udp = dict(zip(last.get("b_udp_fields", "").split()[1:],
                           last.get("b_udp", "").split()[1:]))
            label = {"restart": "B restarted", "absent": "B absent during the fill"}[variant]
            print("| %s, %d flows | %s | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s / %s |" % (
                label, n, last.get("a_flows_active", "?"),
                ("%.0f" % median(times)) if times else "not ready",
                ", ".join(d.get("start_to_ready_ms", "?") for d in ds),
                "/".join(d.get("start_to_status_ms", "?") for d in ds),
                "/".join(d.get("b_flows_active", "?") for d in ds),
                "/".join("%.2f" % (int(d.get("b_cpu_ticks", 0)) / tck) for d in ds),
                "/".join("%.2f" % (int(d.get("a_cpu_ticks", 0)) / tck) for d in ds),
                "/".join(d.get("loadavg_before", "?") for d in ds),
                "/".join(d.get("a_updates_resent", "?") for d in ds),
                udp.get("RcvbufErrors", "?"), last.get("a_role_after", "?"),
                last.get("b_role_after", "?")))
        print()


if __name__ == "__main__":
    main()
