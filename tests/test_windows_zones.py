"""Windows in a time zone, across daylight saving changes, and weekly caps.

How: with ``window_timezone="America/New_York"`` and the injected ``clock``,
spend just before local midnight counts in that day and is gone at local
midnight, on the day the clocks spring forward (a 23-hour day) and on the
day they fall back (25 hours); the counters' TTLs follow the real length of
the day. Months roll over at local midnight on the 1st, weeks at local
Monday 00:00 (a week across a change is 167 or 169 hours). The scripts'
own week arithmetic (``week_of`` in ``lua/_windows.lua``) agrees with
Python's calendar over a century of days. Weekly caps that are not
configured keep no counter. Both backends.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from conftest import FakeClock, MakeBudget
from spendgate import BudgetConfig, BudgetExceededError, InvalidArgumentError
from spendgate.core.scripts import LIBRARIES, _link, lua_dir
from spendgate.core.windows import to_ms, windows_at

NY = "America/New_York"
ZONE = ZoneInfo(NY)
#: 2026's changes in New York: 2:00 EST -> 3:00 EDT on March 8, 2:00 EDT ->
#: 1:00 EST on November 1
SPRING = date(2026, 3, 8)
FALL = date(2026, 11, 1)
RETENTION_MS = 2 * 86400 * 1000


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "starts", "ends", "hours"),
    [
        (SPRING, _utc(2026, 3, 8, 5), _utc(2026, 3, 9, 4), 23),
        (FALL, _utc(2026, 11, 1, 4), _utc(2026, 11, 2, 5), 25),
    ],
)
async def test_days_roll_over_at_local_midnight_across_dst(
    make_budget: MakeBudget,
    clock: FakeClock,
    redis_client: aioredis.Redis,
    day: date,
    starts: datetime,
    ends: datetime,
    hours: int,
) -> None:
    assert ends - starts == timedelta(hours=hours)
    budget = make_budget(window_timezone=NY, daily_user_limit="1")
    key = f"{day:%Y%m%d}"
    # The last millisecond of the day before belongs to the day before.
    clock.set(starts - timedelta(milliseconds=1))
    await budget.record_spend("ada", "1")
    assert (await budget.get_usage("ada"))["user"].daily.resets_at == starts
    # The first millisecond of the local day: a fresh day.
    clock.set(starts)
    assert await budget.check_availability("ada", None, "1") is True
    await budget.record_spend("ada", "1")
    day_key = budget.keys.day(key, "user", "ada")
    # Its counter lives the day's real length (23 or 25 hours) plus retention.
    ttl = await redis_client.pttl(day_key)
    assert 0 <= to_ms(ends) + RETENTION_MS - to_ms(starts) - ttl < 60_000
    # The last millisecond of the local day: still that day, refused.
    clock.set(ends - timedelta(milliseconds=1))
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("ada", None, "0.01")
    assert (refused.value.window, refused.value.resets_at) == ("daily", ends)
    # Local midnight: the next day.
    clock.set(ends)
    assert await budget.check_availability("ada", None, "1") is True
    usage = await budget.get_usage("ada")
    assert usage["user"].daily.spent == 0
    # (November 1st: the spend of October 31 is last month's)
    assert usage["user"].monthly.spent == (1 if day.day == 1 else 2)


async def test_months_roll_over_at_local_midnight(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(window_timezone=NY, monthly_user_limit="5")
    april = _utc(2026, 4, 1, 4)  # 00:00 EDT
    clock.set(april - timedelta(minutes=1))  # 23:59 on March 31, local
    await budget.record_spend("ada", "5")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("ada", None, "0.01")
    assert (refused.value.window, refused.value.resets_at) == ("monthly", april)
    clock.set(april)
    assert await budget.check_availability("ada", None, "5") is True


@pytest.mark.parametrize(
    ("monday", "next_monday", "hours"),
    [
        (_utc(2026, 3, 2, 5), _utc(2026, 3, 9, 4), 167),  # springs forward
        (_utc(2026, 10, 26, 4), _utc(2026, 11, 2, 5), 169),  # falls back
        (_utc(2026, 3, 9, 4), _utc(2026, 3, 16, 4), 168),
    ],
)
async def test_weeks_roll_over_on_local_monday(
    make_budget: MakeBudget,
    clock: FakeClock,
    redis_client: aioredis.Redis,
    monday: datetime,
    next_monday: datetime,
    hours: int,
) -> None:
    assert next_monday - monday == timedelta(hours=hours)
    budget = make_budget(window_timezone=NY, weekly_user_limit="3")
    clock.set(monday - timedelta(milliseconds=1))  # Sunday 23:59:59.999, local
    await budget.record_spend("ada", "3")
    clock.set(monday)
    await budget.record_spend("ada", "1")  # Monday: this week
    await budget.record_spend("ada", "2")
    clock.set(next_monday - timedelta(milliseconds=1))
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("ada", None, "0.01")
    assert (refused.value.window, refused.value.resets_at) == ("weekly", next_monday)
    assert refused.value.spent == Decimal(3)
    usage = await budget.get_usage("ada")
    assert usage["user"].weekly is not None
    assert (usage["user"].weekly.spent, usage["user"].weekly.limit) == (3, 3)
    assert usage["user"].weekly.resets_at == next_monday
    week = budget.keys.week(f"{monday.astimezone(ZONE):%Y%m%d}", "user", "ada")
    # The week's counter outlives its week by the retention (never less,
    # at most a few hours more: the scripts add 2 h for a DST change).
    ttl = await redis_client.pttl(week)
    wanted = to_ms(next_monday) + RETENTION_MS - to_ms(monday)
    assert wanted - 60_000 <= ttl <= wanted + 3 * 3600_000
    clock.set(next_monday)
    assert await budget.check_availability("ada", None, "3") is True


async def test_a_weekly_cap_counts_holds_and_fits_reserve_up_to(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(weekly_caps=True)
    await budget.set_limits("global", weekly="10")
    await budget.record_spend("ada", "4")
    lease = await budget.reserve("bob", "5", project_id="p")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.reserve("carol", "2")
    assert (refused.value.scope, refused.value.window) == ("global", "weekly")
    assert refused.value.held == Decimal(5)
    granted = await budget.reserve_up_to("carol", "2")
    assert granted.amount == Decimal(1)
    await budget.settle(lease, "3")
    await budget.add_credits("dan", "10")
    await budget.deduct("dan", "1")
    usage = await budget.get_usage("dan")
    assert usage["global"].weekly is not None
    assert usage["global"].weekly.spent == Decimal(8)
    assert usage["user"].weekly is not None  # kept for every scope
    assert usage["user"].weekly.limit is None


async def test_weekly_counters_are_kept_only_when_configured(
    make_budget: MakeBudget,
    clock: FakeClock,
    redis_client: aioredis.Redis,
    key_prefix: str,
) -> None:
    budget = make_budget(window_timezone=NY)
    await budget.record_spend("ada", "1", project_id="p")
    assert not [k async for k in redis_client.scan_iter(f"{key_prefix}:*:w:*")]
    assert (await budget.get_usage("ada"))["user"].weekly is None
    with pytest.raises(InvalidArgumentError, match="weekly"):
        await budget.set_limits("user", "ada", weekly="1")
    weekly = make_budget(window_timezone=NY, weekly_project_limit="100")
    await weekly.record_spend("ada", "1", project_id="p")
    found = {
        k.decode().rsplit(":", 2)[-2]
        async for k in redis_client.scan_iter(f"{key_prefix}:*:w:*")
    }
    assert found == {"u", "p", "g"}


async def test_the_scripts_week_arithmetic_agrees_with_the_calendar(
    redis_client: aioredis.Redis,
) -> None:
    folder = lua_dir()
    library = b"\n".join((folder / f"{lib}.lua").read_bytes() for lib in LIBRARIES)
    body = (
        b"local out = {}\n"
        b"for i = 1, #ARGV do\n"
        b"  local week, left = week_of(ARGV[i])\n"
        b"  out[#out + 1] = week .. ':' .. left\n"
        b"end\n"
        b"return out\n"
    )
    script = _link(library, body) + body
    first, days = date(1999, 12, 20), []
    # A century of Mondays and the days around leap days and year ends.
    for offset in range(0, 37_000, 7):
        days.append(first + timedelta(days=offset))
    for year in range(1999, 2102):
        for month, day in ((2, 28), (2, 29), (3, 1), (12, 31), (1, 1)):
            try:
                days.append(date(year, month, day))
            except ValueError:  # not a leap year
                continue
    days += [first + timedelta(days=i) for i in range(800)]  # every weekday
    for start in range(0, len(days), 1000):
        chunk = days[start : start + 1000]
        reply = await redis_client.eval(script, 0, *(f"{d:%Y%m%d}" for d in chunk))
        expected = [
            f"{d - timedelta(days=d.weekday()):%Y%m%d}:{6 - d.weekday()}" for d in chunk
        ]
        assert [r.decode() for r in reply] == expected


def test_windows_in_a_zone_match_the_calendar() -> None:
    at = to_ms(datetime(2026, 3, 8, 12, tzinfo=ZONE))  # Sunday, after the change
    w = windows_at(at, ZONE)
    assert (w.day, w.month, w.week) == ("20260308", "202603", "20260302")
    assert w.day_end_ms - w.day_start_ms == 23 * 3600_000
    assert w.week_end_ms == to_ms(_utc(2026, 3, 9, 4))
    assert w.month_end_ms == to_ms(_utc(2026, 4, 1, 4))
    # UTC through the zone path is the fast path's answer.
    utc = ZoneInfo("UTC")
    for hours in range(0, 24 * 800, 37):
        ms = to_ms(_utc(2025, 12, 1)) + hours * 3600_000 + 1234
        assert windows_at(ms, utc) == windows_at(ms)


def test_an_unknown_time_zone_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        BudgetConfig(window_timezone="Mars/Olympus_Mons")
    assert BudgetConfig(window_timezone=NY).window_timezone == NY
