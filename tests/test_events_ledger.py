"""The fact events and the flusher share the ledger stream without harm.

How: the event dispatcher reads the ledger stream in its own consumer
group, and the flusher deletes an entry only once every group has
acknowledged it (``stream_ack.lua``). A randomized run of two groups reading
and acknowledging drives the script directly and checks, after every step,
that no entry a group has not acknowledged is gone, and that everything is
gone at the end. Then, on both backends with a fresh Postgres database,
facts of every kind go through ``BudgetManager`` while a flusher and a
dispatcher run, in either order and at the same time: every fact lands in
Postgres exactly once, every fact's event is delivered with the entry's id,
nothing is trimmed before the dispatcher read it, and the stream ends empty.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from conftest import MakeBudget
from events_helpers import FAST
from spendgate import BudgetManager, Flusher
from spendgate.core.scripts import lua_dir
from spendgate.events import EventDispatcher, EventHandlers
from spendgate.ledger.flusher import DEFAULT_GROUP

# ledger_dsn, pg_dsn
pytest_plugins = ("pg_fixtures",)

EVENTS_GROUP = "spendgate-events"
#: deducts may take balances below zero (make_facts deducts before crediting)
CREDIT_LINE = "-1000000"


# -- the acknowledgement script ------------------------------------------------------


async def test_entries_go_only_once_every_group_acknowledged_them(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    stream = f"{key_prefix}:{{sg}}:s"
    ack = redis_client.register_script((lua_dir() / "stream_ack.lua").read_bytes())
    ids = [(await redis_client.xadd(stream, {"n": i})).decode() for i in range(80)]
    consumers = {"g1": ["a", "b"], "g2": ["c"]}
    for group in consumers:
        await redis_client.xgroup_create(stream, group, id="0")
    held: dict[tuple[str, str], list[str]] = {
        (g, c): [] for g, names in consumers.items() for c in names
    }
    acked: dict[str, set[str]] = {g: set() for g in consumers}
    rng = random.Random(20)
    for _ in range(300):
        group = rng.choice(list(consumers))
        consumer = rng.choice(consumers[group])
        mine = held[(group, consumer)]
        if rng.random() < 0.5:
            reply = await redis_client.xreadgroup(
                group, consumer, {stream: ">"}, count=rng.randint(1, 7)
            )
            mine.extend(sid.decode() for sid, _ in (reply[0][1] if reply else []))
        elif mine:
            done = rng.sample(mine, rng.randint(1, len(mine)))
            await ack(keys=[stream], args=[group, ",".join(done)])
            acked[group].update(done)
            held[(group, consumer)] = [sid for sid in mine if sid not in done]
        present = {sid.decode() for sid, _ in await redis_client.xrange(stream)}
        unfinished = {sid for sid in ids if not all(sid in a for a in acked.values())}
        assert unfinished <= present  # nothing a group still needs is gone
    # Every group reads and acknowledges the rest: nothing is left.
    for group, names in consumers.items():
        for consumer in names:
            while reply := await redis_client.xreadgroup(
                group, consumer, {stream: ">"}, count=50
            ):
                held[(group, consumer)].extend(s.decode() for s, _ in reply[0][1])
            rest = held[(group, consumer)]
            if rest:
                await ack(keys=[stream], args=[group, ",".join(rest)])
    assert await redis_client.xlen(stream) == 0


async def test_a_sole_group_deletes_its_batch_as_before(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    stream = f"{key_prefix}:{{sg}}:s"
    ack = redis_client.register_script((lua_dir() / "stream_ack.lua").read_bytes())
    ids = [(await redis_client.xadd(stream, {"n": i})).decode() for i in range(5)]
    await redis_client.xgroup_create(stream, "only", id="0")
    await redis_client.xreadgroup("only", "c", {stream: ">"})
    # out of order, as several flushers do: exactly the batch goes
    assert await ack(keys=[stream], args=["only", f"{ids[3]},{ids[1]}"]) == [2, 1]
    remaining = [sid.decode() for sid, _ in await redis_client.xrange(stream)]
    assert remaining == [ids[0], ids[2], ids[4]]


# -- the flusher beside the dispatcher ----------------------------------------------


async def make_facts(budget: BudgetManager, n: int, start: int = 0) -> list[Any]:
    """``n`` facts of every kind at once; their records."""

    async def one(i: int) -> Any:
        user = f"user-{i % 11}"
        amount = Decimal(i % 97 + 1) / 100
        if i % 4 == 0:
            lease = await budget.reserve(user, amount + 1)
            return await budget.settle(lease, amount)
        if i % 4 == 1:
            return await budget.add_credits(user, amount)
        if i % 4 == 2:
            return await budget.deduct(user, amount)
        return await budget.record_spend(user, amount, model="gpt-4o")

    return list(await asyncio.gather(*(one(i) for i in range(start, start + n))))


async def ledger_ids(dsn: str) -> Counter[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT entry_id FROM spendgate_ledger")
    finally:
        await conn.close()
    return Counter(r["entry_id"] for r in rows)


def recording_dispatcher(
    budget: BudgetManager, redis: aioredis.Redis, got: list[str]
) -> EventDispatcher:
    handlers = EventHandlers()
    handlers.on("*", lambda e: got.append(e.id))
    config = budget.config.model_copy(update={**FAST, "events_batch_size": 37})
    return EventDispatcher(config, handlers=handlers, redis=redis)


@pytest.mark.postgres
async def test_the_flusher_keeps_what_the_dispatcher_has_not_read(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn, min_balance=CREDIT_LINE)
    got: list[str] = []
    dispatcher = recording_dispatcher(budget, redis_client, got)
    await dispatcher.streams.ensure_groups(facts=True)
    records = await make_facts(budget, 120)
    ids = {r.entry_id for r in records}
    stream = budget.keys.ledger
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.flush() == 120
        assert await ledger_ids(ledger_dsn) == Counter(ids)
        # in Postgres, and still in the stream: the dispatcher has not read them
        assert await redis_client.xlen(stream) == 120
        await dispatcher.drain()
        assert sorted(got) == sorted(ids)
        # the dispatcher only acknowledges; the flusher's next pass deletes
        assert await redis_client.xlen(stream) == 120
        assert await flusher.run_once() == 0
        assert await redis_client.xlen(stream) == 0
    finally:
        await flusher.aclose()
    assert await ledger_ids(ledger_dsn) == Counter(ids)


@pytest.mark.postgres
async def test_the_dispatcher_first_then_the_flusher_deletes_at_once(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn, min_balance=CREDIT_LINE)
    got: list[str] = []
    dispatcher = recording_dispatcher(budget, redis_client, got)
    await dispatcher.streams.ensure_groups(facts=True)
    records = await make_facts(budget, 40)
    await dispatcher.drain()
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.flush() == 40
    finally:
        await flusher.aclose()
    assert await redis_client.xlen(budget.keys.ledger) == 0
    assert sorted(got) == sorted(r.entry_id for r in records)


@pytest.mark.postgres
async def test_flusher_and_dispatcher_at_once_move_and_deliver_every_fact(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(
        postgres_dsn=ledger_dsn,
        min_balance=CREDIT_LINE,
        flush_interval_seconds=0.01,
        flush_batch_size=29,
    )
    got: list[str] = []
    dispatcher = recording_dispatcher(budget, redis_client, got)
    flushers = [Flusher(budget.config, redis=redis_client) for _ in range(2)]
    tasks = [asyncio.create_task(f.run()) for f in flushers]
    tasks.append(asyncio.create_task(dispatcher.run()))
    records = []
    for start in range(0, 400, 50):
        records += await make_facts(budget, 50, start)
        await asyncio.sleep(0.01)
    ids = {r.entry_id for r in records}
    await _wait_until(lambda: set(got) >= ids, "every event")
    for flusher in flushers:
        flusher.stop()
    dispatcher.stop()
    await asyncio.gather(*tasks)
    last = Flusher(budget.config, redis=redis_client)
    try:
        await last.flush()
    finally:
        await last.aclose()
    assert await ledger_ids(ledger_dsn) == Counter(ids)  # each exactly once
    assert Counter(got) == Counter(ids)  # no failure: each delivered once
    stream = budget.keys.ledger
    assert await redis_client.xlen(stream) == 0
    for group in (DEFAULT_GROUP, EVENTS_GROUP):
        assert (await redis_client.xpending(stream, group))["pending"] == 0


async def _wait_until(check: Any, what: str) -> None:
    for _ in range(3000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.postgres
async def test_without_an_events_group_the_flusher_deletes_each_batch(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn, min_balance=CREDIT_LINE)
    await make_facts(budget, 30)
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.flush() == 30
        assert flusher.reader.shared is False
    finally:
        await flusher.aclose()
    assert await redis_client.xlen(budget.keys.ledger) == 0
    assert [g["name"] for g in await redis_client.xinfo_groups(budget.keys.ledger)] == [
        DEFAULT_GROUP.encode()
    ]
