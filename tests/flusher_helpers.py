"""What the flusher tests share (tests/test_flusher.py,
tests/test_flusher_crashes.py): the ``wide_budget`` fixture (a manager whose
Redis pool queues callers, so thousands of facts can be in flight), a mix of
facts of every kind made at once, the ledger's rows, the exactly-once check
(one row per record, no other row, exact sums per kind), the drained-stream
check, and a ``spendgate flush`` process on the real Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, MakeBudget
from spendgate import (
    BudgetConfig,
    BudgetManager,
    SpendRecord,
)
from spendgate.core.keys import Keys
from spendgate.ledger.flusher import DEFAULT_GROUP

redis_only = pytest.mark.parametrize("backend", ["redis"], indirect=True)


@pytest.fixture
async def wide_budget(key_prefix: str, ledger_dsn: str) -> AsyncIterator[MakeBudget]:
    """``wide_budget(**settings)``: a BudgetManager on the real Redis whose pool
    queues callers (up to 500 connections) instead of refusing the 101st, so
    thousands of facts can be in flight at once."""
    clients: list[aioredis.Redis] = []
    made: list[BudgetManager] = []

    def make(**settings: Any) -> BudgetManager:
        pool = aioredis.BlockingConnectionPool.from_url(
            REDIS_URL, max_connections=500, timeout=60
        )
        client = aioredis.Redis.from_pool(pool)
        clients.append(client)
        base: dict[str, Any] = {
            "key_prefix": key_prefix,
            "postgres_dsn": ledger_dsn,
            "daily_user_limit": None,
            "daily_project_limit": None,
            "daily_global_limit": None,
        }
        made.append(BudgetManager(BudgetConfig(**{**base, **settings}), redis=client))
        return made[-1]

    yield make
    for budget in made:
        await budget.aclose()
    for client in clients:
        await client.aclose()


async def make_facts(
    budget: BudgetManager, n: int, *, start: int = 0
) -> list[SpendRecord]:
    """``n`` facts at once, a mix of every kind; returns their records."""

    async def one(i: int) -> SpendRecord:
        amount = Decimal(i % 997) / 1000 + Decimal("0.000001")
        user = f"user-{i % 37}"
        if i % 4 == 0:
            lease = await budget.reserve(user, amount + 1, project_id=f"p{i % 5}")
            return await budget.settle(lease, amount, model="gpt-4o")
        if i % 4 == 1:
            return await budget.add_credits(user, amount, idempotency_key=f"c-{i}")
        return await budget.record_spend(
            user,
            amount,
            project_id=f"p{i % 5}" if i % 3 else None,
            model=["gpt-4o", "claude-3", None][i % 3],
            idempotency_key=f"s-{i}" if i % 2 else None,
            metadata={"input_tokens": i, "output_tokens": 2 * i, "n": i},
        )

    return list(await asyncio.gather(*(one(i) for i in range(start, start + n))))


async def ledger_rows(dsn: str) -> list[Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetch("SELECT entry_id, kind, amount FROM spendgate_ledger")
        )
    finally:
        await conn.close()


async def assert_exactly_once(dsn: str, records: list[SpendRecord]) -> None:
    """One row per record, no other row, and exact sums per kind."""
    rows = await ledger_rows(dsn)
    ids = [r["entry_id"] for r in rows]
    assert len(ids) == len(set(ids))
    expected_ids = {r.entry_id for r in records}
    assert len(expected_ids) == len(records)
    assert set(ids) == expected_ids
    sums: dict[str, Decimal] = {}
    for r in rows:
        sums[r["kind"]] = sums.get(r["kind"], Decimal(0)) + r["amount"]
    expected: dict[str, Decimal] = {}
    for rec in records:
        expected[rec.kind] = expected.get(rec.kind, Decimal(0)) + rec.amount
    assert sums == expected


async def assert_drained(redis: aioredis.Redis, prefix: str) -> None:
    stream = Keys(prefix).ledger
    assert await redis.xlen(stream) == 0
    assert (await redis.xpending(stream, DEFAULT_GROUP))["pending"] == 0


def ledger_config(prefix: str, dsn: str, **settings: Any) -> BudgetConfig:
    return BudgetConfig(
        redis_url=REDIS_URL, key_prefix=prefix, postgres_dsn=dsn, **settings
    )


async def _stream_empty(redis: aioredis.Redis, prefix: str) -> bool:
    return await redis.xlen(Keys(prefix).ledger) == 0


def _flush_process(prefix: str, dsn: str, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    env.update(
        SPENDGATE_REDIS_URL=REDIS_URL,
        SPENDGATE_KEY_PREFIX=prefix,
        SPENDGATE_POSTGRES_DSN=dsn,
        SPENDGATE_FLUSH_INTERVAL_SECONDS="0.02",
        SPENDGATE_FLUSH_BATCH_SIZE="25",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "spendgate.cli", "flush", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
