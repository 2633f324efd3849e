"""Keep the cache file equal to the node's NodeAssignment spec: list + watch in a thread.

The agent runs from the cache file whatever the API does: this thread only replaces the file,
atomically, with a spec that parses (and whose scripts the agent may run). A spec that does not is
reported and the last good one keeps running; a deleted object empties the file (the node resigns
everything). Watches resume from the last resourceVersion, re-list on 410 Gone, and back off on
errors; the file is rewritten only when its bytes change, so a status write (which bumps the
object's resourceVersion, not its generation) does not make the agent reload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from vipkeeper_agent.kube.assignment import (
    Accepted,
    Rejected,
    cached_generation,
    evaluate,
    owners,
    render,
)
from vipkeeper_api import ConfigError, NodeAssignmentSpec, load_spec
from vipkeeper_api.resources import GROUP, VERSION

log = logging.getLogger("vipkeeper.kube.source")

PLURAL = "nodeassignments"
#: Server-side end of each watch; the stream is then resumed from its resourceVersion.
WATCH_SECONDS = 50
#: Connect and read timeouts of every request: an unreachable API must not hang the thread.
CONNECT_TIMEOUT = 5.0
HTTP_GONE = 410


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never a torn one, even across a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)  # it can hold VRRP passwords
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class AssignmentSource:
    """``load_cache()`` (at once, no API), then ``start()``; ``stop()`` ends the thread."""

    def __init__(
        self,
        api: client.ApiClient,
        node: str,
        cache: Path,
        *,
        accept: Callable[[NodeAssignmentSpec], list[str]] = lambda spec: [],
        on_change: Callable[[], None] = lambda: None,
        on_problem: Callable[[str], None] = lambda problem: None,
        backoff: tuple[float, float] = (0.5, 30.0),
        watch_seconds: int = WATCH_SECONDS,
        read_timeout: float = WATCH_SECONDS + 15,
    ) -> None:
        self.node, self.cache = node, cache
        self._objects = client.CustomObjectsApi(api)
        self._accept, self._on_change, self._on_problem = accept, on_change, on_problem
        self._backoff, self._watch_seconds, self._read_timeout = (
            backoff,
            watch_seconds,
            read_timeout,
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._watch: watch.Watch | None = None
        #: The last good spec (what the cache file holds) and the generation it came from.
        self.spec: NodeAssignmentSpec | None = None
        self.generation: int | None = None
        #: Why the latest spec was not applied; None once a good one arrives.
        self.problem: str | None = None
        self.connected = False
        self.last_error: str | None = None
        self.uid: str | None = None
        self.owners: dict[str, dict[str, str]] = {}
        self.resource_version: str | None = None
        #: (uid, generation) of the object last applied: a status write changes neither.
        self._seen: tuple[Any, Any] = (None, None)
        self.counts = {"lists": 0, "watches": 0, "writes": 0, "rejected": 0, "errors": 0}

    # --- start-up ---------------------------------------------------------------------------

    def load_cache(self) -> NodeAssignmentSpec | None:
        """The cached spec, if there is a good one: the agent starts from it before (and
        whether or not) the API answers."""
        try:
            data = self.cache.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("event=cache_unreadable path=%s error=%s", self.cache, exc)
            return None
        try:
            spec = load_spec(data, str(self.cache))
        except ConfigError as exc:
            log.error("event=cache_invalid path=%s error=%s", self.cache, exc)
            return None
        refused = self._accept(spec)
        if refused:
            log.error("event=cache_refused path=%s problems=%r", self.cache, refused)
            return None
        self.spec, self.generation = spec, cached_generation(data)
        return spec

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="assignment-source", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        current = self._watch
        if current is not None:
            current.stop()  # shuts the socket down, so a blocked read returns now
        if self._thread is not None:
            self._thread.join(timeout)

    def current(self) -> tuple[NodeAssignmentSpec | None, int | None]:
        """The last good spec and its generation, read together (the thread sets both)."""
        with self._lock:
            return self.spec, self.generation

    def state(self) -> dict[str, Any]:
        """For the local status document."""
        return {
            "node": self.node,
            "cache": str(self.cache),
            "connected": self.connected,
            "generation": self.generation,
            "resourceVersion": self.resource_version,
            "problem": self.problem,
            "lastError": self.last_error,
            "counts": dict(self.counts),
        }

    # --- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        first, cap = self._backoff
        delay = first
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self.resource_version is None:
                    self._list()
                    delay = first
                self._watch_once()
            except ApiException as exc:
                if exc.status == HTTP_GONE:
                    log.info("event=watch_expired action=relist")
                    self.resource_version = None
                    continue
                self._failed(f"HTTP {exc.status}: {exc.reason}")
            except Exception as exc:  # urllib3 / socket errors: the API is away
                if self._stop.is_set():
                    break
                self._failed(f"{type(exc).__name__}: {exc}")
            else:
                if time.monotonic() - started > 1.0:
                    delay = first
                    continue  # a long watch that ended: resume at once
                # A stream that ends as soon as it starts must not become a busy loop.
            jitter = delay * random.uniform(0.8, 1.2)
            self._stop.wait(jitter)
            delay = min(cap, delay * 2)

    def _failed(self, error: str) -> None:
        # Start over with a list: one object is cheap to list, and whatever went wrong (an
        # outage, an answer we did not understand) cannot then repeat forever on a stale version.
        self.resource_version = None
        self.counts["errors"] += 1
        if self.connected or error != self.last_error:
            log.warning("event=api_unavailable node=%s error=%r keeping=cache", self.node, error)
        self.connected, self.last_error = False, error

    def _selector(self) -> str:
        return f"metadata.name={self.node}"

    def _list(self) -> None:
        listing = self._objects.list_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            field_selector=self._selector(),
            _request_timeout=(CONNECT_TIMEOUT, self._read_timeout),
        )
        self.counts["lists"] += 1
        mine = [i for i in listing.get("items", ()) if _name(i) == self.node]
        self.connected, self.last_error = True, None
        self._apply(mine[0] if mine else None)
        self.resource_version = str(listing["metadata"]["resourceVersion"])

    def _watch_once(self) -> None:
        current = watch.Watch()
        self._watch = current
        if self._stop.is_set():
            return
        self.counts["watches"] += 1
        try:
            for event in current.stream(
                self._objects.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                field_selector=self._selector(),
                resource_version=self.resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_seconds,
                _request_timeout=(CONNECT_TIMEOUT, self._read_timeout),
            ):
                if self._stop.is_set():
                    return
                self._event(event)
        finally:
            self._watch = None

    def _event(self, event: Mapping[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("raw_object") or {}
        if kind == "ERROR":
            raise ApiException(status=obj.get("code"), reason=obj.get("message"))
        self.connected, self.last_error = True, None
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind != "BOOKMARK" and _name(obj) == self.node:
            self._apply(None if kind == "DELETED" else obj)
        if version:
            self.resource_version = str(version)

    # --- applying ---------------------------------------------------------------------------

    def _apply(self, obj: Mapping[str, Any] | None) -> None:
        meta = {} if obj is None else (obj.get("metadata") or {})
        with self._lock:
            self.uid = meta.get("uid")
            self.owners = owners(obj)
        seen = (self.uid, meta.get("generation"))
        if obj is not None and seen == self._seen and self.problem is None:
            return  # our own status write (or a label): the spec is the one applied
        self._seen = seen
        outcome = evaluate(obj, self.node)
        if isinstance(outcome, Accepted):
            refused = self._accept(outcome.spec)
            if refused:
                outcome = Rejected(
                    outcome.generation,
                    f"NodeAssignment/{self.node} generation {outcome.generation} rejected, "
                    f"keeping the last good spec: {'; '.join(refused)}",
                )
        if isinstance(outcome, Rejected):
            if outcome.problem != self.problem:
                self.counts["rejected"] += 1
                log.error("event=assignment_rejected %s", outcome.problem)
                self.problem = outcome.problem
                self._on_problem(outcome.problem)
            return
        data = render(outcome.spec, self.node, outcome.generation)
        try:
            same = self.cache.read_bytes() == data
        except OSError:
            same = False
        if not same:
            write_atomic(self.cache, data)
            self.counts["writes"] += 1
            log.info(
                "event=assignment_written node=%s generation=%s instances=%d deleted=%s",
                self.node,
                outcome.generation,
                len(outcome.spec.instances),
                obj is None,
            )
        with self._lock:
            self.spec, self.generation, self.problem = outcome.spec, outcome.generation, None
        if not same:
            self._on_change()


def _name(obj: Mapping[str, Any]) -> str | None:
    name = (obj.get("metadata") or {}).get("name")
    return name if isinstance(name, str) else None


__all__ = ["AssignmentSource", "write_atomic"]
