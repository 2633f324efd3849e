"""The CRDs: generated from the models, structural, and in agreement with the models.

No kube-apiserver runs here: :mod:`k8s_schema` stands in for its schema validation and CEL.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from k8s_schema import JUNCTOR_FORBIDDEN, SCHEMAS, errors_of, nodes, program, validate
from pydantic import BaseModel, ValidationError

from vipkeeper_api import crd, crd_rules, load_spec
from vipkeeper_api.models import NodeAssignmentSpec
from vipkeeper_api.resources import (
    API_VERSION,
    NodeAssignmentStatus,
    VirtualIPSpec,
    VirtualIPStatus,
    VirtualServerSpec,
    VirtualServerStatus,
)
from vipkeeper_operator.planning.writes import spec_document

ROOT = Path(__file__).parents[2]
SPEC_MODELS: dict[str, type[BaseModel]] = {
    "VirtualIP": VirtualIPSpec,
    "VirtualServer": VirtualServerSpec,
    "NodeAssignment": NodeAssignmentSpec,
}
EXAMPLES = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))
#: The only free-form subtrees: what a node reports of an instance (operator reads it as is).
PRESERVE_UNKNOWN = {
    "NodeAssignment": {".status.instances[].lastTransition", ".status.instances[].checks"}
}


# --- generated, structural ------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(crd.files()))
def test_committed_crds_are_what_the_generator_writes(name: str) -> None:
    committed = (ROOT / "crds" / name).read_text()
    assert committed == crd.files()[name], "run: python -m vipkeeper_api.crd --write crds/"


def test_committed_docs_are_what_the_generator_writes() -> None:
    committed = (ROOT / "docs" / "crds.md").read_text()
    assert committed == crd.docs(), "run: python -m vipkeeper_api.crd --docs docs/crds.md"


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_schema_is_structural(kind: str) -> None:
    preserved = set()
    for path, node in nodes(SCHEMAS[kind]):
        where = path or "<root>"
        assert not {"$ref", "$defs", "oneOf", "allOf", "not", "default", "nullable"} & set(node)
        if node.get("x-kubernetes-preserve-unknown-fields"):
            preserved.add(path)
        elif not node.get("x-kubernetes-int-or-string"):
            assert node.get("type") in crd_types(), f"{where} has no type"
        assert not ("properties" in node and "additionalProperties" in node), where
        if node.get("type") == "object" and path != ".metadata":
            free = {"properties", "additionalProperties", "x-kubernetes-preserve-unknown-fields"}
            assert free & set(node), f"{where}: an object without fields prunes everything"
        assert node.get("additionalProperties", {}) is not False, where
        for option in node.get("anyOf", ()):
            assert not JUNCTOR_FORBIDDEN & set(option), f"{where}: anyOf sets {option}"
        if node.get("x-kubernetes-list-type") == "map":
            required = node["items"].get("required", ())
            assert set(node["x-kubernetes-list-map-keys"]) <= set(required), where
        if node.get("type") == "array":
            assert "maxItems" in node or path.startswith(".status"), f"{where}: unbounded list"
        for rule in node.get("x-kubernetes-validations", ()):
            program(rule["rule"])  # compiles
            program(rule.get("messageExpression", "''"))
            assert rule["message"], where
    assert preserved == PRESERVE_UNKNOWN.get(kind, set())


def crd_types() -> set[str]:
    return {"object", "array", "string", "integer", "number", "boolean"}


def test_crd_metadata() -> None:
    by_kind = {k.kind: crd.crd(k)["spec"] for k in crd.KINDS}
    assert {k: (s["names"]["shortNames"], s["scope"]) for k, s in by_kind.items()} == {
        "VirtualIP": (["vip"], "Namespaced"),
        "VirtualServer": (["vs"], "Namespaced"),
        "NodeAssignment": (["na"], "Cluster"),
    }
    for spec in by_kind.values():
        assert spec["versions"][0]["subresources"] == {"status": {}}
    columns = [c["name"] for c in by_kind["VirtualIP"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Address", "Holder", "State", "VRID", "Age"]


def test_only_the_real_server_rule_is_left_to_the_model_in_node_assignments() -> None:
    """1024 virtual servers x 10000 real servers: the apiserver's cost estimate would refuse it."""
    assert [crd.structural(k.spec)[1] for k in crd.KINDS] == [[], [], ["RealServer"]]


# --- examples ---------------------------------------------------------------------------------
def test_there_are_examples() -> None:
    assert {p.stem.split("-")[0] for p in EXAMPLES} == {"vip", "vs"} and len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_valid_for_the_crd_and_the_model(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d["apiVersion"] == API_VERSION]
    assert documents
    for document in documents:
        errors: list[str] = []
        validate(SCHEMAS[document["kind"]], document, "", errors)
        assert errors == []
        SPEC_MODELS[document["kind"]].model_validate(document["spec"])


# --- every rule: a good and a bad object; the CRD and the model agree -------------------------
V4 = {"addresses": ["192.0.2.10/24"]}
V6 = {"addresses": ["2001:db8::10/64"]}
BOTH = {"addresses": ["192.0.2.10/24", "2001:db8::10/64"]}
VS = {"virtualIPRef": {"name": "web"}, "port": 80}
INST = {"name": "web", "vrid": 51, "addresses": ["192.0.2.10/24"]}
INST6 = {"name": "web6", "vrid": 52, "addresses": ["2001:db8::10/64"]}
IPVS = {"name": "web", "address": "192.0.2.10", "port": 80}
IPVS6 = {"name": "web6", "address": "2001:db8::10", "port": 80}


def vip(base: dict[str, Any], **fields: Any) -> tuple[str, dict[str, Any]]:
    return "VirtualIP", {**base, **fields}


def vs(**fields: Any) -> tuple[str, dict[str, Any]]:
    return "VirtualServer", {**VS, **fields}


def inst(**fields: Any) -> tuple[str, dict[str, Any]]:
    return "NodeAssignment", {"instances": [{**INST, **fields}]}


def ipvs(base: dict[str, Any] = IPVS, **fields: Any) -> tuple[str, dict[str, Any]]:
    spec = {"instances": [INST, INST6], "virtualServers": [{**base, **fields}]}
    return "NodeAssignment", spec


def check(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return vip(V4, checks=[{"name": "c", "kind": kind, **fields}])


CASES: list[tuple[str, tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = [
    # (part of the message, good, bad)
    ("IPv6 addresses need VRRP version 3", vip(V6, vrrp={"version": 3}), vip(V6, vrrp={"version": 2})),
    ("addresses has both", vip(V4, vrrp={"multicastGroup": "224.0.0.20"}), vip(BOTH, vrrp={"multicastGroup": "224.0.0.20"})),
    ("not of the addresses' family", vip(V6, vrrp={"multicastGroup": "ff02::12"}), vip(V4, vrrp={"multicastGroup": "ff02::12"})),
    ("authSecretRef (PASS", vip(V4, vrrp={"version": 2, "authSecretRef": {"name": "s"}}), vip(V4, vrrp={"authSecretRef": {"name": "s"}})),
    ("applies to mode: multicast", vip(V4, vrrp={"mode": "multicast", "multicastGroup": "224.0.0.20"}), vip(V4, vrrp={"mode": "unicast", "multicastGroup": "224.0.0.20"})),
    ("must be a multicast address (224", vip(V4, vrrp={"multicastGroup": "239.1.2.3"}), vip(V4, vrrp={"multicastGroup": "192.0.2.1"})),
    ("must be a multicast address (224", vip(V6, vrrp={"multicastGroup": "FF05::1"}), vip(V6, vrrp={"multicastGroup": "2001:db8::1"})),
    ("with version 2 it is whole seconds", vip(V4, vrrp={"version": 2, "advertInterval": 3}), vip(V4, vrrp={"version": 2, "advertInterval": 0.5})),
    ("with version 3 it is 0.01-40.95", vip(V4, vrrp={"advertInterval": 0.29}), vip(V4, vrrp={"advertInterval": 0.015})),
    ("with version 3 it is 0.01-40.95", vip(V4, vrrp={"advertInterval": 40.95}), vip(V4, vrrp={"advertInterval": 41})),
    ("Duplicate value", vip(V4), vip({"addresses": ["192.0.2.10", "192.0.2.10"]})),
    ("Duplicate value", check("ping", address="192.0.2.1"), vip(V4, checks=[{"name": "c", "kind": "ping", "address": "192.0.2.1"}] * 2)),
    ("should be less than or equal to 254", vip(V4, priorities={"explicit": {"n1": 254}}), vip(V4, priorities={"explicit": {"n1": 255}})),
    ("should match", vip(V4, interface="eth0.100"), vip(V4, interface="eth0/1")),
    ("must be of format", vip(V4), vip({"addresses": ["192.0.2.300"]})),
    ("script applies to kind exec only", check("exec", script="probe"), check("http", address="127.0.0.1", script="probe")),
    ("port is required with kind tcp", check("tcp", address="127.0.0.1", port=80), check("tcp", address="127.0.0.1")),
    ("address is required with kind", check("ping", address="127.0.0.1"), check("ping")),
    ("tlsVerify applies to kind https only", check("https", address="127.0.0.1", tlsVerify=False), check("http", address="127.0.0.1", tlsVerify=False)),
    ("should match", check("http", address="127.0.0.1", digest="sha1:" + "a" * 40), check("http", address="127.0.0.1", digest="sha1:" + "a" * 39)),
    ("realServers or serviceRef, not both", vs(serviceRef={"name": "s"}), vs(serviceRef={"name": "s"}, realServers=[{"address": "10.0.0.1"}])),
    ("targetPort applies with serviceRef only", vs(serviceRef={"name": "s"}, targetPort="http"), vs(targetPort="http")),
    ("a number must be a port 1-65535", vs(serviceRef={"name": "s"}, targetPort=8080), vs(serviceRef={"name": "s"}, targetPort=70000)),
    ("lowerThreshold must not exceed", vs(realServers=[{"address": "10.0.0.1", "upperThreshold": 9, "lowerThreshold": 9}]), vs(realServers=[{"address": "10.0.0.1", "lowerThreshold": 9}])),
    ("schedulerFlags: sh-* flags", vs(scheduler="sh", schedulerFlags=["sh-port"]), vs(schedulerFlags=["sh-port"])),
    ("realServers must be of the family of address", vs(address="192.0.2.10", realServers=[{"address": "10.0.0.1"}]), vs(address="192.0.2.10", realServers=[{"address": "2001:db8::1"}])),
    ("realServers must be of the family of address", vs(realServers=[{"address": "10.0.0.1"}, {"address": "2001:db8::1"}]), vs(address="2001:db8::10", realServers=[{"address": "10.0.0.1"}])),
    ("persistence.prefixLength is 0-32", vs(address="2001:db8::10", persistence={"prefixLength": 64}), vs(address="2001:db8::10", persistence={"prefixLength": 0})),
    ("persistence.prefixLength is 0-32", vs(persistence={"prefixLength": 0}), vs(address="192.0.2.10", persistence={"prefixLength": 33})),
    ("sorryServer must be of the service's address family", vs(sorryServer={"address": "2001:db8::9"}), vs(address="192.0.2.10", sorryServer={"address": "2001:db8::9"})),
    ("script applies to kind exec only", vs(check={"kind": "tcp"}), vs(check={"kind": "tcp", "script": "probe"})),
    ("script is required with kind exec", vs(check={"kind": "exec", "script": "probe"}), vs(check={"kind": "exec"})),
    ('unknown field "name"', vs(check={"kind": "http", "path": "/ok"}), vs(check={"kind": "http", "name": "c"})),
    ("Unsupported value", vs(check={"kind": "ping"}), vs(check={"kind": "nope"})),
    ("should match", vs(check={"kind": "http", "path": "/ok"}), vs(check={"kind": "http", "path": "ok"})),
    ("addresses mixes IPv4 and IPv6", inst(), inst(addresses=BOTH["addresses"])),
    ("IPv6 addresses need VRRP version 3", inst(addresses=V6["addresses"], version=3), inst(addresses=V6["addresses"], version=2)),
    ("with version 2 it is whole seconds", inst(version=2, advertInterval=255), inst(version=2, advertInterval=1.5)),
    ("priority 255 is reserved", inst(priority=255, addressOwner=True), inst(priority=255)),
    ("addressOwner: true needs priority: 255", inst(priority=254), inst(addressOwner=True)),
    ("auth (PASS) exists only in VRRP version 2", inst(version=2, auth={"password": "pw"}), inst(auth={"password": "pw"})),
    ("unicastPeers must be of the addresses' family", inst(unicastPeers=["192.0.2.2"]), inst(unicastPeers=["2001:db8::2"])),
    ("unicastSource must be of the addresses' family", inst(unicastSource="192.0.2.1"), inst(unicastSource="2001:db8::1")),
    ("either unicastPeers or multicastGroup", inst(multicastGroup="224.0.0.20"), inst(multicastGroup="224.0.0.20", unicastPeers=["192.0.2.2"])),
    ("multicast address of the addresses' family", inst(multicastGroup="224.0.0.20"), inst(multicastGroup="ff02::12")),
    ("Duplicate value", inst(), ("NodeAssignment", {"instances": [INST, {**INST6, "name": "web"}]})),
    ("give address and port, or fwmark", ipvs(placement="all"), ipvs({"name": "web", "port": 80}, placement="all")),
    ("firewall-mark service has no address", ipvs({"name": "web", "fwmark": 7}, placement="all"), ipvs(fwmark=7, placement="all")),
    ("schedulerFlags: sh-* flags", ipvs(scheduler="sh", schedulerFlags=["sh-port"]), ipvs(scheduler="rr", schedulerFlags=["sh-port"])),
    ("schedulerFlags: sh-* flags", ipvs(scheduler="mh", schedulerFlags=["mh-port"]), ipvs(schedulerFlags=["mh-port"])),
    ("persistence.prefixLength is 0-32", ipvs(persistence={"prefixLength": 0}), ipvs(persistence={"prefixLength": 33})),
    ("persistence.prefixLength is 0-32", ipvs(IPVS6, persistence={"prefixLength": 1}), ipvs(IPVS6, persistence={"prefixLength": 0})),
    ("persistence.prefixLength is 0-32", ipvs({"name": "m", "fwmark": 1, "fwmarkFamily": 6}, placement="all", persistence={"prefixLength": 64}), ipvs({"name": "m", "fwmark": 1, "fwmarkFamily": 6}, placement="all", persistence={"prefixLength": 0})),
    ("sorryServer must be of the service's address family", ipvs(sorryServer={"address": "10.0.0.9"}), ipvs(sorryServer={"address": "2001:db8::9"})),
    ("script applies to kind exec only", ipvs(check={"kind": "tcp"}), ipvs(check={"kind": "tcp", "script": "probe"})),
    ("script is required with kind exec", ipvs(check={"kind": "exec", "script": "probe"}), ipvs(check={"kind": "exec"})),
    ('unknown field "name"', ipvs(check={"kind": "http", "path": "/ok"}), ipvs(check={"kind": "http", "name": "c"})),
]  # fmt: skip


@pytest.mark.parametrize(
    ("message", "good", "bad"), CASES, ids=[f"{i}-{c[0][:30]}" for i, c in enumerate(CASES)]
)
def test_rule_refuses_what_the_model_refuses(
    message: str, good: tuple[str, dict[str, Any]], bad: tuple[str, dict[str, Any]]
) -> None:
    kind, spec = good
    assert errors_of(kind, copy.deepcopy(spec)) == []
    SPEC_MODELS[kind].model_validate(spec)
    kind, spec = bad
    errors = errors_of(kind, copy.deepcopy(spec))
    assert errors and all(message in e for e in errors), errors
    with pytest.raises(ValidationError):
        SPEC_MODELS[kind].model_validate(spec)


def test_messages_show_the_offending_value() -> None:
    errors = errors_of("VirtualIP", {**V4, "vrrp": {"advertInterval": 0.015}})
    assert errors == [
        ".spec.vrrp: Invalid value: advertInterval: with version 3 it is 0.01-40.95 seconds in "
        "steps of 0.01 (RFC 5798) (got 0.015)"
    ]


def test_every_hand_written_rule_has_a_case() -> None:
    messages = {r.message for rules in crd_rules.RULES.values() for r in rules}
    untested = {m for m in messages if not any(case[0] in m for case in CASES)}
    assert untested == set()


# --- what the operator and the agent write ----------------------------------------------------
STANDALONE = sorted((ROOT / "examples" / "standalone").rglob("*.yaml"))


@pytest.mark.parametrize(
    "path",
    STANDALONE,
    ids=[p.stem for p in STANDALONE],
)
def test_the_operators_node_assignment_is_valid_for_the_crd(path: Path) -> None:
    """Every standalone example, rendered as the operator writes a NodeAssignment spec."""
    spec = load_spec(path.read_bytes(), str(path))
    assert errors_of("NodeAssignment", spec_document(spec)) == []


_AT = "2026-01-02T03:04:05Z"
_CONDITION = {"type": "Ready", "status": "True", "reason": "Held", "message": "n1 holds it"}
_CONDITION |= {"lastTransitionTime": _AT}
_TRANSITION = {"from": "n2", "to": "n1", "reason": "n2 stopped", "at": _AT, "durationMs": 12.5}
STATUSES: list[tuple[str, type[BaseModel], dict[str, Any]]] = [
    ("VirtualIP", VirtualIPStatus, {
        "holder": "n1", "state": "MASTER", "vrid": 51, "lastTransition": _TRANSITION,
        "nodes": [{"node": "n1", "state": "MASTER", "priority": 150, "since": _AT, "reason": "x"}],
        "conditions": [_CONDITION], "observedGeneration": 3,
    }),
    ("VirtualServer", VirtualServerStatus, {
        "holder": "n1", "active": 1, "healthy": 1, "total": 2, "conditions": [_CONDITION],
        "realServers": [{"address": "10.0.0.1", "port": 80, "healthy": True, "weight": 1}],
    }),
    ("NodeAssignment", NodeAssignmentStatus, {
        "observedGeneration": 2, "updated": _AT,
        "instances": [{"name": "web", "state": "MASTER", "priority": 150, "master": "192.0.2.1",
                       "since": _AT, "lastTransition": {"to": "MASTER", "ms": 3},
                       "checks": {"nginx": {"state": "OK", "since": _AT}}}],
        "virtualServers": [{"name": "web", "active": True, "realServers": [
            {"address": "10.0.0.1", "port": 80, "healthy": True, "weight": 1, "since": _AT}]}],
        "problems": ["cannot program IPVS: the kernel has no IPVS (run `modprobe ip_vs`)"],
    }),
]  # fmt: skip
_SPECS: dict[str, dict[str, Any]] = {"VirtualIP": V4, "VirtualServer": VS, "NodeAssignment": {}}


@pytest.mark.parametrize(("kind", "model", "status"), STATUSES, ids=[s[0] for s in STATUSES])
def test_status_as_written_is_valid_for_the_crd(
    kind: str, model: type[BaseModel], status: dict[str, Any]
) -> None:
    document = model.model_validate(status).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert errors_of(kind, _SPECS[kind], document) == []
    assert document == status  # every field above made it through


# --- the CRD and the model agree on generated VRRP settings ------------------------------------
_GROUPS = ["224.0.0.18", "239.255.255.250", "192.0.2.1", "ff02::12", "2001:db8::1"]
_EDGES = [0, 0.01, 0.015, 0.1, 0.29, 1, 1.5, 3, 40.95, 40.96, 41, 255, 256]
_INTERVALS = st.one_of(
    st.sampled_from(_EDGES), st.decimals(min_value=0, max_value=300, places=3).map(float)
)


_ABSENT = object()


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_ABSENT), strategy)


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not _ABSENT}


def _accepted(model: type[BaseModel], spec: dict[str, Any]) -> bool:
    try:
        model.model_validate(spec)
    except ValidationError:
        return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    addresses=st.sampled_from([V4, V6, BOTH]),
    version=_maybe(st.sampled_from([2, 3])),
    interval=_maybe(_INTERVALS),
    mode=_maybe(st.sampled_from(["multicast", "unicast"])),
    group=_maybe(st.sampled_from(_GROUPS)),
    auth=_maybe(st.just({"name": "vrrp-auth"})),
)
def test_virtual_ip_vrrp_settings(
    addresses: dict[str, Any], version: Any, interval: Any, mode: Any, group: Any, auth: Any
) -> None:
    vrrp = _present(
        version=version, advertInterval=interval, mode=mode, multicastGroup=group,
        authSecretRef=auth,
    )  # fmt: skip
    spec = {**addresses, "vrrp": vrrp}
    assert (errors_of("VirtualIP", spec) == []) == _accepted(VirtualIPSpec, spec)


@settings(max_examples=150, deadline=None)
@given(
    addresses=st.sampled_from([V4, V6, BOTH]),
    version=_maybe(st.sampled_from([2, 3])),
    interval=_maybe(_INTERVALS),
    priority=_maybe(st.sampled_from([1, 150, 254, 255])),
    owner=_maybe(st.booleans()),
    auth=_maybe(st.just({"password": "pw"})),
    peers=_maybe(st.sampled_from([[], ["192.0.2.2"], ["2001:db8::2"]])),
    source=_maybe(st.sampled_from(["192.0.2.3", "2001:db8::3"])),
    group=_maybe(st.sampled_from(_GROUPS)),
)
def test_node_assignment_instance_settings(
    addresses: dict[str, Any], version: Any, interval: Any, priority: Any, owner: Any, auth: Any,
    peers: Any, source: Any, group: Any,
) -> None:  # fmt: skip
    instance = _present(
        version=version, advertInterval=interval, priority=priority, addressOwner=owner,
        auth=auth, unicastPeers=peers, unicastSource=source, multicastGroup=group,
    )  # fmt: skip
    spec = {"instances": [{**INST, **addresses, **instance}]}
    assert (errors_of("NodeAssignment", spec) == []) == _accepted(NodeAssignmentSpec, spec)


@settings(max_examples=150, deadline=None)
@given(
    address=_maybe(st.sampled_from(["192.0.2.10", "2001:db8::10"])),
    port=_maybe(st.just(80)),
    fwmark=_maybe(st.just(7)),
    family=_maybe(st.sampled_from([4, 6])),
    scheduler=_maybe(st.sampled_from(["rr", "sh", "mh"])),
    flags=_maybe(st.lists(st.sampled_from(["sh-port", "sh-fallback", "mh-port"]), max_size=2)),
    prefix=_maybe(st.sampled_from([0, 1, 32, 33, 128])),
    sorry=_maybe(st.sampled_from(["10.0.0.9", "2001:db8::9"])),
)
def test_node_assignment_virtual_server_settings(
    address: Any, port: Any, fwmark: Any, family: Any, scheduler: Any, flags: Any, prefix: Any,
    sorry: Any,
) -> None:  # fmt: skip
    server = _present(
        address=address, port=port, fwmark=fwmark, fwmarkFamily=family, scheduler=scheduler,
        schedulerFlags=flags,
        persistence=_ABSENT if prefix is _ABSENT else {"prefixLength": prefix},
        sorryServer=_ABSENT if sorry is _ABSENT else {"address": sorry},
    )  # fmt: skip
    spec = {"virtualServers": [{"name": "web", "placement": "all", **server}]}
    assert (errors_of("NodeAssignment", spec) == []) == _accepted(NodeAssignmentSpec, spec)
