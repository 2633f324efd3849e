"""Which nodes may carry a VirtualIP: selector, readiness, cordon (demotion), serviceRef."""

from __future__ import annotations

from typing import Any

import pytest
from test_planning_builders import node, slice_, vip, world

from vipkeeper_operator.planning.eligibility import (
    Eligibility,
    endpoint_index,
    evaluate,
    selector_matches,
)

E, D, X = Eligibility.ELIGIBLE, Eligibility.DEMOTED, Eligibility.INELIGIBLE
LB = {"role": "lb"}
INGRESS: dict[str, Any] = {"serviceRef": {"name": "ingress"}}


@pytest.mark.parametrize(
    ("node_kw", "vip_kw", "endpoints", "expected", "reason"),
    [
        ({}, {}, [], E, "Ready, schedulable"),
        ({"labels": LB}, {"nodeSelector": LB}, [], E, "matches nodeSelector"),
        ({}, {"nodeSelector": LB}, [], X, "do not match nodeSelector (role=lb)"),
        ({"labels": {"role": "db"}}, {"nodeSelector": LB}, [], X, "nodeSelector"),
        ({"ready": False}, {}, [], X, "not Ready"),
        ({"deleting": True}, {}, [], X, "being deleted"),
        ({"cordoned": True}, {}, [], D, "moves to another node before its pods are evicted"),
        ({"cordoned": True}, {"vrrp": {"preempt": False}}, [], D, "preempt is false"),
        ({"cordoned": True}, {"nodeSelector": LB}, [], X, "nodeSelector"),
        ({"cordoned": True, "ready": False}, {}, [], X, "not Ready"),
        ({}, INGRESS, [("10.1.0.1", "n")], E, "ready endpoint of Service ingress"),
        ({"cordoned": True}, INGRESS, [("10.1.0.1", "n")], D, "cordoned"),
        ({}, INGRESS, [("10.1.0.1", "other")], X, "no ready endpoint of Service default/ingress"),
        ({}, INGRESS, [("10.1.0.1", "n", False, False)], X, "no ready endpoint"),
        ({}, INGRESS, [("10.1.0.1", "n", True, True)], X, "no ready endpoint"),
        ({}, INGRESS, [("10.1.0.1", None)], X, "no ready endpoint"),
        ({}, INGRESS, [], X, "no ready endpoint"),
    ],
)
def test_verdict(
    node_kw: dict[str, Any],
    vip_kw: dict[str, Any],
    endpoints: list[Any],
    expected: Eligibility,
    reason: str,
) -> None:
    w = world(
        [node("n", **node_kw)], [vip("web", **vip_kw)], slices=[slice_("s1", "ingress", *endpoints)]
    )
    verdict = evaluate(w, w.virtual_ips["default/web"])["n"]
    assert verdict.eligibility == expected
    assert reason in verdict.reason
    assert verdict.carries == (expected != X)


def test_other_namespaces_endpoints_do_not_count() -> None:
    w = world(
        [node("n")],
        [vip("web", **INGRESS)],
        slices=[slice_("s1", "ingress", ("10.1.0.1", "n"), ns="other")],
    )
    assert evaluate(w, w.virtual_ips["default/web"])["n"].eligibility == X


def test_endpoint_index_merges_slices_of_one_service() -> None:
    w = world(
        slices=[
            slice_("a", "ingress", ("10.1.0.1", "n1"), ("10.1.0.2", "n2", False, False)),
            slice_("b", "ingress", ("10.1.0.3", "n3"), ("10.1.0.4", "n4", True, True)),
            slice_("c", "other", ("10.1.0.5", "n5")),
        ]
    )
    assert endpoint_index(w) == {
        "default/ingress": frozenset({"n1", "n3"}),
        "default/other": frozenset({"n5"}),
    }


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {}, True),
        ({}, {"a": "1"}, True),
        ({"a": "1"}, {"a": "1", "b": "2"}, True),
        ({"a": "1"}, {"a": "2"}, False),
        ({"a": "1", "b": "2"}, {"a": "1"}, False),
    ],
)
def test_selector(selector: dict[str, str], labels: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, labels) is matches


def test_every_node_gets_a_verdict_in_name_order() -> None:
    w = world([node("c"), node("a", cordoned=True), node("b", ready=False)], [vip("web")])
    verdicts = evaluate(w, w.virtual_ips["default/web"])
    assert list(verdicts) == ["a", "b", "c"]
    assert [v.eligibility for v in verdicts.values()] == [D, X, E]
