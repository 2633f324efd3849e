"""Gratuitous ARP and unsolicited Neighbour Advertisements after a takeover.

``frames`` builds the bytes and ``plan`` computes when to send them; both are pure. The sockets
and the timers live in ``vipkeeper_agent.io.announcer``.
"""
