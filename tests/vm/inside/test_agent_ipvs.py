"""vipkeeper-agent programming the real kernel's IPVS, traffic included (VM lane only).

One director namespace runs the agent from a standalone YAML file: two VRRP instances (alone, so
MASTER) carry a NAT VIP and a DR VIP, and seven virtual servers on them cover the schedulers,
persistence, health checks with a sorry server and inhibitOnFailure, and direct routing. The
lab (see agent_lab.py) is built once for the module, as an agent start costs ~5 s under TCG;
every test leaves the backends as it found them, and the restart and stop tests, which replace
the agent, come last. Every service here is programmed by the agent itself, none through the adapter.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from agent_lab import (
    BACKENDS,
    CLIENT_LAN,
    CLIENTS,
    SORRY,
    START_TIMEOUT,
    VIP_DR,
    VIP_NAT,
    DirectorLab,
    KernelService,
    ipvsadm,
    kernel_stats,
    parse_ipvsadm,
    persistence_templates,
    wait_for,
)

#: Checks run every 0.5 s and judge on one result: a backend's change shows within ~1 s.
CHECK = {"interval": 0.5, "timeout": 1, "fall": 1, "rise": 1}
#: Check results and the syncs they trigger, under TCG.
CHANGE_TIMEOUT = 20.0
B1, B2, B3 = (f"{address}:80" for address in BACKENDS.values())
SORRY_DEST = f"{SORRY[1]}:80"


def _real_servers(**weights: int) -> list[dict[str, Any]]:
    return [
        {"address": BACKENDS[name], "port": 80, "weight": weights.get(name, 1)} for name in BACKENDS
    ]


def _nat(name: str, port: int, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "address": VIP_NAT,
        "port": port,
        "realServers": _real_servers(),
        **fields,
    }


CONFIG: dict[str, Any] = {
    "instances": [
        {
            "name": "ext",
            "vrid": 51,
            "interface": "eth1",
            "advertInterval": 0.2,
            "addresses": [f"{VIP_NAT}/24"],
        },
        {
            "name": "lan",
            "vrid": 52,
            "interface": "eth0",
            "advertInterval": 0.2,
            "addresses": [f"{VIP_DR}/24"],
        },
    ],
    "virtualServers": [
        _nat("rr", 80, scheduler="rr"),
        _nat("wrr", 81, scheduler="wrr", realServers=_real_servers(b1=3, b2=2, b3=1)),
        _nat("sh", 82, scheduler="sh"),
        _nat("sticky", 83, scheduler="rr", persistence={"timeout": 60}),
        _nat(
            "checked",
            84,
            scheduler="rr",
            check={"kind": "http", "path": "/", **CHECK},
            sorryServer={"address": SORRY[1], "port": 80},
        ),
        _nat("inhibit", 85, scheduler="rr", check={"kind": "tcp", **CHECK}, inhibitOnFailure=True),
        {
            "name": "dr",
            "address": VIP_DR,
            "port": 80,
            "forwarding": "dr",
            "scheduler": "rr",
            "realServers": [{"address": a} for a in BACKENDS.values()],
        },
    ],
}
SERVICES = {f"TCP {VIP_NAT}:{port}" for port in range(80, 86)} | {f"TCP {VIP_DR}:80"}


def _settled(lab: DirectorLab) -> dict[str, Any] | None:
    """The agent's IPVS status once both VIPs are held, every check has reported healthy and
    every virtual server is in the kernel with all its real servers at their weight."""
    agent = lab.agent
    assert agent is not None
    status = agent.status()
    if status is None or any(i.get("state") != "MASTER" for i in status["instances"]):
        return None
    ipvs = status["ipvs"]
    for vs in ipvs["virtualServers"]:
        if not vs["inKernel"]:
            return None
        for rs in vs["realServers"]:
            if rs["pending"] or not rs["healthy"] or rs["kernelWeight"] != rs["weight"]:
                return None
    return dict(ipvs)


def _wait_settled(lab: DirectorLab) -> dict[str, Any]:
    assert lab.agent is not None
    agent = lab.agent
    return wait_for(
        "the agent to settle (MASTER, checks healthy, table complete)",
        lambda: _settled(lab),
        START_TIMEOUT,
        lambda: f"{lab.table()}\n{agent.log()}",
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirectorLab]:
    testbed = DirectorLab(tmp_path_factory.mktemp("agent-ipvs"))
    try:
        testbed.build()
        testbed.start_agent(CONFIG, "--dont-release-ipvs")
        _wait_settled(testbed)
        yield testbed
    finally:
        testbed.close()


def _answers(lab: DirectorLab, port: int, count: int, source: str | None = None) -> list[str]:
    return [lab.get(port, source) for _ in range(count)]


def _dests(lab: DirectorLab, port: int) -> dict[str, tuple[str, int]]:
    service = lab.table().get(f"TCP {VIP_NAT}:{port}")
    return {} if service is None else dict(service.dests)


# --- 1. distribution ---------------------------------------------------------------------------


def test_the_agent_programs_every_service(lab: DirectorLab) -> None:
    table = lab.table()
    assert set(table) == SERVICES
    assert table[f"TCP {VIP_NAT}:81"] == KernelService(
        "wrr", {B1: ("Masq", 3), B2: ("Masq", 2), B3: ("Masq", 1)}
    )
    assert table[f"TCP {VIP_NAT}:83"].scheduler == "rr persistent 60"
    assert table[f"TCP {VIP_DR}:80"].dests == {B1: ("Route", 1), B2: ("Route", 1), B3: ("Route", 1)}
    assert lab.agent is not None
    ipvs = lab.agent.ipvs()
    assert (ipvs["problems"], ipvs["errors"]) == ([], [])
    # `status --ipvs` shows what the kernel has, in ipvsadm's format.
    assert parse_ipvsadm(lab.agent.status_ipvs_text()) == table


def test_rr_alternates_evenly(lab: DirectorLab) -> None:
    answers = _answers(lab, 80, 9)
    assert Counter(answers) == {"b1": 3, "b2": 3, "b3": 3}, answers
    # Round robin: any three consecutive connections meet all three servers.
    assert all(len(set(answers[i : i + 3])) == 3 for i in range(7)), answers


def test_wrr_follows_the_weights(lab: DirectorLab) -> None:
    # The kernel's wrr repeats a fixed sequence of sum(weights) = 6 picks: 12 are exact.
    answers = _answers(lab, 81, 12)
    assert Counter(answers) == {"b1": 6, "b2": 4, "b3": 2}, answers


def test_sh_keeps_each_client_on_one_server(lab: DirectorLab) -> None:
    chosen = {}
    for client in CLIENTS:
        answers = set(_answers(lab, 82, 3, client))
        assert len(answers) == 1, f"{client} was spread over {answers}"
        chosen[client] = answers.pop()
    # The hash spreads the clients (deterministically: the same picks on every run).
    assert len(set(chosen.values())) >= 2, chosen


# --- 3. persistence ----------------------------------------------------------------------------


def test_persistence_holds_a_client_on_one_server(lab: DirectorLab) -> None:
    first, second, third = CLIENTS[:3]
    held = _answers(lab, 83, 6, first)
    assert len(set(held)) == 1, f"{first} was not held: {held}"
    # rr picks a new server only for a client's first connection: the others go elsewhere.
    others = [lab.get(83, second), lab.get(83, third)]
    assert {held[0], *others} == {"b1", "b2", "b3"}, (held, others)
    assert _answers(lab, 83, 3, first) == [held[0]] * 3
    # The kernel remembers each choice as a persistence template (client port 0).
    templates = persistence_templates(lab.director)
    real = {name: f"{address}:80" for name, address in BACKENDS.items()}
    assert (f"{first}:0", f"{VIP_NAT}:83", real[held[0]]) in templates, ipvsadm(
        lab.director, "-Lnc"
    )
    # Without persistence the same client is spread (test_rr_alternates_evenly).
    assert len(set(_answers(lab, 80, 3, first))) == 3


# --- 4. direct routing -------------------------------------------------------------------------


def test_dr_replies_bypass_the_director(lab: DirectorLab) -> None:
    answers = [lab.get(80, vip=VIP_DR) for _ in range(6)]
    assert Counter(answers) == {"b1": 2, "b2": 2, "b3": 2}, answers
    # The director saw the requests only: IPVS counts no packet out of the service.
    key = f"TCP {VIP_DR}:80"

    def counted() -> tuple[int, ...] | None:
        stats = kernel_stats(lab.director).get(key)
        return stats if stats is not None and stats[0] >= 6 else None

    conns, inpkts, outpkts, inbytes, outbytes = wait_for(
        f"6 connections counted on {key}", counted, 10.0, lambda: str(kernel_stats(lab.director))
    )
    assert (conns, outpkts, outbytes) == (6, 0, 0) and inpkts >= 6 * 3 and inbytes > 0
    # The real servers saw the client itself (the packet still went to the VIP, on their lo).
    for backend in (lab.backends[name] for name in BACKENDS):
        # busybox logs an IPv4 peer as [::ffff:10.0.3.2]:PORT.
        assert re.search(rf"\b{re.escape(CLIENT_LAN)}\]?:\d", backend.log()), backend.log()


# --- 2. health checks, inhibitOnFailure, sorry server ------------------------------------------


def _wait_dests(lab: DirectorLab, port: int, want: dict[str, tuple[str, int]], why: str) -> None:
    assert lab.agent is not None
    agent = lab.agent
    wait_for(
        f"TCP {VIP_NAT}:{port} to become {want} ({why})",
        lambda: _dests(lab, port) == want,
        CHANGE_TIMEOUT,
        lambda: f"{_dests(lab, port)}\n{agent.log(15)}",
    )


def test_failed_real_servers_leave_and_return(lab: DirectorLab) -> None:
    b = lab.backends
    try:
        b["b2"].stop()
        _wait_dests(lab, 84, {B1: ("Masq", 1), B3: ("Masq", 1)}, "b2 failed: removed")
        _wait_dests(
            lab, 85, {B1: ("Masq", 1), B2: ("Masq", 0), B3: ("Masq", 1)}, "b2 failed: inhibited"
        )
        assert Counter(_answers(lab, 84, 6)) == {"b1": 3, "b3": 3}
        assert Counter(_answers(lab, 85, 6)) == {"b1": 3, "b3": 3}
        assert lab.agent is not None
        checked = {rs["address"]: rs for rs in lab.agent.virtual_server("checked")["realServers"]}
        assert checked[BACKENDS["b2"]]["healthy"] is False
        assert checked[BACKENDS["b2"]]["kernelWeight"] is None

        b["b1"].stop()
        b["b3"].stop()
        _wait_dests(lab, 84, {SORRY_DEST: ("Masq", 1)}, "all failed: the sorry server")
        assert _answers(lab, 84, 2) == ["sorry", "sorry"]
        assert lab.agent.virtual_server("checked")["sorryServerActive"] is True

        b["b1"].start()
        _wait_dests(lab, 84, {B1: ("Masq", 1)}, "b1 back: the sorry server goes")
        _wait_dests(lab, 85, {B1: ("Masq", 1), B2: ("Masq", 0), B3: ("Masq", 0)}, "b1 back")
        assert _answers(lab, 84, 2) == ["b1", "b1"]
        assert _answers(lab, 85, 2) == ["b1", "b1"]
    finally:
        for backend in b.values():
            if backend.proc is None:
                backend.start()
    _wait_settled(lab)


# --- 5. restart and stop: these replace the module's agent, so they come last ----------------

FOREIGN = "TCP 10.0.2.200:80"


def _add_foreign(lab: DirectorLab) -> None:
    """A service another tool made (kube-proxy, an admin): no agent may touch it."""
    if FOREIGN not in lab.table():
        ipvsadm(lab.director, "-A", "-t", "10.0.2.200:80", "-s", "lc")
        ipvsadm(lab.director, "-a", "-t", "10.0.2.200:80", "-r", "10.0.3.11:80", "-m", "-w", "7")


def _replace_agent(lab: DirectorLab, config: dict[str, Any], *args: str) -> dict[str, Any]:
    if lab.agent is not None:
        assert lab.stop_agent(signal.SIGTERM) == 0
    lab.start_agent(config, *args)
    return _wait_settled(lab)


def _placed(placement: str) -> dict[str, Any]:
    return {
        **CONFIG,
        "virtualServers": [{**vs, "placement": placement} for vs in CONFIG["virtualServers"]],
    }


def _service_conns(lab: DirectorLab, counted: str | None = None) -> dict[str, int] | None:
    """Connections per service so far; None while ``counted`` has none."""
    conns = {k: v[0] for k, v in kernel_stats(lab.director).items() if "->" not in k}
    return None if counted is not None and not conns.get(counted) else conns


@pytest.mark.parametrize("placement", ["all", "holder"])
def test_restart_with_dont_release_ipvs_changes_nothing(lab: DirectorLab, placement: str) -> None:
    config = _placed(placement)
    _add_foreign(lab)
    _replace_agent(lab, config, "--dont-release-ipvs")
    before = lab.table()
    assert set(before) == SERVICES | {FOREIGN}
    # A connection to count, so that a service deleted and added again would show as a reset.
    assert lab.get(80) in {"b1", "b2", "b3"}
    conns_before = wait_for(
        "the connection to be counted (the kernel folds its counters in every 2 s)",
        lambda: _service_conns(lab, counted=f"TCP {VIP_NAT}:80"),
        10.0,
    )

    # --dont-release-ipvs: the services outlive the agent (its VIPs do not).
    assert lab.stop_agent(signal.SIGTERM) == 0
    assert lab.table() == before
    assert {VIP_NAT, VIP_DR}.isdisjoint(lab.director_addresses())

    agent = lab.start_agent(config, "--dont-release-ipvs")
    ipvs = _wait_settled(lab)
    log = agent.proc.log_text()
    assert (ipvs["changes"], ipvs["errors"]) == (0, []), log
    assert "event=ipvs_changed" not in log, log
    assert lab.table() == before
    # Not deleted and re-added behind the same look: the kernel's counters carried on.
    conns_after = _service_conns(lab)
    assert conns_after is not None
    assert all(conns_after[k] >= n for k, n in conns_before.items()), (conns_before, conns_after)


def test_stop_removes_our_services_and_spares_foreign_ones(lab: DirectorLab) -> None:
    _add_foreign(lab)
    _replace_agent(lab, CONFIG)
    foreign = lab.table()[FOREIGN]
    assert lab.stop_agent(signal.SIGTERM) == 0
    assert lab.table() == {FOREIGN: foreign}
    assert foreign == KernelService("lc", {B1: ("Masq", 7)})
