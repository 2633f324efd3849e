"""Health checks: the probes of each kind, one rise/fall hysteresis, and the scheduler that runs
them with bounded concurrency and hard timeouts so that no check can delay an advertisement.

``hysteresis`` is pure; ``probes`` (tcp, exec, dispatch), ``http``, ``smtp``, ``icmp`` and
``scheduler`` do the I/O; ``result`` is what every probe returns.
"""
