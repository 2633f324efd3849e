"""The operator's mirror of the cluster: every watched object, parsed once on arrival.

kopf's watch handlers call :meth:`Store.observe` / :meth:`Store.forget`; the controller takes a
:meth:`Store.snapshot` (an immutable World) for each planning pass. No I/O; not thread-safe (it
lives on kopf's event loop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from vipkeeper_api.resources import NodeAssignmentStatus, VirtualIPStatus
from vipkeeper_operator import parse
from vipkeeper_operator.parse import Raw, Rejected
from vipkeeper_operator.world import (
    EndpointSlice,
    Node,
    Service,
    VirtualIP,
    VirtualServer,
    World,
)

#: The kinds the store mirrors (kopf resource plural -> kind).
KINDS = (
    "nodes",
    "virtualips",
    "virtualservers",
    "services",
    "endpointslices",
    "secrets",
    "nodeassignments",
)


_NO_STATUS = VirtualIPStatus()


class Store:
    def __init__(self, vrid_range: tuple[int, int] = (1, 255)) -> None:
        self.vrid_range = vrid_range
        self.nodes: dict[str, Node] = {}
        self.virtual_ips: dict[str, VirtualIP] = {}
        self.virtual_servers: dict[str, VirtualServer] = {}
        self.services: dict[str, Service] = {}
        self.endpoint_slices: dict[str, EndpointSlice] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.reports: dict[str, NodeAssignmentStatus] = {}
        #: node -> the spec document its NodeAssignment holds (None: no spec).
        self.assignments: dict[str, dict[str, Any] | None] = {}
        #: "Kind namespace/name" -> why its spec was refused.
        self.rejected: dict[str, Rejected] = {}
        #: The raw objects, for status patches and Events (kopf wants the body).
        self.bodies: dict[str, Raw] = {}

    def observe(self, plural: str, obj: Raw) -> bool:
        """An object was added or changed. Returns whether the planning could see a difference:
        not for the watch echo of the operator's own status write, a node's kubelet heartbeat
        or an agent's status heartbeat, which are many and change nothing."""
        key = parse.object_key(obj)
        before = self._relevant(plural, key)
        handler = self._observers()[plural]
        handler(key, obj)
        return self._relevant(plural, key) != before

    def _relevant(self, plural: str, key: str) -> object:
        rejected = self.rejected.get(f"{plural}/{key}")
        if plural == "virtualips":
            vip = self.virtual_ips.get(key)
            # Its status is the operator's own output (the VRID it records comes from the plan).
            return (None if vip is None else replace(vip, status=_NO_STATUS), rejected)
        if plural == "nodeassignments":
            report = self.reports.get(key)
            quiet = None if report is None else report.model_copy(update={"updated": None})
            return (self.assignments.get(key), quiet)
        table: dict[str, dict[str, Any]] = {
            "nodes": self.nodes,
            "virtualservers": self.virtual_servers,
            "services": self.services,
            "endpointslices": self.endpoint_slices,
            "secrets": self.secrets,
        }
        return (table[plural].get(key), rejected)

    def forget(self, plural: str, obj: Raw) -> None:
        key = parse.object_key(obj)
        tables: dict[str, dict[str, Any]] = {
            "nodes": self.nodes,
            "virtualips": self.virtual_ips,
            "virtualservers": self.virtual_servers,
            "services": self.services,
            "endpointslices": self.endpoint_slices,
            "secrets": self.secrets,
            "nodeassignments": self.assignments,
        }
        tables[plural].pop(key, None)
        if plural == "nodeassignments":
            self.reports.pop(key, None)
        self.rejected.pop(f"{plural}/{key}", None)
        self.bodies.pop(f"{plural}/{key}", None)

    def snapshot(self) -> World:
        return World(
            nodes=dict(self.nodes),
            virtual_ips=dict(self.virtual_ips),
            virtual_servers=dict(self.virtual_servers),
            services=dict(self.services),
            endpoint_slices=dict(self.endpoint_slices),
            secrets={k: dict(v) for k, v in self.secrets.items()},
            reports=dict(self.reports),
            vrid_range=self.vrid_range,
        )

    # --- per kind -------------------------------------------------------------------------

    def _observers(self) -> dict[str, Callable[[str, Raw], None]]:
        return {
            "nodes": lambda key, obj: self.nodes.__setitem__(key, parse.node(obj)),
            "virtualips": self._virtual_ip,
            "virtualservers": self._virtual_server,
            "services": lambda key, obj: self.services.__setitem__(key, parse.service(obj)),
            "endpointslices": self._endpoint_slice,
            "secrets": lambda key, obj: self.secrets.__setitem__(key, parse.secret(obj)),
            "nodeassignments": self._assignment,
        }

    def _virtual_ip(self, key: str, obj: Raw) -> None:
        self.bodies[f"virtualips/{key}"] = obj
        parsed = parse.virtual_ip(obj)
        if isinstance(parsed, Rejected):
            # The last good spec keeps running: a bad edit must not drop a working VIP.
            self.rejected[f"virtualips/{key}"] = parsed
            return
        self.rejected.pop(f"virtualips/{key}", None)
        self.virtual_ips[key] = parsed

    def _virtual_server(self, key: str, obj: Raw) -> None:
        self.bodies[f"virtualservers/{key}"] = obj
        parsed = parse.virtual_server(obj)
        if isinstance(parsed, Rejected):
            self.rejected[f"virtualservers/{key}"] = parsed
            return
        self.rejected.pop(f"virtualservers/{key}", None)
        self.virtual_servers[key] = parsed

    def _endpoint_slice(self, key: str, obj: Raw) -> None:
        parsed = parse.endpoint_slice(obj)
        if parsed is None:
            self.endpoint_slices.pop(key, None)
        else:
            self.endpoint_slices[key] = parsed

    def _assignment(self, key: str, obj: Raw) -> None:
        spec = obj.get("spec")
        self.assignments[key] = dict(spec) if isinstance(spec, dict) else None
        report = parse.assignment_status(obj)
        if report is None:
            self.reports.pop(key, None)
        else:
            self.reports[key] = report
