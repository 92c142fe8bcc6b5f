#!/usr/bin/env python3
"""A full-duplex HTTP/1.1 stream for http-session.sh (curl reads its upload
with blocking reads, so it cannot show a watch's answers while the request
body is still open): POSTs to PATH a chunked body fed line by line from
stdin (one JSON request per line, sent as it arrives; the end of stdin ends
the body), and writes `HTTP <code>` then the response body to stdout as it
arrives (chunked or not), flushed at once.

Usage: http-stream.py HOST:PORT PATH < requests > responses
"""
import socket
import sys
import threading

host, port = sys.argv[1].rsplit(":", 1)
path = sys.argv[2]
sock = socket.create_connection((host, int(port)))
sock.sendall(
    ("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
     "Transfer-Encoding: chunked\r\n\r\n" % (path, sys.argv[1])).encode())
out = sys.stdout.buffer


last = [b"\n"]


def write(data):
    if data:
        out.write(data)
        out.flush()
        last[0] = data[-1:]


def read_response():
    f = sock.makefile("rb")
    status = f.readline().split()
    out.write(b"HTTP " + (status[1] if len(status) > 1 else b"?") + b"\n")
    out.flush()
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = f.readline()
            if not size:
                break
            n = int(size.split(b";")[0], 16)
            if n == 0:
                break
            write(f.read(n))
            f.readline()
    else:
        write(f.read(int(headers.get("content-length", "0"))))
    if last[0] != b"\n":
        write(b"\n[no newline at end]\n")
    write(b"[response ended]\n")


reader = threading.Thread(target=read_response, daemon=True)
reader.start()
try:
    for line in sys.stdin.buffer:
        sock.sendall(b"%x\r\n%s\r\n" % (len(line), line))
    sock.sendall(b"0\r\n\r\n")
except OSError:
    pass
reader.join()
