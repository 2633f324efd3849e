"""Kubernetes mode's pure parts: the status document the node reports (read by the operator's
fold), the cache file, the Events' wording and the pacing of writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from vipkeeper_agent.kube.assignment import (
    OWNERS_ANNOTATION,
    Accepted,
    Rejected,
    cached_generation,
    evaluate,
    owners,
    render,
)
from vipkeeper_agent.kube.events import Transition, event_body, transition_event
from vipkeeper_agent.kube.pacing import EventLimiter, Pacer, TokenBucket
from vipkeeper_agent.kube.report import content, node_status, problems, rfc3339
from vipkeeper_api import NodeAssignmentSpec, load_spec, parse_spec
from vipkeeper_api.resources import NodeAssignmentStatus, VirtualIPSpec
from vipkeeper_operator.planning.status_vip import fold_virtual_ip
from vipkeeper_operator.world import VirtualIP

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()

SPEC = parse_spec(
    {
        "checks": [{"name": "ns-web-nginx", "kind": "tcp", "address": "127.0.0.1", "port": 80}],
        "instances": [
            {
                "name": "ns-web",
                "vrid": 51,
                "priority": 150,
                "advertInterval": 0.1,
                "addresses": ["192.0.2.10/24"],
                "trackChecks": ["ns-web-nginx"],
            },
            {"name": "ns-web-v6", "vrid": 51, "addresses": ["2001:db8::10/64"]},
        ],
        "virtualServers": [
            {
                "name": "web",
                "address": "192.0.2.10",
                "port": 80,
                "realServers": [{"address": "10.0.0.1", "weight": 2}, {"address": "10.0.0.2"}],
            }
        ],
    }
)


def runner_status(name: str, state: str, **extra: Any) -> dict[str, Any]:
    """An instance as ``status.snapshot.instance_status`` shows it (the fields the report reads)."""
    doc: dict[str, Any] = {
        "name": name,
        "vrid": 51,
        "state": state,
        "priority": 150,
        "masterAddress": "192.0.2.1",
        "since": T0 + 1.5,
        "lastTransition": {"from": "BACKUP", "to": state, "reason": "master down", "at": T0 + 1.5},
    }
    doc.update(extra)
    return doc


def snapshot(*instances: dict[str, Any], **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "config": {"lastReloadError": None},
        "instances": list(instances),
        "checks": {"ns-web-nginx": {"health": "OK", "since": T0, "lastDetail": "connected"}},
        "ipvs": {
            "virtualServers": [
                {
                    "name": "web",
                    "active": True,
                    "realServers": [
                        {
                            "address": "10.0.0.1",
                            "port": 80,
                            "healthy": True,
                            "since": None,
                            "weight": 2,
                            "kernelWeight": 2,
                        },
                        {
                            "address": "10.0.0.2",
                            "port": 80,
                            "healthy": False,
                            "since": T0 + 2,
                            "weight": 1,
                            "kernelWeight": None,
                        },
                    ],
                }
            ],
            "problems": [],
        },
    }
    doc.update(extra)
    return doc


# --- the status document ------------------------------------------------------------------


def test_rfc3339_keeps_milliseconds() -> None:
    assert rfc3339(T0 + 1.5) == "2026-01-01T12:00:01.500Z"
    assert rfc3339(None) is None


@pytest.mark.parametrize(
    ("raw", "durations", "expected"),
    [
        (
            runner_status("ns-web", "MASTER"),
            {"ns-web": 312.25},
            {
                "name": "ns-web",
                "state": "MASTER",
                "priority": 150,
                "master": "192.0.2.1",
                "since": "2026-01-01T12:00:01.500Z",
                "lastTransition": {
                    "from": "BACKUP",
                    "to": "MASTER",
                    "reason": "master down",
                    "at": "2026-01-01T12:00:01.500Z",
                    "durationMs": 312.25,
                },
                "checks": {
                    "ns-web-nginx": {
                        "health": "OK",
                        "since": "2026-01-01T12:00:00.000Z",
                        "detail": "connected",
                    }
                },
            },
        ),
        (  # not measured: no durationMs; no tracked checks: no checks
            runner_status("ns-web-v6", "BACKUP", masterAddress=None, lastTransition=None),
            {},
            {
                "name": "ns-web-v6",
                "state": "BACKUP",
                "priority": 150,
                "since": "2026-01-01T12:00:01.500Z",
            },
        ),
        (  # could not be placed: FAULT at priority 0, the reason where the operator reads it
            {"name": "ns-web-v6", "state": "FAULT", "reason": "no interface has a subnet"},
            {},
            {
                "name": "ns-web-v6",
                "state": "FAULT",
                "priority": 0,
                "lastTransition": {
                    "to": "FAULT",
                    "reason": "no interface has a subnet",
                },
            },
        ),
    ],
)
def test_instance_reports(
    raw: dict[str, Any], durations: dict[str, float], expected: dict[str, Any]
) -> None:
    doc = node_status(snapshot(raw), SPEC, observed_generation=7, now=T0 + 3, durations=durations)
    assert doc["instances"] == [expected]
    assert doc["observedGeneration"] == 7
    assert doc["updated"] == "2026-01-01T12:00:03.000Z"
    NodeAssignmentStatus.model_validate(doc)  # the operator must be able to read it


def test_real_servers_and_unreported_checks() -> None:
    snap = snapshot(runner_status("ns-web", "BACKUP"), checks={})
    doc = node_status(snap, SPEC, observed_generation=None, now=T0)
    assert "observedGeneration" not in doc
    assert doc["instances"][0]["checks"] == {"ns-web-nginx": {"health": "UNKNOWN"}}
    assert doc["virtualServers"] == [
        {
            "name": "web",
            "active": True,
            "realServers": [
                {"address": "10.0.0.1", "port": 80, "healthy": True, "weight": 2},
                {
                    "address": "10.0.0.2",
                    "port": 80,
                    "healthy": False,
                    "weight": 1,
                    "since": "2026-01-01T12:00:02.000Z",
                },
            ],
        }
    ]
    NodeAssignmentStatus.model_validate(doc)


def test_content_ignores_the_heartbeat_stamp() -> None:
    snap = snapshot(runner_status("ns-web", "MASTER"))
    a = node_status(snap, SPEC, observed_generation=1, now=T0)
    b = node_status(snap, SPEC, observed_generation=1, now=T0 + 30)
    assert a != b and content(a) == content(b)


def test_problems() -> None:
    snap = snapshot(
        {"name": "x", "state": "FAULT", "reason": "interface eth9 does not exist"},
        config={"lastReloadError": "scripts refused"},
    )
    snap["ipvs"]["problems"] = ["load ip_vs"]
    assert problems(snap, "generation 4 rejected") == [
        "generation 4 rejected",
        "scripts refused",
        "instance x: interface eth9 does not exist",
        "load ip_vs",
    ]


def test_problems_reach_the_status_document_and_the_model() -> None:
    snap = snapshot(runner_status("ns-web", "MASTER"), config={"lastReloadError": "bad vrid"})
    doc = node_status(snap, SPEC, observed_generation=1, now=T0, source_problem="gen 4 rejected")
    assert doc["problems"] == ["gen 4 rejected", "bad vrid"]
    assert NodeAssignmentStatus.model_validate(doc).problems == ("gen 4 rejected", "bad vrid")
    clean = node_status(
        snapshot(runner_status("ns-web", "MASTER")), SPEC, observed_generation=1, now=T0
    )
    assert "problems" not in clean


def test_the_operator_folds_the_report() -> None:
    """The report is what the operator's VirtualIP fold expects: holder, since, the takeover's
    reason and the node's measured duration."""
    spec = VirtualIPSpec.model_validate({"addresses": ["192.0.2.10/24"]})
    vip = VirtualIP(namespace="ns", name="web", uid="u1", generation=3, spec=spec)
    snap = snapshot(runner_status("ns-web", "MASTER"))
    doc = node_status(snap, SPEC, observed_generation=1, now=T0 + 3, durations={"ns-web": 3100})
    report = NodeAssignmentStatus.model_validate(doc)
    now = datetime.fromtimestamp(T0 + 3, UTC)
    status, events = fold_virtual_ip(
        vip, {"n1": report}, vrid=51, problems=[], candidates=["n1"], now=now
    )
    assert status.holder == "n1"
    assert status.nodes[0].since == "2026-01-01T12:00:01.500Z"
    assert status.last_transition is not None
    assert status.last_transition.reason == "master down"
    assert status.last_transition.duration_ms == 3100
    assert events[0].reason == "HolderChanged"  # then Degraded: one node, no standby


# --- the cache file -----------------------------------------------------------------------


def _object(spec: Any, generation: int = 3, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "vipkeeper.io/v1alpha1",
        "kind": "NodeAssignment",
        "metadata": {"name": "n1", "generation": generation, "uid": "u", **(meta or {})},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (None, Accepted(NodeAssignmentSpec(), None)),
        (_object({}), Accepted(NodeAssignmentSpec(), 3)),
        (_object(None), Accepted(NodeAssignmentSpec(), 3)),
        (_object({"instances": [{"name": "a", "vrid": 1, "addresses": ["192.0.2.1"]}]}, 4), None),
    ],
)
def test_evaluate_accepts(obj: dict[str, Any] | None, expected: Accepted | None) -> None:
    outcome = evaluate(obj, "n1")
    assert isinstance(outcome, Accepted)
    if expected is not None:
        assert outcome == expected


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"instances": [{"name": "a", "vrid": 300, "addresses": ["192.0.2.1"]}]}, "vrid"),
        ({"instancez": []}, "unknown field"),
        ([], "must be a mapping"),
    ],
)
def test_evaluate_rejects(spec: Any, says: str) -> None:
    outcome = evaluate(_object(spec, 9), "n1")
    assert isinstance(outcome, Rejected)
    assert outcome.generation == 9
    assert "NodeAssignment/n1 generation 9" in outcome.problem and says in outcome.problem


def test_malformed_metadata_is_no_crash() -> None:
    # Found by fuzzing: metadata (or its annotations) that is not a mapping raised AttributeError.
    # A generation below 1 was accepted but could not be read back from the cache file.
    for meta in ("n1", [1], {"annotations": "x", "generation": True}, {"generation": -1}):
        obj: dict[str, Any] = {"metadata": meta, "spec": {"instances": []}}
        assert evaluate(obj, "n1") == Accepted(NodeAssignmentSpec(), None)
        assert owners(obj) == {}


def test_cache_file_round_trips() -> None:
    """The file the source writes reads back as the same spec (so the reporter can tell which
    generation the agent runs), names its generation, and is byte-for-byte stable."""
    data = render(SPEC, "n1", 12)
    assert load_spec(data) == SPEC
    assert cached_generation(data) == 12
    assert render(SPEC, "n1", 12) == data
    empty = render(NodeAssignmentSpec(), "n1", None)
    assert b"instances: []" in empty and cached_generation(empty) is None
    assert load_spec(empty) == NodeAssignmentSpec()
    assert cached_generation(b"instances: []\n") is None


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (None, {}),
        ("not json", {}),
        ("[1]", {}),
        (
            json.dumps({"ns-web": {"namespace": "ns", "name": "web", "uid": "u1"}, "bad": 3}),
            {"ns-web": {"namespace": "ns", "name": "web", "uid": "u1"}},
        ),
    ],
)
def test_owners(annotation: str | None, expected: dict[str, Any]) -> None:
    meta = {} if annotation is None else {"annotations": {OWNERS_ANNOTATION: annotation}}
    assert owners(_object({}, meta=meta)) == expected


# --- Events -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "duration", "held", "expected"),
    [
        ("MASTER", 3120.4, 0, ("Normal", "BecameMaster",
         "node n1: instance ns-web (VRID 51) BACKUP -> MASTER: master down, 3120 ms after the "
         "last advert heard")),
        ("BACKUP", None, 0, ("Normal", "BecameBackup",
         "node n1: instance ns-web (VRID 51) BACKUP -> BACKUP: master down")),
        ("FAULT", None, 4, ("Warning", "EnteredFault",
         "node n1: instance ns-web (VRID 51) BACKUP -> FAULT: master down (4 earlier "
         "transitions not reported: rate limit)")),
        ("INIT", None, 0, None),
    ],
)  # fmt: skip
def test_transition_events(
    to: str, duration: float | None, held: int, expected: tuple[str, str, str] | None
) -> None:
    t = Transition("ns-web", 51, "BACKUP", to, "master down", T0, duration)
    assert transition_event("n1", t, held) == expected


def test_event_body() -> None:
    involved = {"apiVersion": "vipkeeper.io/v1alpha1", "kind": "VirtualIP", "namespace": "ns",
                "name": "web", "uid": "u1"}  # fmt: skip
    body = event_body("n1", involved, "Normal", "BecameMaster", "x" * 5000, T0)
    assert body["metadata"] == {"generateName": "web.", "namespace": "ns"}
    assert body["involvedObject"] == involved
    assert len(body["message"]) == 1024
    assert body["firstTimestamp"] == "2026-01-01T12:00:00Z"
    assert body["source"] == {"component": "vipkeeper-agent", "host": "n1"}


# --- pacing -------------------------------------------------------------------------------


def test_pacer_coalesces_and_heartbeats() -> None:
    pacer = Pacer(min_interval=1.0, heartbeat=30.0)
    assert pacer.due_in(0.0, "a") <= 0  # first: at once
    pacer.done(0.0, "a")
    assert pacer.due_in(0.2, "a") == pytest.approx(29.8)  # unchanged: the heartbeat
    assert pacer.due_in(0.2, "b") == pytest.approx(0.8)  # changed: after the minimum interval
    assert pacer.due_in(0.9, "c") == pytest.approx(0.1)  # more changes: still one write
    assert pacer.due_in(1.0, "c") <= 0


def test_pacer_backs_off_and_catches_up() -> None:
    pacer = Pacer(min_interval=1.0, heartbeat=30.0, retry=(0.5, 4.0))
    pacer.done(0.0, "a")
    delays = [pacer.failed(t) for t in (1.0, 2.0, 3.0, 4.0, 5.0)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert pacer.due_in(5.0, "z") == pytest.approx(4.0)
    pacer.done(9.0, "z")  # one write of the latest state
    assert pacer.failures == 0 and pacer.due_in(9.5, "z") == pytest.approx(29.5)


def test_token_bucket() -> None:
    bucket = TokenBucket(burst=2, every=10.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert not bucket.take(5.0)
    assert bucket.take(10.0)


def test_event_limiter_counts_what_it_held_back() -> None:
    limiter = EventLimiter(burst=2, every=10.0, total_burst=100, total_every=0.01)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [(True, 0), (True, 0), (False, 0),
                                                           (False, 0)]  # fmt: skip
    assert limiter.allow("b", 0.0) == (True, 0)  # per instance
    assert limiter.allow("a", 10.0) == (True, 2)
