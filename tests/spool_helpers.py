"""What the spool tests share (tests/test_spool.py,
tests/test_spool_format.py, tests/test_spool_segments.py, and the tests of
other features that spool: test_adjust, test_grants_spool, test_teams_ledger,
test_teams_refunds, test_cap_actions_spool): a valid ``record`` fact to
append, the ``flaky`` fixture (a client of the backend, real Redis or
fakeredis, whose script calls can be switched to fail: ``down`` refuses every
call before it reaches Redis, ``lost_reply`` lets the call run and then loses
its reply), a manager on it with a spool of the test's own, a wait for the
spool to drain, and the length of the ledger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from conftest import REDIS_URL, FakeClock, real_redis_available, service_missing
from spendgate import BudgetConfig, BudgetManager
from spendgate.core.operations import OPERATIONS
from spendgate.durability.spool import SpooledFact


def _record_fact(i: int = 0, **args: str | int) -> SpooledFact:
    """A valid ``record`` fact, numbered ``i`` (in its entry id and amount)."""
    named: dict[str, str | int] = {name: "" for name in OPERATIONS["record"].args}
    named.update(
        now_ms=1_773_576_000_000 + i,
        day="20260315",
        day_ttl_ms=216_000_000,
        month="202603",
        month_ttl_ms=1_598_400_000,
        amount=1000 + i,
        entry=f"entry-{i}",
        user="u",
    )
    named.update(args)
    return SpooledFact("record", named)


class _Switch:
    """How the next script calls behave: ``ok``, ``down`` or ``lost_reply``."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0


async def _maybe_fail(switch: _Switch, run: Callable[[], Any], command: object) -> Any:
    if command not in ("EVALSHA", b"EVALSHA", "EVAL", b"EVAL"):
        return await run()
    switch.calls += 1
    if switch.mode == "down":
        raise redis_errors.ConnectionError("Connection refused (test switch)")
    reply = await run()
    if switch.mode == "lost_reply":
        raise redis_errors.ConnectionError("Connection reset by peer (test switch)")
    return reply


class FlakyRedis(aioredis.Redis):
    switch: _Switch

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _maybe_fail(
            self.switch,
            lambda: super(FlakyRedis, self).execute_command(*args, **options),
            args[0] if args else None,
        )


class FlakyFake(fakeredis.FakeAsyncRedis):  # type: ignore[misc]
    switch: _Switch

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _maybe_fail(
            self.switch,
            lambda: super(FlakyFake, self).execute_command(*args, **options),
            args[0] if args else None,
        )


@pytest.fixture
async def flaky(backend: str) -> AsyncIterator[tuple[aioredis.Redis, _Switch, str]]:
    """A switchable client of the backend, a key prefix, cleaned afterwards."""
    switch = _Switch()
    client: aioredis.Redis
    if backend == "redis":
        reason = real_redis_available()
        if reason:
            service_missing("Redis", reason)
        client = FlakyRedis.from_url(REDIS_URL, socket_timeout=5)
    else:
        client = FlakyFake(server=fakeredis.FakeServer())
    client.switch = switch  # type: ignore[attr-defined]
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield client, switch, prefix
    switch.mode = "ok"
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=5000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _manager(
    flaky: tuple[aioredis.Redis, _Switch, str], spool: Path, **settings: Any
) -> BudgetManager:
    client, _, prefix = flaky
    base: dict[str, Any] = {
        "key_prefix": prefix,
        "daily_user_limit": None,
        "daily_project_limit": None,
        "daily_global_limit": None,
        "spool_path": spool,
        "breaker_failure_threshold": 3,
        "breaker_reset_seconds": 0.02,
        "spool_replay_interval_seconds": 0.02,
    }
    base.update(settings)
    return BudgetManager(BudgetConfig(**base), clock=FakeClock(), redis=client)


async def _drained(budget: BudgetManager, seconds: float = 20) -> None:
    spool = budget.spool
    assert spool is not None
    for _ in range(int(seconds / 0.02)):
        if spool.depth == 0 and spool.own_depth == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the spool did not drain: {spool.stats()}")


async def _ledger_len(budget: BudgetManager) -> int:
    return int(await budget.redis.xlen(budget.keys.ledger))
