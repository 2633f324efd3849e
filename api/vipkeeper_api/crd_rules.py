"""What the models' JSON schema cannot carry into the CRDs: the CEL rules that repeat the models'
cross-field checks, and the constraints their Python validators enforce (patterns, lengths, list
types). :mod:`vipkeeper_api.crd` merges them into the generated structural schemas, keyed by model
name.

CEL rules repeat the cross-field checks of the models' validators (never more: an object the
model accepts must not be refused here); the model still runs them all on the operator and agent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from string import Template
from typing import Any

from vipkeeper_api.base import NAME_RE
from vipkeeper_api.checks import HOST_RE, HTTP_PATH_RE, SCRIPT_NAME_RE
from vipkeeper_api.models import IFNAME_RE

Schema = dict[str, Any]


@dataclass(frozen=True)
class Rule:
    rule: str
    message: str
    #: A CEL expression of the offending value, shown after the message as "(got ...)".
    value: str = ""

    def validation(self) -> Schema:
        out = {"rule": self.rule, "message": self.message}
        if self.value:
            out["messageExpression"] = f'"{self.message} (got " + string({self.value}) + ")"'
        return out


# --- CEL: "[Types]" heads a section; a rule is a line, then its message (": ") and optionally
# the offending value ("= "). Messages have no double quotes (they go into a CEL string).
_MACROS = {
    "V2": "(has(self.version) && self.version == 2)",
    "ANY6": "self.addresses.exists(a, a.contains(':'))",
    "ONEFAMILY": "self.addresses.all(a, a.contains(':')) || self.addresses.all(a, !a.contains(':'))",
    "FAMILY0": "self.addresses[0].contains(':')",
    "MCAST": "(self.multicastGroup.matches('^(22[4-9]|23[0-9])[.]') || self.multicastGroup.matches('^[fF][fF][0-9a-fA-F]{2}:'))",
    "CENTI": "(self.advertInterval * 100.0 - double(int(self.advertInterval * 100.0 + 0.5)))",
    "VS6": "(has(self.address) ? self.address.contains(':') : has(self.fwmarkFamily) && self.fwmarkFamily == 6)",
    "SPEC6": "self.address.contains(':')",
    "VG": "!has(self.vrrp) || !has(self.vrrp.multicastGroup)",
}
_RULES_TEXT = """
[Vrrp VrrpInstance]
!$V2 || !has(self.advertInterval) || (self.advertInterval >= 1.0 && self.advertInterval <= 255.0 && self.advertInterval == double(int(self.advertInterval)))
: advertInterval: with version 2 it is whole seconds 1-255 (RFC 3768); use version: 3 for sub-second adverts
= self.advertInterval
$V2 || !has(self.advertInterval) || (self.advertInterval >= 0.01 && self.advertInterval <= 40.95 && $CENTI < 0.000001 && $CENTI > -0.000001)
: advertInterval: with version 3 it is 0.01-40.95 seconds in steps of 0.01 (RFC 5798)
= self.advertInterval
[Vrrp]
!has(self.authSecretRef) || $V2
: authSecretRef (PASS authentication) exists only in VRRP version 2; remove it or set version: 2
!has(self.multicastGroup) || !has(self.mode) || self.mode == 'multicast'
: multicastGroup applies to mode: multicast only; remove it or set mode: multicast
!has(self.multicastGroup) || $MCAST
: multicastGroup must be a multicast address (224.0.0.0/4 or ff00::/8), e.g. 224.0.0.18 or ff02::12
= self.multicastGroup
[VirtualIPSpec]
!$ANY6 || !has(self.vrrp) || !has(self.vrrp.version) || self.vrrp.version == 3
: addresses: IPv6 addresses need VRRP version 3 (RFC 5798); set vrrp.version: 3
$VG || $ONEFAMILY
: vrrp.multicastGroup is of one address family but addresses has both; split the VirtualIP by family or remove multicastGroup
$VG || self.addresses.exists(a, a.contains(':') == self.vrrp.multicastGroup.contains(':'))
: vrrp.multicastGroup is not of the addresses' family; use 224.0.0.0/4 for IPv4, ff00::/8 for IPv6
= self.vrrp.multicastGroup
[VirtualServerSpec]
!has(self.serviceRef) || !has(self.realServers) || size(self.realServers) == 0
: give realServers or serviceRef, not both; remove one
!has(self.targetPort) || has(self.serviceRef)
: targetPort applies with serviceRef only; remove it or set serviceRef
!has(self.targetPort) || type(self.targetPort) == string || (self.targetPort >= 1 && self.targetPort <= 65535)
: targetPort: a number must be a port 1-65535 (or give the name of the Service's port)
= self.targetPort
!has(self.address) || !has(self.realServers) || self.realServers.all(r, r.address.contains(':') == $SPEC6)
: realServers must be of the family of address (without address, each family's service takes the real servers of its family)
!has(self.address) || !has(self.persistence) || !has(self.persistence.prefixLength) || ($SPEC6 ? self.persistence.prefixLength >= 1 : self.persistence.prefixLength <= 32)
: persistence.prefixLength is 0-32 for an IPv4 service and 1-128 for an IPv6 one
= self.persistence.prefixLength
!has(self.address) || !has(self.sorryServer) || self.sorryServer.address.contains(':') == $SPEC6
: sorryServer must be of the service's address family
= self.sorryServer.address
[RealServer]
!has(self.lowerThreshold) || self.lowerThreshold <= (has(self.upperThreshold) ? self.upperThreshold : 0)
: lowerThreshold must not exceed upperThreshold (0 if unset), the kernel refuses that; raise upperThreshold or lower lowerThreshold
= self.lowerThreshold
[VrrpInstance]
$ONEFAMILY
: addresses mixes IPv4 and IPv6; VRRP runs one instance per family, so split them into two instances
!$ANY6 || !has(self.version) || self.version == 3
: addresses: IPv6 addresses need VRRP version 3 (RFC 5798); set version: 3
!has(self.priority) || self.priority != 255 || (has(self.addressOwner) && self.addressOwner)
: priority 255 is reserved for the address owner; use 1-254, or set addressOwner: true
!has(self.addressOwner) || !self.addressOwner || (has(self.priority) && self.priority == 255)
: addressOwner: true needs priority: 255
!has(self.auth) || $V2
: auth (PASS) exists only in VRRP version 2; remove auth or set version: 2
!has(self.unicastPeers) || self.unicastPeers.all(p, p.contains(':') == $FAMILY0)
: unicastPeers must be of the addresses' family (IPv4 peers for IPv4 addresses, IPv6 for IPv6)
!has(self.unicastSource) || self.unicastSource.contains(':') == $FAMILY0
: unicastSource must be of the addresses' family
= self.unicastSource
!has(self.multicastGroup) || !has(self.unicastPeers) || size(self.unicastPeers) == 0
: set either unicastPeers or multicastGroup, not both
!has(self.multicastGroup) || (self.multicastGroup.contains(':') == $FAMILY0 && $MCAST)
: multicastGroup must be a multicast address of the addresses' family (224.0.0.0/4 or ff00::/8)
= self.multicastGroup
[VirtualServer]
has(self.fwmark) || (has(self.address) && has(self.port))
: give address and port, or fwmark for a firewall-mark service
!has(self.fwmark) || (!has(self.address) && !has(self.port))
: a firewall-mark service has no address or port; remove them or remove fwmark
!has(self.persistence) || !has(self.persistence.prefixLength) || ($VS6 ? self.persistence.prefixLength >= 1 : self.persistence.prefixLength <= 32)
: persistence.prefixLength is 0-32 for an IPv4 service and 1-128 for an IPv6 one
= self.persistence.prefixLength
!has(self.sorryServer) || self.sorryServer.address.contains(':') == $VS6
: sorryServer must be of the service's address family
= self.sorryServer.address
[VirtualServer VirtualServerSpec]
!has(self.schedulerFlags) || self.schedulerFlags.all(f, f.startsWith((has(self.scheduler) ? self.scheduler : 'wlc') + '-'))
: schedulerFlags: sh-* flags need scheduler: sh, mh-* flags scheduler: mh
"""


def _parse_rules(text: str) -> dict[str, tuple[Rule, ...]]:
    out: dict[str, list[Rule]] = {}
    titles: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith("["):
            titles = line.strip("[]").split()
        elif line.startswith((": ", "= ")):
            field = "message" if line[0] == ":" else "value"
            for title in titles:
                out[title][-1] = replace(out[title][-1], **{field: line[2:]})
        else:
            for title in titles:
                out.setdefault(title, []).append(Rule(Template(line).substitute(_MACROS), ""))
    return {title: tuple(rules) for title, rules in out.items()}


RULES = _parse_rules(_RULES_TEXT)
#: Fields of a check kind that the model refuses for some of the kinds that carry them.
NARROW_KINDS = {"tlsVerify": ["https"]}

# --- what the JSON schema cannot carry (validators in Python) ------------------------------
_NAME = {"maxLength": 63, "pattern": NAME_RE.pattern}
_IFNAME = {"maxLength": 15, "pattern": IFNAME_RE.pattern}
_SCRIPT = {"maxLength": 128, "pattern": SCRIPT_NAME_RE.pattern}


def _map_by(key: str) -> Schema:
    """A list of objects keyed by ``key`` (unique; server-side apply merges by it)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


_CHECK_NAME = {"name": _NAME}
_DIGEST = r"^(?i:((md5:)?[0-9a-f]{32})|(sha1:[0-9a-f]{40})|(sha256:[0-9a-f]{64}))$"
EXTRA: dict[str, dict[str, Schema]] = {
    "ObjectRef": _CHECK_NAME,
    "SecretKeyRef": {"name": _NAME, "key": {"maxLength": 253}},
    "Priorities": {
        "preferred": {"items": {"maxLength": 253}},
        "explicit": {"additionalProperties": {"minimum": 1, "maximum": 254}},
    },
    "VirtualIPSpec": {
        "interface": _IFNAME,
        "addresses": {"x-kubernetes-list-type": "set"},
        "checks": _map_by("name"),
    },
    "TrackInterface": {"interface": _IFNAME},
    "TrackCheck": {"check": _NAME},
    "ExecCheck": {"name": _NAME, "script": _SCRIPT, "args": {"items": {"maxLength": 1024}}},
    "HttpCheck": {
        "name": _NAME,
        "path": {"maxLength": 2048, "pattern": HTTP_PATH_RE.pattern},
        "host": {"maxLength": 255, "pattern": HOST_RE.pattern},
        "expectStatus": {"items": {"minimum": 100, "maximum": 599}},
        "digest": {"maxLength": 71, "pattern": _DIGEST},
    },
    "TcpCheck": _CHECK_NAME,
    "PingCheck": _CHECK_NAME,
    "SmtpCheck": _CHECK_NAME,
    "NotifyScripts": {k: _SCRIPT for k in ("master", "backup", "fault", "stop", "any")},
    "Quorum": {"up": _SCRIPT, "down": _SCRIPT},
    "Auth": {"password": {"maxLength": 8}},
    "VrrpInstance": {"name": _NAME, "interface": _IFNAME, "syncGroup": _NAME},
    "VirtualServer": {"name": _NAME, "vrrpInstance": _NAME, "schedulerFlags": {"maxItems": 4}},
    "VirtualServerSpec": {"schedulerFlags": {"maxItems": 4}},
    "NodeAssignmentSpec": {k: _map_by("name") for k in ("instances", "virtualServers", "checks")},
    "VirtualIPStatus": {"conditions": _map_by("type"), "nodes": _map_by("node")},
    "VirtualServerStatus": {"conditions": _map_by("type")},
}
