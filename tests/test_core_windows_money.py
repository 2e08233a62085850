"""Calendar windows and exact money.

Windows: with an injected clock, spend just before 00:00 UTC counts in that
day and is gone from the next; the month rolls over on the 1st (including
December -> January) while the day counters of the month keep adding up.
Money: 1000 x 0.1 is exactly 100, 0.1 + 0.2 fits a 0.3 cap, charges round up
to the micro-unit and credits round down. Both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import BudgetExceededError
from spendgate.core.money import charge_micros, credit_micros, from_micros


async def test_day_rolls_over_at_utc_midnight(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 3, 15, 23, 59, 59, 999000, tzinfo=UTC))
    budget = make_budget(daily_user_limit="1")
    await budget.record_spend("alice", "1")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", None, "0.01")
    assert refused.value.resets_at == datetime(2026, 3, 16, tzinfo=UTC)

    clock.advance(0.001)  # exactly 00:00:00.000 UTC
    assert await budget.check_availability("alice", None, "1") is True
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == 0
    assert usage["user"].monthly.spent == Decimal("1")
    assert usage["user"].daily.resets_at == datetime(2026, 3, 17, tzinfo=UTC)


async def test_non_utc_clock_is_read_in_utc(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    # 23:30 in UTC-05:00 is 04:30 UTC the next day.
    clock.set(datetime(2026, 3, 15, 23, 30, tzinfo=timezone(timedelta(hours=-5))))
    budget = make_budget()
    await budget.record_spend("alice", "1")
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.resets_at == datetime(2026, 3, 17, tzinfo=UTC)


async def test_month_rolls_over_on_the_first(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 12, 31, 23, 0, tzinfo=UTC))
    budget = make_budget(monthly_project_limit="10")
    await budget.record_spend("alice", "10", project_id="p")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", "p", "0.000001")
    assert refused.value.window == "monthly"
    assert refused.value.resets_at == datetime(2027, 1, 1, tzinfo=UTC)

    clock.set(datetime(2027, 1, 1, 0, 0, tzinfo=UTC))
    assert await budget.check_availability("alice", "p", "10") is True
    usage = await budget.get_usage("alice", "p")
    assert usage["project"].monthly.spent == 0
    assert usage["project"].monthly.resets_at == datetime(2027, 2, 1, tzinfo=UTC)


async def test_daily_spend_adds_up_in_the_month(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 2, 27, 12, tzinfo=UTC))
    budget = make_budget(daily_user_limit="8", monthly_user_limit="12")
    for _ in range(2):  # Feb 27 and Feb 28
        await budget.record_spend("alice", "5")
        clock.advance(days=1)
    # March 1st: a new month, a new day.
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == 0 and usage["user"].monthly.spent == 0
    clock.set(datetime(2026, 2, 28, 18, tzinfo=UTC))
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == Decimal("5")
    assert usage["user"].monthly.spent == Decimal("10")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", None, "2.5")
    assert refused.value.window == "monthly"


async def test_counters_expire_on_their_own(
    make_budget: MakeBudget, redis_client: object, clock: FakeClock
) -> None:
    budget = make_budget(counter_retention_seconds=0)
    await budget.record_spend("alice", "1", project_id="p")
    keys = budget.keys.of("alice")  # (sharded: the counters of alice's bucket)
    ttl_ms = await budget.redis.pttl(keys.day("20260315", "user", "alice"))
    # Noon on the 15th: the day counter lives the 12 hours left of its day.
    assert 0 < ttl_ms <= 12 * 3600 * 1000
    month_ttl = await budget.redis.pttl(keys.month("202603", "global", ""))
    assert 16 * 86400 * 1000 < month_ttl <= (16 * 86400 + 12 * 3600) * 1000


async def test_thousand_tenths_make_exactly_one_hundred(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="100")
    for _ in range(1000):
        await budget.record_spend("alice", 0.1)
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == Decimal("100")
    assert usage["user"].daily.remaining == 0
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice", None, "0.000001")


async def test_point_one_plus_point_two_fits_point_three(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit=0.3)
    await budget.record_spend("alice", 0.1)
    assert await budget.check_availability("alice", None, 0.2) is True
    await budget.record_spend("alice", 0.2)
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == Decimal("0.3")
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice")


async def test_charges_round_up_to_the_micro_unit(make_budget: MakeBudget) -> None:
    budget = make_budget()
    record = await budget.record_spend("alice", "0.0000001")
    assert record.amount == Decimal("0.000001")
    record = await budget.record_spend("alice", Decimal("1.0000011"))
    assert record.amount == Decimal("1.000002")
    lease = await budget.reserve("alice", "0.00000000001")
    assert lease.amount == Decimal("0.000001")
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == Decimal("1.000003")
    assert usage["user"].held == Decimal("0.000001")


async def test_credits_round_down(make_budget: MakeBudget) -> None:
    budget = make_budget(enforce_balance=True)
    record = await budget.add_credits("alice", "1.9999999")
    assert record.amount == Decimal("1.999999")
    assert record.balance == Decimal("1.999999")


def test_rounding_helpers_are_exact() -> None:
    assert charge_micros("0.1") == 100_000
    assert charge_micros(0.1) == 100_000
    assert charge_micros("0.0000010000000001") == 2
    assert credit_micros("0.0000019999") == 1
    assert charge_micros(10**9) == 10**15
    assert from_micros(1) == Decimal("0.000001")
    assert str(from_micros(100_000)) == "0.1"
    assert str(from_micros(0)) == "0"


def test_memoised_conversions_stay_exact_and_bounded() -> None:
    from spendgate.core import money
    from spendgate.errors import InvalidAmountError

    # The float 0.1 is read through its shortest repr; a Decimal holding the
    # float's exact binary expansion compares equal to it, and must not be
    # answered from the float's memo entry (it rounds up one micro-unit).
    assert charge_micros(0.1) == 100_000
    assert charge_micros(0.1) == 100_000
    assert Decimal(0.1) == 0.1
    assert charge_micros(Decimal(0.1)) == 100_001
    assert charge_micros(" 0.1 ") == 100_000
    assert charge_micros(1) == 1_000_000
    assert charge_micros(1.0) == 1_000_000
    # Equal Decimals convert alike, whichever was seen first.
    assert charge_micros(Decimal("0.0000015")) == 2
    assert charge_micros(Decimal("0.00000150")) == 2
    assert charge_micros(Decimal("-0")) == 0
    # Invalid input is never memoised: it fails every time (a signalling NaN
    # cannot even be looked up).
    bad_amounts = (-0.5, float("nan"), "nope", 10**9 + 1, True)
    bad_decimals = (Decimal("sNaN"), Decimal("NaN"), Decimal("-1"), Decimal("Inf"))
    for bad in bad_amounts + bad_decimals:
        for _ in range(2):
            with pytest.raises(InvalidAmountError):
                charge_micros(bad)
    for i in range(money._MEMO_SIZE + 10):
        assert charge_micros((500 + i) / 1000) == 500_000 + i * 1000
    assert len(money._CHARGE_MEMO[float]) <= money._MEMO_SIZE
    for i in range(money._MEMO_SIZE + 10):
        assert charge_micros(Decimal(500 + i) / 1000) == 500_000 + i * 1000
    assert len(money._CHARGE_MEMO[Decimal]) <= money._MEMO_SIZE
