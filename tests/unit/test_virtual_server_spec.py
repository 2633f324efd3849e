"""The VirtualServer custom resource's spec refuses what the agent's ipvs.VirtualServer would (the
same rules, from ipvs.py), at the field's own path, and its CRD agrees where CEL can say it."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_schema import errors_of
from pydantic import BaseModel, ValidationError

from vipkeeper_api import ConfigError
from vipkeeper_api.ipvs import VirtualServer
from vipkeeper_api.loader import parse_model
from vipkeeper_api.resources import VirtualServerSpec

VS: dict[str, Any] = {"virtualIPRef": {"name": "web"}, "port": 80}
V4, V6 = {"address": "192.0.2.10"}, {"address": "2001:db8::10"}


def problems(spec: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_model(VirtualServerSpec, {**VS, **spec}, "VirtualServer ns/web", ("spec",))
    return str(info.value)


# (what, spec fields, every problem line expected: path, then part of the message)
ERRORS: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    ("unknown check kind", {"check": {"kind": "nope"}}, [("spec.check.kind", "unknown kind 'nope'")]),
    ("check field", {"check": {"kind": "http", "path": "ok"}}, [("spec.check.path", "not an HTTP path")]),
    ("check field of another kind", {"check": {"kind": "tcp", "script": "x"}}, [("spec.check.script", "unknown field")]),
    ("check with a name", {"check": {"kind": "tcp", "name": "c"}}, [("spec.check", "remove name")]),
    ("flags of another scheduler", {"scheduler": "rr", "schedulerFlags": ["sh-port", "mh-port"]}, [
        ("spec.schedulerFlags[0]", "sh-port applies to scheduler sh, not rr"),
        ("spec.schedulerFlags[1]", "mh-port applies to scheduler mh, not rr"),
    ]),
    ("families", {**V4, "realServers": [{"address": "10.0.0.1"}, {"address": "2001:db8::1"}],
                  "sorryServer": {"address": "::1"}}, [
        ("spec.realServers[1].address", "2001:db8::1 is IPv6, the service is IPv4"),
        ("spec.sorryServer.address", "sorryServer must be IPv4 like the service"),
    ]),
    ("prefix over 32", {**V4, "persistence": {"prefixLength": 33}}, [("spec.persistence.prefixLength", "exceeds 32")]),
    ("prefix 0 with IPv6", {**V6, "persistence": {"prefixLength": 0}}, [("spec.persistence.prefixLength", "0 is not possible")]),
    ("quorum", {"quorum": {"min": 4}, "realServers": [{"address": "10.0.0.1", "weight": 3}]}, [
        ("spec.quorum.min", "exceeds the real servers' total weight 3"),
    ]),
    ("quorum over both families", {"quorum": {"min": 3}, "realServers": [
        {"address": "10.0.0.1"}, {"address": "2001:db8::1"}]}, [("spec.quorum.min", "weight 2")]),
    ("thresholds", {"realServers": [{"address": "10.0.0.1", "upperThreshold": 2, "lowerThreshold": 3}]}, [
        ("spec.realServers[0].lowerThreshold", "must not exceed upperThreshold 2"),
    ]),
]  # fmt: skip


@pytest.mark.parametrize(("what", "spec", "expected"), ERRORS, ids=[e[0] for e in ERRORS])
def test_problem_is_reported_at_its_field(
    what: str, spec: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    lines = problems(spec).splitlines()[1:]
    assert len(lines) == len(expected), lines
    for line, (path, message) in zip(lines, expected, strict=True):
        assert line.startswith(f"  - {path}: ") and message in line, line


# Without address the family is the VirtualIP's (a service per family): nothing family-bound.
ACCEPTED: list[dict[str, Any]] = [
    {"realServers": [{"address": "10.0.0.1"}, {"address": "2001:db8::1"}]},
    {"sorryServer": {"address": "2001:db8::9"}, "persistence": {"prefixLength": 0}},
    {"persistence": {"prefixLength": 128}},
    {"quorum": {"min": 9}},  # real servers from a Service: their weights are not known yet
    {"scheduler": "sh", "schedulerFlags": ["sh-port", "sh-fallback"]},
    {"check": {"kind": "exec", "script": "probe", "args": ["{address}", "{port}"]}},
    {"check": {"kind": "tcp", "address": "2001:db8::7"}, **V4},
]


@pytest.mark.parametrize("spec", ACCEPTED)
def test_what_can_be_right_for_some_family_is_accepted(spec: dict[str, Any]) -> None:
    VirtualServerSpec.model_validate({**VS, **spec})
    assert errors_of("VirtualServer", copy.deepcopy({**VS, **spec})) == []


def _accepted(model: type[BaseModel], document: dict[str, Any]) -> bool:
    try:
        model.model_validate(document)
    except ValidationError:
        return False
    return True


_ADDRESSES = ["10.0.0.1", "10.0.0.2", "2001:db8::1"]
_CHECKS = [
    {"kind": "tcp"},
    {"kind": "exec"},
    {"kind": "http", "path": "/"},
    {"kind": "ping", "name": "c"},
]


@settings(max_examples=200, deadline=None)
@given(
    address=st.sampled_from([{}, V4, V6]),
    scheduler=st.sampled_from([{}, {"scheduler": "sh"}, {"scheduler": "mh"}]),
    flags=st.lists(st.sampled_from(["sh-port", "mh-port"]), max_size=1, unique=True),
    prefix=st.sampled_from([None, 0, 1, 32, 33, 128]),
    sorry=st.sampled_from([None, "10.0.0.9", "2001:db8::9"]),
    servers=st.lists(st.sampled_from(_ADDRESSES), max_size=3, unique=True),
    check=st.sampled_from([None, *_CHECKS]),
)
def test_spec_crd_and_agent_agree(
    address: dict[str, Any], scheduler: dict[str, Any], flags: list[str], prefix: int | None,
    sorry: str | None, servers: list[str], check: dict[str, Any] | None,
) -> None:  # fmt: skip
    """The CRD accepts what the spec model accepts; with an address (the family known) so does
    the agent's model for the service the operator renders from it."""
    fields: dict[str, Any] = {**address, **scheduler, "schedulerFlags": flags}
    fields["realServers"] = [{"address": a} for a in servers]
    fields |= {"persistence": {"prefixLength": prefix}} if prefix is not None else {}
    fields |= {"sorryServer": {"address": sorry}} if sorry is not None else {}
    fields |= {"check": check} if check is not None else {}
    spec = {**VS, **fields}
    accepted = _accepted(VirtualServerSpec, spec)
    assert (errors_of("VirtualServer", copy.deepcopy(spec)) == []) == accepted
    if address:
        agent = {"name": "web", "port": 80, "placement": "all", **fields}
        assert _accepted(VirtualServer, agent) == accepted
