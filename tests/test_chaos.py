"""Chaos: Redis killed, restarted and stalled, and the app killed, mid-traffic.

How: each test starts its OWN redis-server (tests/redis_server.py: a free
port, a temporary folder, ``appendonly yes`` + ``appendfsync always`` so an
acknowledged write survives ``SIGKILL``); the machine's shared Redis is never
touched. Callers record facts concurrently while the server is ``SIGKILL``-ed
and restarted, or ``SIGSTOP``-ed and ``SIGCONT``-ed, or while the app process
itself is ``SIGKILL``-ed with facts still in its spool (then two new processes
race to replay it). Every fact call must return (recorded or
``spooled=True``), never raise; once the spool has drained, Redis must hold
exactly the facts the callers were told about: the day's counters equal their
sum, each user's balance equals credits minus charges, and the ledger stream
has exactly one entry per fact (a fact applied twice, or lost, would show in
all three). Budgets use a fixed clock, so a run that
crosses midnight UTC still lands in one day.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeClock
from redis_server import RedisServer
from spendgate import (
    BudgetConfig,
    BudgetManager,
    BudgetUnavailableError,
    DeductResult,
    SpendRecord,
)

pytestmark = pytest.mark.slow

MICRO = Decimal("0.000001")


@pytest.fixture
def server(private_redis: RedisServer) -> RedisServer:
    return private_redis


def _config(server: RedisServer, spool: Path, **extra: Any) -> BudgetConfig:
    settings: dict[str, Any] = {
        "redis_url": server.url,
        "key_prefix": "chaos",
        "daily_user_limit": None,
        "daily_project_limit": None,
        "daily_global_limit": None,
        # Balances always tracked (so credits and charges commute, whatever
        # order the replay brings them in), with a deep credit line so
        # admission never refuses for the balance.
        "enforce_balance": True,
        "min_balance": "-1000000000",
        "spool_path": spool,
        "breaker_failure_threshold": 5,
        "breaker_reset_seconds": 0.1,
        "spool_replay_interval_seconds": 0.05,
        "redis_timeout_seconds": 0.25,
        "redis_connect_timeout_seconds": 0.25,
    }
    settings.update(extra)
    return BudgetConfig(**settings)


class Told:
    """What callers were told: every fact's amount, by kind and user."""

    def __init__(self) -> None:
        self.charged: dict[str, Decimal] = defaultdict(Decimal)
        self.credited: dict[str, Decimal] = defaultdict(Decimal)
        self.facts = 0
        self.spooled = 0

    def add(self, record: SpendRecord | DeductResult, user: str) -> None:
        self.facts += 1
        self.spooled += record.spooled
        if isinstance(record, SpendRecord) and record.kind == "grant":
            self.credited[user] += record.amount
        else:
            self.charged[user] += record.amount

    @property
    def total_charged(self) -> Decimal:
        return sum(self.charged.values(), Decimal(0))


async def _drained(budget: BudgetManager, seconds: float = 90) -> None:
    spool = budget.spool
    assert spool is not None
    for _ in range(int(seconds / 0.05)):
        if spool.depth == 0 and spool.own_depth == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the spool did not drain: {spool.stats()}")


async def _assert_exactly(budget: BudgetManager, told: Told, users: list[str]) -> None:
    usage = await budget.get_usage(users[0])
    assert usage["global"].daily.spent == told.total_charged
    for user in users:
        mine = await budget.get_usage(user)
        assert mine["user"].daily.spent == told.charged[user], user
        assert mine["user"].balance == told.credited[user] - told.charged[user], user
        assert mine["user"].held == 0, user
    assert await budget.redis.xlen(budget.keys.ledger) == told.facts


async def _fact(
    budget: BudgetManager, rng: random.Random, user: str, n: int
) -> SpendRecord:
    """One fact of a random kind; a lease whose reserve is refused (store down)
    becomes a direct spend, as an app would do after its LLM call."""
    amount = Decimal(rng.randint(1, 3_000_000)) * MICRO
    kind = n % 4
    if kind == 0:
        return await budget.record_spend(user, amount, project_id=f"p{n % 3}")
    if kind == 1:
        return await budget.record_spend(user, amount, idempotency_key=f"{user}-{n}")
    if kind == 2:
        return await budget.add_credits(user, amount)
    try:
        lease = await budget.reserve(user, amount)
    except BudgetUnavailableError:
        return await budget.record_spend(user, amount, model="after-refusal")
    return await budget.settle(lease, amount)


async def test_redis_killed_and_restarted_under_thousands_of_facts(
    server: RedisServer, tmp_path: Path
) -> None:
    users = [f"user-{i}" for i in range(12)]
    workers, per_worker = 100, 40  # 4,000 facts
    told = Told()
    rng = random.Random(7)
    clock = FakeClock()

    async with BudgetManager(
        _config(server, tmp_path / "spool"), clock=clock
    ) as budget:

        async def worker(w: int) -> None:
            for n in range(per_worker):
                user = users[(w + n) % len(users)]
                told.add(await _fact(budget, rng, user, w * per_worker + n), user)

        async def chaos() -> None:
            for at in (800, 2400):
                while told.facts < at:
                    await asyncio.sleep(0.005)
                server.kill()
                await asyncio.sleep(0.4)
                await asyncio.to_thread(server.start)

        await asyncio.gather(chaos(), *(worker(w) for w in range(workers)))
        assert told.facts == workers * per_worker
        assert told.spooled > 0, "the outage should have spooled facts"
        await _drained(budget)
        # A reserve whose reply was lost (Redis killed after applying it, or
        # slower than the timeout) holds money for a lease its caller never
        # got: that hold counts until it expires, as documented. Past every
        # lease's expiry nothing may be held.
        clock.advance(budget.config.lease_ttl_seconds + 1)
        await _assert_exactly(budget, told, users)


async def test_a_stalled_redis_fails_closed_spools_and_replays(
    server: RedisServer, tmp_path: Path
) -> None:
    users = ["stall-a", "stall-b", "stall-c"]
    told = Told()
    rng = random.Random(11)
    async with BudgetManager(
        _config(server, tmp_path / "spool"), clock=FakeClock()
    ) as budget:
        for n in range(30):
            told.add(await _fact(budget, rng, users[n % 3], n), users[n % 3])
        server.pause()
        try:
            # Admission fails closed (a hang would trip the guard below).
            for _ in range(8):
                with pytest.raises(BudgetUnavailableError):
                    await asyncio.wait_for(budget.check_availability(users[0]), 5)
            # Facts are spooled, including those already sent to the stalled
            # server (it runs them on SIGCONT; their replay is then a no-op).
            records = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        budget.record_spend(users[n % 3], f"0.{n + 1:06d}")
                        for n in range(300)
                    )
                ),
                30,
            )
            for n, record in enumerate(records):
                assert record.spooled
                told.add(record, users[n % 3])
        finally:
            server.resume()
        await _drained(budget)
        await _assert_exactly(budget, told, users)
        assert await budget.check_availability(users[0])


_APP = textwrap.dedent(
    """
    import asyncio, json, sys
    from datetime import datetime, timezone
    from spendgate import BudgetConfig, BudgetManager

    def clock():
        return datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc)

    async def main(mode, url, spool, count):
        config = BudgetConfig(
            redis_url=url, key_prefix="chaos", spool_path=spool,
            daily_user_limit=None, daily_project_limit=None, daily_global_limit=None,
            breaker_reset_seconds=0.05, spool_replay_interval_seconds=0.05,
        )
        budget = BudgetManager(config, clock=clock)
        await budget.open()
        if mode == "record":
            spooled = 0
            for n in range(count):
                record = await budget.record_spend("victim", "0.000123", project_id="p")
                spooled += record.spooled
            said = {"spooled": spooled, "depth": budget.spool.depth}
            print(json.dumps(said), flush=True)
            await asyncio.sleep(3600)  # killed here, spool not empty
        else:
            for _ in range(600):
                if budget.spool.depth == 0 and budget.spool.own_depth == 0:
                    break
                await asyncio.sleep(0.05)
            print(json.dumps(budget.spool.stats()), flush=True)
            await budget.aclose()

    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
    """
)


async def test_a_killed_app_process_leaves_its_spool_to_the_next(
    server: RedisServer, tmp_path: Path
) -> None:
    script = tmp_path / "app.py"
    script.write_text(_APP)
    spool = tmp_path / "spool"
    server.kill()  # the store is down while the first process records
    count = 250
    first = subprocess.Popen(
        [sys.executable, str(script), "record", server.url, str(spool), str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert first.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(first.stdout.readline), 60)
        said = json.loads(line)
        assert said == {"spooled": count, "depth": count}
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        if first.stdout is not None:
            first.stdout.close()
    assert list(spool.rglob("seg-*.log")), "the killed process left its segment"

    server.start()
    # Two processes start at once: each leftover segment is claimed (locked)
    # by one of them, so between them every fact is replayed exactly once.
    replay = [sys.executable, str(script), "replay", server.url, str(spool), "0"]
    runs = await asyncio.gather(
        *(
            asyncio.to_thread(subprocess.run, replay, capture_output=True, timeout=90)
            for _ in range(2)
        )
    )
    replayed = 0
    for run in runs:
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        stats = json.loads(run.stdout.decode().strip().splitlines()[-1])
        assert stats["depth"] == 0 and stats["dead_letters"] == 0
        replayed += stats["replayed_total"]
    assert replayed == count
    assert not list(spool.rglob("seg-*.log"))

    verifier = _config(server, tmp_path / "verifier-spool", enforce_balance=False)
    async with BudgetManager(verifier, clock=FakeClock()) as budget:
        usage = await budget.get_usage("victim", project_id="p")
        assert usage["user"].daily.spent == Decimal("0.000123") * count
        assert usage["project"].daily.spent == Decimal("0.000123") * count
        assert await budget.redis.xlen(budget.keys.ledger) == count
