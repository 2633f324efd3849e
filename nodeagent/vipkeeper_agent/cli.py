"""`vipkeeper-agent`: run standalone from a YAML file, show local status, or check a file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vipkeeper_agent.scripts import ScriptPolicy, verify
from vipkeeper_api import ConfigError, NodeAssignmentSpec, load_spec
from vipkeeper_api.analysis import check_load_warnings, weight_gap_warnings

if TYPE_CHECKING:
    from vipkeeper_agent.supervisor import AgentOptions

DEFAULT_STATUS_SOCKET = Path("/run/vipkeeper/agent.sock")
DEFAULT_SCRIPT_DIR = Path("/etc/vipkeeper/scripts")
DEFAULT_MAINTENANCE_FILE = Path("/etc/vipkeeper/down")
DEFAULT_SCRIPT_USER = "nobody"
DEFAULT_CACHE_DIR = Path("/var/lib/vipkeeper")
DEFAULT_METRICS_PORT = 9650
CACHE_FILE = "assignment.yaml"


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
        description="vipkeeper node agent: VRRP floating IPs and IPVS load balancing. Runs "
        "standalone from a YAML file, or (--kubernetes) from the node's NodeAssignment.",
    )
    parser.add_argument(
        "--config", type=Path, help="standalone configuration (NodeAssignment spec YAML)"
    )
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        help="run from this node's NodeAssignment (kept in --cache-dir, so that the agent starts "
        "and runs while the API is away) and report status and Events to it",
    )
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME"),
        help="with --kubernetes: the node (and NodeAssignment) name (default $NODE_NAME)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help=f"with --kubernetes: where the last good assignment is kept (default {DEFAULT_CACHE_DIR})",
    )
    parser.add_argument(
        "--status-socket",
        type=Path,
        default=DEFAULT_STATUS_SOCKET,
        help=f"Unix socket serving the JSON status (default {DEFAULT_STATUS_SOCKET})",
    )
    parser.add_argument(
        "--script-dir",
        type=Path,
        default=DEFAULT_SCRIPT_DIR,
        help="the only directory exec checks and notify scripts are taken from; it and the "
        f"scripts must be owned by root and not writable by others (default {DEFAULT_SCRIPT_DIR})",
    )
    parser.add_argument(
        "--script-user",
        default=DEFAULT_SCRIPT_USER,
        help=f"user that scripts run as (default {DEFAULT_SCRIPT_USER}; 'root' to run as root)",
    )
    parser.add_argument(
        "--maintenance-file",
        type=Path,
        default=DEFAULT_MAINTENANCE_FILE,
        help="while this file exists the node hands its VIPs over and stays BACKUP "
        f"(default {DEFAULT_MAINTENANCE_FILE})",
    )
    parser.add_argument(
        "--notify-timeout",
        type=_positive_seconds,
        default=10.0,
        help="seconds a notify script may run before it is killed (default 10)",
    )
    parser.add_argument(
        "--dont-release-ipvs",
        action="store_true",
        help="leave the IPVS services this agent owns in the kernel when it stops (keepalived's "
        "option of the same name); a restart with the same configuration then changes nothing",
    )
    parser.add_argument(
        "--metrics-address",
        type=_metrics_address,
        metavar="HOST:PORT",
        help="serve Prometheus /metrics, /healthz and /readyz here (:PORT for every address, "
        f"[V6]:PORT; 'off'); default off standalone, :{DEFAULT_METRICS_PORT} with --kubernetes",
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
    status.add_argument(
        "--ipvs",
        action="store_true",
        help="print the IPVS services this agent owns as `ipvsadm -Ln` would, not JSON",
    )
    check = sub.add_parser(
        "check-config",
        help="validate configuration files and exit; given every node's file, also warn about "
        "check weights that can never move a VIP",
    )
    check.add_argument("files", type=Path, nargs="+", metavar="FILE")
    check.add_argument(
        "--script-dir",
        type=Path,
        dest="check_script_dir",
        help="also check that every script the files name is in this directory and safe to run",
    )
    return parser


def _metrics_address(text: str) -> tuple[str, int] | tuple[()]:
    if text == "off":
        return ()
    from vipkeeper_agent.metrics import parse_address  # noqa: PLC0415

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text} is out of range; give 0 < seconds <= 3600")
    return value


def _script_policy(directory: Path, user: str) -> ScriptPolicy:
    return ScriptPolicy(directory, user=None if user == "root" else user)


def _check_config(files: list[Path], script_dir: Path | None) -> int:
    specs: dict[str, NodeAssignmentSpec] = {}
    failed = False
    for path in files:
        spec = _load(path)
        if spec is None:
            failed = True
            continue
        if script_dir is not None:
            problems = verify(_script_policy(script_dir, DEFAULT_SCRIPT_USER), spec.scripts())
            for problem in problems:
                print(f"vipkeeper-agent: {path}: {problem}", file=sys.stderr)
            failed = failed or bool(problems)
        specs[path.stem if len(files) > 1 else str(path)] = spec
    warnings = weight_gap_warnings(specs)
    for spec in specs.values():
        warnings += check_load_warnings(spec)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if failed:
        return 2
    for path in files:
        print(f"{path}: OK")
    return 0


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
        if args.ipvs:
            print((status.get("ipvs") or {}).get("text", ""), end="")
            return 0
        print(json.dumps(status, indent=2))
        return 0
    if args.command == "check-config":
        return _check_config(args.files, args.check_script_dir)
    if args.kubernetes:
        return _run_kubernetes(args)
    if args.config is None:
        print(
            "vipkeeper-agent: --config FILE is required to run (or use 'status')", file=sys.stderr
        )
        return 2
    _setup_logging(args.log_level)
    spec = _load(args.config)
    if spec is None:
        return 2
    for warning in check_load_warnings(spec):
        logging.getLogger("vipkeeper.agent").warning("event=config_warning detail=%r", warning)
    policy = _script_policy(args.script_dir, args.script_user)
    problems = verify(policy, spec.scripts())
    if problems:
        for problem in problems:
            print(f"vipkeeper-agent: {args.config}: {problem}", file=sys.stderr)
        return 2
    # Imported late so that `status` and `check-config` stay fast and need no netlink.
    from vipkeeper_agent.supervisor import run_agent  # noqa: PLC0415

    return _start(lambda: run_agent(_options(args, args.config, policy), spec))


def _options(args: argparse.Namespace, config: Path, policy: ScriptPolicy) -> AgentOptions:
    from vipkeeper_agent.supervisor import AgentOptions  # noqa: PLC0415

    return AgentOptions(
        config,
        args.status_socket,
        scripts=policy,
        maintenance_file=args.maintenance_file,
        notify_timeout=args.notify_timeout,
        release_ipvs=not args.dont_release_ipvs,
        metrics_address=_metrics_option(args),
    )


def _metrics_option(args: argparse.Namespace) -> tuple[str, int] | None:
    if args.metrics_address is None:  # not given
        return ("", DEFAULT_METRICS_PORT) if args.kubernetes else None
    return args.metrics_address or None


def _run_kubernetes(args: argparse.Namespace) -> int:
    if args.config is not None:
        print(
            "vipkeeper-agent: --kubernetes runs from the NodeAssignment; drop --config",
            file=sys.stderr,
        )
        return 2
    if not args.node_name:
        print(
            "vipkeeper-agent: --kubernetes needs --node-name or $NODE_NAME (in the DaemonSet: "
            "the downward API's spec.nodeName)",
            file=sys.stderr,
        )
        return 2
    _setup_logging(args.log_level)
    # Imported late: standalone mode must not need the kubernetes client.
    from kubernetes import client, config  # noqa: PLC0415

    from vipkeeper_agent.kube.agent import run_kubernetes  # noqa: PLC0415

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            print(
                f"vipkeeper-agent: no Kubernetes API configured (not in a pod, no kubeconfig): {exc}",
                file=sys.stderr,
            )
            return 2
    # The source, reporter and Event sink retry with their own backoff; urllib3's three quick
    # retries per request would only add a log line each while the API is away.
    configuration.retries = 0
    api = client.ApiClient(configuration)
    policy = _script_policy(args.script_dir, args.script_user)
    options = _options(args, args.cache_dir / CACHE_FILE, policy)

    def accept(spec: NodeAssignmentSpec) -> list[str]:
        return verify(policy, spec.scripts())

    return _start(lambda: run_kubernetes(options, args.node_name, api, accept))


def _start(run: Callable[[], Coroutine[Any, Any, None]]) -> int:
    try:
        asyncio.run(run())
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
