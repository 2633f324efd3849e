"""VRID allocation: explicit, recorded, allocated; per segment and family; conflicts, exhaustion."""

from __future__ import annotations

import random
from typing import Any

import pytest
from test_planning_builders import vip

from vipkeeper_operator.planning.vrid import AUTO, allocate, describe, segments
from vipkeeper_operator.world import VirtualIP

V4, V6 = "192.0.2.{}/24", "2001:db8::{}/64"
FULL, NARROW = (1, 255), (10, 12)


def a(name: str, n: int, **kw: Any) -> VirtualIP:
    """A VirtualIP with a distinct IPv4 address (``n``)."""
    return vip(name, V4.format(n), **kw)


def run(
    *vips: VirtualIP, rng: tuple[int, int] = (1, 255)
) -> tuple[dict[str, int], dict[str, list[str]]]:
    got = allocate({v.key: v for v in vips}, rng)
    reasons = {k.split("/")[1]: [p.reason for p in ps] for k, ps in got.problems.items()}
    return {k.split("/")[1]: v for k, v in got.vrids.items()}, reasons


CASES = {
    "allocated lowest first, in key order": (
        FULL,
        [a("b", 2), a("a", 1)],
        {"a": 1, "b": 2},
        {},
    ),
    "explicit honoured, even outside the range": (
        FULL,
        [a("a", 1, vrid=200), a("b", 2)],
        {"a": 200, "b": 1},
        {},
    ),
    "explicit clash on one segment: first by key keeps it": (
        FULL,
        [a("a", 1, vrid=5), a("b", 2, vrid=5)],
        {"a": 5},
        {"a": ["VRIDConflict"], "b": ["VRIDConflict"]},
    ),
    "explicit clash: the one already running keeps it": (
        FULL,
        [a("a", 1, vrid=5), a("b", 2, vrid=5, status_vrid=5)],
        {"b": 5},
        {"a": ["VRIDConflict"], "b": ["VRIDConflict"]},
    ),
    "same explicit VRID on two interfaces": (
        FULL,
        [a("a", 1, vrid=5, interface="eth0"), a("b", 2, vrid=5, interface="eth1")],
        {"a": 5, "b": 5},
        {},
    ),
    "same explicit VRID in two families": (
        FULL,
        [vip("a", V4.format(1), vrid=5), vip("b", V6.format(1), vrid=5)],
        {"a": 5, "b": 5},
        {},
    ),
    "dual stack clashes with either family": (
        FULL,
        [vip("a", V4.format(1), V6.format(1), vrid=5), vip("b", V6.format(2), vrid=5)],
        {"a": 5},
        {"a": ["VRIDConflict"], "b": ["VRIDConflict"]},
    ),
    "auto interface is one segment, whatever the subnet": (
        FULL,
        [a("a", 1, vrid=5), vip("b", "198.51.100.1/24", vrid=5)],
        {"a": 5},
        {"a": ["VRIDConflict"], "b": ["VRIDConflict"]},
    ),
    "an allocated VRID never steals an explicit one": (
        FULL,
        [a("a", 1, status_vrid=5), a("b", 2, vrid=5)],
        {"b": 5, "a": 1},
        {},
    ),
    "the recorded VRID is kept across restarts": (
        FULL,
        [a("a", 1, status_vrid=9), a("b", 2)],
        {"a": 9, "b": 1},
        {},
    ),
    "a recorded VRID outside the range is moved into it": (
        NARROW,
        [a("a", 1, status_vrid=100)],
        {"a": 10},
        {},
    ),
    "two recording one VRID: first by key keeps it": (
        NARROW,
        [a("a", 1, status_vrid=12), a("b", 2, status_vrid=12)],
        {"a": 12, "b": 10},
        {},
    ),
    "a deleting VirtualIP keeps its VRID until it is gone": (
        NARROW,
        [a("a", 1, status_vrid=10, deleting=True), a("b", 2)],
        {"a": 10, "b": 11},
        {},
    ),
    "a deleting VirtualIP yields to an explicit one": (
        NARROW,
        [a("a", 1, status_vrid=10, deleting=True), a("b", 2, vrid=10)],
        {"b": 10},
        {},
    ),
    "exhausted": (
        NARROW,
        [a("a", 1), a("b", 2), a("c", 3), a("d", 4)],
        {"a": 10, "b": 11, "c": 12},
        {"d": ["VRIDExhausted"]},
    ),
    "exhaustion on one segment leaves others free": (
        NARROW,
        [a("a", 1), a("b", 2), a("c", 3), a("d", 4, interface="eth1")],
        {"a": 10, "b": 11, "c": 12, "d": 10},
        {},
    ),
}


@pytest.mark.parametrize(("rng", "vips", "vrids", "problems"), CASES.values(), ids=CASES.keys())
def test_allocate(
    rng: tuple[int, int],
    vips: list[VirtualIP],
    vrids: dict[str, int],
    problems: dict[str, list[str]],
) -> None:
    assert run(*vips, rng=rng) == (vrids, problems)


def test_fresh_vrids_are_preferred_across_segments() -> None:
    """An auto VirtualIP and one on a named interface may be the same link: keep them apart
    while the range allows."""
    assert run(a("a", 1), a("b", 2, interface="eth1"))[0] == {"a": 1, "b": 2}
    assert run(a("a", 1), a("b", 2, interface="eth1"), rng=(1, 1))[0] == {"a": 1, "b": 1}


def test_conflict_messages_name_both_objects_and_the_fix() -> None:
    got = allocate({v.key: v for v in (a("a", 1, vrid=5), a("b", 2, vrid=5))}, (1, 255))
    (loser,) = got.problems["default/b"]
    assert "vrid 5 on the auto-detected interface (IPv4)" in loser.message
    assert "VirtualIP default/a" in loser.message and "VirtualIP default/b" in loser.message
    assert "not rendered" in loser.message and "1 is free there" in loser.message
    (winner,) = got.problems["default/a"]
    assert "default/a keeps it" in winner.message


def test_exhaustion_message() -> None:
    got = allocate({v.key: v for v in (a("a", 1), a("b", 2))}, (7, 7))
    (problem,) = got.problems["default/b"]
    assert "range 7-7" in problem.message and "default/a" in problem.message
    assert "not rendered" in problem.message


def test_two_operators_agree_whatever_the_order() -> None:
    vips = [a(f"v{i}", i % 200 + 1, status_vrid=(i * 7) % 40 or None) for i in range(120)]
    vips += [a(f"x{i}", i + 1, vrid=i + 30, interface="eth2") for i in range(10)]
    expected = allocate({v.key: v for v in vips}, (1, 255))
    for seed in range(3):
        random.Random(seed).shuffle(vips)
        again = allocate({v.key: v for v in vips}, (1, 255))
        assert (again.vrids, again.problems) == (expected.vrids, expected.problems)
    assert len(expected.vrids) == 130 and not expected.problems


def test_segments() -> None:
    assert segments(vip("a", V4.format(1), V6.format(1)).spec) == ((4, AUTO), (6, AUTO))
    assert segments(vip("a", V6.format(1), interface="br0").spec) == ((6, "br0"),)
    assert describe((6, "br0")) == "interface br0 (IPv6)"
