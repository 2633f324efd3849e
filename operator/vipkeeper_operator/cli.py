"""``vipkeeper-operator``: run the operator (kopf, cluster-wide)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vipkeeper_api.resources import VRID_RANGE
from vipkeeper_operator.metrics import DEFAULT_ADDRESS, metrics_address


def _vrid_range(text: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--vrid-range {text!r}: give two numbers as LOW-HIGH, e.g. 1-200"
        ) from None
    if not VRID_RANGE[0] <= low <= high <= VRID_RANGE[1]:
        raise argparse.ArgumentTypeError(
            f"--vrid-range {text!r}: VRIDs are 1..255 and LOW must not exceed HIGH, e.g. 1-200"
        )
    return low, high


def _metrics_address(text: str) -> tuple[str, int] | None:
    try:
        return metrics_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--metrics-address: {exc}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vipkeeper-operator",
        description="Turn VirtualIPs and VirtualServers into one NodeAssignment per node.",
    )
    p.add_argument(
        "--vrid-range",
        type=_vrid_range,
        default=VRID_RANGE,
        help="VRIDs the operator may allocate, LOW-HIGH (default 1-255); leave the rest to "
        "other VRRP routers on your networks",
    )
    p.add_argument(
        "--peering",
        metavar="NAME",
        help="run as one of several replicas: the ClusterKopfPeering NAME elects the active one",
    )
    p.add_argument("--priority", type=int, help="peering priority (default: from the pod name)")
    p.add_argument(
        "--metrics-address",
        type=_metrics_address,
        default=DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics on every replica (default "
        ":9651, every IPv4 address; [::]:9651 for IPv6; off: none)",
    )
    p.add_argument("--liveness", metavar="URL", help="e.g. http://0.0.0.0:8080/healthz")
    p.add_argument("--webhook-port", type=int, help="serve the validating admission webhook")
    p.add_argument("--webhook-host", help="the name the API server reaches the webhook at")
    p.add_argument("--webhook-cert", help="TLS certificate (PEM) of the webhook")
    p.add_argument("--webhook-key", help="TLS private key (PEM) of the webhook")
    p.add_argument("--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Imported here: the handlers register themselves with kopf on import.
    import kopf  # noqa: PLC0415

    from vipkeeper_operator import handlers  # noqa: PLC0415

    handlers.SETTINGS.update(vrid_range=args.vrid_range, peering=args.peering)
    handlers.SETTINGS["priority"] = args.priority
    handlers.SETTINGS["metrics"] = args.metrics_address
    if args.webhook_port is not None:
        handlers.SETTINGS["webhook"] = kopf.WebhookServer(
            port=args.webhook_port,
            host=args.webhook_host,
            certfile=args.webhook_cert,
            pkeyfile=args.webhook_key,
        )
    # Peering is set up by the startup handler from SETTINGS (one place for it).
    kopf.run(clusterwide=True, liveness_endpoint=args.liveness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
