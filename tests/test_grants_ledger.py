"""Grants, expiries and refunds reach Postgres: every new kind moved by the
flusher exactly once, with its links (``grant_id``, ``link_id``), and the
ledger adds up to the balance Redis holds.

How: facts on the test's backend (real Redis and fakeredis) with the
injected clock, a ``Flusher`` run twice into a freshly migrated database
(``pg_fixtures``' ``ledger_dsn``), rows read back with asyncpg. (Whether
``spendgate reconcile`` agrees after refunds and expiries is the ledger
work's: it counts the new kinds.)
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import asyncpg
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import Flusher

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
