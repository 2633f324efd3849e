"""Fold what the nodes report of a VirtualIP's VRRP instances into its status, conditions and Events.

A dual-stack VirtualIP is one instance per family, so a node holds the VIP only when it is MASTER of
every family's instance. Only the candidates' reports count: a node that is no longer eligible (or
deleted) resigns on its own, and its last report must not hold the VIP or raise SplitBrain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, cast

from vipkeeper_api.resources import (
    Condition,
    InstanceReport,
    LastTransition,
    NodeAssignmentStatus,
    NodeState,
    VirtualIPStatus,
    instance_name,
)
from vipkeeper_operator.planning.status_common import (
    EventRecord,
    became_true,
    family_name,
    find_condition,
    format_time,
    listing,
    make_condition,
    millis,
    parse_time,
)
from vipkeeper_operator.world import VirtualIP

StateName = Literal["INIT", "BACKUP", "MASTER", "FAULT", "UNKNOWN"]
#: Mixed states across a node's instances show as the worst of them.
_SEVERITY: Mapping[str, int] = {"FAULT": 0, "UNKNOWN": 1, "INIT": 2, "BACKUP": 3, "MASTER": 4}
#: Two MASTERs overlap for up to about one advert interval in every preemption; longer is real.
SPLIT_BRAIN_INTERVALS = 2
#: Master_Down_Interval is 3 intervals plus a skew below one: nobody MASTER after that is an outage.
ELECTION_INTERVALS = 4
_FAILED = frozenset({"failed", "failing", "down", "unhealthy", "fault", "false"})


@dataclass(frozen=True, slots=True)
class _View:
    """One candidate node as the fold sees it: its instances of this VIP, combined."""

    node: str
    state: StateName
    priority: int
    since: datetime
    reason: str | None
    #: family -> the node's report of that family's instance
    instances: Mapping[int, InstanceReport]
    #: family -> since when that instance is in its state
    instance_since: Mapping[int, datetime]

    @property
    def healthy(self) -> bool:
        return self.state in ("MASTER", "BACKUP") and self.priority > 0

    @property
    def master_of(self) -> frozenset[int]:
        return frozenset(f for f, r in self.instances.items() if r.state == "MASTER")

    def latest(self) -> InstanceReport | None:
        """The instance whose change brought the node to its state (the later family)."""
        if not self.instances:
            return None
        return self.instances[max(self.instances, key=lambda f: self.instance_since[f])]


def fold_virtual_ip(
    vip: VirtualIP,
    reports: Mapping[str, NodeAssignmentStatus],
    *,
    vrid: int | None,
    problems: Sequence[tuple[str, str]],
    candidates: Sequence[str],
    now: datetime,
    advert_interval: float | Decimal | None = None,
    previous: VirtualIPStatus | None = None,
    stale_after: timedelta | None = None,
) -> tuple[VirtualIPStatus, list[EventRecord]]:
    """The VirtualIP's new status and the Events that its change from ``previous`` (default: the
    status the VirtualIP carries) calls for.

    ``problems``: the planning's (reason, message) for this VirtualIP; reasons starting "VRID" make
    VRIDConflict, the others Degraded. ``advert_interval`` defaults to the spec's. ``stale_after``:
    a report whose ``updated`` is older than that is ignored like a missing one (None: never).
    """
    before = vip.status if previous is None else previous
    interval = float(vip.spec.vrrp.advert_interval if advert_interval is None else advert_interval)
    families = vip.spec.families
    names = {f: instance_name(vip.namespace, vip.name, f) for f in families}
    nodes = sorted(set(candidates))
    overtaken = _overtaken({n: r for n in nodes if (r := reports.get(n)) is not None}, names)
    views = [
        _view(node, reports.get(node), names, before, now, stale_after, node in overtaken)
        for node in nodes
    ]
    gen = vip.generation

    def cond(
        type_: str, status: Literal["True", "False", "Unknown"], why: str, msg: str
    ) -> Condition:
        return make_condition(
            type_, status, why, msg, previous=before.conditions, generation=gen, now=now
        )

    split = _split_brain(views, families, interval, now)
    masters = [v for v in views if v.master_of >= set(families)]
    chosen = min(masters, key=lambda v: (v.since, -v.priority, v.node)) if masters else None
    holder = None if chosen is None else chosen.node

    ready_status, ready_reason, ready_message = _ready(
        views, chosen, split, families, interval, now
    )
    summary = {
        "HolderElected": f"MASTER on {holder}",
        "AwaitingReports": "Pending",
        "FamiliesSplit": "Partial",
    }.get(ready_reason, ready_reason)
    if split:
        summary = "SplitBrain"

    conflicts = [(r, m) for r, m in problems if r.startswith("VRID")]
    others = [(r, m) for r, m in problems if not r.startswith("VRID")]
    conditions = (
        cond("Ready", ready_status, ready_reason, ready_message),
        cond(*_degraded(views, others)),
        cond("SplitBrain", "True", "MultipleMasters", "; ".join(split))
        if split
        else cond("SplitBrain", "False", "NoSplitBrain", ""),
        cond("VRIDConflict", "True", conflicts[0][0], "; ".join(m for _, m in conflicts))
        if conflicts
        else cond("VRIDConflict", "False", "NoConflict", ""),
    )

    transition = before.last_transition
    events: list[EventRecord] = []
    if holder != before.holder:
        transition = _transition(before, chosen, views, now)
        if chosen is not None:
            events.append(_holder_event(transition))
    ready = conditions[0]
    previous_ready = find_condition(before.conditions, "Ready")
    if ready.reason == "NoHolder" and (
        previous_ready is None or previous_ready.reason != "NoHolder"
    ):
        events.append(EventRecord("Warning", "NoHolder", ready.message))
    for condition in conditions[1:]:
        if became_true(before.conditions, condition):
            events.append(EventRecord("Warning", condition.type, condition.message))

    status = VirtualIPStatus(
        holder=holder,
        state=summary,
        vrid=vrid,
        nodes=tuple(
            NodeState(
                node=v.node,
                state=v.state,
                priority=v.priority,
                since=format_time(v.since),
                reason=v.reason,
            )
            for v in views
        ),
        lastTransition=transition,
        conditions=conditions,
        observedGeneration=gen,
    )
    return status, events


def _view(
    node: str,
    report: NodeAssignmentStatus | None,
    names: Mapping[int, str],
    before: VirtualIPStatus,
    now: datetime,
    stale_after: timedelta | None,
    overtaken: bool = False,
) -> _View:
    earlier = next((n for n in before.nodes if n.node == node), None)

    def since(state: str, value: str | None) -> datetime:
        # A report without a usable time: when the operator first saw the node in this state.
        parsed = parse_time(value)
        if parsed is not None:
            return parsed
        if earlier is not None and earlier.state == state and earlier.since is not None:
            return parse_time(earlier.since) or now
        return now

    reason = None
    if report is None:
        reason = "NoReport"
    elif stale_after is not None and _stale(report, now, stale_after):
        reason, report = "ReportStale", None
    elif overtaken:
        reason, report = "ReportOvertaken", None
    by_name = {} if report is None else _by_name(report)
    instances = {f: by_name[n] for f, n in names.items() if n in by_name}
    if not instances:
        return _View(node, "UNKNOWN", 0, since("UNKNOWN", None), reason or "NotReported", {}, {})
    instance_since = {f: since(r.state, r.since) for f, r in instances.items()}
    states = {f: instances[f].state if f in instances else "UNKNOWN" for f in names}
    state = cast(StateName, min(states.values(), key=lambda s: _SEVERITY[s]))
    if len(set(states.values())) > 1:
        reason = ", ".join(f"{s} for {family_name(f)}" for f, s in sorted(states.items()))
    else:
        reason = _instance_reason(instances, instance_since)
    return _View(
        node=node,
        state=state,
        priority=min(r.priority for r in instances.values()) if len(instances) == len(names) else 0,
        since=max(instance_since.values()),
        reason=reason,
        instances=instances,
        instance_since=instance_since,
    )


#: id(report) -> (report, its instances by name). Every VirtualIP's fold reads every node's report:
#: indexing each once per report instead of once per fold keeps a pass linear, not VIPs x instances.
_INDEX: dict[int, tuple[NodeAssignmentStatus, Mapping[str, InstanceReport]]] = {}
_INDEX_MAX = 4096


def _by_name(report: NodeAssignmentStatus) -> Mapping[str, InstanceReport]:
    hit = _INDEX.get(id(report))
    if hit is not None and hit[0] is report:
        return hit[1]
    if len(_INDEX) >= _INDEX_MAX:
        _INDEX.clear()
    index = {i.name: i for i in report.instances}
    # The report is kept alive with its entry, so its id cannot be reused by another object.
    _INDEX[id(report)] = (report, index)
    return index


def _overtaken(reports: Mapping[str, NodeAssignmentStatus], names: Mapping[int, str]) -> set[str]:
    """Nodes whose last report claims MASTER of an instance that another node became MASTER of
    after that report was written: the claim is not believed until the node writes again.

    A crashed or powered-off node's last report says MASTER until it goes stale (minutes); the
    survivor's takeover after it is what the node's silence means. A node that is alive (a real
    split brain) writes again within its heartbeat, and from then on both claims count.
    """
    claims = [
        (node, name, parse_time(report.updated), parse_time(instance.since))
        for node, report in reports.items()
        for name in names.values()
        if (instance := _by_name(report).get(name)) is not None and instance.state == "MASTER"
    ]
    return {
        node
        for node, name, updated, _ in claims
        if updated is not None
        and any(
            other != node and other_name == name and since is not None and since > updated
            for other, other_name, _, since in claims
        )
    }


def _stale(report: NodeAssignmentStatus, now: datetime, stale_after: timedelta) -> bool:
    updated = parse_time(report.updated)
    return updated is None or now - updated > stale_after


def _instance_reason(
    instances: Mapping[int, InstanceReport], instance_since: Mapping[int, datetime]
) -> str | None:
    failing = sorted({name for r in instances.values() for name in _failing_checks(r.checks)})
    if failing:
        return f"CheckFailed: {listing(failing)}"
    latest = instances[max(instances, key=lambda f: instance_since[f])]
    reason = (latest.last_transition or {}).get("reason")
    return str(reason) if reason else None


def _failing_checks(checks: Mapping[str, Any]) -> list[str]:
    """Agents report a check as {"health": ...} (or, older, a bare state): either form counts."""
    out = []
    for name, value in checks.items():
        health = value.get("health") if isinstance(value, Mapping) else value
        if health is False or str(health).lower() in _FAILED:
            out.append(name)
    return out


def _split_brain(
    views: Sequence[_View], families: Sequence[int], interval: float, now: datetime
) -> list[str]:
    out = []
    limit = timedelta(seconds=SPLIT_BRAIN_INTERVALS * interval)
    for family in families:
        masters = sorted((v.instance_since[family], v.node) for v in views if family in v.master_of)
        # The overlap started when the second of them became MASTER.
        if len(masters) >= 2 and now - masters[1][0] > limit:
            overlap = (now - masters[1][0]).total_seconds()
            nodes = listing([n for _, n in masters])
            out.append(
                f"{nodes} are MASTER for {family_name(family)} together for {overlap:.1f} s "
                f"(more than {SPLIT_BRAIN_INTERVALS} advert intervals); check that VRRP "
                "adverts pass between them"
            )
    return out


def _ready(
    views: Sequence[_View],
    chosen: _View | None,
    split: Sequence[str],
    families: Sequence[int],
    interval: float,
    now: datetime,
) -> tuple[Literal["True", "False", "Unknown"], str, str]:
    if split:
        return "False", "SplitBrain", "more than one node holds the VIP"
    if chosen is not None:
        return "True", "HolderElected", f"{chosen.node} holds the VIP"
    if not views:
        return "False", "NoCandidates", "no node is eligible to hold the VIP"
    reported = [v for v in views if v.instances]
    if not reported:
        return "Unknown", "AwaitingReports", "no eligible node has reported the VIP yet"
    partial = [v for v in reported if v.master_of]
    if partial:
        held = [f"{family_name(f)} on {v.node}" for v in partial for f in sorted(v.master_of)]
        return "False", "FamiliesSplit", f"no node is MASTER for every family: {', '.join(held)}"
    states = listing([f"{v.node} {v.state}" for v in views])
    # Within Master_Down of the last change an election is still due; a node must be able to win.
    settling = [v for v in reported if v.state in ("INIT", "BACKUP") and v.priority > 0]
    # Master_Down runs from the last change anywhere: the old MASTER leaving starts it.
    last = max(v.since for v in reported)
    if settling and now - last <= timedelta(seconds=ELECTION_INTERVALS * interval):
        return "False", "Electing", f"no MASTER yet: {states}"
    return "False", "NoHolder", f"no node is MASTER: {states}"


def _degraded(
    views: Sequence[_View], problems: Sequence[tuple[str, str]]
) -> tuple[str, Literal["True", "False", "Unknown"], str, str]:
    if problems:
        return "Degraded", "True", problems[0][0], "; ".join(m for _, m in problems)
    if not views:
        return "Degraded", "True", "NoCandidates", "no node is eligible to hold the VIP"
    if not any(v.instances for v in views):
        return "Degraded", "Unknown", "AwaitingReports", "no eligible node has reported yet"
    healthy = [v for v in views if v.healthy]
    counted = f"{len(healthy)} of {len(views)} eligible nodes can hold the VIP"
    sick = [
        f"{v.node} {v.state}" + (f" ({v.reason})" if v.reason else "")
        for v in views
        if not v.healthy
    ]
    detail = f"; not: {listing(sick)}" if sick else ""
    if not healthy:
        return "Degraded", "True", "NoHealthyNode", counted + detail
    if len(healthy) == 1:
        return "Degraded", "True", "NoStandby", counted + detail
    return "Degraded", "False", "Redundant", counted + detail


def _transition(
    before: VirtualIPStatus, chosen: _View | None, views: Sequence[_View], now: datetime
) -> LastTransition:
    by_node = {v.node: v for v in views}
    old = by_node.get(before.holder) if before.holder is not None else None
    if chosen is None:
        # Lost: the handover completes when someone takes over, from this same "from".
        report = None if old is None else old.latest()
        if old is None:
            why = "NodeGone"
        elif report is None:
            why = old.reason or "NotReported"
        else:
            why = str((report.last_transition or {}).get("reason") or old.state)
        at = old.since if old is not None and old.instances else now
        return LastTransition.model_validate(
            {"from": before.holder, "to": None, "reason": why, "at": format_time(at)}
        )
    report = chosen.latest()
    last: Mapping[str, Any] = (report.last_transition if report is not None else None) or {}
    at = parse_time(last.get("at")) or chosen.since
    origin, left = before.holder, None
    if before.holder is None and before.last_transition is not None:
        if before.last_transition.to_node is None:
            origin = before.last_transition.from_node
            left = parse_time(before.last_transition.at)
    elif old is not None and old.instances and old.state != "MASTER":
        left = old.since
    reported = last.get("durationMs")
    if isinstance(reported, int | float) and not isinstance(reported, bool):
        duration: float | None = float(reported)
    elif left is not None and origin is not None:
        duration = max(0.0, millis(chosen.since, left))
    else:
        duration = None
    return LastTransition(  # `from`/`to` are the aliases
        **{"from": origin, "to": chosen.node},
        reason=str(last.get("reason") or "Elected"),
        at=format_time(at),
        durationMs=duration,
    )


def _holder_event(transition: LastTransition) -> EventRecord:
    took = "" if transition.duration_ms is None else f", took {transition.duration_ms:.0f} ms"
    origin = transition.from_node or "(none)"
    message = f"{origin} → {transition.to_node}: {transition.reason}{took}"
    return EventRecord("Normal", "HolderChanged", message)


__all__ = ["ELECTION_INTERVALS", "SPLIT_BRAIN_INTERVALS", "fold_virtual_ip"]
