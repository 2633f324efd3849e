"""The RFC timer formulas, in one place. Intervals are integer centiseconds, times are seconds."""

from __future__ import annotations


def skew_time(priority: int, master_adver_interval_cs: int, version: int) -> float:
    """Seconds a backup adds to its wait so that the highest priority backup wins the race.

    RFC 3768 §6.1: Skew_Time = (256 - Priority) / 256 seconds.
    RFC 5798 §6.1: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256.
    """
    if version == 2:
        return (256 - priority) / 256
    return (256 - priority) * master_adver_interval_cs / 256 / 100


def master_down_interval(priority: int, master_adver_interval_cs: int, version: int) -> float:
    """Seconds without an advertisement after which a backup declares the master down.

    Both RFCs: Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
    """
    return 3 * master_adver_interval_cs / 100 + skew_time(
        priority, master_adver_interval_cs, version
    )


def advert_interval(interval_cs: int) -> float:
    return interval_cs / 100
