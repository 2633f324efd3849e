"""A real HTTP Kubernetes API for tests: kmock 0.8's emulator, fixed where kopf and clients need it.

``KubeAPI().start()`` serves on 127.0.0.1:<free port> from a thread with its own event loop, so a
kopf operator (in a ``KopfRunner`` thread via :meth:`KubeAPI.connection_info` in a login handler,
or a ``kopf run`` subprocess with KUBECONFIG = :meth:`KubeAPI.write_kubeconfig`) and the
synchronous ``kubernetes`` client (:meth:`KubeAPI.api_client`) talk to it at once. The helpers
(create, get, list, patch, patch_status, delete, wait_for) speak HTTP to it too. The emulator
itself is in kapi_emulator.py.

kmock 0.8 gaps, read in its source (kmock/_internal/k8s.py, parsing.py, apps.py) and proved by
tests/operator/test_harness.py, and how kapi closes them:

1. No metadata stamping: objects are stored as posted (no resourceVersion, uid, generation,
   creationTimestamp). kopf JSON-patches finalizers behind ``test /metadata/resourceVersion``,
   so every such patch failed. Fix: create stamps all four; each change bumps one global
   resourceVersion counter, and ``generation`` when anything outside metadata/status changed;
   a patch that changes nothing makes no version and no event (kopf settles on that).
2. ``generateName`` ignored (stored under the name None; kopf's Events and ours). Fix: the name
   is generateName + 5 random characters.
3. The path parser raises on ``/api/v1/namespaces[/name]`` (500), so namespaces can be neither
   listed nor read, and kopf waits silently for v1/namespaces in discovery (measured: with it
   undeclared, kopf -A handles nothing). Fix: that path is parsed here (kmock's parser is
   wrapped), v1/namespaces is declared and ``default`` exists. kopf then runs cluster-wide
   (``-A``) and namespace-restricted (``--namespace``) alike: ``-A`` is no longer required.
4. PATCH merged any dict and JSON-patched any list whatever the Content-Type; a failed JSON-patch
   ``test`` gave 500, not the 422 kopf retries on; PUT was not served. Fix: merge patch (RFC 7386;
   strategic merge is treated as merge, so lists are replaced) or JSON patch by Content-Type;
   422 when a JSON patch fails; 400 for a body of the wrong shape (a list sent as merge-patch:
   kubernetes 37's CustomObjectsApi does that unless given ``_content_type``); 415 for other
   types (server-side apply); PUT replaces.
5. No status subresource: PATCH .../status could change anything, PATCH on the object changed
   status. Fix: for resources declared with a status, /status writes only status and the object
   endpoint never does; identity fields (name, uid, resourceVersion, ...) cannot be written.
6. No optimistic concurrency: a stale metadata.resourceVersion in a merge patch or PUT was
   applied. Fix: 409 Conflict. (kmock did give 409 for creating an existing name.)
7. Watches ignored resourceVersion and replayed every object as ADDED on each (re)connect; lists
   said resourceVersion "..."; changes between a list and the watch were lost; kmock never sends
   410 Gone (a stale resourceVersion just gets the full replay); timeoutSeconds ignored. Fix: a
   change history. A watch from resourceVersion N streams exactly the changes after N (kopf's
   list+watch and the client's resume see no duplicates); without N (or "0") it starts with ADDED
   for every object (then the initial-events-end BOOKMARK if sendInitialEvents=true); N older than
   the retained history (:meth:`KubeAPI.compact`, or ``history_limit``) gets an ERROR event,
   code 410 Expired, then the stream ends (kopf re-lists; the client retries once, then raises);
   timeoutSeconds ends the stream; :meth:`KubeAPI.close_watches` ends them all (an API restart).
8. labelSelector / fieldSelector ignored. Fix: label selectors (=, ==, !=, key, !key, in, notin)
   and field selectors (=, ==, != on any dotted path, e.g. metadata.name) on list and watch.
9. Undeclared resources were served as if they existed. Fix: 404 unless in RESOURCES.
10. kmock's ``Server`` patches aiohttp's resolver process-wide (and must be exited LIFO): not
    used; the handler is served by a plain ``aiohttp.web.Server``.

Not emulated: validation (schema, CEL, defaults), namespace existence and deletion, ownerReference
garbage collection, server-side apply, managedFields, delete-collection, selector-driven DELETED
events (an object that stops matching a watch's selector), bookmarks other than the initial one,
the legacy zalando.org peering group. kmock's DSL reactions still take precedence over the
emulation, for fault injection: ``kapi.emulator[kmock.action.UPDATE] << 503 << {...}`` fails
patches with 503 and changes nothing (kmock itself applied intercepted writes anyway).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp.web
import kopf
from kmock._internal import rendering
from kubernetes import client

from vipkeeper_api.resources import API_VERSION

from .kapi_emulator import Emulator, Obj, Resource, fields_match, labels_match, merge_patch

__all__ = [
    "RESOURCES",
    "ApiError",
    "Emulator",
    "KubeAPI",
    "Resource",
    "fields_match",
    "labels_match",
    "merge_patch",
    "wait_for",
]

T = TypeVar("T")

RESOURCES = (
    Resource(API_VERSION, "virtualips", "VirtualIP", True, ("vip",)),
    Resource(API_VERSION, "virtualservers", "VirtualServer", True, ("vs",)),
    Resource(API_VERSION, "nodeassignments", "NodeAssignment", False),
    Resource("v1", "namespaces", "Namespace", False, ("ns",)),
    Resource("v1", "nodes", "Node", False, ("no",)),
    Resource("v1", "services", "Service", True, ("svc",)),
    Resource("v1", "secrets", "Secret", True, status=False),
    Resource("v1", "events", "Event", True, ("ev",), status=False),
    Resource("discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True, status=False),
    Resource("coordination.k8s.io/v1", "leases", "Lease", True, status=False),
    # kopf's peering (HA): kopf.dev is the current group, zalando.org the legacy one.
    Resource("kopf.dev/v1", "clusterkopfpeerings", "ClusterKopfPeering", False, status=False),
    Resource("kopf.dev/v1", "kopfpeerings", "KopfPeering", True, status=False),
)


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class KubeAPI:
    """The emulator on a free localhost port, in its own thread and event loop."""

    def __init__(self, resources: tuple[Resource, ...] = RESOURCES, history_limit: int = 10_000):
        self._resources = resources
        self._history_limit = history_limit
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kapi", daemon=True)
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> KubeAPI:
        self._thread.start()
        self._call(self._astart())
        if any(res.kind == "Namespace" for res in self._resources):
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        return self

    def stop(self) -> None:
        try:
            self._call(self._astop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> KubeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _astart(self) -> None:
        self.emulator = Emulator(history_limit=self._history_limit)
        for res in self._resources:
            self.emulator.declare(res)
        await self.emulator.__aenter__()
        self._web = aiohttp.web.Server(self.emulator, handler_cancellation=True)
        self._server = await self._loop.create_server(self._web, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _astop(self) -> None:
        await self.emulator.close_watches()
        self._server.close()
        for connection in self._web.connections:  # idle keep-alives would hold shutdown 1 s
            connection.force_close()
        await self._web.shutdown(timeout=0.1)
        await self.emulator.__aexit__(None, None, None)

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close_watches(self) -> None:
        """End every open watch stream, as an API server restart does."""
        self._call(self.emulator.close_watches())

    def requests(self) -> list[rendering.Request]:
        """Every request served so far (kmock's record), e.g. to count watch reconnections."""

        async def collect() -> list[rendering.Request]:
            return list(self.emulator)

        return list(self._call(collect()))

    def compact(self) -> None:
        """Forget the change history: watches from an older resourceVersion get 410 Gone."""
        self._loop.call_soon_threadsafe(self.emulator.compact)
        self._call(asyncio.sleep(0))

    # --- clients ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path, server: str | None = None) -> Path:
        """A kubeconfig for ``kopf run`` / kubectl / the client: KUBECONFIG=<path>. ``server``:
        the API's URL as the reader reaches it (default :attr:`url`)."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kapi", "cluster": {"server": server or self.url}}],
            "users": [{"name": "kapi", "user": {"token": "kapi"}}],
            "contexts": [{"name": "kapi", "context": {"cluster": "kapi", "user": "kapi"}}],
            "current-context": "kapi",
        }
        path.write_text(json.dumps(doc, indent=2))  # JSON is YAML
        return path

    def api_client(self) -> client.ApiClient:
        """A fresh ``kubernetes`` client for the emulator (the global default is left alone)."""
        configuration = client.Configuration(host=self.url)
        return client.ApiClient(configuration)

    def connection_info(self) -> kopf.ConnectionInfo:
        """What a kopf ``@kopf.on.login`` handler returns to use the emulator."""
        return kopf.ConnectionInfo(server=self.url, insecure=True)

    # --- helpers over HTTP -----------------------------------------------------------------

    def resource(self, kind: str) -> Resource:
        """By kind, plural or short name (``VirtualIP``, ``virtualips``, ``vip``)."""
        for res in self._resources:
            if kind in (res.kind, res.plural, *res.short_names):
                return res
        raise KeyError(kind)

    def request(self, method: str, path: str, body: Any = None, ctype: str = "") -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": ctype or "application/json"}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        doc = json.loads(raw) if raw else None
        if response.status >= 300:
            raise ApiError(response.status, doc)
        return doc

    def create(self, obj: Obj) -> Obj:
        res = self.resource(obj["kind"])
        namespace = obj.get("metadata", {}).get("namespace", "default")
        return dict(self.request("POST", res.path(namespace), obj))

    def get(self, kind: str, name: str, namespace: str = "default") -> Obj | None:
        try:
            return dict(self.request("GET", self.resource(kind).path(namespace, name)))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, labels: str = "") -> list[Obj]:
        query = f"?{urlencode({'labelSelector': labels})}" if labels else ""
        return list(self.request("GET", self.resource(kind).path(namespace) + query)["items"])

    def patch(
        self, kind: str, name: str, patch: Any, namespace: str = "default", sub: str = ""
    ) -> Obj:
        """A merge patch (a dict) or a JSON patch (a list)."""
        ctype = "application/json-patch+json" if isinstance(patch, list) else ""
        ctype = ctype or "application/merge-patch+json"
        return dict(
            self.request("PATCH", self.resource(kind).path(namespace, name, sub), patch, ctype)
        )

    def patch_status(self, kind: str, name: str, status: Obj, namespace: str = "default") -> Obj:
        return self.patch(kind, name, {"status": status}, namespace, sub="status")

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, what: str = "") -> T:
        return wait_for(predicate, timeout, what)

    def delete(self, kind: str, name: str, namespace: str = "default") -> Obj | None:
        try:
            return dict(self.request("DELETE", self.resource(kind).path(namespace, name)))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; return that. Bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what or predicate!r} (last: {value!r})")
        time.sleep(0.02)
