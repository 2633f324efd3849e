"""Checks never delay adverts: a master whose checks include a script that hangs forever keeps
its backup quiet, reports the hung check failed, and kills every run of it at its timeout.

Correctness only: timing is bench/checks.py's job. The bound watched here is the protocol's own
(a backup takes over after Master_Down, 3 adverts plus skew), so only an advert delayed by more
than ~360 ms, or the agent stalling, fails the test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vipkeeper_lab import netns
from vipkeeper_lab.fastserver import READY_LINE
from vipkeeper_lab.nodes import Lab

if TYPE_CHECKING:
    from conftest import Agents

pytestmark = pytest.mark.netns

HANG = "hang-forever"
HANG_BODY = "#!/bin/sh\n# Never answers: only the agent's timeout ends it.\nsleep infinity\n"
HTTP_PORT, TCP_PORT = 8080, 8081
BUSY_CHECKS = 25  # of each of http and tcp
WATCH = 5.0


def busy_checks() -> list[dict[str, Any]]:
    return [
        {
            "name": f"{kind}-{i:02d}",
            "kind": kind,
            "address": "127.0.0.1",
            "port": port,
            "interval": 0.2,
            "timeout": 0.5,
            "weight": -1,
        }
        for kind, port in (("http", HTTP_PORT), ("tcp", TCP_PORT))
        for i in range(BUSY_CHECKS)
    ]


def hung_processes(ns: str) -> tuple[int, int]:
    """Live (not zombie) processes of the hung script in namespace ``ns``: (runs, processes).

    Each run is its own session (the agent starts scripts with setsid), so runs are counted by
    session: a shell that has forked but not yet exec'd its sleep looks like a second shell.
    Only the lab puts processes into a node's namespace, and only the agent's exec checks run
    `sleep` there, so the namespace is what ties a process to n1's agent.
    """
    sessions: set[int] = set()
    processes = 0
    for pid in netns.pids_in_namespace(ns):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # exited between the scan and the read
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if state == "Z":
            continue
        if comm == "sleep" or HANG.encode() in cmdline:
            processes += 1
            sessions.add(int(session))
    return len(sessions), processes


@pytest.mark.timeout(60)
@pytest.mark.lab_nodes(2)
def test_a_hung_script_and_busy_checks_never_delay_the_masters_adverts(
    lab: Lab, agents: Agents
) -> None:
    lab.install_script(HANG, HANG_BODY)
    server = lab.spawn(
        "n1",
        lab.python(
            "vipkeeper_lab.fastserver",
            *("--http-port", str(HTTP_PORT), "--tcp-port", str(TCP_PORT)),
        ),
        name="n1-fastserver",
    )
    lab.wait_for("the fast server", lambda: READY_LINE in server.log_text(), timeout=10)
    hang = {
        "name": "hang",
        "kind": "exec",
        "script": HANG,
        "interval": 0.5,
        "timeout": 0.5,
        "weight": -1,
    }
    checks = [hang, *busy_checks()]
    tracked = [c["name"] for c in checks]
    n1 = lab.start_vipkeeper(
        "n1", {"checks": checks, "instances": [agents.instance(150, trackChecks=tracked)]}
    )
    agents.wait_ready(n1)
    n2 = agents.start("n2", agents.instance(100))
    lab.wait_master([n1, n2], vip=agents.VIP4, expect="n1", timeout=10)
    # First run: up to 0.5 s of start spread + the 0.5 s timeout + the kill's grace.
    agents.wait_for(
        "the hung check to fail",
        lambda: n1.status()["checks"]["hang"]["health"] == "FAILED",
        timeout=5,
    )
    backup_since = agents.info(n2)["since"]
    runs_before = n1.status()["checks"]["hang"]["runs"]
    received_before = agents.info(n2)["counters"]["advertsReceived"]
    ns = lab.node("n1").ns
    most = [0, 0]

    def steady() -> bool:
        runs, processes = hung_processes(ns)
        most[0], most[1] = max(most[0], runs), max(most[1], processes)
        return (
            agents.info(n2)["state"] == "BACKUP"
            and agents.info(n1)["state"] == "MASTER"
            and runs <= 1
        )

    started = time.monotonic()
    agents.hold(
        "n1 MASTER, n2 BACKUP, at most one run of the hung script alive",
        steady,
        WATCH,
        lambda: (
            f"n1 {agents.info(n1)['state']}, n2 {agents.info(n2)['state']}, "
            f"hung script (runs, processes) {hung_processes(ns)}"
        ),
    )
    watched = time.monotonic() - started

    # Never left BACKUP, not even between two polls: its last transition is still the one
    # from before the watch, and n1's adverts kept coming (10 a second).
    backup = agents.info(n2)
    assert backup["since"] == backup_since
    assert backup["lastTransition"]["to"] == "BACKUP"
    assert backup["counters"]["advertsReceived"] - received_before >= 0.8 * watched * 10

    status = n1.status()["checks"]
    hung = status["hang"]
    assert hung["health"] == "FAILED"
    assert "timeout" in hung["lastDetail"]
    # Killed and restarted all along (a run is 0.5 s + kill + 0.5 s interval), never stuck.
    assert hung["runs"] - runs_before >= 3
    assert most[0] == 1, "the hung script was never seen running"
    failing = {name: s["lastDetail"] for name, s in status.items() if s["health"] != "OK"}
    assert failing == {"hang": hung["lastDetail"]}
    master = agents.info(n1)
    assert master["priority"] == 149
    assert master["priorityAdjustments"] == ["check hang down -1"]
