"""vipkeeper node agent: VRRP engine, announcements and (later) checks and IPVS on one node."""
