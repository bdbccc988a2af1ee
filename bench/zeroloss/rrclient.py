#!/usr/bin/env python3
"""One keep-alive request/response connection for bench/zeroloss_bench.sh.

http:  GET / over one HTTP/1.1 connection (http.client), a response must be 200 with the body
       the server was given (--expect-len bytes).
redis: INCR zeroloss on one connection speaking RESP; each answer must be the previous + 1 (a
       command lost or executed twice across the crash shows as a jump).
A request every --interval-ms after the previous response, for --duration seconds. Any error
(exception, wrong answer) is counted; the client then reconnects (counted) and goes on.
Prints one line:
  rrclient: proto=P requests=N errors=E reconnects=R max_gap_ms=G max_gap_end=T gaps_over_20ms=...
where the gap is the time between two consecutive responses and T its end (unix seconds).
"""
import argparse
import http.client
import socket
import sys
import time


class Redis:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.last = None

    def request(self):
        self.sock.sendall(b"*2\r\n$4\r\nINCR\r\n$8\r\nzeroloss\r\n")
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        if not line.startswith(b":"):
            raise ValueError("unexpected answer %r" % line)
        value = int(line[1:])
        if self.last is not None and value != self.last + 1:
            bad = self.last
            self.last = value
            raise ValueError("INCR answered %d after %d" % (value, bad))
        self.last = value

    def close(self):
        self.sock.close()


class Http:
    def __init__(self, host, port, timeout, expect_len):
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.expect_len = expect_len

    def request(self):
        # auto_open would reconnect silently: a reconnect must be seen and counted.
        self.conn.auto_open = 0
        self.conn.request("GET", "/index.html")
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200 or len(body) != self.expect_len:
            raise ValueError("status %d, %d bytes" % (resp.status, len(body)))
        if resp.will_close:
            raise ConnectionError("the server closed the keep-alive connection")

    def close(self):
        self.conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto", choices=("http", "redis"), required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--interval-ms", type=float, default=2)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--expect-len", type=int, default=64)
    a = ap.parse_args()

    def connect():
        if a.proto == "redis":
            return Redis(a.host, a.port, a.timeout)
        return Http(a.host, a.port, a.timeout, a.expect_len)

    errors = reconnects = requests = 0
    max_gap = 0.0
    max_gap_end = 0.0
    gaps = []
    c = connect()
    end = time.time() + a.duration
    last = None
    while time.time() < end:
        try:
            c.request()
        except Exception as e:  # noqa: BLE001 - every failure is counted and reported
            errors += 1
            print("rrclient: error at %.3f: %s" % (time.time(), e), file=sys.stderr, flush=True)
            try:
                c.close()
            except OSError:
                pass
            time.sleep(0.01)
            try:
                c = connect()
                reconnects += 1
            except OSError as e2:
                print("rrclient: reconnect failed: %s" % e2, file=sys.stderr, flush=True)
            last = None
            continue
        now = time.time()
        requests += 1
        if last is not None:
            gap = now - last
            if gap > max_gap:
                max_gap, max_gap_end = gap, now
            if gap > 0.02:
                gaps.append("%.1f@%.3f" % (gap * 1000, now))
        last = now
        time.sleep(a.interval_ms / 1000)
    c.close()
    print("rrclient: proto=%s requests=%d errors=%d reconnects=%d max_gap_ms=%.1f max_gap_end=%.3f "
          "gaps_over_20ms=%s" % (a.proto, requests, errors, reconnects, max_gap * 1000,
                                 max_gap_end, ",".join(gaps) or "-"), flush=True)
    return 0 if errors == 0 and reconnects == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
