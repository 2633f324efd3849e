"""The whole product on one machine: a VirtualIP applied to the API ends up as an address on a node
that a client reaches, follows failures, cordons and an API outage, and goes away when deleted.

One story, each step a bounded wait whose failure says what was awaited and what was seen. The
world (nodes, client, management network, API emulator, operator, agents) is built by the
``system`` fixture (conftest.py, system_env.py). Advert interval 0.1 s (VRRPv3): a takeover takes
about 0.4 s, so the steps' bounds are dominated by the agents' status pacing (one write per
second at most) and the operator's reaction, not by VRRP.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from system_env import System, expect

from support.operator_env import condition, events, vip_status, virtual_ip

pytestmark = [pytest.mark.system, pytest.mark.netns, pytest.mark.timeout(150)]

VIP = "192.0.2.100/24"
VIP_IP = VIP.split("/", 1)[0]
INSTANCE = "default-web"
NODES = ("n1", "n2", "n3")
#: Bounds (s). Start: three agents, the operator's first pass, a cache write, an election.
SETTLE = 25.0
#: A takeover (Master_Down_Interval ~0.4 s) plus the new master's gratuitous ARP.
TAKEOVER = 5.0
#: The client after a crash: the killed agent's node keeps the address (and answers ARP for it)
#: until the agent restarts, and if the client's neighbour entry was refreshed less than
#: ``locktime`` (1 s) before the new master's first gratuitous ARP burst, only its second burst
#: (garp.repeatDelay, 5 s) moves the client over.
REACH_AFTER_CRASH = 9.0
#: How long a new MASTER must stay the only one to count (5 advert intervals).
STABLE = 0.5
#: An agent's status write (paced at most 1/s) and the operator's pass on it.
REPORTED = 10.0
#: The agents' retries after an API outage back off (0.5 s doubling) and time out (5-10 s).
CATCH_UP = 25.0


class Story:
    """Reads of the world, with what each saw last for failure messages."""

    def __init__(self, system: System) -> None:
        self.s = system
        self.started = self.mark = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def step(self, what: str) -> None:
        """Record how long the step that just ended took (printed at the end: -s or -rP)."""
        now = time.monotonic()
        self.steps.append((what, now - self.mark))
        self.mark = now

    def timings(self) -> str:
        lines = [f"{seconds:6.2f} s  {what}" for what, seconds in self.steps]
        return "\n".join([*lines, f"{time.monotonic() - self.started:6.2f} s  in all"])

    def reported_state(self, node: str) -> str | None:
        """The state of the instance in ``node``'s NodeAssignment status (what its agent wrote)."""
        na = self.s.kapi.get("NodeAssignment", node, namespace="") or {}
        for item in (na.get("status") or {}).get("instances", ()):
            if item.get("name") == INSTANCE:
                return str(item.get("state"))
        return None

    def api_reachable_from(self, node: str) -> bool:
        """Whether ``node``'s namespace gets an HTTP answer from the API's node address."""
        url = f"{self.s.kapi.node_url}/version"
        argv = ["curl", "--silent", "--output", "/dev/null", "--max-time", "0.5", url]
        done = self.s.lab.exec(node, argv, timeout=5, check=False)
        return bool(done.returncode == 0)

    def holders(self) -> list[str]:
        return sorted(self.s.lab.who_has(VIP))

    def answer(self) -> str | None:
        answer: str | None = self.s.lab.http_get(VIP_IP, timeout=0.5)
        return answer

    def status(self) -> dict[str, Any]:
        return vip_status(self.s.kapi)

    def seen(self) -> str:
        status = self.status()
        ready = condition(status, "Ready")
        return (
            f"VIP on {self.holders()}, agents {self.s.agents.states(INSTANCE)}, "
            f"status holder={status.get('holder')!r} state={status.get('state')!r} "
            f"Ready={ready.get('status')}/{ready.get('reason')}"
        )

    def lands_on(self, node: str, timeout: float, *, stale: tuple[str, ...] = ()) -> None:
        """``node`` is MASTER and has the VIP; no other node has it, except ``stale`` ones (whose
        agent was killed: a crash leaves the address behind)."""
        live = [n for n in NODES if n not in stale]

        def landed() -> bool:
            self.s.agents.check_alive(*live)
            others = [n for n in self.holders() if n != node and n not in stale]
            return (
                self.s.agents.state(node, INSTANCE) == "MASTER"
                and node in self.holders()
                and not others
            )

        expect(f"{VIP} held by {node} alone", landed, timeout, self.seen)

    def reached(self, node: str, timeout: float = TAKEOVER) -> None:
        last: list[str | None] = [None]

        def answered() -> bool:
            last[0] = self.answer()
            return last[0] == node

        expect(f"the client's GET http://{VIP_IP}/ answered by {node}", answered, timeout,
               lambda: f"answer {last[0]!r}; {self.seen()}")  # fmt: skip

    def reported(self, node: str, timeout: float = REPORTED) -> None:
        def said() -> bool:
            status = self.status()
            ready = condition(status, "Ready")
            return status.get("holder") == node and ready.get("status") == "True"

        expect(f"VirtualIP status holder={node} Ready=True", said, timeout, self.seen)

    def holder_changed(self, old: str, new: str, timeout: float = REPORTED) -> None:
        def event() -> list[dict[str, Any]]:
            return [
                e
                for e in events(self.s.kapi, "HolderChanged")
                if e["message"].startswith(f"{old} → {new}")
            ]

        def messages() -> str:
            return str([e["message"] for e in events(self.s.kapi, "HolderChanged")])

        expect(f"a HolderChanged Event {old} → {new}", event, timeout, messages)

    def new_master(self, excluded: str, timeout: float = TAKEOVER) -> str:
        """The one node other than ``excluded`` that is MASTER and stays so for STABLE s.

        Backups whose priorities differ by one (the operator's spread: 100, 99) have
        Master_Down_Intervals 0.4 ms apart at 0.1 s adverts, so after a crash both often become
        MASTER and the lower one yields milliseconds later: only a lasting master counts.
        """
        seen: dict[str, float] = {}

        def found() -> str | None:
            masters = [
                n for n in NODES if n != excluded and self.s.agents.state(n, INSTANCE) == "MASTER"
            ]
            if len(masters) != 1:
                seen.clear()
                return None
            first = seen.setdefault(masters[0], time.monotonic())
            if len(seen) > 1:  # another node than last time
                seen.clear()
                return None
            return masters[0] if time.monotonic() - first >= STABLE else None

        master: str = expect(f"one lasting MASTER other than {excluded}", found, timeout, self.seen)
        return master


@pytest.mark.parametrize("mode", ["unicast", "multicast"])
def test_virtual_ip_lifecycle_across_failures_cordon_and_api_outage(
    system: System, mode: str
) -> None:
    kapi, agents, story = system.kapi, system.agents, Story(system)
    # Unicast: each node's peers are the other Nodes' InternalIPs, as the operator renders them.
    vrrp = {"version": 3, "advertInterval": 0.1, "mode": mode}
    kapi.create(virtual_ip("web", VIP, priorities={"preferred": ["n1"]}, vrrp=vrrp))

    # Applied: the VIP lands on the preferred node, the client reaches it, the status says so.
    story.lands_on("n1", SETTLE)
    story.reached("n1")
    story.step("applied: VIP on n1, client reaches n1")
    story.reported("n1")
    story.step("status: holder n1, Ready")

    # n1's agent crashes: another node takes over; status and Event follow.
    agents.kill("n1")
    first = story.new_master("n1")
    story.lands_on(first, TAKEOVER, stale=("n1",))
    story.reached(first, REACH_AFTER_CRASH)
    story.step(f"n1's agent SIGKILLed: client reaches {first}")
    story.reported(first)
    story.holder_changed("n1", first)
    story.step(f"status and HolderChanged n1 → {first}")

    # n1's agent comes back: it clears the address the crash left and, preferred, takes over.
    agents.start("n1")
    story.lands_on("n1", SETTLE)
    story.reached("n1")
    story.reported("n1")
    story.step("n1's agent restarted: back on n1, status too")

    # Cordoning the holder demotes it below every other node: the VIP moves.
    kapi.patch("Node", "n1", {"spec": {"unschedulable": True}}, namespace="")
    second = story.new_master("n1", REPORTED)
    story.lands_on(second, TAKEOVER)
    story.reached(second)
    story.step(f"n1 cordoned: VIP moved to {second}")
    story.reported(second)
    story.step(f"status: holder {second}")

    # The nodes lose the API: nothing moves, and failover still works on cached assignments.
    system.mgmt.cut()
    expect("the VIP to stay put for 1 s without the API", lambda: _held(story, second, 1.0),
           3.0, story.seen)  # fmt: skip
    agents.kill(second)
    third = story.new_master(second)
    assert third != "n1", f"the cordoned n1 took over: {story.seen()}"
    story.lands_on(third, TAKEOVER, stale=(second,))
    story.reached(third, REACH_AFTER_CRASH)
    # Long enough for the takeover's status write (paced at 1/s) to have been due, and more.
    expect(f"no report of {third}'s takeover to reach the API for 2 s",
           lambda: _unreported(story, third, 2.0), 4.0, story.seen)  # fmt: skip
    assert not story.api_reachable_from(third), "the cut did not cut the API off"
    story.step(f"API cut off: VIP stayed; {second}'s agent SIGKILLed, {third} took over")

    # The API is back: the status catches up with what happened meanwhile.
    system.mgmt.restore()
    story.reported(third, CATCH_UP)
    story.holder_changed(second, third, CATCH_UP)
    story.step(f"API back: status caught up (holder {third}, HolderChanged)")
    agents.start(second)  # it clears its stale address (and preempts back: it ranks higher)
    story.lands_on(second, SETTLE)
    story.reported(second)
    story.step(f"{second}'s agent restarted: back on {second}")

    # Deleted: every node resigns, the operator releases its finalizer, the object is gone.
    kapi.delete("VirtualIP", "web")
    expect("the VIP gone from every node", lambda: story.holders() == [], REPORTED, story.seen)
    expect("the VirtualIP gone (finalizer released)",
           lambda: kapi.get("VirtualIP", "web") is None, REPORTED,
           lambda: str((kapi.get("VirtualIP", "web") or {}).get("metadata")))  # fmt: skip
    assert story.answer() is None
    story.step("deleted: VIP gone everywhere, object gone")
    print(story.timings())


def _unreported(story: Story, node: str, seconds: float) -> bool:
    """True if for ``seconds`` neither the VirtualIP status nor ``node``'s NodeAssignment shows
    ``node`` as MASTER (with the API cut off, nothing of the takeover may get through)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if story.status().get("holder") == node or story.reported_state(node) == "MASTER":
            return False
        time.sleep(0.1)
    return True


def _held(story: Story, node: str, seconds: float) -> bool:
    """True once ``node`` has held the VIP alone and answered for ``seconds``; False at once if
    it stops."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if story.holders() != [node] or story.s.agents.state(node, INSTANCE) != "MASTER":
            return False
        time.sleep(0.1)
    return story.answer() == node
