"""The speed-ups of the hot path keep its behaviour: automatic pipelining and
hiredis packing.

A manager that builds its own client (``redis_url``) sends concurrent calls
together down one connection (``spendgate.core.pipeline``) and packs commands
with hiredis. Checked against the real Redis, with hundreds of concurrent
tasks: leases still never overshoot, every fact is counted once, replies
reach the caller that sent the command (in order), an error reply fails
only its own call, a flushed script cache is survived, a dead server fails
every queued call instead of hanging it, and a cancelled caller does not
disturb the others. The packer is compared byte for byte with redis-py's.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError

from conftest import REDIS_URL, real_redis_available, service_missing
from spendgate import BudgetConfig, BudgetExceededError, BudgetManager
from spendgate.core.connection import _pack_with_hiredis
from spendgate.core.keys import Keys
from spendgate.core.pipeline import AutoPipeline

pytestmark = pytest.mark.redis


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    name = f"tp{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=Keys(name).pattern(), count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _config(prefix: str, **settings: object) -> BudgetConfig:
    base: dict[str, object] = {
        "redis_url": REDIS_URL,
        "key_prefix": prefix,
        "daily_user_limit": None,
        "daily_project_limit": None,
        "daily_global_limit": None,
    }
    base.update(settings)
    return BudgetConfig(**base)  # type: ignore[arg-type]


async def test_leases_never_overshoot_when_pipelined(prefix: str) -> None:
    async with BudgetManager(_config(prefix, daily_user_limit=10)) as budget:
        assert (
            budget._store.scripts is not None
            and budget._store.scripts._pipeline is not None
        )

        async def one() -> bool:
            try:
                lease = await budget.reserve("alice", 1, project_id="p")
            except BudgetExceededError:
                return False
            await budget.settle(lease, 1)
            return True

        admitted = await asyncio.gather(*(one() for _ in range(300)))
        assert sum(admitted) == 10
        usage = await budget.get_usage("alice", "p")
        assert usage["user"].daily.spent == 10
        assert usage["user"].daily.held == 0
        assert usage["project"].daily.spent == 10


async def test_every_concurrent_fact_is_counted_once(prefix: str) -> None:
    async with BudgetManager(_config(prefix)) as budget:
        records = await asyncio.gather(
            *(budget.record_spend(f"u{i % 7}", "0.001", "p") for i in range(400))
        )
        assert len({r.entry_id for r in records}) == 400
        usage = await budget.get_usage("u0", "p")
        assert usage["project"].daily.spent == Decimal("0.4")
        assert usage["global"].monthly.spent == Decimal("0.4")
        assert await budget.redis.xlen(budget.keys.ledger) == 400


async def test_script_cache_flush_survived_under_concurrency(prefix: str) -> None:
    async with BudgetManager(_config(prefix, daily_user_limit=5)) as budget:
        await budget.check_availability("alice")
        await budget.redis.script_flush()
        results = await asyncio.gather(
            *(budget.check_availability("alice", None, "1") for _ in range(100))
        )
        assert all(results)
        await budget.redis.script_flush()
        await asyncio.gather(*(budget.record_spend("alice", "1") for _ in range(3)))
        with pytest.raises(BudgetExceededError):
            await budget.check_availability("alice", None, "3")


async def test_replies_reach_their_callers_and_errors_stay_theirs() -> None:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    client = aioredis.Redis.from_url(REDIS_URL)
    pipeline = AutoPipeline(client, max_batch=64)
    try:
        calls = []
        for i in range(300):
            if i % 50 == 7:
                calls.append(pipeline.execute("EVALSHA", "0" * 40, 0))
            else:
                calls.append(pipeline.execute("ECHO", f"m{i}"))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 50 == 7:
                assert isinstance(result, NoScriptError)
            else:
                assert result == f"m{i}".encode()
        # Wrong arity is an error reply too: it fails its call only.
        bad, good = await asyncio.gather(
            pipeline.execute("GET"),
            pipeline.execute("ECHO", "x"),
            return_exceptions=True,
        )
        assert isinstance(bad, ResponseError) and good == b"x"
    finally:
        await pipeline.aclose()
        await client.aclose()


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    client = aioredis.Redis.from_url(REDIS_URL)
    pipeline = AutoPipeline(client)
    try:
        tasks = [
            asyncio.ensure_future(pipeline.execute("ECHO", f"c{i}")) for i in range(50)
        ]
        await asyncio.sleep(0)
        tasks[10].cancel()
        tasks[20].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i in (10, 20):
                assert isinstance(result, asyncio.CancelledError)
            else:
                assert result == f"c{i}".encode()
        assert await pipeline.execute("ECHO", "after") == b"after"
    finally:
        await pipeline.aclose()
        await client.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_dead_server_fails_every_queued_call() -> None:
    url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=0.5
    )
    pipeline = AutoPipeline(client)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(pipeline.execute("PING") for _ in range(40)), return_exceptions=True
            ),
            10,
        )
        assert all(isinstance(r, RedisConnectionError) for r in results)
    finally:
        await pipeline.aclose()
        await client.aclose()
    config = BudgetConfig(redis_url=url, key_prefix="dead", daily_user_limit=1)
    async with BudgetManager(config) as budget:
        from spendgate import BudgetUnavailableError

        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(budget.check_availability("a") for _ in range(20)),
                return_exceptions=True,
            ),
            10,
        )
        assert all(isinstance(o, BudgetUnavailableError) for o in outcomes)


@pytest.mark.parametrize(
    "command",
    [
        ("PING",),
        ("SCRIPT LOAD", "return 1"),
        ("EVALSHA", "a" * 40, 1, "k:{sg}:x", 12, -5, "ü", b"\x00\xff", 0),
        ("SET", "k", bytearray(b"ab"), "PX", 1000),
        ("SET", b"k", memoryview(b"mv")),
        ("MEMORY USAGE", "k", "SAMPLES", 0),
        (b"CLIENT SETNAME", "x" * 70_000),
    ],
)
def test_hiredis_packing_matches_redis_py(command: tuple[object, ...]) -> None:
    reference = b"".join(bytes(c) for c in Connection().pack_command(*command))
    assert b"".join(_pack_with_hiredis(None, *command)) == reference


def test_hiredis_packing_refuses_what_redis_py_refuses() -> None:
    with pytest.raises(DataError):
        _pack_with_hiredis(None, "SET", "k", None)
