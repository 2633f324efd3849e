"""The script allowlist and runner: the only way the agent (root, on every node) runs a program.

A configuration names scripts by file name only; the program must already sit in a directory the
node's administrator controls. Anyone who can write a VrrpAssignment must therefore not be able to
choose what runs, and neither may any unprivileged user on the node, so before every run the file
and the way to it are checked:

* the allowlist directory, and every directory holding a symlink on the way to the script (a
  Kubernetes ConfigMap volume links ``chk -> ..data/chk`` and ``..data -> ..<timestamp>``), is
  owned by root and not group- or world-writable: whoever can rename an entry there picks the
  program;
* the script itself is a regular file owned by root, not group- or world-writable, executable,
  and readable and executable by the user it runs as;
* its directory is not world-writable (even with the sticky bit), and no directory above it is
  world-writable unless sticky with a root-owned entry (``/tmp``), or one would be swapped out;
* anything on a read-only mount passes the "writable" tests: ConfigMap and Secret volume
  directories are mode 0777 but mounted read-only.

The checked path, symlinks resolved, is what runs, so a link changed later cannot redirect a run
that was already vetted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import grp
import logging
import os
import pwd
import signal
import stat
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vipkeeper_api.checks import SCRIPT_NAME_RE

log = logging.getLogger("vipkeeper.scripts")

#: Scripts get a fixed, minimal environment: nothing of the agent's (tokens, proxies) leaks.
SCRIPT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
#: The kernel's own limit on symlinks followed in one lookup.
_MAX_LINKS = 40
#: After SIGKILL, how long to wait for the kernel to tear the group down before giving up on it.
_REAP_MARGIN = 0.2


@dataclass(frozen=True)
class ScriptPolicy:
    directory: Path
    #: Run scripts as this user; None runs them as the agent itself (root).
    user: str | None = "nobody"
    #: Bytes of combined stdout and stderr kept; the rest is read and discarded.
    output_cap: int = 4096
    #: Seconds between SIGTERM and SIGKILL of the script's process group on timeout.
    kill_grace: float = 0.2


class ScriptError(Exception):
    """A script that may not or cannot run; the message says why and how to fix it."""


@dataclass(frozen=True)
class ScriptResult:
    #: None when the script was killed on timeout or never started.
    exit_code: int | None
    timed_out: bool
    #: At most ``output_cap`` bytes of stdout and stderr, decoded leniently.
    output: str
    duration: float
    #: Why the script did not run (refused, exec failed); exit_code is None then.
    error: str | None = None


@dataclass(frozen=True)
class _RunAs:
    """Who the script runs as, for the permission checks and for the exec itself."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]
    #: False when the agent is not root: it cannot change user, so scripts run as the agent.
    switch: bool


def _run_as(policy: ScriptPolicy) -> _RunAs:
    if policy.user is not None:
        try:
            entry = pwd.getpwnam(policy.user)
        except KeyError:
            raise ScriptError(
                f"script user {policy.user!r} does not exist on this host; create it "
                f"(useradd --system {policy.user}) or configure another user for scripts"
            ) from None
        if os.geteuid() == 0:
            # extra_groups=[] at exec: the script keeps no supplementary group, only the primary.
            return _RunAs(
                entry.pw_name, entry.pw_uid, entry.pw_gid, frozenset({entry.pw_gid}), True
            )
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    groups = frozenset({os.getegid(), *os.getgroups()})
    return _RunAs(name, uid, os.getegid(), groups, False)


def _read_only(path: str) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _others_can_write(st: os.stat_result, path: str, mask: int = 0o022) -> bool:
    return bool(st.st_mode & mask) and not _read_only(path)


def _permits(st: os.stat_result, who: _RunAs, bits: int) -> bool:
    """Whether ``who`` has the rwx ``bits`` (4, 2, 1) on the file, by classic mode bits only."""
    if who.uid == 0:
        return True  # root's DAC override; executability is checked separately
    if st.st_uid == who.uid:
        shift = 6
    elif st.st_gid in who.groups:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def _class(st: os.stat_result, who: _RunAs) -> str:
    """The chmod class (u, g, o) whose bits apply to ``who``."""
    if st.st_uid == who.uid:
        return "u"
    return "g" if st.st_gid in who.groups else "o"


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _untrusted_dir(path: str) -> str | None:
    """What is wrong with a directory whose entries decide what runs (the allowlist, or one that
    holds a symlink on the way): it must be root's alone. None when nothing is."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist; create it (owned by root, mode 0755) and put the scripts there"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory; point the agent at a directory"
    if st.st_uid != 0:
        return (
            f"is owned by uid {st.st_uid}, not root; its owner could choose what the agent "
            f"runs: chown root {path}"
        )
    if _others_can_write(st, path):
        return (
            f"is group- or world-writable (mode {_mode(st)}); others on the node could choose "
            f"what the agent runs: chmod go-w {path}"
        )
    return None


def _walk(start: str, name: str, label: str) -> tuple[str, list[str]]:
    """Resolve ``start/name`` as the kernel would (``start`` has no symlinks), returning the final
    path and every directory a symlink was read from: realpath() would hide those."""
    resolved = start
    todo = [name]
    link_dirs: list[str] = []
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            if not link_dirs:
                raise ScriptError(
                    f"script {name!r} is not in the script directory {start}; put an executable "
                    "owned by root there or fix the name"
                ) from None
            raise ScriptError(
                f"script {label} is a symlink to {candidate}, which does not exist; fix the link"
            ) from None
        except OSError as exc:
            raise ScriptError(f"script {label} cannot be resolved: {exc.strerror}") from None
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        if len(link_dirs) >= _MAX_LINKS:
            raise ScriptError(f"script {label} goes through too many symlinks (a loop?)")
        link_dirs.append(resolved)
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = "/"
        todo[:0] = target.split("/")
    return resolved, link_dirs


def resolve(policy: ScriptPolicy, name: str) -> Path:
    """The real path of script ``name`` once it passes every check; ScriptError otherwise."""
    return _resolve(policy, name, _run_as(policy))


def _resolve(policy: ScriptPolicy, name: str, who: _RunAs) -> Path:
    directory = os.path.realpath(policy.directory)
    if not SCRIPT_NAME_RE.match(name) or name in (".", ".."):
        raise ScriptError(
            f"{name!r} is not a script name; give the file name of a script in {directory} "
            "(letters, digits, '_', '.', '-'; no '/'), not a path or command"
        )
    try:
        return _check(directory, name, who)
    except OSError as exc:  # a race with a change on disk, or an agent that is not root
        raise ScriptError(f"script {name!r} in {directory} cannot be checked: {exc}") from None


def _check(directory: str, name: str, who: _RunAs) -> Path:
    problem = _untrusted_dir(directory)
    if problem:
        raise ScriptError(f"script directory {directory} {problem}")
    entry = os.path.join(directory, name)
    final, link_dirs = _walk(directory, name, f"{name!r} ({entry})")
    where = entry if final == entry else f"{entry} -> {final}"
    label = f"{name!r} ({where})"
    for link_dir in dict.fromkeys(link_dirs):
        problem = _untrusted_dir(link_dir) if link_dir != directory else None
        if problem:
            raise ScriptError(
                f"script {label} is reached through a symlink in directory {link_dir}, which "
                f"{problem}"
            )

    st = os.stat(final)
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise ScriptError(f"script {label} is {kind}; a script must be an executable file")
    if st.st_uid != 0:
        raise ScriptError(
            f"script {label} is owned by uid {st.st_uid}, not root; its owner could change what "
            f"the agent runs: chown root {final}"
        )
    if _others_can_write(st, final, 0o002):
        raise ScriptError(
            f"script {label} is world-writable (mode {_mode(st)}); anyone on the node could "
            "change what the agent runs: chmod o-w it"
        )
    if _others_can_write(st, final, 0o020):
        raise ScriptError(
            f"script {label} is group-writable (mode {_mode(st)}); members of group "
            f"{_group_name(st.st_gid)!r} could change what the agent runs: chmod g-w it"
        )
    if not st.st_mode & 0o111:
        raise ScriptError(
            f"script {label} is not executable (mode {_mode(st)}): chmod 0755 it "
            "(in a ConfigMap volume: defaultMode: 0755)"
        )
    if not _permits(st, who, 5):
        raise ScriptError(
            f"script {label} is not readable and executable by user {who.name!r}, which runs it "
            f"(mode {_mode(st)}): chmod {_class(st, who)}+rx it"
        )

    # The directories above: a world-writable one lets anyone rename the path away and put their
    # own in its place; sticky ones (/tmp) forbid renaming others' entries, except the file's own
    # directory, where a new name planted before the file appears would do. The user the script
    # runs as must also be able to search them, or exec fails at every run.
    child = final
    parent = os.path.dirname(final)
    while True:
        pst = os.stat(parent)
        sticky_guard = pst.st_mode & stat.S_ISVTX and os.lstat(child).st_uid == 0
        if _others_can_write(pst, parent, 0o002) and (child == final or not sticky_guard):
            raise ScriptError(
                f"script {label} is under world-writable directory {parent} (mode "
                f"{_mode(pst)}); anyone on the node could replace it: move the script to a "
                f"directory only root can write, or chmod o-w {parent}"
            )
        if not _permits(pst, who, 1):
            raise ScriptError(
                f"script {label} cannot be reached by user {who.name!r}, which runs it: "
                f"directory {parent} (mode {_mode(pst)}) is not searchable by it: "
                f"chmod {_class(pst, who)}+x {parent}"
            )
        if parent == "/":
            break
        child, parent = parent, os.path.dirname(parent)
    return Path(final)


def verify(policy: ScriptPolicy, refs: Iterable[tuple[str, str]]) -> list[str]:
    """Every problem with the scripts ``refs`` names, as ``(config path, script name)`` pairs
    (``NodeAssignmentSpec.scripts()``); one message per problem, prefixed by its config path."""
    refs = list(refs)
    if not refs:
        return []  # no scripts: the script user and directory do not matter
    problems: list[str] = []
    try:
        _run_as(policy)
    except ScriptError as exc:
        # Said once, not once per script; the file checks still run, as the agent's own user.
        problems.append(str(exc))
        policy = replace(policy, user=None)
    for config_path, name in refs:
        try:
            resolve(policy, name)
        except ScriptError as exc:
            problems.append(f"{config_path}: {exc}")
    return problems


class _Output:
    """Reads the script's output pipe from the event loop: keeps ``cap`` bytes and drains the
    rest, so a chatty script never blocks on a full pipe."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, cap: int) -> None:
        self._loop, self._fd, self._cap = loop, fd, cap
        self.data = bytearray()
        self.eof: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        room = self._cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    def close(self) -> None:
        """Stop reading; a process that still holds the pipe gets EPIPE on its next write."""
        if self._fd < 0:
            return
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        if not self.eof.done():
            self.eof.set_result(None)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # Only ever the group this module created (start_new_session: pgid == the script's pid).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


async def _terminate(pgid: int, waits: tuple[asyncio.Future[Any], ...], grace: float) -> None:
    _signal_group(pgid, signal.SIGTERM)
    await asyncio.wait(waits, timeout=grace)
    # Unconditionally: also reaches members that ignore SIGTERM or do not hold the output.
    _signal_group(pgid, signal.SIGKILL)
    await asyncio.wait(waits, timeout=_REAP_MARGIN)


def _kill_spawned_group(write_fd: int, spawn: asyncio.Future[asyncio.subprocess.Process]) -> None:
    os.close(write_fd)
    if spawn.cancelled() or spawn.exception() is not None:
        return
    _signal_group(spawn.result().pid, signal.SIGKILL)


async def run_script(
    policy: ScriptPolicy, name: str, args: Sequence[str], timeout: float
) -> ScriptResult:
    """Run allowlisted script ``name`` with ``args``; never raises for the script's failures.

    The run lasts until the script exits and its output is closed, at most ``timeout`` seconds;
    then its whole process group (background children included) gets SIGTERM, and SIGKILL
    ``kill_grace`` seconds later.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        who = _run_as(policy)  # once: user lookups may go to NSS, and the loop waits for them
        path = _resolve(policy, name, who)
    except ScriptError as exc:
        return ScriptResult(None, False, "", loop.time() - start, error=str(exc))

    # Our own pipe rather than asyncio's PIPE: we can close it ourselves if something that
    # escaped the process group (a daemon that called setsid) keeps it open.
    read_fd, write_fd = os.pipe()
    spawn = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            path,
            *args,
            stdin=subprocess.DEVNULL,
            stdout=write_fd,
            stderr=subprocess.STDOUT,
            env=SCRIPT_ENV,
            cwd="/",
            close_fds=True,
            start_new_session=True,
            user=who.uid if who.switch else None,
            group=who.gid if who.switch else None,
            extra_groups=[] if who.switch else None,
        )
    )
    try:
        # Shielded: cancelled mid-spawn, asyncio would kill only the script's PID and leave
        # anything it already started in its group running; the callback kills the group.
        proc = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        # The spawn may not have forked yet: its end of the pipe stays open until it has.
        spawn.add_done_callback(functools.partial(_kill_spawned_group, write_fd))
        os.close(read_fd)
        write_fd = -1
        raise
    except OSError as exc:
        os.close(read_fd)
        return ScriptResult(
            None,
            False,
            "",
            loop.time() - start,
            error=f"script {name!r} ({path}) could not be started as {who.name!r}: {exc}",
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        if write_fd >= 0:
            os.close(write_fd)

    output = _Output(loop, read_fd, policy.output_cap)
    exited: asyncio.Future[int] = asyncio.ensure_future(proc.wait())
    waits: tuple[asyncio.Future[Any], ...] = (exited, output.eof)
    try:
        await asyncio.wait(waits, timeout=timeout)
        timed_out = not exited.done()
        if timed_out or not output.eof.done():
            if not timed_out:
                log.warning(
                    "event=script_stragglers script=%s pid=%d detail=%s",
                    name,
                    proc.pid,
                    "exited but left processes holding its output; killing its process group",
                )
            await _terminate(proc.pid, waits, policy.kill_grace)
    except BaseException:
        # Cancelled (agent shutting down): no time for grace, but leave nothing behind, and
        # reap the script so asyncio's transport closes before the loop may.
        _signal_group(proc.pid, signal.SIGKILL)
        await asyncio.wait(waits, timeout=_REAP_MARGIN)
        raise
    finally:
        output.close()
        # Not waiting any more; asyncio's child watcher still reaps the process when it dies.
        exited.cancel()
    return ScriptResult(
        exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        output=bytes(output.data).decode("utf-8", errors="replace"),
        duration=loop.time() - start,
    )
