"""vipkeeper's network lab: namespaces on one L2 segment, VRRP daemons, probers and a demo."""

from vipkeeper_lab.agents import AgentHandle, StatusUnavailableError, VipkeeperHandle
from vipkeeper_lab.keepalived import KeepalivedHandle, KeepalivedInstance, render_conf
from vipkeeper_lab.measure import Takeover, analyse_takeover
from vipkeeper_lab.netns import Segment
from vipkeeper_lab.nodes import Lab, LabError, LabTimeoutError, Node
from vipkeeper_lab.probe import Probes
from vipkeeper_lab.procs import Proc

__all__ = [
    "AgentHandle",
    "KeepalivedHandle",
    "KeepalivedInstance",
    "Lab",
    "LabError",
    "LabTimeoutError",
    "Node",
    "Probes",
    "Proc",
    "Segment",
    "StatusUnavailableError",
    "Takeover",
    "VipkeeperHandle",
    "analyse_takeover",
    "render_conf",
]
