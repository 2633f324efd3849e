"""The VirtualServer schema: every mistake is reported with its path, the value and the fix."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from vipkeeper_agent.cli import main
from vipkeeper_api import ConfigError, load_spec


def server(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "web",
        "address": "192.0.2.10",
        "port": 80,
        "placement": "all",
        "realServers": [{"address": "10.0.0.1"}],
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not None}


def document(*servers: dict[str, Any], **spec: Any) -> str:
    return yaml.safe_dump({"virtualServers": list(servers), **spec})


def errors_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_spec(text, "vs.yaml")
    return str(info.value)


INSTANCE = {"name": "vi", "vrid": 51, "addresses": ["192.0.2.10/24"]}

ERROR_CASES: list[tuple[str, str, list[str]]] = [
    (
        "fwmark and address",
        document(server(fwmark=5)),
        ["virtualServers[0]", "a firewall-mark service has no address or port", "remove"],
    ),
    (
        "neither fwmark nor address",
        document(server(address=None, port=None)),
        ["virtualServers[0]", "give address and port, or fwmark"],
    ),
    (
        "scheduler flags of another scheduler",
        document(server(scheduler="rr", schedulerFlags=["sh-port"])),
        ["virtualServers[0]", "schedulerFlags sh-port applies to scheduler sh, not rr"],
    ),
    (
        "unknown scheduler flag",
        document(server(scheduler="sh", schedulerFlags=["sh-nope"])),
        ["virtualServers[0].schedulerFlags[0]", "'sh-port'", "got 'sh-nope'"],
    ),
    (
        "real server of the other family",
        document(server(realServers=[{"address": "2001:db8::1"}])),
        ["virtualServers[0]", "realServers[0].address 2001:db8::1 is IPv6, the service is IPv4"],
    ),
    (
        "dr real server on another port",
        document(server(forwarding="dr", realServers=[{"address": "10.0.0.1", "port": 8080}])),
        [
            "virtualServers[0]",
            "realServers[0].port 8080 differs from the service's 80",
            "use nat to change ports",
        ],
    ),
    (
        "tunnel real server on another port",
        document(server(forwarding="tunnel", realServers=[{"address": "10.0.0.1", "port": 81}])),
        ["realServers[0].port 81 differs", "tunnel forwarding"],
    ),
    (
        "quorum above the total weight",
        document(server(quorum={"min": 10}, realServers=[{"address": "10.0.0.1", "weight": 3}])),
        ["virtualServers[0]", "quorum.min 10 exceeds the real servers' total weight 3", "lower it"],
    ),
    (
        "persistence prefix too long for IPv4",
        document(server(persistence={"prefixLength": 33})),
        ["virtualServers[0]", "persistence.prefixLength 33 exceeds 32 for an IPv4 service"],
    ),
    (
        "persistence prefix too long for IPv6",
        document(server(address="2001:db8::1", realServers=[], persistence={"prefixLength": 129})),
        ["virtualServers[0].persistence.prefixLength", "128", "got 129"],
    ),
    (
        "placement holder without an instance",
        document(server(placement="holder")),
        [
            "virtualServers[0]",
            "placement holder needs the VRRP instance that holds 192.0.2.10",
            "set vrrpInstance, or use placement: all",
        ],
    ),
    (
        "placement holder naming an unknown instance",
        document(server(placement="holder", vrrpInstance="nope"), instances=[INSTANCE]),
        ["virtualServers[0].vrrpInstance 'nope' is not an instance of this spec"],
    ),
    (
        "duplicate service",
        document(server(), server(name="other")),
        ["virtualServers[1] is TCP 192.0.2.10:80, already virtualServers[0]"],
    ),
    (
        "duplicate fwmark service",
        document(
            server(address=None, port=None, fwmark=7),
            server(name="b", address=None, port=None, fwmark=7),
        ),
        ["virtualServers[1] is fwmark 7 (IPv4), already virtualServers[0]"],
    ),
    (
        "duplicate name",
        document(server(), server(port=81)),
        ["virtualServers[1].name 'web' is already used by virtualServers[0]"],
    ),
    (
        "check template with a name",
        document(server(check={"kind": "tcp", "name": "x"})),
        ["virtualServers[0].check: remove name", "named after it"],
    ),
    (
        "check template with a bad field",
        document(server(check={"kind": "http", "path": 5})),
        ["virtualServers[0].check.path", "valid string", "got 5"],
    ),
    (
        "sorry server of the other family",
        document(server(sorryServer={"address": "2001:db8::9"})),
        ["virtualServers[0]", "sorryServer must be IPv4 like the service"],
    ),
    (
        "repeated real server",
        document(
            server(realServers=[{"address": "10.0.0.1"}, {"address": "10.0.0.1", "port": 80}])
        ),
        ["virtualServers[0]", "realServers[1] repeats 10.0.0.1 port 80"],
    ),
    (
        "misspelt real server field",
        document(server(realServers=[{"address": "10.0.0.1", "wieght": 3}])),
        ["virtualServers[0].realServers[0].wieght", "unknown field", "got 3"],
    ),
    (
        "quorum script given as a path",
        document(server(quorum={"up": "/bin/sh"})),
        ["virtualServers[0].quorum.up", "is not a script name", "got '/bin/sh'"],
    ),
    (
        "weight out of range",
        document(server(realServers=[{"address": "10.0.0.1", "weight": 70000}])),
        ["virtualServers[0].realServers[0].weight", "65535", "got 70000"],
    ),
    (
        "bad real server address",
        document(server(realServers=[{"address": "10.0.0.300"}])),
        ["virtualServers[0].realServers[0].address", "is not an IP address", "got '10.0.0.300'"],
    ),
    (
        "fwmark zero",
        document(server(address=None, port=None, fwmark=0)),
        ["virtualServers[0].fwmark", "greater than or equal to 1", "got 0"],
    ),
    (
        "fwmark family",
        document(server(address=None, port=None, fwmark=3, fwmarkFamily=5)),
        ["virtualServers[0].fwmarkFamily", "4 or 6", "got 5"],
    ),
    (
        "unknown scheduler",
        document(server(scheduler="fastest")),
        ["virtualServers[0].scheduler", "'wlc'", "got 'fastest'"],
    ),
    (
        "unknown protocol",
        document(server(protocol="ICMP")),
        ["virtualServers[0].protocol", "'SCTP'", "got 'ICMP'"],
    ),
    (
        "unknown forwarding",
        document(server(forwarding="masq")),
        ["virtualServers[0].forwarding", "'nat'", "got 'masq'"],
    ),
]


@pytest.mark.parametrize(
    ("text", "needles"), [pytest.param(t, n, id=name) for name, t, n in ERROR_CASES]
)
def test_errors_are_precise(text: str, needles: list[str]) -> None:
    message = errors_of(text)
    for needle in needles:
        assert needle in message, f"{needle!r} not in:\n{message}"


def test_unknown_check_kind_names_the_kinds() -> None:
    message = errors_of(document(server(check={"kind": "foo"})))
    assert "check.kind" in message and "'foo'" in message and "use one of" in message
    assert "virtualServers[0].check.kind: unknown kind 'foo'; use one of: exec, http" in message


def test_thresholds_out_of_order_are_refused() -> None:
    """The kernel refuses lowerThreshold > upperThreshold with ERANGE, even when upperThreshold
    is 0 ("no limit"; verified in the VM lane)."""
    rs = {"address": "10.0.0.1", "lowerThreshold": 5}
    message = errors_of(document(server(realServers=[rs])))
    for needle in (
        "virtualServers[0].realServers[0].lowerThreshold",
        "must not exceed upperThreshold 0: the kernel refuses that (ERANGE), even though 0 "
        "means no limit",
        "set upperThreshold to 5 or more, or lower lowerThreshold",
        "(got 5)",
    ):
        assert needle in message, f"{needle!r} not in:\n{message}"
    rs = {"address": "10.0.0.1", "upperThreshold": 10, "lowerThreshold": 20}
    message = errors_of(document(server(realServers=[rs])))
    assert "lowerThreshold: must not exceed upperThreshold 10:" in message
    assert "(got 20)" in message


def test_thresholds_in_order_are_accepted() -> None:
    real_servers = [
        {"address": "10.0.0.1", "upperThreshold": 10, "lowerThreshold": 10},
        {"address": "10.0.0.2", "upperThreshold": 10},
        {"address": "10.0.0.3"},
    ]
    (vs,) = load_spec(document(server(realServers=real_servers))).virtual_servers
    assert [(rs.upper_threshold, rs.lower_threshold) for rs in vs.real_servers] == [
        (10, 10),
        (10, 0),
        (0, 0),
    ]


def test_ipv6_persistence_prefix_zero_is_refused() -> None:
    """The kernel takes an IPv6 persistence prefix of 1-128 only (EINVAL for 0; verified in the
    VM lane); for IPv4 the prefix is a netmask, and 0.0.0.0 is fine."""
    doc = server(address="2001:db8::1", realServers=[], persistence={"prefixLength": 0})
    message = errors_of(document(doc))
    for needle in (
        "virtualServers[0]",
        "persistence.prefixLength 0 is not possible for an IPv6 service",
        "1-128",
        "use 1",
    ):
        assert needle in message, f"{needle!r} not in:\n{message}"
    doc = server(address="2001:db8::1", realServers=[], persistence={"prefixLength": 1})
    assert load_spec(document(doc)).virtual_servers[0].persistence.prefix_length == 1  # type: ignore[union-attr]
    v4 = load_spec(document(server(persistence={"prefixLength": 0}))).virtual_servers[0]
    assert v4.persistence is not None and v4.persistence.prefix_length == 0


def test_check_template_errors_are_all_reported_at_their_place() -> None:
    """The template's mistakes read like a top-level check's: path, pydantic's rule reworded by
    the loader, the value; several at once, beside the virtual server's other mistakes."""
    message = errors_of(
        document(
            server(
                check={"kind": "http", "path": "no-slash", "port": 0, "tlsVerify": False},
                realServers=[{"address": "10.0.0.1", "wieght": 2}],
            )
        )
    )
    for needle in (
        "virtualServers[0].realServers[0].wieght: unknown field",
        "virtualServers[0].check.path: 'no-slash' is not an HTTP path",
        "virtualServers[0].check.port: out of range",
        "(got 0)",
    ):
        assert needle in message, f"{needle!r} not in:\n{message}"
    assert "check.http" not in message  # pydantic's union tag is not part of the path
    message = errors_of(document(server(check={"path": "/"})))
    assert "virtualServers[0].check.kind: kind is required" in message


def test_tcp_check_of_a_firewall_mark_service_needs_a_port() -> None:
    """Without a port anywhere a tcp check would have nothing to connect to."""
    base = {"address": None, "port": None, "fwmark": 3, "realServers": [{"address": "10.0.0.1"}]}
    message = errors_of(document(server(**base, check={"kind": "tcp"})))
    assert "virtualServers[0]: check: a tcp check needs a port" in message
    assert "realServers[0] has none" in message and "set check.port" in message
    (vs,) = load_spec(document(server(**base, check={"kind": "tcp", "port": 22}))).virtual_servers
    assert [(c.name, c.port) for _, c in vs.real_server_checks()] == [("web/10.0.0.1:0", 22)]  # type: ignore[union-attr]
    with_port = {**base, "realServers": [{"address": "10.0.0.1", "port": 8080}]}
    (vs,) = load_spec(document(server(**with_port, check={"kind": "tcp"}))).virtual_servers
    assert [c.port for _, c in vs.real_server_checks()] == [8080]  # type: ignore[union-attr]


def test_check_config_reports_virtual_server_mistakes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The standalone `check-config` path shows the same errors, every one at once."""
    bad = tmp_path / "lvs.yaml"
    bad.write_text(
        document(
            server(
                check={"kind": "foo"}, realServers=[{"address": "10.0.0.1", "lowerThreshold": 5}]
            ),
            server(
                name="six",
                address="2001:db8::1",
                realServers=[],
                persistence={"prefixLength": 0},
            ),
            instances=[INSTANCE],
        )
    )
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    for needle in (
        f"{bad}: invalid configuration",
        "virtualServers[0].check.kind: unknown kind 'foo'",
        "virtualServers[0].realServers[0].lowerThreshold: must not exceed upperThreshold 0",
        "virtualServers[1]: persistence.prefixLength 0 is not possible for an IPv6 service",
    ):
        assert needle in err, f"{needle!r} not in:\n{err}"


def test_placement_holder_finds_its_instance_by_address() -> None:
    spec = load_spec(document(server(placement="holder"), instances=[INSTANCE]))
    (vs,) = spec.virtual_servers
    assert spec.instance_for(vs) is not None and spec.instance_for(vs).name == "vi"  # type: ignore[union-attr]


def test_defaults_and_derived_values() -> None:
    spec = load_spec(
        document(
            server(),
            server(
                name="marked",
                address=None,
                port=None,
                fwmark=9,
                fwmarkFamily=6,
                realServers=[{"address": "2001:db8::5"}],
            ),
        )
    )
    web, marked = spec.virtual_servers
    assert (web.scheduler, web.forwarding.value, web.protocol.value) == ("wlc", "nat", "TCP")
    assert web.real_port(web.real_servers[0]) == 80 and web.family == 4
    assert web.key == ("TCP", ipaddress.ip_address("192.0.2.10"), 80)
    assert marked.family == 6 and marked.real_port(marked.real_servers[0]) == 0
    assert marked.key == ("fwmark", 6, 9) and marked.describe() == "fwmark 9 (IPv6)"


def test_check_template_is_aimed_at_each_real_server() -> None:
    spec = load_spec(
        document(
            server(
                check={"kind": "http", "path": "/healthz"},
                realServers=[{"address": "10.0.0.1"}, {"address": "10.0.0.2", "port": 8080}],
            )
        )
    )
    checks = spec.virtual_servers[0].real_server_checks()
    assert [(c.name, str(c.address), c.port) for _, c in checks] == [  # type: ignore[union-attr]
        ("web/10.0.0.1:80", "10.0.0.1", 80),
        ("web/10.0.0.2:8080", "10.0.0.2", 8080),
    ]


def test_exec_check_learns_its_real_server_from_placeholders() -> None:
    spec = load_spec(
        document(
            server(
                check={"kind": "exec", "script": "probe", "args": ["--to", "{address}:{port}"]},
                realServers=[{"address": "10.0.0.1"}, {"address": "10.0.0.2", "port": 8080}],
            )
        )
    )
    checks = spec.virtual_servers[0].real_server_checks()
    assert [c.args for _, c in checks] == [  # type: ignore[union-attr]
        ("--to", "10.0.0.1:80"),
        ("--to", "10.0.0.2:8080"),
    ]
