"""Processes started by the lab, each stopped through the PID the lab got when starting it."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

STOP_TIMEOUT = 3.0
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37


class Proc:
    """A process started under ``ip netns exec`` in its own process group.

    Its own group keeps the terminal's Ctrl-C away from it (the lab decides the order in which
    things stop) and lets :meth:`kill` take down a daemon together with the children it forked,
    as keepalived does, which is what a real crash looks like.
    """

    def __init__(self, popen: subprocess.Popen[bytes], name: str, log_path: Path) -> None:
        self.popen = popen
        self.name = name
        self.log_path = log_path
        self.started_at = time.time()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL, *, group: bool = True) -> None:
        """Send ``sig`` to the process (and by default its whole process group).

        The group is only signalled while the leader is unreaped: until then its PID, and hence
        the group ID, cannot have been reused by an unrelated process.
        """
        if self.popen.poll() is not None:
            return
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> int | None:
        """Exit status, or None if still running after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL to the group if it has not exited within ``timeout`` seconds."""
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM, group=False)
            if self.wait(timeout) is None:
                self.kill(signal.SIGKILL, group=True)
                self.wait(STOP_TIMEOUT)
        return self.popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        state = "running" if self.alive() else f"exited {self.returncode}"
        return f"<Proc {self.name} pid={self.pid} {state}>"


def spawn(argv: Sequence[str], name: str, log_path: Path) -> Proc:
    """Start ``argv`` with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            close_fds=True,
        )
    return Proc(popen, name, log_path)


def stop_all(procs: Sequence[Proc], timeout: float = STOP_TIMEOUT) -> None:
    """Stop several processes at once: SIGTERM to all, one shared deadline, then SIGKILL.

    Daemons such as keepalived take about a second to resign; doing it in parallel keeps a
    teardown short without cutting any graceful shutdown shorter than ``timeout``.
    """
    running = [p for p in procs if p.alive()]
    for proc in running:
        proc.kill(signal.SIGTERM, group=False)
    deadline = time.monotonic() + timeout
    for proc in running:
        proc.wait(deadline - time.monotonic())
    for proc in running:
        if proc.alive():
            proc.kill(signal.SIGKILL, group=True)
    for proc in running:
        proc.wait(STOP_TIMEOUT)


def set_subreaper(enable: bool) -> bool | None:
    """Adopt (or stop adopting) orphaned descendants; returns the previous setting.

    When a daemon's process group is SIGKILLed, its forked children are orphaned; in a container
    whose PID 1 reaps lazily they linger as zombies, and a zombie still "exists" for kill(pid, 0),
    which is how keepalived decides that a daemon from an old pid file is still running.
    None means the setting could not be read or changed.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        previous = ctypes.c_int(0)
        if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(previous), 0, 0, 0) != 0:
            return None
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, int(enable), 0, 0, 0) != 0:
            return None
        return bool(previous.value)
    except (OSError, AttributeError):
        return None


_subreaper_users = 0
_subreaper_was_set: bool | None = None


def acquire_subreaper() -> None:
    """Become a subreaper while at least one lab of this process is running.

    The flag is process-wide: the first lab sets it, the last one restores the previous value,
    so a long test session does not keep adopting unrelated orphans after its labs are gone.
    """
    global _subreaper_users, _subreaper_was_set  # noqa: PLW0603
    if _subreaper_users == 0:
        _subreaper_was_set = set_subreaper(True)
    _subreaper_users += 1


def release_subreaper() -> None:
    global _subreaper_users  # noqa: PLW0603
    _subreaper_users = max(_subreaper_users - 1, 0)
    if _subreaper_users == 0 and _subreaper_was_set is False:
        set_subreaper(False)


def _children() -> set[int]:
    found: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                found.update(int(pid) for pid in f.read().split())
        except (OSError, ValueError):
            continue
    return found


def reap_orphans(tracked: Sequence[Proc]) -> list[int]:
    """Reap adopted children that have exited, leaving the lab's own Popen children alone
    (their exit status belongs to their Popen object)."""
    mine = {p.pid for p in tracked}
    reaped = []
    for pid in _children() - mine:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            continue
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped.append(pid)
        except ChildProcessError:
            continue
    return reaped


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
