"""Tests that run inside the VM lane's VM, as root, with Debian's kernel and its IPVS modules.

They reconfigure the root network namespace (IPVS table, addresses on ``lo``, IP forwarding),
which is harmless in the throwaway VM but not on a workstation: outside the VM
(``VIPKEEPER_IN_VM`` unset) they are skipped, and inside it they are skipped if IPVS is
unavailable after ``modprobe ip_vs``. Set ``VIPKEEPER_IN_VM=1`` by hand to run them on another
disposable machine that has IPVS.

Python is 15-30x slower under TCG: keep each test small, and prefer one process to many.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROC_IP_VS = Path("/proc/net/ip_vs")


@functools.cache
def _cannot_run() -> str | None:
    if os.environ.get("VIPKEEPER_IN_VM") != "1":
        return (
            "runs inside the VM lane (tests/vm/test_vm_lane.py), as it reconfigures the root "
            "network namespace; set VIPKEEPER_IN_VM=1 to run it on a disposable machine"
        )
    if os.geteuid() != 0:
        return "needs root"
    if not PROC_IP_VS.exists() and shutil.which("modprobe") is not None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["modprobe", "ip_vs"], capture_output=True, timeout=30, check=False)
    if not PROC_IP_VS.exists():
        return f"no IPVS in this kernel ({os.uname().release}): {PROC_IP_VS} missing after modprobe ip_vs"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    reason = _cannot_run()
    if reason is not None:
        pytest.skip(reason)
