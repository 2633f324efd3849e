"""Dual-master and no-master intervals of one chaos cycle, judged. Pure: observations in, verdict out.

Observations (all times time.time(), shared by every namespace):

* per node, the VIP being added to / removed from its interface (``ip monitor address``);
* per node, being cut off the segment (power cut, link down) and reconnected;
* the client's ARP probe answers, each with the MAC that gave it.

A node *holds* the VIP while the address is configured and it is connected: a power-cut node's
stale address reaches nobody. Two or more holders, or two or more MACs answering ARP, is a dual
master; no holder is a no master. (ARP silence alone is not counted as no master: under injected
loss it is mostly lost probes.)

Judgement, against the targets of the chaos run:

* a dual master is measured from the instant the faults that began before it had all cleared
  (a dual master *during* a fault is the fault's doing) and must not exceed one advert interval
  + 10 ms;
* a no master is measured whole and must not exceed the taking-over backup's
  Master_Down_Interval + 50 ms.

An interval still open when the observation ends is reported as unended: always a violation.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from vipkeeper_agent.vrrp.timers import advert_interval, master_down_interval
from vipkeeper_lab.measure import ArpAnswer

#: Targets: slack on top of the protocol's own bounds.
DUAL_SLACK = 0.010
NONE_SLACK = 0.050
DUAL = "dual"
NONE = "none"


@dataclass(frozen=True)
class HoldEvent:
    t: float
    node: str
    held: bool


@dataclass(frozen=True)
class LinkEvent:
    t: float
    node: str
    connected: bool


@dataclass(frozen=True)
class Window:
    """One disturbance: from its injection to the instant it cleared (equal if instantaneous)."""

    start: float
    clear: float


@dataclass(frozen=True)
class Bounds:
    dual: float
    none: float


def bounds(interval_cs: int, version: int, takeover_priority: int) -> Bounds:
    return Bounds(
        dual=advert_interval(interval_cs) + DUAL_SLACK,
        none=master_down_interval(takeover_priority, interval_cs, version) + NONE_SLACK,
    )


@dataclass(frozen=True)
class Observations:
    start: float
    end: float
    #: Nodes with the VIP configured, and nodes cut off, at ``start``.
    holders: frozenset[str]
    disconnected: frozenset[str]
    holds: tuple[HoldEvent, ...] = ()
    links: tuple[LinkEvent, ...] = ()
    arp: tuple[ArpAnswer, ...] = ()
    #: MAC -> node name, to name the nodes of an ARP dual master.
    macs: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Interval:
    kind: str
    start: float
    #: None: still open when the observation ended.
    end: float | None
    nodes: frozenset[str]
    source: str  # "vip", "arp" or "vip+arp"


@dataclass(frozen=True)
class Judged:
    interval: Interval
    duration: float
    #: What the target bounds: a dual master's part after the faults cleared, a no master whole.
    measured: float
    bound: float

    @property
    def unended(self) -> bool:
        return self.interval.end is None

    @property
    def violation(self) -> bool:
        return self.unended or self.measured > self.bound


@dataclass(frozen=True)
class Verdict:
    duals: tuple[Judged, ...]
    nones: tuple[Judged, ...]

    @property
    def dual_violations(self) -> int:
        return sum(j.violation for j in self.duals)

    @property
    def none_violations(self) -> int:
        return sum(j.violation for j in self.nones)

    @property
    def unended(self) -> int:
        return sum(j.unended for j in (*self.duals, *self.nones))


# ----- the holders' step function --------------------------------------------------------------


def holder_intervals(obs: Observations) -> list[Interval]:
    """Dual and no-master intervals from the VIP and link events (effective holders)."""
    configured = set(obs.holders)
    cut = set(obs.disconnected)
    changes: list[tuple[float, str, bool, bool]] = [
        *((e.t, e.node, True, e.held) for e in obs.holds if obs.start <= e.t <= obs.end),
        *((e.t, e.node, False, e.connected) for e in obs.links if obs.start <= e.t <= obs.end),
    ]
    changes.sort(key=lambda c: c[0])
    out: list[Interval] = []
    open_kind: str | None = None
    open_at = obs.start
    open_nodes: set[str] = set()

    def settle(at: float) -> None:
        nonlocal open_kind, open_at, open_nodes
        effective = configured - cut
        kind = DUAL if len(effective) >= 2 else NONE if not effective else None
        if kind != open_kind:
            if open_kind is not None:
                out.append(Interval(open_kind, open_at, at, frozenset(open_nodes), "vip"))
            open_kind, open_at, open_nodes = kind, at, set()
        open_nodes |= effective

    settle(obs.start)
    # Events stamped alike are one change: no zero-length state between them.
    for at, group in itertools.groupby(changes, key=lambda c: c[0]):
        for _, node, is_hold, value in group:
            if is_hold:
                (configured.add if value else configured.discard)(node)
            else:
                (cut.discard if value else cut.add)(node)
        settle(at)
    if open_kind is not None:
        out.append(Interval(open_kind, open_at, None, frozenset(open_nodes), "vip"))
    return out


# ----- ARP -------------------------------------------------------------------------------------


def arp_segments(
    answers: Iterable[ArpAnswer], gap: float, start: float, end: float
) -> dict[str, list[tuple[float, float]]]:
    """Per MAC, the stretches in which it answered, answers at most ``gap`` apart."""
    per_mac: dict[str, list[tuple[float, float]]] = {}
    for answer in sorted(answers, key=lambda a: a.t):
        if answer.kind != "reply" or not start <= answer.t <= end:
            continue
        segments = per_mac.setdefault(answer.mac, [])
        if segments and answer.t - segments[-1][1] <= gap:
            segments[-1] = (segments[-1][0], answer.t)
        else:
            segments.append((answer.t, answer.t))
    return per_mac


def arp_dual_intervals(obs: Observations, gap: float) -> list[Interval]:
    """Stretches in which two or more MACs answered ARP for the VIP."""
    segments = arp_segments(obs.arp, gap, obs.start, obs.end)
    # Sweep: +1 at a segment's start, -1 at its end; starts sort first so that touching or
    # one-answer segments still count as overlapping.
    edges = [(s, 0, mac) for mac, segs in segments.items() for s, _ in segs]
    edges += [(e, 1, mac) for mac, segs in segments.items() for _, e in segs]
    edges.sort(key=lambda edge: (edge[0], edge[1]))
    names = obs.macs or {}
    active: dict[str, int] = {}
    out: list[Interval] = []
    opened: float | None = None
    seen: set[str] = set()
    for at, is_end, mac in edges:
        if is_end:
            active[mac] -= 1
            if not active[mac]:
                del active[mac]
        else:
            active[mac] = active.get(mac, 0) + 1
        if len(active) >= 2:
            if opened is None:
                opened, seen = at, set()
            seen |= set(active)
        elif opened is not None:
            # Still answering when the observation ended: not shown to have ended.
            end: float | None = None if at >= obs.end - gap else at
            nodes = frozenset(names.get(m, m) for m in seen)
            out.append(Interval(DUAL, opened, end, nodes, "arp"))
            opened = None
    return out


# ----- merging and judging ---------------------------------------------------------------------


def _end(interval: Interval, horizon: float) -> float:
    return horizon if interval.end is None else interval.end


def merge(intervals: Iterable[Interval], horizon: float) -> list[Interval]:
    """Overlapping intervals of one kind as one (sources and nodes united; open if any is)."""
    out: list[Interval] = []
    for item in sorted(intervals, key=lambda i: i.start):
        if out and item.kind == out[-1].kind and item.start <= _end(out[-1], horizon):
            last = out[-1]
            sources = sorted(set(last.source.split("+")) | set(item.source.split("+")))
            end = None if last.end is None or item.end is None else max(last.end, item.end)
            out[-1] = Interval(
                last.kind, last.start, end, last.nodes | item.nodes, "+".join(reversed(sources))
            )
        else:
            out.append(item)
    return out


def judge(interval: Interval, windows: Sequence[Window], limit: Bounds, horizon: float) -> Judged:
    end = _end(interval, horizon)
    duration = end - interval.start
    if interval.kind == NONE:
        return Judged(interval, duration, duration, limit.none)
    cleared = [w.clear for w in windows if w.start <= end]
    since = max([interval.start, *cleared])
    return Judged(interval, duration, max(end - since, 0.0), limit.dual)


def judge_cycle(
    obs: Observations, windows: Sequence[Window], limit: Bounds, arp_gap: float
) -> Verdict:
    holders = holder_intervals(obs)
    duals = merge(
        [*(i for i in holders if i.kind == DUAL), *arp_dual_intervals(obs, arp_gap)], obs.end
    )
    nones = [i for i in holders if i.kind == NONE]
    return Verdict(
        duals=tuple(judge(i, windows, limit, obs.end) for i in duals),
        nones=tuple(judge(i, windows, limit, obs.end) for i in nones),
    )


# ----- `ip -tshort monitor address` ------------------------------------------------------------

_MONITOR = re.compile(
    r"^\[(?P<ts>[0-9T:.\-]+)\]\s+(?P<deleted>Deleted\s+)?\d+:\s+(?P<ifname>\S+)\s+"
    r"inet6?\s+(?P<addr>[0-9a-fA-F.:]+)/\d+"
)


def parse_monitor_lines(
    lines: Iterable[str], node: str, vip: str, ifname: str = "eth0"
) -> list[HoldEvent]:
    """HoldEvents of ``vip`` on ``ifname`` from ``ip -tshort monitor address`` output.

    Its timestamps are local wall-clock time without a zone; datetime.timestamp() reads a naive
    datetime the same way, so they compare with time.time().
    """
    out = []
    for line in lines:
        match = _MONITOR.match(line)
        if match is None or match["ifname"] != ifname or match["addr"] != vip:
            continue
        try:
            at = datetime.fromisoformat(match["ts"]).timestamp()
        except ValueError:
            continue
        out.append(HoldEvent(at, node, match["deleted"] is None))
    return out
