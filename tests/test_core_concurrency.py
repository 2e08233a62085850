"""Idempotency and concurrency against one limit.

Hundreds of concurrent asyncio tasks share one BudgetManager (one pool of
connections on real Redis): 200 concurrent reserves of 1 against a cap of 10
admit exactly 10 (also for 200 users under one project cap); 50 concurrent
replays of one idempotency key charge once; concurrent check-then-charge with
leases never overshoots. Both backends.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from conftest import MakeBudget
from spendgate import (
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    IdempotencyConflictError,
    Lease,
)


async def _try_reserve(budget, user: str, project: str | None) -> Lease | None:  # type: ignore[no-untyped-def]
    try:
        return await budget.reserve(user, 1, project_id=project)
    except BudgetExceededError:
        return None


async def test_200_concurrent_reserves_against_a_cap_of_10_admit_exactly_10(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="10")
    results = await asyncio.gather(
        *(_try_reserve(budget, "alice", None) for _ in range(200))
    )
    granted = [lease for lease in results if lease is not None]
    assert len(granted) == 10
    assert len({lease.id for lease in granted}) == 10
    usage = await budget.get_usage("alice")
    assert usage["user"].held == Decimal("10")


async def test_200_users_under_one_project_cap_admit_exactly_10(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_project_limit="10", daily_user_limit="5")
    results = await asyncio.gather(
        *(_try_reserve(budget, f"user-{i}", "shared") for i in range(200))
    )
    granted = [lease for lease in results if lease is not None]
    assert len(granted) == 10
    usage = await budget.get_usage("user-0", "shared")
    assert usage["project"].held == Decimal("10")
    assert usage["global"].held == Decimal("10")


async def test_concurrent_lease_cycles_never_overshoot(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="10")

    async def call() -> Decimal:
        try:
            async with budget.lease("alice", 1) as lease:
                await asyncio.sleep(0)
                lease.actual_cost = 1
            return Decimal(1)
        except BudgetExceededError:
            return Decimal(0)

    charged = await asyncio.gather(*(call() for _ in range(200)))
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == sum(charged)
    assert usage["user"].daily.spent <= Decimal("10")
    assert usage["user"].held == 0


async def test_sequential_replays_charge_once(make_budget: MakeBudget) -> None:
    budget = make_budget()
    first = await budget.record_spend(
        "alice", "0.5", "p", "gpt", idempotency_key="req-9"
    )
    for _ in range(5):
        again = await budget.record_spend(
            "alice", "0.5", "p", "gpt", idempotency_key="req-9"
        )
        assert again.replayed and again.entry_id == first.entry_id
        assert again.occurred_at == first.occurred_at
    usage = await budget.get_usage("alice", "p")
    assert usage["user"].daily.spent == Decimal("0.5")
    assert usage["global"].daily.spent == Decimal("0.5")
    assert await budget.redis.xlen(budget.keys.of("alice").ledger) == 1


async def test_50_concurrent_replays_charge_once(make_budget: MakeBudget) -> None:
    budget = make_budget()
    records = await asyncio.gather(
        *(
            budget.record_spend(
                "alice", "0.5", idempotency_key="same-key", metadata={"n": 1}
            )
            for _ in range(50)
        )
    )
    assert len({r.entry_id for r in records}) == 1
    assert sum(not r.replayed for r in records) == 1
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == Decimal("0.5")
    assert await budget.redis.xlen(budget.keys.of("alice").ledger) == 1


@pytest.mark.parametrize(
    "changed",
    [
        {"cost": "0.6"},
        {"user_id": "bob"},
        {"project_id": "other"},
        {"model": "other-model"},
        {"metadata": {"n": 2}},
    ],
)
async def test_replay_with_different_arguments_conflicts(
    make_budget: MakeBudget, changed: dict[str, object]
) -> None:
    budget = make_budget()
    args: dict[str, object] = {
        "user_id": "alice",
        "cost": "0.5",
        "project_id": "p",
        "model": "m",
        "metadata": {"n": 1},
    }
    await budget.record_spend(idempotency_key="k", **args)  # type: ignore[arg-type]
    args.update(changed)
    with pytest.raises(IdempotencyConflictError) as conflict:
        await budget.record_spend(idempotency_key="k", **args)  # type: ignore[arg-type]
    assert conflict.value.key == "k"
    usage = await budget.get_usage("alice", "p")
    assert usage["user"].daily.spent == Decimal("0.5")


async def test_same_key_across_operations_conflicts(make_budget: MakeBudget) -> None:
    budget = make_budget()
    await budget.record_spend("alice", "1", idempotency_key="shared")
    with pytest.raises(IdempotencyConflictError):
        await budget.add_credits("alice", "1", idempotency_key="shared")
    with pytest.raises(IdempotencyConflictError):
        await budget.reserve("alice", "1", idempotency_key="shared")


async def test_the_embedded_store_takes_a_burst_above_a_hundred_calls() -> None:
    """redis-py caps a pool at 100 connections by default: the embedded
    store's must not turn the 101st concurrent call into an outage."""
    async with BudgetManager(BudgetConfig(key_prefix=f"burst{id(object())}")) as budget:
        results = await asyncio.gather(
            *(budget.record_spend(f"u{i}", "0.01") for i in range(300)),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert (await budget.get_usage("u0"))["global"].daily.spent == Decimal("3")
