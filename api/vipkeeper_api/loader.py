"""Raw YAML or dict -> NodeAssignmentSpec, with errors that name the path, the value and the fix."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from vipkeeper_api.models import NodeAssignmentSpec

M = TypeVar("M", bound=BaseModel)

#: A NodeAssignment spec is small; a multi-megabyte file is a mistake (or an attack on the parser).
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    value: object

    def __str__(self) -> str:
        shown = "" if self.value is _MISSING else f" (got {_short(self.value)})"
        where = self.path or "<document>"
        return f"{where}: {self.message}{shown}"


class ConfigError(ValueError):
    """A configuration that cannot be used. Carries every problem found, not just the first."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: invalid configuration\n{lines}")


_MISSING = object()


#: A bounded repr: YAML aliases can make a few hundred bytes stand for 10**9 nested values (the
#: "billion laughs"), whose full repr would take minutes and gigabytes before being cut to 80.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 78, 78


def _short(value: object) -> str:
    try:
        text = repr(value) if isinstance(value, str) else _REPR.repr(value)
    except ValueError:  # an integer past Python's 4300-digit limit of int -> str
        text = "<a number too long to show>"
    return text if len(text) <= 80 else text[:77] + "..."


def _document_loc(document: object, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop the union tags pydantic inserts into locations (``checks[0].tcp.port``): the user wrote
    ``checks[0].port``, with ``kind: tcp`` beside it."""
    out: list[int | str] = []
    node = document
    for part in loc:
        if (
            isinstance(node, Mapping)
            and isinstance(part, str)
            and part not in node
            and node.get("kind") == part
        ):
            continue
        out.append(part)
        node = _lookup(node, (part,))
    return tuple(out)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _lookup(document: object, loc: tuple[int | str, ...]) -> object:
    node = document
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            continue
        return _MISSING
    return node


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return (
            "unknown field; check the spelling against the documented fields (keys are camelCase)"
        )
    if kind == "missing":
        return "is required"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"out of range: {error['msg'].lower()}"
    if kind == "union_tag_invalid":
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown kind {ctx.get('tag')!r}; use one of: {expected}"
    if kind == "union_tag_not_found":
        return "kind is required (it selects which fields apply)"
    if kind == "literal_error":
        return f"not allowed: {error['msg'].lower()}"
    return str(error["msg"])


def parse_spec(document: object, source: str = "<config>") -> NodeAssignmentSpec:
    """Turn a decoded document into a spec. Accepts the bare spec or a whole NodeAssignment object."""
    if document is None:
        # An empty file is far more often a truncated write or a `> file` mistake than a wish to
        # drop every VIP of the node; make that wish explicit.
        raise ConfigError(
            source,
            [
                Problem(
                    "",
                    "the document is empty; write 'instances: []' to run with no instances",
                    _MISSING,
                )
            ],
        )
    if not isinstance(document, Mapping):
        raise ConfigError(
            source, [Problem("", "must be a mapping with an 'instances' list", document)]
        )
    prefix: tuple[int | str, ...] = ()
    if "kind" in document or "apiVersion" in document:
        if document.get("kind") != "NodeAssignment":
            raise ConfigError(
                source,
                [
                    Problem(
                        "kind", "only NodeAssignment objects can be loaded", document.get("kind")
                    )
                ],
            )
        document = document.get("spec") or {}
        prefix = ("spec",)
    return parse_model(NodeAssignmentSpec, document, source, prefix)


def parse_model(
    model: type[M], document: object, source: str, prefix: tuple[int | str, ...] = ()
) -> M:
    """Validate ``document`` as ``model``; every problem becomes a ConfigError naming the path
    (after ``prefix``, e.g. ``spec``), the value and the rule. The operator parses custom
    resources with this too, so a VirtualIP's errors read like a standalone file's."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = _document_loc(document, tuple(error["loc"]))
            if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc += ("kind",)
            # Pydantic reports a model-level rule at the model's own path; values for those are noise.
            value = _lookup(document, loc) if error["type"] != "value_error" or loc else _MISSING
            if (
                error["type"] == "value_error"
                and loc
                and isinstance(_lookup(document, loc), Mapping)
            ):
                value = _MISSING
            problems.append(Problem(_path(prefix + loc), _message(error), value))
        raise ConfigError(source, problems) from None


class _Loader(yaml.SafeLoader):
    """safe_load's loader, but a scalar its tag cannot read is a YAML error at its line: PyYAML's
    constructors let Python's own errors out (ValueError for 2001-02-30 as a date, ``!!float x``
    or an integer past the 4300-digit limit; AttributeError for ``!!timestamp x``, KeyError for
    ``!!bool maybe``), all found by fuzzing."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, LookupError, AttributeError, TypeError) as exc:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read {node.tag.rsplit(':', 1)[-1]} value: {exc}",
                node.start_mark,
            ) from None


def load_spec(text: str | bytes, source: str = "<config>") -> NodeAssignmentSpec:
    """Parse YAML text into a spec; every failure is a ConfigError, never another exception."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ConfigError(
            source, [Problem("", f"document is larger than {MAX_DOCUMENT_BYTES} bytes", _MISSING)]
        )
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            source, [Problem(where, f"not valid YAML: {problem}", _MISSING)]
        ) from None
    except RecursionError:
        raise ConfigError(
            source, [Problem("", "document is nested too deeply", _MISSING)]
        ) from None
    return parse_spec(document, source)
