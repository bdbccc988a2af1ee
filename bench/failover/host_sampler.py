#!/usr/bin/env python3
"""Host sampler for the heartbeat-delay investigation (bench only).

Every PERIOD ms (default 5) reads /proc/stat (per-CPU steal, softirq and irq time) and the
schedstat of each ksoftirqd/N (time run, time waited on the run queue). Writes to OUT a line per
sample window in which something stood out (steal >= 1 ms, or a ksoftirqd waited >= 2 ms on its
run queue), with CLOCK_REALTIME so it lines up with tandemd's log, and at the end (SIGTERM or
DURATION s) a summary: totals, the largest per-window values, and the load average.

With --comm NAME it also follows every process of that name (re-scanned each second): a
window in which one ran >= 20 ms (busy: its callbacks, or softirq work done in its context) or
waited >= 5 ms on its run queue (runnable, not running: preempted or not scheduled) is listed.

Usage: host_sampler.py OUT [--period-ms 5] [--duration S] [--comm tandemd]
"""
import os
import signal
import sys
import time

USER_HZ = os.sysconf("SC_CLK_TCK")


def cpu_stat():
    """{cpu: (steal_ms, softirq_ms, irq_ms)} from /proc/stat (USER_HZ ticks)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            p = line.split()
            tick_ms = 1000.0 / USER_HZ
            out[p[0]] = (int(p[8]) * tick_ms, int(p[7]) * tick_ms, int(p[6]) * tick_ms)
    return out


def ksoftirqd_pids():
    pids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith("ksoftirqd/"):
            pids[comm] = int(d)
    return pids


def schedstat(pid):
    """(run_ns, wait_ns) of a task."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            run, wait, _ = f.read().split()
        return int(run), int(wait)
    except OSError:
        return 0, 0


def pids_named(comm):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() == comm:
                        out.append(int(d))
            except OSError:
                pass
    return out


def main():
    out_path = sys.argv[1]
    period = 0.005
    duration = None
    comm = None
    args = sys.argv[2:]
    while args:
        if args[0] == "--period-ms":
            period = float(args[1]) / 1000
            args = args[2:]
        elif args[0] == "--comm":
            comm = args[1]
            args = args[2:]
        elif args[0] == "--duration":
            duration = float(args[1])
            args = args[2:]
        else:
            sys.exit(f"unknown argument {args[0]}")
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    pids = ksoftirqd_pids()
    prev_cpu = cpu_stat()
    prev_ks = {n: schedstat(p) for n, p in pids.items()}
    first_cpu, first_ks = prev_cpu, dict(prev_ks)
    t_start = time.time()
    procs = {}  # pid -> (run_ns, wait_ns)
    last_scan = 0.0
    max_proc_run = max_proc_wait = 0.0
    max_steal = max_ks_wait = 0.0
    max_steal_at = max_ks_at = ""
    windows = 0
    with open(out_path, "w") as out:
        out.write("# realtime\twhat\tcpu_or_thread\tms_in_window\twindow_ms\n")
        prev_t = time.time()
        while not stop[0] and (duration is None or time.time() - t_start < duration):
            time.sleep(period)
            t = time.time()
            win_ms = (t - prev_t) * 1000
            cpu = cpu_stat()
            for c, (st, si, _irq) in cpu.items():
                d = st - prev_cpu.get(c, (st, si, 0))[0]
                if d > max_steal:
                    max_steal, max_steal_at = d, f"{t:.3f} {c}"
                if d >= 1:
                    out.write(f"{t:.3f}\tsteal\t{c}\t{d:.1f}\t{win_ms:.1f}\n")
            for n, p in pids.items():
                run, wait = schedstat(p)
                dw = (wait - prev_ks[n][1]) / 1e6
                if dw > max_ks_wait:
                    max_ks_wait, max_ks_at = dw, f"{t:.3f} {n}"
                if dw >= 2:
                    out.write(f"{t:.3f}\tksoftirqd_wait\t{n}\t{dw:.1f}\t{win_ms:.1f}\n")
                prev_ks[n] = (run, wait)
            if comm is not None:
                if t - last_scan >= 1.0:
                    last_scan = t
                    for p in pids_named(comm):
                        procs.setdefault(p, schedstat(p))
                for p, (run0, wait0) in list(procs.items()):
                    run, wait = schedstat(p)
                    if run == 0 and wait == 0:
                        del procs[p]
                        continue
                    dr, dw = (run - run0) / 1e6, (wait - wait0) / 1e6
                    max_proc_run, max_proc_wait = max(max_proc_run, dr), max(max_proc_wait, dw)
                    if dr >= 20 or dw >= 5:
                        out.write(f"{t:.3f}\t{comm}_ran_waited\t{p}\t{dr:.1f} {dw:.1f}\t"
                                  f"{win_ms:.1f}\n")
                    procs[p] = (run, wait)
            prev_cpu, prev_t = cpu, t
            windows += 1
        elapsed = time.time() - t_start
        out.write(f"# summary over {elapsed:.1f} s, {windows} windows of ~{period * 1000:.0f} ms; "
                  f"loadavg {open('/proc/loadavg').read().strip()}\n")
        for c, (st, si, irq) in prev_cpu.items():
            f0 = first_cpu.get(c, (st, si, irq))
            out.write(f"# {c}: steal {st - f0[0]:.0f} ms, softirq {si - f0[1]:.0f} ms, "
                      f"irq {irq - f0[2]:.0f} ms\n")
        for n, p in pids.items():
            r0, w0 = first_ks[n]
            r1, w1 = prev_ks[n]
            out.write(f"# {n}: ran {(r1 - r0) / 1e6:.1f} ms, waited {(w1 - w0) / 1e6:.1f} ms\n")
        if comm is not None:
            out.write(f"# {comm}: largest run in one window {max_proc_run:.1f} ms, largest "
                      f"run-queue wait {max_proc_wait:.1f} ms\n")
        out.write(f"# largest steal in one window: {max_steal:.1f} ms at {max_steal_at}\n")
        out.write(f"# largest ksoftirqd run-queue wait in one window: {max_ks_wait:.1f} ms at "
                  f"{max_ks_at}\n")


if __name__ == "__main__":
    main()
