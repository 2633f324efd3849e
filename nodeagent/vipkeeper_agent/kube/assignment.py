"""The NodeAssignment object -> the cache file the agent runs from, and back. Pure.

The cache file is an ordinary standalone spec file (``vipkeeper-agent check-config`` reads it)
with one comment line first naming the object and generation it came from, so a restart during an
API outage still reports the generation it runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from vipkeeper_api import ConfigError, NodeAssignmentSpec, parse_spec

#: Where the operator may say which VirtualIP each instance comes from (instance -> namespace,
#: name, uid), so that Events land on the VirtualIP rather than on the NodeAssignment.
OWNERS_ANNOTATION = "vipkeeper.io/instance-owners"
_HEADER = re.compile(rb"^# vipkeeper: NodeAssignment (\S+) generation (\d+)\n")


@dataclass(frozen=True, slots=True)
class Accepted:
    spec: NodeAssignmentSpec
    generation: int | None


@dataclass(frozen=True, slots=True)
class Rejected:
    generation: int | None
    problem: str


def _mapping(value: object) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else empty: the API server guarantees the shape of metadata,
    but a malformed object must be refused with a reason, not crash the agent's watch."""
    return value if isinstance(value, Mapping) else {}


def evaluate(obj: Mapping[str, Any] | None, node: str) -> Accepted | Rejected:
    """What the object asks the node to run. No object (deleted, or never created): nothing, so
    the node resigns every VIP."""
    if obj is None:
        return Accepted(NodeAssignmentSpec(), None)
    generation = _mapping(obj.get("metadata")).get("generation")
    # Kubernetes generations start at 1; anything else could not be read back from the cache file.
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
        generation = None
    spec = obj.get("spec")
    # The operator writes an empty spec as `{}`; a missing one (pruned) means the same.
    document = {} if spec is None else spec
    source = f"NodeAssignment/{node} generation {generation}"
    try:
        return Accepted(parse_spec(document, source), generation)
    except ConfigError as exc:
        detail = "; ".join(str(p) for p in exc.problems[:5])
        more = f" (and {len(exc.problems) - 5} more)" if len(exc.problems) > 5 else ""
        return Rejected(
            generation, f"{source} rejected, keeping the last good spec: {detail}{more}"
        )


def render(spec: NodeAssignmentSpec, node: str, generation: int | None) -> bytes:
    """The cache file's bytes: deterministic, so an unchanged spec is not rewritten."""
    document = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    document.setdefault("instances", [])  # explicit: an empty file is refused as a mistake
    header = f"# vipkeeper: NodeAssignment {node} generation {generation or 0}\n"
    # JSON types only, so safe_dump cannot fail; sort_keys for a stable byte-for-byte output.
    body = yaml.safe_dump(json.loads(json.dumps(document)), sort_keys=True)
    return header.encode() + body.encode()


def cached_generation(data: bytes) -> int | None:
    match = _HEADER.match(data)
    if match is None:
        return None
    value = int(match.group(2))
    return value or None


def owners(obj: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """instance -> {namespace, name, uid} of its VirtualIP, from the annotation; {} without one
    or with one that does not read."""
    if obj is None:
        return {}
    raw = _mapping(_mapping(obj.get("metadata")).get("annotations")).get(OWNERS_ANNOTATION)
    if not isinstance(raw, str):
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for instance, ref in data.items():
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            out[str(instance)] = {
                "namespace": str(ref.get("namespace") or "default"),
                "name": ref["name"],
                "uid": str(ref.get("uid") or ""),
            }
    return out


__all__ = [
    "OWNERS_ANNOTATION",
    "Accepted",
    "Rejected",
    "cached_generation",
    "evaluate",
    "owners",
    "render",
]
