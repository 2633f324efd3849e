"""Configuration reload (SIGHUP or the file changing) on a running pair, as the client sees it."""

from __future__ import annotations

import itertools
import signal
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from vipkeeper_lab.agents import VipkeeperHandle
from vipkeeper_lab.nodes import Lab

if TYPE_CHECKING:
    from conftest import Agents

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
VIP_API = "192.0.2.101/24"
N1, N2 = "192.0.2.11", "192.0.2.12"


def sighup(handle: VipkeeperHandle) -> None:
    handle.proc.kill(signal.SIGHUP, group=False)


def reloads(handle: VipkeeperHandle) -> int:
    return int(handle.status()["config"]["reloads"])


def wait_reloads(agents: Agents, handle: VipkeeperHandle, count: int, timeout: float = 5) -> None:
    agents.wait_for(
        f"{handle.node} to have reloaded {count} time(s)",
        lambda: reloads(handle) >= count,
        timeout,
        lambda: str(handle.status()["config"]),
    )


def reload_with(agents: Agents, handle: VipkeeperHandle, *instances: dict[str, Any]) -> float:
    """Rewrite the agent's file, send SIGHUP, wait until it has reloaded; returns the instant of
    the change. (The file watcher may pick the change up first; the SIGHUP reload then finds
    nothing to do, so "at least one more reload" is the condition.)"""
    before = reloads(handle)
    at = time.time()
    agents.rewrite(handle, *instances)
    sighup(handle)
    wait_reloads(agents, handle, before + 1)
    return at


def pair(agents: Agents, lab: Lab, *extra: dict[str, Any]) -> list[VipkeeperHandle]:
    """n1 (150) master, n2 (100) backup for "web" (plus ``extra`` instances on n1)."""
    n1 = agents.start("n1", agents.instance(150), *extra)
    n2 = agents.start("n2", agents.instance(100))
    assert lab.wait_master([n1, n2], vip=VIP, expect="n1", timeout=10) is n1
    agents.wait_state(n2, "BACKUP", timeout=5, masterAddress=N1)
    return [n1, n2]


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
def test_reload_adding_and_changing_another_instance_leaves_the_vip_alone(
    lab: Lab, agents: Agents, web: None
) -> None:
    n1, n2 = pair(agents, lab)
    probes = lab.start_probes(VIP)
    assert probes.wait_http(10, node="n1") is not None
    web_before = agents.info(n1)
    backup_before = agents.info(n2)
    window_from = time.time()
    time.sleep(0.2)  # some probe history before the first reload, for the gap computation

    api = agents.instance(150, name="api", vrid=52, addresses=[VIP_API])
    reload_with(agents, n1, agents.instance(150), api)
    agents.wait_state(n1, "MASTER", timeout=5, name="api")
    assert lab.who_has(VIP_API) == ["n1"]

    api_changed = {**api, "priority": 120, "garp": {"count": 2}}
    reload_with(agents, n1, agents.instance(150), api_changed)
    agents.wait_state(n1, "MASTER", timeout=5, name="api", priority=120)

    # And a field of "web" itself that changes nothing on the wire: reconfigured in place.
    reload_with(agents, n1, agents.instance(150, garp={"count": 3}), api_changed)
    time.sleep(0.3)  # probe history after the last reload
    window_to = time.time()
    probes.stop()

    log = n1.proc.log_text()
    assert "keep=['web'] reconfigure=[] replace=[] start=['api']" in log
    assert "keep=['web'] reconfigure=['api'] replace=[] start=[]" in log
    assert "keep=['api'] reconfigure=['web'] replace=[] start=[]" in log
    # "web" was neither restarted nor disturbed, on either node.
    web_after = agents.info(n1)
    assert web_after["state"] == "MASTER"
    assert web_after["lastTransition"] == web_before["lastTransition"]
    assert web_after["counters"]["advertsSent"] > web_before["counters"]["advertsSent"]
    assert agents.info(n2)["lastTransition"] == backup_before["lastTransition"]
    assert lab.who_has(VIP) == ["n1"]

    # The client: every answer from n1, and no silence longer than two advert intervals.
    samples = [s for s in probes.http_samples() if window_from <= s.t and s.end <= window_to]
    answered = [s for s in samples if s.ok]
    assert len(answered) > 20, f"too few probe samples: {len(samples)}"
    assert {s.node for s in answered} == {"n1"}
    ends = [window_from, *(s.end for s in answered), window_to]
    gap, at = max((b - a, a) for a, b in itertools.pairwise(ends))
    assert gap <= 2 * float(agents.FAST), f"client saw a {gap:.3f} s gap from {at:.3f}"
    foreign = {a.mac for a in probes.arp_answers() if window_from <= a.t <= window_to}
    assert foreign <= {lab.node("n1").mac}, f"ARP answered by {foreign}"


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
def test_sighup_raising_a_backups_priority_makes_it_preempt(
    lab: Lab, agents: Agents, web: None
) -> None:
    n1, n2 = pair(agents, lab)
    reload_with(agents, n2, agents.instance(200))
    assert lab.wait_master([n1, n2], vip=VIP, expect="n2", timeout=10) is n2
    assert "reconfigure=['web']" in n2.proc.log_text()  # in place, not a new instance
    item = agents.info(n2)
    assert item["priority"] == 200
    assert item["lastTransition"]["from"] == "BACKUP"
    stepped_down = agents.wait_state(n1, "BACKUP", timeout=5, masterAddress=N2)
    assert stepped_down["lastTransition"]["reason"] == f"higher priority 200 from {N2}"
    assert lab.who_has(VIP) == ["n2"]
    assert agents.wait_http(VIP, "n2") == "n2"


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
def test_invalid_file_is_rejected_and_the_running_config_kept(
    lab: Lab, agents: Agents, web: None
) -> None:
    n1, n2 = pair(agents, lab)
    since = agents.info(n1)["since"]

    agents.write_file(
        n1,
        "instances:\n"
        "  - name: web\n    vrid: 51\n    interface: eth0\n    priority: 300\n"
        "    advertInterval: 0.1\n    addresses: [192.0.2.100/24]\n",
    )
    sighup(n1)
    error = agents.wait_for(
        "the reload error in the status",
        lambda: n1.status()["config"]["lastReloadError"],
        timeout=5,
    )
    assert "instances[0].priority" in error
    assert "300" in error
    assert n1.alive()
    assert reloads(n1) == 0
    item = agents.info(n1)
    assert (item["state"], item["priority"], item["since"]) == ("MASTER", 150, since)
    assert "event=reload_rejected" in n1.proc.log_text()

    agents.write_file(n1, "instances: [\n")  # not even YAML
    sighup(n1)
    agents.wait_for(
        "the YAML error in the status",
        lambda: "not valid YAML" in (n1.status()["config"]["lastReloadError"] or ""),
        timeout=5,
        describe=lambda: str(n1.status()["config"]),
    )
    assert n1.alive()
    agents.hold(
        "n1 master and sole holder on the old config",
        lambda: (
            lab.who_has(VIP) == ["n1"]
            and agents.states([n1, n2]) == {"n1": "MASTER", "n2": "BACKUP"}
        ),
        duration=0.5,
        describe=lambda: f"{agents.states([n1, n2])}, VIP on {lab.who_has(VIP)}",
    )
    assert lab.http_get(VIP.partition("/")[0]) == "n1"

    # An emptied file (a truncated write, `> agent.yaml`) must not make the master resign.
    agents.write_file(n1, "")
    sighup(n1)
    agents.wait_for(
        "the empty-file error in the status",
        lambda: "document is empty" in (n1.status()["config"]["lastReloadError"] or ""),
        timeout=5,
        describe=lambda: str(n1.status()["config"]),
    )
    assert lab.who_has(VIP) == ["n1"]
    assert agents.info(n1)["state"] == "MASTER"

    # A valid file again, picked up by the file watcher alone (no signal): the error clears.
    agents.rewrite(n1, agents.instance(160))
    wait_reloads(agents, n1, 1, timeout=5)
    status = n1.status()
    assert status["config"]["lastReloadError"] is None
    assert agents.info(n1)["priority"] == 160
    assert agents.info(n1)["since"] == since


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
def test_removing_an_instance_resigns_it(lab: Lab, agents: Agents, web: None) -> None:
    # "web" at 0.3 s adverts: its takeover after a resignation (Skew_Time, ~0.18 s) and after a
    # timeout (>= 0.78 s) are then far apart, which is how this test tells them apart.
    interval = Decimal("0.3")
    api = agents.instance(150, name="api", vrid=52, addresses=[VIP_API])
    n1 = agents.start("n1", agents.instance(150, interval=interval), api)
    n2 = agents.start("n2", agents.instance(100, interval=interval))
    assert lab.wait_master([n1, n2], vip=VIP, expect="n1", timeout=10) is n1
    agents.wait_state(n2, "BACKUP", timeout=5, masterAddress=N1)
    agents.wait_state(n1, "MASTER", timeout=5, name="api")
    api_since = agents.info(n1, "api")["since"]

    at = reload_with(agents, n1, api)
    assert lab.wait_master([n2], vip=VIP, timeout=10) is n2
    took = agents.info(n2)["lastTransition"]["at"] - at
    timeout_path = agents.mdi(100, interval) - float(interval)
    assert took < timeout_path - 0.15, (
        f"n2 took over {took:.3f} s after the reload: a Master_Down timeout "
        f"(>= {timeout_path:.2f} s), not a resignation (Skew_Time {agents.skew(100, interval):.2f} s)"
    )
    assert lab.who_has(VIP) == ["n2"]
    assert [i["name"] for i in n1.status()["instances"]] == ["api"]
    assert "stop=['web']" in n1.proc.log_text()
    # The other instance kept running untouched.
    assert agents.info(n1, "api")["since"] == api_since
    assert lab.who_has(VIP_API) == ["n1"]
    assert agents.wait_http(VIP, "n2") == "n2"
    assert lab.http_get(VIP_API.partition("/")[0]) == "n1"
