"""The product operator end to end, continued: a deleted VirtualIP waits for its nodes to resign it,
a spec that does not parse is reported while the last good one keeps running, and the validating
webhook (kopf's admission server, reached over HTTP as the API server would) refuses conflicts
with precise messages.
"""

from __future__ import annotations

import http.client
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kopf
import pytest

from support.kapi import RESOURCES, KubeAPI, Resource
from support.operator_env import (
    addresses,
    condition,
    events,
    instance,
    instance_report,
    quiet,
    report,
    run_operator,
    spec_writes,
    three_nodes,
    vip_status,
    virtual_ip,
    virtual_server,
    wait_for,
)
from vipkeeper_api.resources import GROUP, VERSION

pytestmark = [pytest.mark.operator, pytest.mark.timeout(60)]

NODES = ("n1", "n2", "n3")
FINALIZER = f"{GROUP}/resign"
WAITING = "waiting for nodes to resign: "


def test_deleted_virtual_ip_waits_for_every_ready_node_to_resign(
    kapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_nodes(kapi)
    kapi.create(virtual_ip("web", "192.0.2.10/24"))
    kapi.create(virtual_ip("db", "192.0.2.20/24"))
    running = [
        instance_report("BACKUP", 100, 10),
        instance_report("BACKUP", 100, 10, name="default-db"),
    ]
    with run_operator(kapi, tmp_path, monkeypatch):
        wait_for(lambda: all(instance(kapi, n) for n in NODES), what="assignments")
        wait_for(lambda: FINALIZER in _meta(kapi).get("finalizers", ()), what="the finalizer")
        for n in NODES:
            report(kapi, n, *running)
        # n3 goes NotReady while still reporting the VIP: nobody can wait for its answer.
        kapi.patch_status(
            "Node", "n3", {"conditions": [{"type": "Ready", "status": "False"}]}, namespace=""
        )
        kapi.delete("VirtualIP", "web")
        # The nodes' specs drop the VIP at once (the other VIP stays) ...
        for n in ("n1", "n2"):
            wait_for(lambda n=n: instance(kapi, n) is None, what=f"{n}'s spec without web")
            assert instance(kapi, n, "default-db") is not None
        # ... but their reports still run it: the VirtualIP is held by its finalizer.
        held = kapi.get("VirtualIP", "web")
        assert held is not None and held["metadata"]["deletionTimestamp"]
        wait_for(lambda: _pending(kapi) == f"{WAITING}n1, n2", what="pending: n1, n2")
        report(kapi, "n1", running[1])  # n1's agent resigned; n2's not yet
        wait_for(lambda: _pending(kapi) == f"{WAITING}n2", what="only n2 pending")
        assert kapi.get("VirtualIP", "web") is not None
        report(kapi, "n2", running[1])
        wait_for(lambda: kapi.get("VirtualIP", "web") is None, what="the VirtualIP gone")
        assert kapi.get("VirtualIP", "db") is not None


def test_invalid_spec_is_reported_and_the_last_good_spec_keeps_running(
    kapi: KubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_nodes(kapi)
    kapi.create(virtual_ip("web", "192.0.2.10/24"))
    with run_operator(kapi, tmp_path, monkeypatch) as controller:
        good = wait_for(lambda: instance(kapi, "n1"), what="n1's instance")
        quiet(controller)
        writes = spec_writes(kapi)
        kapi.patch("VirtualIP", "web", {"spec": {"addresses": ["192.0.2.300/24"]}})
        ready = wait_for(
            lambda: (
                (c := condition(vip_status(kapi), "Ready")).get("reason") == "InvalidSpec" and c
            ),
            what="Ready False InvalidSpec",
        )
        assert ready["status"] == "False"
        assert ready["message"] == _bad_address("web")
        [warning] = wait_for(lambda: events(kapi, "InvalidSpec"), what="the Warning Event")
        assert (warning["type"], warning["message"]) == ("Warning", _bad_address("web"))
        assert vip_status(kapi).get("vrid") == good.vrid  # the rest of the status is kept
        quiet(controller)
        assert spec_writes(kapi) == writes  # the nodes were not told anything
        assert {n: addresses(kapi, n) for n in NODES} == {n: ["192.0.2.10/24"] for n in NODES}
        # Fixed: the spec runs again and Ready leaves InvalidSpec.
        kapi.patch("VirtualIP", "web", {"spec": {"addresses": ["192.0.2.12/24"]}})
        wait_for(
            lambda: addresses(kapi, "n1") == ["192.0.2.12/24"],
            what="the fixed spec rendered",
        )
        wait_for(
            lambda: condition(vip_status(kapi), "Ready").get("reason") not in (None, "InvalidSpec"),
            what="Ready recomputed",
        )
        assert len(events(kapi, "InvalidSpec")) == 1


def _bad_address(name: str) -> str:
    return (
        f"VirtualIP default/{name}: invalid configuration\n  - spec.addresses: '192.0.2.300/24' "
        "is not an IP address; write e.g. 192.0.2.10, 192.0.2.10/24 or 2001:db8::10/64 "
        "(got ['192.0.2.300/24'])"
    )


def _meta(kapi: KubeAPI) -> dict[str, Any]:
    return dict((kapi.get("VirtualIP", "web") or {}).get("metadata") or {})


def _pending(kapi: KubeAPI) -> str:
    """What the finalizer handler said last: kopf keeps its progress in an annotation (the
    operator's settings), and a TemporaryError's message with it."""
    progress = json.loads((_meta(kapi).get("annotations") or {}).get(FINALIZER, "{}"))
    return str(progress.get("message", ""))


# --- admission ------------------------------------------------------------------------------

WEBHOOK_CONFIGS = Resource(
    "admissionregistration.k8s.io/v1",
    "validatingwebhookconfigurations",
    "ValidatingWebhookConfiguration",
    False,
    status=False,
)


def _review(url: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    """POST an AdmissionReview as the API server does; the response part of the answer."""
    request: dict[str, Any] = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": GROUP, "version": VERSION, "kind": obj["kind"]},
            "resource": {"group": GROUP, "version": VERSION, "resource": plural},
            "operation": "CREATE",
            "userInfo": {"username": "system:admin"},
            "namespace": "default",
            "name": obj["metadata"]["name"],
            "object": obj,
        },
    }
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        body = json.dumps(request)
        conn.request("POST", parts.path, body, {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    response: dict[str, Any] = answer["response"]
    assert response["uid"] == request["request"]["uid"]
    return response


def _webhooks(kapi: KubeAPI) -> dict[str, Any] | None:
    config = kapi.get("ValidatingWebhookConfiguration", f"validate.{GROUP}", namespace="")
    return config if config is not None and config.get("webhooks") else None


def _refusal(response: dict[str, Any]) -> tuple[int, str]:
    assert response["allowed"] is False, response
    return response["status"]["code"], response["status"]["message"]


def test_admission_webhook_refuses_with_precise_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = kopf.WebhookServer(addr="127.0.0.1", host="127.0.0.1", insecure=True)
    with KubeAPI((*RESOURCES, WEBHOOK_CONFIGS)) as kapi:
        three_nodes(kapi)
        kapi.create(virtual_ip("web", "192.0.2.10/24", vrid=7))
        with run_operator(kapi, tmp_path, monkeypatch, webhook=server) as controller:
            # The operator registers its webhooks with the API (kopf's managed configuration).
            config = wait_for(lambda: _webhooks(kapi), what="the ValidatingWebhookConfiguration")
            urls = {w["name"].split(".")[0]: w["clientConfig"]["url"] for w in config["webhooks"]}
            vip_url, vs_url = urls["admit-virtual-ip"], urls["admit-virtual-server"]
            wait_for(lambda: "default/web" in controller.store.virtual_ips, what="web mirrored")

            fine = _review(vip_url, "virtualips", virtual_ip("db", "192.0.2.20/24"))
            assert fine["allowed"] is True

            same = _review(vip_url, "virtualips", virtual_ip("db", "192.0.2.10/24"))
            assert _refusal(same) == (
                422,
                "spec.addresses[0]: 192.0.2.10 is already an address of VirtualIP default/web; "
                "an address floats in one VirtualIP only, so remove it here or there",
            )
            taken = _review(vip_url, "virtualips", virtual_ip("db", "192.0.2.20/24", vrid=7))
            assert _refusal(taken) == (
                422,
                "spec.vrid: 7 is already used on the auto-detected interface (IPv4) by VirtualIP "
                "default/web; two virtual routers with one VRID on a segment fight: choose a free "
                "one such as 1, or remove vrid to have one allocated",
            )
            # The VirtualIP itself, edited: its own address and VRID are no conflict.
            itself = _review(vip_url, "virtualips", virtual_ip("web", "192.0.2.10/24", vrid=7))
            assert itself["allowed"] is True

            bad = _review(vip_url, "virtualips", virtual_ip("db", "192.0.2.300/24"))
            assert _refusal(bad) == (422, _bad_address("db"))

            orphan = _review(vs_url, "virtualservers", virtual_server("http", "nothere", 80))
            assert _refusal(orphan) == (
                422,
                "spec.virtualIPRef.name: VirtualIP default/nothere does not exist; create it "
                "first, or fix the name (it must be in the VirtualServer's namespace)",
            )
            served = _review(vs_url, "virtualservers", virtual_server("http", "web", 80))
            assert served["allowed"] is True
