"""The operator's writes to the API: NodeAssignments and the status of VirtualIPs/VirtualServers.

A thin adapter over the ``kubernetes`` client (synchronous, so every call runs in a worker
thread). Specs and statuses are replaced with a JSON patch on the whole field: a merge patch
would keep keys the new document no longer has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from vipkeeper_api.resources import GROUP, VERSION
from vipkeeper_operator.planning.status import format_time
from vipkeeper_operator.planning.writes import (
    DeleteAssignment,
    EventWrite,
    PutAssignment,
    Write,
)

log = logging.getLogger("vipkeeper.operator")

ASSIGNMENTS = "nodeassignments"
#: The client labels every custom-object patch a merge patch unless told otherwise.
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


def load_config() -> None:
    """In a pod: the service account; elsewhere: the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class Kube:
    def __init__(self, api: client.ApiClient | None = None, component: str = "vipkeeper-operator"):
        self._objects = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._component = component

    async def write(self, write: Write) -> None:
        await asyncio.to_thread(self._write, write)

    async def replace_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        await asyncio.to_thread(self._replace_status, plural, namespace, name, status)

    async def read_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Secret, or None if there is none (VRRP auth: read on demand, never watched, so
        the operator holds no other Secret of the cluster in memory)."""
        return await asyncio.to_thread(self._read_secret, namespace, name)

    async def post_event(self, event: EventWrite, now: datetime) -> None:
        await asyncio.to_thread(self._post_event, event, now)

    # --- in a worker thread ---------------------------------------------------------------

    def _write(self, write: Write) -> None:
        if isinstance(write, DeleteAssignment):
            try:
                self._objects.delete_cluster_custom_object(GROUP, VERSION, ASSIGNMENTS, write.node)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            return
        assert isinstance(write, PutAssignment)
        if not write.exists:
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "NodeAssignment",
                "metadata": {
                    "name": write.node,
                    "labels": {"app.kubernetes.io/managed-by": "vipkeeper"},
                    "annotations": dict(write.annotations),
                },
                "spec": write.spec,
            }
            try:
                self._objects.create_cluster_custom_object(GROUP, VERSION, ASSIGNMENTS, body)
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
                # Created meanwhile (another replica before the handover, or our watch lagging).
        patch = [{"op": "add", "path": "/spec", "value": write.spec}]
        self._objects.patch_cluster_custom_object(
            GROUP, VERSION, ASSIGNMENTS, write.node, patch, _content_type=JSON_PATCH
        )
        if write.annotations:
            # A merge patch: it sets our key and leaves anybody else's annotations alone (a JSON
            # patch "add" under /metadata/annotations fails where there are none yet).
            self._objects.patch_cluster_custom_object(
                GROUP,
                VERSION,
                ASSIGNMENTS,
                write.node,
                {"metadata": {"annotations": dict(write.annotations)}},
                _content_type=MERGE_PATCH,
            )

    def _replace_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        patch = [{"op": "add", "path": "/status", "value": dict(status)}]
        try:
            self._objects.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, patch, _content_type=JSON_PATCH
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    def _post_event(self, event: EventWrite, now: datetime) -> None:
        stamp = format_time(now, seconds_only=True)  # metav1.Time: seconds
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{event.name}.", "namespace": event.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": event.kind,
                "namespace": event.namespace,
                "name": event.name,
                "uid": event.uid,
            },
            "type": event.type,
            "reason": event.reason,
            # The API refuses messages over 1 KiB.
            "message": event.message[:1024],
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self._core.create_namespaced_event(event.namespace or "default", body)

    def _read_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            secret = self._core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {"data": secret.data or {}}
