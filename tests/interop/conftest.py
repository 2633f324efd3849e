"""Fixtures for running vipkeeper-agent against Debian's keepalived on one lab segment.

Every test here needs root (network namespaces) and the ``keepalived`` binary; without them the
tests are skipped with the reason, never silently deselected. The lab is torn down after each
test, whatever its outcome.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from vipkeeper_lab.nodes import Lab


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "interop tests need root to create network namespaces"
    if shutil.which("ip") is None:
        return "interop tests need iproute2 (ip)"
    if shutil.which("keepalived") is None:
        return "interop tests need Debian's keepalived (apt-get install keepalived)"
    if shutil.which("curl") is None:
        return "interop tests need curl in the client namespace"
    return None


@pytest.fixture(autouse=True)
def _interop_prerequisites() -> None:
    reason = _why_skip()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Two VRRP nodes (n1, n2), the client, and a web server on each node answering its name."""
    with Lab(nodes=2) as testbed:
        testbed.start_http_servers()
        yield testbed
