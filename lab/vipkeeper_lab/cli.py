"""``vipkeeper-lab``: the demo behind ``make run``, and cleanup after a lab that was SIGKILLed."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from vipkeeper_lab.agents import agent_executable
from vipkeeper_lab.demo import DemoOptions, demo_config, run_demo
from vipkeeper_lab.housekeeping import find_stale_labs, remove_stale_lab
from vipkeeper_lab.nodes import MAX_NODES

EXIT_USAGE = 2


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value.is_finite() or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _nodes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 2 <= value <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"a failover needs 2-{MAX_NODES} nodes, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vipkeeper-lab",
        description="Network-namespace lab for vipkeeper (needs root; touches only its own netns).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="election, failover with measured takeover, preemption; then remove everything",
    )
    demo.add_argument("--nodes", type=_nodes, default=3, help="VRRP nodes (default 3)")
    demo.add_argument("--agent", choices=("vipkeeper", "keepalived"), default="vipkeeper")
    demo.add_argument("--version", type=int, choices=(2, 3), default=3, help="VRRP version")
    demo.add_argument(
        "--interval", type=_decimal, default=Decimal(1), help="advert interval, s (e.g. 1 or 0.1)"
    )
    demo.add_argument(
        "--fault",
        choices=("crash", "kill"),
        default="crash",
        help="crash: kill -9 the master's agent and cut its link, as a power loss (default); "
        "kill: kill -9 only, the node keeps its stale VIP on the segment",
    )
    demo.add_argument(
        "--keep-going", action="store_true", help="carry on after a failed step; exit 1 at the end"
    )
    demo.add_argument("--keep-logs", action="store_true", help="keep the work directory and logs")
    cleanup = sub.add_parser("cleanup", help="remove what SIGKILLed labs left behind")
    cleanup.add_argument("--dry-run", action="store_true")
    cleanup.add_argument(
        "--unowned",
        action="store_true",
        help="also remove vkXXXXXX-* namespaces that have no owner record",
    )
    return parser


def _demo(args: argparse.Namespace) -> int:
    from vipkeeper_api import ConfigError, parse_spec  # noqa: PLC0415 - only the demo needs it

    opts = DemoOptions(
        nodes=args.nodes,
        agent=args.agent,
        version=args.version,
        interval=args.interval,
        fault=args.fault,
        keep_going=args.keep_going,
        keep_logs=args.keep_logs,
    )
    try:
        parse_spec(demo_config(opts, 150), source="demo settings")
    except ConfigError as exc:
        print(f"vipkeeper-lab: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if opts.agent == "keepalived" and shutil.which("keepalived") is None:
        print("vipkeeper-lab: keepalived is not installed", file=sys.stderr)
        return EXIT_USAGE
    if opts.agent == "vipkeeper" and not agent_executable().exists():
        print(f"vipkeeper-lab: {agent_executable()} not found", file=sys.stderr)
        return EXIT_USAGE
    return run_demo(opts)


def _cleanup(args: argparse.Namespace) -> int:
    stale = find_stale_labs()
    if not stale:
        print("no leftovers")
    for lab in stale:
        what = ", ".join([*lab.namespaces, *([str(lab.workdir)] if lab.workdir else [])])
        if lab.unowned and not args.unowned:
            print(f"not touching {lab.prefix} (no owner record; use --unowned): {what}")
            continue
        print(f"{'would remove' if args.dry_run else 'removing'} {lab.prefix}: {what}")
        if not args.dry_run:
            remove_stale_lab(lab)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("vipkeeper-lab: needs root (it creates network namespaces)", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "demo":
        return _demo(args)
    return _cleanup(args)


if __name__ == "__main__":
    sys.exit(main())
