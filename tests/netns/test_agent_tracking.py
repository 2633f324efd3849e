"""The seeds' scenarios: a VIP follows the service, the gateway, the links and the group.

Each test runs real agents in the lab's namespaces with checks against real servers; the bound
of every move comes from the protocol (fall x interval for the check, Master_Down for the
takeover) plus the suite's margin.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from vipkeeper_lab.agents import VipkeeperHandle, agent_executable, render_agent_yaml
from vipkeeper_lab.nodes import Lab

if TYPE_CHECKING:
    from conftest import Agents

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"
VIP_INTERNAL = "192.0.2.101/24"
GATEWAY = "192.0.2.250"  # the lab's client stands in for the gateway
CHECK_INTERVAL = 0.2
FALL, RISE = 2, 2


def http_check(weight: int) -> dict[str, Any]:
    return {
        "name": "web",
        "kind": "http",
        "address": "127.0.0.1",
        "port": 80,
        "path": "/",
        "interval": CHECK_INTERVAL,
        "timeout": 0.2,
        "fall": FALL,
        "rise": RISE,
        "weight": weight,
    }


def start(
    lab: Lab, agents: Agents, node: str, checks: list[dict[str, Any]], *instances: dict[str, Any]
) -> VipkeeperHandle:
    handle = lab.start_vipkeeper(node, {"checks": checks, "instances": list(instances)})
    agents.wait_ready(handle)
    return handle


def pair(
    lab: Lab, agents: Agents, checks: list[dict[str, Any]], **extra: Any
) -> tuple[VipkeeperHandle, VipkeeperHandle]:
    n1 = start(lab, agents, "n1", checks, agents.instance(150, **extra))
    n2 = start(lab, agents, "n2", checks, agents.instance(100, **extra))
    lab.wait_master([n1, n2], vip=VIP, expect="n1", timeout=10)
    return n1, n2


@pytest.mark.timeout(90)
@pytest.mark.parametrize("preempt", [True, False], ids=["preempt", "nopreempt"])
def test_tracked_http_service_moves_the_vip_and_back(
    lab: Lab, agents: Agents, preempt: bool
) -> None:
    """The seeds' nginx pair: the master's web server stops, the VIP goes to the backup within
    fall x interval + Master_Down; it comes back when the server does, unless nopreempt.

    With preempt the check lowers the master's priority (weight -100) and the backup preempts.
    A nopreempt backup never preempts a lowered master (keepalived semantics), so that variant
    uses weight 0: the failing master goes to FAULT and resigns.
    """
    servers = {n.name: lab.start_http(n) for n in lab.nodes[:2]}
    weight = -100 if preempt else 0
    n1, n2 = pair(lab, agents, [http_check(weight)], trackChecks=["web"], preempt=preempt)
    agents.wait_http(VIP, "n1")

    stopped_at = time.time()
    servers["n1"].stop()
    bound = FALL * CHECK_INTERVAL + 0.2 + agents.mdi(100) + agents.MARGIN
    agents.wait_state(n2, "MASTER", timeout=bound + 2)
    took = float(agents.info(n2)["lastTransition"]["at"]) - stopped_at
    assert took <= bound, f"VIP moved {took:.3f}s after the service stopped (bound {bound:.3f}s)"
    demoted = agents.info(n1)
    if preempt:
        assert demoted["state"] == "BACKUP"
        assert demoted["priority"] == 50
        assert demoted["priorityAdjustments"] == ["check web down -100"]
    else:
        assert demoted["state"] == "FAULT"
        assert demoted["faults"] == ["check web down"]
    agents.wait_holders(VIP, ["n2"], timeout=2)
    check = n1.status()["checks"]["web"]
    assert check["health"] == "FAILED"
    assert "refused" in check["lastDetail"]

    servers["n1"] = lab.start_http("n1")
    agents.wait_for(
        "n1's check to recover",
        lambda: (agents.info(n1)["priority"] == 150 and not agents.info(n1)["faults"]) or None,
        timeout=RISE * CHECK_INTERVAL + 2,
    )
    if preempt:
        agents.wait_state(n1, "MASTER", timeout=agents.mdi(150) + 2)
        agents.wait_holders(VIP, ["n1"], timeout=2)
    else:
        time.sleep(agents.mdi(150) + 0.5)  # long enough for a preempting node to have taken it
        assert agents.info(n1)["state"] == "BACKUP"
        assert lab.who_has(VIP) == ["n2"]


@pytest.mark.timeout(60)
def test_gateway_unreachable_from_one_node_demotes_only_that_node(lab: Lab, agents: Agents) -> None:
    gw = {
        "name": "gw",
        "kind": "ping",
        "address": GATEWAY,
        "interval": CHECK_INTERVAL,
        "timeout": 0.2,
    }
    n1, n2 = pair(lab, agents, [gw], trackChecks=["gw"])
    # Only n1 loses its route to the gateway; VRRP between n1 and n2 still works.
    lab.exec("n1", ["ip", "route", "add", "blackhole", f"{GATEWAY}/32"])
    faulted = agents.wait_state(n1, "FAULT", timeout=CHECK_INTERVAL + 0.2 + 2)
    assert "check gw down" in faulted["faults"]
    agents.wait_state(n2, "MASTER", timeout=agents.mdi(100) + 1)
    agents.wait_holders(VIP, ["n2"], timeout=2)

    lab.exec("n1", ["ip", "route", "del", "blackhole", f"{GATEWAY}/32"])
    agents.wait_state(n1, "MASTER", timeout=CHECK_INTERVAL + agents.mdi(150) + 2)
    agents.wait_holders(VIP, ["n1"], timeout=2)


@pytest.mark.timeout(60)
def test_tracked_link_down_faults_and_moves_the_vip(lab: Lab, agents: Agents) -> None:
    for node in ("n1", "n2"):
        lab.exec(node, ["ip", "link", "add", "uplink", "type", "veth", "peer", "name", "uplink-p"])
        lab.exec(node, ["ip", "link", "set", "uplink", "up"])
        lab.exec(node, ["ip", "link", "set", "uplink-p", "up"])
    n1, n2 = pair(lab, agents, [], trackInterfaces=["uplink"])

    lab.exec("n1", ["ip", "link", "set", "uplink-p", "down"])  # the uplink loses carrier
    faulted = agents.wait_state(n1, "FAULT", timeout=2)
    assert faulted["faults"] == ["interface uplink down"]
    agents.wait_state(n2, "MASTER", timeout=agents.mdi(100) + 1)
    agents.wait_holders(VIP, ["n2"], timeout=2)

    lab.exec("n1", ["ip", "link", "set", "uplink-p", "up"])
    agents.wait_state(n1, "MASTER", timeout=agents.mdi(150) + 2)
    agents.wait_holders(VIP, ["n1"], timeout=2)


@pytest.mark.timeout(60)
def test_sync_group_moves_both_vips_together(lab: Lab, agents: Agents) -> None:
    """The seeds' LVS-NAT directors: the external and the internal VIP must share a node."""
    servers = {n.name: lab.start_http(n) for n in lab.nodes[:2]}
    handles = {}
    for node, prio in (("n1", 150), ("n2", 100)):
        ext = agents.instance(prio, name="ext", vrid=51, syncGroup="lvs", trackChecks=["web"])
        internal = agents.instance(prio, name="int", vrid=52, addresses=[VIP_INTERNAL])
        internal["syncGroup"] = "lvs"
        handles[node] = start(lab, agents, node, [http_check(-100)], ext, internal)
    n1, n2 = handles["n1"], handles["n2"]
    for name in ("ext", "int"):
        agents.wait_state(n1, "MASTER", timeout=10, name=name)
        agents.wait_state(n2, "BACKUP", timeout=5, name=name)

    # Only the external instance tracks the web server; the group moves the internal VIP too.
    servers["n1"].stop()
    for name in ("ext", "int"):
        agents.wait_state(n2, "MASTER", timeout=FALL * CHECK_INTERVAL + 3, name=name)
    agents.wait_holders(VIP, ["n2"], timeout=2)
    agents.wait_holders(VIP_INTERNAL, ["n2"], timeout=2)
    assert agents.info(n1, "int")["priority"] == 50  # the group shares the weight

    servers["n1"] = lab.start_http("n1")
    for name in ("ext", "int"):
        agents.wait_state(n1, "MASTER", timeout=RISE * CHECK_INTERVAL + 3, name=name)
    agents.wait_holders(VIP, ["n1"], timeout=2)
    agents.wait_holders(VIP_INTERNAL, ["n1"], timeout=2)


@pytest.mark.timeout(60)
def test_maintenance_file_hands_over_and_keeps_the_vip_away(lab: Lab, agents: Agents) -> None:
    n1, n2 = pair(lab, agents, [])
    requested_at = time.time()
    lab.set_maintenance("n1", on=True)
    # The file is polled once a second; the handover itself is a priority-0 advert (Skew_Time).
    agents.wait_state(n2, "MASTER", timeout=1.0 + agents.skew(100) + agents.MARGIN + 1)
    took = float(agents.info(n2)["lastTransition"]["at"]) - requested_at
    assert took <= 1.0 + agents.skew(100) + agents.MARGIN
    agents.wait_holders(VIP, ["n2"], timeout=2)
    assert agents.info(n1)["maintenance"] is True
    assert n1.status()["maintenance"]["active"] is True

    # n1 outranks n2 (150 > 100, preempt) but stays BACKUP, even when n2 goes away entirely.
    time.sleep(agents.mdi(150) + 0.3)
    assert agents.info(n1)["state"] == "BACKUP"
    n2.proc.stop()
    time.sleep(agents.mdi(150) + 0.5)
    assert agents.info(n1)["state"] == "BACKUP"
    assert lab.who_has(VIP) == []

    lab.set_maintenance("n1", on=False)
    agents.wait_state(n1, "MASTER", timeout=1.0 + agents.mdi(150) + 1)
    agents.wait_holders(VIP, ["n1"], timeout=2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ({"name": "x", "kind": "dns", "address": "127.0.0.1"}, "checks[0].kind: unknown kind"),
        (
            {"name": "x", "kind": "tcp", "address": "127.0.0.1", "port": 80, "interval": -1},
            "checks[0].interval: out of range",
        ),
        ({"name": "x", "kind": "exec", "script": "rm-rf"}, "checks[0].script: script 'rm-rf'"),
        ({"name": "x", "kind": "exec", "script": "/bin/sh"}, "is not a script name"),
    ],
    ids=["unknown-kind", "negative-interval", "not-in-allowlist", "a-path"],
)
def test_bad_checks_are_refused_and_the_running_config_kept(
    lab: Lab, agents: Agents, check: dict[str, Any], expected: str
) -> None:
    lab.install_script("ok", "#!/bin/sh\nexit 0\n")
    good = {"name": "x", "kind": "exec", "script": "ok", "interval": 0.2, "weight": -10}
    n1 = start(lab, agents, "n1", [good], agents.instance(150, trackChecks=["x"]))
    agents.wait_state(n1, "MASTER", timeout=5)
    since = agents.info(n1)["since"]
    agents.write_file(
        n1,
        render_agent_yaml(
            {"checks": [check], "instances": [agents.instance(150, trackChecks=["x"])]}
        ),
    )
    error = agents.wait_for(
        "the reload error in the status",
        lambda: n1.status()["config"]["lastReloadError"],
        timeout=5,
    )
    assert expected in error
    item = agents.info(n1)
    assert (item["state"], item["priority"], item["since"]) == ("MASTER", 150, since)
    assert n1.status()["checks"]["x"]["health"] == "OK"

    # The same file at start-up: the agent refuses to start, naming the problem.
    argv = [str(agent_executable()), "--config", str(n1.config_path)]
    refused = lab.spawn("n2", [*argv, "--script-dir", str(lab.script_dir)], name="n2-refused")
    assert refused.wait(10) == 2
    assert expected in refused.log_text()


@pytest.mark.timeout(60)
def test_notify_hooks_run_keepalived_style_as_nobody(lab: Lab, agents: Agents) -> None:
    out = lab.workdir / "notified"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the scripts run as nobody
    log = out / "log"
    lab.install_script("note", f'#!/bin/sh\necho "$(id -u) $*" >> {log}\n')
    lab.install_script("on-master", f'#!/bin/sh\necho "master-hook $*" >> {log}\n')
    n1 = start(
        lab,
        agents,
        "n1",
        [],
        agents.instance(150, notify={"any": "note", "master": "on-master"}),
    )
    agents.wait_state(n1, "MASTER", timeout=5)
    agents.wait_for("the MASTER notification", lambda: "MASTER" in log.read_text() or None, 5)
    n1.proc.stop()
    lines = log.read_text().splitlines()
    assert lines == [
        "65534 INSTANCE web BACKUP 150",
        "master-hook INSTANCE web MASTER 150",
        "65534 INSTANCE web MASTER 150",
        "65534 INSTANCE web STOP 150",
    ]


@pytest.mark.timeout(60)
def test_maintenance_field_in_the_config_hands_over_on_reload(lab: Lab, agents: Agents) -> None:
    n1, n2 = pair(lab, agents, [])
    agents.write_file(
        n1, render_agent_yaml({"maintenance": True, "instances": [agents.instance(150)]})
    )
    agents.wait_state(n2, "MASTER", timeout=1.0 + agents.skew(100) + agents.MARGIN + 1)
    agents.wait_holders(VIP, ["n2"], timeout=2)
    status = n1.status()
    assert status["maintenance"]["active"] is True
    assert status["maintenance"]["config"] is True
    assert agents.info(n1)["state"] == "BACKUP"

    agents.write_file(n1, render_agent_yaml({"instances": [agents.instance(150)]}))
    agents.wait_state(n1, "MASTER", timeout=1.0 + agents.mdi(150) + 2)
    agents.wait_holders(VIP, ["n1"], timeout=2)
