"""Fixtures for the operator tier: a fresh Kubernetes API emulator per test.

A fresh emulator costs a few milliseconds (a thread, an event loop, a localhost port), so every
test gets its own: no state leaks between tests. kopf's own startup (~1 s) dominates.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ has no __init__.py (tests/operator would shadow the stdlib `operator`), so the shared
# test support package is found through sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.kapi import KubeAPI


@pytest.fixture
def kapi() -> Iterator[KubeAPI]:
    with KubeAPI() as api:
        yield api


@pytest.fixture
def kubeconfig(kapi: KubeAPI, tmp_path: Path) -> Path:
    """A kubeconfig file for the emulator (for ``KUBECONFIG=`` in a subprocess, or kubectl)."""
    return kapi.write_kubeconfig(tmp_path / "kubeconfig")
