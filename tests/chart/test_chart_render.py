"""helm lint and helm template over the value sets; every manifest checked against its schema."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import CHART, VALUE_SETS, Render, find, run_helm, value_args

#: Kinds kubernetes-validate has no schema for (custom resources), with the check done instead.
CUSTOM_KINDS = {"ClusterKopfPeering", "ServiceMonitor", "PrometheusRule"}
KUBERNETES_VERSION = "1.35.0"


def _validator() -> Any:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint(helm: Path, name: str) -> None:
    done = run_helm(helm, "lint", "--strict", str(CHART), *value_args(VALUE_SETS[name]))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_manifests_validate_strictly(render: Render, name: str) -> None:
    kv = _validator()
    docs = render(VALUE_SETS[name])
    problems = []
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kv.validate(doc, KUBERNETES_VERSION, strict=True)
        except Exception as exc:  # each failure type of the library carries its message
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)


def test_validator_rejects_unknown_fields() -> None:
    """The strict validation above would catch a misspelt field (not a silent pass)."""
    kv = _validator()
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dat": {}}
    with pytest.raises(Exception, match="dat"):
        kv.validate(bad, KUBERNETES_VERSION, strict=True)


def test_custom_resources_are_well_formed(render: Render) -> None:
    docs = render(VALUE_SETS["monitoring"])
    assert {d["kind"] for d in docs} >= CUSTOM_KINDS
    service = find(docs, "Service", "-metrics")
    monitor = find(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]
    ]
    rules = find(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "VipkeeperVIPWithoutHolder",
        "VipkeeperSplitBrain",
        "VipkeeperFlapping",
        "VipkeeperDegraded",
    }
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["expr"].count("(") == rule["expr"].count(")")
    peering = find(docs, "ClusterKopfPeering")
    assert peering["apiVersion"] == "kopf.dev/v1"
    operator_args = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--peering={peering['metadata']['name']}" in operator_args


def test_grafana_dashboard_is_json(render: Render) -> None:
    cm = find(render(VALUE_SETS["monitoring"]), "ConfigMap", "-dashboard")
    assert cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["vipkeeper.json"])
    assert dashboard["uid"] == "vipkeeper"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs and all("vipkeeper_" in e for e in exprs)


def test_monitoring_is_off_by_default(render: Render) -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "Service"}


#: A wrong value fails helm with a message that names it (values.schema.json or a template fail).
REJECTED: list[tuple[str, str]] = [
    ("operator.replicas=0", "/operator/replicas"),
    ("operator.vridRange=0-300", "/operator/vridRange"),
    ("agent.terminationGracePeriodSeconds=2", "/agent/terminationGracePeriodSeconds"),
    ("agent.metrics.hostIPFamily=IPv5", "/agent/metrics/hostIPFamily"),
    ("agent.privileged=true", "'privileged' not allowed"),
    ("agent.logLevel=trace", "/agent/logLevel"),
    ("agent.cacheDir=relative/dir", "/agent/cacheDir"),
    ("agent.tolerations[0].operator=Maybe", "/agent/tolerations/0/operator"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("metrics.prometheusRule.noHolderFor=soon", "/metrics/prometheusRule/noHolderFor"),
    ("metrics.service.ipFamilies={IPv6,IPv7}", "/metrics/service/ipFamilies"),
]


@pytest.mark.parametrize(("setting", "message"), REJECTED, ids=[s for s, _ in REJECTED])
def test_wrong_values_fail_with_a_clear_message(helm: Path, setting: str, message: str) -> None:
    done = run_helm(helm, "template", "vk", str(CHART), "--set", setting)
    assert done.returncode != 0, f"{setting} was accepted"
    assert message in done.stderr, done.stderr


def test_scripts_must_be_scripts(helm: Path) -> None:
    done = run_helm(helm, "template", "vk", str(CHART), "--set", "agent.scripts.x=rm -rf /")
    assert done.returncode != 0 and "/agent/scripts/x" in done.stderr, done.stderr


def test_service_monitor_needs_agent_metrics(helm: Path) -> None:
    done = run_helm(
        helm,
        "template",
        "vk",
        str(CHART),
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "agent.metrics.enabled=false",
    )
    assert done.returncode != 0 and "agent.metrics.enabled=true" in done.stderr, done.stderr
