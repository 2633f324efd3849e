"""The VM lane: tests that need a real kernel feature this machine may lack (IPVS).

``inside/`` holds tests that run inside a qemu VM booting Debian's kernel; ``test_vm_lane.py``
boots that VM once per session and reports each inner test as one of its own (see there).

The inner tests are not collected by a plain ``pytest tests`` run: the lane already reports
them, and outside the VM they would only be skipped duplicates. They are collected inside the
VM (``VIPKEEPER_IN_VM=1``) and whenever ``tests/vm/inside`` (or something in it) is named on
the command line, where their own conftest skips them with the reason if they cannot run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vm_lane_support import LANE_NOTES

INSIDE = Path(__file__).resolve().parent / "inside"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: runs inside the qemu VM lane (needs qemu and a kernel)")


def _named_on_command_line(config: pytest.Config) -> bool:
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == INSIDE or INSIDE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.resolve() != INSIDE:
        return None
    if os.environ.get("VIPKEEPER_IN_VM") == "1" or _named_on_command_line(config):
        return None
    return True


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for note in LANE_NOTES:
        terminalreporter.write_line(note)
