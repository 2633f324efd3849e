"""`vipkeeper-agent`: run standalone from a YAML file, show local status, or check a file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from vipkeeper_api import ConfigError, NodeAssignmentSpec, load_spec

DEFAULT_STATUS_SOCKET = Path("/run/vipkeeper/agent.sock")


class _KeyValueFormatter(logging.Formatter):
    """One line per event, `key=value` pairs after the time and level: easy to grep and to parse."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vipkeeper-agent",
        description="vipkeeper node agent: VRRP floating IPs. Runs standalone from a YAML file.",
    )
    parser.add_argument(
        "--config", type=Path, help="standalone configuration (NodeAssignment spec YAML)"
    )
    parser.add_argument(
        "--status-socket",
        type=Path,
        default=DEFAULT_STATUS_SOCKET,
        help=f"Unix socket serving the JSON status (default {DEFAULT_STATUS_SOCKET})",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level",
    )
    sub = parser.add_subparsers(dest="command")
    status = sub.add_parser("status", help="print the running agent's status as JSON")
    status.add_argument(
        "--status-socket", type=Path, default=DEFAULT_STATUS_SOCKET, dest="sub_socket"
    )
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", type=Path)
    return parser


def _load(path: Path) -> NodeAssignmentSpec | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"vipkeeper-agent: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return None
    try:
        return load_spec(data, str(path))
    except ConfigError as exc:
        print(f"vipkeeper-agent: {exc}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "status":
        from vipkeeper_agent.status.server import read_status  # noqa: PLC0415

        try:
            status = read_status(args.sub_socket)
        except OSError as exc:
            print(
                f"vipkeeper-agent: no agent answers on {args.sub_socket} ({exc.strerror or exc}); "
                "is it running, and is --status-socket the same as the agent's?",
                file=sys.stderr,
            )
            return 1
        print(json.dumps(status, indent=2))
        return 0
    if args.command == "check-config":
        spec = _load(args.file)
        if spec is None:
            return 2
        print(f"{args.file}: OK")
        return 0
    if args.config is None:
        print(
            "vipkeeper-agent: --config FILE is required to run (or use 'status')", file=sys.stderr
        )
        return 2
    _setup_logging(args.log_level)
    spec = _load(args.config)
    if spec is None:
        return 2
    # Imported late so that `status` and `check-config` stay fast and need no netlink.
    from vipkeeper_agent.supervisor import AgentOptions, run_agent  # noqa: PLC0415

    try:
        asyncio.run(run_agent(AgentOptions(args.config, args.status_socket), spec))
    except PermissionError as exc:
        print(
            f"vipkeeper-agent: cannot start: {exc}. The agent needs CAP_NET_RAW (VRRP raw "
            "sockets) and CAP_NET_ADMIN (addresses): run it as root or grant both capabilities.",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"vipkeeper-agent: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
