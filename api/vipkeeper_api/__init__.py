"""Shared schema of vipkeeper: the NodeAssignment spec, its loader and its error messages."""

from vipkeeper_api.loader import ConfigError, load_spec, parse_spec
from vipkeeper_api.models import (
    Auth,
    Garp,
    NodeAssignmentSpec,
    RealServer,
    VirtualServer,
    VrrpInstance,
)

__all__ = [
    "Auth",
    "ConfigError",
    "Garp",
    "NodeAssignmentSpec",
    "RealServer",
    "VirtualServer",
    "VrrpInstance",
    "load_spec",
    "parse_spec",
]
