"""Shared schema of vipkeeper: the NodeAssignment spec, its loader and its error messages."""

from vipkeeper_api.checks import Check, ExecCheck, HttpCheck, PingCheck, TcpCheck
from vipkeeper_api.ipvs import RealServer, VirtualServer
from vipkeeper_api.loader import ConfigError, load_spec, parse_spec
from vipkeeper_api.models import (
    Auth,
    Garp,
    NodeAssignmentSpec,
    NotifyScripts,
    TrackCheck,
    TrackInterface,
    VrrpInstance,
)

__all__ = [
    "Auth",
    "Check",
    "ConfigError",
    "ExecCheck",
    "Garp",
    "HttpCheck",
    "NodeAssignmentSpec",
    "NotifyScripts",
    "PingCheck",
    "RealServer",
    "TcpCheck",
    "TrackCheck",
    "TrackInterface",
    "VirtualServer",
    "VrrpInstance",
    "load_spec",
    "parse_spec",
]
