"""The product operator (``vipkeeper_operator.handlers``) run by kopf against the API emulator, and
the objects and reads its end-to-end tests share (tests/operator/test_operator*.py).

The operator is started the way ``vipkeeper-operator`` starts it: the registry the handlers module
registered itself in (``handlers.REGISTRY``: an earlier KopfRunner in this process made another
one kopf's default), settings from ``handlers.SETTINGS``, the kubernetes client configured from a
kubeconfig by the product's own startup (``kube.load_config``) and kopf logged in by its own
``login_via_client``. The only test-side hooks: the kubeconfig location (the client reads
$KUBECONFIG once, at import, so a test cannot set it later) and a recording subclass of the
Controller, so that a test can tell that a pass ran and read its counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes.config import kube_config

from vipkeeper_api.models import NodeAssignmentSpec, VrrpInstance
from vipkeeper_api.resources import API_VERSION
from vipkeeper_operator import handlers
from vipkeeper_operator.controller import Controller

from .kapi import KubeAPI

Obj = dict[str, Any]
#: Every wait is bounded by this (seconds): a pass takes milliseconds, kopf's start about one.
WAIT = 8.0


class RecordingController(Controller):
    """The product's Controller, remembered so that tests can read its counters."""

    made: list[RecordingController] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        RecordingController.made.append(self)


@contextmanager
def run_operator(
    kapi: KubeAPI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    webhook: kopf.WebhookServer | None = None,
) -> Iterator[Controller]:
    """The operator, running in a thread until the block ends; yields its Controller."""
    kubeconfig = kapi.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.setitem(handlers.SETTINGS, "webhook", webhook)
    monkeypatch.setitem(handlers.SETTINGS, "debounce", 0.02)
    monkeypatch.setattr(handlers, "Controller", RecordingController)
    RecordingController.made.clear()
    with KopfRunner(
        ["run", "-A", "--standalone"], registry=handlers.REGISTRY, timeout=15
    ) as runner:
        controller = wait_for(lambda: RecordingController.made, what="the operator's startup")[0]
        yield controller
    assert runner.exception is None, runner.output[-3000:]
    assert runner.exit_code == 0, runner.output[-3000:]


def wait_for(predicate: Any, timeout: float = WAIT, what: str | Callable[[], str] = "") -> Any:
    """``predicate``'s first truthy value; ``what`` (or what it returns, at the timeout) says
    what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise TimeoutError(f"not within {timeout} s: {said} (last: {value!r})")
        time.sleep(0.02)


def quiet(controller: Controller, seconds: float = 0.3, timeout: float = WAIT) -> None:
    """Wait until the operator made no pass for ``seconds`` (its watch echoes have settled)."""
    deadline = time.monotonic() + timeout
    passes, since = controller.counters.passes, time.monotonic()
    while time.monotonic() - since < seconds:
        if time.monotonic() > deadline:
            raise TimeoutError("the operator did not settle")
        time.sleep(0.02)
        if controller.counters.passes != passes:
            passes, since = controller.counters.passes, time.monotonic()


# --- objects --------------------------------------------------------------------------------


def node(name: str, ip: str, *, ready: bool = True, labels: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def virtual_ip(name: str, *addresses: str, **spec: Any) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualIP",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"addresses": list(addresses), **spec},
    }


def virtual_server(name: str, vip: str, port: int, **spec: Any) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualServer",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"virtualIPRef": {"name": vip}, "port": port, **spec},
    }


def three_nodes(kapi: KubeAPI, **labels: str) -> None:
    """n1, n2, n3: Ready, with InternalIPs from TEST-NET-2 (never used as a destination)."""
    for index in (1, 2, 3):
        kapi.create(node(f"n{index}", f"198.51.100.{index}", labels=dict(labels)))


# --- reads ----------------------------------------------------------------------------------


def spec_of(kapi: KubeAPI, node_name: str) -> NodeAssignmentSpec | None:
    """The node's NodeAssignment spec as its agent reads it (the shared model), or None."""
    na = kapi.get("NodeAssignment", node_name, namespace="")
    if na is None or not isinstance(na.get("spec"), dict):
        return None
    return NodeAssignmentSpec.model_validate(na["spec"])


def instance(kapi: KubeAPI, node_name: str, name: str = "default-web") -> VrrpInstance | None:
    spec = spec_of(kapi, node_name)
    return next((i for i in spec.instances if i.name == name), None) if spec else None


def addresses(kapi: KubeAPI, node_name: str, name: str = "default-web") -> list[str]:
    """The addresses of the node's instance (none without one)."""
    found = instance(kapi, node_name, name)
    return [str(a) for a in found.addresses] if found is not None else []


def vip_status(kapi: KubeAPI, name: str = "web") -> Obj:
    return dict((kapi.get("VirtualIP", name) or {}).get("status") or {})


def condition(status: Obj, type_: str) -> Obj:
    return next((c for c in status.get("conditions", ()) if c["type"] == type_), {})


def spec_writes(kapi: KubeAPI) -> int:
    """NodeAssignment creations and spec replacements the API has served (kopf's own metadata
    patches and the agents' status writes are not counted)."""
    count = 0
    for request in kapi.requests():
        if request.resource is None or request.resource.plural != "nodeassignments":
            continue
        if request.method == "POST":
            count += 1
        elif request.method == "PATCH" and request.subresource is None:
            data = request.data if isinstance(request.data, list) else []
            count += any(op.get("path") == "/spec" for op in data)
    return count


def report(kapi: KubeAPI, node_name: str, *instances: Obj) -> None:
    """Write the node's NodeAssignment status as its agent does (just now: the operator does not
    believe a report whose ``updated`` is old)."""
    status = {"updated": stamp(0), "instances": list(instances)}
    kapi.patch_status("NodeAssignment", node_name, status, namespace="")


def stamp(ago: float) -> str:
    """RFC 3339 (UTC, milliseconds) for ``ago`` seconds before now."""
    moment = datetime.now(UTC) - timedelta(seconds=ago)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def instance_report(state: str, priority: int, ago: float, name: str = "default-web") -> Obj:
    """One instance as an agent reports it: in ``state`` since ``ago`` seconds."""
    since = stamp(ago)
    return {
        "name": name,
        "state": state,
        "priority": priority,
        "since": since,
        "lastTransition": {
            "reason": "Preempted" if state == "MASTER" else "Preempted-by-peer",
            "at": since,
        },
    }


def events(kapi: KubeAPI, reason: str, name: str = "web") -> list[Obj]:
    return [
        e
        for e in kapi.list("Event", "default")
        if e.get("reason") == reason and e["involvedObject"].get("name") == name
    ]
