"""Client-side probers, run as ``python -m vipkeeper_lab.probe`` inside the client namespace.

Each prober prints one JSON object per line on stdout, every timestamp being ``time.time()``
(CLOCK_REALTIME): all namespaces share that clock, so the lab can compare a prober's timestamps
with the instant it injected a fault from another process.

* ``arp``: asks "who has VIP?" every few milliseconds on a raw AF_PACKET socket and reports every
  answer with the MAC that gave it. The request is an RFC 5227 ARP probe (sender IP 0.0.0.0): the
  nodes answer it but learn nothing, so the prober does not warm their neighbour caches.
* ``http``: GETs the VIP every 10 ms on a fresh connection with a ~50 ms timeout, reporting which
  node answered; a fresh connection per request follows the client kernel's current ARP entry,
  exactly as a new client connection would.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from vipkeeper_lab.measure import (
    ArpAnswer,
    HttpSample,
    Takeover,
    analyse_takeover,
    parse_arp_lines,
    parse_http_lines,
)
from vipkeeper_lab.procs import Proc

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = b"\xff" * 6
UNSPECIFIED = ipaddress.IPv4Address(0)
_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
#: A prober is a helper of a bounded experiment: it ends by itself even if nobody stops it.
MAX_DURATION = 900.0


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def build_arp_request(
    src_mac: bytes,
    target: ipaddress.IPv4Address,
    sender: ipaddress.IPv4Address = UNSPECIFIED,
) -> bytes:
    """Broadcast "who has target?"; with sender 0.0.0.0 this is an RFC 5227 ARP probe."""
    eth = _ETH.pack(BROADCAST, src_mac, ETH_P_ARP)
    arp = _ARP.pack(
        1, ETH_P_IP, 6, 4, ARP_REQUEST, src_mac, sender.packed, b"\0" * 6, target.packed
    )
    return eth + arp


def parse_arp(frame: bytes, target: ipaddress.IPv4Address) -> tuple[str, str] | None:
    """(kind, sender MAC) if ``frame`` is an ARP message about ``target``, else None.

    kind is "reply" for an answer, "garp" for a gratuitous announcement (a request or reply whose
    sender and target IP are both the VIP), as keepalived and vipkeeper send on takeover.
    """
    if len(frame) < _ETH.size + _ARP.size:
        return None
    _dst, _src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4) or spa != target.packed:
        return None
    if tpa == target.packed:
        return "garp", mac_text(sha)
    if op == ARP_REPLY:
        return "reply", mac_text(sha)
    return None


class StopFlag:
    """Set by SIGTERM/SIGINT/SIGHUP: a probe loop ends cleanly and flushes what it measured."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def arp_probe(iface: str, target: ipaddress.IPv4Address, interval: float, duration: float) -> int:
    stop = StopFlag()
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((iface, ETH_P_ARP))
        own_mac = sock.getsockname()[4]
        request = build_arp_request(own_mac, target)
        _emit({"event": "start", "t": time.time(), "mac": mac_text(own_mac), "target": str(target)})
        end = time.monotonic() + min(duration, MAX_DURATION)
        next_send = time.monotonic()
        sent = 0
        while not stop.requested and time.monotonic() < end:
            now = time.monotonic()
            if now >= next_send:
                sock.send(request)
                sent += 1
                # Keep the cadence fixed rather than drifting by the loop's own run time.
                next_send = max(next_send + interval, now)
            try:
                ready, _, _ = select.select([sock], [], [], max(next_send - time.monotonic(), 0))
            except InterruptedError:
                continue
            if not ready:
                continue
            frame = sock.recv(2048)
            seen = time.time()
            parsed = parse_arp(frame, target)
            if parsed is not None and parsed[1] != mac_text(own_mac):
                _emit({"t": seen, "kind": parsed[0], "mac": parsed[1]})
        _emit({"event": "stop", "t": time.time(), "sent": sent})
    return 0


def http_get(host: str, port: int, timeout: float) -> tuple[bool, str | None, str | None]:
    """(ok, answering node, error) for one GET / on a new connection."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read(256).decode(errors="replace").strip()
        if response.status != 200:
            return False, None, f"HTTP {response.status}"
        return True, body or None, None
    except (OSError, http.client.HTTPException) as exc:
        return False, None, type(exc).__name__
    finally:
        conn.close()


def http_probe(host: str, port: int, interval: float, timeout: float, duration: float) -> int:
    stop = StopFlag()
    _emit({"event": "start", "t": time.time(), "target": f"{host}:{port}"})
    end = time.monotonic() + min(duration, MAX_DURATION)
    next_start = time.monotonic()
    while not stop.requested and time.monotonic() < end:
        started = time.time()
        ok, node, error = http_get(host, port, timeout)
        record: dict[str, Any] = {"t": started, "end": time.time(), "ok": ok}
        if ok:
            record["node"] = node
        else:
            record["err"] = error
        _emit(record)
        next_start += interval
        delay = next_start - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_start = time.monotonic()
    _emit({"event": "stop", "t": time.time()})
    return 0


class Probes:
    """The two probers of one measurement, as started by ``Lab.start_probes``."""

    def __init__(self, arp: Proc | None, http: Proc) -> None:
        self.arp = arp
        self.http = http

    def stop(self) -> None:
        for proc in (self.arp, self.http):
            if proc is not None:
                proc.stop()

    def arp_answers(self) -> list[ArpAnswer]:
        return [] if self.arp is None else parse_arp_lines(self.arp.log_text().splitlines())

    def http_samples(self) -> list[HttpSample]:
        return parse_http_lines(self.http.log_text().splitlines())

    def wait_http(
        self, timeout: float, *, node: str | None = None, after: float = 0.0
    ) -> HttpSample | None:
        """First successful GET (from ``node`` if given) that ended after ``after``; bounded."""
        deadline = time.monotonic() + timeout
        while True:
            for sample in self.http_samples():
                if sample.ok and sample.end >= after and node in (None, sample.node):
                    return sample
            if time.monotonic() >= deadline or not self.http.alive():
                return None
            time.sleep(0.05)

    def takeover(
        self,
        fault_at: float,
        *,
        old_mac: str | None = None,
        new_mac: str | None = None,
        old_node: str | None = None,
        until: float | None = None,
    ) -> Takeover:
        return analyse_takeover(
            fault_at,
            self.arp_answers(),
            self.http_samples(),
            old_mac=old_mac,
            new_mac=new_mac,
            old_node=old_node,
            until=until,
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vipkeeper_lab.probe")
    sub = parser.add_subparsers(dest="command", required=True)
    arp = sub.add_parser("arp", help="ARP-probe a VIP and report which MAC answers")
    arp.add_argument("--iface", default="eth0")
    arp.add_argument("--target", required=True, type=ipaddress.IPv4Address)
    arp.add_argument("--interval", type=float, default=0.005)
    arp.add_argument("--duration", type=float, default=MAX_DURATION)
    web = sub.add_parser("http", help="GET a VIP repeatedly and report which node answers")
    web.add_argument("--host", required=True)
    web.add_argument("--port", type=int, default=80)
    web.add_argument("--interval", type=float, default=0.01)
    web.add_argument("--timeout", type=float, default=0.05)
    web.add_argument("--duration", type=float, default=MAX_DURATION)
    args = parser.parse_args(argv)
    if args.command == "arp":
        return arp_probe(args.iface, args.target, args.interval, args.duration)
    return http_probe(args.host, args.port, args.interval, args.timeout, args.duration)


if __name__ == "__main__":
    sys.exit(main())
