"""Sync groups (keepalived vrrp_sync_group): instances that must be MASTER on the same node. Pure.

Faults are shared by ``tracking.share_group_faults``; this module handles elections:
- a member may take over only when every other member would too (its Master_Down expired as
  well, or it is MASTER already); otherwise it waits as BACKUP, because a group split across
  two nodes is worse than a takeover delayed by a fraction of an advert interval;
- when one member becomes MASTER the others follow, and when one drops to BACKUP so do they.
"""

from __future__ import annotations

from collections.abc import Sequence

from vipkeeper_agent.vrrp.fsm import Demote, Event, Promote, Router, State, Transition


def wants_master(router: Router, now: float) -> bool:
    if router.state == State.MASTER:
        return True
    if router.state != State.BACKUP or router.maintenance:
        return False
    deadline = router.master_down_deadline
    return router.awaiting_group or (deadline is not None and deadline <= now)


def may_take_over(others: Sequence[Router], now: float) -> bool:
    """Whether a member whose Master_Down expired may become MASTER, given the other members."""
    return all(wants_master(other, now) for other in others)


def followers(
    member: str, transition: Transition, others: Sequence[tuple[str, Router]]
) -> list[tuple[str, Event]]:
    """The events that make the other members follow ``member``'s transition."""
    if transition.to_state == State.MASTER:
        why = f"sync group: {member} became MASTER ({transition.reason})"
        return [(name, Promote(why)) for name, r in others if r.state == State.BACKUP]
    if transition.from_state == State.MASTER and transition.to_state == State.BACKUP:
        why = f"sync group: {member} became BACKUP ({transition.reason})"
        return [(name, Demote(why)) for name, r in others if r.state == State.MASTER]
    return []
