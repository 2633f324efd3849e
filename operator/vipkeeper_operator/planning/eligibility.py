"""Which nodes may carry a VirtualIP, and why the others may not.

A cordoned node (``kubectl cordon``, the first step of ``kubectl drain``) is *demoted*, not
dropped: it keeps running the instance at the lowest priority, so the VIP moves to another node by
an ordinary preemption while this one is still up to hand it over, before eviction stops its agent.
Dropping it instead would only make the VIP move later, by a failover.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from vipkeeper_operator.world import Node, VirtualIP, World


class Eligibility(StrEnum):
    ELIGIBLE = "eligible"
    #: Runs the instance at the lowest priority: it holds the VIP only if nobody else can.
    DEMOTED = "demoted"
    #: Does not run the instance (resigns it if it did).
    INELIGIBLE = "ineligible"


@dataclass(frozen=True, slots=True)
class Verdict:
    node: str
    eligibility: Eligibility
    reason: str

    @property
    def carries(self) -> bool:
        """The node runs the VRRP instance (as a possible holder, however unlikely)."""
        return self.eligibility != Eligibility.INELIGIBLE


#: "namespace/service" -> the nodes with at least one ready, not terminating endpoint of it.
EndpointIndex = Mapping[str, frozenset[str]]


def endpoint_index(world: World) -> dict[str, frozenset[str]]:
    """Every Service's nodes with a ready endpoint, computed once per pass (not once per VIP)."""
    nodes: dict[str, set[str]] = {}
    for eps in world.endpoint_slices.values():
        found = nodes.setdefault(f"{eps.namespace}/{eps.service}", set())
        found.update(
            e.node for e in eps.endpoints if e.ready and not e.terminating and e.node is not None
        )
    return {key: frozenset(value) for key, value in nodes.items()}


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def verdict(vip: VirtualIP, node: Node, endpoints: EndpointIndex) -> Verdict:
    """One node's verdict for one VirtualIP; the first rule that fails gives the reason."""

    def no(reason: str) -> Verdict:
        return Verdict(node.name, Eligibility.INELIGIBLE, reason)

    spec = vip.spec
    if node.deleting:
        return no("the node is being deleted")
    if not node.ready:
        return no("the node is not Ready")
    if not selector_matches(spec.node_selector, node.labels):
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(spec.node_selector.items()))
        return no(f"the node's labels do not match nodeSelector ({wanted})")
    if spec.service_ref is not None:
        service = f"{vip.namespace}/{spec.service_ref.name}"
        if node.name not in endpoints.get(service, frozenset()):
            return no(f"no ready endpoint of Service {service} runs on the node (serviceRef)")
    if node.unschedulable:
        return Verdict(
            node.name,
            Eligibility.DEMOTED,
            "the node is cordoned (unschedulable, e.g. being drained): demoted to the lowest "
            "priority so that the VIP moves to another node before its pods are evicted"
            + (
                ""
                if spec.vrrp.preempt
                else " (vrrp.preempt is false: a node that holds the VIP keeps it until it stops)"
            ),
        )
    reason = "matches nodeSelector, Ready, schedulable"
    if spec.service_ref is not None:
        reason += f", runs a ready endpoint of Service {spec.service_ref.name}"
    return Verdict(node.name, Eligibility.ELIGIBLE, reason)


def evaluate(
    world: World, vip: VirtualIP, endpoints: EndpointIndex | None = None
) -> dict[str, Verdict]:
    """Every node's verdict for ``vip`` (node name -> verdict). Pass ``endpoints`` (from
    :func:`endpoint_index`) when evaluating many VIPs against the same world."""
    index = endpoint_index(world) if endpoints is None else endpoints
    return {name: verdict(vip, node, index) for name, node in sorted(world.nodes.items())}
