"""The VM lane: run ``tests/vm/inside`` in a qemu VM booting Debian's kernel, report each test.

One VM boot per session (boot is ~6 s and Python is 15-30x slower under TCG, so a boot per test
would not fit the time budget): the session fixture runs the whole inner suite in the VM with a
JUnit XML report written to a folder shared with the host, and ``test_in_vm[<inner id>]`` turns
the inner test's outcome into its own: passed, failed (with the inner message) or skipped (with
the inner reason). If the lane cannot run on this machine, every one of them is skipped with the
reason; if the VM run fails as a whole (boot failure, timeout, crash), every one fails with the
tail of the console and of the inner pytest's output.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field

import pytest
from vm_lane_support import (
    INNER_ENV,
    INNER_PLUGINS,
    INSIDE,
    LANE_NOTES,
    REPO,
    Collected,
    Outcome,
    collect_inner,
    junit_key,
    parse_junit,
)

from vipkeeper_lab.vm import VmError, VmResult, run_in_vm, vm_unavailable

#: Bounds the whole VM run, boot included; the per-test pytest-timeout adds headroom on top.
LANE_TIMEOUT = 600.0
TAIL = 3000
_COLLECTION_ERROR = "<collection error>"


@dataclass
class LaneRun:
    unavailable: str | None = None
    problem: str | None = None
    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    result: VmResult | None = None


def _tail(text: str, limit: int = TAIL) -> str:
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "inner_id" not in metafunc.fixturenames:
        return
    collected = collect_inner_cached()
    if collected.error is not None:
        metafunc.parametrize(
            "inner_id", [pytest.param(collected.error, id=_COLLECTION_ERROR)], scope="function"
        )
        return
    prefix = f"{INSIDE.relative_to(REPO).as_posix()}/"
    metafunc.parametrize(
        "inner_id",
        [pytest.param(i, id=i.removeprefix(prefix)) for i in collected.node_ids],
        scope="function",
    )


def _selected_inner_ids(session: pytest.Session) -> list[str]:
    """What to run in the VM: everything, unless -k/-m/node IDs deselected some outer tests."""
    selected: list[str] = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and item.name.startswith("test_in_vm["):
            selected.append(callspec.params["inner_id"])
    if len(selected) == len(collect_inner_cached().node_ids):
        return [str(INSIDE.relative_to(REPO))]
    return selected


@functools.cache
def collect_inner_cached() -> Collected:
    return collect_inner()


@pytest.fixture(scope="session")
def vm_lane(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> LaneRun:
    reason = vm_unavailable()
    if reason is not None:
        return LaneRun(unavailable=reason)
    if collect_inner_cached().error is not None:
        return LaneRun(problem="the VM lane's tests could not be collected")
    share = tmp_path_factory.mktemp("vm-lane")
    junit = share / "junit.xml"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *_selected_inner_ids(request.session),
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        *INNER_PLUGINS,
    ]
    try:
        result = run_in_vm(
            argv, timeout=LANE_TIMEOUT, workdir=REPO, env=INNER_ENV, shared_rw=[share]
        )
    except VmError as exc:
        return LaneRun(problem=f"VM lane could not start: {exc}")
    boot = "-" if result.boot_seconds is None else f"{result.boot_seconds:.1f} s"
    LANE_NOTES.append(
        f"vm lane: boot {boot}, total {result.duration:.1f} s, inner pytest exit {result.exit_code}"
    )
    run = LaneRun(result=result)
    # pytest exits 0 (all passed) or 1 (some failed); anything else means the run itself broke.
    if result.exit_code not in (0, 1) or not junit.is_file():
        run.problem = (
            f"VM lane run failed as a whole (exit {result.exit_code}, "
            f"timed out: {result.timed_out}, boot {boot}, {result.duration:.1f} s)\n"
            f"--- console (tail) ---\n{_tail(result.console)}\n"
            f"--- inner pytest output (tail) ---\n{_tail(result.command_output)}"
        )
        return run
    try:
        run.outcomes = parse_junit(junit)
    except Exception as exc:  # a torn or malformed report is a lane failure, reported as such
        run.problem = f"cannot read the VM's JUnit report: {exc!r}\n{_tail(result.output)}"
    return run


@pytest.mark.vm
@pytest.mark.timeout(LANE_TIMEOUT + 120)
def test_in_vm(vm_lane: LaneRun, inner_id: str, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.id == _COLLECTION_ERROR:
        pytest.fail(f"cannot collect the VM lane's tests:\n{inner_id}", pytrace=False)
    if vm_lane.unavailable is not None:
        pytest.skip(f"VM lane unavailable: {vm_lane.unavailable}")
    if vm_lane.problem is not None:
        pytest.fail(vm_lane.problem, pytrace=False)
    outcome = vm_lane.outcomes.get(junit_key(inner_id))
    if outcome is None:
        output = vm_lane.result.command_output if vm_lane.result else ""
        pytest.fail(f"{inner_id} not in the VM's report\n{_tail(output)}", pytrace=False)
    if outcome.status == "skipped":
        pytest.skip(f"in the VM: {outcome.message}")
    if outcome.status == "failed":
        pytest.fail(f"in the VM: {outcome.message}\n{outcome.details}", pytrace=False)
