"""The spool: facts Redis did not take are kept durably and replayed exactly once.

How: the manager talks to Redis (real, and fakeredis) through a client whose
script calls can be switched to fail (the ``flaky`` fixture of
tests/spool_helpers.py): ``down`` refuses every call before it reaches Redis,
``lost_reply`` lets the call run and then loses its reply (the fact *was*
applied, the caller cannot know). Facts made while the store fails must come
back ``spooled=True``; once calls succeed again the background replay must
bring Redis to exactly the totals of every fact the callers were told about
(counters, balance, and one ledger entry per fact). Also checked: a caller's
idempotency key spooled twice counts once, an open breaker sends facts
straight to the spool, the bound (``SpoolFullError`` rather than dropping),
an unwritable spool, dead letters, segments left by an earlier manager (also
replayed by a manager opened lazily), and torn and corrupt lines skipped.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from spendgate import SpoolFullError
from spendgate.durability.spool import decode_fact
from spool_helpers import _drained, _ledger_len, _manager, _Switch, flaky

__all__ = ["flaky"]  # (the fixture, used by name)


async def test_facts_are_spooled_while_down_and_replayed_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        lease = await budget.reserve("alice", "2", project_id="p")
        switch.mode = "down"
        spent = await budget.record_spend("alice", "1.25", project_id="p", model="m")
        credit = await budget.add_credits("alice", "10")
        settled = await budget.settle(lease, "1.5")
        assert (spent.spooled, credit.spooled, settled.spooled) == (True, True, True)
        assert settled.user_id == "alice" and settled.lease_id == lease.id
        assert spent.amount == Decimal("1.25") and credit.balance is None
        assert budget.spool is not None and budget.spool.depth == 3
        assert budget.spool.oldest_age_seconds is not None

        switch.mode = "ok"
        await _drained(budget)
        usage = await budget.get_usage("alice", project_id="p")
        assert usage["user"].daily.spent == Decimal("2.75")
        assert usage["project"].daily.spent == Decimal("2.75")
        assert usage["global"].monthly.spent == Decimal("2.75")
        assert usage["user"].held == 0
        assert await _ledger_len(budget) == 3
        assert budget.spool.stats()["replayed_total"] == 3
        # The spooled settle is the settle of record: a second one replays it.
        again = await budget.settle(lease, "1.5")
        assert again.replayed and again.entry_id == settled.entry_id


async def test_a_fact_whose_reply_was_lost_counts_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path, enforce_balance=True) as budget:
        await budget.add_credits("bob", "100")
        lease = await budget.reserve("bob", "3")
        switch.mode = "lost_reply"  # applied in Redis, reply lost: spooled anyway
        records = [
            await budget.record_spend("bob", "2"),
            await budget.record_spend("bob", "0.5", idempotency_key="call-1"),
            await budget.add_credits("bob", "7"),
            await budget.settle(lease, "1"),
        ]
        assert all(r.spooled for r in records)
        switch.mode = "ok"
        await _drained(budget)
        usage = await budget.get_usage("bob")
        assert usage["user"].daily.spent == Decimal("3.5")
        assert usage["user"].balance == Decimal("103.5")
        assert await _ledger_len(budget) == 1 + 4  # the first credit, then 4 facts


async def test_a_caller_key_spooled_twice_counts_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        switch.mode = "down"
        first = await budget.record_spend("carol", "4", idempotency_key="k1")
        second = await budget.record_spend("carol", "4", idempotency_key="k1")
        assert first.spooled and second.spooled
        switch.mode = "ok"
        await _drained(budget)
        usage = await budget.get_usage("carol")
        assert usage["user"].daily.spent == Decimal(4)
        assert await _ledger_len(budget) == 1
        third = await budget.record_spend("carol", "4", idempotency_key="k1")
        assert third.replayed and not third.spooled


async def test_breaker_open_sends_facts_straight_to_the_spool(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path, breaker_reset_seconds=3600) as budget:
        switch.mode = "down"
        for _ in range(3):
            assert (await budget.record_spend("dan", "1")).spooled
        assert budget.breaker.state == "open"
        calls = switch.calls
        for _ in range(20):
            assert (await budget.record_spend("dan", "1")).spooled
        assert switch.calls == calls  # the store was not touched
        assert budget.spool is not None and budget.spool.depth == 23


async def test_a_full_spool_refuses_instead_of_dropping(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path, spool_max_entries=3) as budget:
        switch.mode = "down"
        for _ in range(3):
            assert (await budget.record_spend("erin", "1")).spooled
        with pytest.raises(SpoolFullError, match="spool_max_entries=3"):
            await budget.record_spend("erin", "1")
        switch.mode = "ok"
        await _drained(budget)
        usage = await budget.get_usage("erin")
        assert usage["user"].daily.spent == Decimal(3)


async def test_an_unwritable_spool_raises_spool_full(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    async with _manager(flaky, blocker / "spool") as budget:
        switch.mode = "down"
        with pytest.raises(SpoolFullError, match="could not be written"):
            await budget.record_spend("fay", "1")
        switch.mode = "ok"


async def test_a_fact_redis_refuses_goes_to_the_dead_letters(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        lease = await budget.reserve("gus", "1")
        await budget.release(lease)
        switch.mode = "down"
        record = await budget.settle(lease, "1")  # cannot be checked while down
        assert record.spooled
        switch.mode = "ok"
        await _drained(budget)
        spool = budget.spool
        assert spool is not None and spool.dead_letters == 1
        dead = (spool.directory / "dead.log").read_text().splitlines()
        assert len(dead) == 1
        entry = json.loads(dead[0])
        assert "released" in entry["reason"]
        fact = decode_fact(entry["record"].encode())
        assert fact is not None and fact.operation == "settle"
        assert fact.args["lease"] == lease.id
        usage = await budget.get_usage("gus")
        assert usage["user"].daily.spent == 0


async def test_the_next_manager_replays_what_an_earlier_one_left(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    switch.mode = "down"
    async with _manager(flaky, tmp_path) as first:
        for _ in range(5):
            assert (await first.record_spend("hal", "0.1")).spooled
    switch.mode = "ok"
    async with _manager(flaky, tmp_path) as second:
        assert second.spool is not None
        await _drained(second)
        usage = await second.get_usage("hal")
        assert usage["user"].daily.spent == Decimal("0.5")
        assert await _ledger_len(second) == 5
        # (the depth reaches 0 with the segment's last record; the replay
        # deletes the file right after, in its own task)
        for _ in range(500):
            segments = [
                p for p in second.spool.directory.iterdir() if p.suffix == ".log"
            ]
            if not segments:
                break
            await asyncio.sleep(0.02)
        assert not segments


async def test_a_manager_opened_lazily_replays_leftovers_on_its_first_call(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    switch.mode = "down"
    async with _manager(flaky, tmp_path) as first:
        assert (await first.record_spend("lazy", "0.7")).spooled
    switch.mode = "ok"
    second = _manager(flaky, tmp_path)  # no open(), no async with
    try:
        usage = await second.get_usage("lazy")  # opens it, starts the replay
        assert usage["user"].daily.spent in (0, Decimal("0.7"))
        await _drained(second)
        usage = await second.get_usage("lazy")
        assert usage["user"].daily.spent == Decimal("0.7")
    finally:
        await second.aclose()


async def test_torn_and_corrupt_lines_are_skipped(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    switch.mode = "down"
    async with _manager(flaky, tmp_path) as first:
        assert (await first.record_spend("ivy", "2")).spooled
        assert (await first.record_spend("ivy", "3")).spooled
        assert first.spool is not None
        directory = first.spool.directory
    (segment,) = [p for p in directory.iterdir() if p.name.startswith("seg-")]
    lines = segment.read_bytes().splitlines(keepends=True)
    corrupt = lines[1].replace(b'"ivy"', b'"ivz"')  # fails the CRC
    torn = lines[0][:40]  # the writer died mid-line: never acknowledged
    segment.write_bytes(lines[0] + corrupt + torn)
    switch.mode = "ok"
    async with _manager(flaky, tmp_path) as second:
        await _drained(second)
        assert second.spool is not None and second.spool.corrupt_lines == 1
        usage = await second.get_usage("ivy")
        assert usage["user"].daily.spent == Decimal(2)
