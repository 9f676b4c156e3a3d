#!/usr/bin/env python3
"""A bounded forwardAuth client for per_request.sh: exactly COUNT requests over CONNS
keep-alive connections, each connection one request at a time, and the answers counted.

    send.py PORT COUNT CONNS [TOKENS_FILE | --token TOKEN] [--timeout SECONDS]

With a tokens file, request i carries token i (fresh tokens: COUNT must not exceed the
file); with --token every request carries that token. Prints the answers per status
("200 19996") and fails on a connection error or past the timeout (default 600 s).
"""

import socket
import sys
import time
from collections import Counter


def request(token):
    return (
        "GET /verify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "X-Forwarded-Method: GET\r\nX-Forwarded-Uri: /api/v1/mcp/servers\r\n"
        "X-Forwarded-Host: api.example.test\r\nX-Forwarded-Proto: https\r\n"
        "X-Forwarded-For: 203.0.113.9\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


def read_answer(sock, buf):
    """Reads one answer from sock (leftover bytes in buf); returns (status, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-answer")
        buf += chunk
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-body")
        buf += chunk
    return status, buf[length:]


def main():
    args = sys.argv[1:]
    timeout = 600.0
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i : i + 2]
    port, count, conns = int(args[0]), int(args[1]), int(args[2])
    if args[3] == "--token":
        tokens = [args[4]]
    else:
        with open(args[3]) as f:
            tokens = [line.strip() for line in f if line.strip()]
        if len(tokens) < count:
            sys.exit(f"send.py: {len(tokens)} tokens for {count} requests")
    deadline = time.monotonic() + timeout
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    for s in socks:
        s.settimeout(timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bufs = [b""] * conns
    statuses = Counter()
    sent = 0
    while sent < count:
        if time.monotonic() > deadline:
            sys.exit(f"send.py: timed out after {sent} requests")
        batch = socks[: min(conns, count - sent)]
        for j, s in enumerate(batch):
            s.sendall(request(tokens[(sent + j) % len(tokens)]))
        for j, s in enumerate(batch):
            status, bufs[j] = read_answer(s, bufs[j])
            statuses[status] += 1
        sent += len(batch)
    for s in socks:
        s.close()
    print(" ".join(f"{k} {v}" for k, v in sorted(statuses.items())))


if __name__ == "__main__":
    main()
