"""The periods plans count in, as pure functions over milliseconds (UTC).

Two kinds, as bursar has them:

- **The user's own cycle** (a plan's free allowance): periods anchored at
  the moment the plan was assigned, :func:`cycle_at`. ``daily``,
  ``weekly`` and ``rolling_30d`` are fixed lengths (1, 7, 30 days) from the
  anchor. ``monthly`` (bursar's ``anniversary``) renews on the anchor's day
  of the month at the anchor's time of day, that day clamped to the month's
  length and *not* sticky: assigned on Jan 31, a user renews on Feb 28 (Feb
  29 in a leap year), then Mar 31, Apr 30, May 31. ``yearly`` does the same
  by year: assigned on Feb 29, renews on Feb 28 of common years and on Feb
  29 of leap years. ``calendar_month`` (bursar's default, which spendgate's
  is not) renews on the 1st at 00:00 UTC; its first period runs from the
  assignment to the next 1st.
- **Calendar windows** (feature limits, as bursar counts them): every user
  resets together, :func:`calendar_window`: ``daily`` at 00:00 UTC,
  ``weekly`` on Monday 00:00 UTC (ISO weeks), ``monthly`` on the 1st,
  ``yearly`` on Jan 1.

Every period is ``[start_ms, end_ms)``: the boundary instant belongs to the
new period. A clock that reads before the anchor (skew between instances)
is in the first period. The scripts do no calendar arithmetic: Python
computes the period and passes its bounds.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

from spendgate.core.windows import from_ms, to_ms

__all__ = [
    "CALENDAR_PERIODS",
    "CYCLE_PERIODS",
    "CyclePeriod",
    "Period",
    "add_months",
    "calendar_window",
    "cycle_at",
    "cycle_boundary",
    "period_code",
]

#: a plan's cycle, as ``set_plan(period=...)`` takes it
CyclePeriod = Literal[
    "daily", "weekly", "monthly", "yearly", "calendar_month", "rolling_30d"
]
#: the cycles of a plan's free allowance
CYCLE_PERIODS: tuple[str, ...] = (
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "calendar_month",
    "rolling_30d",
)
#: the calendar windows of a feature limit
CALENDAR_PERIODS: tuple[str, ...] = ("daily", "weekly", "monthly", "yearly")

_DAY_MS = 86_400_000
#: the cycles of a fixed length, in ms
_FIXED_MS = {"daily": _DAY_MS, "weekly": 7 * _DAY_MS, "rolling_30d": 30 * _DAY_MS}
#: the cycles counted in months, and how many months each period is
_MONTHS = {"monthly": 1, "yearly": 12}


class Period(NamedTuple):
    """One period: ``[start_ms, end_ms)``."""

    #: its first millisecond
    start_ms: int
    #: the first millisecond of the next period (when it renews)
    end_ms: int


def add_months(moment: datetime, months: int) -> datetime:
    """``moment`` ``months`` calendar months later (or earlier), the same
    time of day, on the same day of the month or the month's last day when
    it is shorter (Jan 31 + 1 month = Feb 28, or 29 in a leap year)."""
    total = moment.year * 12 + moment.month - 1 + months
    year, month0 = divmod(total, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return moment.replace(year=year, month=month0 + 1, day=min(moment.day, last))


def cycle_boundary(anchor_ms: int, period: str, n: int) -> int:
    """The start of the ``n``-th period (0 = the anchor) of a cycle anchored
    at ``anchor_ms``; not for ``calendar_month``.

    :raise ValueError: an unknown period
    """
    length = _FIXED_MS.get(period)
    if length is not None:
        return anchor_ms + n * length
    step = _MONTHS.get(period)
    if step is None:
        raise ValueError(f"not an anchored cycle: {period!r}")
    return to_ms(add_months(from_ms(anchor_ms), n * step))


def cycle_at(anchor_ms: int, period: str, now_ms: int) -> Period:
    """The period of a cycle anchored at ``anchor_ms`` that ``now_ms`` falls
    in (the first one when ``now_ms`` is before the anchor).

    :raise ValueError: an unknown period
    """
    if period == "calendar_month":
        start, end = calendar_window("monthly", max(now_ms, anchor_ms))
        return Period(max(start, anchor_ms), end)
    if now_ms <= anchor_ms:
        return Period(anchor_ms, cycle_boundary(anchor_ms, period, 1))
    length = _FIXED_MS.get(period)
    if length is not None:
        n = (now_ms - anchor_ms) // length
        start = anchor_ms + n * length
        return Period(start, start + length)
    step = _MONTHS.get(period)
    if step is None:
        raise ValueError(f"not a plan cycle: {period!r}")
    anchor, now = from_ms(anchor_ms), from_ms(now_ms)
    months = (now.year - anchor.year) * 12 + now.month - anchor.month
    n = months // step
    # (the day is clamped per month, so the n-th boundary is in now's month,
    # or year, and may still be ahead of now within it)
    if cycle_boundary(anchor_ms, period, n) > now_ms:
        n -= 1
    return Period(
        cycle_boundary(anchor_ms, period, n), cycle_boundary(anchor_ms, period, n + 1)
    )


def calendar_window(period: str, now_ms: int) -> Period:
    """The UTC calendar window of ``period`` that ``now_ms`` falls in.

    :raise ValueError: an unknown period
    """
    now = from_ms(now_ms)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if period == "daily":
        start, end = day, day + timedelta(days=1)
    elif period == "weekly":
        start = day - timedelta(days=now.weekday())
        end = start + timedelta(days=7)
    elif period == "monthly":
        start = day.replace(day=1)
        end = add_months(start, 1)
    elif period == "yearly":
        start = day.replace(month=1, day=1)
        end = start.replace(year=start.year + 1)
    else:
        raise ValueError(f"not a calendar period: {period!r}")
    return Period(to_ms(start), to_ms(end))


def period_code(period: str, start_ms: int) -> str:
    """A calendar window's name in keys: the period's letter and its first
    day, ``m20250101``."""
    start = from_ms(start_ms)
    return f"{period[0]}{start.year:04d}{start.month:02d}{start.day:02d}"
