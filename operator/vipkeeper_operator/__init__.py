"""vipkeeper operator: VirtualIPs and VirtualServers in, one NodeAssignment per node out."""
