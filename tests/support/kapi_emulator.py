"""The emulator behind tests/support/kapi.py: kmock 0.8's KubernetesEmulator with its own object
store (stamped, versioned, with a change history for watches), selectors and subresources.

Each fix is numbered as the gap it closes in kapi.py's docstring.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import random
import re
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
from kmock._internal import parsing, rendering

Obj = dict[str, Any]
Key = tuple[str, str | None, str]  # (resource key, namespace, name)


@dataclass(frozen=True, slots=True)
class Resource:
    api_version: str  # "v1" or "group/version"
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    status: bool = True  # has a status subresource

    @property
    def key(self) -> str:
        return f"{self.api_version}/{self.plural}"

    def path(self, namespace: str | None = None, name: str | None = None, sub: str = "") -> str:
        parts = ["/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"]
        if self.namespaced and namespace:
            parts += ["namespaces", namespace]
        parts += [self.plural] + [p for p in (name, sub) if p]
        return "/".join(parts)


VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}
IDENTITY = ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion")


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    details = {"causes": [{"message": message}]}  # non-empty: kmock would add a traceback
    return kmock.KubernetesError(status=status, reason=reason, message=message, details=details)


# --- gap 3: kmock's path parser and /api/v1/namespaces ---------------------------------------

_NAMESPACES = re.compile(r"/api/v1/namespaces(?:/([^/]+)(?:/(status|finalize))?)?/?")
# Idempotent: a second import (two rootdirs, importlib mode) must not wrap the wrapper.
kmock_parse_path = getattr(parsing.parse_path, "kmock_original", parsing.parse_path)


def _parse_path(path: str) -> parsing.ParsedPath:
    if match := _NAMESPACES.fullmatch(path):
        return parsing.ParsedPath("", "v1", "namespaces", None, match[1], match[2])
    return kmock_parse_path(path)


_parse_path.kmock_original = kmock_parse_path  # type: ignore[attr-defined]
parsing.parse_path = _parse_path  # kmock's rendering looks it up on each request


# --- gap 8: selectors ----------------------------------------------------------------------

_SET_TERM = re.compile(r"\s*([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*")


def _terms(selector: str) -> list[str]:
    return [t.strip() for t in re.split(r",(?![^()]*\))", selector) if t.strip()]


def labels_match(selector: str, labels: Mapping[str, str]) -> bool:
    for term in _terms(selector):
        if match := _SET_TERM.fullmatch(term):
            values = {v.strip() for v in match[3].split(",")}
            ok = (labels.get(match[1]) in values) == (match[2] == "in")
        elif "!=" in term:
            key, value = term.split("!=", 1)
            ok = labels.get(key.strip()) != value.strip()
        elif "=" in term:
            key, value = re.split("==?", term, maxsplit=1)
            ok = labels.get(key.strip()) == value.strip()
        else:
            ok = (term[1:] not in labels) if term.startswith("!") else term in labels
        if not ok:
            return False
    return True


def fields_match(selector: str, obj: Mapping[str, Any]) -> bool:
    for term in _terms(selector):
        path, value = re.split("!=|==?", term, maxsplit=1)
        actual: Any = obj
        for part in path.strip().split("."):
            actual = actual.get(part) if isinstance(actual, Mapping) else None
        if ((str(actual) if actual is not None else "") == value.strip()) == ("!=" in term):
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator with its own object store: stamped, versioned, with a change history."""

    history_limit: int = 10_000
    kinds: dict[str, Resource] = attrs.field(factory=dict)
    _store: dict[Key, Obj] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _history: list[tuple[int, str, Obj]] = attrs.field(factory=list, init=False)
    _oldest: int = attrs.field(default=0, init=False)  # history holds every change after it
    _epoch: int = attrs.field(default=0, init=False)
    _changed: asyncio.Condition = attrs.field(factory=asyncio.Condition, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_replace

    def declare(self, res: Resource) -> None:
        self.kinds[res.key] = res
        self.resources[res.key] = kmock.ResourceInfo(
            namespaced=res.namespaced,
            kind=res.kind,
            singular=res.kind.lower(),
            verbs=VERBS,
            shortnames=set(res.short_names),
            subresources={"status"} if res.status else set(),
        )

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle: its unstamped bookkeeping is what this class replaces.
        # User reactions (kmock's DSL, e.g. fault injection) still come before the fallbacks.
        return await super(kmock.KubernetesEmulator, self)._handle(request)

    # --- reads -----------------------------------------------------------------------------

    def _kind(self, request: rendering.Request) -> Resource:
        res = request.resource
        key = f"{res.group}/{res.version}/{res.plural}".lstrip("/") if res else ""
        if key not in self.kinds:
            raise _error(404, "NotFound", f"the server could not find the resource {key!r}")
        return self.kinds[key]

    def _key(self, request: rendering.Request, res: Resource) -> Key:
        if request.name is None:
            raise _error(405, "MethodNotAllowed", "collection requests are not emulated")
        return (res.key, request.namespace if res.namespaced else None, request.name)

    def _existing(self, key: Key) -> Obj:
        if key not in self._store:
            raise _error(404, "NotFound", f"{key[0]} {key[2]!r} not found")
        return self._store[key]

    def _matches(self, request: rendering.Request, key: Key, obj: Obj) -> bool:
        params = request.params
        meta = obj.get("metadata", {})
        return (
            (request.namespace is None or key[1] == request.namespace)
            and (request.name is None or key[2] == request.name)
            and labels_match(params.get("labelSelector", ""), meta.get("labels") or {})
            and fields_match(params.get("fieldSelector", ""), obj)
        )

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        return copy.deepcopy(self._existing(self._key(request, self._kind(request))))

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        res = self._kind(request)
        items = [
            copy.deepcopy(obj)
            for key, obj in sorted(self._store.items(), key=lambda kv: (kv[0][1] or "", kv[0][2]))
            if key[0] == res.key and self._matches(request, key, obj)
        ]
        return {
            "apiVersion": res.api_version,
            "kind": f"{res.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        res = self._kind(request)
        loop = asyncio.get_running_loop()
        timeout = request.params.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        epoch, start = self._epoch, request.params.get("resourceVersion", "")
        yield b""  # the headers go out now, even if nothing happens for a while
        if start in ("", "0"):
            since = self._rv
            for key, obj in list(self._store.items()):
                if key[0] == res.key and self._matches(request, key, obj):
                    yield {"type": "ADDED", "object": copy.deepcopy(obj)}
            if request.params.get("sendInitialEvents") == "true":
                end: Obj = {"resourceVersion": str(since)}
                end["annotations"] = {"k8s.io/initial-events-end": "true"}
                yield {"type": "BOOKMARK", "object": {"kind": res.kind, "metadata": end}}
        else:
            since = int(start) if start.isdigit() else -1
            if since < self._oldest:
                message = f"too old resource version: {start} ({self._oldest + 1})"
                yield {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                       "metadata": {}, "status": "Failure", "reason": "Expired",
                       "message": message, "code": 410}}  # fmt: skip
                return
        while epoch == self._epoch and (deadline is None or loop.time() < deadline):
            first = bisect.bisect_right(self._history, since, key=lambda entry: entry[0])
            batch = self._history[first:]
            since = batch[-1][0] if batch else since
            for _, res_key, event in batch:
                meta = event["object"]["metadata"]
                key = (res_key, meta.get("namespace"), meta["name"])
                if res_key == res.key and self._matches(request, key, event["object"]):
                    yield copy.deepcopy(event)
            async with self._changed:
                if (not self._history or self._history[-1][0] <= since) and epoch == self._epoch:
                    remaining = None if deadline is None else deadline - loop.time()
                    try:
                        await asyncio.wait_for(self._changed.wait(), remaining)
                    except TimeoutError:
                        return

    # --- writes ----------------------------------------------------------------------------

    async def _emit(self, res: Resource, type_: str, obj: Obj) -> None:
        self._history.append((self._rv, res.key, {"type": type_, "object": copy.deepcopy(obj)}))
        if len(self._history) > self.history_limit:
            self.compact(len(self._history) - self.history_limit)
        async with self._changed:
            self._changed.notify_all()

    def compact(self, count: int | None = None) -> None:
        """Forget the oldest ``count`` changes (all by default): older watches get 410."""
        drop = self._history[: len(self._history) if count is None else count]
        if drop:
            self._oldest = drop[-1][0]
            del self._history[: len(drop)]

    async def close_watches(self) -> None:
        self._epoch += 1
        async with self._changed:
            self._changed.notify_all()

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        res = self._kind(request)
        if not isinstance(request.data, Mapping) or request.name is not None:
            raise _error(400, "BadRequest", "POST a JSON object to the collection")
        body = copy.deepcopy(dict(request.data))
        meta = body.setdefault("metadata", {})
        namespace = (request.namespace or meta.get("namespace")) if res.namespaced else None
        if res.namespaced and not namespace:
            raise _error(400, "BadRequest", "a namespaced object needs a namespace")
        async with self._lock:
            name = meta.get("name")
            while not name and meta.get("generateName"):  # gap 2
                suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
                name = meta["generateName"] + suffix
                name = None if (res.key, namespace, name) in self._store else name
            if not name:
                raise _error(422, "Invalid", "metadata.name or metadata.generateName is required")
            if (res.key, namespace, name) in self._store:
                raise _error(409, "AlreadyExists", f"{res.plural} {name!r} already exists")
            self._rv += 1
            meta.pop("deletionTimestamp", None)
            meta.update(
                name=name, uid=str(uuid.uuid4()), generation=1, resourceVersion=str(self._rv)
            )
            meta.update(creationTimestamp=_now(), **({"namespace": namespace} if namespace else {}))
            body.setdefault("apiVersion", res.api_version)
            body.setdefault("kind", res.kind)
            self._store[(res.key, namespace, name)] = body
            await self._emit(res, "ADDED", body)
        return copy.deepcopy(body)

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        res = self._kind(request)
        key = self._key(request, res)
        ctype = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        async with self._lock:
            old = self._existing(key)
            try:
                if "json-patch" in ctype and isinstance(request.data, list):
                    new = jsonpatch.apply_patch(copy.deepcopy(old), request.data)
                elif "merge-patch" in ctype and isinstance(request.data, Mapping):
                    self._check_version(old, request.data)
                    new = merge_patch(old, request.data)
                elif "json-patch" in ctype or "merge-patch" in ctype:
                    # The API server fails such a body too (a merge patch that is a list
                    # replaces the whole object with it). kubernetes 37 sends every
                    # CustomObjectsApi patch as merge-patch unless given _content_type.
                    shape = "array" if "json-patch" in ctype else "object"
                    raise _error(400, "BadRequest", f"a {ctype} body must be a JSON {shape}")
                else:
                    raise _error(415, "UnsupportedMediaType", f"patch type {ctype!r}")
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise _error(422, "Invalid", f"the JSON patch failed: {exc}") from exc
            return await self._write(res, key, old, new, request.subresource)

    async def _serve_replace(self, request: rendering.Request) -> rendering.Payload:
        res = self._kind(request)
        key = self._key(request, res)
        if not isinstance(request.data, Mapping):
            raise _error(400, "BadRequest", "PUT a JSON object")
        async with self._lock:
            old = self._existing(key)
            self._check_version(old, request.data)
            return await self._write(
                res, key, old, copy.deepcopy(dict(request.data)), request.subresource
            )

    async def _serve_delete(self, request: rendering.Request) -> rendering.Payload:
        res = self._kind(request)
        key = self._key(request, res)
        async with self._lock:
            obj = copy.deepcopy(self._existing(key))
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                return obj
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            if meta.get("finalizers"):
                meta.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
                self._store[key] = obj
                await self._emit(res, "MODIFIED", obj)
            else:
                del self._store[key]
                await self._emit(res, "DELETED", obj)
        return copy.deepcopy(obj)

    @staticmethod
    def _check_version(old: Obj, body: Mapping[str, Any]) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != old["metadata"]["resourceVersion"]:
            raise _error(409, "Conflict", "the object has been modified; apply to the latest")

    async def _write(self, res: Resource, key: Key, old: Obj, new: Any, sub: str | None) -> Obj:
        """Store ``new`` as the next version of ``old`` (the lock is held)."""
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise _error(422, "Invalid", "the result is not an object with metadata")
        if sub == "status" or (sub is None and res.status):
            base, source = (old, new) if sub == "status" else (new, old)
            result = {k: v for k, v in base.items() if k != "status"}
            if "status" in source:
                result["status"] = source["status"]
        elif sub is None:
            result = new
        else:
            raise _error(404, "NotFound", f"no subresource {sub!r}")
        result = copy.deepcopy(result)
        meta = result.setdefault("metadata", {})
        for field in (*IDENTITY, "deletionTimestamp", "deletionGracePeriodSeconds"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        if result == old:
            return copy.deepcopy(old)  # as the API server: no new version, no event
        if _content(result) != _content(old):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self._store[key]
            await self._emit(res, "DELETED", result)
        else:
            self._store[key] = result
            await self._emit(res, "MODIFIED", result)
        return copy.deepcopy(result)
