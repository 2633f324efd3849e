"""The NodeAssignment spec: strict parsing with errors that name the path, the value and the fix."""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from vipkeeper_agent.reload import plan_reload
from vipkeeper_api import ConfigError, load_spec, parse_spec


def inst(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "web", "vrid": 51, "addresses": ["192.0.2.100/24"]}
    base.update(kw)
    return base


def errors_of(document: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(document, "test.yaml")
    return str(info.value)


def test_minimal_instance_gets_keepalived_like_defaults() -> None:
    spec = parse_spec({"instances": [inst()]})
    (i,) = spec.instances
    assert i.version == 3 and i.priority == 100 and i.preempt and i.advert_interval == 1
    assert i.addresses == (ipaddress.ip_interface("192.0.2.100/24"),)
    assert i.interface is None and i.group == ipaddress.ip_address("224.0.0.18")
    assert i.garp.count == 5 and i.garp.repeat_delay == 5.0


def test_yaml_float_interval_is_exact() -> None:
    spec = load_spec("instances: [{name: a, vrid: 1, advertInterval: 0.1, addresses: [10.0.0.1]}]")
    assert spec.instances[0].advert_interval == Decimal("0.1")
    assert spec.instances[0].advert_interval_cs == 10


def test_models_are_frozen() -> None:
    spec = parse_spec({"instances": [inst()]})
    with pytest.raises(ValueError, match="frozen"):
        spec.instances[0].priority = 5  # type: ignore[misc]


def test_whole_node_assignment_object_is_accepted() -> None:
    doc = {
        "apiVersion": "vipkeeper.io/v1alpha1",
        "kind": "NodeAssignment",
        "spec": {"instances": [inst()]},
    }
    assert parse_spec(doc).instances[0].name == "web"
    assert "spec.instances[0].vrid" in errors_of({**doc, "spec": {"instances": [inst(vrid=0)]}})


ERROR_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("vrid 0", inst(vrid=0), ["instances[0].vrid", "greater than or equal to 1", "got 0"]),
    ("vrid 256", inst(vrid=256), ["instances[0].vrid", "less than or equal to 255", "got 256"]),
    ("priority 0", inst(priority=0), ["instances[0].priority", "got 0"]),
    (
        "priority 255 without owner",
        inst(priority=255),
        ["priority 255 is reserved", "addressOwner"],
    ),
    ("owner without 255", inst(addressOwner=True), ["addressOwner: true needs priority 255"]),
    ("unknown key", inst(priorty=5), ["instances[0].priorty", "unknown field"]),
    ("snake case key", inst(advert_interval=1), ["instances[0].advert_interval", "unknown field"]),
    ("bad address", inst(addresses=["192.0.2.300"]), ["'192.0.2.300' is not an IP address"]),
    ("multicast vip", inst(addresses=["224.0.0.5"]), ["multicast", "must be unicast"]),
    ("no addresses", inst(addresses=[]), ["instances[0].addresses"]),
    ("mixed families", inst(addresses=["192.0.2.1", "2001:db8::1"]), ["mixes IPv4 and IPv6"]),
    (
        "ipv6 with v2",
        inst(version=2, addresses=["2001:db8::1"]),
        ["IPv6 addresses need VRRP version 3"],
    ),
    (
        "v2 fractional",
        inst(version=2, advertInterval=0.5),
        ["advertInterval 0.5", "whole seconds 1-255"],
    ),
    ("v2 too long", inst(version=2, advertInterval=256), ["advertInterval 256", "whole seconds"]),
    ("v3 too short", inst(advertInterval=0.005), ["advertInterval 0.005", "0.01-40.95"]),
    ("v3 too long", inst(advertInterval=41), ["advertInterval 41", "0.01-40.95"]),
    ("v3 not centiseconds", inst(advertInterval=0.015), ["steps of 0.01"]),
    ("auth with v3", inst(auth={"password": "x"}), ["auth (PASS) exists only in VRRP version 2"]),
    (
        "long password",
        inst(version=2, auth={"password": "123456789"}),
        ["auth.password", "at most 8 bytes"],
    ),
    ("version 4", inst(version=4), ["instances[0].version", "got 4"]),
    ("peer family", inst(unicastPeers=["2001:db8::2"]), ["unicastPeers has 2001:db8::2", "IPv4"]),
    ("bad peer", inst(unicastPeers=["nope"]), ["'nope' is not an IP address"]),
    ("bad name", inst(name="Web_1"), ["'Web_1' is not a valid name"]),
    ("bad interface", inst(interface="eth0 with spaces"), ["not a Linux interface name"]),
    (
        "group not multicast",
        inst(multicastGroup="192.0.2.9"),
        ["must be an IPv4 multicast address"],
    ),
]


@pytest.mark.parametrize(
    ("name", "instance", "needles"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_rejections_name_path_value_and_fix(
    name: str, instance: dict[str, Any], needles: list[str]
) -> None:
    message = errors_of({"instances": [inst(name="ok", vrid=1, addresses=["192.0.2.1"]), instance]})
    for needle in needles:
        assert needle.replace("instances[0]", "instances[1]") in message, message


def test_duplicate_vrid_on_same_interface_and_family() -> None:
    doc = {
        "instances": [
            inst(interface="eth0"),
            inst(name="b", interface="eth0", addresses=["192.0.2.7"]),
        ]
    }
    message = errors_of(doc)
    assert "instances[1].vrid 51 is already used by instances[0] on eth0 for IPv4" in message
    # Same VRID on another family or interface is fine (RFC 5798 §7.3 keeps the families apart).
    parse_spec({"instances": [inst(), inst(name="b", addresses=["2001:db8::7"])]})
    parse_spec(
        {
            "instances": [
                inst(interface="eth0"),
                inst(name="b", interface="eth1", addresses=["10.0.0.1"]),
            ]
        }
    )


def test_duplicate_names_and_addresses() -> None:
    assert "name 'web' is already used" in errors_of(
        {"instances": [inst(), inst(vrid=2, addresses=["10.0.0.1"])]}
    )
    assert "already in instances[0]" in errors_of({"instances": [inst(), inst(name="b", vrid=2)]})


def test_every_problem_is_reported_at_once() -> None:
    message = errors_of({"instances": [inst(vrid=0, priority=0, bogus=1)]})
    for needle in ("instances[0].vrid", "instances[0].priority", "instances[0].bogus"):
        assert needle in message


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("instances: [\n  - {name: a\n", "not valid YAML"),
        ("- a list", "must be a mapping"),
        ("kind: Pod", "only NodeAssignment"),
        ("instances: 5", "instances"),
        ("[" * 10000, "nested too deeply"),
        ("", "the document is empty; write 'instances: []'"),
        ("# only a comment\n", "the document is empty"),
        # Found by fuzzing: scalars whose YAML tag cannot read them escaped as plain ValueError.
        ("a: 2001-02-30", "line 1, column 4: not valid YAML: cannot read timestamp value"),
        ("a: [1, !!float x]", "line 1, column 8: not valid YAML: cannot read float value"),
        ("a: !!timestamp x", "line 1, column 4: not valid YAML: cannot read timestamp value"),
        ("a: !!bool maybe", "line 1, column 4: not valid YAML: cannot read bool value"),
        ("instances: [{vrid: " + "9" * 5000 + "}]", "cannot read int value"),
        # ... and a value past Python's 4300-digit int -> str limit (hex has none) broke the message.
        ("instances: [{vrid: 0x" + "f" * 4000 + "}]", "(got <a number too long to show>)"),
    ],
)
def test_bad_documents(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_spec(text, "f.yaml")


def test_alias_bomb_is_rejected_with_a_short_message() -> None:
    # "Billion laughs": 9 levels of 10 aliases stand for 10**9 values; the problem's value used to
    # be repr()'d whole before being cut to 80 characters (minutes, gigabytes).
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]" for n in range(1, 9)]
    with pytest.raises(ConfigError) as info:
        load_spec("\n".join(levels) + "\ninstances: *a8\n", "bomb.yaml")
    assert "a8: unknown field" in str(info.value) and len(str(info.value)) < 5000


def test_explicitly_empty_spec_is_allowed() -> None:
    assert load_spec("instances: []").instances == ()


def test_virtual_server_model() -> None:
    doc = {
        "virtualServers": [
            {
                "name": "web",
                "address": "192.0.2.100",
                "port": 80,
                "scheduler": "wrr",
                "placement": "all",
                "realServers": [{"address": "10.0.0.1", "port": 8080, "weight": 3}],
            }
        ]
    }
    vs = parse_spec(doc).virtual_servers[0]
    assert vs.real_servers[0].weight == 3 and vs.forwarding == "nat"
    doc["virtualServers"][0]["scheduler"] = "fastest"
    assert "virtualServers[0].scheduler" in errors_of(doc)


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["instances", "name", "vrid", "addresses", "priority", "version", "x"]
                ),
                children,
                max_size=5,
            )
        ),
        max_leaves=20,
    )
)
def test_loader_never_raises_anything_but_config_error(document: object) -> None:
    try:
        load_spec(yaml.safe_dump(document), "fuzz")
    except ConfigError as exc:
        assert exc.problems and all(str(p) for p in exc.problems)


def test_reload_plan() -> None:
    old = {
        i.name: i
        for i in parse_spec(
            {
                "instances": [
                    inst(name="same"),
                    inst(name="prio", vrid=2, addresses=["10.0.0.2"]),
                    inst(name="vrid", vrid=3, addresses=["10.0.0.3"]),
                    inst(name="gone", vrid=4, addresses=["10.0.0.4"]),
                ]
            }
        ).instances
    }
    new = {
        i.name: i
        for i in parse_spec(
            {
                "instances": [
                    inst(name="same"),
                    inst(name="prio", vrid=2, priority=200, addresses=["10.0.0.2", "10.0.0.22"]),
                    inst(name="vrid", vrid=33, addresses=["10.0.0.3"]),
                    inst(name="new", vrid=5, addresses=["10.0.0.5"]),
                ]
            }
        ).instances
    }
    plan = plan_reload(old, new)
    assert plan.keep == ("same",)
    assert plan.reconfigure == ("prio",)
    assert plan.replace == ("vrid",)
    assert plan.start == ("new",)
    assert plan.stop == ("gone",)
    assert not plan_reload(old, old).changes
