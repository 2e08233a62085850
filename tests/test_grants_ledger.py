"""Grants, expiries and refunds reach Postgres: every new kind moved by the
flusher exactly once, with its links (``grant_id``, ``link_id``), and the
ledger adds up to the balance Redis holds; ``reconcile`` agrees after real
refunds (one of a charge flushed the day before) and expiries.

How: facts on the test's backend (real Redis and fakeredis) with the
injected clock, a ``Flusher`` run into a freshly migrated database
(``pg_fixtures``' ``ledger_dsn``), rows read back with asyncpg, and
``reconcile`` run on both days, before and after the last flush.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import asyncpg
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import Flusher
from spendgate.ledger.reconcile import reconcile

pytest_plugins = ("pg_fixtures",)


async def test_grants_expiries_and_refunds_arrive_once_and_add_up(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    ledger_dsn: str,
    clock: FakeClock,
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    promo = await budget.add_credits(
        "ada", 3, kind="promo", expires_at=clock.now + timedelta(hours=1)
    )
    paid = await budget.add_credits("ada", 10, priority=1)
    spent = await budget.record_spend("ada", 4, project_id="p")  # promo 3, paid 1
    refund = await budget.refund(spent.entry_id, "1.5", reason="retry")
    clock.advance(hours=2)
    swept = await budget.sweep_expired_credits()  # the promo's 0.5 given back
    assert (swept.count, swept.amount) == (1, Decimal("0.5"))
    again = await budget.refund(spent.entry_id)  # the promo's last 2.5: forfeited
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.run_once() == 7
        assert await flusher.run_once() == 0
    finally:
        await flusher.aclose()
    conn = await asyncpg.connect(ledger_dsn)
    try:
        rows = await conn.fetch(
            "SELECT entry_id, kind, amount, grant_id, link_id FROM spendgate_ledger"
        )
    finally:
        await conn.close()
    by_kind: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(row)
    assert {k: len(v) for k, v in by_kind.items()} == {
        "grant": 2,
        "spend": 1,
        "refund": 2,
        "expire": 2,
    }
    assert {r["grant_id"] for r in by_kind["grant"]} == {
        promo.entry_id,
        paid.entry_id,
    }
    assert {r["link_id"] for r in by_kind["refund"]} == {spent.entry_id}
    assert {r["grant_id"] for r in by_kind["expire"]} == {promo.entry_id}
    forfeit = next(r for r in by_kind["expire"] if r["link_id"] is not None)
    assert (forfeit["link_id"], forfeit["amount"]) == (again.entry_id, Decimal("2.5"))
    assert refund.entry_id in {r["entry_id"] for r in by_kind["refund"]}

    def total(kind: str) -> Decimal:
        return sum((r["amount"] for r in by_kind.get(kind, [])), Decimal(0))

    # grants - charges + refunds - expiries = the balance Redis holds
    ledger = total("grant") - total("spend") + total("refund") - total("expire")
    assert ledger == (await budget.get_balance("ada")).total == Decimal(10)


async def test_reconcile_agrees_after_real_refunds_and_expiries(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    ledger_dsn: str,
    clock: FakeClock,
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    day14, day15 = clock.now - timedelta(days=1), clock.now
    clock.set(day14)
    await budget.add_credits("ada", 5, kind="promo", expires_at=day15)
    first = await budget.record_spend("ada", 3, "p1", "gpt")
    second = await budget.record_spend("bob", 2, "p1")
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        await flusher.run_once()  # the 14th's charges in Postgres
        clock.set(day15)
        await budget.refund(first.entry_id, 1)  # of the 14th, given on the 15th
        await budget.record_spend("ada", 4, "p1")  # expires the promo's 3 first
        await budget.refund(second.entry_id)
        assert (await budget.sweep_expired_credits()).count == 0  # done already
        for flushed in (False, True):  # from the backlog, then from Postgres
            if flushed:
                await flusher.run_once()
            for day in (day14.date(), day15.date()):
                report = await reconcile(budget.config, day, redis=redis_client)
                assert report.ok, (flushed, day, report.differences)
    finally:
        await flusher.aclose()
    usage = await budget.get_usage("ada", "p1")
    assert (usage["user"].daily.spent, usage["project"].daily.spent) == (4, 4)
