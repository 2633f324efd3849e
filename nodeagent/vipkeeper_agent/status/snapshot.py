"""Build the JSON-ready status document from the runners' state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vipkeeper_agent.checks.hysteresis import CheckState
    from vipkeeper_agent.instance import InstanceRunner

SCHEMA_VERSION = 1


def instance_status(runner: InstanceRunner) -> dict[str, Any]:
    router = runner.router
    last = router.last_transition
    counters = runner.counters
    doc = {
        "name": runner.name,
        "vrid": runner.spec.vrid,
        "version": runner.spec.version,
        "interface": runner.ifname,
        "addresses": [str(a) for a in runner.spec.addresses],
        "state": str(router.state),
        "priority": router.priority,
        "configuredPriority": runner.spec.priority,
        "priorityAdjustments": list(runner.assessment.adjustments),
        "faults": list(runner.assessment.faults),
        "maintenance": router.maintenance,
        "syncGroup": runner.spec.sync_group,
        "awaitingGroup": router.awaiting_group,
        "advertInterval": router.master_adver_interval_cs / 100,
        "primaryAddress": str(runner.primary),
        "masterAddress": None if router.master_address is None else str(router.master_address),
        "since": runner.wall(router.since),
        "lastTransition": None
        if last is None
        else {
            "from": str(last.from_state),
            "to": str(last.to_state),
            "reason": last.reason,
            "at": runner.wall(last.at),
        },
        "counters": {
            "advertsSent": counters.adverts_sent,
            "advertsReceived": counters.adverts_received,
            "sendErrors": counters.send_errors,
            "addressErrors": counters.address_errors,
            "dropped": dict(sorted(counters.dropped.items())),
        },
    }
    _add_transition_history(doc, runner)
    return doc


def _add_transition_history(doc: dict[str, Any], runner: InstanceRunner) -> None:
    """``counters.transitions`` and ``recentTransitions``, for metrics (docs/metrics.md).

    Only once the runner records them (``Counters.transitions``, ``transition_log``): the last
    transition alone cannot count flaps that happen between two scrapes. Read with getattr so
    that this module does not have to change again when the runner gains them.
    """
    transitions = getattr(runner.counters, "transitions", None)
    if transitions is not None:
        doc["counters"]["transitions"] = dict(sorted(transitions.items()))
    records = getattr(runner, "transition_log", None)
    if records is not None:
        doc["recentTransitions"] = [
            {
                "seq": record.seq,
                "from": str(record.transition.from_state),
                "to": str(record.transition.to_state),
                "reason": record.transition.reason,
                "at": runner.wall(record.transition.at),
                "takeoverSeconds": record.takeover,
            }
            for record in records
        ]


def check_status(state: CheckState, wall_offset: float) -> dict[str, Any]:
    return {
        "health": str(state.health),
        "pending": state.pending,
        "since": state.since + wall_offset,
        "runs": state.runs,
        "consecutiveOk": state.consecutive_ok,
        "consecutiveFailed": state.consecutive_failed,
        "lastDetail": state.last_detail,
        "lastLatencyMs": round(state.last_latency * 1000, 3),
    }


def agent_status(
    runners: Iterable[InstanceRunner],
    unresolved: Mapping[str, str],
    global_dropped: Mapping[str, int],
    config: Mapping[str, Any],
    *,
    checks: Mapping[str, CheckState] | None = None,
    wall_offset: float = 0.0,
    maintenance: Mapping[str, Any] | None = None,
    notify: Mapping[str, int] | None = None,
    ipvs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    instances = [instance_status(r) for r in sorted(runners, key=lambda r: r.name)]
    instances += [
        {"name": name, "state": "FAULT", "reason": reason}
        for name, reason in sorted(unresolved.items())
    ]
    return {
        "schemaVersion": SCHEMA_VERSION,
        "config": dict(config),
        "instances": instances,
        "checks": {
            name: check_status(state, wall_offset) for name, state in sorted((checks or {}).items())
        },
        "maintenance": dict(maintenance or {}),
        "notify": dict(notify or {}),
        "ipvs": None if ipvs is None else dict(ipvs),
        "dropped": dict(sorted(global_dropped.items())),
    }
