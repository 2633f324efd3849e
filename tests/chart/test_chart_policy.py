"""Policy: nothing privileged, no capability beyond the listed ones, RBAC exactly as listed,
the agent's DaemonSet shaped for VRRP, and the chart's CRDs equal to crds/."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from chart_helpers import CHART, ROOT, VALUE_SETS, Render, find

Rule = tuple[str, str, frozenset[str]]  # (apiGroup, resource, verbs)

#: Everything the agent may do (nodeagent/vipkeeper_agent/kube/: source.py, reporter.py, events.py).
AGENT_RULES: set[Rule] = {
    ("vipkeeper.io", "nodeassignments", frozenset({"get", "list", "watch"})),
    ("vipkeeper.io", "nodeassignments/status", frozenset({"patch"})),
    ("", "events", frozenset({"create"})),
}
#: Everything the operator may do (operator/vipkeeper_operator/handlers.py, kube.py, kopf).
OPERATOR_RULES: set[Rule] = {
    ("", "nodes", frozenset({"list", "watch"})),
    ("", "services", frozenset({"list", "watch"})),
    ("discovery.k8s.io", "endpointslices", frozenset({"list", "watch"})),
    ("", "secrets", frozenset({"get"})),
    ("vipkeeper.io", "virtualips", frozenset({"list", "watch", "patch"})),
    ("vipkeeper.io", "virtualservers", frozenset({"list", "watch"})),
    ("vipkeeper.io", "virtualips/status", frozenset({"patch"})),
    ("vipkeeper.io", "virtualservers/status", frozenset({"patch"})),
    ("vipkeeper.io", "nodeassignments", frozenset({"list", "watch", "create", "patch", "delete"})),
    ("", "events", frozenset({"create"})),
    ("kopf.dev", "clusterkopfpeerings", frozenset({"get", "list", "watch", "patch"})),
    ("apiextensions.k8s.io", "customresourcedefinitions", frozenset({"list", "watch"})),
}
AGENT_CAPS = {"NET_ADMIN", "NET_RAW"}
#: Only to run allowlisted scripts as a non-root user.
SCRIPT_CAPS = {"SETUID", "SETGID"}


def _flatten(role: dict[str, Any]) -> set[Rule]:
    out: set[Rule] = set()
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule keys: {rule}"
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.add((group, resource, frozenset(rule["verbs"])))
    return out


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def _workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] in {"Deployment", "DaemonSet", "StatefulSet", "Job", "Pod"}
    ]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_nothing_privileged_and_no_other_capabilities(render: Render, name: str) -> None:
    docs = render(VALUE_SETS[name])
    scripts_as_user = name == "scripts"
    for doc in _workloads(docs):
        pod = doc["spec"]["template"]["spec"]
        assert not pod.get("hostPID") and not pod.get("hostIPC"), doc["metadata"]["name"]
        for c in _containers(doc):
            sc = c["securityContext"]
            where = f"{doc['metadata']['name']}/{c['name']}"
            assert sc.get("privileged") is False, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            added = set(sc["capabilities"].get("add", []))
            if c["name"] == "agent":
                assert added == AGENT_CAPS | (SCRIPT_CAPS if scripts_as_user else set()), where
            else:
                assert not added, where
        for volume in pod.get("volumes", []):
            if "hostPath" in volume:
                assert doc["kind"] == "DaemonSet" and volume["name"] == "cache", volume


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rbac_is_exactly_the_listed_rules(render: Render, name: str) -> None:
    docs = render(VALUE_SETS[name])
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] in {"ClusterRole", "Role"}}
    assert set(roles) == {"vk-vipkeeper-agent", "vk-vipkeeper-operator"}
    assert _flatten(roles["vk-vipkeeper-agent"]) == AGENT_RULES
    assert _flatten(roles["vk-vipkeeper-operator"]) == OPERATOR_RULES
    bindings = {d["metadata"]["name"]: d for d in docs if "Binding" in d["kind"]}
    for name_, binding in bindings.items():
        assert binding["roleRef"]["name"] == name_
        assert [s["name"] for s in binding["subjects"]] == [name_]
    agent_pod = find(docs, "DaemonSet")["spec"]["template"]["spec"]
    operator_pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert agent_pod["serviceAccountName"] == "vk-vipkeeper-agent"
    assert operator_pod["serviceAccountName"] == "vk-vipkeeper-operator"


def test_agent_daemonset(render: Render) -> None:
    ds = find(render(), "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    agent = pod["containers"][0]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["terminationGracePeriodSeconds"] >= 10
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
    }
    assert agent["command"] == ["tini", "--", "vipkeeper-agent"]
    assert "--kubernetes" in agent["args"] and "--metrics-address=:9650" in agent["args"]
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in agent["env"] if "valueFrom" in e
    }
    assert env["NODE_NAME"] == "spec.nodeName"
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    assert (
        mounts["scripts"]["readOnly"] is True
        and mounts["cache"]["mountPath"] == "/var/lib/vipkeeper"
    )
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cache"]["hostPath"] == {
        "path": "/var/lib/vipkeeper",
        "type": "DirectoryOrCreate",
    }
    stage = pod["initContainers"][0]
    assert {m["name"]: m.get("readOnly") for m in stage["volumeMounts"]}["allowlist"] is True
    assert volumes["allowlist"]["configMap"]["name"] == "vk-vipkeeper-agent-scripts"
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_operator_deployment(render: Render) -> None:
    deploy = find(render(), "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    op = pod["containers"][0]
    assert deploy["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert op["command"] == ["vipkeeper-operator"]
    assert "--peering=vk-vipkeeper" in op["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in op["args"]
    env = {
        e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in op["env"]
    }
    assert env["POD_NAME"] == "metadata.name"
    assert op["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_custom_placement(render: Render) -> None:
    docs = render(VALUE_SETS["placement"])
    agent = find(docs, "DaemonSet")["spec"]["template"]["spec"]
    # Maps merge with the defaults: kubernetes.io/os stays.
    assert agent["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "node-role.kubernetes.io/ingress": "",
    }
    assert agent["tolerations"][0]["key"] == "dedicated"
    assert agent["terminationGracePeriodSeconds"] == 45
    operator = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert operator["tolerations"][0]["key"] == "node-role.kubernetes.io/control-plane"


def test_ipv6(render: Render) -> None:
    docs = render(VALUE_SETS["ipv6"])
    agent = find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-address=[$(HOST_IP)]:9650" in agent["args"]
    service = find(docs, "Service", "-metrics")["spec"]
    assert service["ipFamilies"] == ["IPv6"] and service["ipFamilyPolicy"] == "SingleStack"


def test_scripts_allowlist(render: Render) -> None:
    docs = render(VALUE_SETS["scripts"])
    cm = find(docs, "ConfigMap", "-scripts")
    assert set(cm["data"]) == {"check-nginx", "notify-master.sh"}
    agent = find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert "--script-dir=/etc/vipkeeper/scripts" in agent["args"]
    assert "--script-user=nobody" in agent["args"]


def test_chart_crds_are_the_canonical_ones() -> None:
    canonical = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    # kopf's peering CRD is the chart's own addition (the operator's HA).
    assert chart == sorted([*canonical, "kopf-peering.yaml"])
    stale = [
        name
        for name in canonical
        if (ROOT / "crds" / name).read_bytes() != (CHART / "crds" / name).read_bytes()
    ]
    assert not stale, (
        f"charts/vipkeeper/crds differ from crds/: {stale}; cp crds/*.yaml charts/vipkeeper/crds/"
    )
    for path in (CHART / "crds").glob("*.yaml"):
        assert yaml.safe_load(path.read_text())["kind"] == "CustomResourceDefinition"
