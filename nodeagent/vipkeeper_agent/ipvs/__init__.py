"""IPVS load balancing (keepalived's ``virtual_server``).

- :mod:`.table`: the kernel-level view (services, destinations, counters); pure data.
- :mod:`.plan`: ``desired()`` table from specs + health + placement, and the ``diff()`` between
  two tables as ordered operations; pure.
- :mod:`.kernel`: the netlink adapter that reads the table and applies operations.
- :mod:`.prereq`: what the kernel must offer (ip_vs, forwarding, schedulers).
- :mod:`.status`: ``ipvsadm -Ln``-like text and the status document; pure.
"""
