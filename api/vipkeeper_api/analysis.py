"""Cross-node checks of a set of assignments that no single node's validator can make.

Used by ``vipkeeper-agent check-config`` over several nodes' files and by the operator, which
renders every node's assignment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vipkeeper_api.models import OWNER_PRIORITY, NodeAssignmentSpec, VrrpInstance

_MIN, _MAX = 1, 254


@dataclass(frozen=True)
class _Range:
    node: str
    instance: VrrpInstance
    #: Effective priority with every check and tracked link healthy.
    nominal: int
    #: Lowest effective priority the weighted (non-zero) checks and links can bring it to.
    worst: int
    weighted: tuple[str, ...]


def _clamp(value: int) -> int:
    return min(_MAX, max(_MIN, value))


def _range(node: str, inst: VrrpInstance, spec: NodeAssignmentSpec) -> _Range:
    checks = spec.checks_by_name
    weights: list[tuple[str, int]] = []
    for track in inst.track_checks:
        check = checks.get(track.check)
        own = check.weight if check is not None else 0
        weights.append((f"check {track.check}", own if track.weight is None else track.weight))
    weights += [(f"interface {t.interface}", t.weight) for t in inst.track_interfaces]
    up = sum(w for _, w in weights if w > 0)
    down = sum(w for _, w in weights if w < 0)
    weighted = tuple(f"{label} ({w:+d})" for label, w in weights if w != 0)
    return _Range(node, inst, _clamp(inst.priority + up), _clamp(inst.priority + down), weighted)


def weight_gap_warnings(nodes: Mapping[str, NodeAssignmentSpec]) -> list[str]:
    """Instances whose check weights can never hand the VIP to the next node in line.

    The seeds' classic: master priority 100, backup 90, a check with weight -5. When nginx dies on
    the master its priority falls to 95, still above 90, and the VIP stays on a dead service.
    """
    by_router: dict[tuple[int, int, str | None], list[_Range]] = {}
    for node, spec in nodes.items():
        for inst in spec.instances:
            key = (inst.vrid, inst.family, inst.interface)
            by_router.setdefault(key, []).append(_range(node, inst, spec))
    warnings: list[str] = []
    for ranges in by_router.values():
        for high in ranges:
            if high.instance.priority == OWNER_PRIORITY or not high.weighted:
                continue
            lower = [r for r in ranges if r.node != high.node and r.nominal < high.nominal]
            if not lower:
                continue
            nxt = max(lower, key=lambda r: r.nominal)
            if high.worst < nxt.nominal:
                continue
            gap = high.nominal - nxt.nominal
            relation = "equal to" if high.worst == nxt.nominal else "above"
            warnings.append(
                f"instance {high.instance.name} (VRID {high.instance.vrid}) on {high.node}: "
                f"{', '.join(high.weighted)} can lower priority {high.nominal} only to "
                f"{high.worst}, still {relation} {nxt.node}'s {nxt.nominal}, so a failing check "
                f"never moves the VIP; use weights that add up below -{gap} "
                f"(e.g. -{gap + 10}) or weight 0 (FAULT)"
            )
    return warnings


#: Check runs per second above which the agent's one event loop (shared with the adverts) gets
#: busy: bench/checks.py measured ~4000-6500 HTTP checks/s at a full core, with adverts 6-23 ms late.
CHECK_RATE_WARNING = 1000.0


def check_load_warnings(spec: NodeAssignmentSpec, limit: float = CHECK_RATE_WARNING) -> list[str]:
    """A configuration whose checks would keep the agent's event loop busy enough to delay adverts."""
    rate = sum(1.0 / check.interval for check in spec.checks)
    for vs in spec.virtual_servers:
        rate += sum(1.0 / check.interval for _, check in vs.real_server_checks())
    if rate <= limit:
        return []
    return [
        f"the checks ask for {rate:.0f} runs per second; above {limit:.0f}/s they compete with "
        "VRRP adverts for the agent's CPU (adverts may go out late): raise their intervals"
    ]
