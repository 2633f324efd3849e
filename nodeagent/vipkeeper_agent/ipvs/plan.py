"""What the IPVS table should hold, and the smallest ordered list of changes that gets it there.

Pure: specs, health and the kernel's table in, a table and operations out.

keepalived's rules (keepalived/check/ipwrapper.c), which :func:`desired` follows:

- A healthy real server is in the service with its configured weight. A failed one is removed,
  or kept with weight 0 when ``inhibitOnFailure`` (its established connections carry on).
- Quorum: the healthy real servers' weights add up to ``healthy_weight``. The service is up
  while that stays at or above ``min - hysteresis`` (and above 0); once down it comes back at
  ``min + hysteresis``. Without a ``quorum`` block keepalived's defaults apply (min 1, no
  hysteresis): up while any healthy real server has weight.
- When the quorum is down and a sorry server is set, the sorry server (weight 1) replaces the
  healthy real servers (inhibited failed ones stay at weight 0). Without a sorry server keepalived
  changes nothing when the quorum goes down: the healthy real servers that are left keep
  serving, and only the quorum ``down`` script tells anyone.
- Services that are not active on this node (placement) are simply absent.

:func:`diff` then turns (kernel table, desired table) into operations. It never touches a
service that is neither desired nor ``owned`` (kube-proxy and others share the table), and it
makes before it breaks: new services and destinations are added before old destinations are
removed, so a switch (e.g. real servers -> sorry server) never leaves a service empty.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from vipkeeper_agent.ipvs.table import (
    FLAG_PERSISTENT,
    SCHEDULER_FLAG_BITS,
    Destination,
    DestKey,
    ForwardingMethod,
    Service,
    ServiceKey,
    Table,
    VirtualService,
    hostport,
)
from vipkeeper_api.ipvs import Placement, Quorum, RealServer, VirtualServer

#: The weight keepalived gives a sorry server.
SORRY_SERVER_WEIGHT = 1
#: Health of a real server nobody has reported on: healthy, as keepalived treats a real server
#: without checkers (and as the check's first result will decide at once anyway).
DEFAULT_HEALTHY = True


def real_server_check_name(vs: VirtualServer, rs: RealServer) -> str:
    """The name of a real server's check, and its key in the ``health`` mapping:
    ``<vs>/<address>:<port>`` (``[v6]:port`` for IPv6), as ``VirtualServer.real_server_checks``
    names it."""
    return f"{vs.name}/{hostport(rs.address, vs.real_port(rs))}"


#: id(virtual server) -> (it, its real servers' check names); see :func:`_check_names`.
_NAMES: dict[int, tuple[VirtualServer, tuple[str, ...]]] = {}
#: id(virtual server) -> (it, up, health of its real servers, destinations_of's result).
_DESTINATIONS: dict[int, tuple[VirtualServer, bool, tuple[bool, ...], dict[DestKey, Destination]]]
_DESTINATIONS = {}
_MEMO_LIMIT = 4096


def _check_names(vs: VirtualServer) -> tuple[str, ...]:
    """The check names of ``vs``'s real servers, worked out once per virtual server (models are
    frozen): every sync looks up 10,000 of them on a large director."""
    hit = _NAMES.get(id(vs))
    if hit is not None and hit[0] is vs:
        return hit[1]
    names = tuple(real_server_check_name(vs, rs) for rs in vs.real_servers)
    if len(_NAMES) >= _MEMO_LIMIT:
        _NAMES.clear()
    _NAMES[id(vs)] = (vs, names)
    return names


def _health(vs: VirtualServer, health: Mapping[str, bool]) -> tuple[bool, ...]:
    if vs.check is None:
        return (True,) * len(vs.real_servers)
    return tuple(health.get(name, DEFAULT_HEALTHY) for name in _check_names(vs))


def healthy_weight(vs: VirtualServer, health: Mapping[str, bool]) -> int:
    return sum(rs.weight for rs, ok in zip(vs.real_servers, _health(vs, health), strict=True) if ok)


def quorum_up(previous_up: bool | None, healthy_weight: int, quorum: Quorum | None) -> bool:
    """Whether the service has its quorum, with hysteresis. ``previous_up`` is ``None`` on the
    first evaluation, which (like keepalived's start) needs ``min + hysteresis``."""
    minimum = quorum.min if quorum is not None else 1
    hysteresis = quorum.hysteresis if quorum is not None else 0
    if previous_up:
        # keepalived also drops a service whose weight reached 0 even when min - hysteresis
        # would still allow it (min <= hysteresis).
        return healthy_weight > 0 and healthy_weight >= minimum - hysteresis
    return healthy_weight >= minimum + hysteresis


@dataclass(frozen=True, slots=True)
class Assessment:
    """How one virtual server stands: what :func:`desired` acted on, for status and notify."""

    name: str
    healthy: int
    total: int
    healthy_weight: int
    quorum_up: bool
    #: The sorry server is in the table instead of the real servers.
    sorry_server_active: bool


def assess(
    vs_list: Iterable[VirtualServer],
    health: Mapping[str, bool],
    previous: Mapping[str, bool] | None = None,
) -> dict[str, Assessment]:
    """Every virtual server's quorum, given the previous quorum states (by name; missing = first
    evaluation). Feed the result's ``quorum_up`` back as ``previous`` next time."""
    previous = previous or {}
    out = {}
    for vs in vs_list:
        states = _health(vs, health)
        weight = sum(rs.weight for rs, ok in zip(vs.real_servers, states, strict=True) if ok)
        up = quorum_up(previous.get(vs.name), weight, vs.quorum)
        out[vs.name] = Assessment(
            name=vs.name,
            healthy=sum(states),
            total=len(vs.real_servers),
            healthy_weight=weight,
            quorum_up=up,
            sorry_server_active=not up and vs.sorry_server is not None,
        )
    return out


def active_here(
    vs_list: Iterable[VirtualServer],
    carrier: Mapping[str, str | None],
    masters: Collection[str],
) -> set[str]:
    """The virtual servers this node carries: ``placement: all`` always; ``holder`` while the
    VRRP instance carrying it (``carrier``: virtual server -> instance name) is MASTER here."""
    return {
        vs.name
        for vs in vs_list
        if vs.placement == Placement.ALL or carrier.get(vs.name) in masters
    }


def service_key(vs: VirtualServer) -> ServiceKey:
    if vs.fwmark is not None:
        return ServiceKey.firewall_mark(vs.fwmark_family, vs.fwmark)
    assert vs.address is not None and vs.port is not None  # the schema's rule
    return ServiceKey(family=vs.family, protocol=vs.protocol, address=vs.address, port=vs.port)


def owned_keys(vs_list: Iterable[VirtualServer]) -> set[ServiceKey]:
    """The services the configuration claims, active here or not: pass them (with those of the
    previous configuration, which the agent should remember) as ``owned`` to :func:`diff`, so
    that a service whose VIP moved to another node, or that left the configuration, is removed."""
    return {service_key(vs) for vs in vs_list}


def service_of(vs: VirtualServer) -> Service:
    """The kernel service of a virtual server, without its destinations."""
    flags = 0
    for flag in vs.scheduler_flags:
        flags |= SCHEDULER_FLAG_BITS[flag]
    full = 32 if vs.family == 4 else 128
    timeout, netmask = 0, full
    if vs.persistence is not None:
        flags |= FLAG_PERSISTENT
        timeout = vs.persistence.timeout
        if vs.persistence.prefix_length is not None:
            netmask = vs.persistence.prefix_length
    return Service(
        key=service_key(vs), scheduler=vs.scheduler, flags=flags, timeout=timeout, netmask=netmask
    )


def destinations_of(
    vs: VirtualServer, health: Mapping[str, bool], up: bool
) -> dict[DestKey, Destination]:
    """The destinations ``vs`` wants. The same inputs give the same (shared, not to be
    modified) dict: a sync after one check result rebuilds one service's, not 10,000."""
    states = _health(vs, health)
    hit = _DESTINATIONS.get(id(vs))
    if hit is not None and hit[0] is vs and hit[1] == up and hit[2] == states:
        return hit[3]
    out = _destinations(vs, states, up)
    if len(_DESTINATIONS) >= _MEMO_LIMIT:
        _DESTINATIONS.clear()
    _DESTINATIONS[id(vs)] = (vs, up, states, out)
    return out


def _destinations(
    vs: VirtualServer, states: tuple[bool, ...], up: bool
) -> dict[DestKey, Destination]:
    method = ForwardingMethod(vs.forwarding.value)
    sorry = vs.sorry_server
    out: dict[DestKey, Destination] = {}
    for rs, healthy in zip(vs.real_servers, states, strict=True):
        dest = Destination(
            address=rs.address,
            port=vs.real_port(rs),
            weight=rs.weight,
            forwarding=method,
            upper_threshold=rs.upper_threshold,
            lower_threshold=rs.lower_threshold,
        )
        if healthy:
            if up or sorry is None:
                out[dest.key] = dest
        elif vs.inhibit_on_failure:
            out[dest.key] = replace(dest, weight=0)
    if not up and sorry is not None:
        port = sorry.port if sorry.port is not None else (vs.port or 0)
        dest = Destination(
            address=sorry.address, port=port, weight=SORRY_SERVER_WEIGHT, forwarding=method
        )
        out[dest.key] = dest
    return out


def desired(
    vs_list: Iterable[VirtualServer],
    health: Mapping[str, bool],
    active: Collection[str],
    quorum: Mapping[str, bool] | None = None,
) -> dict[ServiceKey, VirtualService]:
    """The table the configuration wants on this node.

    ``health``: check name (:func:`real_server_check_name`) -> healthy; real servers without an
    entry are healthy. ``active``: names of the virtual servers this node carries (placement).
    ``quorum``: name -> quorum up, from :func:`assess` (which keeps the hysteresis across calls);
    when omitted, each service's quorum is judged afresh as on a first evaluation.
    """
    vs_list = list(vs_list)
    if quorum is None:
        quorum = {name: a.quorum_up for name, a in assess(vs_list, health).items()}
    table: dict[ServiceKey, VirtualService] = {}
    for vs in vs_list:
        if vs.name not in active:
            continue
        up = quorum.get(vs.name)
        if up is None:
            up = quorum_up(None, healthy_weight(vs, health), vs.quorum)
        service = service_of(vs)
        table[service.key] = VirtualService(service, destinations_of(vs, health, up))
    return table


# --- operations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddService:
    service: Service

    @property
    def key(self) -> ServiceKey:
        return self.service.key

    def describe(self) -> str:
        return f"add service {self.service.key} {_service_details(self.service)}"


@dataclass(frozen=True, slots=True)
class EditService:
    """Scheduler, flags or persistence changed; the service keeps its connections."""

    service: Service
    before: Service

    @property
    def key(self) -> ServiceKey:
        return self.service.key

    def describe(self) -> str:
        return (
            f"change service {self.service.key}: {_service_details(self.before)} -> "
            f"{_service_details(self.service)}"
        )


@dataclass(frozen=True, slots=True)
class DeleteService:
    """Removes the service and, in the kernel, all its destinations."""

    service: Service

    @property
    def key(self) -> ServiceKey:
        return self.service.key

    def describe(self) -> str:
        return f"delete service {self.service.key}"


@dataclass(frozen=True, slots=True)
class AddDest:
    key: ServiceKey
    destination: Destination

    def describe(self) -> str:
        return f"add {self.destination} to {self.key} {_dest_details(self.destination)}"


@dataclass(frozen=True, slots=True)
class EditDest:
    """Weight, forwarding or thresholds changed. The kernel changes all of them in place
    (IPVS_CMD_SET_DEST, verified in the VM lane), so connections survive."""

    key: ServiceKey
    destination: Destination
    before: Destination

    def describe(self) -> str:
        return (
            f"change {self.destination} in {self.key}: {_dest_details(self.before)} -> "
            f"{_dest_details(self.destination)}"
        )


@dataclass(frozen=True, slots=True)
class DeleteDest:
    key: ServiceKey
    destination: Destination

    def describe(self) -> str:
        return f"delete {self.destination} from {self.key}"


Op = AddService | EditService | DeleteService | AddDest | EditDest | DeleteDest


@dataclass(frozen=True, slots=True)
class OpResult:
    op: Op
    #: What went wrong, for logs and status; ``None`` when the kernel accepted the operation.
    error: str | None = None
    #: The kernel's errno (0 = success).
    errno: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


def _service_details(service: Service) -> str:
    text = service.scheduler
    names = service.scheduler_flag_names()
    if names:
        text += f" ({','.join(names)})"
    if service.persistent:
        text += f" persistent {service.timeout} netmask /{service.netmask}"
    return text


def _dest_details(dest: Destination) -> str:
    text = f"{dest.forwarding.value} weight {dest.weight}"
    if dest.upper_threshold or dest.lower_threshold:
        text += f" thresholds {dest.lower_threshold}-{dest.upper_threshold}"
    return text


def _dest_order(key: DestKey) -> tuple[int, int, int]:
    return (key[0].version, int(key[0]), key[1])


def _service_order(key: ServiceKey) -> tuple[int, int, str, int, int, int]:
    return key.sort_key


def diff(current: Table, desired: Table, owned: Collection[ServiceKey]) -> list[Op]:
    """The operations that turn ``current`` into ``desired`` for the services we manage.

    ``owned``: services this agent put in the table before (e.g. from its previous
    configuration); they are deleted when no longer desired. A service in ``current`` that is
    neither desired nor owned is someone else's and is never touched. A desired service that
    already exists is taken over as it is (edited, not re-created), so that an agent restart with
    an unchanged configuration changes nothing.

    Order: service deletes, service adds, service edits, destination adds, destination edits,
    destination deletes; within each, by service then destination. A service's destinations are
    never deleted one by one when the service goes: the kernel drops them with it.
    """
    delete_services: list[Op] = []
    add_services: list[Op] = []
    edit_services: list[Op] = []
    add_dests: list[Op] = []
    edit_dests: list[Op] = []
    delete_dests: list[Op] = []
    for key in sorted(current, key=_service_order):
        if key not in desired and key in owned:
            delete_services.append(DeleteService(current[key].service))
    for key in sorted(desired, key=_service_order):
        want = desired[key]
        have = current.get(key)
        if have is None:
            add_services.append(AddService(want.service))
            add_dests += [
                AddDest(key, want.destinations[d])
                for d in sorted(want.destinations, key=_dest_order)
            ]
            continue
        if have.service != want.service:
            edit_services.append(EditService(want.service, have.service))
        for dkey in sorted(want.destinations, key=_dest_order):
            dest = want.destinations[dkey]
            before = have.destinations.get(dkey)
            if before is None:
                add_dests.append(AddDest(key, dest))
            elif before != dest:
                edit_dests.append(EditDest(key, dest, before))
        for dkey in sorted(have.destinations, key=_dest_order):
            if dkey not in want.destinations:
                delete_dests.append(DeleteDest(key, have.destinations[dkey]))
    return delete_services + add_services + edit_services + add_dests + edit_dests + delete_dests


class SimulationError(ValueError):
    """An operation the kernel would refuse (EEXIST / ENOENT)."""


def simulate(current: Table, ops: Sequence[Op]) -> dict[ServiceKey, VirtualService]:
    """The table after the kernel applied ``ops`` to ``current``, with the kernel's refusals
    (adding what exists, changing or deleting what does not) raised as SimulationError."""
    table: dict[ServiceKey, VirtualService] = dict(current)
    # Each touched service's destinations are copied once, not once per op: a bulk load is
    # 10,000 destination adds.
    copied: dict[ServiceKey, dict[DestKey, Destination]] = {}

    def entry(key: ServiceKey) -> VirtualService:
        if key not in table:
            raise SimulationError(f"no service {key}")
        return table[key]

    def dests_of(key: ServiceKey) -> dict[DestKey, Destination]:
        if key not in copied:
            copied[key] = dict(entry(key).destinations)
        return copied[key]

    for op in ops:
        if isinstance(op, AddService):
            if op.key in table:
                raise SimulationError(f"service {op.key} exists")
            table[op.key] = VirtualService(op.service, {})
            copied[op.key] = {}
        elif isinstance(op, EditService):
            entry(op.key)
            table[op.key] = replace(table[op.key], service=op.service)
        elif isinstance(op, DeleteService):
            entry(op.key)
            del table[op.key]
            copied.pop(op.key, None)
        else:
            dests = dests_of(op.key)
            dkey = op.destination.key
            if isinstance(op, AddDest):
                if dkey in dests:
                    raise SimulationError(f"{op.destination} exists in {op.key}")
                dests[dkey] = op.destination
            elif dkey not in dests:
                raise SimulationError(f"no {op.destination} in {op.key}")
            elif isinstance(op, EditDest):
                dests[dkey] = op.destination
            else:
                del dests[dkey]
    for key, dests in copied.items():
        if key in table:
            table[key] = replace(table[key], destinations=dests)
    return table
