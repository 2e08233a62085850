"""Calendar windows: which day, week and month an instant falls in, when they end.

Days roll over at local midnight in the deployment's window time zone (UTC
unless ``window_timezone`` says otherwise), weeks on Monday at 00:00 (ISO
weeks) and months on the 1st at 00:00, all in that zone. Their ends are
instants (integer milliseconds since the Unix epoch, converted without
floats): a local day is 23 or 25 hours long across a daylight saving change,
and its end says so, so the counters' TTLs stay right.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import NamedTuple

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: the end of the open window a ledger query with no bound asks for: every
#: entry lies between EPOCH and it, and a bound past either end (its UTC in
#: year 10000, or before 1970) is taken as that end
OPEN_END = datetime(9999, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_DAY = timedelta(days=1)


class Windows(NamedTuple):
    """The day, month and week windows around one instant."""

    #: ``yyyymmdd`` of the (local) day
    day: str
    #: first millisecond of the day
    day_start_ms: int
    #: first millisecond of the next day
    day_end_ms: int
    #: ``yyyymm`` of the (local) month
    month: str
    #: first millisecond of the next month
    month_end_ms: int
    #: ``yyyymmdd`` of the Monday the (local, ISO) week starts on
    week: str
    #: first millisecond of the next week (the next Monday, 00:00)
    week_end_ms: int


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (floor, exact)."""
    if moment.tzinfo is None:
        raise ValueError("the clock must return an aware datetime (UTC)")
    return (moment - EPOCH) // _MS


def from_ms(ms: int) -> datetime:
    """The aware UTC datetime of milliseconds since the epoch."""
    # Positional (days, seconds, microseconds): a third faster than keywords.
    return EPOCH + timedelta(0, ms // 1000, ms % 1000 * 1000)


def _midnight_ms(day: date, zone: tzinfo) -> int:
    """The first millisecond of a local day: its 00:00 in ``zone``.

    Where 00:00 does not exist (a zone that springs forward at midnight),
    zoneinfo reads it with the offset before the change: the instant of the
    change itself, which is when that day starts.
    """
    return to_ms(datetime(day.year, day.month, day.day, tzinfo=zone))


def _yyyymmdd(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def windows_at(now_ms: int, zone: tzinfo | None = None) -> Windows:
    """The windows of the instant ``now_ms`` in ``zone`` (``None``: UTC)."""
    if zone is None:
        return _utc_windows(now_ms)
    today = from_ms(now_ms).astimezone(zone).date()
    tomorrow = today + _DAY
    if today.month == 12:
        next_month = date(today.year + 1, 1, 1)
    else:
        next_month = date(today.year, today.month + 1, 1)
    monday = today - timedelta(days=today.weekday())
    return Windows(
        day=_yyyymmdd(today),
        day_start_ms=_midnight_ms(today, zone),
        day_end_ms=_midnight_ms(tomorrow, zone),
        month=f"{today.year:04d}{today.month:02d}",
        month_end_ms=_midnight_ms(next_month, zone),
        week=_yyyymmdd(monday),
        week_end_ms=_midnight_ms(monday + timedelta(days=7), zone),
    )


def _utc_windows(now_ms: int) -> Windows:
    # UTC days are 24 hours: plain arithmetic, no zone lookups.
    moment = from_ms(now_ms)
    day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = day_start + _DAY
    if moment.month == 12:
        month_end = day_start.replace(year=moment.year + 1, month=1, day=1)
    else:
        month_end = day_start.replace(month=moment.month + 1, day=1)
    weekday = moment.weekday()
    monday = day_start - timedelta(days=weekday)
    return Windows(
        day=f"{moment.year:04d}{moment.month:02d}{moment.day:02d}",
        day_start_ms=to_ms(day_start),
        day_end_ms=to_ms(day_end),
        month=f"{moment.year:04d}{moment.month:02d}",
        month_end_ms=to_ms(month_end),
        week=_yyyymmdd(monday.date()),
        week_end_ms=to_ms(monday + timedelta(days=7)),
    )
