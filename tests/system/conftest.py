"""Fixtures of the system tier: the whole product on one machine (see system_env.py).

``system`` yields a running world: three nodes and a client on the lab's segment, the management
network, the API emulator reachable from the nodes, Nodes n1-n3 in it (InternalIPs = their
segment addresses), the product operator in-process and an agent on every node. Teardown is
unconditional and in reverse: agents (by PID, with the lab), operator, emulator, namespaces.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

# tests/ has no __init__.py: the shared support package is found through sys.path (as in
# tests/operator/conftest.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from system_env import ManagementNetwork, NetnsKubeAPI, NodeAgents, System

from support.operator_env import node, run_operator
from vipkeeper_lab.nodes import Lab


def _unusable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: network namespaces for the nodes, the client and the API endpoint"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    if shutil.which("curl") is None:
        return "needs curl (the client's probe of the VIP)"
    return None


@pytest.fixture
def system(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[System]:
    reason = _unusable()
    if reason is not None:
        pytest.skip(reason)
    # Every request the emulator serves would be logged (thousands): a failure's report would
    # drown in them.
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)
    mgmt = ManagementNetwork()
    with Lab(nodes=3) as lab:
        try:
            mgmt.create(lab)
            lab.start_http_servers()  # each node answers GET / with its name
            kapi = NetnsKubeAPI(mgmt.api_ns, mgmt_api_ip(mgmt))
            with kapi:
                for host in lab.nodes:
                    kapi.create(node(host.name, str(host.ipv4.ip)))
                kubeconfig = kapi.write_node_kubeconfig(tmp_path / "node-kubeconfig")
                agents = NodeAgents(lab, kubeconfig)
                try:
                    with run_operator(kapi, tmp_path, monkeypatch) as controller:
                        for host in lab.nodes:
                            agents.start(host.name)
                        yield System(lab, mgmt, kapi, controller, agents)
                        if getattr(request.node, "rep_call_failed", False):
                            print(agents.logs())
                finally:
                    # Before the emulator goes: an agent's final status write must not hang.
                    for handle in agents.handles.values():
                        handle.proc.stop(timeout=3)
        finally:
            mgmt.close()


def mgmt_api_ip(mgmt: ManagementNetwork) -> str:
    return str(mgmt.segment.attachments[mgmt.api_ns].ipv4.ip)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Lets the fixture's teardown know whether the test itself failed (then it shows the logs).
    report = yield
    if report.when == "call" and report.failed:
        item.rep_call_failed = True  # type: ignore[attr-defined]
    return report
