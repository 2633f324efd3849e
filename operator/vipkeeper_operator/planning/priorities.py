"""Each candidate node's VRRP priority for one VirtualIP.

Ranked nodes get a ladder: the first ``TOP_PRIORITY`` (150), the next 100 (keepalived's usual
150/100 pair), then down in steps as wide as the number of ranks allows (at most 25: 75, 50, 25
for five nodes). Wide steps matter: a backup's Master_Down timer is 3 intervals plus a skew of
(256 - priority)/256 of one, so backups one priority apart time out within a fraction of a
millisecond of each other and both become MASTER for a moment; 25 apart, the better one's advert
is on the wire ~10 % of an interval before the other's timer fires. The ladder never goes below
``MIN_PRIORITY + 1``,
which is left to demoted nodes so that any schedulable node beats a draining one. Floating VIPs
never get 255: that is the address owner's (the models refuse it without ``addressOwner``).

Nodes named in ``priorities.explicit`` get exactly that priority; ``priorities.preferred`` ranks
nodes by its order (position in the list, so an absent node does not shift the others); the rest
follow below every preferred position in a *spread* order: rendezvous hashing of (VIP, node). Each
node comes first for about 1/N of the VIPs, every operator replica computes the same order, and
adding or removing a node only moves the VIPs that node wins or held.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vipkeeper_api.resources import MIN_PRIORITY, TOP_PRIORITY, Priorities
from vipkeeper_operator.planning.eligibility import Eligibility, Verdict

#: The second rank's priority (keepalived's customary backup priority); later ranks step down by 1.
SECOND_PRIORITY = 100
#: Demoted (cordoned) nodes: below every ranked node.
DEMOTED_PRIORITY = MIN_PRIORITY
FLOOR_PRIORITY = MIN_PRIORITY + 1


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node that runs the VirtualIP's instance, and at which priority."""

    node: str
    priority: int
    eligibility: Eligibility
    reason: str


#: The widest step between backups below the second rank.
MAX_STEP = 25


def ladder(rank: int, ranks: int = 2) -> int:
    """The priority of the node ranked ``rank`` (0 = most preferred) of ``ranks``."""
    if rank == 0:
        return TOP_PRIORITY
    room = SECOND_PRIORITY - FLOOR_PRIORITY
    step = max(1, min(MAX_STEP, room // max(1, ranks - 2)))
    return max(SECOND_PRIORITY - (rank - 1) * step, FLOOR_PRIORITY)


def spread_weight(vip_key: str, node: str) -> bytes:
    """The rendezvous score of ``node`` for ``vip_key``: a stable hash (not Python's ``hash``,
    which is salted per process, so replicas and restarts would disagree)."""
    return hashlib.blake2b(f"{vip_key}\x00{node}".encode(), digest_size=8).digest()


def spread_order(vip_key: str, nodes: Iterable[str]) -> list[str]:
    """``nodes`` ordered for ``vip_key``: highest score first, ties (never in practice) by name."""
    return sorted(nodes, key=lambda n: (_negate(spread_weight(vip_key, n)), n))


def _negate(score: bytes) -> int:
    return -int.from_bytes(score, "big")


def assign(
    vip_key: str, priorities: Priorities, verdicts: Mapping[str, Verdict]
) -> tuple[Candidate, ...]:
    """The candidates (nodes that carry the instance) for one VirtualIP, highest priority first;
    ineligible nodes are left out."""
    out: list[Candidate] = []
    eligible = [v.node for v in verdicts.values() if v.eligibility == Eligibility.ELIGIBLE]
    position = {node: index for index, node in enumerate(priorities.preferred)}
    rest = [n for n in eligible if n not in priorities.explicit and n not in position]
    spread_rank = {node: rank for rank, node in enumerate(spread_order(vip_key, rest))}
    offset = len(priorities.preferred)
    ranks = offset + len(rest)
    for node in eligible:
        why = verdicts[node].reason
        if node in priorities.explicit:
            prio, how = priorities.explicit[node], "priorities.explicit"
        elif node in position:
            prio, how = ladder(position[node], ranks), f"priorities.preferred[{position[node]}]"
        else:
            rank = spread_rank[node]
            prio, how = ladder(offset + rank, ranks), f"spread rank {rank + 1} of {len(rest)}"
        out.append(Candidate(node, prio, Eligibility.ELIGIBLE, f"{how}; {why}"))
    for v in verdicts.values():
        if v.eligibility == Eligibility.DEMOTED:
            out.append(Candidate(v.node, DEMOTED_PRIORITY, Eligibility.DEMOTED, v.reason))
    out.sort(key=lambda c: (-c.priority, c.node))
    return tuple(out)
