"""NodeAssignments are written only where the content changes."""

from __future__ import annotations

from typing import Any

from vipkeeper_api import NodeAssignmentSpec
from vipkeeper_operator.planning.writes import (
    DeleteAssignment,
    PutAssignment,
    assignment_writes,
    spec_document,
)


def spec(priority: int = 150, interval: str = "0.1") -> NodeAssignmentSpec:
    return NodeAssignmentSpec.model_validate(
        {
            "instances": [
                {
                    "name": "web-vip",
                    "vrid": 7,
                    "priority": priority,
                    "advertInterval": interval,
                    "addresses": ["192.0.2.10/24"],
                }
            ]
        }
    )


def test_document_is_json_camel_case_without_defaults() -> None:
    doc = spec_document(spec())
    assert doc == {
        "instances": [
            {
                "name": "web-vip",
                "vrid": 7,
                "priority": 150,
                "advertInterval": 0.1,  # a JSON number: the CRD types it so
                "addresses": ["192.0.2.10/24"],
            }
        ]
    }
    assert NodeAssignmentSpec.model_validate(doc) == spec()


def test_only_changed_assignments_are_written() -> None:
    stored: dict[str, Any] = {
        # As the API might hand it back: a default spelled out, keys in another order, a float.
        "n1": {
            "instances": [
                {
                    "addresses": ["192.0.2.10/24"],
                    "advertInterval": 0.1,
                    "name": "web-vip",
                    "preempt": True,
                    "priority": 150,
                    "vrid": 7,
                }
            ]
        },
        "n2": spec_document(spec(100)),
        "gone": spec_document(spec()),
        "broken": {"instances": "nonsense"},
    }
    desired = {"n1": spec(), "n2": spec(90), "n3": spec(80), "broken": spec(70)}
    writes = assignment_writes(desired, stored)
    assert writes == [
        PutAssignment("broken", spec_document(spec(70)), exists=True),
        PutAssignment("n2", spec_document(spec(90)), exists=True),
        PutAssignment("n3", spec_document(spec(80)), exists=False),
        DeleteAssignment("gone"),
    ]
    assert assignment_writes({"n1": spec()}, {"n1": spec_document(spec())}) == []
