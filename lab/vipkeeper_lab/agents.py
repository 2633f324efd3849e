"""Handles on the VRRP daemons a lab runs: our vipkeeper-agent, or keepalived as the reference.

Both kinds expose the same surface (``.node``, ``.proc``, ``.status()``, ``.state()``) so that a
demo, a test or a benchmark is written once and pointed at either implementation.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Mapping
from decimal import Decimal
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

import yaml

from vipkeeper_lab.procs import Proc

STATUS_TIMEOUT = 2.0
MAX_STATUS_BYTES = 4 * 1024 * 1024


class StatusUnavailableError(RuntimeError):
    """The daemon did not report a status (not started yet, stopped, or crashed)."""


class AgentHandle:
    """One VRRP daemon running in one node's namespace."""

    kind = "agent"

    def __init__(self, node: str, proc: Proc, config: Any, config_path: Path) -> None:
        self.node = node
        self.proc = proc
        #: What the daemon was started with, so that the lab can restart it identically.
        self.config = config
        self.config_path = config_path

    def status(self) -> dict[str, Any]:
        """The status document of the CLI contract: ``{"instances": [...]}``."""
        raise NotImplementedError

    def state(self, instance: str | None = None) -> str | None:
        """State of ``instance`` (default: the first one), or None if the daemon cannot tell."""
        try:
            instances = self.status()["instances"]
        except (StatusUnavailableError, KeyError, TypeError):
            return None
        for item in instances:
            if instance is None or item.get("name") == instance:
                state = item.get("state")
                return state if isinstance(state, str) else None
        return None

    def alive(self) -> bool:
        return self.proc.alive()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.node} pid={self.proc.pid}>"


class VipkeeperHandle(AgentHandle):
    kind = "vipkeeper"

    def __init__(
        self,
        node: str,
        proc: Proc,
        config: Mapping[str, Any],
        config_path: Path,
        socket_path: Path,
        executable: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(node, proc, config, config_path)
        self.socket_path = socket_path
        self.executable = executable
        self.extra_args = extra_args

    def status(self) -> dict[str, Any]:
        # A pathname Unix socket is reachable from any network namespace, so no `ip netns exec`
        # (and no Python start-up) is needed to ask for the status.
        return read_status_socket(self.socket_path)


def agent_executable() -> Path:
    """vipkeeper-agent from the same environment as the running interpreter.

    sys.executable is not resolved: in a venv it is a symlink to the base interpreter, and the
    console scripts live next to the symlink, not next to its target.
    """
    return Path(sys.executable).parent / "vipkeeper-agent"


def vipkeeper_argv(
    config_path: Path, socket_path: Path, *, log_level: str = "info", executable: Path | None = None
) -> list[str]:
    exe = executable or agent_executable()
    return [
        str(exe),
        *("--config", str(config_path)),
        *("--status-socket", str(socket_path)),
        *("--log-level", log_level),
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, IPv4Address | IPv6Address | IPv4Interface | IPv6Interface):
        return str(value)
    return value


def render_agent_yaml(config: Mapping[str, Any]) -> str:
    """The standalone config file for vipkeeper-agent, keys in the order the caller gave them."""
    return yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)


def read_status_socket(path: Path, timeout: float = STATUS_TIMEOUT) -> dict[str, Any]:
    """Connect, read until EOF, parse JSON; every failure is a StatusUnavailableError."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_STATUS_BYTES:
                    raise StatusUnavailableError(
                        f"{path}: status larger than {MAX_STATUS_BYTES} bytes"
                    )
                chunks.append(chunk)
    except OSError as exc:
        raise StatusUnavailableError(f"{path}: {exc}") from None
    try:
        document = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise StatusUnavailableError(f"{path}: not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise StatusUnavailableError(f"{path}: no 'instances' list in the status")
    return document
