"""Takeover figures from the probers' traces. Pure functions over parsed JSON lines.

Definitions (all times are time.time() seconds, shared by every namespace):

* ARP takeover: from the fault instant to the first ARP *reply* from the new holder's MAC.
* HTTP takeover: from the fault instant to the first successful GET answered by another node.
* Client-visible gap: the longest stretch without a successful GET, counted from the last
  success before the fault to the end of the trace.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ArpAnswer:
    t: float
    mac: str
    kind: str  # "reply" or "garp"


@dataclass(frozen=True)
class HttpSample:
    t: float
    end: float
    ok: bool
    node: str | None = None
    error: str | None = None


def _records(lines: Iterable[str]) -> Iterable[dict[str, object]]:
    for raw in lines:
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill, or stray output
        if isinstance(record, dict) and "event" not in record:
            yield record


def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_arp_lines(lines: Iterable[str]) -> list[ArpAnswer]:
    out = []
    for rec in _records(lines):
        t, mac, kind = _num(rec.get("t")), rec.get("mac"), rec.get("kind")
        if t is not None and isinstance(mac, str) and kind in ("reply", "garp"):
            out.append(ArpAnswer(t, mac, str(kind)))
    return sorted(out, key=lambda a: a.t)


def parse_http_lines(lines: Iterable[str]) -> list[HttpSample]:
    out = []
    for rec in _records(lines):
        t, end, ok = _num(rec.get("t")), _num(rec.get("end")), rec.get("ok")
        if t is None or end is None or not isinstance(ok, bool):
            continue
        node, err = rec.get("node"), rec.get("err")
        out.append(
            HttpSample(
                t,
                end,
                ok,
                node if isinstance(node, str) else None,
                err if isinstance(err, str) else None,
            )
        )
    return sorted(out, key=lambda s: s.t)


@dataclass(frozen=True)
class Takeover:
    fault_at: float
    old_mac: str | None
    new_mac: str | None
    arp_at: float | None
    garp_at: float | None
    old_node: str | None
    new_node: str | None
    http_at: float | None
    gap: float | None
    gap_from: float | None
    gap_to: float | None
    failed_requests: int

    @property
    def arp_takeover(self) -> float | None:
        return None if self.arp_at is None else self.arp_at - self.fault_at

    @property
    def http_takeover(self) -> float | None:
        return None if self.http_at is None else self.http_at - self.fault_at

    @property
    def garp_delay(self) -> float | None:
        return None if self.garp_at is None else self.garp_at - self.fault_at


def analyse_takeover(
    fault_at: float,
    arp: Iterable[ArpAnswer],
    http: Iterable[HttpSample],
    *,
    old_mac: str | None = None,
    new_mac: str | None = None,
    old_node: str | None = None,
    until: float | None = None,
) -> Takeover:
    """Figures for one fault. Unknown old/new holders are inferred from the traces.

    The old holder is whoever answered last before the fault; the new one is the first other
    answer after it (or ``new_mac`` if given: with a stale VIP the old node may keep answering).
    Records from ``until`` on are ignored, so one long trace can hold several faults.
    """
    end = float("inf") if until is None else until
    answers = [a for a in arp if a.t < end]
    samples = [s for s in http if s.t < end and s.end < end]
    if old_mac is None:
        before = [a for a in answers if a.kind == "reply" and a.t < fault_at]
        old_mac = before[-1].mac if before else None
    arp_at = garp_at = None
    for answer in answers:
        if answer.t < fault_at:
            continue
        wanted = answer.mac == new_mac if new_mac is not None else answer.mac != old_mac
        if not wanted:
            continue
        if answer.kind == "reply" and arp_at is None:
            arp_at = answer.t
            new_mac = answer.mac
        if answer.kind == "garp" and garp_at is None:
            garp_at = answer.t
            new_mac = new_mac or answer.mac

    successes = [s for s in samples if s.ok]
    if old_node is None:
        before_ok = [s for s in successes if s.end < fault_at]
        old_node = before_ok[-1].node if before_ok else None
    http_at, new_node = None, None
    for s in successes:
        if s.end >= fault_at and s.node != old_node:
            http_at, new_node = s.end, s.node
            break

    gap = gap_from = gap_to = None
    last_before = [s.end for s in successes if s.end < fault_at]
    after = [s.end for s in successes if s.end >= fault_at]
    if last_before and after:
        times = [last_before[-1], *after]
        gap_from, gap_to = max(itertools.pairwise(times), key=lambda p: p[1] - p[0])
        gap = gap_to - gap_from
    failed = sum(1 for s in samples if not s.ok and s.t >= fault_at)
    return Takeover(
        fault_at=fault_at,
        old_mac=old_mac,
        new_mac=new_mac,
        arp_at=arp_at,
        garp_at=garp_at,
        old_node=old_node,
        new_node=new_node,
        http_at=http_at,
        gap=gap,
        gap_from=gap_from,
        gap_to=gap_to,
        failed_requests=failed,
    )


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
