"""The flusher moves every fact from the Redis stream to Postgres exactly once.

How: facts go through ``BudgetManager`` (``record_spend``, ``reserve`` +
``settle``, ``add_credits``) on the real Redis (the embedded store for the
basic path too), the flusher moves them into a fresh database
(``pg_fixtures``), and the tests compare the rows with the records the
manager returned: same entry ids, one row each, exact sums per kind, and an
empty stream with nothing pending afterwards. The faults are real: a
``spendgate flush`` process SIGKILLed again and again while facts arrive, a
private PostgreSQL server stopped (crash-like) in the middle of flushing and
started again, two flushers at once, a consumer that read entries and died,
Postgres unreachable, and entries Postgres cannot store.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, FakeClock, MakeBudget
from pg_server import PrivatePostgres, wait_for
from redis_server import free_port
from spendgate import (
    BudgetConfig,
    BudgetManager,
    Flusher,
    LedgerUnavailableError,
    SpendRecord,
)
from spendgate.core.keys import Keys
from spendgate.ledger.flusher import DEFAULT_GROUP, entry_to_row, raw_row
from spendgate.ledger.migrations import migrate_dsn

# ledger_dsn, pg_dsn, private_postgres
pytest_plugins = ("pg_fixtures",)

redis_only = pytest.mark.parametrize("backend", ["redis"], indirect=True)
pytestmark = pytest.mark.postgres


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


# -- the basic path -------------------------------------------------------------


async def test_facts_arrive_once_with_every_field(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
    clock: FakeClock,
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    spend = await budget.record_spend(
        "alice",
        "0.1234561",  # rounds up to 0.123457
        project_id="proj",
        model="gpt-4o",
        idempotency_key="k1",
        metadata={"prompt_tokens": 11, "completion_tokens": 7, "note": "a\x00b"},
    )
    lease = await budget.reserve("bob", 2, ttl_seconds=10)
    clock.advance(11)  # settles after expiry: late
    settle = await budget.settle(lease, "2.5", model="claude")
    credit = await budget.add_credits("carol", "3.0000009")  # rounds down
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.run_once() == 3
        assert await flusher.run_once() == 0
    finally:
        await flusher.aclose()

    conn = await asyncpg.connect(ledger_dsn)
    try:
        rows = {
            r["entry_id"]: r for r in await conn.fetch("SELECT * FROM spendgate_ledger")
        }
    finally:
        await conn.close()
    assert set(rows) == {spend.entry_id, settle.entry_id, credit.entry_id}
    s = rows[spend.entry_id]
    assert (s["kind"], s["user_id"], s["project_id"], s["model"]) == (
        "spend",
        "alice",
        "proj",
        "gpt-4o",
    )
    assert s["amount"] == Decimal("0.123457")
    assert s["occurred_at"] == spend.occurred_at
    assert s["idempotency_key"] == "k1"
    assert (s["input_tokens"], s["output_tokens"]) == (11, 7)
    assert json.loads(s["metadata"])["note"] == "a\ufffdb"
    t = rows[settle.entry_id]
    assert (t["kind"], t["user_id"], t["model"], t["amount"]) == (
        "settle",
        "bob",
        "claude",
        Decimal("2.5"),
    )
    assert (t["lease_id"], t["estimate"], t["late"]) == (lease.id, Decimal(2), True)
    assert t["project_id"] is None and t["metadata"] is None
    c = rows[credit.entry_id]
    assert (c["kind"], c["user_id"], c["amount"]) == (
        "grant",
        "carol",
        Decimal("3.000000"),
    )
    await assert_drained(redis_client, key_prefix)


@redis_only
async def test_2000_concurrent_facts_arrive_exactly_once(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(postgres_dsn=ledger_dsn, flush_batch_size=300)
    flusher = Flusher(budget.config, redis=redis_client)
    # The flusher runs while the facts arrive, so batches interleave with writes.
    task = asyncio.create_task(flusher.run())
    records = await make_facts(budget, 2000)
    # Replays of keyed facts change nothing and add no ledger entry.
    replays = await asyncio.gather(
        *(
            budget.record_spend(
                f"user-{i % 37}",
                Decimal(i % 997) / 1000 + Decimal("0.000001"),
                project_id=f"p{i % 5}" if i % 3 else None,
                model=["gpt-4o", "claude-3", None][i % 3],
                idempotency_key=f"s-{i}",
                metadata={"input_tokens": i, "output_tokens": 2 * i, "n": i},
            )
            for i in range(3, 400, 4)
        )
    )
    assert all(r.replayed for r in replays)
    await wait_for(lambda: _stream_empty(redis_client, key_prefix))
    flusher.stop()
    await task
    await assert_exactly_once(ledger_dsn, records)
    assert Counter(r.kind for r in records) == {
        "spend": 1000,
        "settle": 500,
        "grant": 500,
    }
    await assert_drained(redis_client, key_prefix)
    assert flusher.moved_total == flusher.inserted_total == 2000


async def _stream_empty(redis: aioredis.Redis, prefix: str) -> bool:
    return await redis.xlen(Keys(prefix).ledger) == 0


# -- faults ---------------------------------------------------------------------


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


@redis_only
@pytest.mark.slow
async def test_flusher_process_sigkilled_repeatedly_leaves_one_row_per_fact(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(postgres_dsn=ledger_dsn)
    rng = random.Random(7)
    records: list[SpendRecord] = []
    producing = True

    async def produce() -> None:
        i = 0
        while producing or i < 2000:
            records.extend(await make_facts(budget, 40, start=i))
            i += 40
            await asyncio.sleep(0.01)

    producer = asyncio.create_task(produce())
    kills = 0
    pending_after_kill = 0
    for round_ in range(8):
        # Half the restarts reuse the consumer name (it resumes its own
        # pending entries), half come back as a new consumer (the dead one's
        # entries are claimed after --claim-idle).
        name = "flusher-a" if round_ % 2 else f"flusher-{round_}"
        proc = _flush_process(
            key_prefix, ledger_dsn, "--consumer", name, "--claim-idle", "0.3"
        )
        # Killed a random while after it started flushing (start-up time
        # varies with the machine's load).
        assert proc.stderr is not None
        line = await asyncio.to_thread(proc.stderr.readline)
        assert b"flushing as consumer" in line, line
        await asyncio.sleep(rng.uniform(0.2, 0.9))
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.communicate, None, 60)
        assert proc.returncode == -signal.SIGKILL
        kills += 1
        summary = await redis_client.xpending(Keys(key_prefix).ledger, DEFAULT_GROUP)
        pending_after_kill = max(pending_after_kill, summary["pending"])
    producing = False
    await producer
    assert kills == 8
    assert len(await ledger_rows(ledger_dsn)) > 0  # the killed processes did move facts

    # Restarted once more: it claims every dead consumer's entries and drains.
    await asyncio.sleep(0.4)
    proc = _flush_process(key_prefix, ledger_dsn, "--once", "--claim-idle", "0.3")
    out, err = await asyncio.to_thread(proc.communicate, None, 60)
    assert proc.returncode == 0, err.decode()
    assert b"moved" in out
    await assert_exactly_once(ledger_dsn, records)
    await assert_drained(redis_client, key_prefix)


@redis_only
@pytest.mark.slow
async def test_postgres_stopped_mid_flush_and_restarted_loses_nothing(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    private_postgres: PrivatePostgres,
) -> None:
    dsn = private_postgres.dsn
    await migrate_dsn(dsn)
    budget = wide_budget(
        postgres_dsn=dsn, flush_batch_size=50, flush_interval_seconds=0.02
    )
    flusher = Flusher(budget.config, redis=redis_client, max_backoff_seconds=0.3)
    task = asyncio.create_task(flusher.run())
    records: list[SpendRecord] = []
    stop_producing = asyncio.Event()

    async def produce() -> None:
        i = 0
        while not stop_producing.is_set():
            records.extend(await make_facts(budget, 20, start=i))
            i += 20
            await asyncio.sleep(0.005)

    producer = asyncio.create_task(produce())
    stream = Keys(key_prefix).ledger
    await wait_for(lambda: flusher.inserted_total >= 200)
    # A crash-like stop while the flusher is busy: no checkpoint, sessions cut.
    await asyncio.to_thread(private_postgres.stop, "immediate")
    produced_at_stop = len(records)
    await wait_for(lambda: flusher.consecutive_failures >= 3)
    await wait_for(lambda: len(records) >= produced_at_stop + 400)
    stop_producing.set()
    await producer

    # Nothing was acknowledged or trimmed while Postgres was down.
    backlog = await flusher.backlog()
    assert backlog.entries >= len(records) - produced_at_stop
    assert backlog.oldest_age_seconds >= 0
    assert flusher.last_backlog is not None and flusher.last_backlog.entries > 0
    assert flusher.last_error is not None
    assert await redis_client.xlen(stream) == backlog.entries

    await asyncio.to_thread(private_postgres.start)
    await wait_for(lambda: _stream_empty(redis_client, key_prefix))
    flusher.stop()
    await task
    assert flusher.consecutive_failures == 0 and flusher.last_error is None
    await assert_exactly_once(dsn, records)
    await assert_drained(redis_client, key_prefix)


@redis_only
async def test_two_flushers_at_once_produce_no_duplicates(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(
        postgres_dsn=ledger_dsn, flush_batch_size=20, flush_interval_seconds=0.01
    )
    a = Flusher(budget.config, redis=redis_client, consumer="a")
    b = Flusher(budget.config, redis=redis_client, consumer="b")
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    records: list[SpendRecord] = []
    for i in range(0, 1000, 100):
        records.extend(await make_facts(budget, 100, start=i))
        await asyncio.sleep(0.01)
    await wait_for(lambda: _stream_empty(redis_client, key_prefix))
    a.stop()
    b.stop()
    await asyncio.gather(*tasks)
    await assert_exactly_once(ledger_dsn, records)
    # Each entry was delivered to exactly one of them.
    assert a.moved_total + b.moved_total == 1000
    assert a.inserted_total + b.inserted_total == 1000
    await assert_drained(redis_client, key_prefix)


@redis_only
async def test_a_dead_consumers_pending_entries_are_reclaimed(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(postgres_dsn=ledger_dsn)
    stream = Keys(key_prefix).ledger
    first = await make_facts(budget, 30)
    flusher = Flusher(budget.config, redis=redis_client, claim_idle_seconds=0.5)
    await flusher._ensure_group()
    # A consumer reads everything there is, then dies without acknowledging.
    taken = await redis_client.xreadgroup(
        DEFAULT_GROUP, "ghost", {stream: ">"}, count=100
    )
    assert len(taken[0][1]) == 30
    later = await make_facts(budget, 10, start=30)
    try:
        # Not idle long enough yet: only the later entries move.
        assert await flusher.run_once() == 10
        assert len(await ledger_rows(ledger_dsn)) == 10
        await asyncio.sleep(0.6)
        assert await flusher.run_once() == 30
    finally:
        await flusher.aclose()
    await assert_exactly_once(ledger_dsn, first + later)
    await assert_drained(redis_client, key_prefix)
    consumers = {
        c["name"] for c in await redis_client.xinfo_consumers(stream, DEFAULT_GROUP)
    }
    assert b"ghost" not in consumers


def _pending_on(summary: dict[str, Any], consumer: str) -> int:
    return sum(
        int(c["pending"])
        for c in summary.get("consumers") or []
        if c["name"] in (consumer, consumer.encode())
    )


@redis_only
async def test_a_killed_flushers_entries_are_claimed_once_its_heartbeat_expires(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(postgres_dsn=ledger_dsn)
    keys = Keys(key_prefix)
    records = await make_facts(budget, 100)
    # A flusher process whose Postgres never answers: it reads batches, then
    # hangs in the insert, holding them, until it is SIGKILLed.
    with socket.socket() as black_hole:
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        port = black_hole.getsockname()[1]
        code = (
            "import asyncio\n"
            "from spendgate import Flusher\n"
            "asyncio.run(Flusher(consumer='victim', heartbeat_seconds=0.6).run())\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
        env.update(
            SPENDGATE_REDIS_URL=REDIS_URL,
            SPENDGATE_KEY_PREFIX=key_prefix,
            SPENDGATE_POSTGRES_DSN=f"postgresql://postgres@127.0.0.1:{port}/x",
            SPENDGATE_FLUSH_BATCH_SIZE="25",
        )
        victim = subprocess.Popen([sys.executable, "-c", code], env=env)
        try:

            async def holding() -> bool:
                try:
                    summary = await redis_client.xpending(keys.ledger, DEFAULT_GROUP)
                except aioredis.ResponseError:
                    return False  # no group yet
                return _pending_on(summary, "victim") > 0

            await wait_for(holding)
            assert await redis_client.get(keys.flusher("victim"))
        finally:
            victim.kill()
            victim.wait(30)
    summary = await redis_client.xpending(keys.ledger, DEFAULT_GROUP)
    assert _pending_on(summary, "victim") > 0  # killed mid-batch, holding entries
    assert await redis_client.sismember(keys.flushers, "victim")

    # Well within the 60 s claim-idle time: once its heartbeat is gone, the
    # next pass of another flusher takes what it held.
    await wait_for(lambda: _gone(redis_client, keys.flusher("victim")), timeout=5)
    rescuer = Flusher(budget.config, redis=redis_client, consumer="rescuer")
    assert rescuer.claim_idle_ms == 60_000
    try:
        assert await rescuer.run_once() == 100
    finally:
        await rescuer.aclose()
    await assert_exactly_once(ledger_dsn, records)
    await assert_drained(redis_client, key_prefix)
    # The dead flusher is forgotten: out of the group and of the set.
    consumers = await redis_client.xinfo_consumers(keys.ledger, DEFAULT_GROUP)
    assert b"victim" not in {c["name"] for c in consumers}
    assert not await redis_client.sismember(keys.flushers, "victim")


async def _gone(redis: aioredis.Redis, key: str) -> bool:
    return not await redis.exists(key)


@redis_only
async def test_a_live_flushers_entries_stay_its_own_until_it_stops(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(postgres_dsn=ledger_dsn)
    keys = Keys(key_prefix)
    first = await make_facts(budget, 20)
    alive = Flusher(budget.config, redis=redis_client, consumer="alive")
    other = Flusher(budget.config, redis=redis_client, consumer="other")
    try:
        # "alive" keeps its heartbeat and holds a batch it is still storing.
        await alive.heartbeat.start()
        await alive.reader.ensure_group()
        assert len(await alive.reader.read(">")) == 20
        status = await redis_client.get(keys.flusher("alive"))
        assert status is not None and b" moved=0 " in status
        ttl = await redis_client.pttl(keys.flusher("alive"))
        assert 0 < ttl <= 10_000
        later = await make_facts(budget, 10, start=20)
        # Its heartbeat lives: only the later entries move.
        assert await other.run_once() == 10
        # A clean stop drops the heartbeat: what it held is taken at once.
        await alive.heartbeat.stop()
        assert not await redis_client.exists(keys.flusher("alive"))
        assert await other.run_once() == 20
    finally:
        await alive.aclose()
        await other.aclose()
    await assert_exactly_once(ledger_dsn, first + later)
    await assert_drained(redis_client, key_prefix)


@redis_only
async def test_postgres_unreachable_acknowledges_nothing(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(postgres_dsn=ledger_dsn)
    stream = Keys(key_prefix).ledger
    records = await make_facts(budget, 50)
    down = Flusher(
        budget.config,
        redis=redis_client,
        dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        consumer="c1",
    )
    with pytest.raises(LedgerUnavailableError):
        await down.run_once()
    assert await redis_client.xlen(stream) == 50
    assert (await redis_client.xpending(stream, DEFAULT_GROUP))["pending"] == 50
    assert (await down.backlog()).entries == 50
    assert (await down.backlog()).pending == 50
    await down.aclose()
    # The same consumer, Postgres back: it resumes its own pending entries at once.
    up = Flusher(budget.config, redis=redis_client, consumer="c1")
    try:
        assert await up.run_once() == 50
    finally:
        await up.aclose()
    await assert_exactly_once(ledger_dsn, records)
    await assert_drained(redis_client, key_prefix)


@redis_only
async def test_entries_postgres_cannot_store_are_dead_lettered(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(postgres_dsn=ledger_dsn)
    keys = Keys(key_prefix)
    good = await make_facts(budget, 20)
    base = {"k": "spend", "t": "1700000000000", "p": "", "m": "", "md": "", "i": ""}
    # Random base64 does not compress: an index row above Postgres's limit.
    huge_user = base64.b64encode(os.urandom(6000)).decode()
    await redis_client.xadd(
        keys.ledger, {**base, "e": "bad-amount", "u": "x", "a": "abc"}
    )
    await redis_client.xadd(
        keys.ledger, {**base, "e": "huge-id", "u": huge_user, "a": "5"}
    )
    await redis_client.xadd(
        keys.ledger, {**base, "e": "bad-json", "u": "y", "a": "7", "md": "{not json"}
    )
    good += await make_facts(budget, 20, start=20)
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.run_once() == 43
    finally:
        await flusher.aclose()
    assert flusher.dead_lettered_total == 2
    dead = await redis_client.xrange(keys.ledger + ":dead")
    assert sorted(fields[b"e"] for _, fields in dead) == [b"bad-amount", b"huge-id"]
    assert all(fields[b"err"] for _, fields in dead)
    rows = await ledger_rows(ledger_dsn)
    assert {r["entry_id"] for r in rows} == {r.entry_id for r in good} | {"bad-json"}
    conn = await asyncpg.connect(ledger_dsn)
    try:
        meta = await conn.fetchval(
            "SELECT metadata FROM spendgate_ledger WHERE entry_id = 'bad-json'"
        )
    finally:
        await conn.close()
    assert json.loads(meta) == {"_unparsed": "{not json"}
    await assert_drained(redis_client, key_prefix)


@redis_only
async def test_a_deleted_stream_is_survived(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(postgres_dsn=ledger_dsn)
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        first = await make_facts(budget, 10)
        assert await flusher.run_once() == 10
        # An operator deletes the stream, and its consumer group with it.
        await redis_client.delete(Keys(key_prefix).ledger)
        assert await flusher.run_once() == 0
        later = await make_facts(budget, 10, start=10)
        assert await flusher.flush() == 10
    finally:
        await flusher.aclose()
    await assert_exactly_once(ledger_dsn, first + later)


# -- lifecycle, CLI, packaging ------------------------------------------------


@redis_only
async def test_run_stops_cleanly_when_cancelled(
    wide_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = wide_budget(postgres_dsn=ledger_dsn, flush_interval_seconds=0.01)
    flusher = Flusher(budget.config, redis=redis_client)
    task = asyncio.create_task(flusher.run())
    records = await make_facts(budget, 100)
    await wait_for(lambda: _stream_empty(redis_client, key_prefix))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert flusher._conn is None  # its connection was closed
    await assert_exactly_once(ledger_dsn, records)
    # The client passed in stays usable.
    assert await redis_client.ping()


@redis_only
async def test_cli_flush_once_and_exit_codes(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    pg_dsn: str,
) -> None:
    budget = make_budget(postgres_dsn=pg_dsn)
    records = await make_facts(budget, 60)
    # No migration ran: the flusher applies it on first connect.
    proc = _flush_process(key_prefix, pg_dsn, "--once")
    out, err = await asyncio.to_thread(proc.communicate, None, 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("moved 60 entries; backlog 0")
    await assert_exactly_once(pg_dsn, records)

    down = _flush_process(
        key_prefix, f"postgresql://postgres@127.0.0.1:{free_port()}/x", "--once"
    )
    _, err = await asyncio.to_thread(down.communicate, None, 60)
    assert down.returncode == 4, err.decode()
    assert b"unavailable" in err

    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    no_redis = subprocess.run(
        [sys.executable, "-m", "spendgate.cli", "flush", "--once", "--dsn", pg_dsn],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert no_redis.returncode == 2
    assert b"SPENDGATE_REDIS_URL" in no_redis.stderr


def test_importing_spendgate_does_not_import_asyncpg() -> None:
    code = (
        "import sys, spendgate\n"
        "assert 'asyncpg' not in sys.modules\n"
        "assert spendgate.Flusher.__name__ == 'Flusher'\n"
        "assert spendgate.Analytics.__name__ == 'Analytics'\n"
        "import spendgate.cli, spendgate.ledger.reconcile\n"
        "spendgate.cli.build_parser()\n"
        "assert 'asyncpg' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_malformed_entry_is_refused_before_postgres() -> None:
    from spendgate import PoisonEntryError

    fields = {b"e": b"x", b"k": b"spend", b"t": b"1", b"u": b"u", b"a": b"1"}
    assert entry_to_row(fields)[6] == 1
    assert raw_row(fields)[5] == 1
    for broken in ({**fields, b"a": b"-1"}, {**fields, b"t": b"soon"}, {b"e": b"x"}):
        with pytest.raises(PoisonEntryError):
            entry_to_row(broken)
        with pytest.raises(PoisonEntryError):
            raw_row(broken)
