"""``async with budget.lease(...)``: reserve on entry, settle at the block's
actual cost on a normal exit, release on an error (the block's, or a cost
the block set that cannot be settled). Both backends.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest

from conftest import MakeBudget
from spendgate import BudgetExceededError, InvalidArgumentError


async def test_lease_context_settles_on_exit(make_budget: MakeBudget) -> None:
    budget = make_budget()
    async with budget.lease("alice", "2", project_id="p") as lease:
        assert (await budget.get_usage("alice"))["user"].held == Decimal("2")
        lease.actual_cost = "0.5"
        lease.model = "m"
    usage = await budget.get_usage("alice", "p")
    assert usage["user"].daily.spent == Decimal("0.5") and usage["user"].held == 0


async def test_lease_context_without_actual_cost_settles_the_estimate(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    async with budget.lease("alice", "2"):
        pass
    assert (await budget.get_usage("alice"))["user"].daily.spent == Decimal("2")


async def test_lease_context_releases_on_error(make_budget: MakeBudget) -> None:
    budget = make_budget()
    with pytest.raises(RuntimeError, match="llm failed"):
        async with budget.lease("alice", "2") as lease:
            lease.actual_cost = "1"
            raise RuntimeError("llm failed")
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == 0 and usage["user"].held == 0


async def test_lease_context_refusal_raises_before_the_body(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="1")
    ran = False
    with pytest.raises(BudgetExceededError):
        async with budget.lease("alice", "2"):
            ran = True
    assert not ran


@pytest.mark.parametrize("cost", ["abc", -1, math.nan, Decimal("Infinity"), [1]])
async def test_lease_context_with_a_cost_it_cannot_settle_releases_and_raises(
    make_budget: MakeBudget, cost: Any
) -> None:
    budget = make_budget()
    with pytest.raises(InvalidArgumentError):
        async with budget.lease("alice", "2") as lease:
            lease.actual_cost = cost
    usage = await budget.get_usage("alice")
    assert (usage["user"].daily.spent, usage["user"].held) == (0, 0)
    assert await budget.release(lease) is False  # (given back already)
