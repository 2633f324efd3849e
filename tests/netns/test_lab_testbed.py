"""The testbed itself, validated against keepalived while vipkeeper-agent is being written.

Needs root (network namespaces); every test leaves no namespace, process or file behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from vipkeeper_lab.agents import VipkeeperHandle
from vipkeeper_lab.housekeeping import REGISTRY, find_stale_labs, remove_stale_lab
from vipkeeper_lab.keepalived import KeepalivedInstance, render_conf
from vipkeeper_lab.netns import list_namespaces, pids_in_namespace
from vipkeeper_lab.nodes import Lab

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]
needs_keepalived = pytest.mark.skipif(
    shutil.which("keepalived") is None, reason="needs Debian's keepalived"
)

VIP4 = "192.0.2.100/24"
VIP6 = "2001:db8::100/64"


def config(
    priority: int, vip: str = VIP4, *, version: int = 3, interval: str = "0.1"
) -> dict[str, Any]:
    instance: dict[str, Any] = {
        "name": "web",
        "vrid": 51,
        "interface": "eth0",
        "version": version,
        "priority": priority,
        "advertInterval": Decimal(interval),
        "preempt": True,
        "addresses": [vip],
    }
    if version == 2:
        instance["auth"] = {"password": "labpass"}
    return {"instances": [instance]}


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie awaiting its parent counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def assert_no_traces(prefix: str, pids: list[int], workdir: Path) -> None:
    assert [ns for ns in list_namespaces() if ns.startswith(prefix + "-")] == []
    assert [pid for pid in pids if not gone(pid)] == []
    assert not workdir.exists()
    assert not (REGISTRY / f"{prefix}.json").exists()


@pytest.fixture
def lab2() -> Iterator[Lab]:
    with Lab(nodes=2) as lab:
        yield lab


# ----- the testbed -------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_lab_comes_up_and_leaves_nothing_behind() -> None:
    with Lab(nodes=2) as lab:
        prefix, workdir = lab.prefix, lab.workdir
        assert {f"{prefix}-{role}" for role in ("seg", "n1", "n2", "client")} <= set(
            list_namespaces()
        )
        assert [n.name for n in lab.nodes] == ["n1", "n2"]
        assert lab.the_client.name == "client"
        assert len({h.mac for h in lab.hosts}) == 3
        n1 = lab.node("n1")
        assert {str(a) for a in lab.addresses(n1)} >= {"192.0.2.11/24", "2001:db8::11/64"}
        assert lab.who_has("192.0.2.12") == ["n2"]
        assert lab.who_has("2001:db8::11") == ["n1"]
        assert lab.who_has(VIP4) == []
        servers = lab.start_http_servers()
        # DAD is off, so IPv6 works at once, without the usual second of "tentative" state.
        assert lab.http_get("192.0.2.11") == "n1"
        assert lab.http_get("2001:db8::12") == "n2"
        assert lab.node_by_mac(n1.mac) == "n1"
        done = lab.exec("client", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        assert "192.0.2.250/24" in done.stdout
        sleeper = lab.spawn("n2", ["sleep", "600"])
        pids = [sleeper.pid, *(s.pid for s in servers)]
        assert not any(gone(pid) for pid in pids)
    assert_no_traces(prefix, pids, workdir)


@pytest.mark.timeout(60)
def test_link_down_and_isolation_cut_a_node_off(lab2: Lab) -> None:
    lab2.start_http("n2")
    assert lab2.http_get("192.0.2.12", timeout=1) == "n2"
    lab2.link_down("n2")
    assert lab2.http_get("192.0.2.12", timeout=0.5) is None
    assert "n2" in lab2.cut_off
    lab2.link_up("n2")
    lab2.wait_for("n2 reachable", lambda: lab2.http_get("192.0.2.12", timeout=0.5), 10)
    lab2.isolate("n2")
    assert lab2.http_get("192.0.2.12", timeout=0.5) is None
    lab2.rejoin("n2")
    lab2.wait_for("n2 reachable", lambda: lab2.http_get("192.0.2.12", timeout=0.5), 10)
    assert lab2.cut_off == set()


@pytest.mark.timeout(60)
def test_teardown_on_exception() -> None:
    prefix = ""
    workdir = Path("/nonexistent")
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="boom"), Lab(nodes=1) as lab:
        prefix, workdir = lab.prefix, lab.workdir
        pids.append(lab.spawn("n1", ["sleep", "600"]).pid)
        raise RuntimeError("boom")
    assert_no_traces(prefix, pids, workdir)


@pytest.mark.timeout(60)
def test_stop_escalates_to_sigkill_for_the_whole_group(lab2: Lab) -> None:
    proc = lab2.spawn("n1", ["sh", "-c", 'trap "" TERM; sleep 600 & wait'])
    time.sleep(0.3)
    started = time.monotonic()
    assert proc.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 3
    # pgrep would see the whole host (only the network is namespaced); ask by namespace.
    lab2.wait_for("n1 empty", lambda: not pids_in_namespace(lab2.node("n1").ns), 3)


OWNER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import signal
    from vipkeeper_lab.nodes import Lab
    # As in a terminal, whatever the CI shell left behind (a background job ignores SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with Lab(nodes=1) as lab:
        sleeper = lab.spawn("n1", ["sleep", "600"])
        print(json.dumps({"prefix": lab.prefix, "pid": sleeper.pid,
                          "workdir": str(lab.workdir)}), flush=True)
        time.sleep(120)
    """
)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_owner() -> tuple[subprocess.Popen[str], dict[str, Any]]:
    # A shell that starts CI in the background leaves SIGINT ignored, and an ignored signal stays
    # ignored across exec: give the owner the default disposition a terminal user has.
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,  # noqa: PLW1509
    )
    assert owner.stdout is not None
    line = owner.stdout.readline()  # bounded by the test timeout; the lab is up in < 1 s
    return owner, json.loads(line)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_teardown_on_signals(sig: int) -> None:
    if signal.getsignal(sig) is signal.SIG_IGN:
        # An ignored signal stays ignored in children, and the Lab deliberately leaves a
        # non-default disposition alone (nohup, background jobs): nothing to test then.
        pytest.skip(f"{signal.Signals(sig).name} is ignored in this test run (nohup/background)")
    owner, info = _start_owner()
    owner.send_signal(sig)
    assert owner.wait(timeout=20) != 0
    assert_no_traces(info["prefix"], [info["pid"]], Path(info["workdir"]))


@pytest.mark.timeout(60)
def test_cleanup_removes_what_a_sigkilled_lab_left(tmp_path: Path) -> None:
    owner, info = _start_owner()
    owner.kill()
    owner.wait(timeout=10)
    prefix = info["prefix"]
    assert f"{prefix}-n1" in list_namespaces()  # SIGKILL: no chance to clean up
    assert (REGISTRY / f"{prefix}.json").exists()
    # A live lab is never touched, wherever its work directory is.
    with Lab(nodes=1, base_dir=tmp_path) as live:
        stale = {s.prefix: s for s in find_stale_labs()}
        assert live.prefix not in stale
        assert not stale[prefix].unowned
        remove_stale_lab(stale[prefix])
        assert f"{live.prefix}-n1" in list_namespaces()
    assert_no_traces(prefix, [info["pid"]], Path(info["workdir"]))
    assert not (REGISTRY / f"{prefix}.json").exists()


FAKE_AGENT = textwrap.dedent(
    """
    import json, signal, socket, sys
    import yaml
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    spec = yaml.safe_load(open(args["--config"]))
    inst = spec["instances"][0]
    status = {"instances": [{"name": inst["name"], "vrid": inst["vrid"], "state": "BACKUP",
              "priority": inst["priority"], "masterAddress": None, "since": 0.0,
              "lastTransition": None, "counters": {"advertsSent": 0, "advertsReceived": 0,
              "dropped": {}}}]}
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(args["--status-socket"])
    server.listen(4)
    print("fake agent ready", flush=True)
    while True:
        conn, _ = server.accept()
        conn.sendall(json.dumps(status).encode())
        conn.close()
    """
)


@pytest.mark.timeout(60)
def test_vipkeeper_launcher_and_status_socket(lab2: Lab, tmp_path: Path) -> None:
    # A stand-in that honours the agent's CLI contract: checks the YAML, the flags and the
    # status socket path without depending on the real agent's progress.
    fake = tmp_path / "fake-agent"
    fake.write_text(f"#!{sys.executable}\n{FAKE_AGENT}")
    fake.chmod(0o755)
    agent = lab2.start_vipkeeper("n1", config(150), executable=fake)
    assert isinstance(agent, VipkeeperHandle)
    assert "advertInterval: 0.1" in agent.config_path.read_text()
    lab2.wait_for("status socket", agent.socket_path.exists, 10)
    assert agent.state() == "BACKUP"
    assert agent.status()["instances"][0]["priority"] == 150
    again = lab2.restart(agent)
    assert gone(agent.proc.pid)
    assert isinstance(again, VipkeeperHandle)
    assert again.executable == fake


# ----- against keepalived ------------------------------------------------------------------

RENDER_VARIANTS = {
    "v3-ipv4": KeepalivedInstance(name="a", vrid=1, priority=150, addresses=(VIP4,)),
    "v2-auth-nopreempt": KeepalivedInstance(
        name="b",
        vrid=2,
        priority=100,
        addresses=("192.0.2.101/24", "192.0.2.102/24"),
        version=2,
        advert_int=Decimal(10),
        preempt=False,
        auth_pass="labpass",
    ),
    "v3-ipv6-unicast-delay-garp": KeepalivedInstance(
        name="c",
        vrid=3,
        priority=90,
        addresses=(VIP6,),
        advert_int=Decimal("0.05"),
        preempt_delay=Decimal("1.5"),
        unicast_peers=("2001:db8::12",),
        unicast_src_ip="2001:db8::11",
        garp_master_repeat=2,
        garp_master_delay=Decimal(1),
        garp_master_refresh=Decimal(30),
    ),
}


@pytest.mark.timeout(60)
@pytest.mark.interop
@needs_keepalived
@pytest.mark.parametrize("variant", sorted(RENDER_VARIANTS))
def test_keepalived_accepts_every_rendered_variant(lab2: Lab, variant: str) -> None:
    conf = lab2.workdir / f"{variant}.conf"
    conf.write_text(render_conf([RENDER_VARIANTS[variant]], router_id="n1"))
    done = lab2.exec("n1", ["keepalived", f"--config-test={lab2.workdir}/t.log", "-f", str(conf)])
    assert done.returncode == 0, (lab2.workdir / "t.log").read_text()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("vip", "version", "interval"),
    [(VIP4, 3, "0.1"), (VIP4, 2, "1"), (VIP6, 3, "0.1")],
    ids=["v3-ipv4", "v2-ipv4-auth", "v3-ipv6"],
)
@pytest.mark.interop
@needs_keepalived
def test_keepalived_elects_and_moves_the_vip_on_kill_9(
    lab2: Lab, vip: str, version: int, interval: str
) -> None:
    n1, n2 = lab2.nodes
    agents = [
        lab2.start_keepalived(n1, config(150, vip, version=version, interval=interval)),
        lab2.start_keepalived(n2, config(100, vip, version=version, interval=interval)),
    ]
    bound = 4 * float(interval) + 5
    master = lab2.wait_master(agents, vip=vip, timeout=bound)
    assert master.node == "n1"
    assert lab2.states(agents) == {"n1": "MASTER", "n2": "BACKUP"}
    assert master.status()["instances"][0]["lastTransition"]["from"] == "BACKUP"

    lab2.kill(master)
    new = lab2.wait_master(agents, vip=vip, timeout=bound, exclude=["n1"])
    assert new.node == "n2"
    # kill -9 gives keepalived no chance to clean up: the dead master still has the address.
    assert lab2.who_has(vip) == ["n1", "n2"]


@pytest.mark.timeout(90)
@pytest.mark.interop
@needs_keepalived
def test_probes_measure_a_takeover(lab2: Lab) -> None:
    n1, n2 = lab2.nodes
    lab2.start_http_servers()
    agents = [lab2.start_keepalived(n1, config(150)), lab2.start_keepalived(n2, config(100))]
    lab2.wait_master(agents, vip=VIP4, timeout=10)
    probes = lab2.start_probes(VIP4)
    assert probes.wait_http(10, node="n1") is not None
    time.sleep(0.3)

    fault_at = lab2.crash(agents[0])
    lab2.wait_master(agents, vip=VIP4, timeout=10, exclude=["n1"])
    assert probes.wait_http(10, node="n2", after=fault_at) is not None
    time.sleep(0.2)
    probes.stop()
    result = probes.takeover(fault_at)

    assert (result.old_mac, result.new_mac) == (n1.mac, n2.mac)
    assert (result.old_node, result.new_node) == ("n1", "n2")
    # Master_Down_Interval for priority 100 at 0.1 s: 0.36 s after the last advert heard.
    assert result.arp_takeover is not None
    assert 0.15 < result.arp_takeover < 1.5
    assert result.garp_delay is not None
    assert result.garp_delay < 1.5
    assert result.http_takeover is not None
    assert result.http_takeover >= result.arp_takeover - 0.05
    assert result.gap is not None
    assert 0.15 < result.gap < 2.0
    assert result.failed_requests > 0
