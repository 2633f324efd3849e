"""Which NodeAssignments to create, replace or delete: only where the content changes.

The operator renders every node's spec on each pass; writing them all would wake every agent and
flood the API. The comparison is on the canonical JSON document (what the API stores), so a spec
the API round-tripped (defaults, ordering of keys) still compares equal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vipkeeper_api.models import NodeAssignmentSpec

Document = dict[str, Any]


def spec_document(spec: NodeAssignmentSpec) -> Document:
    """The spec as stored in the NodeAssignment: JSON types, camelCase, defaults left out (so a new
    optional field with a default does not rewrite every assignment)."""
    return spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)


@dataclass(frozen=True, slots=True)
class PutAssignment:
    """Create the node's assignment, or replace its spec (``exists``)."""

    node: str
    spec: Document
    exists: bool
    #: metadata.annotations to set with it (the owners of its instances, for the agent's Events).
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeleteAssignment:
    node: str


Write = PutAssignment | DeleteAssignment


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """Replace the status of a VirtualIP or VirtualServer (``plural``)."""

    plural: str
    namespace: str
    name: str
    status: Document


@dataclass(frozen=True, slots=True)
class EventWrite:
    """A Kubernetes Event about one of our objects (core/v1, as ``kubectl describe`` shows)."""

    kind: str
    namespace: str
    name: str
    uid: str
    type: str  # Normal | Warning
    reason: str
    message: str


#: JSON {instance name: {namespace, name, uid}}: which VirtualIP each instance is, so that the
#: agent posts its Events on it (instance names are hashed when long, so not reversible).
OWNERS_ANNOTATION = "vipkeeper.io/instance-owners"


def assignment_writes(
    desired: Mapping[str, NodeAssignmentSpec],
    current: Mapping[str, Document | None],
    owners: Mapping[str, Mapping[str, str]] | None = None,
) -> list[Write]:
    """``desired``: node -> spec; ``current``: node -> the spec document its NodeAssignment has
    (None for an object without spec); ``owners``: instance name -> {namespace, name, uid}.
    Nodes are handled in name order, puts before deletes."""
    puts: list[Write] = []
    for node in sorted(desired):
        document = spec_document(desired[node])
        if node in current and _canonical(current[node]) == document:
            continue
        mine = {
            i.name: dict(owners[i.name])
            for i in desired[node].instances
            if owners and i.name in owners
        }
        annotations = {OWNERS_ANNOTATION: json.dumps(mine, sort_keys=True)} if mine else {}
        puts.append(PutAssignment(node, document, exists=node in current, annotations=annotations))
    deletes: list[Write] = [DeleteAssignment(node) for node in sorted(set(current) - set(desired))]
    # Keep only the stored documents of now: a replaced one is never asked about again.
    alive = {id(d) for d in current.values() if d is not None}
    for stale in [k for k in _CANONICAL if k not in alive]:
        del _CANONICAL[stale]
    return puts + deletes


#: id(stored document) -> (it, its canonical form): a pass compares every node's spec, and the
#: stored documents only change when a NodeAssignment does.
_CANONICAL: dict[int, tuple[Document, Document | None]] = {}


def _canonical(document: Document | None) -> Document | None:
    """What the stored document means, in :func:`spec_document`'s form; None if it does not parse
    (then it is rewritten)."""
    if document is None:
        return None
    hit = _CANONICAL.get(id(document))
    if hit is not None and hit[0] is document:
        return hit[1]
    try:
        canonical: Document | None = spec_document(NodeAssignmentSpec.model_validate(document))
    except ValueError:
        canonical = None
    _CANONICAL[id(document)] = (document, canonical)
    return canonical
