"""``adjust_usage`` corrects the day and month of the window time zone.

How: with ``window_timezone="America/New_York"`` and the injected clock set
to a local evening whose UTC date is already the next day, a charge counts
in the local day's counter (as every charge does); the correction of the
current day, of a given local date and of the current month must move that
same counter, name that day in its result and ledger entry, and be refused
for a local day that has not begun; ``at`` given as a day to ``POST
/v1/adjust`` (in process, ``httpx.ASGITransport``) and to ``spendgate
adjust --at`` (its argument type) is that local day too. An ``at`` at
the calendar's ends (year 1, year 9999, in UTC or the zone) is a typed
error, and a 422 over HTTP, not a crash. Both backends.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from conftest import FakeClock, MakeBudget
from spendgate import InvalidArgumentError
from spendgate.cli.arguments import day_or_moment
from spendgate.server import create_app

NY = "America/New_York"
#: 21:00 on March 14 in New York (EDT, UTC-4): March 15 01:00 UTC
LOCAL_EVENING = datetime(2026, 3, 15, 1, 0, tzinfo=UTC)


async def test_the_current_day_is_the_local_one(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    clock.set(LOCAL_EVENING)
    budget = make_budget(window_timezone=NY)
    await budget.record_spend("ada", 5)
    done = await budget.adjust_usage("user", "ada", "-2", reason="double charge")
    assert (done.period, done.applied, done.spent_after) == (
        "2026-03-14",
        Decimal(-2),
        Decimal(3),
    )
    usage = await budget.get_usage("ada")
    assert usage["user"].daily.spent == Decimal(3)


async def test_a_date_names_the_local_day(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    clock.set(LOCAL_EVENING)
    budget = make_budget(window_timezone=NY)
    await budget.record_spend("ada", 5)
    done = await budget.adjust_usage("user", "ada", "-1", at=date(2026, 3, 14))
    assert (done.period, done.applied, done.spent_after) == (
        "2026-03-14",
        Decimal(-1),
        Decimal(4),
    )
    with pytest.raises(InvalidArgumentError, match="has not begun"):
        await budget.adjust_usage("user", "ada", "1", at=date(2026, 3, 15))


async def test_the_current_month_is_the_local_one(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    # 20:00 on February 28 in New York (EST, UTC-5): March 1 01:00 UTC.
    clock.set(datetime(2026, 3, 1, 1, 0, tzinfo=UTC))
    budget = make_budget(window_timezone=NY)
    await budget.record_spend("ada", 5)
    done = await budget.adjust_usage("user", "ada", "-2", "monthly")
    assert (done.period, done.spent_after) == ("2026-02", Decimal(3))
    usage = await budget.get_usage("ada")
    assert usage["user"].monthly.spent == Decimal(3)


async def test_a_day_over_http_and_on_the_command_line_is_the_local_one(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    clock.set(LOCAL_EVENING)
    budget = make_budget(window_timezone=NY)
    await budget.record_spend("ivy", 5)
    app = create_app(budget, api_keys=["k"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        body = {"scope": "user", "scope_id": "ivy", "amount": -1, "at": "2026-03-14"}
        answer = await http.post(
            "/v1/adjust", json=body, headers={"Authorization": "Bearer k"}
        )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["period"], answer.json()["spent_after"]) == (
        "2026-03-14",
        "4",
    )
    assert day_or_moment("2026-03-14") == date(2026, 3, 14)
    assert day_or_moment("2026-03-14T10:00") == datetime(2026, 3, 14, 10, tzinfo=UTC)


@pytest.mark.parametrize("zone", ["UTC", NY])
async def test_an_at_at_the_ends_of_the_calendar_is_refused(
    make_budget: MakeBudget, zone: str
) -> None:
    budget = make_budget(window_timezone=zone)
    for at in (
        date(9999, 12, 31),
        datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-23))),
        datetime(1, 1, 1, tzinfo=UTC),
        date(1, 1, 1),
    ):
        for window in ("daily", "monthly"):
            with pytest.raises(InvalidArgumentError):
                await budget.adjust_usage("user", "ada", "1", window, at=at)  # type: ignore[arg-type]
    app = create_app(budget, api_keys=["k"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        for at in ("9999-12-31", "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00"):
            body = {"scope": "user", "scope_id": "ada", "amount": 1, "at": at}
            answer = await http.post(
                "/v1/adjust", json=body, headers={"Authorization": "Bearer k"}
            )
            assert answer.status_code == 422, (at, answer.text)
    assert (await budget.get_usage("ada"))["user"].daily.spent == 0
