"""Send windows: the local hours in which a campaign may message a recipient. Pure.

A window is `start` to `end` in local wall-clock time ("09:00" to "20:00"); a
start after the end crosses midnight ("21:00" to "06:00"). `next_opening` answers
when a recipient outside its window may be sent: the first instant at or after
which the local time is inside it, right across DST changes (a start inside a
spring-forward gap opens when the clocks jump; one in a fall-back repeat opens
at its first occurrence).
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
_HHMM = re.compile(HHMM)


class SendWindow(msgspec.Struct, frozen=True):
    start: str  # "HH:MM", local time
    end: str
    timezone: str | None = None  # IANA name; None: UTC


def parse_time(text: str) -> time:
    """ "HH:MM" as a time; ValueError otherwise."""
    if not _HHMM.match(text):
        raise ValueError(f"expected a time as HH:MM (00:00 to 23:59), got {text!r}")
    return time(int(text[:2]), int(text[3:]))


@functools.lru_cache(maxsize=1024)
def zone(name: str | None) -> ZoneInfo | None:
    """The IANA time zone of that name, or None when there is none (cached: a
    contact attribute that names no zone is looked up once)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def is_open(window: SendWindow, local: time) -> bool:
    start, end = parse_time(window.start), parse_time(window.end)
    if start < end:
        return start <= local < end
    return local >= start or local < end  # crosses midnight


def next_opening(window: SendWindow, tz: ZoneInfo, now_utc: datetime) -> datetime | None:
    """None when the window is open at `now_utc` in `tz`; else the next instant
    (UTC) at which it opens."""
    local = now_utc.astimezone(tz)
    if is_open(window, local.time()):
        return None
    start = parse_time(window.start)
    # A window that lies entirely in a DST gap does not open that day: look on.
    for days in range(4):
        opening = _first_instant_at(local.date() + timedelta(days=days), start, tz)
        if opening > now_utc and is_open(window, opening.astimezone(tz).time()):
            return opening
    raise AssertionError(f"window {window} never opens in {tz}")  # unreachable: start != end


def _first_instant_at(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first instant at which the local time on `day` reaches `wall`."""
    naive = datetime.combine(day, wall)
    earlier = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if earlier.astimezone(tz).replace(tzinfo=None) == naive:
        return earlier  # exists (fold 0 is the first of a repeated time)
    # A gap: fold 0 maps past it, fold 1 before it. The wall time never occurs:
    # it opens at the transition, found by halving whole seconds (offsets
    # change on whole seconds).
    offset_after = earlier.astimezone(tz).utcoffset()
    low = int(naive.replace(tzinfo=tz, fold=1).timestamp())  # before: other offset
    high = int(earlier.timestamp())  # after: offset_after
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
