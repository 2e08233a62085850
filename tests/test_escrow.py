"""Escrow's root side on a sharded deployment (``cluster_buckets=8``): the
root lends a project's or the platform's cap in chunks
(``lua/escrow_lend.lua``) and takes back what a bucket gives up
(``lua/escrow_return.lua``), on the ``make_budget`` fixture's backends.
Checked:

- a loan is ``max(shortfall, chunk)``, at most what is not lent yet; with
  nothing left it lends 0 and changes no key;
- a loan id lent again answers the same loan and borrows nothing more;
- a return lowers what is lent once per return id, and lets the root lend
  it again;
- a bucket deposits a loan once per loan id and reclaims allowance -
  spent - held (a real hold) once per reclaim id;
- 200 concurrent loans of 0.07 against a cap of 10 lend exactly 142.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import FakeClock, MakeBudget
from spendgate import BudgetManager
from spendgate.core import escrow_keys
from spendgate.ops.escrow import Loan, deposit, give_back, lend, reclaim

DAY = "2026-12-05"
TTL_MS = 2 * 86_400_000


async def _lend(budget: BudgetManager, loan_id: str, **amounts: int) -> Loan:
    args: dict[str, Any] = {"cap": 100, "chunk": 30, "shortfall": 10, **amounts}
    return await lend(
        budget._store,
        budget.keys,
        "project",
        "p1",
        DAY,
        ttl_ms=TTL_MS,
        loan_id=loan_id,
        **args,
    )


def _taken(reclaim_id: str, budget: BudgetManager) -> dict[str, Any]:
    return {"reclaim_id": reclaim_id, "now_ms": budget._now_ms()}


async def _loans(budget: BudgetManager) -> dict[bytes, bytes]:
    key = escrow_keys.loans(budget.keys, "project", "p1", DAY)
    found: dict[bytes, bytes] = await budget.redis.hgetall(key)
    return found


async def test_loans_are_chunks_bounded_by_the_cap(make_budget: MakeBudget) -> None:
    budget = make_budget(cluster_buckets=8)
    assert await _lend(budget, "a", shortfall=10) == Loan(30, 30)
    assert await _lend(budget, "b", shortfall=50) == Loan(50, 80)
    assert await _lend(budget, "c", shortfall=5) == Loan(20, 100)
    before = await _loans(budget)
    assert await _lend(budget, "d", shortfall=1) == Loan(0, 100)
    assert await _loans(budget) == before
    assert before[b"lent"] == b"100"


async def test_a_loan_lent_again_borrows_nothing_more(make_budget: MakeBudget) -> None:
    budget = make_budget(cluster_buckets=8)
    assert await _lend(budget, "a") == Loan(30, 30)
    assert await _lend(budget, "a") == Loan(30, 30)
    assert (await _loans(budget))[b"lent"] == b"30"
    key = escrow_keys.loans(budget.keys, "project", "p1", DAY)
    assert 0 < await budget.redis.pttl(key) <= TTL_MS


async def test_a_return_counts_once_and_is_lent_again(make_budget: MakeBudget) -> None:
    budget = make_budget(cluster_buckets=8)
    await _lend(budget, "a", shortfall=100)
    back = {"amount": 40, "return_id": "r1"}
    assert (
        await give_back(budget._store, budget.keys, "project", "p1", DAY, **back) == 60
    )
    assert (
        await give_back(budget._store, budget.keys, "project", "p1", DAY, **back) == 60
    )
    assert await _lend(budget, "b", shortfall=1) == Loan(30, 90)
    assert await _lend(budget, "c", shortfall=1) == Loan(10, 100)


async def test_concurrent_loans_lend_exactly_what_the_cap_fits(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(cluster_buckets=8)
    loans = await asyncio.gather(
        *(
            _lend(budget, f"l{i}", cap=10_000_000, chunk=70_000, shortfall=70_000)
            for i in range(200)
        )
    )
    full = [loan for loan in loans if loan.amount == 70_000]
    assert len(full) == 142
    assert sum(loan.amount for loan in loans) == 10_000_000
    assert (await _loans(budget))[b"lent"] == b"10000000"


async def test_a_bucket_gives_back_what_it_did_not_use(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    """A bucket lent 30 that holds 10 of the project (a real reserve of a
    user in it) gives back 20, once per reclaim id; the root lends it again."""
    budget = make_budget(cluster_buckets=8)
    bucket = budget.keys.of("u1")
    await _lend(budget, "a", shortfall=30)
    store = budget._store
    for _ in range(2):
        assert (
            await deposit(
                store,
                bucket,
                "project",
                "p1",
                DAY,
                amount=30,
                loan_id="a",
                ttl_ms=TTL_MS,
            )
            == 30
        )
    await budget.reserve("u1", "0.00001", project_id="p1")
    spent = bucket.day(DAY, "project", "p1")
    for _ in range(2):
        taken = await reclaim(
            store, bucket, "project", "p1", DAY, spent_key=spent, **_taken("c1", budget)
        )
        assert taken == 20
    back = {"amount": taken, "return_id": "c1"}
    assert await give_back(store, budget.keys, "project", "p1", DAY, **back) == 10
    assert await _lend(budget, "b", shortfall=90) == Loan(90, 100)
    # (nothing unused is left: a second reclaim takes 0)
    assert (
        await reclaim(
            store, bucket, "project", "p1", DAY, spent_key=spent, **_taken("c2", budget)
        )
        == 0
    )
    # once the hold has expired, a reclaim purges it (no call of the bucket
    # has) and takes back what it held
    clock.advance(budget.config.lease_ttl_seconds)
    assert (
        await reclaim(
            store, bucket, "project", "p1", DAY, spent_key=spent, **_taken("c3", budget)
        )
        == 10
    )
    assert await budget.redis.get(bucket.held("project", "p1")) is None
