"""The seeded fault schedule of a chaos run. Pure: no I/O, no clock, only random.Random(seed).

One frozen dataclass per fault kind, with its parameters. Nodes are named by *rank*, their
place in the base priority order (0 = the preferred master), so that a schedule does not depend
on node names and every cycle starts from the same settled state (rank 0 is master).

Durations derive from the Master_Down_Interval of the runner-up (rank 1), the backup that takes
over when the master goes: "stopped longer than Master_Down_Interval" means longer than *its*
timer. The formulas are the agent's own (vipkeeper_agent.vrrp.timers), never re-derived here.

What "the fault clears" means is per kind (``CLEARS``): from that instant the segment is whole
again, and any dual master left is the agents' doing, not the fault's.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from vipkeeper_agent.vrrp.timers import advert_interval, master_down_interval


@dataclass(frozen=True)
class Timing:
    """The protocol settings a schedule is derived from."""

    interval_cs: int
    version: int
    #: Base priorities by rank, highest first (rank 0 is the preferred master).
    priorities: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.priorities) < 2 or list(self.priorities) != sorted(
            set(self.priorities), reverse=True
        ):
            raise ValueError(f"priorities must be distinct and descending: {self.priorities}")

    @property
    def advert(self) -> float:
        return advert_interval(self.interval_cs)

    def master_down(self, priority: int) -> float:
        return master_down_interval(priority, self.interval_cs, self.version)

    @property
    def runner_up_down(self) -> float:
        """Master_Down_Interval of rank 1, the backup that takes over from rank 0."""
        return self.master_down(self.priorities[1])


@dataclass(frozen=True)
class PowerCut:
    """kill -9 of the master's process group and its link down at once; back after down_for."""

    kind: ClassVar[str] = "power_cut"
    down_for: float
    rank: int = 0


@dataclass(frozen=True)
class StopLong:
    """SIGSTOP of the master for longer than Master_Down_Interval, then SIGCONT."""

    kind: ClassVar[str] = "stop_long"
    duration: float
    rank: int = 0


@dataclass(frozen=True)
class StopShort:
    """SIGSTOP of the master for less than Master_Down_Interval - one advert, then SIGCONT: the
    backup's timer must not run out, so no takeover is expected at all."""

    kind: ClassVar[str] = "stop_short"
    duration: float
    rank: int = 0


@dataclass(frozen=True)
class LinkFlap:
    """The master's link down (carrier lost) for down_for seconds, then up."""

    kind: ClassVar[str] = "link_flap"
    down_for: float
    rank: int = 0


@dataclass(frozen=True)
class Loss:
    """Every frame crossing the bridge is dropped with probability percent/100, for duration."""

    kind: ClassVar[str] = "loss"
    percent: int
    duration: float


@dataclass(frozen=True)
class Reload:
    """The node of ``rank`` gets ``priority`` (config rewritten, SIGHUP); the base priority is
    restored the same way once the new state has settled."""

    kind: ClassVar[str] = "reload"
    rank: int
    priority: int


@dataclass(frozen=True)
class RestartBackup:
    """The agent of a backup (rank >= 1) is stopped (SIGTERM) and started again."""

    kind: ClassVar[str] = "restart_backup"
    rank: int


Fault = PowerCut | StopLong | StopShort | LinkFlap | Loss | Reload | RestartBackup
FAULT_TYPES: tuple[type[Fault], ...] = (
    PowerCut,
    StopLong,
    StopShort,
    LinkFlap,
    Loss,
    Reload,
    RestartBackup,
)
KINDS: tuple[str, ...] = tuple(t.kind for t in FAULT_TYPES)

#: The instant each kind of fault stops acting on the segment (its window is [fault, clear]).
CLEARS: dict[str, str] = {
    "power_cut": "the node is back as after a reboot: VIPs flushed, link up, agent started",
    "stop_long": "SIGCONT",
    "stop_short": "SIGCONT",
    "link_flap": "link up",
    "loss": "the nftables drop rule is deleted",
    "reload": "SIGHUP sent (the new priority applies at once); the restoring reload is a "
    "second window, cleared at its own SIGHUP",
    "restart_backup": "the new agent process is started",
}

LOSS_PERCENT = (10, 40)
LOSS_SECONDS = (1.0, 4.0)
#: Multiples of the runner-up's Master_Down_Interval.
STOP_LONG_RANGE = (1.5, 4.0)
POWER_CUT_RANGE = (1.5, 4.0)
LINK_FLAP_RANGE = (0.2, 4.0)
#: Of (Master_Down_Interval - one advert): the master always resumes before the backup's
#: timer can expire, whatever the phase of the stop against the last advert.
STOP_SHORT_RANGE = (0.2, 0.8)


def _ms(value: float) -> float:
    """Parameters in whole milliseconds: printable and exactly repeatable."""
    return round(value, 3)


def make_fault(kind: str, rng: random.Random, timing: Timing) -> Fault:
    down = timing.runner_up_down
    if kind == "power_cut":
        return PowerCut(_ms(down * rng.uniform(*POWER_CUT_RANGE)))
    if kind == "stop_long":
        return StopLong(_ms(down * rng.uniform(*STOP_LONG_RANGE)))
    if kind == "stop_short":
        return StopShort(_ms((down - timing.advert) * rng.uniform(*STOP_SHORT_RANGE)))
    if kind == "link_flap":
        return LinkFlap(_ms(down * rng.uniform(*LINK_FLAP_RANGE)))
    if kind == "loss":
        return Loss(rng.randint(*LOSS_PERCENT), _ms(rng.uniform(*LOSS_SECONDS)))
    if kind == "reload":
        rank = rng.randrange(len(timing.priorities))
        # A priority nobody else has: ties are broken by address, which the runner would have
        # to replicate to know the expected master; distinct values keep that unambiguous.
        taken = set(timing.priorities)
        choices = [p for p in range(1, 255) if p not in taken]
        return Reload(rank, rng.choice(choices))
    if kind == "restart_backup":
        return RestartBackup(rng.randrange(1, len(timing.priorities)))
    raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")


def schedule(
    seed: int, cycles: int, timing: Timing, kinds: tuple[str, ...] = KINDS
) -> tuple[Fault, ...]:
    """``cycles`` faults drawn from random.Random(seed); the same arguments, the same schedule.

    Kinds come from a shuffled bag: every run of len(kinds) consecutive cycles starting at a
    multiple of len(kinds) holds each kind once, so even a short run covers every kind, and the
    order is still random.
    """
    if cycles < 0:
        raise ValueError("cycles must be >= 0")
    unknown = set(kinds) - set(KINDS)
    if not kinds or unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    rng = random.Random(seed)
    out: list[Fault] = []
    bag: list[str] = []
    while len(out) < cycles:
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
        out.append(make_fault(bag.pop(), rng, timing))
    return tuple(out)


def priorities_after(fault: Fault, base: tuple[int, ...]) -> tuple[int, ...]:
    """Priorities by rank while the fault is in force (only a reload changes one)."""
    if isinstance(fault, Reload):
        return tuple(fault.priority if r == fault.rank else p for r, p in enumerate(base))
    return base


def expected_master(priorities: tuple[int, ...]) -> int:
    """The rank that must end up master once everything has settled: the highest priority."""
    return max(range(len(priorities)), key=lambda r: priorities[r])


def takeover_priority(fault: Fault, base: tuple[int, ...]) -> int:
    """Priority of the backup whose Master_Down_Interval bounds a no-master interval: the
    highest priority other than the faulted node's (the runner-up, for faults on no node)."""
    now = priorities_after(fault, base)
    target = getattr(fault, "rank", expected_master(now))
    return max(p for r, p in enumerate(now) if r != target)


def hold_seconds(fault: Fault) -> float:
    """How long the runner keeps the fault in force before clearing it (0: instantaneous)."""
    if isinstance(fault, PowerCut | LinkFlap):
        return fault.down_for
    if isinstance(fault, StopLong | StopShort | Loss):
        return fault.duration
    return 0.0


def describe(fault: Fault) -> str:
    params = ", ".join(f"{k}={v}" for k, v in asdict(fault).items())
    return f"{fault.kind}({params})"


def to_json(fault: Fault) -> dict[str, Any]:
    return {"kind": fault.kind, **asdict(fault)}
