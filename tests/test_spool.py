"""The spool: facts Redis did not take are kept durably and replayed exactly once.

How: the manager talks to Redis (real, and fakeredis) through a client whose
script calls can be switched to fail: ``down`` refuses every call before it
reaches Redis, ``lost_reply`` lets the call run and then loses its reply (the
fact *was* applied, the caller cannot know). Facts made while the store fails
must come back ``spooled=True``; once calls succeed again the background
replay must bring Redis to exactly the totals of every fact the callers were
told about (counters, balance, and one ledger entry per fact). Also checked:
the bound (``SpoolFullError`` rather than dropping), an unwritable spool,
dead letters, segments left by an earlier manager, torn and corrupt lines
(quarantined with their file and offset), damaged progress hints, the age
metric, that a live writer's segment is never replayed by anyone else, and
that an append returns only once ``os.fsync`` made it durable (a spy on
``os.fsync``; a failing fsync raises from ``append``).

Upgrades: ``tests/data/`` holds segments written by earlier spendgate
versions themselves (record versions 1 and 2, see its README); they must
decode to the right operation and named arguments, rebuild the very keys
they were sent with, and replay every fact exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import stat
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from loguru import logger
from redis import exceptions as redis_errors

from conftest import REDIS_URL, FakeClock, real_redis_available, service_missing
from spendgate import BudgetConfig, BudgetManager, SpoolFullError
from spendgate.core.fact_keys import fact_keys
from spendgate.core.keys import Keys
from spendgate.core.operations import (
    CREDIT_GRANT_DEFAULTS,
    NO_PLAN_ARGS,
    OPERATIONS,
    positional_args,
)
from spendgate.core.scripts import SCRIPT_CONSTANTS, configured_source
from spendgate.durability.spool import Spool, SpooledFact, decode_fact, encode_fact

DATA = Path(__file__).parent / "data"


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


def _signed_line(record: dict[str, Any]) -> bytes:
    """A spool line holding ``record``, with its checksum right."""
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _record_of(line: bytes) -> dict[str, Any]:
    """The record a spool line holds (its checksum is not checked)."""
    record: dict[str, Any] = json.loads(line.rstrip(b"\n")[9:])
    return record


#: the segments earlier versions wrote (tests/data/README.md): file, version
OLD_SEGMENTS = [
    pytest.param("spool-v1-be06aea.log", 1, id="v1"),
    pytest.param("spool-v2-a31a7f7.log", 2, id="v2"),
]
# What every old segment holds, in order (ids differ per file): operation,
# and the arguments that are the same in both.
_HEAD = {
    "now_ms": 1_773_576_000_000,
    "day": "20260315",
    "day_ttl_ms": 216_000_000,
    "month": "202603",
    "month_ttl_ms": 1_598_400_000,
}
_CALL_7 = {
    **_HEAD,
    "amount": 500_000,
    "fingerprint": "6acaed09bff8bdc355cf",
    "user": "ada",
    "project": "",
    "model": "",
    "metadata": "",
    "idempotency_key": "call-7",
}
OLD_FACTS: list[tuple[str, dict[str, str | int]]] = [
    (
        "record",
        {
            **_HEAD,
            "amount": 1_250_000,
            "fingerprint": "",
            "user": "ada",
            "project": "proj",
            "model": "gpt-x",
            "metadata": r'{"n":1,"note":"\u00fcn\u00efcode"}',
            "idempotency_key": "",
            # (a record spooled before allowances: no plan applies)
            **NO_PLAN_ARGS,
        },
    ),
    ("record", {**_CALL_7, **NO_PLAN_ARGS}),
    ("record", {**_CALL_7, **NO_PLAN_ARGS}),
    (
        "credit",
        {
            "now_ms": _HEAD["now_ms"],
            "amount": 10_000_000,
            "fingerprint": "ff44b6f9ff1875e4a891",
            "user": "ada",
            "metadata": '{"why":"top-up"}',
            "idempotency_key": "",
            # (a credit spooled before grants: a never-expiring purchase)
            **CREDIT_GRANT_DEFAULTS,
        },
    ),
    (
        "settle",
        {
            **_HEAD,
            "amount": 1_500_000,
            "model": "gpt-x",
            "metadata": "",
            **NO_PLAN_ARGS,
        },
    ),
]


@pytest.mark.parametrize(("name", "version"), OLD_SEGMENTS)
def test_old_records_decode_to_their_operation_and_named_arguments(
    name: str, version: int
) -> None:
    lines = (DATA / name).read_bytes().splitlines(keepends=True)
    assert len(lines) == len(OLD_FACTS)
    for line, (operation, expected) in zip(lines, OLD_FACTS, strict=True):
        raw = _record_of(line)
        assert raw["v"] == version and raw["s"] == f"lua_{operation}"
        fact = decode_fact(line)
        assert fact is not None
        assert fact.operation == operation
        assert list(fact.args) == list(OPERATIONS[operation].args)
        # The ids are the file's own; everything else is what was called.
        ids = {k: fact.args[k] for k in ("entry", "lease") if k in fact.args}
        assert fact.args == {**expected, **ids}
        assert fact.args["entry"] == raw["i"]["entry"]
        assert (fact.created_ms, fact.info) == (raw["t"], raw["i"])
        # The keys it was sent with follow from the arguments: nothing lost.
        prefix = raw["k"][0].split(":{sg}:")[0]
        assert fact_keys(Keys(prefix), operation, fact.args) == tuple(raw["k"])
        # (the arguments the operation gained since were not written)
        added = {**CREDIT_GRANT_DEFAULTS, **NO_PLAN_ARGS}
        written = [v for k, v in fact.args.items() if k not in added]
        if version == 1:  # the configuration it carried is what was dropped
            assert raw["a"][0] == f"{prefix}:{{sg}}:"
            assert (
                len(raw["a"])
                == len(written)
                + {
                    "record": 4,
                    "settle": 3,
                    "credit": 3,
                }[operation]
            )
        else:
            assert raw["a"] == written


async def _hold_of_old_lease(client: aioredis.Redis, base: str, lease: str) -> None:
    """The hold the old segments settle, as their run's ``reserve`` made it
    (that Redis is gone): same id, user, project, amount and expiry."""
    constants = dict.fromkeys(SCRIPT_CONSTANTS, "-1")  # no caps
    constants.update(
        BASE=base,
        ENFORCE_BALANCE="0",
        MIN_BALANCE="0",
        PURGE_MAX="100",
        IDEMPOTENCY_TTL_MS="86400000",
        LEDGER_MAXLEN="0",
        MODEL_CAPS="0",
    )
    reserve = client.register_script(configured_source("reserve", constants))
    args = {
        "now_ms": _HEAD["now_ms"],
        "day": "20260315",
        "month": "202603",
        "requested": 2_000_000,
        "user": "ada",
        "project": "proj",
        "fingerprint": "",
        "lease": lease,
        "expires_ms": _HEAD["now_ms"] + 300_000,
        "plan": "",
    }
    reply = await reserve(keys=[""], args=positional_args("reserve", args))
    assert reply[0] == 0, reply


@pytest.mark.parametrize(("name", "version"), OLD_SEGMENTS)
async def test_old_segments_replay_every_fact_exactly_once(
    make_budget: Any,
    redis_client: aioredis.Redis,
    key_prefix: str,
    tmp_path: Path,
    name: str,
    version: int,
) -> None:
    # Runs on the real Redis (and on fakeredis): a BudgetManager of today
    # finds a segment an old version left, and replays it; a second copy of
    # the same segment (as if the first replay was cut short before it could
    # delete the file) changes nothing.
    old = (DATA / name).read_bytes()
    settle = decode_fact(old.splitlines(keepends=True)[-1])
    assert settle is not None and settle.operation == "settle"
    lease = str(settle.args["lease"])
    await _hold_of_old_lease(redis_client, Keys(key_prefix).base, lease)
    for copy in range(2):
        budget: BudgetManager = make_budget(
            spool_path=tmp_path, spool_replay_interval_seconds=0.02
        )
        spool = budget.spool
        assert spool is not None
        spool.directory.mkdir(parents=True, exist_ok=True)
        (spool.directory / f"seg-000000000000{copy}-1-old.log").write_bytes(old)
        await budget.open()  # finds the leftovers, replays them
        for _ in range(1000):  # (the segment goes once all of it is replayed)
            if not list(spool.directory.glob("seg-*")):
                break
            await asyncio.sleep(0.01)
        assert not list(spool.directory.glob("seg-*")) and spool.depth == 0
        usage = await budget.get_usage("ada", project_id="proj")
        assert usage["user"].daily.spent == Decimal("3.25")  # 1.25 + 0.5 + 1.5
        assert usage["project"].daily.spent == Decimal("2.75")  # 1.25 + 1.5
        assert usage["global"].monthly.spent == Decimal("3.25")
        assert usage["user"].held == 0
        balance = await budget.get_balance("ada")
        assert balance.total == Decimal("8.5")  # the credit, less the settle
        assert [g.remaining for g in balance.grants] == [Decimal("8.5")]
        assert await _ledger_len(budget) == 4  # "call-7" twice is one fact
        assert spool.stats() | {"oldest_age_seconds": None} == {
            "depth": 0,
            "oldest_age_seconds": None,
            "spooled_total": 0,
            "replayed_total": 5,  # (found applied, the second time)
            "dead_letters": 0,
            "quarantined": 0,
            "corrupt_lines": 0,
        }


def test_records_of_no_known_shape_are_corrupt_though_signed() -> None:
    v1, v2 = (
        (DATA / name).read_bytes().splitlines(keepends=True)[0]
        for name in ("spool-v1-be06aea.log", "spool-v2-a31a7f7.log")
    )
    # (re-signed as they are, they still read)
    assert decode_fact(_signed_line(_record_of(v1))) == decode_fact(v1) is not None
    assert decode_fact(_signed_line(_record_of(v2))) == decode_fact(v2) is not None
    too_long = _record_of(v1)
    too_long["a"].insert(0, "x")
    short = _record_of(v2)
    short["a"].pop()
    not_a_fact = {**_record_of(v2), "s": "lua_check"}
    unknown_script = {**_record_of(v2), "s": "record"}
    fact = _record_fact()
    v3 = _record_of(encode_fact(fact))
    assert v3["v"] == 3
    future = {**v3, "v": 4}
    extra = {**v3, "a": {**v3["a"], "keys": "x"}}
    missing = {**v3, "a": {k: v for k, v in v3["a"].items() if k != "entry"}}
    a_float = {**v3, "a": {**v3["a"], "amount": 1.5}}
    a_bool = {**v3, "a": {**v3["a"], "amount": True}}
    not_named = {**v3, "a": list(v3["a"].values())}
    settle = {**v3, "o": "settle"}
    for record in (too_long, short, not_a_fact, unknown_script, future, extra):
        assert decode_fact(_signed_line(record)) is None, record
    for record in (missing, a_float, a_bool, not_named, settle):
        assert decode_fact(_signed_line(record)) is None, record
    assert decode_fact(_signed_line(v3)) == fact


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
    fact = _record_fact(1)
    await writer.append(fact)
    applied: list[SpooledFact] = []

    async def apply(fact: SpooledFact) -> str | None:
        applied.append(fact)
        return None

    assert await other.replay(apply)
    assert applied == [] and other.depth == 1  # seen, not claimed
    await writer.aclose()  # the lock is dropped, as when a process dies
    assert await other.replay(apply)
    assert [f.args for f in applied] == [fact.args] and other.depth == 0
    assert not list(tmp_path.glob("seg-*"))
    await other.aclose()


async def test_concurrent_appends_are_group_committed_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000)
    facts = [_record_fact(i, model="x" * (i % 7)) for i in range(500)]
    await asyncio.gather(*(spool.append(f) for f in facts))
    assert spool.depth == 500 and spool.spooled_total == 500
    seen: list[SpooledFact] = []

    async def apply(fact: SpooledFact) -> str | None:
        seen.append(fact)
        return None

    assert await spool.replay(apply)
    assert [f.args for f in seen] == [f.args for f in facts]
    assert spool.depth == 0 and spool.oldest_age_seconds is None
    await spool.aclose()


def test_records_round_trip_exactly() -> None:
    fact = _record_fact(
        2**53,
        idempotency_key="ключ\n*",
        metadata='{"a":"ü\\u0000{}"}',
        project="p:{sg}:",
    )
    fact = SpooledFact(fact.operation, fact.args, info={"kind": "spend"})
    line = encode_fact(fact)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_fact(line) == fact
    assert decode_fact(line[:-5]) is None
    assert decode_fact(b"garbage\n") is None
    with pytest.raises(TypeError):
        encode_fact(_record_fact(amount=1.5))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_fact(_record_fact(amount=True))
    with pytest.raises(ValueError, match="not a fact"):
        encode_fact(SpooledFact("check", fact.args))
    with pytest.raises(ValueError, match="takes the arguments"):
        encode_fact(SpooledFact("settle", fact.args))
    with pytest.raises(ValueError, match="takes the arguments"):
        encode_fact(SpooledFact("record", {**fact.args, "keys": "k"}))


async def test_spool_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "deep" / "spool", 10)
    await spool.append(_record_fact())
    (segment,) = spool.directory.glob("seg-*")
    assert os.stat(segment).st_mode & 0o077 == 0
    assert os.stat(spool.directory).st_mode & 0o077 == 0
    await spool.aclose()


async def _left_segment(directory: Path, count: int) -> tuple[Path, list[SpooledFact]]:
    """A segment of ``count`` facts whose writer is gone (as after a crash)."""
    writer = Spool(directory, 1000)
    facts = [_record_fact(i) for i in range(count)]
    for fact in facts:
        await writer.append(fact)
    await writer.aclose()
    (segment,) = directory.glob("seg-*.log")
    return segment, facts


async def _replay_all(spool: Spool) -> list[SpooledFact]:
    applied: list[SpooledFact] = []

    async def apply(fact: SpooledFact) -> str | None:
        applied.append(fact)
        return None

    assert await spool.replay(apply)
    return applied


async def test_an_unreadable_record_is_quarantined_with_its_file_and_offset(
    tmp_path: Path,
) -> None:
    segment, facts = await _left_segment(tmp_path, 3)
    lines = segment.read_bytes().splitlines(keepends=True)
    flipped = bytearray(lines[1])
    flipped[30] ^= 0x0D  # one flipped byte: the checksum fails
    torn = lines[2][:25]  # its writer died mid-line: never acknowledged
    segment.write_bytes(lines[0] + bytes(flipped) + lines[2] + torn)
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    spool = Spool(tmp_path, 100)
    try:
        applied = await _replay_all(spool)
    finally:
        logger.remove(sink)
    assert [f.args for f in applied] == [facts[0].args, facts[2].args]
    assert not list(tmp_path.glob("seg-*"))  # replayed, the segment is gone...
    kept = (tmp_path / "quarantine.log").read_text().splitlines()
    quarantine = [json.loads(x) for x in kept]
    assert [(q["segment"], q["offset"]) for q in quarantine] == [
        (segment.name, len(lines[0])),  # ...but what it could not read is kept
        (segment.name, len(lines[0]) + len(flipped) + len(lines[2])),
    ]
    assert [base64.b64decode(q["raw"]) for q in quarantine] == [bytes(flipped), torn]
    assert "checksum" in quarantine[0]["reason"] and "torn" in quarantine[1]["reason"]
    assert spool.stats()["quarantined"] == 2 and spool.quarantined == 2
    assert spool.stats()["corrupt_lines"] == 1  # (the torn tail is not corrupt)
    logged = "\n".join(messages)
    assert f"{segment.name} at byte {len(lines[0])}" in logged
    assert str(tmp_path / "quarantine.log") in logged
    await spool.aclose()


@pytest.mark.parametrize(
    "hint",
    ["999999", "5", "-3", "garbage", "first+1"],
)
async def test_a_corrupted_progress_hint_never_skips_facts(
    tmp_path: Path, hint: str
) -> None:
    segment, facts = await _left_segment(tmp_path, 3)
    first = len(segment.read_bytes().splitlines(keepends=True)[0])
    progress = segment.with_name(segment.name + ".done")
    progress.write_text(str(first + 1) if hint == "first+1" else hint + "\n")
    spool = Spool(tmp_path, 100)
    assert spool.has_leftovers() and spool.depth == 3
    applied = await _replay_all(spool)
    assert [f.args for f in applied] == [f.args for f in facts]
    assert not list(tmp_path.glob("seg-*")) and spool.depth == 0
    await spool.aclose()


async def test_a_sound_progress_hint_still_saves_the_replayed_part(
    tmp_path: Path,
) -> None:
    segment, facts = await _left_segment(tmp_path, 3)
    first = len(segment.read_bytes().splitlines(keepends=True)[0])
    segment.with_name(segment.name + ".done").write_text(str(first))
    spool = Spool(tmp_path, 100)
    assert spool.has_leftovers() and spool.depth == 2
    applied = await _replay_all(spool)
    assert [f.args for f in applied] == [f.args for f in facts[1:]]
    await spool.aclose()


async def test_no_age_is_reported_once_another_process_leftovers_are_replayed(
    tmp_path: Path,
) -> None:
    # A restart replays the segment the previous process left: the spool is
    # then empty, and an age would alert for ever (issue 23, item 4).
    segment, _ = await _left_segment(tmp_path, 2)
    spool = Spool(tmp_path, 100)
    assert spool.has_leftovers() and spool.oldest_age_seconds is not None
    await _replay_all(spool)
    assert spool.depth == 0
    assert spool.oldest_age_seconds is None
    assert spool.stats()["oldest_age_seconds"] is None
    await spool.aclose()


async def test_the_age_is_of_what_is_still_waiting(tmp_path: Path) -> None:
    # A dead process's segment from a minute ago, and a live writer's new one:
    # once the first is replayed, the age is the second's.
    segment, _ = await _left_segment(tmp_path, 1)
    minute_ago = int(time.time() * 1000) - 60_000
    segment.rename(tmp_path / f"seg-{minute_ago:013d}-1-dead.log")
    live = Spool(tmp_path, 100)
    await live.append(_record_fact(7))
    spool = Spool(tmp_path, 100)
    assert spool.has_leftovers() and spool.depth == 2
    age = spool.oldest_age_seconds
    assert age is not None and age >= 60
    applied = await _replay_all(spool)
    assert len(applied) == 1 and spool.depth == 1  # the live one waits
    age = spool.oldest_age_seconds
    assert age is not None and age < 30
    await live.aclose()
    await spool.aclose()


class _FsyncSpy:
    """Wraps ``os.fsync``: records what each call made durable (the file's
    inode and size at that moment), and can be told to fail on files."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int, bool]] = []  # inode, size, a folder
        self.fail_files = False
        self._real = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        info = os.fstat(fd)
        folder = stat.S_ISDIR(info.st_mode)
        if self.fail_files and not folder:
            raise OSError(errno.EIO, "Input/output error (test)")
        self._real(fd)
        self.calls.append((info.st_ino, info.st_size, folder))


async def test_an_append_returns_only_once_its_record_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _FsyncSpy(monkeypatch)
    spool = Spool(tmp_path, 100)
    for i in range(3):
        await spool.append(_record_fact(i))
        (segment,) = tmp_path.glob("seg-*.log")
        now = os.stat(segment)
        # The segment was fsynced holding every record appended so far...
        assert (now.st_ino, now.st_size, False) in spy.calls
    # ...and its folder, so the segment's name survives a crash too.
    assert (os.stat(tmp_path).st_ino, True) in {(c[0], c[2]) for c in spy.calls}
    await spool.aclose()


async def test_a_failing_fsync_raises_from_append_and_keeps_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _FsyncSpy(monkeypatch)
    spool = Spool(tmp_path, 100)
    await spool.append(_record_fact(0))
    spy.fail_files = True
    with pytest.raises(SpoolFullError, match="could not be written"):
        await spool.append(_record_fact(1))
    assert spool.spooled_total == 1 and spool.depth == 1
    spy.fail_files = False
    await spool.append(_record_fact(2))
    # The failed record was cut off: its caller was told it is not spooled,
    # so it must never be replayed (it would be counted if retried).
    applied = await _replay_all(spool)
    assert [f.args["entry"] for f in applied] == ["entry-0", "entry-2"]
    await spool.aclose()


async def test_a_fact_is_not_reported_spooled_when_fsync_fails(
    flaky: tuple[aioredis.Redis, _Switch, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, switch, _ = flaky
    spy = _FsyncSpy(monkeypatch)
    async with _manager(flaky, tmp_path) as budget:
        switch.mode = "down"
        spy.fail_files = True
        with pytest.raises(SpoolFullError):
            await budget.record_spend("kim", "1")
        spy.fail_files = False
        assert (await budget.record_spend("kim", "2")).spooled
        switch.mode = "ok"
        await _drained(budget)
        usage = await budget.get_usage("kim")
        assert usage["user"].daily.spent == Decimal(2)
