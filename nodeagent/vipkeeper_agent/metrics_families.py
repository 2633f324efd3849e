"""The metric families of one status snapshot (``status.snapshot.agent_status``). Pure.

The snapshot, what ``vipkeeper-agent status`` prints, is the one source: nothing on the VRRP
path updates a metric, so metrics cost nothing between scrapes and cannot disagree with
``status``. Missing fields (an unplaced instance, a node without IPVS) leave metrics out rather
than reporting zeros that would read as facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

Snapshot = Mapping[str, Any]

STATES: Final = ("INIT", "BACKUP", "MASTER", "FAULT")

#: Not "instance": Prometheus sets that label on every series to the scrape target, and would
#: rename ours to "exported_instance" (keepalived_exporter calls it "iname" for this reason).
INSTANCE_LABEL: Final = "vrrp_instance"


class _Families:
    """Families created on first use, so a scrape never shows an empty family it has no data
    for (e.g. IPVS metrics on a node without virtual servers), and in a stable order."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def _get(self, kind: type[Metric], name: str, doc: str, labels: Sequence[str]) -> Metric:
        family = self._by_name.get(name)
        if family is None:
            family = kind(name, doc, labels=labels)  # type: ignore[call-arg]
            self._by_name[name] = family
        return family

    def gauge(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        family = self._get(GaugeMetricFamily, name, doc, list(labels))
        assert isinstance(family, GaugeMetricFamily)
        family.add_metric(list(labels.values()), value)

    def counter(self, name: str, doc: str, labels: dict[str, str], value: float) -> None:
        family = self._get(CounterMetricFamily, name, doc, list(labels))
        assert isinstance(family, CounterMetricFamily)
        family.add_metric(list(labels.values()), value)

    def all(self) -> list[Metric]:
        return list(self._by_name.values())


def _instance(out: _Families, inst: Mapping[str, Any]) -> None:
    name = {INSTANCE_LABEL: str(inst["name"])}
    for state in STATES:
        out.gauge(
            "vipkeeper_vrrp_state",
            "1 for the VRRP instance's current state, 0 for the others.",
            {**name, "state": state},
            1.0 if inst.get("state") == state else 0.0,
        )
    # Instances the agent could not place (no interface, no address) have only name and reason.
    if "priority" in inst:
        out.gauge(
            "vipkeeper_vrrp_priority",
            "Effective priority (configured, adjusted by checks and tracking).",
            name,
            inst["priority"],
        )
    if "configuredPriority" in inst:
        out.gauge(
            "vipkeeper_vrrp_configured_priority",
            "Priority as configured.",
            name,
            inst["configuredPriority"],
        )
    counters: Mapping[str, Any] = inst.get("counters") or {}
    for state, count in sorted((counters.get("transitions") or {}).items()):
        out.counter(
            "vipkeeper_vrrp_transitions",
            "State transitions of the instance, by the state entered.",
            {**name, "to": state},
            count,
        )
    for key, metric, doc in (
        ("advertsSent", "vipkeeper_vrrp_adverts_sent", "Advertisements sent."),
        ("advertsReceived", "vipkeeper_vrrp_adverts_received", "Advertisements accepted."),
        ("sendErrors", "vipkeeper_vrrp_send_errors", "Advertisements the kernel refused."),
        ("addressErrors", "vipkeeper_vrrp_address_errors", "Failed VIP additions/removals."),
    ):
        if key in counters:
            out.counter(metric, doc, name, counters[key])
    for reason, count in sorted((counters.get("dropped") or {}).items()):
        out.counter(
            "vipkeeper_vrrp_adverts_dropped",
            "Advertisements for this instance that failed the RFC receive checks, by reason.",
            {**name, "reason": reason},
            count,
        )


def _checks(out: _Families, checks: Mapping[str, Any]) -> None:
    for check, state in sorted(checks.items()):
        label = {"check": check}
        out.gauge(
            "vipkeeper_check_up",
            "1 while the check is healthy (after rise/fall), else 0.",
            label,
            1.0 if state.get("health") == "OK" else 0.0,
        )
        out.gauge(
            "vipkeeper_check_pending",
            "1 until the check's first result (its health is the init_fail guess till then).",
            label,
            1.0 if state.get("pending") else 0.0,
        )
        if "runs" in state:
            out.counter("vipkeeper_check_runs", "Check runs.", label, state["runs"])
        if state.get("lastLatencyMs") is not None:
            out.gauge(
                "vipkeeper_check_latency_seconds",
                "How long the check's last run took.",
                label,
                state["lastLatencyMs"] / 1000,
            )


def real_server_label(address: str, port: int | None) -> str:
    """``10.0.0.1:80``, ``[fd00::1]:80``; the address alone when the port is 0 (fwmark)."""
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" if port else host


def _traffic(out: _Families, prefix: str, what: str, labels: dict[str, str], stats: Any) -> None:
    if not isinstance(stats, Mapping):
        return
    out.counter(
        f"{prefix}_connections",
        f"Connections scheduled to the {what}.",
        labels,
        stats.get("conns", 0),
    )
    for direction in ("in", "out"):
        dl = {**labels, "direction": direction}
        out.counter(
            f"{prefix}_packets",
            f"Packets through the {what}.",
            dl,
            stats.get(f"{direction}Pkts", 0),
        )
        out.counter(
            f"{prefix}_bytes", f"Bytes through the {what}.", dl, stats.get(f"{direction}Bytes", 0)
        )
    for key, metric, doc in (
        ("activeConns", "active_connections", "Active (established) connections"),
        ("inactiveConns", "inactive_connections", "Inactive connections"),
    ):
        if key in stats:
            out.gauge(f"{prefix}_{metric}", f"{doc} of the {what}.", labels, stats[key])


def _ipvs(out: _Families, ipvs: Mapping[str, Any]) -> None:
    for vs in ipvs.get("virtualServers") or ():
        vsl = {"virtual_server": str(vs["name"])}
        out.gauge(
            "vipkeeper_ipvs_virtual_server_active",
            "1 where this node should carry the virtual server (placement).",
            vsl,
            1.0 if vs.get("active") else 0.0,
        )
        out.gauge(
            "vipkeeper_ipvs_virtual_server_in_kernel",
            "1 while the virtual server's IPVS service exists in the kernel.",
            vsl,
            1.0 if vs.get("inKernel") else 0.0,
        )
        quorum = vs.get("quorum")
        if isinstance(quorum, Mapping):
            out.gauge(
                "vipkeeper_ipvs_quorum_up",
                "1 while the healthy real servers' weight reaches the quorum.",
                vsl,
                1.0 if quorum.get("up") else 0.0,
            )
        _traffic(out, "vipkeeper_ipvs_virtual_server", "virtual server", vsl, vs.get("stats"))
        for rs in vs.get("realServers") or ():
            rsl = {**vsl, "real_server": real_server_label(str(rs["address"]), rs.get("port"))}
            out.gauge(
                "vipkeeper_ipvs_real_server_up",
                "1 while the real server's check passes (1 without a check).",
                rsl,
                1.0 if rs.get("healthy") else 0.0,
            )
            out.gauge(
                "vipkeeper_ipvs_real_server_weight",
                "The real server's configured weight.",
                rsl,
                rs.get("weight", 0),
            )
            if rs.get("kernelWeight") is not None:
                out.gauge(
                    "vipkeeper_ipvs_real_server_kernel_weight",
                    "The weight the kernel has (absent: not in the table).",
                    rsl,
                    rs["kernelWeight"],
                )
            _traffic(out, "vipkeeper_ipvs_real_server", "real server", rsl, rs.get("stats"))
    for key, metric, doc in (
        ("problems", "vipkeeper_ipvs_problems", "Missing kernel prerequisites for IPVS."),
        ("errors", "vipkeeper_ipvs_apply_errors", "Errors of the last IPVS apply."),
    ):
        if key in ipvs:
            out.gauge(metric, doc, {}, len(ipvs[key] or ()))


def families(snapshot: Snapshot) -> list[Metric]:
    """Every metric but the takeover histogram, from one status document. Pure."""
    out = _Families()
    for inst in snapshot.get("instances") or ():
        _instance(out, inst)
    for reason, count in sorted((snapshot.get("dropped") or {}).items()):
        out.counter(
            "vipkeeper_vrrp_packets_dropped",
            "VRRP packets no local instance accepted (bad packet, other VRID...), by reason.",
            {"reason": reason},
            count,
        )
    _checks(out, snapshot.get("checks") or {})
    config = snapshot.get("config") or {}
    if "reloads" in config:
        out.counter("vipkeeper_config_reloads", "Configuration reloads.", {}, config["reloads"])
        out.gauge(
            "vipkeeper_config_last_reload_failed",
            "1 if the last reload was refused (the previous configuration runs on).",
            {},
            1.0 if config.get("lastReloadError") else 0.0,
        )
    maintenance = snapshot.get("maintenance") or {}
    if "active" in maintenance:
        out.gauge(
            "vipkeeper_maintenance",
            "1 while the node is in maintenance (hands over, stays BACKUP).",
            {},
            1.0 if maintenance["active"] else 0.0,
        )
    ipvs = snapshot.get("ipvs")
    if isinstance(ipvs, Mapping):
        _ipvs(out, ipvs)
    return out.all()
