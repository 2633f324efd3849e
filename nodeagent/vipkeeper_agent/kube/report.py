"""The agent's status snapshot -> the NodeAssignment status document the operator folds.

Pure: data and a clock in, JSON-ready data out. The document must validate as
:class:`vipkeeper_api.resources.NodeAssignmentStatus` (strict: the operator ignores a report it
cannot parse), so nothing goes in that the model does not name.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from vipkeeper_api.models import NodeAssignmentSpec

_STATES = frozenset({"INIT", "BACKUP", "MASTER", "FAULT"})


def rfc3339(wall: float | None) -> str | None:
    """Seconds since the epoch -> RFC 3339 UTC with milliseconds (failover times are read off
    these, so whole seconds would hide them)."""
    if wall is None:
        return None
    moment = datetime.fromtimestamp(wall, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instance(
    raw: Mapping[str, Any],
    tracked: tuple[str, ...],
    checks: Mapping[str, Any],
    durations: Mapping[str, float],
) -> dict[str, Any]:
    state = str(raw.get("state", "FAULT"))
    out: dict[str, Any] = {
        "name": raw["name"],
        # An instance that could not be placed (no interface, no source address) is FAULT.
        "state": state if state in _STATES else "FAULT",
        "priority": int(raw.get("priority", 0)),
    }
    if raw.get("masterAddress"):
        out["master"] = raw["masterAddress"]
    since = rfc3339(raw.get("since"))
    if since is not None:
        out["since"] = since
    last = raw.get("lastTransition")
    if last is not None:
        transition: dict[str, Any] = {
            "from": last["from"],
            "to": last["to"],
            "reason": last["reason"],
            "at": rfc3339(last["at"]),
        }
        duration = durations.get(raw["name"])
        if duration is not None:
            transition["durationMs"] = round(duration, 3)
        out["lastTransition"] = transition
    elif raw.get("reason"):
        # No `from`: a null would be dropped by the API anyway (the CRD keeps this object open).
        out["lastTransition"] = {"to": out["state"], "reason": raw["reason"]}
    instance_checks: dict[str, dict[str, Any]] = {}
    for name in tracked:
        check = checks.get(name)
        if check is None:
            instance_checks[name] = {"health": "UNKNOWN"}
        else:
            instance_checks[name] = {
                "health": check["health"],
                "since": rfc3339(check.get("since")),
                "detail": check.get("lastDetail"),
            }
    if instance_checks:
        out["checks"] = instance_checks
    return out


def _virtual_server(raw: Mapping[str, Any]) -> dict[str, Any]:
    servers = []
    for rs in raw.get("realServers", ()):
        server: dict[str, Any] = {
            "address": rs["address"],
            "port": rs["port"],
            "healthy": bool(rs["healthy"]),
            # The configured weight: healthy with weight 0 is drained, not down.
            "weight": rs["weight"],
        }
        since = rfc3339(rs.get("since"))
        if since is not None:
            server["since"] = since
        servers.append(server)
    return {"name": raw["name"], "active": bool(raw.get("active")), "realServers": servers}


def node_status(
    snapshot: Mapping[str, Any],
    spec: NodeAssignmentSpec,
    *,
    observed_generation: int | None,
    now: float,
    durations: Mapping[str, float] | None = None,
    source_problem: str | None = None,
) -> dict[str, Any]:
    """The status document. ``snapshot``: :func:`vipkeeper_agent.status.snapshot.agent_status`'s
    output; ``spec``: the spec the agent runs (which checks each instance tracks);
    ``durations``: instance -> milliseconds of its last transition, where the node measured it."""
    tracked = {i.name: tuple(t.check for t in i.track_checks) for i in spec.instances}
    checks = snapshot.get("checks") or {}
    instances = [
        _instance(raw, tracked.get(raw["name"], ()), checks, durations or {})
        for raw in snapshot.get("instances", ())
    ]
    ipvs = snapshot.get("ipvs") or {}
    doc: dict[str, Any] = {
        "updated": rfc3339(now),
        "instances": instances,
        "virtualServers": [_virtual_server(vs) for vs in ipvs.get("virtualServers", ())],
    }
    if observed_generation is not None:
        doc["observedGeneration"] = observed_generation
    found = problems(snapshot, source_problem)
    if found:
        doc["problems"] = [p[:1024] for p in found[:32]]
    return doc


def content(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What decides whether a write is due: everything but the heartbeat's timestamp."""
    return {k: v for k, v in doc.items() if k != "updated"}


def problems(snapshot: Mapping[str, Any], source_problem: str | None) -> list[str]:
    """What keeps the node from running its assignment as written, for logs and Events."""
    out = []
    if source_problem:
        out.append(source_problem)
    error = (snapshot.get("config") or {}).get("lastReloadError")
    if error:
        out.append(str(error))
    for raw in snapshot.get("instances", ()):
        if raw.get("reason") and "vrid" not in raw:
            out.append(f"instance {raw['name']}: {raw['reason']}")
    ipvs = snapshot.get("ipvs") or {}
    out += [str(p) for p in ipvs.get("problems", ())]
    return out


__all__ = ["content", "node_status", "problems", "rfc3339"]
