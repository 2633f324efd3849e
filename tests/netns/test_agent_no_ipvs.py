"""On a kernel without IPVS (this host's) a configuration with virtual servers still runs: the
agent says what is missing and how to fix it, in its log and status, and VRRP works as ever."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from vipkeeper_lab.nodes import Lab

if TYPE_CHECKING:
    from conftest import Agents

pytestmark = pytest.mark.netns

VIP = "192.0.2.100/24"


@pytest.mark.timeout(60)
def test_no_ipvs_is_reported_and_vrrp_keeps_working(lab: Lab, agents: Agents) -> None:
    if Path("/proc/net/ip_vs").exists():
        pytest.skip("this kernel has IPVS; the VM lane covers the programming")
    web = {
        "name": "web",
        "address": "192.0.2.100",
        "port": 80,
        "scheduler": "rr",
        "realServers": [{"address": "192.0.2.11"}, {"address": "192.0.2.12"}],
        "check": {"kind": "tcp", "interval": 0.5},
    }
    handles = []
    for node, priority in (("n1", 150), ("n2", 100)):
        config = {"instances": [agents.instance(priority)], "virtualServers": [web]}
        handle = lab.start_vipkeeper(node, config)
        agents.wait_ready(handle)
        handles.append(handle)
    n1, n2 = handles
    lab.wait_master([n1, n2], vip=VIP, expect="n1", timeout=10)

    ipvs = agents.wait_for(
        "the IPVS problem in the status",
        lambda: (n1.status().get("ipvs") or {}).get("problems") or None,
        timeout=5,
    )
    assert any("ip_vs" in problem for problem in ipvs), ipvs
    assert "event=ipvs_unavailable" in agents.log(n1)
    status = n1.status()["ipvs"]
    assert status["virtualServers"][0]["name"] == "web"
    assert status["virtualServers"][0]["active"] is True  # n1 is MASTER: placement says here
    assert status["virtualServers"][0]["inKernel"] is False
    assert status["table"] == []

    # Failover is untouched by the missing IPVS.
    n1.proc.stop()
    agents.wait_state(n2, "MASTER", timeout=agents.mdi(100) + 2)
    agents.wait_holders(VIP, ["n2"], timeout=2)
