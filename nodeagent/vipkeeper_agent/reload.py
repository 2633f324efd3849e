"""Which instances a new configuration keeps, reconfigures in place, replaces, starts and stops."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vipkeeper_api.models import VrrpInstance

#: Fields that define *which* virtual router this is on the wire; changing one is a new router.
_IDENTITY = (
    "vrid",
    "version",
    "interface",
    "family",
    "unicast_peers",
    "unicast_source",
    "multicast_group",
    "auth",
)


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    keep: tuple[str, ...] = ()
    reconfigure: tuple[str, ...] = ()
    replace: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()

    @property
    def changes(self) -> bool:
        return bool(self.reconfigure or self.replace or self.start or self.stop)


def _identity(inst: VrrpInstance) -> tuple[object, ...]:
    return tuple(getattr(inst, name) for name in _IDENTITY)


def plan_reload(old: Mapping[str, VrrpInstance], new: Mapping[str, VrrpInstance]) -> ReloadPlan:
    keep, reconfigure, replace = [], [], []
    for name in old.keys() & new.keys():
        if old[name] == new[name]:
            keep.append(name)
        elif _identity(old[name]) == _identity(new[name]):
            reconfigure.append(name)
        else:
            replace.append(name)
    return ReloadPlan(
        keep=tuple(sorted(keep)),
        reconfigure=tuple(sorted(reconfigure)),
        replace=tuple(sorted(replace)),
        start=tuple(sorted(new.keys() - old.keys())),
        stop=tuple(sorted(old.keys() - new.keys())),
    )
