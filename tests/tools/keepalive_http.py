#!/usr/bin/env python3
"""Keep-alive HTTP server and client for the re-splice tests (standard library only).

server --bind ADDR --port P --name NAME
    HTTP/1.1 with keep-alive. GET /id answers NAME; GET /health answers ok; GET /big?bytes=N
    &delay=S streams N bytes in 16 KiB chunks, S seconds apart.
client --host H --port P --conns N --rounds R --gate DIR [--names a,b]
    Opens N keep-alive connections and sends one GET /id on each per round. Before round r > 1
    it waits for DIR/go.R; after each round it writes DIR/done.R with one line per connection
    ("conn LOCALPORT NAME"). Fails (exit 1) on any error, on an unexpected body, and if a
    connection's local port changes (http.client would silently reconnect).
probe --host H --port P --gate DIR
    One keep-alive connection: a GET /id, then DIR/ready; waits for DIR/go, sends GET /id at
    once and prints the wall-clock time (time.time()) its response completed and the body.
stream --host H --port P --bytes N --delay S
    One GET /big; prints "complete" or the error and how long after the last byte it came.
"""
import argparse
import http.client
import http.server
import os
import socketserver
import sys
import time
import urllib.parse


def serve(args):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            if url.path in ("/id", "/health"):
                body = (args.name if url.path == "/id" else "ok").encode() + b"\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if url.path == "/big":
                q = urllib.parse.parse_qs(url.query)
                n = int(q.get("bytes", ["1000000"])[0])
                delay = float(q.get("delay", ["0"])[0])
                self.send_response(200)
                self.send_header("Content-Length", str(n))
                self.end_headers()
                chunk = b"x" * 16384
                while n > 0:
                    self.wfile.write(chunk[: min(n, len(chunk))])
                    self.wfile.flush()
                    n -= min(n, len(chunk))
                    if delay:
                        time.sleep(delay)
                return
            self.send_error(404)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server((args.bind, args.port), Handler).serve_forever()


def wait_file(path, timeout=120):
    end = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > end:
            raise RuntimeError("timed out waiting for " + path)
        time.sleep(0.01)


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read().decode()


def client(args):
    names = set(args.names.split(","))
    conns = [http.client.HTTPConnection(args.host, args.port, timeout=30) for _ in range(args.conns)]
    ports = [None] * args.conns
    for r in range(1, args.rounds + 1):
        if r > 1:
            wait_file(os.path.join(args.gate, "go.%d" % r))
        lines = []
        for i, c in enumerate(conns):
            try:
                status, body = get(c, "/id")
            except Exception as e:  # noqa: BLE001 - any failure is the test's result
                print("round %d conn %d: %s: %s" % (r, i, type(e).__name__, e), flush=True)
                return 1
            port = c.sock.getsockname()[1] if c.sock else None
            if status != 200 or body.strip() not in names:
                print("round %d conn %d: status %d body %r" % (r, i, status, body), flush=True)
                return 1
            if ports[i] is not None and port != ports[i]:
                print("round %d conn %d: reconnected (port %s -> %s)" % (r, i, ports[i], port),
                      flush=True)
                return 1
            ports[i] = port
            lines.append("conn %d %s" % (port, body.strip()))
        with open(os.path.join(args.gate, "done.%d.tmp" % r), "w") as f:
            f.write("\n".join(lines) + "\n")
        os.rename(os.path.join(args.gate, "done.%d.tmp" % r), os.path.join(args.gate, "done.%d" % r))
        print("round %d ok: %s" % (r, " ".join(l.split()[2] for l in lines)), flush=True)
    return 0


def probe(args):
    c = http.client.HTTPConnection(args.host, args.port, timeout=30)
    status, body = get(c, "/id")
    port = c.sock.getsockname()[1]
    with open(os.path.join(args.gate, "ready"), "w") as f:
        f.write(body)
    wait_file(os.path.join(args.gate, "go"))
    try:
        status, body = get(c, "/id")
    except Exception as e:  # noqa: BLE001
        print("error %s: %s" % (type(e).__name__, e), flush=True)
        return 1
    done = time.time()
    same = c.sock is not None and c.sock.getsockname()[1] == port
    print("%.6f %d %s %s" % (done, status, body.strip(), "same" if same else "reconnected"),
          flush=True)
    return 0 if status == 200 and same else 1


def stream(args):
    c = http.client.HTTPConnection(args.host, args.port, timeout=60)
    c.request("GET", "/big?bytes=%d&delay=%s" % (args.bytes, args.delay))
    r = c.getresponse()
    got = 0
    last = time.time()
    try:
        while True:
            b = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
            if not b:
                break
            got += len(b)
            last = time.time()
    except Exception as e:  # noqa: BLE001
        print("error %s after %d bytes, %.3f s after the last byte" %
              (type(e).__name__, got, time.time() - last), flush=True)
        return 0
    if got == args.bytes:
        print("complete %d bytes at %.3f" % (got, time.time()), flush=True)
    else:
        print("short %d bytes, %.3f s after the last byte" % (got, time.time() - last), flush=True)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--name", required=True)
    for name in ("client", "probe", "stream"):
        c = sub.add_parser(name)
        c.add_argument("--host", required=True)
        c.add_argument("--port", type=int, default=80)
        c.add_argument("--gate", default=".")
        c.add_argument("--conns", type=int, default=8)
        c.add_argument("--rounds", type=int, default=3)
        c.add_argument("--names", default="backend-1,backend-2")
        c.add_argument("--bytes", type=int, default=4000000)
        c.add_argument("--delay", default="0.02")
    args = p.parse_args()
    if args.cmd == "server":
        serve(args)
        return 0
    return {"client": client, "probe": probe, "stream": stream}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
