"""The `make run` story: election, a client served through the VIP, a master crash, takeover
figures measured from the client's side, the crashed node's return and its preemption.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from ipaddress import ip_interface
from typing import Any, Literal, TextIO

from vipkeeper_lab import netns
from vipkeeper_lab.agents import AgentHandle
from vipkeeper_lab.measure import Takeover, fmt_seconds
from vipkeeper_lab.nodes import Lab, LabError, Node
from vipkeeper_lab.probe import Probes
from vipkeeper_lab.procs import tail

AgentKind = Literal["vipkeeper", "keepalived"]
FaultKind = Literal["crash", "kill"]

#: Settle time after a takeover before reading the traces, so late probe lines are in.
SETTLE = 0.3
#: Allowance on top of VRRP's own bounds for process start-up and slow CI machines.
SLACK = 5.0


@dataclass(frozen=True)
class DemoOptions:
    nodes: int = 3
    agent: AgentKind = "vipkeeper"
    version: int = 3
    interval: Decimal = Decimal(1)
    fault: FaultKind = "crash"
    keep_going: bool = False
    keep_logs: bool = False
    vip: str = "192.0.2.100/24"
    vrid: int = 51


def priorities(count: int) -> list[int]:
    """150/100/50 for the classic three nodes, then 49, 48, ... for any extra ones."""
    return [*(150, 100, 50), *range(49, 49 - max(count - 3, 0), -1)][:count]


def demo_config(opts: DemoOptions, priority: int) -> dict[str, Any]:
    instance: dict[str, Any] = {
        "name": "web",
        "vrid": opts.vrid,
        "interface": "eth0",
        "version": opts.version,
        "priority": priority,
        "advertInterval": opts.interval,
        "preempt": True,
        "preemptDelay": 0,
        "addresses": [opts.vip],
    }
    return {"instances": [instance]}


def master_down_interval(interval: Decimal, priority: int, version: int) -> float:
    """RFC 3768/5798 Master_Down_Interval: 3 adverts plus a priority-dependent skew."""
    # v2 skew is in whole seconds; v3 scales it by the advert interval.
    scale = 1.0 if version == 2 else float(interval)
    skew = (256 - priority) * scale / 256
    return 3 * float(interval) + skew


class StoryFailedError(Exception):
    pass


class Demo:
    def __init__(self, opts: DemoOptions, out: TextIO = sys.stdout) -> None:
        self.opts = opts
        self.out = out
        self.started = time.monotonic()
        self.failures: list[str] = []
        self.vip_ip = str(ip_interface(opts.vip).ip)

    # ----- output ----------------------------------------------------------------------------

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:5.1f}s] {message}", file=self.out, flush=True)

    def detail(self, label: str, value: str) -> None:
        print(f"         {label:<34} {value}", file=self.out, flush=True)

    def fail(self, step: str, error: Exception | str, agents: list[AgentHandle]) -> None:
        self.failures.append(f"{step}: {error}")
        self.say(f"FAILED {step}: {error}")
        for agent in agents:
            text = tail(agent.proc.log_text(), 8)
            if text:
                print(f"         --- {agent.node} {agent.kind} log (last lines) ---", file=self.out)
                print("\n".join(f"         {line}" for line in text.splitlines()), file=self.out)
        if not self.opts.keep_going:
            raise StoryFailedError(step)

    # ----- the story -------------------------------------------------------------------------

    def run(self) -> int:
        o = self.opts
        interval = f"{o.interval.normalize():f} s"
        self.say(
            f"vipkeeper-lab demo: {o.nodes} nodes + client, agent {o.agent}, VRRPv{o.version}, "
            f"advert interval {interval}, VIP {o.vip}, fault: {o.fault}"
        )
        prefix = ""
        try:
            with Lab(nodes=o.nodes, keep_workdir=o.keep_logs) as lab:
                prefix = lab.prefix
                try:
                    self.story(lab)
                except StoryFailedError:
                    pass  # each failed step has already been reported
                except (LabError, netns.NetnsError, OSError, ValueError) as exc:
                    self.failures.append(f"lab: {exc}")
                    self.say(f"FAILED: {exc}")
                if o.keep_logs:
                    self.say(f"logs kept in {lab.workdir}")
        except KeyboardInterrupt:
            self.say("interrupted: everything stopped and removed")
            return 130
        except SystemExit:
            self.say("terminated: everything stopped and removed")
            raise
        left = [ns for ns in netns.list_namespaces() if prefix and ns.startswith(prefix + "-")]
        self.say(
            "cleaned up: processes stopped, namespaces removed"
            if not left
            else f"WARNING: namespaces left behind: {left}"
        )
        if self.failures:
            self.say(f"RESULT: FAILED ({'; '.join(self.failures)})")
            return 1
        self.say("RESULT: OK")
        return 0

    def start_agent(self, lab: Lab, node: Node, priority: int) -> AgentHandle:
        config = demo_config(self.opts, priority)
        if self.opts.agent == "keepalived":
            return lab.start_keepalived(node, config)
        return lab.start_vipkeeper(node, config)

    def story(self, lab: Lab) -> None:
        o = self.opts
        hosts = ", ".join(f"{n.name} {n.ipv4.ip}" for n in lab.hosts)
        self.say(f"lab {lab.prefix} up: {hosts}; bridge in {lab.segment.ns}")
        lab.start_http_servers()
        self.say(f"web servers up on {' '.join(n.name for n in lab.nodes)} (port 80)")

        prios = dict(zip((n.name for n in lab.nodes), priorities(o.nodes), strict=True))
        agents = [self.start_agent(lab, n, prios[n.name]) for n in lab.nodes]
        self.say("agents started: " + ", ".join(f"{a.node} prio {prios[a.node]}" for a in agents))

        bound = master_down_interval(o.interval, max(prios.values()), o.version)
        try:
            master = lab.wait_master(agents, vip=o.vip, timeout=bound + float(o.interval) + SLACK)
        except LabError as exc:
            self.fail("election", exc, agents)
            raise StoryFailedError("election") from None  # nothing else can run without a master
        self.say(f"master: {master.node} ({self._states(lab, agents)})")

        answer = lab.http_get(self.vip_ip)
        self.say(f"client: curl http://{self.vip_ip}/ -> {answer}")
        if answer != master.node:
            self.fail("client request", f"expected {master.node}, got {answer}", agents)

        probes = lab.start_probes(o.vip)
        if probes.wait_http(SLACK) is None:
            self.fail("probes", "the HTTP prober got no answer through the VIP", agents)
        time.sleep(0.5)  # a baseline of answers from the old master before the fault

        old = lab.node(master.node)
        index = agents.index(master)
        if o.fault == "crash":
            fault_at = lab.crash(master)
            what = "kill -9 of the agent's process group + link down"
        else:
            fault_at = lab.kill(master)
            what = "kill -9 of the agent's process group (node stays on the segment)"
        self.say(f"FAULT on {old.name}: {what}")

        new = self.failover(lab, agents, old, fault_at, probes, prios)

        if o.fault == "crash":
            lab.reboot(old)
            comeback = "link up, stale addresses gone as after a reboot"
        else:
            comeback = "same node, stale VIP left in place"
        restart_at = time.time()
        agents[index] = lab.restart(master)
        self.say(f"{old.name} back ({comeback}); agent restarted (pid {agents[index].proc.pid})")
        self.preemption(lab, agents, old, new, restart_at, probes)
        probes.stop()

    def failover(
        self,
        lab: Lab,
        agents: list[AgentHandle],
        old: Node,
        fault_at: float,
        probes: Probes,
        prios: dict[str, int],
    ) -> Node | None:
        o = self.opts
        runner_up = max((p, n) for n, p in prios.items() if n != old.name)
        bound = master_down_interval(o.interval, runner_up[0], o.version)
        try:
            handle = lab.wait_master(agents, vip=o.vip, timeout=bound + SLACK, exclude=[old.name])
        except LabError as exc:
            self.fail("failover", exc, agents)
            return None
        new = lab.node(handle.node)
        self.say(f"new master: {new.name} ({self._states(lab, agents)})")
        probes.wait_http(SLACK, node=new.name, after=fault_at)
        time.sleep(SETTLE)
        result = probes.takeover(
            fault_at, old_mac=old.mac, new_mac=new.mac, old_node=old.name, until=time.time()
        )
        # The backup's timer runs from the last advert it got, up to one interval before the fault.
        self.detail(
            "expected (Master_Down_Interval):",
            f"{fmt_seconds(bound - float(o.interval))} to {fmt_seconds(bound)} after the fault",
        )
        self._figures(result, new.name)
        if result.arp_at is None:
            self.fail("failover", f"the client never got an ARP reply from {new.name}", agents)
        elif result.http_at is None:
            self.fail("failover", f"the client never got an HTTP answer from {new.name}", agents)
        if o.fault == "kill" and old.name in lab.who_has(o.vip):
            self.detail("note:", f"{old.name} still has {self.vip_ip} (kill -9 leaves the VIP)")
        return new

    def preemption(
        self,
        lab: Lab,
        agents: list[AgentHandle],
        old: Node,
        new: Node | None,
        restart_at: float,
        probes: Probes,
    ) -> None:
        o = self.opts
        bound = master_down_interval(o.interval, 150, o.version)
        try:
            lab.wait_master(agents, vip=o.vip, timeout=bound + 2 * SLACK, expect=old)
        except LabError as exc:
            self.fail("preemption", exc, agents)
            return
        took = time.time() - restart_at
        self.say(f"preemption: {old.name} is master again, {took:.2f} s after its restart")
        self.detail("states:", self._states(lab, agents))
        probes.wait_http(SLACK, node=old.name, after=restart_at)
        time.sleep(SETTLE)
        result = probes.takeover(
            restart_at,
            old_mac=new.mac if new else None,
            new_mac=old.mac,
            old_node=new.name if new else None,
            until=time.time(),
        )
        self._figures(result, old.name)
        answer = lab.http_get(self.vip_ip)
        self.say(f"client: curl http://{self.vip_ip}/ -> {answer}")
        if answer != old.name:
            self.fail("preemption", f"the VIP answers as {answer}, not {old.name}", agents)

    def _figures(self, result: Takeover, node: str) -> None:
        self.detail(f"first ARP reply from {node}:", fmt_seconds(result.arp_takeover))
        self.detail(f"first gratuitous ARP from {node}:", fmt_seconds(result.garp_delay))
        self.detail(f"first HTTP answer from {node}:", fmt_seconds(result.http_takeover))
        gap = fmt_seconds(result.gap)
        self.detail(
            "client-visible gap:",
            f"{gap} without a successful GET ({result.failed_requests} GETs failed)",
        )

    def _states(self, lab: Lab, agents: list[AgentHandle]) -> str:
        states = " ".join(f"{n}={s}" for n, s in lab.states(agents).items())
        holders = ", ".join(
            f"{n} (cut off)" if n in lab.cut_off else n for n in lab.who_has(self.opts.vip)
        )
        holders = holders or "nobody"
        return f"status: {states}; {self.vip_ip} configured on: {holders}"


def run_demo(opts: DemoOptions, out: TextIO = sys.stdout) -> int:
    return Demo(opts, out).run()
