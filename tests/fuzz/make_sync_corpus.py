#!/usr/bin/python3
"""Writes the seed corpus of fuzz_sync to tests/fuzz/corpus/sync/ (or the directory given).

Each seed is a whole sync frame (sync/wire.h), sealed with the harness's key (bytes 0..31, key
id 1) so Verifier::open() accepts it and the fuzzer starts from authentic frames, plus raw
payloads (fuzz_sync also decodes the input as bare sections). Deterministic.

    usage: tests/fuzz/make_sync_corpus.py [OUT_DIR]
"""

import hashlib
import hmac
import os
import struct
import sys

KEY = bytes(range(32))
# Action -> item length in bytes (sync/wire.h). FLOW_UPSERT: 168 in revision 1.0 (the seeds
# below that use it), 192 from revision 1.1 on (splice fields appended).
ITEM = {1: 16, 2: 16, 3: 168, 4: 44, 5: 4, 6: 16, 7: 52}
UPSERT_V11 = 192


def section(action, items, item_len=None):
    n = (item_len or ITEM[action]) // 4
    return struct.pack("!BBH", action, n, len(items)) + b"".join(items)


def frame(payload, counter=1, node=1, epoch=1, key_id=1):
    hdr = struct.pack("!HBBHHQII", 0x5453, 1, 0, key_id, len(payload), counter, node, epoch)
    mac = hmac.new(KEY, hdr + payload, hashlib.sha256).digest()[:16]
    return hdr + payload + mac


def heartbeat(role=1, prio=100, flags=1, epoch=3, flows=16, interval=10):
    return struct.pack("!BBBBIII", role, prio, flags, 0, epoch, flows, interval)


def upsert(seq, i):
    key = bytes(10) + b"\xff\xff" + struct.pack("!I", 0x0A000000 + i)
    key += bytes(10) + b"\xff\xff" + struct.pack("!I", 0xC0A80001)
    key += struct.pack("!HH", 40000 + i, 443)
    rest = bytes(168 - 8 - len(key))
    return struct.pack("!Q", seq) + key + rest


def splice_upsert(seq, i):
    # Mode 1 (splice), established, then the 24 bytes of splice fields (sync/wire.h).
    base = bytearray(upsert(seq, i))
    base[8 + 36 + 36 + 4] = 1
    base[8 + 36 + 36 + 5] = 3
    fields = struct.pack("!BBBBIIIIHH", 0x06, 9, 7, 0, 0x1000, 0xCAFE, 11, 12, 501, 1460)
    return bytes(base) + fields


def ack(cum, ranges):
    body = struct.pack("!QQB3x", 5, cum, len(ranges))
    for i in range(4):
        d, n = ranges[i] if i < len(ranges) else (0, 0)
        body += struct.pack("!II", d, n)
    return body


SEEDS = {
    "seed-heartbeat.bin": frame(section(1, [heartbeat()])),
    "seed-updates.bin": frame(
        section(2, [struct.pack("!QQ", 1000, 1)])
        + section(3, [upsert(1, 1), upsert(2, 2)])
        + section(4, [struct.pack("!Q", 3) + upsert(0, 3)[8:44]])
        + section(6, [struct.pack("!QII", 4, 7, 2)]),
        counter=2,
    ),
    "seed-bulk-request.bin": frame(section(5, [struct.pack("!I", 7)]), counter=3, node=2),
    "seed-ack.bin": frame(section(7, [ack(10, [(2, 3), (9, 1)])]), counter=4, node=2),
    "seed-unknown-key.bin": frame(section(5, [struct.pack("!I", 1)]), key_id=9),
    "seed-raw-sections.bin": section(1, [heartbeat()]) + section(7, [ack(1, [])]),
    "seed-splice-upsert.bin": frame(
        section(2, [struct.pack("!QQ", 1001, 1)])
        + section(3, [splice_upsert(1, 4), splice_upsert(2, 5)], UPSERT_V11),
        counter=5,
    ),
    "seed-longer-item.bin": struct.pack("!BBH", 5, 2, 1) + struct.pack("!II", 7, 0),
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "sync")
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
