"""Notify hooks: keepalived-style arguments, order per instance, concurrency across instances,
bounded queues, shutdown, stats. Real scripts in a real allowlist (needs root)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vipkeeper_agent.notify import Notifier
from vipkeeper_agent.scripts import ScriptPolicy
from vipkeeper_api.models import NotifyScripts

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (root-owned allowlist)"),
    pytest.mark.timeout(30),
]


class Lab:
    """An allowlist directory and a log file the scripts append to."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.dir = base / "scripts"
        self.dir.mkdir(mode=0o755)
        self.log = base / "log"
        self.log.touch()
        os.chmod(self.log, 0o666)  # written by `nobody` in one test

    def script(self, name: str, body: str) -> None:
        path = self.dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        os.chmod(path, 0o755)

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def policy(self, user: str | None = None) -> ScriptPolicy:
        return ScriptPolicy(directory=self.dir, user=user)


@pytest.fixture
def lab() -> Iterator[Lab]:
    # Not tmp_path: pytest's base directory is 0700, which `nobody` could not search.
    base = Path(tempfile.mkdtemp(prefix="vipkeeper-notify-"))
    try:
        os.chmod(base, 0o755)
        yield Lab(base)
    finally:
        shutil.rmtree(base)


def append_script(lab: Lab, name: str = "append", pause: float = 0.0) -> None:
    """Logs "start <script> <args>" and "end ..." around a pause, so overlapping runs show."""
    lab.script(
        name,
        f'echo "start {name} $*" >> {lab.log}\nsleep {pause}\necho "end {name} $*" >> {lab.log}',
    )


def test_hooks_get_keepalived_arguments_in_order(lab: Lab) -> None:
    append_script(lab, "on-master")
    append_script(lab, "any")
    hooks = NotifyScripts(master="on-master", any="any")

    async def main() -> Notifier:
        notifier = Notifier(lab.policy())
        notifier.notify("web", hooks, "MASTER", 100)
        assert lab.lines() == []  # queued, not run: notify() does not wait for scripts
        await notifier.close(10)
        return notifier

    notifier = asyncio.run(main())
    assert lab.lines() == [
        "start on-master INSTANCE web MASTER 100",
        "end on-master INSTANCE web MASTER 100",
        "start any INSTANCE web MASTER 100",
        "end any INSTANCE web MASTER 100",
    ]
    assert notifier.stats == {"runs": 2, "failures": 0, "timeouts": 0, "dropped": 0}


def test_states_without_a_hook_run_nothing(lab: Lab) -> None:
    append_script(lab)

    async def main() -> Notifier:
        notifier = Notifier(lab.policy())
        notifier.notify("web", NotifyScripts(master="append"), "BACKUP", 50)
        notifier.notify("web", NotifyScripts(), "MASTER", 50)
        await notifier.close(10)
        return notifier

    assert asyncio.run(main()).stats["runs"] == 0
    assert lab.lines() == []


def test_one_instance_runs_strictly_in_order(lab: Lab) -> None:
    append_script(lab, pause=0.05)
    hooks = NotifyScripts(any="append")
    states = ["BACKUP", "MASTER", "BACKUP", "FAULT", "MASTER"]

    async def main() -> None:
        notifier = Notifier(lab.policy())
        for priority, state in enumerate(states, start=1):
            notifier.notify("web", hooks, state, priority)
            await asyncio.sleep(0)  # interleave with the worker: it may already be running
        await notifier.close(10)

    asyncio.run(main())
    expected = []
    for priority, state in enumerate(states, start=1):
        args = f"INSTANCE web {state} {priority}"
        expected += [f"start append {args}", f"end append {args}"]
    assert lab.lines() == expected


def test_instances_run_concurrently(lab: Lab) -> None:
    # Each hook waits (up to 5 s) until the other instance's hook has started: it only
    # succeeds quickly if the two run at the same time.
    flags = lab.base / "flags"
    flags.mkdir()
    lab.script(
        "meet",
        f"touch {flags}/$2\n"
        f'for i in $(seq 500); do [ "$(ls {flags} | wc -l)" -ge 2 ] && exit 0; sleep 0.01; done\n'
        "exit 1",
    )
    hooks = NotifyScripts(master="meet")

    async def main() -> Notifier:
        notifier = Notifier(lab.policy())
        notifier.notify("a", hooks, "MASTER", 100)
        notifier.notify("b", hooks, "MASTER", 100)
        await notifier.close(10)
        return notifier

    started = time.monotonic()
    notifier = asyncio.run(main())
    assert notifier.stats == {"runs": 2, "failures": 0, "timeouts": 0, "dropped": 0}
    assert time.monotonic() - started < 3


def test_a_flapping_instance_drops_its_oldest_notifications(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    append_script(lab)
    hooks = NotifyScripts(any="append")

    async def main() -> Notifier:
        notifier = Notifier(lab.policy(), queue_limit=2)
        # All queued before the worker gets to run: only the last two survive.
        for priority in range(1, 6):
            notifier.notify("web", hooks, "MASTER" if priority % 2 else "BACKUP", priority)
        await notifier.close(10)
        return notifier

    with caplog.at_level(logging.WARNING, logger="vipkeeper.notify"):
        notifier = asyncio.run(main())
    assert [line.split()[-1] for line in lab.lines() if line.startswith("start")] == ["4", "5"]
    assert notifier.stats == {"runs": 2, "failures": 0, "timeouts": 0, "dropped": 3}
    dropped = [r.getMessage() for r in caplog.records if "event=notify_dropped" in r.getMessage()]
    assert len(dropped) == 3
    assert "instance=web state=MASTER priority=1 scripts=append reason=queue_full" in dropped[0]


def test_close_waits_for_stop_hooks(lab: Lab) -> None:
    append_script(lab, pause=0.3)

    async def main() -> Notifier:
        notifier = Notifier(lab.policy())
        notifier.notify("a", NotifyScripts(stop="append"), "STOP", 0)
        notifier.notify("b", NotifyScripts(stop="append"), "STOP", 0)
        await notifier.close(10)
        notifier.notify("a", NotifyScripts(stop="append"), "STOP", 0)  # after close: dropped
        return notifier

    notifier = asyncio.run(main())
    assert sorted(lab.lines()) == [
        "end append INSTANCE a STOP 0",
        "end append INSTANCE b STOP 0",
        "start append INSTANCE a STOP 0",
        "start append INSTANCE b STOP 0",
    ]
    assert notifier.stats == {"runs": 2, "failures": 0, "timeouts": 0, "dropped": 1}


def test_close_is_bounded_and_kills_what_still_runs(lab: Lab) -> None:
    pid_file = lab.base / "pid"
    lab.script("hang", f"echo $$ > {pid_file}\nsleep 1000")
    hooks = NotifyScripts(stop="hang")

    async def main() -> tuple[Notifier, float]:
        notifier = Notifier(lab.policy())
        notifier.notify("web", hooks, "STOP", 0)
        notifier.notify("web", hooks, "STOP", 0)  # still queued at the deadline: dropped
        started = time.monotonic()
        await notifier.close(0.5)
        return notifier, time.monotonic() - started

    notifier, took = asyncio.run(main())
    assert 0.5 <= took < 1.5
    assert notifier.stats["dropped"] == 1
    pgid = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while True:  # the killed script's `sleep` is an orphan PID 1 reaps; the script itself is gone
        try:
            os.kill(pgid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the hook's shell survived close()"
        time.sleep(0.01)


def test_close_at_once_drops_what_has_not_started(lab: Lab) -> None:
    append_script(lab)

    async def main() -> tuple[Notifier, float]:
        notifier = Notifier(lab.policy())
        for instance in ("a", "b", "c"):
            notifier.notify(instance, NotifyScripts(stop="append"), "STOP", 0)
        await notifier.close(0)
        started = time.monotonic()
        await notifier.close(5)  # closing again has nothing to wait for
        return notifier, time.monotonic() - started

    notifier, took = asyncio.run(main())
    assert notifier.stats == {"runs": 0, "failures": 0, "timeouts": 0, "dropped": 3}
    assert took < 0.1
    assert lab.lines() == []


def test_failures_and_timeouts_are_counted_and_logged(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    lab.script("fails", "echo broken; exit 2")
    lab.script("hangs", "sleep 1000")

    async def main() -> Notifier:
        notifier = Notifier(lab.policy(), timeout=0.2)
        notifier.notify("a", NotifyScripts(master="fails"), "MASTER", 100)
        notifier.notify("b", NotifyScripts(master="hangs"), "MASTER", 100)
        notifier.notify("c", NotifyScripts(master="missing"), "MASTER", 100)
        await notifier.close(10)
        return notifier

    with caplog.at_level(logging.INFO, logger="vipkeeper.notify"):
        notifier = asyncio.run(main())
    assert notifier.stats == {"runs": 3, "failures": 3, "timeouts": 1, "dropped": 0}
    messages = {r.getMessage().split()[1]: r for r in caplog.records}
    assert messages["instance=a"].levelno == logging.WARNING
    assert "script=fails exit=2 timed_out=False" in messages["instance=a"].getMessage()
    assert "output='broken\\n'" in messages["instance=a"].getMessage()
    assert "timed_out=True" in messages["instance=b"].getMessage()
    assert "is not in the script directory" in messages["instance=c"].getMessage()


def test_success_is_logged_at_info(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    append_script(lab)

    async def main() -> None:
        notifier = Notifier(lab.policy())
        notifier.notify("web", NotifyScripts(master="append"), "MASTER", 100)
        await notifier.close(10)

    with caplog.at_level(logging.INFO, logger="vipkeeper.notify"):
        asyncio.run(main())
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith(
        "event=notify instance=web state=MASTER script=append exit=0 duration_ms="
    )


def test_hooks_run_as_nobody(lab: Lab) -> None:
    lab.script("whoami", f'echo "$(id -u) $*" >> {lab.log}')

    async def main() -> Notifier:
        notifier = Notifier(lab.policy(user="nobody"))
        notifier.notify("web", NotifyScripts(backup="whoami"), "BACKUP", 90)
        await notifier.close(10)
        return notifier

    assert asyncio.run(main()).stats["failures"] == 0
    assert lab.lines() == ["65534 INSTANCE web BACKUP 90"]
