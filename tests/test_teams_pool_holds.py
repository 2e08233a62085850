"""A hold on a team's pool keeps the pool's balance, not the user's own.

How: on both backends, a user with a balance of their own holds on a team
pool (``reserve``, ``reserve_up_to``, ``extend``), then spends from their own
balance (``deduct``, which always enforces it, and ``reserve`` /
``record_spend`` under ``enforce_balance``): the pool hold must not use up
that balance, while it still counts against the user's own caps. Each way a
team hold ends (settle, release, expiry purged by another user's call, the
team's own purge) gives the balance rule back exactly what the hold took
from the user's held amount, and no more: the user's own holds still count.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import BudgetExceededError, BudgetManager, InsufficientCreditsError


async def _funded(make_budget: MakeBudget, **settings: object) -> BudgetManager:
    budget = make_budget(**settings)
    await budget.add_credits("ada", 10)
    await budget.create_team("eng", initial_balance=100)
    await budget.add_team_member("eng", "ada")
    return budget


async def _pool_held(budget: BudgetManager) -> bytes | None:
    return await budget.redis.get(f"{budget.keys.base}ph:u:ada")


@pytest.mark.parametrize(
    "windows",
    [{}, {"weekly_user_limit": 1000, "per_minute_user_limit": 1000}],
    ids=["day and month", "with week and minute"],
)
async def test_a_team_hold_leaves_the_users_own_balance_whole(
    make_budget: MakeBudget, windows: dict[str, object]
) -> None:
    budget = await _funded(make_budget, enforce_balance=True, **windows)
    lease = await budget.reserve("ada", 8, team_id="eng")
    balance = await budget.get_balance("ada")
    assert (balance.total, balance.available, balance.held) == (10, 10, 0)
    # deduct enforces the balance whatever the setting; reserve with it on
    charged = await budget.deduct("ada", 5)
    assert charged.balance_after == 5
    own = await budget.reserve("ada", 5)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.reserve("ada", Decimal("0.000001"))
    assert (refused.value.window, refused.value.held) == ("balance", 5)
    balance = await budget.get_balance("ada")
    assert (balance.total, balance.available, balance.held) == (5, 0, 5)
    await budget.release(own)
    await budget.settle(lease, 8)
    team = await budget.get_team("eng")
    assert (team.balance, team.held) == (92, 0)
    assert await _pool_held(budget) is None


async def test_without_enforce_balance_deduct_still_ignores_a_team_hold(
    budget: BudgetManager,
) -> None:
    await budget.add_credits("ada", 10)
    await budget.create_team("eng", initial_balance=100)
    await budget.add_team_member("eng", "ada")
    up_to = await budget.reserve_up_to("ada", 9, 1, team_id="eng")
    assert up_to.amount == 9
    assert (await budget.deduct("ada", 10)).balance_after == 0
    with pytest.raises(InsufficientCreditsError) as refused:
        await budget.deduct("ada", Decimal("0.000001"))
    # the refusal names the user's own holds: none
    assert refused.value.held == 0
    assert await budget.release(up_to) is True
    assert await _pool_held(budget) is None


async def test_a_team_hold_still_counts_against_the_users_own_caps(
    make_budget: MakeBudget,
) -> None:
    budget = await _funded(make_budget, enforce_balance=True, daily_user_limit=10)
    await budget.reserve("ada", 8, team_id="eng")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.deduct("ada", 5)
    assert (refused.value.window, refused.value.held) == ("daily", 8)
    assert (await budget.deduct("ada", 2)).balance_after == 8


async def test_extending_a_team_hold_keeps_it_off_the_users_balance(
    make_budget: MakeBudget,
) -> None:
    budget = await _funded(make_budget, enforce_balance=True)
    lease = await budget.reserve("ada", 4, team_id="eng")
    lease = await budget.extend(lease, 5)
    assert lease.amount == 9
    assert await _pool_held(budget) == b"9000000"
    assert (await budget.get_balance("ada")).available == 10
    assert (await budget.deduct("ada", 10)).balance_after == 0
    assert await budget.release(lease) is True
    assert await _pool_held(budget) is None


async def test_an_expired_team_hold_purged_by_another_call_gives_nothing_twice(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = await _funded(make_budget, enforce_balance=True)
    await budget.add_credits("bob", 1)
    await budget.reserve("ada", 8, ttl_seconds=60, team_id="eng")
    own = await budget.reserve("ada", 6, ttl_seconds=3600)
    clock.advance(120)
    # bob's call purges ada's expired pool hold, as any call purges
    await budget.check_availability("bob", estimated_cost=1)
    assert await _pool_held(budget) is None
    balance = await budget.get_balance("ada")
    assert (balance.available, balance.held) == (4, 6)
    # her own hold still counts: 4 left, not 10
    with pytest.raises(InsufficientCreditsError):
        await budget.deduct("ada", 5)
    assert (await budget.deduct("ada", 4)).balance_after == 6
    await budget.release(own)
    team = await budget.get_team("eng")
    assert (team.balance, team.held) == (100, 0)


async def test_settling_and_releasing_team_holds_end_their_pool_part(
    make_budget: MakeBudget,
) -> None:
    budget = await _funded(make_budget, enforce_balance=True)
    first = await budget.reserve("ada", 3, team_id="eng")
    second = await budget.reserve("ada", 4, team_id="eng")
    own = await budget.reserve("ada", 2)
    assert await _pool_held(budget) == b"7000000"
    await budget.settle(first, 5)
    assert await _pool_held(budget) == b"4000000"
    await budget.release(second)
    assert await _pool_held(budget) is None
    balance = await budget.get_balance("ada")
    assert (balance.total, balance.available, balance.held) == (10, 8, 2)
    await budget.settle(own, 2)
    assert (await budget.get_balance("ada")).available == 8
    assert (await budget.get_team("eng")).balance == 95


async def test_a_pool_hold_taken_before_the_key_was_kept_only_over_counts(
    make_budget: MakeBudget,
) -> None:
    """A team hold from before this fix is in the user's held amount but
    not in ph:u: (an upgrade with holds pending): it keeps counting against
    the balance (refuses, never overshoots) and its end never takes the key
    below zero."""
    budget = await _funded(make_budget, enforce_balance=True)
    old = await budget.reserve("ada", 6, team_id="eng")
    await budget.redis.delete(f"{budget.keys.base}ph:u:ada")
    new = await budget.reserve("ada", 3, team_id="eng")
    with pytest.raises(InsufficientCreditsError):
        await budget.deduct("ada", 5)
    await budget.release(old)
    assert await _pool_held(budget) is None
    # the newer hold now over-counts too: still refusing, never overshooting
    assert (await budget.get_balance("ada")).available == 7
    await budget.release(new)
    assert (await budget.get_balance("ada")).available == 10
    assert (await budget.deduct("ada", 10)).balance_after == 0
