"""Status folding: the nodes' reports in, each VirtualIP's and VirtualServer's status and Events out.

The folds live in :mod:`.status_vip` and :mod:`.status_vs`, their shared pieces in
:mod:`.status_common`; this module is what the reconcile pass imports.
"""

from __future__ import annotations

from vipkeeper_operator.planning.status_common import EventRecord, format_time, parse_time
from vipkeeper_operator.planning.status_vip import fold_virtual_ip
from vipkeeper_operator.planning.status_vs import (
    RealServerState,
    VirtualServerStatus,
    fold_virtual_server,
    report_names,
)

__all__ = [
    "EventRecord",
    "RealServerState",
    "VirtualServerStatus",
    "fold_virtual_ip",
    "fold_virtual_server",
    "format_time",
    "parse_time",
    "report_names",
]
