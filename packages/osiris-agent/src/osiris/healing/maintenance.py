"""Weekly maintenance windows, in the site's own time zone (zoneinfo), so
a practice's "Sunday 22:00-02:00" means what the practice manager meant,
across daylight-saving changes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hm(text: str) -> time:
    h, m = text.split(":")
    return time(int(h), int(m))


def in_window(window, now: datetime) -> bool:
    """Whether aware datetime ``now`` falls in ``window`` (a
    config.MaintenanceWindow). A window whose end is before its start runs
    past midnight and belongs to the day it starts on."""
    local = now.astimezone(ZoneInfo(window.timezone))
    start, end = _hm(window.start), _hm(window.end)
    t = local.time().replace(second=0, microsecond=0, tzinfo=None)
    day = DAYS[local.weekday()]
    if start <= end:
        return day in window.days and start <= t < end
    if t >= start:
        return day in window.days
    yesterday = DAYS[(local - timedelta(days=1)).weekday()]
    return t < end and yesterday in window.days


def active_window(windows: Sequence, now: datetime):
    return next((w for w in windows if in_window(w, now)), None)
