"""The operator tier's harness, proved: the API emulator (tests/support/kapi.py) under a stand-in
kopf operator, our ``Kube`` adapter and the ``kubernetes`` client's watch.

The stand-in operator is defined here on purpose (not the product operator): it pins down what the
emulator must do for any kopf operator, so a failure here is the harness, not the product.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import ProtocolError

from support import kapi_emulator
from support.kapi import ApiError, KubeAPI, fields_match, labels_match
from vipkeeper_operator.kube import Kube
from vipkeeper_operator.planning.writes import DeleteAssignment, EventWrite, PutAssignment

pytestmark = [pytest.mark.operator, pytest.mark.timeout(30)]

GROUP, VERSION = "vipkeeper.io", "v1alpha1"
JSON_PATCH = "application/json-patch+json"


def _vip(name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "VirtualIP",
        "metadata": {"name": name, "namespace": namespace, "labels": {"tier": "edge"}},
        "spec": {"addresses": ["192.0.2.10/32"]},
    }


def _assignment(node: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "NodeAssignment",
            "metadata": {"name": node}, "spec": spec}  # fmt: skip


# --- selectors (pure) ---------------------------------------------------------------------

LABELS = {"app": "web", "tier": "edge"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web,tier=edge", True),
        ("app=db", False),
        ("app!=db", True),
        ("tier", True),
        ("!tier", False),
        ("!zone", True),
        ("app in (db, web)", True),
        ("app notin (db, web)", False),
        ("zone notin (a)", True),
        ("app in (web),tier in (core)", False),
    ],
)
def test_label_selectors(selector: str, expected: bool) -> None:
    assert labels_match(selector, LABELS) is expected


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("metadata.name=n1", True),
        ("metadata.name==n2", False),
        ("metadata.name!=n2", True),
        ("metadata.name=n1,spec.unschedulable=True", True),
        ("spec.missing=", True),
    ],
)
def test_field_selectors(selector: str, expected: bool) -> None:
    obj = {"metadata": {"name": "n1"}, "spec": {"unschedulable": True}}
    assert fields_match(selector, obj) is expected


# --- the API semantics kmock lacked ---------------------------------------------------------


def test_create_stamps_and_names(kapi: KubeAPI) -> None:
    vip = kapi.create(_vip("web"))
    meta = vip["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert (meta["generation"], int(meta["resourceVersion"]) > 0) == (1, True)
    event = kapi.create({"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "web."}})
    assert event["metadata"]["name"].startswith("web.") and len(event["metadata"]["name"]) == 9
    with pytest.raises(ApiError) as exc:
        kapi.create(_vip("web"))
    assert exc.value.status == 409
    assert [ns["metadata"]["name"] for ns in kapi.list("Namespace")] == ["default"]
    with pytest.raises(ApiError) as exc:
        kapi.request("GET", "/apis/vipkeeper.io/v1alpha1/unknowns")
    assert exc.value.status == 404


def test_status_subresource_generation_and_concurrency(kapi: KubeAPI) -> None:
    rv0 = kapi.create(_vip("web"))["metadata"]["resourceVersion"]
    # The object endpoint ignores status; /status ignores everything else.
    main = kapi.patch("vip", "web", {"spec": {"vrid": 7}, "status": {"holder": "x"}})
    assert "status" not in main and main["metadata"]["generation"] == 2
    status = kapi.patch(
        "vip", "web", {"spec": {"vrid": 9}, "status": {"holder": "n1"}}, sub="status"
    )
    assert (status["spec"]["vrid"], status["status"]) == (7, {"holder": "n1"})
    assert status["metadata"]["generation"] == 2  # a status write is no new generation
    # A no-op patch makes no new version (kopf relies on this to settle).
    again = kapi.patch_status("vip", "web", {"holder": "n1"})
    assert again["metadata"]["resourceVersion"] == status["metadata"]["resourceVersion"]
    # Optimistic concurrency: a stale resourceVersion is refused, in both patch flavours.
    with pytest.raises(ApiError) as exc:
        kapi.patch("vip", "web", {"metadata": {"resourceVersion": rv0}, "spec": {"vrid": 1}})
    assert exc.value.status == 409
    with pytest.raises(ApiError) as exc:
        test = {"op": "test", "path": "/metadata/resourceVersion", "value": rv0}
        kapi.patch("vip", "web", [test, {"op": "add", "path": "/spec/vrid", "value": 1}])
    assert exc.value.status == 422
    assert [v["metadata"]["name"] for v in kapi.list("vip", labels="tier=edge")] == ["web"]
    assert kapi.list("vip", labels="tier=core") == []


def test_finalizers_hold_deletion(kapi: KubeAPI) -> None:
    vip = _vip("web")
    vip["metadata"]["finalizers"] = ["test/hold"]
    kapi.create(vip)
    held = kapi.delete("vip", "web")
    assert held is not None and held["metadata"]["deletionTimestamp"]
    assert kapi.get("vip", "web") is not None
    kapi.patch("vip", "web", {"metadata": {"finalizers": None}})
    assert kapi.get("vip", "web") is None


def test_fault_injection_precedes_emulation(kapi: KubeAPI) -> None:
    kapi.create(_vip("web"))
    virtualips = kmock.resource(f"{GROUP}/{VERSION}/virtualips")
    kapi.emulator[kmock.action.UPDATE, virtualips] << 503 << {"kind": "Status", "code": 503}
    with pytest.raises(ApiError) as exc:
        kapi.patch("vip", "web", {"spec": {"vrid": 7}})
    assert exc.value.status == 503
    vip = kapi.get("vip", "web")
    assert vip is not None and "vrid" not in vip["spec"]


# --- the kubernetes client's watch ------------------------------------------------------------


def _watch_names(kapi: KubeAPI, seen: list[tuple[str, str]], **kwargs: Any) -> watch.Watch:
    api = client.CustomObjectsApi(kapi.api_client())
    w = watch.Watch()

    def run() -> None:
        try:
            for event in w.stream(api.list_cluster_custom_object, GROUP, VERSION,
                                  "nodeassignments", **kwargs):  # fmt: skip
                seen.append((event["type"], event["object"]["metadata"]["name"]))
        except ProtocolError:  # Watch.stop() shuts the socket down under the reader
            pass

    threading.Thread(target=run, daemon=True).start()
    return w


def test_watch_resumes_from_resource_version(kapi: KubeAPI) -> None:
    """After the stream ends, the client re-watches from the last resourceVersion it saw: the
    changes it missed arrive once, nothing is replayed (kmock replayed all as ADDED)."""
    rv = kapi.create(_assignment("n0"))["metadata"]["resourceVersion"]
    seen: list[tuple[str, str]] = []
    w = _watch_names(kapi, seen, resource_version=rv)
    kapi.create(_assignment("n1"))
    kapi.wait_for(lambda: ("ADDED", "n1") in seen, what="n1 seen")
    kapi.close_watches()  # as an API server restart
    kapi.create(_assignment("n2"))
    kapi.delete("NodeAssignment", "n1")
    kapi.wait_for(lambda: ("DELETED", "n1") in seen, what="n1 deleted")
    w.stop()
    kapi.close_watches()
    assert seen == [("ADDED", "n1"), ("ADDED", "n2"), ("DELETED", "n1")]
    watches = [r for r in kapi.requests() if r.action == kmock.action.WATCH]
    assert len(watches) >= 2 and watches[1].params["resourceVersion"] != rv


def test_watch_too_old_gets_410(kapi: KubeAPI) -> None:
    """A resourceVersion older than the retained history gets ERROR 410 Expired; the client
    retries once from the same version, then raises (kmock never said 410: it replayed)."""
    rv = kapi.create(_assignment("n0"))["metadata"]["resourceVersion"]
    kapi.create(_assignment("n1"))
    kapi.compact()
    api = client.CustomObjectsApi(kapi.api_client())
    with pytest.raises(ApiException) as exc:
        for _ in watch.Watch().stream(api.list_cluster_custom_object, GROUP, VERSION,
                                      "nodeassignments", resource_version=str(int(rv) - 1)):  # fmt: skip
            pass
    assert exc.value.status == 410
    # From the list's resourceVersion (or none), watching works again.
    listed = api.list_cluster_custom_object(GROUP, VERSION, "nodeassignments")
    names = []
    for event in watch.Watch().stream(api.list_cluster_custom_object, GROUP, VERSION,
                                      "nodeassignments", timeout_seconds=5):  # fmt: skip
        names.append(event["object"]["metadata"]["name"])
        if len(names) == 2:
            break
    assert names == ["n0", "n1"]
    assert int(listed["metadata"]["resourceVersion"]) >= int(rv) + 1


@pytest.mark.asyncio
async def test_raw_kmock_gaps(kmock: kmock.KubernetesEmulator) -> None:
    """kmock 0.8 as installed (its pytest fixture): what kapi.py fixes. If this starts failing,
    kmock changed: re-check which fixes are still needed."""
    kmock.resources["vipkeeper.io/v1alpha1/nodeassignments"] = kmock.ResourceInfo(namespaced=False)
    url = "/apis/vipkeeper.io/v1alpha1/nodeassignments"
    created = await (await kmock.post(url, json=_assignment("n0"))).json()
    assert "resourceVersion" not in created["metadata"] and "uid" not in created["metadata"]
    async with kmock.get(f"{url}?watch=true&resourceVersion=999999") as response:
        first = await response.content.readline()  # a replay, not 410 Gone
    assert b'"ADDED"' in first and b'"n0"' in first
    with pytest.raises(ValueError):  # hence 500 for any namespaces request
        kapi_emulator.kmock_parse_path("/api/v1/namespaces")


# --- our adapter --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_kube_adapter_creates_posts_and_deletes(kapi: KubeAPI) -> None:
    kube = Kube(kapi.api_client())
    await kube.write(PutAssignment("n1", {"instances": [{"name": "a"}]}, exists=False))
    na = kapi.get("NodeAssignment", "n1")
    assert na is not None and na["spec"] == {"instances": [{"name": "a"}]}
    assert na["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "vipkeeper"}
    # The node's status report, as an agent writes it: a JSON patch on /status, which the
    # kubernetes 37 client sends as JSON patch only when told (its default is merge-patch).
    objects = client.CustomObjectsApi(kapi.api_client())
    report = [{"op": "add", "path": "/status", "value": {"instances": [{"name": "a"}]}}]
    objects.patch_cluster_custom_object_status(
        GROUP, VERSION, "nodeassignments", "n1", report, _content_type=JSON_PATCH
    )
    na = kapi.get("NodeAssignment", "n1")
    assert na is not None and na["status"] == {"instances": [{"name": "a"}]}
    vip = kapi.create(_vip("web"))
    uid = vip["metadata"]["uid"]
    event = EventWrite("VirtualIP", "default", "web", uid, "Normal", "Elected", "n2 is MASTER")
    await kube.post_event(event, datetime.now(UTC))
    [posted] = kapi.list("Event", "default")
    assert posted["metadata"]["name"].startswith("web.") and posted["involvedObject"]["uid"] == uid
    assert await kube.read_secret("default", "missing") is None
    await kube.write(DeleteAssignment("n1"))
    await kube.write(DeleteAssignment("n1"))  # already gone: no error
    assert kapi.get("NodeAssignment", "n1") is None


@pytest.mark.asyncio
async def test_kube_adapter_replaces_spec_and_status(kapi: KubeAPI) -> None:
    kube = Kube(kapi.api_client())
    await kube.write(PutAssignment("n1", {"instances": [{"name": "a"}], "extra": 1}, exists=False))
    kapi.create(_vip("web"))
    await kube.replace_status("virtualips", "default", "web", {"holder": "n1", "vrid": 3})
    await kube.replace_status("virtualips", "default", "web", {"holder": "n2"})
    await kube.replace_status("virtualips", "default", "gone", {"holder": "n2"})  # no error
    vip = kapi.get("vip", "web")
    assert vip is not None and vip["status"] == {"holder": "n2"}  # replaced, not merged
    await kube.write(PutAssignment("n1", {"instances": [{"name": "b"}]}, exists=True))
    await kube.write(PutAssignment("n1", {"instances": [{"name": "c"}]}, exists=False))  # 409
    na = kapi.get("NodeAssignment", "n1")
    assert na is not None and na["spec"] == {"instances": [{"name": "c"}]}


# --- a stand-in kopf operator ---------------------------------------------------------------


def _standin(kapi: KubeAPI) -> kopf.OperatorRegistry:
    """VirtualIP → one NodeAssignment; the assignment's status → the VirtualIP's status."""
    registry = kopf.OperatorRegistry()
    objects = client.CustomObjectsApi(kapi.api_client())

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kapi.connection_info()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.level = 0
        settings.watching.reconnect_backoff = 0.05

    @kopf.on.create(GROUP, VERSION, "virtualips", registry=registry)
    def assign(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> None:
        labels = {"vip-namespace": namespace or "", "vip-name": name}
        na = _assignment(f"na-{name}", vip=name)
        na["metadata"]["labels"] = labels
        objects.create_cluster_custom_object(GROUP, VERSION, "nodeassignments", na)
        kopf.info(body, reason="Assigned", message=f"to na-{name}")

    @kopf.on.field(GROUP, VERSION, "nodeassignments", field="status.state", registry=registry)
    def report(labels: kopf.Labels, new: Any, **_: Any) -> None:
        status = {"status": {"state": new}}
        objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, labels["vip-namespace"], "virtualips", labels["vip-name"], status
        )

    @kopf.on.delete(GROUP, VERSION, "virtualips", registry=registry)
    def release(name: str, **_: Any) -> None:
        objects.delete_cluster_custom_object(GROUP, VERSION, "nodeassignments", f"na-{name}")

    return registry


@pytest.mark.parametrize("scope", [["-A"], ["--namespace", "default"]], ids=["all", "namespaced"])
def test_kopf_standin_operator(kapi: KubeAPI, scope: list[str]) -> None:
    args = ["run", *scope, "--standalone"]
    with KopfRunner(args, registry=_standin(kapi), timeout=10) as runner:
        kapi.create(_vip("web"))
        na = kapi.wait_for(lambda: kapi.get("NodeAssignment", "na-web"), what="assignment")
        vip = kapi.get("vip", "web")
        assert vip is not None and vip["metadata"]["finalizers"]  # a JSON patch with `test`
        events = kapi.wait_for(
            lambda: [e for e in kapi.list("Event") if e["reason"] == "Assigned"], what="Event"
        )
        assert events[0]["involvedObject"]["name"] == "web"
        assert na is not None and na["spec"] == {"vip": "web"}

        kapi.patch_status("NodeAssignment", "na-web", {"state": "MASTER"}, namespace="")
        kapi.wait_for(
            lambda: (kapi.get("vip", "web") or {}).get("status", {}).get("state") == "MASTER",
            what="VirtualIP status from the assignment's",
        )
        # After an API restart that lost history, kopf re-lists (410) and carries on. The
        # Secret makes the history newer than any VirtualIP change kopf saw.
        kapi.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
        kapi.compact()
        kapi.close_watches()
        kapi.create(_vip("db"))
        kapi.wait_for(lambda: kapi.get("NodeAssignment", "na-db"), what="assignment after 410")
        lists = [r for r in kapi.requests() if r.action == kmock.action.LIST]
        assert sum(r.resource is not None and r.resource.plural == "virtualips" for r in lists) == 2

        kapi.delete("vip", "web")
        kapi.wait_for(lambda: kapi.get("vip", "web") is None, what="VirtualIP gone")
        assert kapi.get("NodeAssignment", "na-web") is None
    assert runner.exception is None


SUBPROCESS_OPERATOR = """
import kopf

@kopf.on.create("vipkeeper.io", "v1alpha1", "virtualips")
def seen(**_):
    return "seen"
"""


def test_kopf_subprocess_with_kubeconfig(kapi: KubeAPI, kubeconfig: Path, tmp_path: Path) -> None:
    """``kopf run -A`` as a process, pointed at the emulator by KUBECONFIG alone."""
    (tmp_path / "standin.py").write_text(SUBPROCESS_OPERATOR)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    command = [sys.executable, "-m", "kopf", "run", "-A", "--standalone", "standin.py"]
    kapi.create(_vip("web"))
    with open(tmp_path / "kopf.log", "wb") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        kapi.wait_for(
            lambda: (kapi.get("vip", "web") or {}).get("status", {}).get("seen") == "seen",
            timeout=15,
            what=f"the handler's result in status (log: {tmp_path / 'kopf.log'})",
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
