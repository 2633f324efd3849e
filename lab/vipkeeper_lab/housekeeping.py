"""Owner records of running labs, and removal of what a SIGKILLed lab left behind.

A lab that is SIGKILLed cannot run its teardown. Each lab therefore records, before it creates
anything, which process owns it; ``vipkeeper-lab cleanup`` removes a lab only when that process
is provably gone. The records live in /run (tmpfs, like /run/netns itself), so they vanish on
reboot together with the namespaces they describe.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from vipkeeper_lab import netns

REGISTRY = Path("/run/vipkeeper-lab")


def start_ticks(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks since boot; with the PID it names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; split after the ")" since the command name may contain spaces.
    return stat.rsplit(")", 1)[1].split()[19]


def register(prefix: str, pid: int, workdir: Path, *, keep_workdir: bool) -> None:
    REGISTRY.mkdir(mode=0o755, parents=True, exist_ok=True)
    record = {
        "pid": pid,
        "ticks": start_ticks(pid),
        "workdir": str(workdir),
        "keepWorkdir": keep_workdir,
    }
    (REGISTRY / f"{prefix}.json").write_text(json.dumps(record) + "\n")


def unregister(prefix: str) -> None:
    (REGISTRY / f"{prefix}.json").unlink(missing_ok=True)


@dataclass(frozen=True)
class StaleLab:
    prefix: str
    namespaces: tuple[str, ...]
    workdir: Path | None
    #: No owner record at all: maybe a lab from an older version, maybe not ours.
    unowned: bool


def _record(prefix: str) -> dict[str, object] | None:
    try:
        record = json.loads((REGISTRY / f"{prefix}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _owner_alive(record: dict[str, object]) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    # Same PID *and* start time: a recycled PID must not keep a dead lab "alive".
    return start_ticks(pid) == record.get("ticks")


def find_stale_labs() -> list[StaleLab]:
    """Labs whose owner is gone, plus lab-shaped namespaces nobody has a record of."""
    by_prefix: dict[str, list[str]] = {}
    for ns in netns.list_namespaces():
        match = netns.NS_NAME_RE.match(ns)
        if match:
            by_prefix.setdefault(match.group(1), []).append(ns)
    if REGISTRY.is_dir():
        for path in REGISTRY.glob("vk*.json"):
            if netns.PREFIX_RE.match(path.stem):
                by_prefix.setdefault(path.stem, [])
    stale = []
    for prefix, namespaces in sorted(by_prefix.items()):
        record = _record(prefix)
        if record is not None and _owner_alive(record):
            continue
        workdir = None
        if record is not None and not record.get("keepWorkdir"):
            workdir = Path(str(record.get("workdir")))
        stale.append(StaleLab(prefix, tuple(namespaces), workdir, unowned=record is None))
    return stale


def remove_stale_lab(lab: StaleLab) -> None:
    for ns in lab.namespaces:
        netns.kill_namespace_processes(ns)
    for ns in lab.namespaces:
        netns.delete_namespace(ns)
    if lab.workdir is not None and lab.workdir.name.startswith(f"vipkeeper-lab-{lab.prefix}-"):
        shutil.rmtree(lab.workdir, ignore_errors=True)
    unregister(lab.prefix)
