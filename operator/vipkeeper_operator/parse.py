"""Raw API objects (dicts, as kopf and the API hand them over) -> the World's frozen data.

Parse, don't validate: specs go through the shared models once, here; an object that does not
parse becomes a :class:`Rejected` with the loader's precise message (path, value, fix), which the
adapter reports on the object (condition + Event) instead of rendering it. Pure.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from vipkeeper_api.loader import ConfigError, parse_model
from vipkeeper_api.resources import (
    NodeAssignmentStatus,
    VirtualIPSpec,
    VirtualIPStatus,
    VirtualServerSpec,
)
from vipkeeper_operator.world import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    IPAddress,
    Node,
    Service,
    ServicePort,
    VirtualIP,
    VirtualServer,
)

Raw = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An object whose spec does not parse: what to tell its owner."""

    namespace: str
    name: str
    kind: str
    message: str
    uid: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _meta(obj: Raw) -> Raw:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def object_key(obj: Raw) -> str:
    meta = _meta(obj)
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


def _generation(meta: Raw) -> int:
    # The API server keeps metadata.generation an integer; anything else (a hand-built object, a
    # broken emulator) must not stop the whole pass, only lose the observedGeneration.
    value = meta.get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _ip(text: object) -> IPAddress | None:
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        return None


def node(obj: Raw) -> Node:
    meta, spec, status = _meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    ips = tuple(
        ip
        for a in status.get("addresses") or ()
        if a.get("type") == "InternalIP" and (ip := _ip(a.get("address"))) is not None
    )
    return Node(
        name=str(meta.get("name")),
        labels=dict(meta.get("labels") or {}),
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
        internal_ips=ips,
        deleting=meta.get("deletionTimestamp") is not None,
    )


def _spec(model: type[BaseModel], obj: Raw, kind: str) -> BaseModel | Rejected:
    meta = _meta(obj)
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
    try:
        return parse_model(model, obj.get("spec") or {}, f"{kind} {namespace}/{name}", ("spec",))
    except ConfigError as exc:
        return Rejected(namespace, name, kind, str(exc), str(meta.get("uid") or ""))


def virtual_ip(obj: Raw) -> VirtualIP | Rejected:
    spec = _spec(VirtualIPSpec, obj, "VirtualIP")
    if isinstance(spec, Rejected):
        return spec
    assert isinstance(spec, VirtualIPSpec)
    meta = _meta(obj)
    try:
        status = VirtualIPStatus.model_validate(obj.get("status") or {})
    except ValueError:
        status = VirtualIPStatus()  # ours, but unreadable (an older version?): start afresh
    return VirtualIP(
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        uid=str(meta.get("uid", "")),
        generation=_generation(meta),
        spec=spec,
        status=status,
        deleting=meta.get("deletionTimestamp") is not None,
    )


def virtual_server(obj: Raw) -> VirtualServer | Rejected:
    spec = _spec(VirtualServerSpec, obj, "VirtualServer")
    if isinstance(spec, Rejected):
        return spec
    assert isinstance(spec, VirtualServerSpec)
    meta = _meta(obj)
    return VirtualServer(
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        uid=str(meta.get("uid", "")),
        generation=_generation(meta),
        spec=spec,
        deleting=meta.get("deletionTimestamp") is not None,
    )


def service(obj: Raw) -> Service:
    meta, spec = _meta(obj), obj.get("spec") or {}
    ports = tuple(
        ServicePort(
            name=p.get("name"),
            port=int(p.get("port", 0)),
            target_port=p.get("targetPort"),
            protocol=str(p.get("protocol", "TCP")),
        )
        for p in spec.get("ports") or ()
    )
    return Service(namespace=str(meta.get("namespace")), name=str(meta.get("name")), ports=ports)


def endpoint_slice(obj: Raw) -> EndpointSlice | None:
    """None for a slice no Service owns (no ``kubernetes.io/service-name`` label)."""
    meta = _meta(obj)
    owner = (meta.get("labels") or {}).get("kubernetes.io/service-name")
    if not owner:
        return None
    endpoints = []
    for item in obj.get("endpoints") or ():
        conditions = item.get("conditions") or {}
        for text in item.get("addresses") or ():
            address = _ip(text)
            if address is None:
                continue  # FQDN slices, or garbage: not a real server
            endpoints.append(
                Endpoint(
                    address=address,
                    node=item.get("nodeName"),
                    # The API's rule: a missing ready condition means ready.
                    ready=conditions.get("ready") is not False,
                    terminating=conditions.get("terminating") is True,
                )
            )
    ports = tuple(
        EndpointPort(
            name=p.get("name") or None,
            port=int(p.get("port", 0)),
            protocol=str(p.get("protocol", "TCP")),
        )
        for p in obj.get("ports") or ()
        if p.get("port") is not None
    )
    return EndpointSlice(
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        service=str(owner),
        address_type=str(obj.get("addressType", "IPv4")),
        ports=ports,
        endpoints=tuple(endpoints),
    )


def secret(obj: Raw) -> dict[str, str]:
    """A Secret's data, decoded; keys that are not base64 UTF-8 are left out."""
    out: dict[str, str] = {}
    for key, value in (obj.get("data") or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
    for key, value in (obj.get("stringData") or {}).items():
        out[str(key)] = str(value)
    return out


def assignment_status(obj: Raw) -> NodeAssignmentStatus | None:
    """What a node reported; None when it reported nothing (yet) or something unreadable."""
    status = obj.get("status")
    if not status:
        return None
    try:
        return NodeAssignmentStatus.model_validate(status)
    except ValueError:
        return None
