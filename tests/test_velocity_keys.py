"""Spend velocity: what the minute keeps in Redis, and what an unconfigured
deployment keeps.

How: an unconfigured deployment's scripts write exactly the keys they wrote
before (the key set is asserted), and do not even link the minute's or the
week's helpers; a per-minute cap keeps a minute (``v:``) only for the scope
it applies to. The minute's hash holds at most a minute of seconds, expires
a minute after its last write, drops the seconds that left it after short
and long gaps, and keeps its sum exact; after random charges at random gaps
its spend and its sum match a model of every charge of the last 60 whole
seconds. The injected ``clock`` (a FakeClock) drives time. Both backends.
"""

from __future__ import annotations

import random
from decimal import Decimal

import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetConfig,
    BudgetManager,
)
from spendgate.core.scripts import SCRIPT_NAMES, configured_source
from spendgate.core.windows import to_ms
from velocity_helpers import START


async def _keys(redis: aioredis.Redis, prefix: str) -> set[str]:
    """Every key of the deployment, below its base (``d:20260315:u:ada``)."""
    base = f"{prefix}:{{sg}}:"
    return {k.decode()[len(base) :] async for k in redis.scan_iter(f"{prefix}:*")}


async def test_unconfigured_deployments_write_the_same_keys_as_before(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    clock: FakeClock,
) -> None:
    clock.set(START)
    budget = make_budget(daily_user_limit="100", kill_switch_seconds=300)
    await budget.check_availability("ada", None, "1")
    record = await budget.record_spend("ada", "1", project_id="p")
    lease = await budget.reserve("ada", "1")
    settled = await budget.settle(lease, "2")
    credit = await budget.add_credits("ada", "10")
    charged = await budget.deduct("ada", "1")
    await budget.set_limits("user", "ada", daily="90")
    assert await _keys(redis_client, key_prefix) == {
        # (refunds are on by default: each charge keeps its refund record;
        # the credit is a grant, in its user's grant keys)
        f"c:{record.entry_id}",
        f"c:{settled.entry_id}",
        f"c:{charged.entry_id}",
        "gr:u:ada",
        "go:u:ada",
        "d:20260315:u:ada",
        "d:20260315:p:p",
        "d:20260315:g:",
        "m:202603:u:ada",
        "m:202603:p:p",
        "m:202603:g:",
        "b:u:ada",
        "l:u:ada",
        f"h:{lease.id}",
        "due",
        f"i:a:{record.entry_id}",
        f"i:a:{credit.entry_id}",
        "ledger",
    }
    assert await redis_client.get(budget.keys.limits("user", "ada")) == b"90000000|"


async def test_a_per_minute_cap_keeps_a_minute_only_where_it_applies(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    clock: FakeClock,
) -> None:
    budget = make_budget(per_minute_user_limit="100")
    await budget.record_spend("ada", "1", project_id="p")
    await budget.reserve("ada", "1", project_id="p")
    minutes = {k for k in await _keys(redis_client, key_prefix) if k.startswith("v:")}
    assert minutes == {"v:u:ada"}
    assert not {k for k in await _keys(redis_client, key_prefix) if k[:2] == "w:"}


async def test_the_minute_holds_at_most_a_minute_of_seconds(
    make_budget: MakeBudget, redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    clock.set(START)
    budget = make_budget(per_minute_user_limit="1000")
    key = budget.keys.of("ada").minute("user", "ada")
    for step in range(300):  # five minutes, a charge every second
        await budget.record_spend("ada", "0.01")
        if step % 7 == 0:
            await budget.check_availability("ada", None, "0.01")
        clock.advance(1)
        assert await redis_client.hlen(key) <= 62  # 60 seconds, "t" and "s"
    assert 0 < await redis_client.pttl(key) <= 61_000
    usage = (await budget.get_usage("ada"))["user"].minute
    assert usage is not None
    assert usage.spent == Decimal("0.59")  # seconds 241..299: 300 is now
    # After a gap longer than the minute, every old second is dropped; after
    # a shorter one, those that left.
    clock.advance(3600)
    await budget.record_spend("ada", "0.01")
    assert await redis_client.hlen(key) == 3
    for gap in (1, 1, 30, 2, 45):
        clock.advance(gap)
        await budget.record_spend("ada", "0.01")
    # (at +79 s, the buckets of +32, +34 and +79 are in the minute)
    assert await redis_client.hlen(key) == 3 + 2
    usage = (await budget.get_usage("ada"))["user"].minute
    assert usage is not None
    assert usage.spent == Decimal("0.03")
    assert await redis_client.hget(key, "s") == b"30000"  # the sum kept exact


def test_unconfigured_scripts_link_none_of_the_window_helpers() -> None:
    budget = BudgetManager()
    for name in SCRIPT_NAMES:
        source = configured_source(name, budget._store._constants)
        for helper in (b"minute_read", b"week_of", b"count_minutes", b"admit_more"):
            assert b"local function " + helper + b"(" not in source, name
    configured = BudgetManager(BudgetConfig(per_minute_user_limit="1"))
    source = configured_source("check", configured._store._constants)
    assert b"local function minute_admit(" in source
    assert b"local function week_of(" not in source
    weekly = BudgetManager(BudgetConfig(weekly_caps=True))
    source = configured_source("check", weekly._store._constants)
    assert b"local function week_of(" in source
    assert b"local function minute_admit(" not in source


async def test_the_minute_matches_a_model_of_its_seconds(
    make_budget: MakeBudget, redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    # Random charges at random gaps (sub-second to over a minute): after each,
    # the minute the scripts report is the model's (every charge of the 60
    # whole seconds up to now), and the hash's sum is its buckets' total.
    rng = random.Random(22)
    clock.set(START)
    budget = make_budget(per_minute_user_limit="1000000")
    key = budget.keys.of("ada").minute("user", "ada")
    charges: list[tuple[int, int]] = []  # (second, micro-units)
    for _ in range(250):
        clock.advance(rng.choice([0, 0.2, 0.7, 1, 1.5, 2, 5, 13, 59, 60, 61, 90]))
        micros = rng.randint(1, 50_000)
        amount = Decimal(micros) / 1_000_000
        if rng.random() < 0.5:
            await budget.record_spend("ada", amount)
        else:
            await budget.reserve("ada", amount)
        now_s = to_ms(clock.now) // 1000
        charges.append((now_s, micros))
        model = sum(m for s, m in charges if s > now_s - 60)
        usage = (await budget.get_usage("ada"))["user"].minute
        assert usage is not None
        assert usage.spent == Decimal(model) / 1_000_000
        fields = await redis_client.hgetall(key)
        buckets = [int(v) for f, v in fields.items() if f.isdigit()]
        assert int(fields[b"s"]) == sum(buckets) == model
        assert len(buckets) <= 60
