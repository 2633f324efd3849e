"""Priority arithmetic, fault reasons, sync-group rules and the weight-gap warning (all pure)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from vipkeeper_agent.tracking import Assessment, Observations, assess, share_group
from vipkeeper_agent.vrrp import sync
from vipkeeper_agent.vrrp.fsm import (
    Demote,
    Promote,
    RouterConfig,
    Startup,
    State,
    TimerExpired,
    Transition,
    new_router,
    next_deadline,
    step,
)
from vipkeeper_api import parse_spec
from vipkeeper_api.analysis import check_load_warnings, weight_gap_warnings

CHECKS = [
    {"name": "nginx", "kind": "exec", "script": "chk_nginx", "weight": -20},
    {"name": "bonus", "kind": "tcp", "address": "127.0.0.1", "port": 80, "weight": 15},
    {"name": "gw", "kind": "ping", "address": "192.0.2.1"},  # weight 0: FAULT
]


def instance(priority: int = 100, **kw: Any) -> Any:
    doc = {"name": "web", "vrid": 1, "priority": priority, "addresses": ["192.0.2.10"], **kw}
    if priority == 255:
        doc["addressOwner"] = True
    return parse_spec({"checks": CHECKS, "instances": [doc]}).instances[0]


WEIGHTS = {c["name"]: c.get("weight", 0) for c in CHECKS}


@pytest.mark.parametrize(
    ("priority", "tracks", "checks", "links", "expected_priority", "expected_faults"),
    [
        # The seeds' nginx check: weight -20 while failed.
        (100, ["nginx"], {"nginx": True}, {}, 100, ()),
        (100, ["nginx"], {"nginx": False}, {}, 80, ()),
        # A positive weight adds while healthy.
        (100, ["bonus"], {"bonus": True}, {}, 115, ()),
        (100, ["bonus"], {"bonus": False}, {}, 100, ()),
        # A per-instance override beats the check's own weight.
        (100, [{"check": "nginx", "weight": -60}], {"nginx": False}, {}, 40, ()),
        # Clamped to 1..254.
        (10, [{"check": "nginx", "weight": -50}], {"nginx": False}, {}, 1, ()),
        (250, ["bonus"], {"bonus": True}, {}, 254, ()),
        # The owner never moves.
        (255, ["nginx", "bonus"], {"nginx": False, "bonus": True}, {}, 255, ()),
        # Weight 0: FAULT.
        (100, ["gw"], {"gw": False}, {}, 100, ("check gw down",)),
        # No result yet: the check's initial state (OK unless initFail).
        (100, ["nginx"], {}, {}, 100, ()),
        # Tracked links: weight 0 FAULTs, a missing interface counts as down.
        (100, [], {}, {"eth1": False}, 100, ("interface eth1 down",)),
        (100, [], {}, {}, 100, ("interface eth1 down",)),
    ],
)
def test_assess(
    priority: int,
    tracks: list[Any],
    checks: dict[str, bool],
    links: dict[str, bool],
    expected_priority: int,
    expected_faults: tuple[str, ...],
) -> None:
    track_links = ["eth1"] if not tracks else []
    inst = instance(priority, trackChecks=tracks, trackInterfaces=track_links)
    seen = Observations(checks=checks, links={"eth0": True, **links})
    got = assess(inst, "eth0", WEIGHTS, {}, seen)
    assert (got.priority, got.faults) == (expected_priority, expected_faults)


def test_own_interface_down_is_a_fault_and_weighted_links_adjust() -> None:
    inst = instance(
        100,
        trackInterfaces=[{"interface": "bond1", "weight": -30}, {"interface": "up1", "weight": 5}],
    )
    seen = Observations(checks={}, links={"eth0": False, "bond1": False, "up1": True})
    got = assess(inst, "eth0", WEIGHTS, {}, seen)
    assert got.faults == ("interface eth0 down",)
    assert got.priority == 75
    assert got.adjustments == ("interface bond1 down -30", "interface up1 up +5")


def test_init_fail_counts_until_the_first_result() -> None:
    inst = instance(100, trackChecks=["nginx"])
    seen = Observations(checks={}, links={"eth0": True})
    assert assess(inst, "eth0", WEIGHTS, {"nginx": False}, seen).priority == 80


def test_group_members_share_faults_and_weights() -> None:
    shared = share_group(
        [
            ("ext", 150, Assessment(100, ("interface eth1 down",))),
            ("int", 140, Assessment(120, (), ("check nginx down -20",), -20)),
            ("owner", 255, Assessment(255)),
        ]
    )
    assert shared["ext"].faults == ("interface eth1 down",)
    assert shared["int"].faults == ("sync group member ext: interface eth1 down",)
    # One member's failing check lowers every member by the same amount; the owner stays 255.
    assert shared["ext"].priority == 130
    assert shared["int"].priority == 120
    assert shared["owner"].priority == 255
    assert shared["ext"].adjustments == ("sync group member int: check nginx down -20",)


# --- sync groups ----------------------------------------------------------------------------


def router(priority: int = 100) -> Any:
    cfg = RouterConfig(
        vrid=1,
        version=3,
        priority=priority,
        interval_cs=100,
        addresses=(ipaddress.ip_interface("192.0.2.10/32"),),
        primary_address=ipaddress.ip_address("192.0.2.2"),
    )
    return step(new_router(cfg, 0.0), Startup(), 0.0)[0]


def test_may_take_over_only_when_every_member_wants_master() -> None:
    a, b = router(), router()
    deadline = next_deadline(a)
    assert deadline is not None
    assert not sync.may_take_over([b], deadline - 0.5)  # b still hears a master
    assert sync.may_take_over([b], deadline)
    waiting, _ = step(b, TimerExpired(group_ready=False), deadline)
    assert sync.may_take_over([waiting], deadline + 10)
    master, _ = step(a, TimerExpired(), deadline)
    assert sync.may_take_over([master], 0.0)


def test_followers_promote_and_demote() -> None:
    a = router()
    master, _ = step(router(), TimerExpired(), 5.0)
    up = Transition(State.BACKUP, State.MASTER, "master down", 5.0)
    assert sync.followers("ext", up, [("int", a), ("x", master)]) == [
        ("int", Promote("sync group: ext became MASTER (master down)"))
    ]
    down = Transition(State.MASTER, State.BACKUP, "higher priority", 6.0)
    assert sync.followers("ext", down, [("int", a), ("x", master)]) == [
        ("x", Demote("sync group: ext became BACKUP (higher priority)"))
    ]
    fault = Transition(State.MASTER, State.FAULT, "interface down", 6.0)
    assert sync.followers("ext", fault, [("x", master)]) == []


# --- weight-gap warning ---------------------------------------------------------------------


def node(priority: int, weight: int, extra: dict[str, Any] | None = None) -> Any:
    return parse_spec(
        {
            "checks": [{"name": "nginx", "kind": "exec", "script": "chk", "weight": weight}],
            "instances": [
                {
                    "name": "web",
                    "vrid": 51,
                    "priority": priority,
                    "addresses": ["192.0.2.10"],
                    "trackChecks": ["nginx"],
                    **(extra or {}),
                }
            ],
        }
    )


@pytest.mark.parametrize(
    ("master", "backup", "warned"),
    [
        ((100, -5), (90, -5), True),  # the seeds' config: 95 is still above 90
        ((100, -10), (90, -10), True),  # 90 ties 90: the address decides, not the check
        ((100, -20), (90, -20), False),  # the seeds' fixed config
        ((100, 0), (90, 0), False),  # weight 0: FAULT always moves it
    ],
)
def test_weight_gap_warning(master: tuple[int, int], backup: tuple[int, int], warned: bool) -> None:
    warnings = weight_gap_warnings({"lb1": node(*master), "lb2": node(*backup)})
    assert bool(warnings) == warned
    if warned:
        assert "lb1" in warnings[0] and "lb2" in warnings[0]
        assert "check nginx" in warnings[0]


def test_check_load_warning() -> None:
    def spec(count: int, interval: float) -> Any:
        checks = [
            {
                "name": f"c{i}",
                "kind": "tcp",
                "address": "127.0.0.1",
                "port": 80,
                "interval": interval,
            }
            for i in range(count)
        ]
        return parse_spec({"checks": checks, "instances": []})

    assert check_load_warnings(spec(200, 1.0)) == []
    (warning,) = check_load_warnings(spec(200, 0.1))
    assert "2000 runs per second" in warning
