#!/usr/bin/env python3
"""Prints how many BPF programs are attached at tcx ingress of each named interface (in the
caller's network namespace): BPF_PROG_QUERY with BPF_TCX_INGRESS, no bpftool needed.
Usage: tcx_query.py IFNAME...   ->  "IFNAME COUNT" lines; exit 1 if the query itself fails."""
import ctypes
import os
import socket
import struct
import sys

NR_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
BPF_PROG_QUERY = 16
BPF_TCX_INGRESS = 46
ATTR_SIZE = 64  # up to and including query.revision

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
rc = 0
for name in sys.argv[1:]:
    attr = ctypes.create_string_buffer(ATTR_SIZE)
    # query: target_ifindex, attach_type, query_flags, attach_flags, prog_ids (NULL), prog_cnt 0
    struct.pack_into("=IIIIQI", attr, 0, socket.if_nametoindex(name), BPF_TCX_INGRESS, 0, 0, 0, 0)
    if libc.syscall(NR_BPF, BPF_PROG_QUERY, attr, ATTR_SIZE) != 0:
        err = ctypes.get_errno()
        print(f"{name} error {os.strerror(err)}", file=sys.stderr)
        rc = 1
        continue
    print(f"{name} {struct.unpack_from('=I', attr, 24)[0]}")
sys.exit(rc)
