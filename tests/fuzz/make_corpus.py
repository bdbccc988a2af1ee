#!/usr/bin/python3
"""Writes the seed corpus of fuzz_packet to tests/fuzz/corpus/packet/ (or the directory given).

Each seed is a small IPv4+TCP packet (valid SYN/ACK/data/SACK, and one malformed variant per
parser check) or a bare TCP options area (fuzz_packet also parses the raw input as options).
Deterministic: re-running rewrites the same bytes. Files it does not know (crash-* reproducers
found by fuzzing) are left alone.

    usage: tests/fuzz/make_corpus.py [OUT_DIR]
"""

import os
import struct
import sys

# ---- Builders -------------------------------------------------------------------------------


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mss(v=1460):
    return struct.pack("!BBH", 2, 4, v)


def wscale(v=7):
    return bytes([1, 3, 3, v])  # NOP WS


def sack_perm():
    return bytes([4, 2])


def ts(val=0x01020304, ecr=0):
    return struct.pack("!BBII", 8, 10, val, ecr)


def sack(*blocks):
    body = b"".join(struct.pack("!II", l, r) for l, r in blocks)
    return bytes([5, 2 + len(body)]) + body


NOP2 = bytes([1, 1])


def pad4(opts: bytes) -> bytes:
    return opts + b"\0" * (-len(opts) % 4)


def packet(flags=0x10, opts=b"", payload=b"", seq=1000, ack=0, window=65535,
           src=(10, 0, 0, 2), dst=(10, 0, 0, 100), sport=40000, dport=80, ip_opts=b"",
           total_len=None, frag=0x4000, proto=6, version=4, doff=None, raw_opts=False):
    """IPv4+TCP with valid checksums; keyword knobs produce the malformed variants."""
    opts = opts if raw_opts else pad4(opts)
    thl = 20 + len(opts)
    doff_words = thl // 4 if doff is None else doff
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (doff_words << 4) & 0xF0, flags,
                      window, 0, 0) + opts + payload
    ihl = 20 + len(ip_opts)
    total = ihl + len(tcp) if total_len is None else total_len
    saddr, daddr = bytes(src), bytes(dst)
    pseudo = saddr + daddr + struct.pack("!BBH", 0, proto, len(tcp) & 0xFFFF)
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", (version << 4) | (ihl // 4 & 0x0F), 0, total, 1, frag, 64,
                     proto, 0, saddr, daddr) + ip_opts
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + tcp


LINUX_SYN_OPTS = mss() + sack_perm() + ts() + wscale()

# ---- Seeds ----------------------------------------------------------------------------------

SEEDS = {
    # Valid packets.
    "syn_linux_options": packet(0x02, LINUX_SYN_OPTS, seq=0x12345678),
    "synack_linux_options": packet(0x12, mss(1400) + sack_perm() + ts(9, 0x01020304) + wscale(9),
                                   ack=0x12345679),
    "syn_mss_only": packet(0x02, mss(536)),
    "syn_no_options": packet(0x02),
    "syn_nop_nop_sackperm_no_ts": packet(0x02, mss() + NOP2 + sack_perm() + wscale(2)),
    "syn_wscale_15_clamped": packet(0x02, mss() + wscale(15)),
    "ack_pure": packet(0x10, ack=2000),
    "ack_timestamp": packet(0x10, NOP2 + ts(100, 200), ack=2000),
    "data_psh_ack": packet(0x18, NOP2 + ts(101, 200), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                           ack=2000),
    "data_odd_length": packet(0x10, b"", b"abc", ack=2000),
    "ack_sack_1": packet(0x10, NOP2 + ts() + NOP2 + sack((3000, 4000)), ack=2000),
    "ack_sack_3": packet(0x10, NOP2 + ts() + NOP2 + sack((3000, 4000), (5000, 6000),
                                                        (7000, 8000)), ack=2000),
    "ack_sack_4_no_ts": packet(0x10, NOP2 + sack((1, 2), (3, 4), (5, 6), (0xFFFFFFF0, 0x10)),
                               ack=2000),
    "fin_ack": packet(0x11, ack=2000),
    "rst": packet(0x04),
    "ip_options_ihl_6": packet(0x10, ip_opts=bytes([1, 1, 1, 0]), ack=2000),
    "total_len_zero_gso": packet(0x10, payload=b"x" * 200, total_len=0, ack=2000),
    "ethernet_padding": packet(0x10, ack=2000) + b"\0" * 6,
    "unknown_option_mptcp": packet(0x02, mss() + bytes([30, 4, 0, 0x81]) + wscale()),
    "eol_then_garbage": packet(0x10, mss() + bytes([0, 2, 1, 8]), ack=2000),
    "max_options_40_bytes": packet(0x10, NOP2 + ts() + NOP2 + sack((1, 2), (3, 4), (5, 6))),
    # Malformed IPv4/TCP headers, one per parser check.
    "ip_too_short_19": packet(0x10)[:19],
    "empty": b"",
    "not_ipv4_version_6": packet(0x10, version=6),
    "ipv6_header": bytes([0x60, 0, 0, 0, 0, 20, 6, 64]) + bytes(32) + packet(0x10)[20:],
    "bad_ihl_4": b"\x44" + packet(0x10)[1:],
    "bad_ihl_beyond_buffer": b"\x4f" + packet(0x10)[1:],
    "total_len_beyond_buffer": packet(0x10, total_len=1500),
    "total_len_below_header": packet(0x10, total_len=19),
    "fragment_more_fragments": packet(0x10, frag=0x2000),
    "fragment_offset": packet(0x10, frag=0x0010),
    "not_tcp_udp": packet(0x10, proto=17),
    "tcp_too_short": packet(0x10, total_len=36)[:36],
    "tcp_too_short_by_total_len": packet(0x10, total_len=30),
    "bad_doff_4": packet(0x10, doff=4),
    "bad_doff_beyond_segment": packet(0x10, doff=15),
    # Malformed options inside otherwise valid packets.
    "opt_mss_len_0": packet(0x02, bytes([2, 0, 0, 0])),
    "opt_mss_len_1": packet(0x02, bytes([2, 1, 0, 0])),
    "opt_mss_len_3": packet(0x02, bytes([2, 3, 5, 1])),
    "opt_ws_len_4": packet(0x02, bytes([3, 4, 7, 1])),
    "opt_sackperm_len_3": packet(0x02, bytes([4, 3, 0, 1])),
    "opt_ts_len_8": packet(0x10, bytes([8, 8]) + bytes(6)),
    "opt_sack_no_blocks": packet(0x10, bytes([1, 1, 5, 2])),
    "opt_sack_partial_block": packet(0x10, bytes([5, 9]) + bytes(10)),
    "opt_kind_at_last_byte": packet(0x10, bytes([1, 1, 1, 8]), raw_opts=True),
    "opt_length_past_end": packet(0x10, bytes([30, 12, 0, 0]), raw_opts=True),
    # Bare option areas (the harness also parses the whole input as options).
    "rawopts_linux_syn": pad4(LINUX_SYN_OPTS),
    "rawopts_sack_4": NOP2 + sack((1, 2), (3, 4), (5, 6), (7, 8)),
    "rawopts_sack_5_refused": sack((1, 2), (3, 4), (5, 6), (7, 8), (9, 10)),
    "rawopts_unknown_many": bytes([30, 2] * 40),
    "rawopts_ts_unaligned": bytes([1]) + ts(5, 6) + bytes([0]),
}


def main() -> int:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "packet")
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(SEEDS.items()):
        with open(os.path.join(out, f"seed-{name}.bin"), "wb") as f:
            f.write(data)
    print(f"make_corpus: wrote {len(SEEDS)} seeds to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
