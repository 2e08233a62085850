"""The flusher moves every fact from the Redis stream to Postgres exactly once.

How: facts go through ``BudgetManager`` (``record_spend``, ``reserve`` +
``settle``, ``add_credits``) on the real Redis (the embedded store for the
basic path too), the flusher moves them into a fresh database
(``pg_fixtures``), and the tests compare the rows with the records the
manager returned: same entry ids, one row each, exact sums per kind, and an
empty stream with nothing pending afterwards. Checked here: every field of
each kind of row, 2000 facts arriving while the flusher runs, two flushers
at once, Postgres unreachable (nothing is acknowledged), entries Postgres
cannot store (dead-lettered), a deleted stream, a cancelled run, the exit
codes of ``spendgate flush --once``, malformed entries refused before
Postgres, and that importing spendgate does not import asyncpg. A flusher
or Postgres dying mid-flush is in tests/test_flusher_crashes.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections import Counter
from decimal import Decimal

import asyncpg
import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, FakeClock, MakeBudget
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
from pg_server import wait_for
from redis_server import free_port
from spendgate import (
    Flusher,
    LedgerUnavailableError,
    SpendRecord,
)
from spendgate.core.keys import Keys
from spendgate.ledger.flusher import DEFAULT_GROUP, entry_to_row, raw_row

# ledger_dsn, pg_dsn, private_postgres
pytest_plugins = ("pg_fixtures",)

pytestmark = pytest.mark.postgres


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
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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


# -- faults, every process alive ------------------------------------------------


@redis_only
async def test_two_flushers_at_once_produce_no_duplicates(
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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
async def test_postgres_unreachable_acknowledges_nothing(
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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


# -- lifecycle, CLI, packaging --------------------------------------------------


@redis_only
async def test_run_stops_cleanly_when_cancelled(
    wide_budget: MakeBudget,  # noqa: F811 (the fixture, imported)
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


@pytest.mark.parametrize("idle", ["0", "-1", "nan", "inf"])
def test_a_claim_idle_that_is_no_duration_is_a_usage_error(
    idle: str, ledger_dsn: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    env.update(SPENDGATE_REDIS_URL=REDIS_URL)
    out = subprocess.run(
        [sys.executable, "-m", "spendgate.cli", "flush", "--once"]
        + ["--dsn", ledger_dsn, "--claim-idle", idle],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert b"--claim-idle" in out.stderr and b"Traceback" not in out.stderr


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
