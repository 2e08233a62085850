"""The spool: facts Redis did not take are kept durably and replayed exactly once.

How: the manager talks to Redis (real, and fakeredis) through a client whose
script calls can be switched to fail: ``down`` refuses every call before it
reaches Redis, ``lost_reply`` lets the call run and then loses its reply (the
fact *was* applied, the caller cannot know). Facts made while the store fails
must come back ``spooled=True``; once calls succeed again the background
replay must bring Redis to exactly the totals of every fact the callers were
told about (counters, balance, and one ledger entry per fact). Also checked:
the bound (``SpoolFullError`` rather than dropping), an unwritable spool,
dead letters, segments left by an earlier manager, torn and corrupt lines,
and that a live writer's segment is never replayed by anyone else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from conftest import REDIS_URL, FakeClock, real_redis_available, service_missing
from spendgate import BudgetConfig, BudgetManager, SpoolFullError
from spendgate.durability.spool import Spool, SpooledFact, decode_fact, encode_fact


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
        assert fact is not None and fact.script == "lua_settle"
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
        assert not [p for p in second.spool.directory.iterdir() if p.suffix == ".log"]


def _as_version_1(fact: SpooledFact, base: str) -> bytes:
    """The spool line an earlier spendgate wrote for ``fact``: version 1, with
    the configuration (base, balance rule, idempotency TTL, ledger cap) among
    the arguments where its scripts took it."""
    where = {  # position: value, in the order they are put back
        "lua_record": {0: base, 7: "0", 9: "86400000", 10: "0"},
        "lua_settle": {0: base, 7: "0", 8: "0"},
        "lua_credit": {0: base, 4: "86400000", 5: "0"},
    }[fact.script]
    args = list(fact.args)
    for at, value in where.items():
        args.insert(at, value)
    return _signed_line(
        {"v": 1, "s": fact.script, "k": list(fact.keys), "a": args, "t": 1, "i": {}}
    )


def _signed_line(record: dict[str, Any]) -> bytes:
    """A spool line holding ``record``, with its checksum right."""
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _record_of(line: bytes) -> dict[str, Any]:
    """The record a spool line holds (its checksum is not checked)."""
    record: dict[str, Any] = json.loads(line.rstrip(b"\n")[9:])
    return record


async def test_a_spool_written_before_the_configuration_left_the_arguments_replays(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    # Version 1 records carry the configuration among the arguments; they
    # are read as the calls they were, and replayed exactly once.
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as first:
        lease = await first.reserve("vic", "2")
        switch.mode = "down"
        assert (await first.record_spend("vic", "0.25", model="m")).spooled
        assert (await first.add_credits("vic", "7")).spooled
        assert (await first.settle(lease, "1.5")).spooled
        assert first.spool is not None
        (segment,) = first.spool.directory.glob("seg-*.log")
        base = first.keys.base
    switch.mode = "ok"
    facts = [decode_fact(line) for line in segment.read_bytes().splitlines(True)]
    assert [f.script for f in facts if f] == ["lua_record", "lua_credit", "lua_settle"]
    old_lines = [_as_version_1(f, base) for f in facts if f]
    for old, fact in zip(old_lines, facts, strict=True):
        assert decode_fact(old) == dataclasses.replace(fact, created_ms=1, info={})
    segment.write_bytes(b"".join(old_lines))

    async with _manager(flaky, tmp_path) as second:
        await _drained(second)
        usage = await second.get_usage("vic")
        assert usage["user"].daily.spent == Decimal("1.75")
        assert usage["user"].held == 0
        assert await _ledger_len(second) == 3
        assert second.spool is not None and second.spool.corrupt_lines == 0
    # A version 1 record of the wrong length, or an unknown version, is
    # corrupt, though its checksum is right.
    too_long = _record_of(old_lines[0])
    too_long["a"].insert(0, "x")
    assert decode_fact(_signed_line(too_long)) is None
    unknown = _record_of(encode_fact(facts[0]))
    assert unknown["v"] == 2
    unknown["v"] = 3
    assert decode_fact(_signed_line(unknown)) is None
    # (the same records as they were, re-signed, still read)
    assert decode_fact(_signed_line(_record_of(old_lines[0]))) is not None
    unknown["v"] = 2
    assert decode_fact(_signed_line(unknown)) == facts[0]


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


async def test_a_live_writers_segment_is_never_replayed_by_another(
    tmp_path: Path,
) -> None:
    writer, other = Spool(tmp_path, 100), Spool(tmp_path, 100)
    await writer.append(SpooledFact("lua_record", ("k",), ("a", 1)))
    applied: list[SpooledFact] = []

    async def apply(fact: SpooledFact) -> str | None:
        applied.append(fact)
        return None

    assert await other.replay(apply)
    assert applied == [] and other.depth == 1  # seen, not claimed
    await writer.aclose()  # the lock is dropped, as when a process dies
    assert await other.replay(apply)
    assert [f.args for f in applied] == [("a", 1)] and other.depth == 0
    assert not list(tmp_path.glob("seg-*"))
    await other.aclose()


async def test_concurrent_appends_are_group_committed_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000)
    facts = [
        SpooledFact("lua_record", (f"k{i}",), (i, "x" * (i % 7))) for i in range(500)
    ]
    await asyncio.gather(*(spool.append(f) for f in facts))
    assert spool.depth == 500 and spool.spooled_total == 500
    seen: list[SpooledFact] = []

    async def apply(fact: SpooledFact) -> str | None:
        seen.append(fact)
        return None

    assert await spool.replay(apply)
    assert [f.keys for f in seen] == [f.keys for f in facts]
    assert spool.depth == 0 and spool.oldest_age_seconds is None
    await spool.aclose()


def test_records_round_trip_exactly() -> None:
    fact = SpooledFact(
        "lua_record",
        ("p:{sg}:i:c:ключ\n*",),
        ("p:{sg}:", 1_700_000_000_000, "ü\x00{}", 2**53, ""),
        info={"kind": "spend"},
    )
    line = encode_fact(fact)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_fact(line) == fact
    assert decode_fact(line[:-5]) is None
    assert decode_fact(b"garbage\n") is None
    with pytest.raises(TypeError):
        encode_fact(SpooledFact("lua_record", (), (1.5,)))  # type: ignore[arg-type]


async def test_spool_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "deep" / "spool", 10)
    await spool.append(SpooledFact("lua_record", ("k",), ("a",)))
    (segment,) = spool.directory.glob("seg-*")
    assert os.stat(segment).st_mode & 0o077 == 0
    assert os.stat(spool.directory).st_mode & 0o077 == 0
    await spool.aclose()
