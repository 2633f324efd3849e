"""API objects -> the operator's World: nodes, specs (with the loader's messages), endpoint slices,
secrets, node reports."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from vipkeeper_operator import parse
from vipkeeper_operator.world import Endpoint


def test_node_readiness_cordon_and_internal_ips() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "n1", "labels": {"role": "edge"}},
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "192.0.2.11"},
                {"type": "InternalIP", "address": "2001:db8::11"},
                {"type": "InternalIP", "address": "not-an-ip"},
            ],
        },
    }
    node = parse.node(obj)
    assert (node.name, node.ready, node.unschedulable, node.deleting) == ("n1", True, True, False)
    assert node.labels == {"role": "edge"}
    assert [str(ip) for ip in node.internal_ips] == ["192.0.2.11", "2001:db8::11"]
    assert parse.node({"metadata": {"name": "n2"}}).ready is False


def test_a_virtual_ip_parses_or_is_rejected_with_the_path_and_value() -> None:
    good = {
        "metadata": {"namespace": "web", "name": "vip", "uid": "u1", "generation": 3},
        "spec": {"addresses": ["192.0.2.10/24"]},
        "status": {"vrid": 7, "holder": "n1"},
    }
    vip = parse.virtual_ip(good)
    assert not isinstance(vip, parse.Rejected)
    assert (vip.key, vip.generation, vip.status.vrid) == ("web/vip", 3, 7)
    bad = {"metadata": {"namespace": "web", "name": "vip"}, "spec": {"addresses": ["192.0.2.300"]}}
    rejected = parse.virtual_ip(bad)
    assert isinstance(rejected, parse.Rejected)
    assert "spec.addresses: '192.0.2.300' is not an IP address" in rejected.message
    unknown = {
        "metadata": {"namespace": "web", "name": "vs"},
        "spec": {"port": 80, "virtualIPRef": {"name": "vip"}, "sheduler": "rr"},
    }
    rejected = parse.virtual_server(unknown)
    assert (
        isinstance(rejected, parse.Rejected) and "spec.sheduler: unknown field" in rejected.message
    )


def test_endpoint_slices_keep_conditions_and_skip_what_is_not_an_address() -> None:
    obj = {
        "metadata": {
            "namespace": "ingress",
            "name": "ctl-abc",
            "labels": {"kubernetes.io/service-name": "ctl"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.0.0.1"], "nodeName": "n1", "conditions": {"ready": True}},
            {"addresses": ["10.0.0.2"], "nodeName": "n2", "conditions": {}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": False, "terminating": True}},
            {"addresses": ["example.org"]},
        ],
    }
    slice_ = parse.endpoint_slice(obj)
    assert slice_ is not None and slice_.service == "ctl"
    assert slice_.ports[0].name == "http" and slice_.ports[0].port == 8080
    assert slice_.endpoints == (
        Endpoint(ipaddress.ip_address("10.0.0.1"), "n1", ready=True),
        Endpoint(ipaddress.ip_address("10.0.0.2"), "n2", ready=True),
        Endpoint(ipaddress.ip_address("10.0.0.3"), None, ready=False, terminating=True),
    )
    assert parse.endpoint_slice({"metadata": {"name": "orphan"}}) is None


def test_secret_data_is_decoded_and_bad_keys_dropped() -> None:
    obj = {
        "data": {"password": base64.b64encode(b"s3cret").decode(), "junk": "%%%"},
        "stringData": {"other": "x"},
    }
    assert parse.secret(obj) == {"password": "s3cret", "other": "x"}


def test_node_reports_parse_or_are_ignored() -> None:
    good = {"status": {"instances": [{"name": "web-vip", "state": "MASTER", "priority": 150}]}}
    report = parse.assignment_status(good)
    assert report is not None and report.instances[0].state == "MASTER"
    assert parse.assignment_status({"status": {"instances": [{"state": "BOSS"}]}}) is None
    assert parse.assignment_status({}) is None


def test_a_generation_that_is_not_an_integer_does_not_crash_the_parse() -> None:
    # Found by fuzzing: int(metadata.generation) raised on a string or a mapping.
    for generation in ("warmup", {"x": 1}, True, None):
        meta = {"namespace": "web", "name": "vip", "generation": generation}
        vip = parse.virtual_ip({"metadata": meta, "spec": {"addresses": ["192.0.2.10"]}})
        assert not isinstance(vip, parse.Rejected) and vip.generation == 0
        spec = {"virtualIPRef": {"name": "vip"}, "port": 80}
        vs = parse.virtual_server({"metadata": meta, "spec": spec})
        assert not isinstance(vs, parse.Rejected) and vs.generation == 0
