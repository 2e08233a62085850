"""A flusher or Postgres dying mid-flush loses no fact and duplicates none.

How: as in tests/test_flusher.py (the shared helpers are in
tests/flusher_helpers.py), facts go through ``BudgetManager`` on the real
Redis, flushers move them into a fresh database, and the rows are compared
with the records the manager returned: one row per fact, exact sums per
kind, and an empty stream with nothing pending afterwards. The faults are
real: a ``spendgate flush`` process SIGKILLed again and again while facts
arrive, a private PostgreSQL server stopped (crash-like) in the middle of
flushing and started again, a consumer that read entries and died (its
entries are claimed once idle long enough), a flusher process SIGKILLed
while it holds a batch (claimed once its heartbeat expires), and a live
flusher, whose entries stay its own until it stops.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, MakeBudget
from flusher_helpers import (
    _flush_process,
    _stream_empty,
    assert_drained,
    assert_exactly_once,
    ledger_rows,
    make_facts,
    redis_only,
    wide_budget,  # noqa: F401 (the fixture)
)
from pg_server import PrivatePostgres, wait_for
from spendgate import (
    Flusher,
    SpendRecord,
)
from spendgate.core.keys import Keys
from spendgate.ledger.flusher import DEFAULT_GROUP
from spendgate.ledger.migrations import migrate_dsn

# ledger_dsn, pg_dsn, private_postgres
pytest_plugins = ("pg_fixtures",)

pytestmark = pytest.mark.postgres


# -- a process or server dying --------------------------------------------------


@redis_only
@pytest.mark.slow
async def test_flusher_process_sigkilled_repeatedly_leaves_one_row_per_fact(
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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


# -- a dead consumer's entries --------------------------------------------------


@redis_only
async def test_a_dead_consumers_pending_entries_are_reclaimed(
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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
