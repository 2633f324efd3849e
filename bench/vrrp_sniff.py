"""Log every VRRP advertisement seen on an interface, one JSON line each (stdlib only).

Run by the failover benchmark inside the lab's client namespace:

    python bench/vrrp_sniff.py --iface eth0 --duration 3600

Each line is ``{"t": <time.time() at receipt>, "src": "<IPv4 source>", "vrid": N, "prio": N,
"v": <VRRP version>}``. With these the benchmark knows, for each fault, when the old master's last
advert went out (so when a backup's Master_Down timer was last reset), when a resigning master
sent its priority-0 advert, and when the new master's first advert appeared.

A raw IPv4 socket for protocol 112 that joined 224.0.0.18: the kernel hands it only VRRP, so the
client's HTTP traffic costs the sniffer nothing.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence

from vipkeeper_lab.probe import StopFlag

IPPROTO_VRRP = 112
VRRP_GROUP = "224.0.0.18"
MAX_DURATION = 4 * 3600.0


def parse(datagram: bytes) -> dict[str, object] | None:
    """Source, VRID, priority and version of a raw IPv4 VRRP datagram (header included)."""
    if len(datagram) < 20:
        return None
    header_len = (datagram[0] & 0x0F) * 4
    payload = datagram[header_len:]
    if len(payload) < 8:
        return None
    return {
        "src": socket.inet_ntoa(datagram[12:16]),
        "vrid": payload[1],
        "prio": payload[2],
        "v": payload[0] >> 4,
    }


def sniff(iface: str, duration: float) -> int:
    stop = StopFlag()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP) as sock:
        # struct ip_mreqn: group, local address (any), interface index.
        mreqn = struct.pack(
            "=4s4si",
            socket.inet_aton(VRRP_GROUP),
            socket.inet_aton("0.0.0.0"),
            socket.if_nametoindex(iface),
        )
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        print(json.dumps({"event": "start", "t": time.time()}), flush=True)
        end = time.monotonic() + min(duration, MAX_DURATION)
        while not stop.requested and time.monotonic() < end:
            try:
                ready, _, _ = select.select([sock], [], [], 0.5)
            except InterruptedError:
                continue
            if not ready:
                continue
            datagram = sock.recv(4096)
            seen = time.time()
            parsed = parse(datagram)
            if parsed is not None:
                record = {"t": seen, **parsed}
                sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
                sys.stdout.flush()
        print(json.dumps({"event": "stop", "t": time.time()}), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iface", default="eth0")
    parser.add_argument("--duration", type=float, default=MAX_DURATION)
    args = parser.parse_args(argv)
    return sniff(args.iface, args.duration)


if __name__ == "__main__":
    sys.exit(main())
