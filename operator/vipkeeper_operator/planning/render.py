"""The whole plan of one pass: every node's NodeAssignment spec, VRIDs, candidates and problems.

A VirtualIP becomes one VRRP instance per address family (named by ``instance_name``) on each node
that may carry it, at that node's priority. Anything that would make it unsafe to run (a VRID or
address clash, a missing auth Secret: the other routers would drop our adverts) keeps it off every
node, and its problem says so; an assignment is built from pieces validated one by one, so one bad
object never costs the other objects on a node their place. A VirtualIP being deleted is rendered
nowhere: its nodes resign it, and its finalizer waits for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from vipkeeper_api.checks import Check
from vipkeeper_api.ipvs import Placement
from vipkeeper_api.ipvs import VirtualServer as IpvsService
from vipkeeper_api.models import Auth, NodeAssignmentSpec, VrrpInstance
from vipkeeper_api.resources import Mode, instance_name
from vipkeeper_operator.planning.admission import address_conflicts, virtual_server_conflicts
from vipkeeper_operator.planning.eligibility import Verdict, endpoint_index, evaluate
from vipkeeper_operator.planning.endpoints import (
    services_of,
    short_error,
    slices_by_service,
    vip_key,
)
from vipkeeper_operator.planning.priorities import Candidate, assign
from vipkeeper_operator.planning.vrid import Problem, allocate
from vipkeeper_operator.world import IPAddress, VirtualIP, World

__all__ = ["Candidate", "Plan", "Problem", "plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    #: node -> its whole spec (every node that exists and is not being deleted has one)
    assignments: Mapping[str, NodeAssignmentSpec]
    #: VirtualIP key "ns/name" -> VRID
    vrids: Mapping[str, int]
    #: "VirtualIP/ns/name" or "VirtualServer/ns/name" -> its problems (reason, message)
    problems: Mapping[str, tuple[Problem, ...]]
    #: VirtualIP key -> the nodes that run its instances, highest priority first (empty when
    #: it is rendered nowhere)
    candidates: Mapping[str, tuple[Candidate, ...]]
    #: VirtualIP key -> every node's verdict, the ineligible ones too (for diagnostics)
    verdicts: Mapping[str, Mapping[str, Verdict]] = field(default_factory=dict)


@dataclass(slots=True)
class _Piece:
    """What one object adds to one node's spec."""

    owner: str
    instances: list[VrrpInstance] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    services: list[IpvsService] = field(default_factory=list)


def plan(world: World) -> Plan:
    problems: dict[str, list[Problem]] = {}

    def report(owner: str, *found: Problem) -> None:
        listed = problems.setdefault(owner, [])
        listed.extend(p for p in found if p not in listed)

    allocation = allocate(world.virtual_ips, world.vrid_range)
    for key, found in allocation.problems.items():
        report(f"VirtualIP/{key}", *found)
    clashes = address_conflicts(world.virtual_ips)
    index = endpoint_index(world)
    nodes = sorted(n for n, node in world.nodes.items() if not node.deleting)
    pieces: dict[str, list[_Piece]] = {n: [] for n in nodes}
    candidates: dict[str, tuple[Candidate, ...]] = {}
    verdicts: dict[str, Mapping[str, Verdict]] = {}
    shared: dict[tuple[object, ...], Mapping[str, Verdict]] = {}
    for key, vip in sorted(world.virtual_ips.items()):
        if vip.deleting:
            continue
        owner = f"VirtualIP/{key}"
        # The verdicts depend on these alone: VirtualIPs that share them (a zone's) share one
        # evaluation of every node.
        ref = vip.spec.service_ref
        alike = (
            tuple(sorted(vip.spec.node_selector.items())),
            None if ref is None else (vip.namespace, ref.name),
            vip.spec.vrrp.preempt,
        )
        if alike not in shared:
            shared[alike] = evaluate(world, vip, index)
        verdicts[key] = shared[alike]
        chosen = assign(key, vip.spec.priorities, verdicts[key])
        vrid = allocation.vrids.get(key)
        if vrid is None:
            continue  # its VRID problem says why it is not rendered
        if key in clashes:
            report(owner, clashes[key])
            continue
        if not chosen:
            report(owner, _nobody(key, verdicts[key]))
            continue
        built = _vip_pieces_memo(world, vip, vrid, chosen)
        if isinstance(built, Problem):
            report(owner, built)
            continue
        candidates[key] = chosen
        for node, piece in built.items():
            pieces.setdefault(node, []).append(piece)
        report(owner, *_address_gaps(world, vip, chosen))
    for gone in set(_PIECES) - set(world.virtual_ips):
        del _PIECES[gone]
    taken = virtual_server_conflicts(world.virtual_servers)
    slices = slices_by_service(world)
    ready = [n for n in nodes if world.nodes[n].ready]
    for key, vs in sorted(world.virtual_servers.items()):
        if vs.deleting:
            continue
        owner = f"VirtualServer/{key}"
        if key in taken:
            report(owner, taken[key])
            continue
        services, trouble = services_of(world, vs, candidates, slices)
        report(owner, *trouble)
        if not services:
            continue
        where = (
            ready
            if vs.spec.placement == Placement.ALL
            else [c.node for c in candidates[vip_key(vs)]]
        )
        for node in where:
            pieces.setdefault(node, []).append(_Piece(owner, services=list(services)))
    assignments = {}
    for node in nodes:
        spec, dropped = _assemble(pieces.get(node, []))
        assignments[node] = spec
        for owner, why in dropped:
            report(owner, Problem("RenderFailed", f"not rendered on node {node}: {why}"))
    return Plan(
        assignments,
        dict(allocation.vrids),
        {k: tuple(v) for k, v in sorted(problems.items()) if v},
        candidates,
        verdicts,
    )


# --- VirtualIPs -------------------------------------------------------------------------------


#: VirtualIP key -> (its inputs, what _vip_pieces made of them). Every pass re-plans every
#: VirtualIP; with 1000 of them, building and validating 10,000 instances was half of a pass.
_PIECES: dict[str, tuple[tuple[object, ...], dict[str, _Piece] | Problem]] = {}


def _vip_pieces_memo(
    world: World, vip: VirtualIP, vrid: int, chosen: tuple[Candidate, ...]
) -> dict[str, _Piece] | Problem:
    """:func:`_vip_pieces`, reused while its inputs are the same (the pieces are never
    modified): the VirtualIP object (replaced whenever its spec changes), VRID, candidates, the
    auth Secret and, for unicast, the candidates' addresses."""
    ref = vip.spec.vrrp.auth_secret_ref
    secret = None if ref is None else world.secrets.get(f"{vip.namespace}/{ref.name}")
    ips = tuple(world.nodes[c.node].internal_ips if c.node in world.nodes else () for c in chosen)
    inputs = (vip.spec, vrid, chosen, None if secret is None else dict(secret), ips)
    hit = _PIECES.get(vip.key)
    if hit is not None and hit[0] == inputs:
        return hit[1]
    built = _vip_pieces(world, vip, vrid, chosen)
    _PIECES[vip.key] = (inputs, built)
    return built


def _vip_pieces(
    world: World, vip: VirtualIP, vrid: int, chosen: tuple[Candidate, ...]
) -> dict[str, _Piece] | Problem:
    """node -> what ``vip`` adds there, or why it cannot be rendered at all."""
    spec, owner = vip.spec, f"VirtualIP/{vip.key}"
    auth = _auth(world, vip)
    if isinstance(auth, Problem):
        return auth
    checks = [c.model_copy(update={"name": check_name(vip, c.name)}) for c in spec.checks]
    unicast = spec.vrrp.mode == Mode.UNICAST
    templates: dict[int, VrrpInstance] = {}
    for family in spec.families:
        document = {
            "name": instance_name(vip.namespace, vip.name, family),
            "vrid": vrid,
            "interface": spec.interface,
            "version": spec.vrrp.version,
            "advertInterval": spec.vrrp.advert_interval,
            "preempt": spec.vrrp.preempt,
            "preemptDelay": spec.vrrp.preempt_delay,
            "addresses": spec.addresses_of(family),
            "multicastGroup": None if unicast else spec.vrrp.multicast_group,
            "auth": auth,
            "garp": spec.garp,
            "trackChecks": [{"check": c.name} for c in checks],
            "trackInterfaces": spec.track_interfaces,
        }
        try:
            templates[family] = VrrpInstance.model_validate(document)
        except ValidationError as error:
            return Problem("InvalidVirtualIP", f"cannot be rendered: {short_error(error)}")
    own = {f: {c.node: _node_ip(world, c.node, f) for c in chosen} for f in spec.families}
    # Sorted once per VIP: each node's peers are everyone's but its own (O(n) per node).
    everyone = {f: sorted({ip for ip in own[f].values() if ip}, key=int) for f in spec.families}
    out: dict[str, _Piece] = {}
    for cand in chosen:
        piece = _Piece(owner, checks=list(checks))
        for family, template in templates.items():
            update: dict[str, object] = {"priority": cand.priority}
            if unicast:
                mine = own[family][cand.node]
                peers = tuple(ip for ip in everyone[family] if ip != mine)
                update.update(unicast_peers=peers, unicast_source=mine)
            piece.instances.append(template.model_copy(update=update))
        out[cand.node] = piece
    return out


def _auth(world: World, vip: VirtualIP) -> Auth | Problem | None:
    ref = vip.spec.vrrp.auth_secret_ref
    if ref is None:
        return None
    secret = world.secrets.get(f"{vip.namespace}/{ref.name}")
    unsafe = "not rendered: the other routers would drop adverts without the password"
    if secret is None or ref.key not in secret:
        what = f"Secret {vip.namespace}/{ref.name}" + (
            f" has no key {ref.key!r}" if secret is not None else " does not exist"
        )
        return Problem("SecretMissing", f"vrrp.authSecretRef: {what}; {unsafe}")
    try:
        return Auth.model_validate({"password": secret[ref.key]})
    except ValidationError as error:
        return Problem(
            "SecretInvalid",
            f"vrrp.authSecretRef: key {ref.key!r} of Secret {vip.namespace}/{ref.name} {short_error(error)}; {unsafe}",
        )


def check_name(vip: VirtualIP, check: str) -> str:
    """A VirtualIP's check as named in the node's spec: checks are per node, so two VirtualIPs
    that each call theirs "nginx" must not collide (a DNS label, like instance names)."""
    base = f"{vip.namespace}-{vip.name}-{check}"
    if len(base) <= 63:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[:54].rstrip('-')}-{digest}"


def _node_ip(world: World, node: str, family: int) -> IPAddress | None:
    return next((ip for ip in world.nodes[node].internal_ips if ip.version == family), None)


def _address_gaps(world: World, vip: VirtualIP, chosen: tuple[Candidate, ...]) -> list[Problem]:
    if vip.spec.vrrp.mode != Mode.UNICAST:
        return []
    return [
        Problem(
            "NodeAddressMissing",
            f"vrrp.mode unicast: node {c.node} has no IPv{f} InternalIP, so the other nodes "
            "cannot send it adverts (it may take the VIP too: split brain)",
        )
        for c in chosen
        for f in vip.spec.families
        if _node_ip(world, c.node, f) is None
    ]


def _nobody(key: str, verdicts: Mapping[str, Verdict]) -> Problem:
    why: dict[str, list[str]] = {}
    for v in verdicts.values():
        why.setdefault(v.reason, []).append(v.node)
    detail = "; ".join(
        f"{', '.join(n[:3])}{'...' if len(n) > 3 else ''}: {r}" for r, n in why.items()
    )
    return Problem("NoEligibleNodes", f"no node may carry VirtualIP {key} ({detail or 'no nodes'})")


# --- assembly ---------------------------------------------------------------------------------


def _assemble(pieces: list[_Piece]) -> tuple[NodeAssignmentSpec, list[tuple[str, str]]]:
    """The node's spec; should the pieces not fit together (which the planning above prevents),
    each is added in turn and those that do not fit are dropped, with why."""
    try:
        return _spec(pieces), []
    except ValidationError:
        pass
    kept: list[_Piece] = []
    dropped: list[tuple[str, str]] = []
    for piece in pieces:
        try:
            _spec([*kept, piece])
            kept.append(piece)
        except ValidationError as error:
            dropped.append((piece.owner, short_error(error)))
    return _spec(kept), dropped


def _spec(pieces: list[_Piece]) -> NodeAssignmentSpec:
    checks: dict[str, Check] = {}
    for piece in pieces:
        for check in piece.checks:
            checks.setdefault(check.name, check)
    return NodeAssignmentSpec.model_validate(
        {
            "instances": tuple(i for p in pieces for i in p.instances),
            "checks": tuple(checks.values()),
            "virtualServers": tuple(s for p in pieces for s in p.services),
        }
    )
