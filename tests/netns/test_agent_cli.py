"""Start-up failures a user meets first: missing privileges, an interface that is not there."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from vipkeeper_lab.nodes import Lab

pytestmark = pytest.mark.netns

AGENT = Path(sys.executable).with_name("vipkeeper-agent")


@pytest.mark.timeout(30)
def test_without_privileges_the_agent_says_which_capabilities_it_needs(lab: Lab) -> None:
    # pytest's tmp_path is private to root; the unprivileged agent must be able to read this.
    with tempfile.TemporaryDirectory(prefix="vk-cli-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        config = workdir / "agent.yaml"
        config.write_text("instances:\n  - {name: web, vrid: 51, addresses: [192.0.2.100/24]}\n")
        config.chmod(0o644)
        unprivileged = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
        run_agent = [str(AGENT), "--config", str(config)]
        run_agent += ["--status-socket", str(workdir / "s" / "agent.sock")]
        done = subprocess.run(
            ["ip", "netns", "exec", lab.nodes[0].ns, *unprivileged, *run_agent],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    assert "CAP_NET_RAW" in done.stderr and "CAP_NET_ADMIN" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.timeout(30)
def test_an_instance_on_a_missing_interface_is_reported_not_fatal(lab: Lab) -> None:
    config = {
        "instances": [
            {
                "name": "web",
                "vrid": 51,
                "priority": 150,
                "advertInterval": 0.1,
                "addresses": ["192.0.2.100/24"],
            },
            {"name": "ghost", "vrid": 52, "interface": "eth9", "addresses": ["192.0.2.101/24"]},
            {"name": "offnet", "vrid": 53, "addresses": ["198.51.100.7/24"]},
        ]
    }
    agent = lab.start_vipkeeper(lab.nodes[0], config)
    lab.wait_for("web MASTER", lambda: agent.state("web") == "MASTER", timeout=10)
    by_name = {i["name"]: i for i in agent.status()["instances"]}
    assert by_name["ghost"] == {
        "name": "ghost",
        "state": "FAULT",
        "reason": "interface eth9 does not exist on this node",
    }
    assert "set 'interface' explicitly" in by_name["offnet"]["reason"]
    assert lab.who_has("192.0.2.100/24") == [lab.nodes[0].name]
