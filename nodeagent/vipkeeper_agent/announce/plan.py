"""When the takeover announcements go out. Pure."""

from __future__ import annotations


def announce_offsets(count: int, interval: float, repeat_delay: float) -> tuple[float, ...]:
    """Seconds after the takeover at which each announcement is sent, in order.

    A burst of ``count`` messages ``interval`` apart starts at 0; if ``repeat_delay`` > 0 a second
    identical burst starts then (keepalived's garp_master_repeat, garp_interval and
    garp_master_delay), for neighbours that missed the first one while their port was converging.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    if interval < 0:
        raise ValueError(f"interval must not be negative, got {interval}")
    if repeat_delay < 0:
        raise ValueError(f"repeat_delay must not be negative, got {repeat_delay}")
    burst = [i * interval for i in range(count)]
    offsets = burst + ([repeat_delay + t for t in burst] if repeat_delay > 0 else [])
    return tuple(sorted(offsets))
