"""A VirtualServer's real servers: static, or from a Service's EndpointSlices; and its services."""

from __future__ import annotations

from typing import Any

import pytest
from test_planning_builders import service, slice_, vip, vs, world

from vipkeeper_api.ipvs import Forwarding, Placement
from vipkeeper_operator.planning.endpoints import (
    resolve,
    services_of,
    slices_by_service,
    target_port,
)
from vipkeeper_operator.world import EndpointSlice, Service

SVC = service("app", ("http", 80, "web"), ("metrics", 9090, 9090))
SLICE = slice_("app-1", "app", ports=[("http", 8080), ("metrics", 9090)])


@pytest.mark.parametrize(
    ("wanted", "svc", "eps", "expected"),
    [
        ("http", SVC, SLICE, 8080),  # the Service port's name
        (80, SVC, SLICE, 8080),  # the Service port's number: its endpoints' port
        (9090, SVC, SLICE, 9090),
        (8080, SVC, SLICE, 8080),  # already the endpoints' port
        (7000, SVC, SLICE, 7000),  # not in the Service: the pods' port, as given
        ("nope", SVC, SLICE, None),
        (80, service("app", (None, 80, 8080)), slice_("s", "app", ports=[(None, 8080)]), 8080),
        (80, None, SLICE, 80),  # no Service known: numbers are taken as given
        ("http", SVC, slice_("s", "app", ports=[("http", 8080)], protocol="UDP"), None),
    ],
)
def test_target_port(
    wanted: int | str, svc: Service | None, eps: EndpointSlice, expected: int | None
) -> None:
    assert target_port(wanted, "TCP", svc, eps) == expected


def resolved(family: int = 4, **spec: Any) -> tuple[list[tuple[str, int | None, int]], list[str]]:
    ready: list[Any] = [("10.1.0.3", "n1"), ("10.1.0.1", "n2"), ("10.1.0.2", "n3", False, False)]
    w = world(
        [],
        [vip("web")],
        [vs("web-http", "web", **spec)],
        [SVC],
        [
            slice_("app-1", "app", *ready, ports=[("http", 8080), ("metrics", 9090)]),
            slice_("app-2", "app", ("10.1.0.1", "n2"), ("10.1.0.4", "n4", True, True)),
            slice_("app-3", "app", ("2001:db8::5", "n1"), address_type="IPv6"),
            slice_("other", "other", ("10.9.9.9", "n1")),
        ],
    )
    got = resolve(w, w.virtual_servers["default/web-http"], family)
    return [(str(r.address), r.port, r.weight) for r in got.real_servers], [
        p.reason for p in got.problems
    ]


REF: dict[str, Any] = {"serviceRef": {"name": "app"}}
CASES: dict[str, tuple[int, dict[str, Any], Any]] = {
    "static, filtered by family and sorted": (
        4,
        {
            "realServers": [
                {"address": "10.0.0.9"},
                {"address": "10.0.0.2", "port": 81, "weight": 3},
            ]
        },
        ([("10.0.0.2", 81, 3), ("10.0.0.9", None, 1)], []),
    ),
    "static list has no IPv6": (6, {"realServers": [{"address": "10.0.0.9"}]}, ([], [])),
    "ready endpoints, deduplicated, sorted; port of the Service's port 80": (
        4,
        REF,
        ([("10.1.0.1", 8080, 1), ("10.1.0.3", 8080, 1)], []),
    ),
    "targetPort by name, endpointWeight": (
        4,
        {**REF, "targetPort": "metrics", "endpointWeight": 5},
        ([("10.1.0.1", 9090, 5), ("10.1.0.3", 9090, 5)], []),
    ),
    "the service's own port: no port on the real server": (
        4,
        {**REF, "port": 8080},
        ([("10.1.0.1", None, 1), ("10.1.0.3", None, 1)], []),
    ),
    "IPv6 slices for the IPv6 service": (6, REF, ([("2001:db8::5", 8080, 1)], [])),
    "an unknown port name": (4, {**REF, "targetPort": "nope"}, ([], ["PortNotFound"])),
    "a missing Service": (4, {"serviceRef": {"name": "gone"}}, ([], ["ServiceMissing"])),
}


@pytest.mark.parametrize(("family", "spec", "expected"), CASES.values(), ids=CASES.keys())
def test_resolve(family: int, spec: dict[str, Any], expected: Any) -> None:
    assert resolved(family, **spec) == expected


def services(
    vip_kw: dict[str, Any], rendered: bool = True, **spec: Any
) -> tuple[list[Any], list[str]]:
    w = world(
        [],
        [vip("web", "192.0.2.10/24", "2001:db8::10/64", **vip_kw)],
        [vs("web-http", "web", **spec)],
        [SVC],
        [SLICE, slice_("s", "app", ("10.1.0.1", "n"), ports=[("http", 8080)])],
    )
    out, problems = services_of(
        w,
        w.virtual_servers["default/web-http"],
        {"default/web"} if rendered else set(),
        slices_by_service(w),
    )
    return [(s.name, str(s.address), s.vrrp_instance, len(s.real_servers)) for s in out], [
        p.reason for p in problems
    ]


SERVICE_CASES: dict[str, tuple[dict[str, Any], bool, dict[str, Any], Any]] = {
    "one service per family, named like the instances": (
        {},
        True,
        {"realServers": [{"address": "10.0.0.1"}, {"address": "2001:db8::1"}]},
        [
            ("default-web-http", "192.0.2.10", "default-web", 1),
            ("default-web-http-v6", "2001:db8::10", "default-web-v6", 1),
        ],
    ),
    "a static list of one family: no empty service for the other": (
        {},
        True,
        {"realServers": [{"address": "10.0.0.1"}]},
        [("default-web-http", "192.0.2.10", "default-web", 1)],
    ),
    "one address": (
        {},
        True,
        {"address": "2001:db8::10"},
        [("default-web-http-v6", "2001:db8::10", "default-web-v6", 0)],
    ),
    "placement all needs no instance": (
        {},
        False,
        {"address": "192.0.2.10", "placement": "all"},
        [("default-web-http", "192.0.2.10", None, 0)],
    ),
}


@pytest.mark.parametrize(
    ("vip_kw", "rendered", "spec", "expected"), SERVICE_CASES.values(), ids=SERVICE_CASES.keys()
)
def test_services(
    vip_kw: dict[str, Any], rendered: bool, spec: dict[str, Any], expected: Any
) -> None:
    assert services(vip_kw, rendered, **spec) == (expected, [])


@pytest.mark.parametrize(
    ("rendered", "spec", "reason"),
    [
        (True, {"address": "192.0.2.99"}, "AddressNotOnVirtualIP"),
        (False, {}, "VirtualIPNotRendered"),
        (True, {"serviceRef": {"name": "app"}, "forwarding": "dr"}, "InvalidVirtualServer"),
        (True, {"serviceRef": {"name": "app"}, "address": "2001:db8::10"}, "NoReadyEndpoints"),
    ],
)
def test_service_problems(rendered: bool, spec: dict[str, Any], reason: str) -> None:
    assert reason in services({}, rendered, **spec)[1]


def test_missing_virtual_ip() -> None:
    w = world(servers=[vs("web-http", "gone")])
    out, problems = services_of(w, w.virtual_servers["default/web-http"], set(), {})
    assert out == [] and [p.reason for p in problems] == ["VirtualIPMissing"]
    assert "VirtualIP default/gone does not exist" in problems[0].message


def test_spec_fields_are_carried_over() -> None:
    spec: dict[str, Any] = {
        "realServers": [{"address": "10.0.0.1"}],
        "scheduler": "sh",
        "schedulerFlags": ["sh-port"],
        "forwarding": "dr",
        "persistence": {"timeout": 60},
        "protocol": "UDP",
        "inhibitOnFailure": True,
        "placement": "holder",
        "check": {"kind": "tcp"},
    }
    w = world([], [vip("web")], [vs("web-dns", "web", port=53, **spec)])
    (out,), _ = services_of(w, w.virtual_servers["default/web-dns"], {"default/web"}, {})
    assert (out.scheduler, out.forwarding, out.protocol.value, out.port) == (
        "sh",
        Forwarding.DR,
        "UDP",
        53,
    )
    assert out.persistence is not None and out.persistence.timeout == 60
    assert (
        out.inhibit_on_failure
        and out.placement == Placement.HOLDER
        and out.check == {"kind": "tcp"}
    )
