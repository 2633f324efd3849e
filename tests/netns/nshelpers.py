"""Helpers of the netns tests that build their own namespaces (rather than a whole Lab)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

#: Bound of every single `ip` command.
STEP_TIMEOUT = 20.0


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {what}")
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2's ip command")


def ip(*args: str) -> str:
    """Run `ip ARGS`, boundedly; its stdout, or RuntimeError with ip's own complaint."""
    proc = subprocess.run(
        ["ip", *args], check=False, capture_output=True, text=True, timeout=STEP_TIMEOUT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout
