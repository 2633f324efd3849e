"""The script allowlist (resolve, verify) and runner (run_script), with real files and processes.

Needs root: the allowlist must be owned by root, and scripts run as ``nobody``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vipkeeper_agent import scripts as scripts_module
from vipkeeper_agent.scripts import (
    SCRIPT_ENV,
    ScriptError,
    ScriptPolicy,
    ScriptResult,
    resolve,
    run_script,
    verify,
)
from vipkeeper_api import parse_spec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (root-owned allowlist)")

NOBODY = 65534
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Env:
    base: Path  # 0755, for files beside the allowlist
    dir: Path  # the allowlist, 0755 root

    def policy(self, **kw: object) -> ScriptPolicy:
        return ScriptPolicy(directory=self.dir, **kw)  # type: ignore[arg-type]

    def script(self, name: str, body: str, mode: int = 0o755, where: Path | None = None) -> Path:
        path = (where or self.dir) / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        os.chmod(path, mode)
        return path


@pytest.fixture
def env() -> Iterator[Env]:
    # Not tmp_path: pytest's base directory is 0700, which `nobody` could not search.
    base = Path(tempfile.mkdtemp(prefix="vipkeeper-scripts-"))
    try:
        os.chmod(base, 0o755)
        (base / "scripts").mkdir(mode=0o755)
        yield Env(base, base / "scripts")
    finally:
        shutil.rmtree(base)


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Orphans of the scripts (their killed background children) get reparented to this process
    instead of PID 1, which may reap late or never in a container, so the test can reap them
    and check that nothing of the group survives, without waiting on init."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def group_members(pgid: int) -> list[tuple[int, str, int]]:
    """(pid, state, ppid) of every process in group ``pgid``, from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            out.append((int(entry), fields[0], int(fields[1])))
    return out


def assert_group_gone(pgid: int) -> None:
    """No process of the group is left, the leader reaped by run_script itself; orphaned
    children (ours, as subreaper) are reaped here."""
    deadline = time.monotonic() + 2.0
    while True:
        members = group_members(pgid)
        for pid, state, ppid in members:
            if pid != pgid and state == "Z" and ppid == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"process group {pgid} still has {members}"
        time.sleep(0.01)


def run(policy: ScriptPolicy, name: str, *args: str, timeout: float = 5.0) -> ScriptResult:
    return asyncio.run(run_script(policy, name, args, timeout))


# --- resolve: what is refused, and what it says -------------------------------------------------


def _missing(e: Env) -> str:
    return "nope"


def _world_writable(e: Env) -> str:
    e.script("chk", "true", 0o777)
    return "chk"


def _group_writable(e: Env) -> str:
    e.script("chk", "true", 0o775)
    return "chk"


def _not_root(e: Env) -> str:
    os.chown(e.script("chk", "true"), NOBODY, NOBODY)
    return "chk"


def _not_executable(e: Env) -> str:
    e.script("chk", "true", 0o644)
    return "chk"


def _directory(e: Env) -> str:
    (e.dir / "chk").mkdir(mode=0o755)
    return "chk"


def _link_to_world_writable(e: Env) -> str:
    other = e.base / "other"
    other.mkdir(mode=0o755)
    e.script("real", "true", 0o777, where=other)
    (e.dir / "chk").symlink_to(other / "real")
    return "chk"


def _target_in_world_writable_dir(e: Env) -> str:
    other = e.base / "other"
    other.mkdir()
    os.chmod(other, 0o1777)  # even sticky: a name can be planted before the file appears
    e.script("real", "true", where=other)
    (e.dir / "chk").symlink_to(other / "real")
    return "chk"


def _dangling_link(e: Env) -> str:
    (e.dir / "chk").symlink_to(e.base / "gone")
    return "chk"


def _link_loop(e: Env) -> str:
    (e.dir / "chk").symlink_to("chk")
    return "chk"


def _link_in_untrusted_dir(e: Env) -> str:
    hop = e.base / "hop"
    hop.mkdir()
    os.chmod(hop, 0o775)
    e.script("real", "true", where=e.base)
    (hop / "link").symlink_to(e.base / "real")
    (e.dir / "chk").symlink_to(hop / "link")
    return "chk"


def _world_writable_allowlist(e: Env) -> str:
    e.script("chk", "true")
    os.chmod(e.dir, 0o777)
    return "chk"


def _allowlist_not_root(e: Env) -> str:
    e.script("chk", "true")
    os.chown(e.dir, NOBODY, NOBODY)
    return "chk"


def _allowlist_missing(e: Env) -> str:
    shutil.rmtree(e.dir)
    return "chk"


def _unreadable_for_nobody(e: Env) -> str:
    e.script("chk", "true", 0o711)  # a shell script must be read by the user who runs it
    return "chk"


REFUSALS: list[tuple[str, Callable[[Env], str], str]] = [
    ("missing", _missing, "script 'nope' is not in the script directory {dir}; put an"),
    ("path", lambda e: "sub/chk", "'sub/chk' is not a script name"),
    ("absolute", lambda e: "/bin/sh", "'/bin/sh' is not a script name"),
    ("dotdot", lambda e: "..", "'..' is not a script name"),
    ("dot", lambda e: ".", "'.' is not a script name"),
    ("empty", lambda e: "", "'' is not a script name"),
    ("command", lambda e: "rm -rf /", "'rm -rf /' is not a script name"),
    (
        "world_writable",
        _world_writable,
        "script 'chk' ({dir}/chk) is world-writable (mode 0777); anyone on the node could "
        "change what the agent runs: chmod o-w it",
    ),
    ("group_writable", _group_writable, "is group-writable (mode 0775); members of group 'root'"),
    ("not_root", _not_root, "is owned by uid 65534, not root"),
    ("not_executable", _not_executable, "is not executable (mode 0644): chmod 0755 it"),
    ("directory", _directory, "({dir}/chk) is a directory"),
    ("link_world_writable", _link_to_world_writable, "-> {base}/other/real) is world-writable"),
    ("target_dir_world_writable", _target_in_world_writable_dir, "under world-writable directory"),
    ("dangling_link", _dangling_link, "is a symlink to {base}/gone, which does not exist"),
    ("link_loop", _link_loop, "too many symlinks"),
    ("link_in_untrusted_dir", _link_in_untrusted_dir, "through a symlink in directory {base}/hop"),
    ("allowlist_world_writable", _world_writable_allowlist, "{dir} is group- or world-writable"),
    ("allowlist_not_root", _allowlist_not_root, "{dir} is owned by uid 65534, not root"),
    ("allowlist_missing", _allowlist_missing, "script directory {dir} does not exist"),
    ("unreadable", _unreadable_for_nobody, "not readable and executable by user 'nobody'"),
]


@pytest.mark.parametrize(
    ("setup", "expected"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_resolve_refuses(env: Env, setup: Callable[[Env], str], expected: str) -> None:
    name = setup(env)
    with pytest.raises(ScriptError) as info:
        resolve(env.policy(), name)
    assert expected.format(dir=env.dir, base=env.base) in str(info.value)


def test_resolve_refuses_a_directory_the_user_cannot_search(env: Env) -> None:
    private = env.base / "private"
    private.mkdir(mode=0o700)
    (private / "scripts").mkdir(mode=0o755)
    env.script("chk", "true", where=private / "scripts")
    policy = ScriptPolicy(directory=private / "scripts")
    with pytest.raises(ScriptError, match=r"cannot be reached by user 'nobody'.*o\+x"):
        resolve(policy, "chk")
    # As root (user=None) the same file is fine.
    assert resolve(ScriptPolicy(directory=private / "scripts", user=None), "chk").name == "chk"


def test_resolve_returns_the_real_path(env: Env) -> None:
    path = env.script("chk", "true")
    assert resolve(env.policy(), "chk") == path


def test_resolve_follows_a_configmap_layout(env: Env) -> None:
    # What kubelet's atomic writer builds: chk -> ..data/chk, ..data -> ..<timestamp>/
    stamp = env.dir / "..2024_01_01_00_00_00.123"
    stamp.mkdir(mode=0o755)
    env.script("chk", "true", where=stamp)
    (env.dir / "..data").symlink_to(stamp.name)
    (env.dir / "chk").symlink_to("..data/chk")
    assert resolve(env.policy(), "chk") == stamp / "chk"


def test_resolve_accepts_a_link_to_a_system_binary(env: Env) -> None:
    (env.dir / "ok").symlink_to(shutil.which("true") or "/bin/true")
    assert resolve(env.policy(), "ok") == Path(os.path.realpath(shutil.which("true") or ""))


def test_read_only_mount_is_not_writable(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # ConfigMap volume directories are 0777 but mounted read-only; that must pass.
    env.script("chk", "true")
    os.chmod(env.dir, 0o777)
    monkeypatch.setattr(scripts_module, "_read_only", lambda path: True)
    assert resolve(env.policy(), "chk") == env.dir / "chk"


def test_unknown_user_is_refused(env: Env) -> None:
    env.script("chk", "true")
    with pytest.raises(ScriptError, match="script user 'vipkeeper-no-such-user' does not exist"):
        resolve(env.policy(user="vipkeeper-no-such-user"), "chk")


# --- verify --------------------------------------------------------------------------------------


def test_verify_names_the_config_path(env: Env) -> None:
    env.script("ok", "true")
    env.script("loose", "true", 0o777)
    problems = verify(
        env.policy(),
        [
            ("checks[0].script", "nope"),
            ("checks[1].script", "ok"),
            ("instances[0].notify.master", "loose"),
        ],
    )
    assert problems == [
        f"checks[0].script: script 'nope' is not in the script directory {env.dir}; put an "
        "executable owned by root there or fix the name",
        f"instances[0].notify.master: script 'loose' ({env.dir}/loose) is world-writable (mode "
        "0777); anyone on the node could change what the agent runs: chmod o-w it",
    ]


def test_verify_all_good_and_empty(env: Env) -> None:
    env.script("ok", "true")
    assert verify(env.policy(), [("checks[0].script", "ok")]) == []
    assert verify(env.policy(user="vipkeeper-no-such-user"), []) == []


def test_verify_reports_a_missing_user_once(env: Env) -> None:
    env.script("ok", "true")
    problems = verify(
        env.policy(user="vipkeeper-no-such-user"),
        [("checks[0].script", "ok"), ("checks[1].script", "nope")],
    )
    assert len(problems) == 2
    assert "'vipkeeper-no-such-user' does not exist" in problems[0]
    assert problems[1].startswith("checks[1].script: script 'nope' is not in")


def test_verify_a_parsed_spec(env: Env) -> None:
    env.script("up", "true")
    spec = parse_spec(
        {
            "checks": [{"name": "web", "kind": "exec", "script": "missing-check"}],
            "instances": [
                {
                    "name": "web",
                    "vrid": 1,
                    "addresses": ["10.0.0.1"],
                    "notify": {"master": "up", "backup": "down"},
                }
            ],
        }
    )
    problems = verify(env.policy(), spec.scripts())
    assert [p.split(":")[0] for p in problems] == ["checks[0].script", "instances[0].notify.backup"]


# --- run_script ----------------------------------------------------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("body", "code"), [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", -9)])
def test_exit_codes(env: Env, body: str, code: int) -> None:
    env.script("chk", body)
    result = run(env.policy(), "chk")
    assert (result.exit_code, result.timed_out, result.error) == (code, False, None)


@pytest.mark.timeout(20)
def test_args_and_merged_output(env: Env) -> None:
    env.script("chk", 'echo "out $#: $*"; echo err >&2')
    result = run(env.policy(), "chk", "INSTANCE", "web", "MASTER", "100")
    assert result.output == "out 4: INSTANCE web MASTER 100\nerr\n"


@pytest.mark.timeout(20)
def test_output_is_capped_and_drained(env: Env) -> None:
    # 1 MB through a 64 KB pipe: the script only finishes if the rest is read and discarded.
    env.script("chk", "head -c 1000000 /dev/zero | tr '\\0' x; echo done >&2")
    result = run(env.policy(output_cap=100), "chk")
    assert result.exit_code == 0
    assert result.output == "x" * 100


@pytest.mark.timeout(20)
def test_output_is_decoded_leniently(env: Env) -> None:
    env.script("chk", "printf 'a\\377b'")
    assert run(env.policy(), "chk").output == "a\ufffdb"


@pytest.mark.timeout(20)
def test_runs_as_nobody_without_extra_groups(env: Env) -> None:
    env.script("chk", "id -u; id -G")
    assert run(env.policy(), "chk").output == f"{NOBODY}\n65534\n"
    assert run(env.policy(user=None), "chk").output.split()[0] == "0"


@pytest.mark.timeout(20)
def test_minimal_environment_cwd_and_stdin(env: Env) -> None:
    (env.dir / "showenv").symlink_to("/usr/bin/env")
    result = run(env.policy(), "showenv")
    assert dict(line.split("=", 1) for line in result.output.splitlines()) == SCRIPT_ENV
    env.script("chk", "pwd; cat; echo end")
    assert run(env.policy(), "chk").output == "/\nend\n"


@pytest.mark.timeout(20)
def test_refusal_and_exec_failure_are_results(env: Env) -> None:
    result = run(env.policy(), "nope")
    assert result.exit_code is None and not result.timed_out
    assert result.error is not None and "is not in the script directory" in result.error
    (env.dir / "noshebang").write_text("echo hi\n")
    os.chmod(env.dir / "noshebang", 0o755)
    result = run(env.policy(), "noshebang")
    assert result.exit_code is None
    assert result.error is not None and "could not be started" in result.error


KILL_CASES = [
    ("sleeps", "echo $$; sleep 1000", True),
    ("ignores_sigterm", "trap '' TERM; echo $$; sleep 1000", True),
    ("grandchild_holds_output", "echo $$; sleep 1000 & wait", True),
    # Exits at once, but a background child keeps the output open: killed at the deadline.
    ("exits_leaving_grandchild", "echo $$; sleep 1000 &", False),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("body", "times_out"), [c[1:] for c in KILL_CASES], ids=[c[0] for c in KILL_CASES]
)
def test_timeout_kills_the_whole_group(
    env: Env, subreaper: None, body: str, times_out: bool
) -> None:
    env.script("chk", body)
    policy = env.policy(kill_grace=0.2)
    timeout = 0.5
    started = time.monotonic()
    result = run(policy, "chk", timeout=timeout)
    elapsed = time.monotonic() - started
    assert result.timed_out is times_out
    assert result.exit_code == (None if times_out else 0)
    assert elapsed < timeout + policy.kill_grace + 0.5
    assert result.duration >= timeout
    assert_group_gone(int(result.output.split()[0]))


@pytest.mark.timeout(20)
def test_slow_scripts_do_not_block_the_loop(env: Env) -> None:
    env.script("chk", "sleep 1000")

    async def main() -> tuple[list[ScriptResult], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        results = await asyncio.gather(
            *(run_script(env.policy(), "chk", (), 0.5) for _ in range(4))
        )
        task.cancel()
        return list(results), ticks

    started = time.monotonic()
    results, ticks = asyncio.run(main())
    assert all(r.timed_out for r in results)
    assert time.monotonic() - started < 1.5  # concurrently, not 4 x 0.7 s
    assert ticks > 20


@pytest.mark.timeout(20)
def test_cancelling_kills_the_group(env: Env, subreaper: None) -> None:
    pid_file = env.base / "pid"
    env.script("chk", f"echo $$ > {pid_file}; sleep 1000 & wait")

    async def main() -> None:
        task = asyncio.create_task(run_script(env.policy(user=None), "chk", (), 60))
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert_group_gone(int(pid_file.read_text()))


def test_cancelling_during_the_spawn_kills_the_group(env: Env, subreaper: None) -> None:
    """Cancelled while asyncio is still starting the script, the script has had time to start
    background children; they must die with it (asyncio alone would kill only the script)."""
    pid_file = env.base / "pid"
    env.script("chk", f"sleep 1000 & echo $$ > {pid_file}; wait")

    async def main(delay: float) -> None:
        task = asyncio.create_task(run_script(env.policy(user=None), "chk", (), 60))
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)  # let the done-callback fire once the spawn finishes

    for attempt in range(15):
        pid_file.unlink(missing_ok=True)
        asyncio.run(main(0.0005 * attempt))
        if pid_file.exists() and pid_file.read_text().strip():
            assert_group_gone(int(pid_file.read_text()))
