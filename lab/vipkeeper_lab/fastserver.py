"""A fast local target for health-check benchmarks: a fixed HTTP 200, and a bare TCP acceptor.

    python -m vipkeeper_lab.fastserver --http-port 8080 --tcp-port 8081 --cpu 1

One process, one thread, one epoll loop over non-blocking sockets: every connection costs a
handful of system calls and no Python object beyond its socket. The lab's ``httpd`` (a thread
per connection) tops out far below what one core of checks can ask for, so measuring checks
against it would measure it. On the HTTP port each connection's first bytes (the request) are
answered with a fixed ``200 OK`` and the connection is closed; on the TCP port connections are
accepted and closed at once (a tcp check only needs the handshake, but unaccepted connections
would fill the backlog and stall later handshakes).

On SIGTERM/SIGINT it prints one JSON line with its counters and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Final

READY_LINE: Final = "fastserver ready"
RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
    b"Connection: close\r\n\r\nok\n"
)
#: Connections accepted per listener wake-up before other sockets get a turn.
ACCEPT_BATCH: Final = 256
BACKLOG: Final = 4096


def _listener(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(BACKLOG)
    return sock


class _Stop:
    requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def serve(address: str, http_port: int, tcp_port: int | None) -> dict[str, int]:
    counters = {"http_answered": 0, "http_dropped": 0, "tcp_accepted": 0}
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    http = _listener(address, http_port)
    tcp = _listener(address, tcp_port) if tcp_port else None
    poller = select.epoll()
    poller.register(http.fileno(), select.EPOLLIN)
    if tcp is not None:
        poller.register(tcp.fileno(), select.EPOLLIN)
    http_fd = http.fileno()
    tcp_fd = tcp.fileno() if tcp is not None else -1
    conns: dict[int, socket.socket] = {}
    print(f"{READY_LINE} http {http_port} tcp {tcp_port or '-'}", flush=True)
    try:
        while not stop.requested:
            try:
                events = poller.poll(0.5)
            except InterruptedError:
                continue
            for fd, _mask in events:
                if fd == http_fd:
                    for _ in range(ACCEPT_BATCH):
                        try:
                            conn, _peer = http.accept()
                        except BlockingIOError:
                            break
                        except OSError:
                            break  # EMFILE and the like: retry on the next wake-up
                        conn.setblocking(False)
                        conns[conn.fileno()] = conn
                        poller.register(conn.fileno(), select.EPOLLIN)
                elif fd == tcp_fd and tcp is not None:
                    for _ in range(ACCEPT_BATCH):
                        try:
                            conn, _peer = tcp.accept()
                        except OSError:
                            break
                        conn.close()
                        counters["tcp_accepted"] += 1
                else:
                    conn = conns.pop(fd)
                    try:
                        data = conn.recv(4096)
                        if data:
                            # A check sends its whole request in one write: answering on its
                            # first bytes needs no request parser.
                            conn.send(RESPONSE)
                            counters["http_answered"] += 1
                        else:
                            counters["http_dropped"] += 1
                    except OSError:
                        counters["http_dropped"] += 1
                    # Closing the fd also drops it from the epoll set.
                    conn.close()
    finally:
        for conn in conns.values():
            conn.close()
        poller.close()
        http.close()
        if tcp is not None:
            tcp.close()
    return counters


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vipkeeper_lab.fastserver")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--tcp-port", type=int, default=None)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    counters = serve(args.address, args.http_port, args.tcp_port)
    print(json.dumps({"event": "stop", **counters}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
