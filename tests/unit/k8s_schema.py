"""A stand-in for the kube-apiserver's validation of custom resources, for tests.

The subset of OpenAPI the CRDs use, unknown fields rejected as ``kubectl --validate=strict`` does,
and the CEL rules evaluated by celpy with numbers typed as the apiserver types them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from vipkeeper_api import crd
from vipkeeper_api.resources import API_VERSION

SCHEMAS = {
    k.kind: crd.crd(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for k in crd.KINDS
}
_ENV = celpy.Environment()


@functools.cache
def program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule))


def _format_ok(fmt: str, value: str) -> bool:
    try:
        if fmt == "ipv4":
            ipaddress.IPv4Address(value)
        elif fmt == "ipv6":
            ipaddress.IPv6Address(value)
        elif fmt == "cidr":
            ipaddress.ip_network(value, strict=False)
            return "/" in value
        return True
    except ValueError:
        return False


def validate(schema: dict[str, Any], value: Any, path: str, errors: list[str]) -> Any:
    """Appends what the apiserver would refuse; returns the value as CEL sees it."""
    found = len(errors)
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, int | str) or isinstance(value, bool):
            errors.append(f"{path}: must be an integer or a string")
        return value
    kind = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    }
    if kind is not None and not checks[kind](value):
        errors.append(f"{path}: must be of type {kind}")
        return value
    if kind == "number":
        value = float(value)
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: Unsupported value {value!r}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: should be greater than or equal to {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        errors.append(f"{path}: should be less than or equal to {schema['maximum']}")
    if kind == "string":
        if len(value) > schema.get("maxLength", len(value)):
            errors.append(f"{path}: Too long")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: Too short")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: should match {schema['pattern']!r}")
        formats = [schema["format"]] if "format" in schema else []
        formats += [o["format"] for o in schema.get("anyOf", ())]
        if formats and not any(_format_ok(f, value) for f in formats):
            errors.append(f"{path}: must be of format {' or '.join(formats)}")
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{path}: wrong number of items")
        value = [validate(schema["items"], v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
        _list_type(schema, value, path, errors)
    if kind == "object" and not schema.get("x-kubernetes-preserve-unknown-fields"):
        value = _object(schema, value, path, errors)
    if len(errors) > found:  # the rules assume a well-typed value
        return value
    for rule in schema.get("x-kubernetes-validations", ()):
        try:
            ok = program(rule["rule"]).evaluate({"self": json_to_cel(value)})
        except CELEvalError as error:  # a runtime error refuses the object, as in k8s
            ok = False
            errors.append(f"{path}: {rule['rule']!r} failed: {error.args[0]}")
        if not ok and "messageExpression" in rule:
            message = program(rule["messageExpression"]).evaluate({"self": json_to_cel(value)})
            errors.append(f"{path}: Invalid value: {message}")
        elif not ok:
            errors.append(f"{path}: Invalid value: {rule['message']}")
    return value


def _object(schema: dict[str, Any], value: dict[str, Any], path: str, errors: list[str]) -> Any:
    props = schema.get("properties")
    if props is None and "additionalProperties" not in schema:  # metadata: the apiserver's own
        return value
    if props is None:
        if len(value) > schema.get("maxProperties", len(value)):
            errors.append(f"{path}: too many properties")
        sub = schema["additionalProperties"]
        return {k: validate(sub, v, f"{path}.{k}", errors) for k, v in value.items()}
    props = props or {}
    errors += [f'{path}: unknown field "{k}"' for k in value if k not in props]
    errors += [f"{path}.{k}: Required value" for k in schema.get("required", ()) if k not in value]
    return {k: validate(props[k], v, f"{path}.{k}", errors) for k, v in value.items() if k in props}


def _list_type(schema: dict[str, Any], value: list[Any], path: str, errors: list[str]) -> None:
    kind = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys", ())
    items = [tuple(v.get(k) for k in keys) for v in value] if kind == "map" else value
    if kind in ("set", "map") and len(set(map(repr, items))) != len(items):
        errors.append(f"{path}: Duplicate value")


def errors_of(kind: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> list[str]:
    """What the apiserver would say of a ``kind`` object with this spec (and status)."""
    errors: list[str] = []
    document = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    document |= {"status": status} if status is not None else {}
    validate(SCHEMAS[kind], document, "", errors)
    return errors


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (``.spec.checks[]``), the root first."""
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")


#: What an anyOf option must not set in a structural schema.
JUNCTOR_FORBIDDEN = {"type", "description", "default", "additionalProperties", "nullable"}
