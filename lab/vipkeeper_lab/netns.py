"""Network namespaces and the L2 segment that joins them.

Everything here shells out to iproute2 rather than using pyroute2: the commands are what a person
would type to reproduce a lab by hand, and a failing step shows up as a readable ``ip`` error.
Nothing is ever configured in the caller's own network namespace: the bridge lives in a dedicated
"segment" namespace, so a lab cannot disturb the host's interfaces, routes or firewall.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NETNS_DIR = Path("/run/netns")
#: Every lab's namespaces are named ``vk<6 hex>-<role>``, so two labs (or a lab and anything else
#: on the machine) never collide, and leftovers of a killed lab can be recognised with certainty.
PREFIX_RE = re.compile(r"^vk[0-9a-f]{6}$")
NS_NAME_RE = re.compile(r"^(vk[0-9a-f]{6})-[a-z0-9]{1,8}$")
BRIDGE = "br0"
DEFAULT_TIMEOUT = 10.0


class NetnsError(RuntimeError):
    """An iproute2/sysctl step failed; the message carries the command and its stderr."""


def new_prefix() -> str:
    return "vk" + secrets.token_hex(3)


def run(
    argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a short command to completion; never waits longer than ``timeout``."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(argv)}: no answer within {timeout:g} s") from exc
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: {detail}")
    return done


def ns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    # `ip netns exec` execs the command itself (no fork), so the PID we get from Popen is the
    # command's own PID: signals sent to it reach the real process, not a wrapper.
    return ["ip", "netns", "exec", ns, *argv]


def list_namespaces() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir())


def ns_inode(ns: str) -> int | None:
    try:
        return (NETNS_DIR / ns).stat().st_ino
    except OSError:
        return None


def pids_in_namespace(ns: str) -> list[int]:
    """PIDs of every process whose network namespace is ``ns`` (what ``ip netns pids`` prints)."""
    inode = ns_inode(ns)
    if inode is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "ns" / "net").stat().st_ino == inode:
                found.append(int(entry.name))
        except OSError:
            continue  # exited meanwhile, or a kernel thread without a readable ns link
    return found


def kill_namespace_processes(ns: str, sig: int = signal.SIGKILL) -> list[int]:
    """Signal every process still inside ``ns``; returns the PIDs signalled.

    The PID is pinned with a pidfd and its namespace re-checked through that pidfd's /proc entry,
    so a PID recycled between the scan and the kill can never be hit.
    """
    inode = ns_inode(ns)
    if inode is None:
        return []
    hit = []
    for pid in pids_in_namespace(ns):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino != inode:
                continue
            signal.pidfd_send_signal(fd, sig)
            hit.append(pid)
        except OSError:
            continue
        finally:
            os.close(fd)
    return hit


def delete_namespace(ns: str) -> None:
    if ns_inode(ns) is not None:
        run(["ip", "netns", "delete", ns], check=False)


@dataclass(frozen=True)
class Attachment:
    """One namespace plugged into the segment: ``eth0`` inside it, ``port`` on the bridge."""

    ns: str
    port: str
    ifname: str
    mac: str
    ipv4: ipaddress.IPv4Interface
    ipv6: ipaddress.IPv6Interface


@dataclass
class Segment:
    """One Ethernet segment: a bridge in its own namespace, plus the namespaces plugged into it.

    The segment owns every namespace it creates; :meth:`close` kills whatever still runs inside
    them and deletes them, and is safe to call more than once or after a partial setup.
    """

    prefix: str
    namespaces: list[str] = field(default_factory=list)
    attachments: dict[str, Attachment] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} must look like vk1a2b3c")

    @property
    def ns(self) -> str:
        return f"{self.prefix}-seg"

    def __enter__(self) -> Segment:
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self) -> None:
        self._add_namespace(self.ns)
        # The segment is pure L2: no addresses, no IPv6 autoconf chatter on the ports.
        self._sysctls(self.ns, {"net.ipv6.conf.all.disable_ipv6": "1"})
        self._sysctls(self.ns, {"net.ipv6.conf.default.disable_ipv6": "1"})
        # STP off and no forward delay: ports forward the instant they are up, as on a switch
        # with portfast. Multicast snooping off: VRRP adverts (224.0.0.18, ff02::12) must reach
        # every port whether or not an IGMP/MLD querier exists.
        run(
            [
                *("ip", "-n", self.ns, "link", "add", BRIDGE, "type", "bridge"),
                *("stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"),
            ]
        )
        run(["ip", "-n", self.ns, "link", "set", BRIDGE, "up"])
        run(["ip", "-n", self.ns, "link", "set", "lo", "up"])

    def attach(
        self,
        role: str,
        ipv4: ipaddress.IPv4Interface,
        ipv6: ipaddress.IPv6Interface,
        *,
        ifname: str = "eth0",
    ) -> Attachment:
        """Create namespace ``<prefix>-<role>`` with ``ifname`` plugged into the bridge."""
        ns = f"{self.prefix}-{role}"
        port = f"p-{role}"
        self._add_namespace(ns)
        # DAD off before the interface exists, so that new addresses (ours and the VIPs the
        # agents add) are usable at once instead of "tentative" for a second or more.
        # keep_addr_on_down: a link_down() test must not silently delete the node's IPv6 address.
        self._sysctls(
            ns,
            {
                "net.ipv6.conf.all.accept_dad": "0",
                "net.ipv6.conf.default.accept_dad": "0",
                "net.ipv6.conf.all.keep_addr_on_down": "1",
                "net.ipv6.conf.default.keep_addr_on_down": "1",
                "net.ipv6.conf.default.accept_ra": "0",
            },
        )
        run(
            [
                *("ip", "-n", self.ns, "link", "add", port, "type", "veth"),
                *("peer", "name", ifname, "netns", ns),
            ]
        )
        run(["ip", "-n", self.ns, "link", "set", port, "master", BRIDGE, "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "addr", "add", str(ipv4), "dev", ifname])
        run(["ip", "-n", ns, "addr", "add", str(ipv6), "dev", ifname, "nodad"])
        run(["ip", "-n", ns, "link", "set", ifname, "up"])
        mac = read_mac(ns, ifname)
        attachment = Attachment(ns=ns, port=port, ifname=ifname, mac=mac, ipv4=ipv4, ipv6=ipv6)
        self.attachments[ns] = attachment
        return attachment

    def set_port(self, ns: str, *, up: bool) -> None:
        """Carrier off/on for ``ns``: its eth0 sees NO-CARRIER, as with a pulled cable."""
        port = self.attachments[ns].port
        run(["ip", "-n", self.ns, "link", "set", port, "up" if up else "down"])

    def set_bridged(self, ns: str, *, bridged: bool) -> None:
        """Silently cut ``ns`` off the bridge (or plug it back) while its carrier stays up."""
        port = self.attachments[ns].port
        if bridged:
            run(["ip", "-n", self.ns, "link", "set", port, "master", BRIDGE])
        else:
            run(["ip", "-n", self.ns, "link", "set", port, "nomaster"])

    def close(self) -> None:
        # Processes first: a namespace whose name is deleted lives on while anything runs in it.
        for ns in reversed(self.namespaces):
            kill_namespace_processes(ns)
        for ns in reversed(self.namespaces):
            delete_namespace(ns)
        self.namespaces.clear()
        self.attachments.clear()

    def _add_namespace(self, ns: str) -> None:
        if not NS_NAME_RE.match(ns) or not ns.startswith(self.prefix + "-"):
            raise ValueError(f"namespace name {ns!r} does not belong to lab {self.prefix}")
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)

    @staticmethod
    def _sysctls(ns: str, values: dict[str, str]) -> None:
        argv = ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())]
        run(ns_argv(ns, argv))


def read_mac(ns: str, ifname: str) -> str:
    out = run(["ip", "-n", ns, "-o", "link", "show", "dev", ifname]).stdout
    match = re.search(r"link/ether ([0-9a-f:]{17})", out)
    if not match:
        raise NetnsError(f"no MAC address on {ifname} in {ns}: {out.strip()}")
    return match.group(1)


def interface_addresses(
    ns: str,
) -> list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    """(ifname, address/prefix) for every address in ``ns``, as ``ip -o addr`` reports them."""
    done = run(["ip", "-n", ns, "-o", "addr", "show"], check=False)
    if done.returncode != 0:
        return []
    return parse_ip_addr_lines(done.stdout)


def parse_ip_addr_lines(
    text: str,
) -> list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    found: list[tuple[str, ipaddress.IPv4Interface | ipaddress.IPv6Interface]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] in ("inet", "inet6"):
            with contextlib.suppress(ValueError):
                found.append((parts[1].split("@")[0], ipaddress.ip_interface(parts[3])))
    return found
