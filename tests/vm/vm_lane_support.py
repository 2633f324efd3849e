"""Helpers of the VM lane: which inner tests exist, and what the VM said about each.

Inner tests are identified on the host by their pytest node IDs (from a ``--collect-only``
subprocess, which resolves parametrization exactly as the run inside the VM will) and matched
to the VM's JUnit XML report through the (classname, name) pair pytest's junitxml plugin derives
from a node ID.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INSIDE = Path(__file__).resolve().parent / "inside"
COLLECT_TIMEOUT = 120.0
#: Lines the conftest prints in the terminal summary (boot and run times of the lane).
LANE_NOTES: list[str] = []

#: Plugin auto-loading costs seconds of TCG time at every start (hypothesis and friends):
#: the inner runs load only what the inner tests use; pyproject's `timeout` needs pytest-timeout.
INNER_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
INNER_PLUGINS = ("-p", "pytest_timeout")

_SEVERITY = {"passed": 0, "skipped": 1, "failed": 2}


@dataclass(frozen=True)
class Outcome:
    status: str  # "passed", "skipped" or "failed" (failure or error)
    message: str = ""
    details: str = ""


@dataclass(frozen=True)
class Collected:
    node_ids: list[str]
    error: str | None = None


def collect_inner() -> Collected:
    """Node IDs of the inner tests, relative to the repo (pytest's rootdir)."""
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
        *INNER_PLUGINS,
        str(INSIDE.relative_to(REPO)),
    ]
    try:
        done = subprocess.run(
            argv,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=COLLECT_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
            env={**os.environ, **INNER_ENV},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Collected([], f"collecting {INSIDE}: {exc}")
    ids = [line.strip() for line in done.stdout.splitlines() if "::" in line]
    if done.returncode != 0 or not ids:
        return Collected(
            [], f"collecting {INSIDE}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return Collected(ids)


def junit_key(node_id: str) -> tuple[str, str]:
    """The (classname, name) pytest's junitxml writes for ``node_id`` (mangle_test_address)."""
    path, bracket, params = node_id.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def parse_junit(path: Path) -> dict[tuple[str, str], Outcome]:
    """Outcome of each test case of a JUnit XML report; the worst one if a case repeats."""
    outcomes: dict[tuple[str, str], Outcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        key = (case.get("classname", ""), case.get("name", ""))
        outcome = Outcome("passed")
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "error" if child.tag == "error" else "failure"
                outcome = Outcome(
                    "failed", f"{kind}: {child.get('message', '')}", (child.text or "").strip()
                )
                break
            if child.tag == "skipped":
                outcome = Outcome("skipped", child.get("message", ""), (child.text or "").strip())
        previous = outcomes.get(key)
        if previous is None or _SEVERITY[outcome.status] > _SEVERITY[previous.status]:
            outcomes[key] = outcome
    return outcomes
