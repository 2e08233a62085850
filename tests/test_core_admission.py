"""Admission: every cap and window of every scope, overrides, refusal details.

Each test sets one cap, spends up to it through ``record_spend`` and checks
that ``check_availability`` admits exactly up to the boundary
(``spent + held + requested <= limit``; with nothing requested, ``< limit``)
and that the refusal names the right scope, window, numbers and reset time.
Runs on real Redis and on fakeredis.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import BudgetExceededError, StorageError

CAPS = [
    ("user", "daily", "daily_user_limit"),
    ("user", "monthly", "monthly_user_limit"),
    ("project", "daily", "daily_project_limit"),
    ("project", "monthly", "monthly_project_limit"),
    ("global", "daily", "daily_global_limit"),
    ("global", "monthly", "monthly_global_limit"),
]


@pytest.mark.parametrize(("scope", "window", "setting"), CAPS)
async def test_each_cap_admits_up_to_its_limit_and_refuses_past_it(
    make_budget: MakeBudget, clock: FakeClock, scope: str, window: str, setting: str
) -> None:
    budget = make_budget(**{setting: "10"})
    await budget.record_spend("alice", "7", project_id="proj")

    assert await budget.check_availability("alice", "proj", "3") is True
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", "proj", "3.000001")

    err = refused.value
    assert err.scope == scope
    assert err.scope_id == {"user": "alice", "project": "proj", "global": None}[scope]
    assert err.window == window
    assert err.limit == Decimal("10")
    assert err.spent == Decimal("7")
    assert err.requested == Decimal("3.000001")
    expected_reset = (
        datetime(2026, 3, 16, tzinfo=UTC)
        if window == "daily"
        else datetime(2026, 4, 1, tzinfo=UTC)
    )
    assert err.resets_at == expected_reset
    assert scope in str(err).lower() and window in str(err)


@pytest.mark.parametrize(("scope", "window", "setting"), CAPS)
async def test_zero_request_is_refused_only_when_the_cap_is_used_up(
    make_budget: MakeBudget, scope: str, window: str, setting: str
) -> None:
    budget = make_budget(**{setting: "1"})
    await budget.record_spend("alice", "0.999999", project_id="proj")
    assert await budget.check_availability("alice", "proj") is True
    await budget.record_spend("alice", "0.000001", project_id="proj")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", "proj")
    assert (refused.value.scope, refused.value.window) == (scope, window)


async def test_project_cap_applies_only_to_calls_naming_the_project(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_project_limit="5")
    await budget.record_spend("alice", "5", project_id="proj")
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("bob", "proj", "0.01")
    assert await budget.check_availability("bob", "other", "4") is True
    assert await budget.check_availability("bob", None, "100") is True


async def test_caps_are_per_entity(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="2")
    await budget.record_spend("alice", "2")
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice", None, "0.5")
    assert await budget.check_availability("bob", None, "2") is True


async def test_global_cap_counts_every_user_and_project(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_global_limit="3")
    await budget.record_spend("a", "1")
    await budget.record_spend("b", "1", project_id="p1")
    await budget.record_spend("c", "0.5", project_id="p2")
    assert await budget.check_availability("d", None, "0.5") is True
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("d", "p3", "0.6")
    assert refused.value.scope == "global"
    assert refused.value.spent == Decimal("2.5")


async def test_refusal_reports_the_user_before_project_and_global(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(
        daily_user_limit="1", daily_project_limit="1", daily_global_limit="1"
    )
    await budget.record_spend("alice", "1", project_id="proj")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", "proj", "1")
    assert refused.value.scope == "user"


async def test_facts_are_never_refused_and_may_pass_the_cap(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="1")
    await budget.record_spend("alice", "0.9")
    record = await budget.record_spend("alice", "5")
    assert record.amount == Decimal("5")
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == Decimal("5.9")
    assert usage["user"].daily.remaining == Decimal("0")


async def test_override_takes_effect_on_the_next_call_without_restart(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="1")
    other_instance = make_budget(daily_user_limit="1")
    await budget.record_spend("alice", "1")
    with pytest.raises(BudgetExceededError):
        await other_instance.check_availability("alice", None, "1")

    limits = await budget.set_limits("user", "alice", daily="5")
    assert limits.daily == Decimal("5") and limits.overridden == {"daily"}
    assert await other_instance.check_availability("alice", None, "4") is True
    with pytest.raises(BudgetExceededError) as refused:
        await other_instance.check_availability("alice", None, "4.01")
    assert refused.value.limit == Decimal("5")
    # Other users keep the configured default.
    await budget.record_spend("bob", "1")
    with pytest.raises(BudgetExceededError):
        await other_instance.check_availability("bob", None, "0.01")


async def test_override_none_removes_the_cap_and_clear_restores_default(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_project_limit="1", monthly_project_limit="2")
    await budget.record_spend("alice", "2", project_id="proj")
    limits = await budget.set_limits("project", "proj", daily=None, monthly=None)
    assert (limits.daily, limits.monthly) == (None, None)
    assert await budget.check_availability("alice", "proj", "1000") is True

    limits = await budget.clear_limits("project", "proj")
    assert (limits.daily, limits.monthly, limits.overridden) == (
        Decimal("1"),
        Decimal("2"),
        frozenset(),
    )
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice", "proj", "0.01")


async def test_monthly_override_leaves_daily_untouched(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="3")
    await budget.set_limits("user", "alice", daily="2")
    limits = await budget.set_limits("user", "alice", monthly="10")
    assert (limits.daily, limits.monthly) == (Decimal("2"), Decimal("10"))


async def test_global_override(make_budget: MakeBudget) -> None:
    budget = make_budget()
    await budget.set_limits("global", None, daily="1")
    await budget.record_spend("x", "1")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("y", None, "0.01")
    assert refused.value.scope == "global" and refused.value.scope_id is None


async def test_zero_limit_refuses_everything(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="0")
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice")


async def test_check_changes_nothing(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="10")
    for _ in range(5):
        await budget.check_availability("alice", "p", "9")
    usage = await budget.get_usage("alice", "p")
    assert usage["user"].daily.spent == 0 and usage["user"].held == 0
    assert usage["project"].daily.spent == 0 and usage["global"].monthly.spent == 0


async def test_remaining_reports_the_tightest_room(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="10", monthly_project_limit="4")
    await budget.record_spend("alice", "1", project_id="p")
    assert await budget.remaining("alice", "p") == Decimal("3")
    assert await budget.remaining("alice") == Decimal("9")
    unlimited = make_budget(key_prefix=budget.config.key_prefix)
    assert await unlimited.remaining("alice") is None


async def test_coreason_user_context_object_is_accepted(
    make_budget: MakeBudget,
) -> None:
    class UserContext:
        def __init__(self, user_id: str) -> None:
            self.user_id = user_id

    budget = make_budget(daily_user_limit="1")
    await budget.record_spend(UserContext("alice"), 1.0, "proj", "gpt-4o")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability(UserContext("alice"), "proj", 0.5)
    assert refused.value.scope_id == "alice"


async def test_refusal_as_json_and_retry_after(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(daily_user_limit="1", enforce_balance=True, min_balance="-5")
    await budget.record_spend("alice", "1")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", None, "0.5")
    # Noon: twelve hours to the daily reset.
    assert refused.value.retry_after_seconds(clock()) == 12 * 3600
    body = refused.value.to_json(clock())
    assert body["limit"] == "1" and body["spent"] == "1" and body["requested"] == "0.5"
    assert body["resets_at"] == "2026-03-16T00:00:00+00:00"
    assert body["retry_after_seconds"] == 12 * 3600
    clock.advance(hours=12, seconds=-0.5)
    assert refused.value.retry_after_seconds(clock()) == 1

    await budget.set_limits("user", "alice", daily=None)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", None, "5")
    assert refused.value.window == "balance"
    assert refused.value.retry_after_seconds(clock()) == 60
    assert refused.value.to_json(clock())["resets_at"] is None


async def test_overrides_of_one_window_leave_the_other_at_its_default(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="3", monthly_user_limit="100")
    await budget.set_limits("user", "alice", monthly="4")
    await budget.record_spend("alice", "3")
    with pytest.raises(BudgetExceededError) as refused:  # the default daily cap
        await budget.check_availability("alice", None, "0.5")
    assert (refused.value.window, refused.value.limit) == ("daily", Decimal("3"))

    await budget.set_limits("user", "alice", daily="10")
    with pytest.raises(BudgetExceededError) as refused:  # the monthly override
        await budget.check_availability("alice", None, "1.5")
    assert (refused.value.window, refused.value.limit) == ("monthly", Decimal("4"))
    assert await budget.check_availability("alice", None, "1") is True
    usage = await budget.get_usage("alice")
    assert (usage["user"].daily.limit, usage["user"].monthly.limit) == (
        Decimal("10"),
        Decimal("4"),
    )


async def test_cleared_overrides_leave_no_key(make_budget: MakeBudget) -> None:
    budget = make_budget()
    key = budget.keys.limits("project", "proj")
    await budget.set_limits("project", "proj", daily="1", monthly=None)
    assert await budget.redis.get(key) == b"1000000|-1"
    await budget.clear_limits("project", "proj")
    assert await budget.redis.exists(key) == 0


@pytest.mark.parametrize("corrupt", [b"garbage", b"abc|", b"|1x"])
async def test_a_corrupt_override_fails_the_call_instead_of_being_ignored(
    make_budget: MakeBudget, corrupt: bytes
) -> None:
    budget = make_budget(daily_user_limit="10")  # admits 5 unless overridden
    await budget.redis.set(budget.keys.of("alice").limits("user", "alice"), corrupt)
    with pytest.raises(StorageError):
        await budget.check_availability("alice", None, "5")
    with pytest.raises(StorageError):
        await budget.reserve("alice", "5")
    assert await budget.redis.exists(budget.keys.of("alice").held("user", "alice")) == 0


async def test_managers_configured_apart_each_enforce_their_own(
    make_budget: MakeBudget,
) -> None:
    # The configuration is part of each manager's loaded scripts: two managers
    # of one store and prefix, configured apart, never run each other's.
    strict = make_budget(daily_user_limit="2", enforce_balance=True)
    lenient = make_budget(daily_user_limit="5", enforce_balance=False)
    await strict.open()
    await lenient.open()
    with pytest.raises(BudgetExceededError) as refused:
        await strict.check_availability("alice", None, "1")  # no balance
    assert refused.value.window == "balance"
    await strict.add_credits("alice", "10")
    await lenient.record_spend("alice", "2")
    with pytest.raises(BudgetExceededError) as refused:
        await strict.check_availability("alice", None, "0.5")
    assert (refused.value.window, refused.value.limit) == ("daily", Decimal(2))
    assert await lenient.check_availability("alice", None, "3")
    with pytest.raises(BudgetExceededError) as refused:
        await lenient.check_availability("alice", None, "3.5")
    assert (refused.value.window, refused.value.limit) == ("daily", Decimal(5))
    # Both charged the one balance: the lenient manager's fact took 2 off it.
    assert (await strict.get_usage("alice"))["user"].balance == Decimal(8)
