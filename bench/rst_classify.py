#!/usr/bin/env python3
"""Who sent each RST through a splice service, and what the tracker made of it.

Reads the two captures bench/rst_capture.sh writes (front.pcap: the proxy's client side, back.pcap:
its backend side, transparent addressing, so the client's port names a connection on both legs)
and, for every RST the backend sent, re-derives the tracker's RFC 5961 judgement from the backend
leg (proxy/core/tcp_tracker.cc checkRst: exact at the client's highest ACK or the backend's next
sequence number, or at its FIN's sequence number; in window; outside), names the segment that
provoked it (the last client segment whose ack equals the RST's seq, RFC 9293 3.10.7.1) and tells
whether both FINs were already acknowledged (the tracker's TIME_WAIT: `rst_after_close` when
dropped, `rst_out_of_window` otherwise), and whether the proxy passed it on (a RST of its own to
the client follows) or dropped it. With FASTPATH=on the judgement is the wire's, which the
engine's edges may lag (docs/fastpath.md): a RST exact on the wire and dropped is the proxy's.

Usage: rst_classify.py DIR               a table: count, verdict, flags, provoking segment, state
       rst_classify.py DIR --show KIND N  the packets of N connections of verdict KIND (exact,
                                          in_window, out), both legs, from the client's SYN
       rst_classify.py DIR --order        connections whose segments the proxy sent out of order:
                                          client segments on the backend leg, server segments on
                                          the client leg (data or FIN starting below the highest
                                          end already sent that way), and the backend's RSTs
       rst_classify.py DIR --paths        the commonest per-connection sequences of segments, each
                                          client (c:) and backend (b:) segment marked with how it
                                          crossed the proxy: nfq (its copy on the other leg 15 us
                                          or more later: through tandemd) or k (the kernel)
       rst_classify.py DIR --timeline     median and 90th percentile of each step of a
                                          connection's opening, SYN to the first response byte
                                          (a splice's, or one passed through: MODE=dnat or
                                          passthrough), each side's FIN across the proxy, and
                                          the gap from one SYN to the next
"""
import collections
import struct
import sys

M = 1 << 32


def after(a, b):
    d = (a - b) % M
    return d != 0 and d < (1 << 31)


def read_pcap(path, leg):
    out = []
    with open(path, "rb") as f:
        gh = f.read(24)
        nano = struct.unpack("<I", gh[:4])[0] == 0xA1B23C4D
        link = struct.unpack("<I", gh[20:24])[0]
        off = {1: 14, 113: 16}.get(link, 0)
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            ts, frac, incl, _ = struct.unpack("<IIII", h)
            ip = f.read(incl)[off:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ihl = (ip[0] & 15) * 4
            tcp = ip[ihl:]
            if len(tcp) < 20:
                continue
            sp, dp, seq, ack, doff, fl, win = struct.unpack("!HHIIBBH", tcp[:16])
            doff = (doff >> 4) * 4
            tsv = tse = None
            o, i = tcp[20:doff], 0
            while i < len(o) and o[i] != 0:
                if o[i] == 1:
                    i += 1
                    continue
                if i + 1 >= len(o) or o[i + 1] < 2:
                    break
                if o[i] == 8 and o[i + 1] == 10 and i + 10 <= len(o):
                    tsv, tse = struct.unpack("!II", o[i + 2:i + 10])
                i += o[i + 1]
            out.append(dict(t=ts + frac / (1e9 if nano else 1e6), leg=leg,
                            src=".".join(map(str, ip[12:16])), sp=sp, dp=dp, seq=seq, ack=ack,
                            fl=fl, win=win, len=struct.unpack("!H", ip[2:4])[0] - ihl - doff,
                            tsv=tsv, tse=tse))
    return out


def flags(fl):
    return "".join(c for b, c in ((1, "F"), (2, "S"), (4, "R"), (8, "P"), (16, "."))
                   if fl & b)


def classify(back, client):
    """Yields (key, rst packet) for every backend RST in the back leg's packets of one port."""
    be_end = cli_ack = be_fin = cli_fin = None
    be_fin_acked = cli_fin_acked = False
    for i, p in enumerate(back):
        fl, from_client = p["fl"], p["src"] == client
        if from_client and fl & 2:  # a new incarnation of the tuple
            be_end = cli_ack = be_fin = cli_fin = None
            be_fin_acked = cli_fin_acked = False
            continue
        if not fl & 4:
            if from_client:
                if fl & 16 and (cli_ack is None or after(p["ack"], cli_ack)):
                    cli_ack = p["ack"]
                if fl & 1:
                    cli_fin = (p["seq"] + p["len"] + 1) % M
                if be_fin is not None and fl & 16 and not after(be_fin, p["ack"]):
                    be_fin_acked = True
            else:
                end = (p["seq"] + p["len"] + (1 if fl & 3 else 0)) % M
                if be_end is None or after(end, be_end):
                    be_end = end
                if fl & 1:
                    be_fin = end
                if cli_fin is not None and fl & 16 and not after(cli_fin, p["ack"]):
                    cli_fin_acked = True
            continue
        if from_client or be_end is None:
            continue
        seq = p["seq"]
        rcv = cli_ack if cli_ack is not None else be_end
        if seq in (rcv, be_end) or (be_fin is not None and seq == (be_fin - 1) % M):
            verdict = "exact"
        else:
            lo = rcv if after(be_end, rcv) else be_end
            verdict = "in_window" if not after(lo, seq) and not after(seq, be_end) else "out"
        prov = next((q for q in reversed(back[max(0, i - 16):i])
                     if q["src"] == client and q["fl"] & 16 and q["ack"] == seq), None)
        if prov is None:
            why = "provoked by ?"
        else:
            stale = cli_ack is not None and after(cli_ack, prov["ack"])
            why = "provoked by " + flags(prov["fl"]) + (" with a stale ack" if stale else "")
        state = ("both FINs acked" if be_fin_acked and cli_fin_acked else
                 "backend FIN acked" if be_fin_acked else "open")
        yield (verdict, flags(p["fl"]), why, state), p


def out_of_order(pkts):
    """True if a data segment or FIN in `pkts` (one direction, in send order) starts below the
    end of one sent before it; a SYN starts a new incarnation."""
    top = None
    for p in pkts:
        if p["fl"] & 2:
            top = None
            continue
        if p["fl"] & 4 or not (p["len"] or p["fl"] & 1):
            continue
        if top is not None and after(top, p["seq"]):
            return True
        end = (p["seq"] + p["len"] + (p["fl"] & 1)) % M
        top = end if top is None or after(end, top) else top
    return False


def order(by_port, client):
    to_backend = to_client = rsts = 0
    for port, back in by_port["B"].items():
        to_backend += out_of_order([p for p in back if p["src"] == client])
        to_client += out_of_order([p for p in by_port["F"][port] if p["src"] != client])
        rsts += any(p["fl"] & 4 for p in back if p["src"] != client)
    print("connections\tclient segments out of order to the backend\t"
          "server segments out of order to the client\twith a backend RST")
    print("%d\t%d\t%d\t%d" % (len(by_port["B"]), to_backend, to_client, rsts))


NFQ_US = 15  # a copy this much later than its original crossed user space (the kernel: ~2 us)


def crossing(src_pkts, dst_pkts, syn_ok):
    """Pairs each segment of `src_pkts` (one direction, one leg) with its copy in `dst_pkts` (the
    other leg): the first unused one no earlier with the same flags and length; with `syn_ok`, a
    bare ACK may have become a SYN (the cookie ACK turned into the backend SYN). Yields
    (segment, copy or None)."""
    used = set()
    for p in src_pkts:
        match = None
        for j, q in enumerate(dst_pkts):
            if j in used or q["t"] < p["t"]:
                continue
            same = (q["fl"] & 0x17) == (p["fl"] & 0x17) and q["len"] == p["len"]
            if same or (syn_ok and q["fl"] & 2 and not p["fl"] & 2 and p["len"] == 0):
                match = j
                break
        if match is not None:
            used.add(match)
        yield p, dst_pkts[match] if match is not None else None


def how(p, q):
    """How segment `p` crossed the proxy, given its copy `q` on the other leg (or None)."""
    return "-" if q is None else ("nfq" if q["t"] - p["t"] >= NFQ_US * 1e-6 else "k")


def paths(by_port, client):
    seqs = collections.Counter()
    for port, front in by_port["F"].items():
        back = by_port["B"][port]
        sig = []
        to_be = [p for p in front if p["src"] == client and not p["fl"] & 2]
        for p, q in crossing(to_be, [p for p in back if p["src"] == client], True):
            what = "A->S" if q is not None and q["fl"] & 2 else flags(p["fl"])
            sig.append("c:%s/%d:%s" % (what, p["len"], how(p, q)))
        to_cli = [p for p in back if p["src"] != client and not p["fl"] & 2]
        for p, q in crossing(to_cli, [p for p in front if p["src"] != client and not p["fl"] & 2],
                             False):
            sig.append("b:%s/%d:%s" % (flags(p["fl"]), p["len"], how(p, q)))
        seqs[" ".join(sig)] += 1
    print("connections	segments (c: client's, b: backend's; flags/length:how it crossed)")
    for sig, n in seqs.most_common(12):
        print("%d\t%s" % (n, sig))


def timeline(by_port, client):
    steps = collections.defaultdict(list)
    syns = []
    first = lambda pkts, cond: next((p for p in pkts if cond(p)), None)

    def closes(front, back):
        # Each side's FIN across the proxy: what forwarding one segment costs there.
        for name, a, b in (
                ("client's FIN in -> out to the backend",
                 first(front, lambda p: p["src"] == client and p["fl"] & 1),
                 first(back, lambda p: p["src"] == client and p["fl"] & 1)),
                ("backend's FIN in -> out to the client",
                 first(back, lambda p: p["src"] != client and p["fl"] & 1),
                 first(front, lambda p: p["src"] != client and p["fl"] & 1))):
            if a is not None and b is not None:
                steps[name].append(b["t"] - a["t"])

    for port, front in by_port["F"].items():
        back = by_port["B"][port]
        syn = first(front, lambda p: p["src"] == client and p["fl"] & 2)
        synack = first(front, lambda p: p["src"] != client and p["fl"] & 18 == 18)
        if syn is None or synack is None:
            continue
        syns.append(syn["t"])
        cack = first(front, lambda p: p["src"] == client and p["fl"] & 18 == 16 and
                     p["len"] == 0 and p["t"] >= synack["t"])
        bsyn = first(back, lambda p: p["src"] == client and p["fl"] & 2)
        bsynack = first(back, lambda p: p["src"] != client and p["fl"] & 18 == 18)
        req = first(front, lambda p: p["src"] == client and p["len"] > 0)
        breq = first(back, lambda p: p["src"] == client and p["len"] > 0)
        bresp = first(back, lambda p: p["src"] != client and p["len"] > 0)
        fresp = first(front, lambda p: p["src"] != client and p["len"] > 0)
        if None in (cack, bsyn, bsynack, req, breq, bresp, fresp):
            continue
        if bsynack["t"] <= synack["t"]:
            # Passed through (conntrack DNAT, passthrough): the client's SYN opens the backend's
            # handshake, whose SYN-ACK the proxy forwards.
            opening = (("SYN in -> out to the backend", syn, bsyn),
                       ("backend SYN -> its SYN-ACK in", bsyn, bsynack),
                       ("its SYN-ACK in -> out to the client", bsynack, synack),
                       ("SYN-ACK out -> client's ACK in", synack, cack),
                       ("client's ACK in -> its request in", cack, req))
        else:
            # Spliced: the proxy answers the client, then opens the backend leg.
            back_ack = first(back, lambda p: p["src"] == client and p["fl"] & 18 == 16 and
                             p["t"] >= bsynack["t"])
            opened = first(front, lambda p: p["src"] != client and not p["fl"] & 2 and
                           p["t"] >= bsynack["t"])
            if None in (back_ack, opened) or not syn["t"] <= cack["t"] <= bsyn["t"]:
                continue
            opening = (("SYN -> SYN-ACK out", syn, synack),
                       ("SYN-ACK -> cookie ACK in", synack, cack),
                       ("cookie ACK in -> backend SYN out", cack, bsyn),
                       ("backend SYN -> its SYN-ACK in", bsyn, bsynack),
                       ("backend SYN-ACK in -> ACK to the backend out", bsynack, back_ack),
                       ("backend SYN-ACK in -> first segment to the client out", bsynack,
                        opened),
                       ("that segment -> client's request in", opened, req))
        for name, a, b in opening + (("request in -> out to the backend", req, breq),
                                     ("request out -> response in", breq, bresp),
                                     ("response in -> out to the client", bresp, fresp),
                                     ("SYN -> response out (total)", syn, fresp)):
            steps[name].append(b["t"] - a["t"])
        closes(front, back)
    # With one worker, a connection starts when the last one is done: the cycle is the rate's
    # inverse, and what the steps above leave of it is the client's close and next connect.
    syns.sort()
    steps["SYN -> next connection's SYN (1 worker: the cycle)"] = [
        b - a for a, b in zip(syns, syns[1:])]
    print("step\tconnections\tp50 us\tp90 us")
    for name, v in steps.items():
        v.sort()
        print("%s\t%d\t%.1f\t%.1f" % (name, len(v), v[len(v) // 2] * 1e6,
                                       v[int(len(v) * 0.9)] * 1e6))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    addrs = dict(kv.split("=") for kv in open(d + "/addrs").read().split())
    client = addrs["CLIENT"]
    who = {client: "cli", addrs["VIP"]: "vip", addrs["BE1"]: "be"}
    legs = {"F": read_pcap(d + "/front.pcap", "F"), "B": read_pcap(d + "/back.pcap", "B")}
    by_port = {leg: collections.defaultdict(list) for leg in legs}
    for leg, pkts in legs.items():
        for p in pkts:
            by_port[leg][p["sp"] if p["src"] == client else p["dp"]].append(p)
    if sys.argv[2:3] == ["--order"]:
        order(by_port, client)
        return
    if sys.argv[2:3] == ["--paths"]:
        paths(by_port, client)
        return
    if sys.argv[2:3] == ["--timeline"]:
        timeline(by_port, client)
        return
    found = collections.defaultdict(list)
    for port, back in by_port["B"].items():
        # Passed on: a RST of the proxy's to the client within 0.5 s at the same sequence number
        # translated (the offset of the two SYN-ACKs of this incarnation).
        front = by_port["F"][port]
        to_client = [p for p in front if p["fl"] & 4 and p["src"] != client]
        for key, rst in classify(back, client):
            cookie = [p["seq"] for p in front if p["fl"] & 18 == 18 and p["t"] < rst["t"]]
            isn = [p["seq"] for p in back
                   if p["fl"] & 18 == 18 and p["src"] != client and p["t"] < rst["t"]]
            want = (rst["seq"] + cookie[-1] - isn[-1]) % M if cookie and isn else None
            match = next((q for q in to_client
                          if 0 <= q["t"] - rst["t"] < 0.5 and q["seq"] == want), None)
            if match is not None:
                to_client.remove(match)
            found[key + ("passed" if match else "dropped",)].append((port, rst))
    if len(sys.argv) < 4:
        print("count\tverdict\tflags\tprovoking segment\tstate at the RST\tby the proxy")
        for key, rsts in sorted(found.items(), key=lambda kv: -len(kv[1])):
            print("%d\t%s" % (len(rsts), "\t".join(key)))
        return
    kind, n = sys.argv[3], int(sys.argv[4])
    t0 = min(p["t"] for pkts in legs.values() for p in pkts)
    shown = [(k, x) for k, v in found.items() if k[0] == kind for x in v][:n]
    for key, (port, rst) in shown:
        both = sorted(by_port["F"][port] + by_port["B"][port], key=lambda p: p["t"])
        end = both.index(rst)
        start = max(j for j in range(end + 1)
                    if both[j]["fl"] & 2 and both[j]["leg"] == "F" and both[j]["src"] == client)
        print("--- port %d: %s" % (port, ", ".join(key)))
        for q in both[start:end + 2]:
            print("%s%9.6f %s %-3s %-4s seq=%10d ack=%10d len=%-3d ts=%s/%s" % (
                ">>" if q is rst else "  ", q["t"] - t0, q["leg"], who.get(q["src"], q["src"]),
                flags(q["fl"]), q["seq"], q["ack"], q["len"], q["tsv"], q["tse"]))


if __name__ == "__main__":
    main()
