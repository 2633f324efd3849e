"""kopf handlers: mirror watched objects into the store, hold VirtualIP deletion until every node
has resigned it, and admit or refuse VirtualIPs/VirtualServers. All decisions live in the pure
planning; every handler fits on a screen.

The same module serves ``vipkeeper-operator`` (see :mod:`vipkeeper_operator.cli`) and tests that
run it with ``kopf.testing.KopfRunner``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import kopf

from vipkeeper_api.resources import GROUP, VERSION
from vipkeeper_operator import metrics, parse
from vipkeeper_operator.controller import Controller
from vipkeeper_operator.kube import Kube, load_config
from vipkeeper_operator.planning.admission import check_virtual_ip, check_virtual_server
from vipkeeper_operator.planning.reconcile import resign_pending
from vipkeeper_operator.store import Store

log = logging.getLogger("vipkeeper.operator")

#: The registry the handlers below go to (kopf's default at import). Whoever runs them in a process
#: that ran another kopf registry passes this one: `kopf run` makes each registry it runs the default.
REGISTRY = kopf.get_default_registry()

#: (kopf resource selector, store plural). Secrets are not watched: the controller reads the few
#: that VirtualIPs name.
WATCHED: tuple[tuple[tuple[str, ...], str], ...] = (
    (("v1", "nodes"), "nodes"),
    ((GROUP, VERSION, "virtualips"), "virtualips"),
    ((GROUP, VERSION, "virtualservers"), "virtualservers"),
    ((GROUP, VERSION, "nodeassignments"), "nodeassignments"),
    (("v1", "services"), "services"),
    (("discovery.k8s.io", "v1", "endpointslices"), "endpointslices"),
)

#: Whoever starts the operator sets these before kopf runs (cli.py, tests).
SETTINGS: dict[str, Any] = {
    "vrid_range": (1, 255),
    "peering": None,  # a peering name: HA mode, one active replica
    "priority": None,
    "webhook": None,  # a kopf.WebhookServer, or None: no admission webhook
    "debounce": 0.05,
    "metrics": None,  # (host, port) to serve /metrics at, or None
}


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our status patches replace the whole status: kopf's own bookkeeping lives in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.persistence.finalizer = f"{GROUP}/resign"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    if SETTINGS["peering"]:
        settings.peering.name = SETTINGS["peering"]
        settings.peering.mandatory = True
        # Equal priorities freeze every replica: each replica takes its own.
        settings.peering.priority = SETTINGS["priority"] or _replica_priority()
    else:
        settings.peering.standalone = True
    if SETTINGS["webhook"] is not None:
        settings.admission.server = SETTINGS["webhook"]
        settings.admission.managed = f"validate.{GROUP}"
    else:
        # kopf stops an operator that has validate handlers but no server.
        settings.admission.server = _no_webhook
    # kopf logs in only after the startup handlers, and Kube() takes the client's configuration
    # as it is when constructed: without this it would talk to the client's default localhost.
    load_config()
    store = Store(vrid_range=SETTINGS["vrid_range"])
    memo.store = store
    memo.controller = Controller(store, Kube(), debounce=SETTINGS["debounce"])
    if SETTINGS["metrics"] is not None:
        host, port = SETTINGS["metrics"]
        try:
            memo.metrics = metrics.serve(host, port, memo.controller)
        except OSError:
            # Failover of the VIPs matters more than their metrics: run on without them.
            log.exception("event=metrics_failed host=%s port=%d", host or "*", port)
    memo.task = asyncio.create_task(memo.controller.run(), name="vipkeeper-reconcile")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    served = memo.get("metrics")
    if served is not None:
        await served.close()


def _mirror(plural: str) -> Any:
    async def on_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
        obj = event["object"]
        if event["type"] == "DELETED":
            memo.store.forget(plural, obj)
            memo.controller.forget_status(plural, parse.object_key(obj))
            memo.controller.changed()
        elif memo.store.observe(plural, obj):
            memo.controller.changed()

    on_event.__name__ = f"mirror_{plural}"
    return on_event


for _resource, _plural in WATCHED:
    kopf.on.event(*_resource)(_mirror(_plural))


#: Seconds between passes that only let time move conditions on.
RESYNC = 10.0


@kopf.timer(GROUP, VERSION, "virtualips", interval=RESYNC, idle=0)
async def resync(memo: kopf.Memo, **_: Any) -> None:
    """Time moves conditions on (a split brain counts from its start): a pass about every
    RESYNC seconds while this replica is the active one (kopf pauses timers of a frozen replica).

    On VirtualIPs, which carry our finalizer anyway: kopf puts it on whatever a timer watches,
    and on NodeAssignments it held every deletion for the operator. Every VirtualIP has a timer of
    its own, so each wakes the controller only if no pass ran lately: one pass per interval
    however many VirtualIPs (not one per object)."""
    finished = memo.controller.counters.finished
    if not finished or time.monotonic() - finished[-1] >= RESYNC / 2:
        memo.controller.changed()


@kopf.on.delete(GROUP, VERSION, "virtualips")
async def resign(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Hold the finalizer until no node carries the VIP any more."""
    memo.controller.changed()
    pending = resign_pending(memo.store.snapshot(), memo.store.assignments, f"{namespace}/{name}")
    if pending:
        raise kopf.TemporaryError(f"waiting for nodes to resign: {', '.join(pending)}", delay=1)


@kopf.on.validate(GROUP, VERSION, "virtualips")
def admit_virtual_ip(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    parsed = parse.virtual_ip(body)
    _admit(
        parsed
        if isinstance(parsed, parse.Rejected)
        else check_virtual_ip(memo.store.snapshot(), parsed)
    )


@kopf.on.validate(GROUP, VERSION, "virtualservers")
def admit_virtual_server(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    parsed = parse.virtual_server(body)
    _admit(
        parsed
        if isinstance(parsed, parse.Rejected)
        else check_virtual_server(memo.store.snapshot(), parsed)
    )


def _admit(outcome: parse.Rejected | list[str]) -> None:
    """Refuse with the loader's message, or with the rules the schema cannot express."""
    problems = [outcome.message] if isinstance(outcome, parse.Rejected) else outcome
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)


async def _no_webhook(_: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
    """The admission "server" without --webhook-port: the API server never calls it."""
    await asyncio.Event().wait()
    configs: tuple[kopf.WebhookClientConfig, ...] = ()
    for config in configs:  # never: this only makes the function an async generator
        yield config


def _replica_priority() -> int:
    """A priority of this pod's own (a hash of its name), so that exactly one replica acts."""
    name = os.environ.get("POD_NAME") or os.uname().nodename
    return 100 + zlib.crc32(name.encode()) % 100_000
