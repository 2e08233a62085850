"""A Redis that answers but cannot serve (out of memory, turned read-only)
is unavailable, as one that does not answer is: admission fails closed and
facts are spooled, then replayed once it serves again.

redis-py parses these replies into their own classes and strips the code
from the message, so the store must know them by class, not by text.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from redis_server import RedisServer
from spendgate import BudgetConfig, BudgetManager, BudgetUnavailableError


@pytest.fixture
def server(private_redis: RedisServer) -> RedisServer:
    return private_redis


def _config(server: RedisServer, spool: Path) -> BudgetConfig:
    return BudgetConfig(
        redis_url=server.url,
        key_prefix="serve",
        spool_path=spool,
        spool_replay_interval_seconds=0.05,
        breaker_failure_threshold=1,
        breaker_reset_seconds=0.05,
    )


async def _spent_today(budget: BudgetManager, user: str) -> Decimal | None:
    """The user's spend today, ``None`` while the store is still unavailable."""
    try:
        usage = await budget.get_usage(user)
    except BudgetUnavailableError:
        return None
    return usage["user"].daily.spent


@pytest.mark.parametrize(
    ("cannot_serve", "serve_again"),
    [
        (
            ("CONFIG", "SET", "maxmemory", "1"),
            ("CONFIG", "SET", "maxmemory", "0"),
        ),
        (
            ("REPLICAOF", "127.0.0.1", "1"),  # a master that is never there
            ("REPLICAOF", "NO", "ONE"),
        ),
    ],
    ids=["out-of-memory", "read-only"],
)
async def test_a_redis_that_cannot_serve_is_unavailable(
    server: RedisServer,
    tmp_path: Path,
    cannot_serve: tuple[Any, ...],
    serve_again: tuple[Any, ...],
) -> None:
    admin = aioredis.Redis.from_url(server.url)
    budget = BudgetManager(_config(server, tmp_path / "spool"))
    try:
        await budget.record_spend("ada", "1")  # scripts loaded, all well
        await admin.execute_command(*cannot_serve)

        with pytest.raises(BudgetUnavailableError):
            await budget.reserve("ada", "1")
        record = await budget.record_spend("ada", "2")
        assert record.spooled  # kept, not raised as a storage error

        await admin.execute_command(*serve_again)
        for _ in range(200):  # the replayer brings the spooled fact in
            if await _spent_today(budget, "ada") == Decimal(3):
                break
            await asyncio.sleep(0.05)
        assert await _spent_today(budget, "ada") == Decimal(3)
    finally:
        await budget.close()
        await admin.aclose()
