"""Send windows (engine/core/send_window.py): when a window opens, across time zones
and DST changes, as tables and as properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.send_window import SendWindow, is_open, next_opening, parse_time, zone

BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "tz", "now", "opens"),
    [
        # Open now.
        (("09:00", "20:00"), "Europe/Berlin", utc(2026, 6, 1, 10, 0), None),
        # Before the start: today; after the end: tomorrow (CEST is UTC+2).
        (("09:00", "20:00"), "Europe/Berlin", utc(2026, 6, 1, 5, 0), utc(2026, 6, 1, 7, 0)),
        (("09:00", "20:00"), "Europe/Berlin", utc(2026, 6, 1, 18, 0), utc(2026, 6, 2, 7, 0)),
        # The end is not inside the window.
        (("09:00", "20:00"), "UTC", utc(2026, 6, 1, 20, 0), utc(2026, 6, 2, 9, 0)),
        # Crossing midnight: open late and early, closed in the day.
        (("21:00", "06:00"), "UTC", utc(2026, 6, 1, 23, 0), None),
        (("21:00", "06:00"), "UTC", utc(2026, 6, 1, 3, 0), None),
        (("21:00", "06:00"), "UTC", utc(2026, 6, 1, 12, 0), utc(2026, 6, 1, 21, 0)),
        # Berlin springs forward on 29 March 2026 (02:00 CET -> 03:00 CEST, 01:00 UTC):
        # the night before the change opens at 09:00 CEST, an hour earlier in UTC.
        (("09:00", "20:00"), "Europe/Berlin", utc(2026, 3, 28, 20, 0), utc(2026, 3, 29, 7, 0)),
        (("09:00", "20:00"), "Europe/Berlin", utc(2026, 3, 27, 20, 0), utc(2026, 3, 28, 8, 0)),
        # A start inside the gap opens when the clocks jump.
        (("02:30", "05:00"), "Europe/Berlin", utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 0)),
        # A window wholly inside the gap does not open that day.
        (("02:15", "02:45"), "Europe/Berlin", utc(2026, 3, 28, 23, 0), utc(2026, 3, 30, 0, 15)),
        # New York falls back on 1 November 2026 (02:00 EDT -> 01:00 EST, 06:00 UTC):
        # 01:30 happens twice, the window opens at the first.
        (("01:30", "01:45"), "America/New_York", utc(2026, 11, 1, 4, 0), utc(2026, 11, 1, 5, 30)),
        # ...and the second 01:30 to 01:45 is inside it as well.
        (("01:30", "01:45"), "America/New_York", utc(2026, 11, 1, 6, 35), None),
        # After the change, 09:00 EST is 14:00 UTC (13:00 the day before).
        (("09:00", "17:00"), "America/New_York", utc(2026, 10, 31, 22, 0), utc(2026, 11, 1, 14, 0)),
        (
            ("09:00", "17:00"),
            "America/New_York",
            utc(2026, 10, 30, 22, 0),
            utc(2026, 10, 31, 13, 0),
        ),
        # New York springs forward on 8 March 2026; a night window across it.
        (("21:00", "06:00"), "America/New_York", utc(2026, 3, 8, 11, 0), utc(2026, 3, 9, 1, 0)),
        # Far east of UTC: Tokyo's morning is the UTC night before.
        (("09:00", "12:00"), "Asia/Tokyo", utc(2026, 6, 1, 12, 0), utc(2026, 6, 2, 0, 0)),
    ],
)
def test_next_opening(
    window: tuple[str, str], tz: str, now: datetime, opens: datetime | None
) -> None:
    zone_info = zone(tz)
    assert zone_info is not None
    assert next_opening(SendWindow(*window), zone_info, now) == opens


@pytest.mark.parametrize(
    "name", ["Mars/Olympus", "", "../../etc/passwd", "/etc/localtime", "a\x00b"]
)
def test_names_that_are_no_zone(name: str) -> None:
    assert zone(name) is None


@pytest.mark.parametrize("text", ["24:00", "9:00", "09:60", "0900", "09:00:00", " 09:00"])
def test_times_are_hh_mm(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_time(text)


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]
times = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))


@settings(max_examples=300, deadline=None)
@given(
    start=times,
    end=times,
    tz_name=st.sampled_from(ZONES),
    now=st.datetimes(datetime(2026, 1, 1), datetime(2027, 12, 31)).map(
        lambda d: d.replace(tzinfo=UTC)
    ),
)
def test_the_opening_is_the_first_open_instant(
    start: str, end: str, tz_name: str, now: datetime
) -> None:
    if start == end:
        return
    window, tz = SendWindow(start, end), zone(tz_name)
    assert tz is not None

    def open_at(moment: datetime) -> bool:
        return is_open(window, moment.astimezone(tz).time())

    opens = next_opening(window, tz, now)
    if opens is None:
        assert open_at(now)
        return
    assert not open_at(now)
    assert now < opens < now + timedelta(days=2)
    assert open_at(opens)
    assert not open_at(opens - timedelta(seconds=1))
    # Closed all along until then (every 10 minutes, and a minute before).
    step = now + timedelta(minutes=10)
    while step < opens - timedelta(minutes=1):
        assert not open_at(step)
        step += timedelta(minutes=10)
