"""The system story (tests/system/test_system.py) against a real cluster with vipkeeper installed.

Skipped unless ``VIPKEEPER_E2E_KUBECONFIG`` names a kubeconfig; nothing obtainable on the build
machine runs it. The cluster must run the operator and the agent DaemonSet (the Helm chart) on
at least two nodes that share an L2 segment. Settings, all from the environment:

- ``VIPKEEPER_E2E_KUBECONFIG``: the kubeconfig (required).
- ``VIPKEEPER_E2E_ADDRESS``: a free address with prefix on the nodes' subnet, e.g.
  ``10.0.0.240/24`` (required: only the cluster's owner knows one).
- ``VIPKEEPER_E2E_NAMESPACE``: where the test's VirtualIP goes (default ``default``).
- ``VIPKEEPER_E2E_AGENT_SELECTOR``: label selector of the agent pods (default: the chart's).
- ``VIPKEEPER_E2E_NODES``: comma-separated nodes to use, preferred first (default: the nodes
  that run an agent pod, by name).
- ``VIPKEEPER_E2E_PROBE_PORT``: if set, the test also opens a TCP connection to the VIP on this
  port from where it runs (something on every node must listen there).
- ``VIPKEEPER_E2E_TIMEOUT``: bound of every wait, seconds (default 120).

What the system tier does in namespaces and this cannot: SIGKILL an agent process (here the
agent's pod is deleted with no grace period, and the DaemonSet replaces it) and cut the nodes off
the API (not done here: it would cut the test off too). The test leaves the cluster as it found
it: the VirtualIP is deleted and a cordon it made is undone, whatever happens.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from vipkeeper_api.resources import GROUP, VERSION, instance_name

KUBECONFIG = os.environ.get("VIPKEEPER_E2E_KUBECONFIG", "")
ADDRESS = os.environ.get("VIPKEEPER_E2E_ADDRESS", "")
NAMESPACE = os.environ.get("VIPKEEPER_E2E_NAMESPACE", "default")
AGENTS = os.environ.get(
    "VIPKEEPER_E2E_AGENT_SELECTOR",
    "app.kubernetes.io/name=vipkeeper,app.kubernetes.io/component=agent",
)
NODES = [n for n in os.environ.get("VIPKEEPER_E2E_NODES", "").split(",") if n]
PROBE_PORT = int(os.environ.get("VIPKEEPER_E2E_PROBE_PORT") or 0)
WAIT = float(os.environ.get("VIPKEEPER_E2E_TIMEOUT") or 120)

pytestmark = [
    pytest.mark.skipif(
        not KUBECONFIG,
        reason="no real cluster: set VIPKEEPER_E2E_KUBECONFIG (and VIPKEEPER_E2E_ADDRESS) to run "
        "the system story against one",
    ),
    pytest.mark.timeout(int(WAIT * 8)),
]

T = TypeVar("T")
Obj = dict[str, Any]


def until(what: str, predicate: Callable[[], T], seen: Callable[[], object]) -> T:
    """``predicate``'s first truthy value within WAIT s, else a failure naming ``what``."""
    deadline = time.monotonic() + WAIT
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT:g} s: {what}; seen: {seen()}")
        time.sleep(1.0)


class Cluster:
    """The few reads and writes the story needs, through the official client."""

    def __init__(self) -> None:
        from kubernetes import client, config  # noqa: PLC0415  (only when a cluster is given)

        self.api = config.new_client_from_config(config_file=KUBECONFIG)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.name = f"e2e-{secrets.token_hex(3)}"
        self.instance = instance_name(NAMESPACE, self.name, 6 if ":" in ADDRESS else 4)

    def virtual_ip(self) -> Obj | None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        try:
            found: Obj = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "virtualips", self.name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def status(self) -> Obj:
        return dict((self.virtual_ip() or {}).get("status") or {})

    def holder_ready(self) -> tuple[str | None, str | None]:
        status = self.status()
        ready: Obj = next((c for c in status.get("conditions", ()) if c["type"] == "Ready"), {})
        return status.get("holder"), ready.get("status")

    def reported(self, node: str) -> str | None:
        """The instance's state in ``node``'s NodeAssignment status (its agent's report)."""
        na = self.custom.get_cluster_custom_object(GROUP, VERSION, "nodeassignments", node)
        for item in (na.get("status") or {}).get("instances", ()):
            if item.get("name") == self.instance:
                return str(item.get("state"))
        return None

    def assigned(self, node: str) -> bool:
        na = self.custom.get_cluster_custom_object(GROUP, VERSION, "nodeassignments", node)
        return any(
            i.get("name") == self.instance for i in (na.get("spec") or {}).get("instances", ())
        )

    def holder_changes(self) -> list[str]:
        events = self.core.list_namespaced_event(
            NAMESPACE, field_selector=f"involvedObject.name={self.name}"
        )
        return [e.message for e in events.items if e.reason == "HolderChanged"]

    def agent_pod(self, node: str) -> Any | None:
        pods = self.core.list_pod_for_all_namespaces(
            label_selector=AGENTS, field_selector=f"spec.nodeName={node}"
        ).items
        live = [p for p in pods if p.metadata.deletion_timestamp is None]
        return live[0] if live else None

    def agent_nodes(self) -> list[str]:
        pods = self.core.list_pod_for_all_namespaces(label_selector=AGENTS).items
        return sorted({p.spec.node_name for p in pods if p.spec.node_name})

    def set_unschedulable(self, node: str, value: bool) -> None:
        self.core.patch_node(node, {"spec": {"unschedulable": value}})


def reachable(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if not ADDRESS:
        pytest.skip("VIPKEEPER_E2E_ADDRESS is not set: name a free address on the nodes' subnet")
    made = Cluster()
    try:
        yield made
    finally:
        if made.virtual_ip() is not None:
            made.custom.delete_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "virtualips", made.name
            )
        made.api.close()


def test_virtual_ip_lifecycle_on_a_real_cluster(cluster: Cluster) -> None:
    nodes = NODES or cluster.agent_nodes()
    if len(nodes) < 2:
        pytest.skip(f"needs agents on at least two nodes; found {nodes}")
    preferred = nodes[0]
    spec = {
        "addresses": [ADDRESS],
        "nodeSelector": {},
        "priorities": {"preferred": nodes},
        "vrrp": {"version": 3, "advertInterval": 0.2},
    }
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualIP",
        "metadata": {"name": cluster.name, "namespace": NAMESPACE},
        "spec": spec,
    }
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualips", body)
    ip = ADDRESS.split("/", 1)[0]

    # Applied: the preferred node holds the VIP, its agent and the status say so.
    until(f"status holder={preferred} Ready=True",
          lambda: cluster.holder_ready() == (preferred, "True"), cluster.status)  # fmt: skip
    assert cluster.reported(preferred) == "MASTER"
    if PROBE_PORT:
        until(f"{ip}:{PROBE_PORT} reachable", lambda: reachable(ip, PROBE_PORT), lambda: "refused")

    # The holder's agent dies (its pod deleted at once): another node takes over, the status and
    # a HolderChanged Event say so; the DaemonSet's new pod takes the VIP back (preferred).
    pod = cluster.agent_pod(preferred)
    assert pod is not None, f"no agent pod on {preferred} (selector {AGENTS})"
    cluster.core.delete_namespaced_pod(
        pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
    )
    until(f"a HolderChanged Event from {preferred}",
          lambda: [m for m in cluster.holder_changes() if m.startswith(f"{preferred} →")],
          cluster.holder_changes)  # fmt: skip
    until(f"the agent pod on {preferred} replaced",
          lambda: (p := cluster.agent_pod(preferred)) is not None and p.metadata.uid != pod.metadata.uid,
          lambda: cluster.agent_pod(preferred))  # fmt: skip
    until(f"status back to holder={preferred} Ready=True",
          lambda: cluster.holder_ready() == (preferred, "True"), cluster.status)  # fmt: skip

    # Cordoning the holder moves the VIP; the cordon is undone whatever happens.
    node = cluster.core.read_node(preferred)
    was_unschedulable = bool(node.spec.unschedulable)
    cluster.set_unschedulable(preferred, True)
    try:

        def moved() -> str | None:
            holder, ready = cluster.holder_ready()
            return holder if holder not in (None, preferred) and ready == "True" else None

        holder = until("the VIP to leave the cordoned node", moved, cluster.status)
        assert holder is not None and cluster.reported(holder) == "MASTER"
        if PROBE_PORT:
            until(f"{ip}:{PROBE_PORT} reachable after the move",
                  lambda: reachable(ip, PROBE_PORT), lambda: "refused")  # fmt: skip
    finally:
        cluster.set_unschedulable(preferred, was_unschedulable)

    # Deleted: the nodes resign, the finalizer is released, the object disappears.
    cluster.custom.delete_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "virtualips", cluster.name
    )
    until("the VirtualIP gone (finalizer released)",
          lambda: cluster.virtual_ip() is None, cluster.virtual_ip)  # fmt: skip
    until("no NodeAssignment listing the instance",
          lambda: not any(cluster.assigned(n) for n in nodes),
          lambda: [n for n in nodes if cluster.assigned(n)])  # fmt: skip
