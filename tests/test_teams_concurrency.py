"""Teams under concurrency: 200 charges at once never overshoot any limit.

How: 200 concurrent tasks on one manager (one pool on real Redis, and
fakeredis) reserve 1 each on a team's pool where exactly one of three limits
binds: the member's daily cap, the pool's balance, the user's own daily cap.
Exactly that limit's worth is admitted while the other two still hold; the
pool's balance after 200 concurrent deducts is exact; 50 concurrent
replays of one key charge once.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from conftest import MakeBudget
from spendgate import BudgetExceededError, BudgetManager, Lease


async def _try(call: Any) -> Any:
    try:
        return await call
    except BudgetExceededError as exc:
        return exc


async def _reserve_200(budget: BudgetManager) -> tuple[list[Lease], set[str]]:
    results = await asyncio.gather(
        *(_try(budget.reserve("ada", 1, team_id="eng")) for _ in range(200))
    )
    granted = [r for r in results if isinstance(r, Lease)]
    scopes = {r.scope for r in results if isinstance(r, BudgetExceededError)}
    return granted, scopes


async def test_the_member_cap_binds(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit=50)
    await budget.create_team("eng", initial_balance=100)
    await budget.add_team_member("eng", "ada", daily_cap=10)
    granted, scopes = await _reserve_200(budget)
    assert len(granted) == 10 and scopes == {"team_member"}
    team = await budget.get_team("eng")
    assert (team.held, team.members["ada"].held, team.balance) == (10, 10, 100)
    assert (await budget.get_usage("ada"))["user"].held == 10


async def test_the_pool_binds(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit=50)
    await budget.create_team("eng", initial_balance=10)
    await budget.add_team_member("eng", "ada", daily_cap=30)
    granted, scopes = await _reserve_200(budget)
    assert len(granted) == 10 and scopes == {"team"}
    await asyncio.gather(*(budget.settle(lease, 1) for lease in granted))
    team = await budget.get_team("eng")
    assert (team.balance, team.held, team.members["ada"].spent_today) == (0, 0, 10)


async def test_the_users_own_cap_binds(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit=10)
    await budget.create_team("eng", initial_balance=100)
    await budget.add_team_member("eng", "ada", daily_cap=30)
    granted, scopes = await _reserve_200(budget)
    assert len(granted) == 10 and scopes == {"user"}
    assert (await budget.get_team("eng")).members["ada"].held == 10


async def test_the_pool_is_exact_after_200_concurrent_deducts(
    budget: BudgetManager,
) -> None:
    await budget.create_team("eng", initial_balance="150")
    users = [f"u{i}" for i in range(20)]
    for user in users:
        await budget.add_team_member("eng", user)
    results = await asyncio.gather(
        *(_try(budget.deduct(users[i % 20], "0.75", team_id="eng")) for i in range(200))
    )
    charged = [r for r in results if not isinstance(r, BudgetExceededError)]
    assert len(charged) == 200  # 200 x 0.75 = 150: the pool exactly
    team = await budget.get_team("eng")
    assert (team.balance, team.held) == (0, 0)
    assert sum(m.spent_today for m in team.members.values()) == Decimal(150)
    assert sorted(r.balance_after for r in charged)[0] == 0
    refused = await _try(budget.deduct("u0", "0.000001", team_id="eng"))
    assert isinstance(refused, BudgetExceededError) and refused.scope == "team"


async def test_concurrent_replays_of_one_key_charge_once(
    budget: BudgetManager,
) -> None:
    await budget.create_team("eng", initial_balance=100)
    await budget.add_team_member("eng", "ada")
    records = await asyncio.gather(
        *(
            budget.record_spend("ada", 2, team_id="eng", idempotency_key="once")
            for _ in range(50)
        )
    )
    assert len({r.entry_id for r in records}) == 1
    assert sum(not r.replayed for r in records) == 1
    team = await budget.get_team("eng")
    assert (team.balance, team.members["ada"].spent_today) == (98, 2)
