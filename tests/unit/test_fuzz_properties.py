"""Properties of the three parsing surfaces over generated and mutated inputs: every input is
either parsed or rejected with a reason, never met with another exception.

* the VRRP decoder (beyond test_packet_fuzz.py): the reason is a DropReason, and the right one for
  a truncated, extended or misaddressed advert; a mutated advert decodes or is dropped;
* the standalone loader (beyond test_models.py's arbitrary documents): mutations of the examples,
  as documents and as text, and YAML's typed scalars; every problem names a path and a message;
* the operator's parse of VirtualIP / VirtualServer / NodeAssignment status objects;
* the agent's NodeAssignment -> spec (``evaluate``), and the cache file it writes.

The long, coverage-guided counterpart is bench/fuzz.py (docs/fuzzing.md).
"""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vipkeeper_agent.kube.assignment import (
    Accepted,
    Rejected,
    cached_generation,
    evaluate,
    owners,
    render,
)
from vipkeeper_agent.vrrp.packet import (
    Advertisement,
    DecodeError,
    DropReason,
    IPAddress,
    decode,
    encode,
)
from vipkeeper_api import ConfigError, NodeAssignmentSpec, load_spec, parse_spec
from vipkeeper_api.resources import NodeAssignmentStatus
from vipkeeper_operator import parse
from vipkeeper_operator.world import VirtualIP, VirtualServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def relaxed(examples: int = 100) -> settings:
    # No wall-clock deadline: a loaded machine makes it flaky; the sizes keep the file ~10 s.
    return settings(
        deadline=None, max_examples=examples, suppress_health_check=[HealthCheck.too_slow]
    )


# --- VRRP decoder ----------------------------------------------------------------------------


def _addresses(family: int) -> st.SearchStrategy[IPAddress]:
    return st.ip_addresses(v=6) if family == 6 else st.ip_addresses(v=4)


@st.composite
def encoded(draw: st.DrawFn) -> tuple[bytes, IPAddress, IPAddress]:
    """A valid advert on the wire (few addresses: the codec, not generation, is under test)."""
    version = draw(st.sampled_from([2, 3]))
    family = 4 if version == 2 else draw(st.sampled_from([4, 6]))
    source, destination = draw(_addresses(family)), draw(_addresses(family))
    addresses = tuple(draw(st.lists(_addresses(family), min_size=1, max_size=4)))
    vrid, priority = draw(st.integers(1, 255)), draw(st.integers(0, 255))
    if version == 3:
        adv = Advertisement(3, vrid, priority, draw(st.integers(1, 0x0FFF)), addresses)
    else:
        adv = Advertisement(2, vrid, priority, draw(st.integers(1, 255)) * 100, addresses)
    return encode(adv, source, destination), source, destination


def _decoded_or_reason(message: bytes, source: IPAddress, destination: IPAddress) -> str:
    try:
        adv = decode(message, source, destination)
    except DecodeError as error:
        assert isinstance(error.reason, DropReason) and error.detail
        assert str(error).startswith(f"{error.reason}: ")
        return str(error.reason)
    assert len(adv.addresses) == message[3]
    assert all(a.version == source.version for a in adv.addresses)
    return "accepted"


@relaxed()
@given(case=encoded(), cut=st.integers(1, 40), extra=st.binary(min_size=1, max_size=40))
def test_a_truncated_or_extended_advert_is_dropped_for_its_length(
    case: tuple[bytes, IPAddress, IPAddress], cut: int, extra: bytes
) -> None:
    message, source, destination = case
    truncated = message[: max(0, len(message) - cut)]
    assert _decoded_or_reason(truncated, source, destination) == DropReason.LENGTH
    assert _decoded_or_reason(message + extra, source, destination) == DropReason.LENGTH


@relaxed()
@given(case=encoded(), data=st.data())
def test_a_destination_of_the_other_family_is_dropped_for_its_family(
    case: tuple[bytes, IPAddress, IPAddress], data: st.DataObject
) -> None:
    message, source, _ = case
    other = data.draw(_addresses(6 if source.version == 4 else 4))
    assert _decoded_or_reason(message, source, other) == DropReason.FAMILY


@relaxed()
@given(
    case=encoded(),
    edits=st.lists(st.tuples(st.integers(0, 4096), st.binary(min_size=1, max_size=8)), max_size=4),
)
def test_an_overwritten_advert_decodes_or_is_dropped_with_a_reason(
    case: tuple[bytes, IPAddress, IPAddress], edits: list[tuple[int, bytes]]
) -> None:
    message, source, destination = case
    mutated = bytearray(message)
    for offset, chunk in edits:
        start = offset % len(mutated)
        mutated[start : start + len(chunk)] = chunk
    outcome = _decoded_or_reason(bytes(mutated), source, destination)
    if bytes(mutated) == message:
        assert outcome == "accepted"


# --- structural mutation, shared by the document surfaces ------------------------------------

LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["192.0.2.300", "2001:db8::1/64", "eth0", "tcp", "http", "wrr", "dr", ""]),
)
JSONISH = st.recursive(
    LEAF,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        out.append((node, key))
        if isinstance(value, dict | list):
            _slots(value, out)
    return out


@st.composite
def mutated(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with 1-3 values replaced, deleted, duplicated elsewhere or wrapped."""
    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(doc, [])
        if not slots:
            break
        parent, key = slots[draw(st.integers(0, len(slots) - 1))]
        op = draw(st.sampled_from(["replace", "delete", "splice", "wrap"]))
        if op == "replace":
            parent[key] = draw(JSONISH)
        elif op == "delete":
            del parent[key]
        elif op == "splice":
            other, other_key = slots[draw(st.integers(0, len(slots) - 1))]
            parent[key] = copy.deepcopy(other[other_key])
        else:
            parent[key] = [parent[key]]
    return doc


def _documents(folder: str, kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    out = []
    for path in sorted((EXAMPLES / folder).glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and (not kinds or document.get("kind") in kinds):
                out.append(document)
    return out


STANDALONE = _documents("standalone")
STANDALONE_TEXT = [p.read_text() for p in sorted((EXAMPLES / "standalone").glob("*.yaml"))]
CRS = _documents("kubernetes", ("VirtualIP", "VirtualServer"))


def test_the_seeds_are_there_and_valid() -> None:
    # The mutation properties mean little if they start from nothing, or from invalid examples.
    assert len(STANDALONE) >= 5 and len(CRS) >= 5
    for document in STANDALONE:
        parse_spec(document)
    for cr in CRS:
        parsed = (parse.virtual_server if cr["kind"] == "VirtualServer" else parse.virtual_ip)(cr)
        assert not isinstance(parsed, parse.Rejected), parsed


# --- standalone loader -----------------------------------------------------------------------


def _spec_or_problems(text: str | bytes) -> NodeAssignmentSpec | ConfigError:
    try:
        return load_spec(text, "fuzz.yaml")
    except ConfigError as error:
        assert error.problems
        for problem in error.problems:
            assert isinstance(problem.path, str) and problem.message
        assert str(error).startswith("fuzz.yaml: invalid configuration\n  - ")
        return error


@relaxed(300)
@given(data=st.data())
def test_mutated_examples_load_or_name_each_problem(data: st.DataObject) -> None:
    document = data.draw(mutated(data.draw(st.sampled_from(STANDALONE))))
    _spec_or_problems(yaml.safe_dump(document))


@relaxed(100)
@given(data=st.data(), key=st.from_regex(r"\A[a-z][A-Za-z]{0,10}Typo\Z"))
def test_an_unknown_key_anywhere_is_reported_at_its_path(data: st.DataObject, key: str) -> None:
    document = copy.deepcopy(data.draw(st.sampled_from(STANDALONE)))
    mappings = [(parent, k) for parent, k in _slots(document, []) if isinstance(parent[k], dict)]
    path = ""
    inside: bool = data.draw(st.booleans())
    if mappings and inside:
        parent, k = mappings[data.draw(st.integers(0, len(mappings) - 1))]
        parent[k][key] = 1
        path = _path_of(document, parent[k])
    else:
        document[key] = 1
    error = _spec_or_problems(yaml.safe_dump(document))
    assert isinstance(error, ConfigError)
    wanted = f"{path}.{key}" if path else key
    assert any(p.path == wanted and "unknown field" in p.message for p in error.problems)


def _path_of(node: Any, target: Any, prefix: str = "") -> str:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        here = f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}".lstrip(".")
        if value is target:
            return here
        if isinstance(value, dict | list) and (found := _path_of(value, target, here)):
            return found
    return ""


@relaxed(300)
@given(
    text=st.sampled_from(STANDALONE_TEXT),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.text(max_size=6))),
)
def test_edited_example_text_loads_or_names_each_problem(
    text: str, edits: list[tuple[int, int, str]]
) -> None:
    for offset, length, insert in edits:
        start = offset % (len(text) + 1)
        text = text[:start] + insert + text[start + length :]
    _spec_or_problems(text)


@relaxed(300)
@given(
    data=st.data(),
    tag=st.sampled_from(["!!float", "!!int", "!!timestamp", "!!binary", "!!bool", "!!str"]),
    scalar=st.one_of(
        st.from_regex(r"\A\d{4}-\d{1,2}-\d{1,2}([Tt ]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d?:\d\d)?)?\Z"),
        st.from_regex(r"\A(0x[0-9a-f]{1,6}|0o?[0-7]{1,6}|[-+]?[0-9_]{1,8}(\.[0-9]*)?)\Z"),
        st.text(alphabet="0123456789abcxyz.-:=+", min_size=1, max_size=10),
    ),
)
def test_typed_scalars_anywhere_load_or_are_problems(
    data: st.DataObject, tag: str, scalar: str
) -> None:
    # PyYAML's constructors raise bare ValueError for scalars their tag cannot read; the loader
    # must report those at their line like any YAML error (found by fuzzing).
    text = data.draw(st.sampled_from(STANDALONE_TEXT))
    lines = text.splitlines()
    values = [
        n for n, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")
    ]
    n = values[data.draw(st.integers(0, len(values) - 1))]
    head = lines[n].split(": ", 1)[0]
    plain = data.draw(st.booleans())
    lines[n] = f"{head}: {scalar}" if plain else f"{head}: {tag} '{scalar}'"
    _spec_or_problems("\n".join(lines))


# --- operator: custom resources -> model or rejection ------------------------------------------

CR_KEYS = ["apiVersion", "kind", "metadata", "spec", "status", "name", "namespace", "generation"]
CR_KEYS += ["uid", "addresses", "vrrp", "version", "port", "virtualIPRef", "realServers", "check"]
OBJECTS = st.recursive(
    LEAF,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(CR_KEYS) | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _check_cr(obj: dict[str, Any], kind: str) -> None:
    parser = parse.virtual_server if kind == "VirtualServer" else parse.virtual_ip
    result = parser(obj)
    if isinstance(result, parse.Rejected):
        assert result.kind == kind and result.message
        lines = result.message.split("\n  - ")
        assert lines[0].endswith(": invalid configuration") and len(lines) > 1
        assert all(line.startswith("spec") for line in lines[1:]), result.message
    else:
        assert isinstance(result, VirtualServer if kind == "VirtualServer" else VirtualIP)


@relaxed(300)
@given(
    obj=st.dictionaries(st.sampled_from(CR_KEYS), OBJECTS, max_size=5),
    kind=st.sampled_from(["VirtualIP", "VirtualServer"]),
)
def test_arbitrary_objects_parse_or_are_rejected_at_a_spec_path(
    obj: dict[str, Any], kind: str
) -> None:
    _check_cr(obj, kind)
    status = parse.assignment_status(obj)
    assert status is None or isinstance(status, NodeAssignmentStatus)


@relaxed(300)
@given(data=st.data())
def test_mutated_example_crs_parse_or_are_rejected_at_a_spec_path(data: st.DataObject) -> None:
    cr = copy.deepcopy(data.draw(st.sampled_from(CRS)))
    cr["metadata"]["generation"] = data.draw(st.integers(0, 2**40) | OBJECTS)
    # Through JSON, as the API hands objects over: no YAML types (dates, sets) survive that.
    _check_cr(json.loads(json.dumps(data.draw(mutated(cr)), default=str)), cr["kind"])


# --- agent: NodeAssignment -> spec, and its cache file ------------------------------------------


def _assignment(spec: object, generation: object = 7) -> dict[str, Any]:
    meta = {"name": "n1", "generation": generation}
    return {
        "apiVersion": "vipkeeper.io/v1alpha1",
        "kind": "NodeAssignment",
        "metadata": meta,
        "spec": spec,
    }


def _check_evaluate(obj: dict[str, Any]) -> None:
    assert isinstance(owners(obj), dict)
    outcome = evaluate(obj, "n1")
    if isinstance(outcome, Rejected):
        assert outcome.problem.startswith(
            f"NodeAssignment/n1 generation {outcome.generation} rejected"
        )
        assert ": " in outcome.problem.split("keeping the last good spec: ", 1)[1]
        return
    assert isinstance(outcome, Accepted)
    # What the agent accepts it writes to its cache file, and must run the same after a restart.
    cache = render(outcome.spec, "n1", outcome.generation)
    assert load_spec(cache, "cache") == outcome.spec
    assert cached_generation(cache) == (outcome.generation or None)


@relaxed(300)
@given(obj=st.dictionaries(st.sampled_from(CR_KEYS), OBJECTS, max_size=5))
def test_arbitrary_assignments_are_accepted_or_rejected_with_a_reason(obj: dict[str, Any]) -> None:
    _check_evaluate(obj)


@relaxed(300)
@given(data=st.data(), generation=st.one_of(st.integers(0, 2**40), OBJECTS))
def test_mutated_assignments_are_accepted_or_rejected_and_round_trip(
    data: st.DataObject, generation: object
) -> None:
    spec = data.draw(mutated(data.draw(st.sampled_from(STANDALONE))))
    _check_evaluate(json.loads(json.dumps(_assignment(spec, generation), default=str)))


@relaxed()
@given(data=st.binary(max_size=80) | st.text(max_size=60).map(str.encode))
def test_cached_generation_of_any_bytes_is_none_or_positive(data: bytes) -> None:
    for blob in (data, b"# vipkeeper: NodeAssignment n1 generation " + data):
        generation = cached_generation(blob)
        assert generation is None or generation > 0


@pytest.mark.parametrize("address", ["192.0.2.1", "2001:db8::1"])
def test_the_advert_seed_property_is_not_vacuous(address: str) -> None:
    # The overwrite property must see accepted adverts too, or it checks only rejections.
    source = ipaddress.ip_address(address)
    adv = Advertisement(3, 1, 100, 100, (source,))
    assert _decoded_or_reason(encode(adv, source, source), source, source) == "accepted"
