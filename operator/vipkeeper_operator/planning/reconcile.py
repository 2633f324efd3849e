"""One reconcile pass, decided: the World in, the writes out (assignments, statuses, Events).

The controller calls :func:`decide` with a snapshot of the store and applies the result; this
module does no I/O, so every pass can be replayed in a unit test with a fixed clock. Statuses are
written only when their document changes, and Events only on a change of what they report, so an
unchanged cluster costs no API call however often the pass runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from vipkeeper_api.resources import (
    Condition,
    VirtualIPStatus,
    instance_name,
)
from vipkeeper_operator.parse import Rejected
from vipkeeper_operator.planning import status as fold
from vipkeeper_operator.planning.render import Plan, plan
from vipkeeper_operator.planning.writes import (
    Document,
    EventWrite,
    StatusWrite,
    Write,
    assignment_writes,
)
from vipkeeper_operator.world import VirtualIP, VirtualServer, World

M = TypeVar("M", bound=BaseModel)

#: A node report older than this is not believed (agents write at least every 30 s, so a
#: report this old is from an agent that is dead or cut off from the API).
STALE_REPORT = timedelta(seconds=90)


@dataclass(frozen=True, slots=True)
class Decision:
    plan: Plan
    writes: tuple[Write, ...]
    statuses: tuple[StatusWrite, ...]
    events: tuple[EventWrite, ...]


def decide(
    world: World,
    *,
    assignments: Mapping[str, Document | None],
    rejected: Mapping[str, Rejected],
    statuses: Mapping[str, Document],
    now: datetime,
) -> Decision:
    """``assignments``: node -> the spec its NodeAssignment holds; ``rejected``: "plural/ns/name"
    -> why that object's spec was refused; ``statuses``: "plural/ns/name" -> its current status
    document (what the API showed, or what this operator wrote since)."""
    the_plan = plan(world)
    out_statuses: list[StatusWrite] = []
    events: list[EventWrite] = []
    holders: dict[str, str | None] = {}
    for key, vip in sorted(world.virtual_ips.items()):
        if f"virtualips/{key}" in rejected or vip.deleting:
            continue
        previous = _previous(VirtualIPStatus, statuses.get(f"virtualips/{key}"))
        status, records = fold.fold_virtual_ip(
            vip,
            world.reports,
            vrid=the_plan.vrids.get(key),
            problems=[(p.reason, p.message) for p in the_plan.problems.get(f"VirtualIP/{key}", ())],
            candidates=[c.node for c in the_plan.candidates.get(key, ())],
            advert_interval=vip.spec.vrrp.advert_interval,
            previous=previous if previous is not None else VirtualIPStatus(),
            now=now,
            stale_after=STALE_REPORT,
        )
        holders[key] = status.holder
        _emit(out_statuses, events, statuses, "virtualips", vip, _document(status), records)
    for key, vs in sorted(world.virtual_servers.items()):
        if f"virtualservers/{key}" in rejected or vs.deleting:
            continue
        vip_key = f"{vs.namespace}/{vs.spec.virtual_ip_ref.name}"
        previous_vs = _previous(fold.VirtualServerStatus, statuses.get(f"virtualservers/{key}"))
        vs_status, records = fold.fold_virtual_server(
            vs,
            world.reports,
            holder=holders.get(vip_key),
            problems=[
                (p.reason, p.message) for p in the_plan.problems.get(f"VirtualServer/{key}", ())
            ],
            previous=previous_vs if previous_vs is not None else fold.VirtualServerStatus(),
            now=now,
            candidates=[c.node for c in the_plan.candidates.get(vip_key, ())],
        )
        _emit(out_statuses, events, statuses, "virtualservers", vs, _document(vs_status), records)
    for key, refused in sorted(rejected.items()):
        _refuse(out_statuses, events, statuses, key, refused, now)
    return Decision(
        the_plan,
        tuple(assignment_writes(the_plan.assignments, assignments, _owners(world))),
        tuple(out_statuses),
        tuple(events),
    )


def resign_pending(world: World, assignments: Mapping[str, Document | None], key: str) -> list[str]:
    """Nodes that still carry VirtualIP ``key`` (in their assignment, or running it by their own
    report). A node that is gone or not Ready cannot answer and is not waited for."""
    namespace, name = key.split("/", 1)
    names = {instance_name(namespace, name, 4), instance_name(namespace, name, 6)}
    pending = []
    for node, document in assignments.items():
        if node not in world.nodes or not world.nodes[node].ready:
            continue
        listed = {str(i.get("name")) for i in (document or {}).get("instances", ())}
        report = world.reports.get(node)
        running = {i.name for i in report.instances} if report is not None else set()
        if names & (listed | running):
            pending.append(node)
    return sorted(pending)


# --- helpers --------------------------------------------------------------------------------


def _owners(world: World) -> dict[str, dict[str, str]]:
    out = {}
    for vip in world.virtual_ips.values():
        ref = {"namespace": vip.namespace, "name": vip.name, "uid": vip.uid}
        for family in (4, 6):
            out[instance_name(vip.namespace, vip.name, family)] = ref
    return out


def _document(model: BaseModel) -> Document:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _previous(model: type[M], document: Document | None) -> M | None:
    if document is None:
        return None
    try:
        return model.model_validate(document)
    except ValidationError:
        return None  # somebody else's edit: ours replaces it


def _emit(
    out: list[StatusWrite],
    events: list[EventWrite],
    statuses: Mapping[str, Document],
    plural: str,
    obj: VirtualIP | VirtualServer,
    document: Document,
    records: list[fold.EventRecord],
) -> None:
    if statuses.get(f"{plural}/{obj.key}") != document:
        out.append(StatusWrite(plural, obj.namespace, obj.name, document))
    kind = "VirtualIP" if plural == "virtualips" else "VirtualServer"
    events.extend(
        EventWrite(kind, obj.namespace, obj.name, obj.uid, r.type, r.reason, r.message)
        for r in records
    )


def _refuse(
    out: list[StatusWrite],
    events: list[EventWrite],
    statuses: Mapping[str, Document],
    key: str,
    refused: Rejected,
    now: datetime,
) -> None:
    """A spec that does not parse: say why on the object; the last good spec keeps running."""
    plural = key.split("/", 1)[0]
    current: dict[str, Any] = dict(statuses.get(key) or {})
    conditions = [c for c in current.get("conditions", ()) if c.get("type") != "Ready"]
    old_ready: dict[str, Any] = next(
        (c for c in current.get("conditions", ()) if c.get("type") == "Ready"), {}
    )
    ready = Condition(
        type="Ready",
        status="False",
        reason="InvalidSpec",
        message=refused.message,
        lastTransitionTime=(
            old_ready.get("lastTransitionTime")
            if old_ready.get("reason") == "InvalidSpec"
            else fold.format_time(now, seconds_only=True)
        ),
    )
    document = {**current, "conditions": [*conditions, _document(ready)]}
    if statuses.get(key) == document:
        return
    out.append(StatusWrite(plural, refused.namespace, refused.name, document))
    if old_ready.get("message") != refused.message:
        events.append(
            EventWrite(
                refused.kind,
                refused.namespace,
                refused.name,
                refused.uid,
                "Warning",
                "InvalidSpec",
                refused.message,
            )
        )
