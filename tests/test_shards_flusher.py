"""The flusher, its backlog and reconcile on a sharded deployment.

Sharded (``cluster_buckets`` > 1), every fact is appended to its user's
bucket's ledger stream: the flusher reads every stream home (the root's
and each bucket's, ``Keys.stream_homes()``) as one consumer of each home's
group, on one client, and keeps its heartbeat in each home. The tests run
on both sharded backends of conftest.py: ``sharded`` (the real Redis, 8
buckets) and ``sharded-cluster`` (the session's 3-master cluster, 16
buckets, through a master that does not own the root's slot).
"""

from __future__ import annotations

import asyncio
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, MakeBudget
from flusher_helpers import assert_exactly_once
from pg_server import wait_for
from spendgate import (
    BudgetConfig,
    BudgetManager,
    ConfigurationError,
    Flusher,
    SpendRecord,
)
from spendgate.core.keys import Keys
from spendgate.ledger.flusher import DEFAULT_GROUP
from spendgate.ledger.reconcile import reconcile
from spendgate.server.metrics import ServerMetrics

pytest_plugins = ("pg_fixtures",)
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["sharded", "sharded-cluster"], indirect=True),
]

USERS = [f"u{i}" for i in range(50)]
DAY = date(2026, 3, 15)  # the FakeClock's day


async def _facts(budget: BudgetManager) -> list[SpendRecord]:
    """Three facts of each of 50 users (a spend under one of three projects,
    a credit, a settled lease), all at once."""

    async def of(i: int, user: str) -> list[SpendRecord]:
        spend = await budget.record_spend(
            user, Decimal(i + 1) / 100, project_id=f"p{i % 3}", model="gpt-4o"
        )
        credit = await budget.add_credits(user, Decimal(i) / 10 + 1)
        lease = await budget.reserve(user, 2, project_id=f"p{i % 3}")
        settled = await budget.settle(lease, Decimal(i + 1) / 1000)
        return [spend, credit, settled]

    made = await asyncio.gather(*(of(i, u) for i, u in enumerate(USERS)))
    return [record for records in made for record in records]


async def _lengths(budget: BudgetManager) -> list[int]:
    """Each stream home's ledger length: the root's first."""
    return [
        int(await budget.redis.xlen(home.ledger)) for home in budget.keys.stream_homes()
    ]


async def _pending(redis: aioredis.Redis, home: Keys, consumer: str) -> int:
    summary: dict[str, Any] = await redis.xpending(home.ledger, DEFAULT_GROUP)
    return sum(
        int(c["pending"])
        for c in summary.get("consumers") or []
        if c["name"] in (consumer, consumer.encode())
    )


async def test_one_flusher_moves_every_buckets_facts_exactly_once(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn, flush_batch_size=7)
    buckets = budget.config.cluster_buckets
    records = await _facts(budget)
    lengths = await _lengths(budget)
    assert lengths[0] == 0  # the root's: no fact names no bucket
    assert sum(lengths) == 150
    # 50 users spread over every bucket (each holds some of them)
    assert len(lengths) == buckets + 1 and all(lengths[1:])
    moved: list[int] = []
    flusher = Flusher(budget.config, redis=redis_client, progress=moved.append)
    assert len(flusher.readers) == buckets + 1
    assert flusher.reader.keys is flusher.keys  # the root's first
    try:
        assert await flusher.run_once() == 150
        assert await flusher.run_once() == 0
        assert await flusher.backlog() == (0, 0, 0.0)
    finally:
        await flusher.aclose()
    await assert_exactly_once(ledger_dsn, records)
    assert await _lengths(budget) == [0] * (buckets + 1)
    # progress counts the whole pass, across homes
    assert moved[-1] == 150 and moved == sorted(moved)
    assert (flusher.moved_total, flusher.inserted_total) == (150, 150)


async def test_the_backlog_sums_every_bucket(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn, flush_batch_size=4)
    await _facts(budget)
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        await flusher.connect()
        backlog = await flusher.backlog()
        assert (backlog.entries, backlog.pending) == (150, 0)
        assert 0.0 <= backlog.oldest_age_seconds < 60
        # A batch read (and not stored yet) in two buckets is pending there.
        for reader in flusher.readers[1:3]:
            assert len(await reader.read(">")) == 4
        backlog = await flusher.backlog()
        assert (backlog.entries, backlog.pending) == (150, 8)
        # The metrics gauge reads the same: every home's stream.
        metrics = ServerMetrics()
        text = (await metrics.render(budget)).decode()
        assert "spendgate_ledger_backlog_entries 150.0" in text
        assert await flusher.run_once() == 150
        assert await flusher.backlog() == (0, 0, 0.0)
        text = (await metrics.render(budget)).decode()
        assert "spendgate_ledger_backlog_entries 0.0" in text
    finally:
        await flusher.aclose()


async def test_a_flusher_refuses_keys_laid_out_for_another_count(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    # (a rebucketing to twice as many wrote the root's layout: spendgate.rebucket)
    budget = make_budget(postgres_dsn=ledger_dsn)
    more = 2 * budget.config.cluster_buckets
    await redis_client.set(Keys(budget.config.key_prefix).base + "layout", more)
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        with pytest.raises(ConfigurationError, match=f"laid out for {more} buckets"):
            await flusher.run_once()  # (it would read half of the buckets)
    finally:
        await flusher.aclose()


async def test_a_killed_flushers_batch_in_one_bucket_is_claimed_by_another(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn, flush_batch_size=3)
    records = await _facts(budget)
    home = budget.keys.of("u0")
    # A flusher that beats, reads a batch of u0's bucket, and dies holding it.
    victim = Flusher(
        budget.config, redis=redis_client, consumer="victim", heartbeat_seconds=0.3
    )
    await victim.connect()
    await victim.heartbeat.beat()
    (reader,) = [r for r in victim.readers if r.stream == home.ledger]
    held = await reader.read(">")
    assert len(held) == 3
    assert await _pending(redis_client, home, "victim") == 3
    for each in budget.keys.stream_homes():  # a heartbeat in every home
        assert await redis_client.sismember(each.flushers, "victim")
    await victim.aclose()
    await wait_for(lambda: _gone(redis_client, home.flusher("victim")), timeout=5)
    # Well within the 60 s claim-idle time: its heartbeat is gone.
    rescuer = Flusher(budget.config, redis=redis_client, consumer="rescuer")
    try:
        assert await rescuer.run_once() == 150
    finally:
        await rescuer.aclose()
    await assert_exactly_once(ledger_dsn, records)
    assert await _pending(redis_client, home, "victim") == 0
    for each in budget.keys.stream_homes():  # forgotten in every home
        assert not await redis_client.sismember(each.flushers, "victim")


async def _gone(redis: aioredis.Redis, key: str) -> bool:
    return not await redis.exists(key)


async def test_reconcile_agrees_with_postgres_after_a_flush(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    records = await _facts(budget)
    charged = sum((r.amount for r in records if r.kind != "grant"), Decimal(0))
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.run_once() == 150
    finally:
        await flusher.aclose()
    left = await budget.record_spend("u7", "0.25", project_id="p1")  # not flushed
    report = await reconcile(budget.config, DAY, redis=redis_client, dsn=ledger_dsn)
    assert report.ok, report.differences
    # 50 users, 3 projects (each counted in several buckets), the platform
    assert report.scopes_checked == 54
    assert report.redis_total == charged + left.amount
    assert report.postgres_total == charged
    assert (report.backlog_total, report.backlog_entries) == (Decimal("0.25"), 1)
    # A counter moved without its fact disagrees, in the bucket's user and
    # in the sum of the project's buckets.
    await redis_client.incrby(budget.keys.of("u7").day("20260315", "project", "p1"), 5)
    report = await reconcile(budget.config, DAY, redis=redis_client, dsn=ledger_dsn)
    assert [(d.scope, d.scope_id) for d in report.differences] == [("project", "p1")]
    assert report.differences[0].difference == Decimal("0.000005")


async def test_a_flusher_of_its_own_client_reconnects_every_home(
    make_budget: MakeBudget, backend: str, ledger_dsn: str
) -> None:
    """Closed and used again, a flusher that connects itself opens a new
    client: its siblings register their scripts and groups on it anew."""
    budget = make_budget(postgres_dsn=ledger_dsn)
    config = budget.config
    if backend == "sharded":
        config = BudgetConfig(**{**config.model_dump(), "redis_url": REDIS_URL})
    first = await budget.record_spend("u1", 1)
    flusher = Flusher(config)
    try:
        assert await flusher.run_once() == 1
        client = flusher.redis
        await flusher.aclose()
        second = await budget.record_spend("u2", 2)
        third = await budget.record_spend("u1", 3)
        assert await flusher.run_once() == 2
        assert flusher.redis is not client
        assert all(r.redis is flusher.redis for r in flusher.readers)
    finally:
        await flusher.aclose()
    await assert_exactly_once(ledger_dsn, [first, second, third])


async def test_a_bucket_keeps_its_dead_letters_and_survives_its_stream_deleted(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    home = budget.keys.of("u3")
    good = [await budget.record_spend(u, 1) for u in USERS[:10]]
    poison = {"k": "spend", "t": "1700000000000", "e": "bad-amount", "a": "abc"}
    await redis_client.xadd(home.ledger, {**poison, "u": "u3"})
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.run_once() == 11
        assert flusher.dead_lettered_total == 1
        dead = await redis_client.xrange(home.ledger_dead)
        assert [fields[b"e"] for _, fields in dead] == [b"bad-amount"]
        assert await redis_client.xlen(budget.keys.ledger_dead) == 0
        # An operator deletes one bucket's stream (and its group): the other
        # buckets' facts still move in the same pass.
        await redis_client.delete(home.ledger)
        others = [u for u in USERS if budget.keys.of(u).ledger != home.ledger]
        later = [await budget.record_spend(u, 2) for u in others[:10]]
        assert await flusher.run_once() == 10
        again = await budget.record_spend("u3", 3)
        assert await flusher.flush() == 1
    finally:
        await flusher.aclose()
    await assert_exactly_once(ledger_dsn, good + later + [again])
