"""``reserve_up_to``: hold as much as fits between a floor and a ceiling.

Both backends: the grant is the ceiling when it fits, else the tightest
room left under every scope and window (and the balance where enforced);
below the floor the call is refused and nothing changes; 200 concurrent
calls against one cap never hold more than the cap and use it exactly; a
replayed key returns the first grant.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from conftest import MakeBudget
from spendgate import (
    BudgetExceededError,
    IdempotencyConflictError,
    InvalidArgumentError,
)


async def test_the_grant_is_the_ceiling_or_the_tightest_room(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="10", daily_project_limit="7")
    assert (await budget.reserve_up_to("ada", "4", project_id="p")).amount == 4
    # the project's cap (7, 4 held) is the tightest: 3 left (the user's: 6)
    lease = await budget.reserve_up_to("ada", "100", project_id="p")
    assert lease.amount == Decimal(3)
    usage = await budget.get_usage("ada", "p")
    assert usage["project"].held == Decimal(7) and usage["user"].held == Decimal(7)
    # uncapped: the ceiling
    free = make_budget()
    assert (await free.reserve_up_to("bob", "123.45")).amount == Decimal("123.45")


async def test_below_the_floor_it_is_refused_and_changes_nothing(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="10")
    await budget.record_spend("ada", "9.5")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.reserve_up_to("ada", "5", min_amount="1")
    assert refused.value.window == "daily" and refused.value.requested == Decimal(1)
    assert (await budget.get_usage("ada"))["user"].held == 0
    granted = await budget.reserve_up_to("ada", "5", min_amount="0.5")
    assert granted.amount == Decimal("0.5")
    with pytest.raises(BudgetExceededError):  # nothing left at all
        await budget.reserve_up_to("ada", "5")


async def test_the_balance_bounds_the_grant_where_enforced(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(enforce_balance=True)
    await budget.add_credits("ada", "2.5")
    assert (await budget.reserve_up_to("ada", "10")).amount == Decimal("2.5")


async def test_concurrent_grants_use_the_cap_exactly(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="10")
    results = await asyncio.gather(
        *(budget.reserve_up_to("ada", "0.3") for _ in range(200)),
        return_exceptions=True,
    )
    granted = [r.amount for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(granted) + len(refused) == 200
    assert sum(granted) == Decimal(10)  # exactly the cap, never above
    assert sorted(set(granted)) == [Decimal("0.1"), Decimal("0.3")]
    assert (await budget.get_usage("ada"))["user"].held == Decimal(10)


async def test_a_replayed_key_returns_the_first_grant(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="10")
    first = await budget.reserve_up_to("ada", "6", idempotency_key="k")
    again = await budget.reserve_up_to("ada", "6", idempotency_key="k")
    assert again.replayed and (again.id, again.amount) == (first.id, Decimal(6))
    with pytest.raises(IdempotencyConflictError):
        await budget.reserve_up_to("ada", "7", idempotency_key="k")
    assert (await budget.get_usage("ada"))["user"].held == Decimal(6)
    record = await budget.settle(first, "2")
    assert record.amount == Decimal(2) and record.estimate == Decimal(6)


async def test_a_floor_above_the_ceiling_is_refused(make_budget: MakeBudget) -> None:
    budget = make_budget()
    with pytest.raises(InvalidArgumentError):
        await budget.reserve_up_to("ada", "1", min_amount="2")


async def test_over_http(make_budget: MakeBudget) -> None:
    import httpx

    from spendgate.server import create_app

    budget = make_budget(daily_user_limit="10")
    app = create_app(budget, api_keys=["k"])
    auth = {"Authorization": "Bearer k"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        granted = await client.post(
            "/v1/reserve_up_to",
            json={"user_id": "ada", "max_amount": "25", "min_amount": "1"},
            headers=auth,
        )
        assert granted.status_code == 200, granted.text
        assert granted.json()["amount"] == "10"
        refused = await client.post(
            "/v1/reserve_up_to",
            json={"user_id": "ada", "max_amount": "25"},
            headers=auth,
        )
        assert refused.status_code == 429 and refused.json()["window"] == "daily"
        bad = await client.post(
            "/v1/reserve_up_to",
            json={"user_id": "ada", "max_amount": "1", "min_amount": "2"},
            headers=auth,
        )
        assert bad.status_code == 422
