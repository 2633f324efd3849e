"""What the kernel must offer for the configured virtual servers, and what it does offer.

:func:`problems` is pure (facts in, sentences out); :func:`read_facts` reads /proc and
/lib/modules, which needs no privileges. A problem is something that will make a virtual server
fail or misbehave, said with its fix.

Scheduler availability: /proc/net/ip_vs does not list schedulers, and the kernel loads
``ip_vs_<name>`` on demand when a service asks for it, so what counts is whether the module
exists for the running kernel (``/lib/modules/$(uname -r)/kernel/net/netfilter/ipvs/``), is built
in (``modules.builtin``) or is loaded already (``/proc/modules``). In a container without the
host's /lib/modules that is unknown, and nothing is reported.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vipkeeper_api.ipvs import SCHEDULERS, Forwarding, VirtualServer

IPVS_MODULE_DIR = "kernel/net/netfilter/ipvs"


@dataclass(frozen=True, slots=True)
class KernelFacts:
    #: /proc/net/ip_vs exists: the ip_vs module is loaded (or built in).
    ipvs_loaded: bool
    #: ip_vs exists for this kernel (module file or built in); None = unknown.
    ipvs_available: bool | None = None
    #: net.ipv4.ip_forward; None = unknown.
    ip_forward: bool | None = None
    #: net.ipv6.conf.all.forwarding; None = unknown.
    ipv6_forwarding: bool | None = None
    #: net.ipv4.vs.conntrack (IPVS connections tracked by netfilter, which iptables rules on
    #: balanced traffic need); None = unknown (ip_vs not loaded).
    conntrack: bool | None = None
    #: Schedulers the kernel can load; None = unknown.
    schedulers: frozenset[str] | None = None
    kernel_release: str = ""

    def as_dict(self) -> dict[str, object]:
        """JSON-ready, for the agent's status."""
        return {
            "ipvsLoaded": self.ipvs_loaded,
            "ipvsAvailable": self.ipvs_available,
            "ipForward": self.ip_forward,
            "ipv6Forwarding": self.ipv6_forwarding,
            "conntrack": self.conntrack,
            "schedulers": None if self.schedulers is None else sorted(self.schedulers),
            "kernelRelease": self.kernel_release,
        }


def _names(vs_list: Iterable[VirtualServer]) -> str:
    return ", ".join(vs.name for vs in vs_list)


def problems(vs_list: Iterable[VirtualServer], facts: KernelFacts) -> list[str]:
    """Everything in the kernel that stands in the way of ``vs_list``, with its fix."""
    vs_list = list(vs_list)
    if not vs_list:
        return []
    out: list[str] = []
    if not facts.ipvs_loaded:
        if facts.ipvs_available is False:
            out.append(
                f"the kernel ({facts.kernel_release or 'running'}) has no IPVS: ip_vs is neither "
                "built in nor installed as a module; run the agent on a kernel with CONFIG_IP_VS "
                f"(virtual servers: {_names(vs_list)})"
            )
        else:
            out.append(
                "IPVS is not loaded: load ip_vs with `modprobe ip_vs` (and make it permanent, "
                "e.g. `echo ip_vs > /etc/modules-load.d/ipvs.conf`) "
                f"(virtual servers: {_names(vs_list)})"
            )
    nat4 = [vs for vs in vs_list if vs.forwarding == Forwarding.NAT and vs.family == 4]
    nat6 = [vs for vs in vs_list if vs.forwarding == Forwarding.NAT and vs.family == 6]
    if nat4 and facts.ip_forward is False:
        out.append(
            "NAT forwarding needs net.ipv4.ip_forward=1 (sysctl -w net.ipv4.ip_forward=1); "
            "real servers must route replies back through this node "
            f"(virtual servers: {_names(nat4)})"
        )
    if nat6 and facts.ipv6_forwarding is False:
        out.append(
            "NAT forwarding needs net.ipv6.conf.all.forwarding=1 "
            "(sysctl -w net.ipv6.conf.all.forwarding=1); real servers must route replies back "
            f"through this node (virtual servers: {_names(nat6)})"
        )
    if facts.schedulers is not None:
        by_scheduler: dict[str, list[VirtualServer]] = {}
        for vs in vs_list:
            by_scheduler.setdefault(vs.scheduler, []).append(vs)
        for scheduler, users in sorted(by_scheduler.items()):
            if scheduler not in facts.schedulers:
                out.append(
                    f"scheduler {scheduler} is not available: this kernel has no ip_vs_{scheduler} "
                    f"module; pick another scheduler or install it (virtual servers: "
                    f"{_names(users)})"
                )
    return out


def _flag(path: Path) -> bool | None:
    try:
        return path.read_text().strip() not in ("", "0")
    except OSError:
        return None


def _module_names(names: Iterable[str]) -> set[str]:
    out = set()
    for name in names:
        base = os.path.basename(name.strip())
        stem = base.split(".ko", 1)[0]
        if base != stem:
            out.add(stem.replace("-", "_"))
    return out


def read_facts(
    proc: Path = Path("/proc"), modules: Path = Path("/lib/modules"), release: str | None = None
) -> KernelFacts:
    """What this kernel offers; no privileges needed. Paths are parameters for tests."""
    release = release if release is not None else os.uname().release
    ipvs_loaded = (proc / "net/ip_vs").exists()
    loaded: set[str] = set()
    with contextlib.suppress(OSError):
        loaded = {line.split(" ", 1)[0] for line in (proc / "modules").read_text().splitlines()}
    tree = modules / release
    available: set[str] | None = None
    if tree.is_dir():
        available = set()
        ipvs_dir = tree / IPVS_MODULE_DIR
        if ipvs_dir.is_dir():
            available |= _module_names(p.name for p in ipvs_dir.iterdir())
        with contextlib.suppress(OSError):
            available |= _module_names(
                line
                for line in (tree / "modules.builtin").read_text().splitlines()
                if "/ipvs/" in line
            )
        available |= {name for name in loaded if name.startswith("ip_vs")}
    schedulers = (
        None if available is None else frozenset(s for s in SCHEDULERS if f"ip_vs_{s}" in available)
    )
    ipvs_available: bool | None
    if ipvs_loaded or "ip_vs" in loaded:
        ipvs_available = True
    elif available is None:
        ipvs_available = None
    else:
        ipvs_available = "ip_vs" in available
    return KernelFacts(
        ipvs_loaded=ipvs_loaded,
        ipvs_available=ipvs_available,
        ip_forward=_flag(proc / "sys/net/ipv4/ip_forward"),
        ipv6_forwarding=_flag(proc / "sys/net/ipv6/conf/all/forwarding"),
        conntrack=_flag(proc / "sys/net/ipv4/vs/conntrack"),
        schedulers=schedulers,
        kernel_release=release,
    )
