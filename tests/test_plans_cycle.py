"""The periods plans count in (spendgate.plans.cycle), as pure functions.

Anchored cycles are checked period by period from an anchor (Jan 31, Feb 29,
the last millisecond of a day), at the boundary instant and one millisecond
before it, across leap and common years; calendar windows at their edges
(ISO weeks from Monday, month and year ends). No Redis: plain arithmetic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spendgate.core.windows import from_ms, to_ms
from spendgate.plans.cycle import (
    CYCLE_PERIODS,
    Period,
    add_months,
    calendar_window,
    cycle_at,
    cycle_boundary,
    period_code,
)

MS = timedelta(milliseconds=1)


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[arg-type]


def ms(*parts: int) -> int:
    return to_ms(at(*parts))


def starts(anchor: datetime, period: str, count: int) -> list[datetime]:
    return [from_ms(cycle_boundary(to_ms(anchor), period, n)) for n in range(count)]


def test_a_jan_31_monthly_cycle_renews_on_the_last_day_of_shorter_months() -> None:
    anchor = at(2025, 1, 31, 9, 30)
    assert starts(anchor, "monthly", 8) == [
        at(2025, 1, 31, 9, 30),
        at(2025, 2, 28, 9, 30),  # common year: Feb 28
        at(2025, 3, 31, 9, 30),  # back on the 31st: the clamp is not sticky
        at(2025, 4, 30, 9, 30),
        at(2025, 5, 31, 9, 30),
        at(2025, 6, 30, 9, 30),
        at(2025, 7, 31, 9, 30),
        at(2025, 8, 31, 9, 30),
    ]


def test_a_jan_31_monthly_cycle_renews_on_feb_29_in_a_leap_year() -> None:
    assert starts(at(2024, 1, 31), "monthly", 3) == [
        at(2024, 1, 31),
        at(2024, 2, 29),
        at(2024, 3, 31),
    ]


def test_a_feb_29_yearly_cycle_renews_on_feb_28_of_common_years() -> None:
    assert starts(at(2024, 2, 29, 12), "yearly", 5) == [
        at(2024, 2, 29, 12),
        at(2025, 2, 28, 12),
        at(2026, 2, 28, 12),
        at(2027, 2, 28, 12),
        at(2028, 2, 29, 12),  # a leap year again: back on the 29th
    ]


def test_fixed_length_cycles_count_days_from_the_anchor() -> None:
    anchor = at(2024, 2, 28, 23, 59, 59)
    assert starts(anchor, "daily", 3)[1:] == [
        at(2024, 2, 29, 23, 59, 59),
        at(2024, 3, 1, 23, 59, 59),
    ]
    assert starts(anchor, "weekly", 2)[1] == at(2024, 3, 6, 23, 59, 59)
    assert starts(anchor, "rolling_30d", 2)[1] == at(2024, 3, 29, 23, 59, 59)


@pytest.mark.parametrize("period", [p for p in CYCLE_PERIODS if p != "calendar_month"])
def test_every_instant_falls_in_exactly_the_period_its_boundaries_say(
    period: str,
) -> None:
    anchor = at(2023, 12, 31, 23, 59, 59, 999000)  # a month end, a year end
    for n in range(30):
        boundary = from_ms(cycle_boundary(to_ms(anchor), period, n))
        following = from_ms(cycle_boundary(to_ms(anchor), period, n + 1))
        # the boundary instant belongs to the new period...
        assert cycle_at(to_ms(anchor), period, to_ms(boundary)) == Period(
            to_ms(boundary), to_ms(following)
        )
        # ...and the millisecond before it to the old one
        if n:
            before = cycle_at(to_ms(anchor), period, to_ms(boundary - MS))
            assert before.end_ms == to_ms(boundary)
            assert before.start_ms < to_ms(boundary)


def test_the_cycle_at_a_moment_of_a_jan_31_monthly_cycle() -> None:
    anchor = ms(2024, 1, 31, 10)
    # Feb 29 (leap year) 09:59:59.999 is still January's period...
    assert cycle_at(anchor, "monthly", ms(2024, 2, 29, 9, 59, 59) + 999) == Period(
        ms(2024, 1, 31, 10), ms(2024, 2, 29, 10)
    )
    # ...10:00 starts the next, which ends on Mar 31
    assert cycle_at(anchor, "monthly", ms(2024, 2, 29, 10)) == Period(
        ms(2024, 2, 29, 10), ms(2024, 3, 31, 10)
    )
    # Mar 1 to Mar 30 are in the period that started on Feb 29
    assert cycle_at(anchor, "monthly", ms(2024, 3, 30, 23)).start_ms == ms(
        2024, 2, 29, 10
    )
    # a year later, a common February: Feb 28 to Mar 31
    assert cycle_at(anchor, "monthly", ms(2025, 3, 15)) == Period(
        ms(2025, 2, 28, 10), ms(2025, 3, 31, 10)
    )


def test_a_yearly_cycle_at_a_moment() -> None:
    anchor = ms(2024, 2, 29)
    assert cycle_at(anchor, "yearly", ms(2025, 2, 27)) == Period(
        ms(2024, 2, 29), ms(2025, 2, 28)
    )
    assert cycle_at(anchor, "yearly", ms(2025, 2, 28)) == Period(
        ms(2025, 2, 28), ms(2026, 2, 28)
    )
    assert cycle_at(anchor, "yearly", ms(2028, 3, 1)) == Period(
        ms(2028, 2, 29), ms(2029, 2, 28)
    )


def test_a_clock_before_the_anchor_is_in_the_first_period() -> None:
    anchor = ms(2025, 1, 31)
    assert cycle_at(anchor, "monthly", anchor - 5000) == Period(anchor, ms(2025, 2, 28))
    assert cycle_at(anchor, "daily", anchor - 1) == Period(anchor, ms(2025, 2, 1))


def test_a_calendar_month_cycle_starts_at_the_assignment_then_on_the_1st() -> None:
    anchor = ms(2024, 2, 20, 15)
    assert cycle_at(anchor, "calendar_month", ms(2024, 2, 25)) == Period(
        anchor, ms(2024, 3, 1)
    )
    assert cycle_at(anchor, "calendar_month", ms(2024, 3, 1)) == Period(
        ms(2024, 3, 1), ms(2024, 4, 1)
    )
    assert cycle_at(anchor, "calendar_month", ms(2024, 12, 31, 23)) == Period(
        ms(2024, 12, 1), ms(2025, 1, 1)
    )


def test_calendar_windows_are_utc_days_iso_weeks_months_and_years() -> None:
    now = ms(2024, 12, 31, 23, 59, 59)  # a Tuesday, the last of a leap year
    assert calendar_window("daily", now) == Period(ms(2024, 12, 31), ms(2025, 1, 1))
    assert calendar_window("weekly", now) == Period(ms(2024, 12, 30), ms(2025, 1, 6))
    assert calendar_window("monthly", now) == Period(ms(2024, 12, 1), ms(2025, 1, 1))
    assert calendar_window("yearly", now) == Period(ms(2024, 1, 1), ms(2025, 1, 1))
    # a Monday 00:00 starts a week; Sunday 23:59 is still the last one
    assert calendar_window("weekly", ms(2025, 1, 6)).start_ms == ms(2025, 1, 6)
    assert calendar_window("weekly", ms(2025, 1, 5, 23, 59)).start_ms == ms(
        2024, 12, 30
    )
    assert calendar_window("monthly", ms(2024, 2, 29, 12)) == Period(
        ms(2024, 2, 1), ms(2024, 3, 1)
    )


def test_period_codes_name_the_window_and_its_first_day() -> None:
    assert period_code("monthly", ms(2025, 1, 1)) == "m20250101"
    assert period_code("weekly", ms(2024, 12, 30)) == "w20241230"
    assert period_code("daily", ms(2024, 2, 29)) == "d20240229"
    assert period_code("yearly", ms(2025, 1, 1)) == "y20250101"


def test_unknown_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="fortnightly"):
        cycle_at(0, "fortnightly", 1)
    with pytest.raises(ValueError):
        cycle_boundary(0, "calendar_month", 1)
    with pytest.raises(ValueError):
        calendar_window("rolling_30d", 0)


def test_add_months_goes_back_too_and_keeps_the_time_of_day() -> None:
    moment = at(2024, 3, 31, 7, 8, 9, 123000)
    assert add_months(moment, -1) == at(2024, 2, 29, 7, 8, 9, 123000)
    assert add_months(moment, -13) == at(2023, 2, 28, 7, 8, 9, 123000)
    assert add_months(moment, 11) == at(2025, 2, 28, 7, 8, 9, 123000)
