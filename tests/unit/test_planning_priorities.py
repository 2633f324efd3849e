"""Priorities: preferred order, explicit values, the deterministic spread, demotion."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from vipkeeper_api.resources import MIN_PRIORITY, TOP_PRIORITY, Priorities
from vipkeeper_operator.planning.eligibility import Eligibility, Verdict
from vipkeeper_operator.planning.priorities import assign, ladder, spread_order

E, D, X = Eligibility.ELIGIBLE, Eligibility.DEMOTED, Eligibility.INELIGIBLE


def verdicts(**states: Eligibility) -> dict[str, Verdict]:
    return {n: Verdict(n, e, f"because {n}") for n, e in sorted(states.items())}


def prios(priorities: dict[str, Any], **states: Eligibility) -> dict[str, int]:
    chosen = assign("default/web", Priorities.model_validate(priorities), verdicts(**states))
    return {c.node: c.priority for c in chosen}


@pytest.mark.parametrize(
    ("rank", "ranks", "priority"),
    [
        (0, 3, TOP_PRIORITY),
        (1, 3, 100),
        (2, 3, 75),  # steps of 25 while they fit: backups far apart
        (4, 5, 25),
        (2, 10, 88),  # 8 ranks below 100 share 98 priorities: steps of 12
        (9, 10, 4),
        (50, 100, 51),  # steps of 1 only with 100 nodes or more
        (99, 100, 2),
        (500, 600, 2),
    ],
)
def test_ladder(rank: int, ranks: int, priority: int) -> None:
    assert ladder(rank, ranks) == priority


@pytest.mark.parametrize(
    ("priorities", "states", "expected"),
    [
        # preferred, in its order; the rest spread below every preferred position
        ({"preferred": ["c", "a"]}, {"a": E, "b": E, "c": E}, {"c": 150, "a": 100, "b": 75}),
        # an absent preferred node keeps its position: the others do not move up
        ({"preferred": ["x", "a"]}, {"a": E, "b": E}, {"a": 100, "b": 75}),
        ({"preferred": ["a", "b"]}, {"a": X, "b": E}, {"b": 100}),
        # explicit overrides preferred
        (
            {"preferred": ["a"], "explicit": {"a": 20, "b": 254}},
            {"a": E, "b": E},
            {"a": 20, "b": 254},
        ),
        # demoted beats nothing, whatever the spec says
        (
            {"preferred": ["a"], "explicit": {"b": 200}},
            {"a": D, "b": D, "c": E},
            {"c": 100, "a": 1, "b": 1},
        ),
        ({}, {"a": X, "b": X}, {}),
        ({}, {"a": D}, {"a": MIN_PRIORITY}),
    ],
)
def test_assign(
    priorities: dict[str, Any], states: dict[str, Eligibility], expected: dict[str, int]
) -> None:
    assert prios(priorities, **states) == expected


def test_candidates_are_ordered_and_explain_themselves() -> None:
    chosen = assign(
        "default/web",
        Priorities.model_validate({"preferred": ["b"]}),
        verdicts(a=E, b=E, c=D, d=X),
    )
    assert [(c.node, c.eligibility) for c in chosen] == [("b", E), ("a", E), ("c", D)]
    assert chosen[0].reason == "priorities.preferred[0]; because b"
    assert chosen[1].reason.startswith("spread rank 1 of 1; ")
    assert chosen[2].reason == "because c"


def test_spread_without_preferences_balances_the_top_node() -> None:
    nodes = [f"node-{i}" for i in range(5)]
    states = dict.fromkeys(nodes, E)
    tops = Counter(
        max(prios_for(f"ns/vip-{i}", states).items(), key=lambda kv: kv[1])[0] for i in range(100)
    )
    print(f"top node per VIP, 100 VIPs over 5 nodes: {sorted(tops.values())}")
    assert set(tops) == set(nodes)
    assert all(10 <= count <= 30 for count in tops.values()), tops


def prios_for(key: str, states: dict[str, Eligibility]) -> dict[str, int]:
    return {c.node: c.priority for c in assign(key, Priorities(), verdicts(**states))}


def test_spread_is_a_total_order_in_the_ladder() -> None:
    got = prios_for("ns/web", dict.fromkeys("abcde", E))
    assert sorted(got.values(), reverse=True) == [150, 100, 75, 50, 25]


def test_removing_a_node_only_moves_the_vips_it_was_top_for() -> None:
    nodes = [f"n{i}" for i in range(6)]
    keys = [f"ns/vip-{i}" for i in range(200)]
    before = {k: spread_order(k, nodes)[0] for k in keys}
    after = {k: spread_order(k, nodes[:-1])[0] for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == "n5"}


def test_spread_is_stable_and_independent_of_input_order() -> None:
    assert spread_order("ns/web", ["a", "b", "c"]) == spread_order("ns/web", ["c", "a", "b"])
    assert spread_order("ns/web", "abcdefgh") != spread_order("ns/other", "abcdefgh")


def test_priorities_stay_within_1_254_with_many_nodes() -> None:
    got = prios_for("ns/web", {f"n{i}": E for i in range(300)})
    assert min(got.values()) >= 2
    assert max(got.values()) == TOP_PRIORITY
