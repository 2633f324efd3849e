"""Pure VRRP core (RFC 3768, RFC 5798): timers, packet codec, receive checks and the state machine.

Nothing here touches a socket, a clock or the event loop; the driver feeds events and a time and
executes the actions that come back.
"""
