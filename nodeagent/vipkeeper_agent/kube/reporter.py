"""Write the node's status to its own NodeAssignment's /status: coalesced, rate limited, with a
heartbeat, and only ever the latest state (after an outage: one write, not a replay).

An asyncio task; each write runs the synchronous client in a worker thread with a timeout, so a
hung API can delay reports but never the agent's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vipkeeper_agent.kube.pacing import Pacer
from vipkeeper_agent.kube.report import content
from vipkeeper_agent.kube.source import PLURAL
from vipkeeper_api.resources import GROUP, VERSION

log = logging.getLogger("vipkeeper.kube.reporter")

#: The client labels every custom-object patch a merge patch unless told otherwise; a merge
#: patch would keep keys (instances, virtual servers) the new document no longer has.
JSON_PATCH = "application/json-patch+json"
#: How often the snapshot is compared with what was written (transitions wake it at once).
POLL = 1.0
REQUEST_TIMEOUT = 10.0


class StatusReporter:
    """``build(now_wall)`` returns the status document, or None while there is nothing to say
    yet (the agent is starting: an empty report would look like a node that lost its VIPs);
    ``poke()`` when something changed."""

    def __init__(
        self,
        api: client.ApiClient,
        node: str,
        build: Callable[[float], Mapping[str, Any] | None],
        *,
        pacer: Pacer | None = None,
        poll: float = POLL,
    ) -> None:
        self.node = node
        self._objects = client.CustomObjectsApi(api)
        self._build = build
        self.pacer = pacer or Pacer()
        self._poll = poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        self.failures = 0
        self.last_error: str | None = None

    def poke(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="status-reporter")

    async def stop(self, final: bool = True, timeout: float = 2.0) -> None:
        """Stop; with ``final``, try once (bounded) to write the state as it is now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if final:
            with contextlib.suppress(Exception):
                doc = self._build(time.time())
                if doc is not None:
                    await asyncio.wait_for(self._write(dict(doc)), timeout)

    def state(self) -> dict[str, Any]:
        return {"writes": self.writes, "failures": self.failures, "lastError": self.last_error}

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()  # before building: a poke from now on is seen next round
            try:
                built = self._build(time.time())
            except Exception:
                log.exception("event=status_build_failed")
                built = None
            if built is None:
                await asyncio.sleep(self._poll)
                continue
            doc = dict(built)
            key = content(doc)
            wait = self.pacer.due_in(loop.time(), key)
            if wait <= 0:
                try:
                    await self._write(doc)
                except Exception as exc:
                    delay = self.pacer.failed(loop.time())
                    self.failures += 1
                    error = f"{type(exc).__name__}: {exc}"[:300]
                    if error != self.last_error:
                        log.warning(
                            "event=status_write_failed error=%r retry_in=%.1f", error, delay
                        )
                    self.last_error = error
                else:
                    if self.last_error is not None:
                        log.info("event=status_write_recovered failures=%d", self.failures)
                    self.pacer.done(loop.time(), key)
                    self.writes += 1
                    self.last_error = None
                continue
            # Wake on a poke, or to compare again, or when the write falls due.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, self._poll))

    async def _write(self, doc: dict[str, Any]) -> None:
        await asyncio.to_thread(self._patch, doc)

    def _patch(self, doc: dict[str, Any]) -> None:
        patch = [{"op": "add", "path": "/status", "value": doc}]
        try:
            self._objects.patch_cluster_custom_object_status(
                GROUP,
                VERSION,
                PLURAL,
                self.node,
                patch,
                _content_type=JSON_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status == 404:
                raise RuntimeError(f"NodeAssignment {self.node} does not exist (yet)") from None
            raise


__all__ = ["JSON_PATCH", "StatusReporter"]
