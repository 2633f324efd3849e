"""The agent's I/O adapters: netlink (addresses, link state), VRRP sockets and announcements.

Each adapter is a thin shell over the kernel; every decision it needs is taken in a pure module
(``vipkeeper_agent.topology``, ``vipkeeper_agent.announce``) so it can be tested without root.
"""
