"""Spend velocity: per-minute caps over a sliding minute, and the kill switch.

How: the injected ``clock`` (a FakeClock) drives time. A loop charging at
ten times a per-minute cap (check + record, reserve + settle, deduct) is
refused within the minute and admitted again once the minute has passed,
and no sliding minute ever holds more than the cap. A refusal names the
window ``"minute"`` and the exact moment the request fits again; the kill
switch refuses for its whole time and writes exactly one
``credits.cap_reached`` event per trip; 200 concurrent reserves against a
per-minute cap grant exactly the cap. An unconfigured deployment's scripts
write exactly the keys they wrote before (the key set is asserted), and do
not even link the minute's helpers. Both backends.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    InvalidArgumentError,
)
from spendgate.core.scripts import SCRIPT_NAMES, configured_source
from spendgate.core.windows import to_ms

START = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


async def _keys(redis: aioredis.Redis, prefix: str) -> set[str]:
    """Every key of the deployment, below its base (``d:20260315:u:ada``)."""
    base = f"{prefix}:{{sg}}:"
    return {k.decode()[len(base) :] async for k in redis.scan_iter(f"{prefix}:*")}


async def _charge_kinds(
    budget: BudgetManager, kind: str
) -> Callable[[Decimal], Awaitable[None]]:
    """One admitted charge of ``amount``, the way ``kind`` charges."""

    async def check_record(amount: Decimal) -> None:
        await budget.check_availability("ada", None, amount)
        await budget.record_spend("ada", amount)

    async def reserve_settle(amount: Decimal) -> None:
        lease = await budget.reserve("ada", amount)
        await budget.settle(lease, amount)

    async def deduct(amount: Decimal) -> None:
        await budget.deduct("ada", amount)

    if kind == "deduct":
        await budget.add_credits("ada", 1000)
    return {
        "check+record": check_record,
        "reserve+settle": reserve_settle,
        "deduct": deduct,
    }[kind]


@pytest.mark.parametrize("kind", ["check+record", "reserve+settle", "deduct"])
async def test_a_loop_at_ten_times_the_cap_is_stopped_within_the_minute(
    make_budget: MakeBudget, clock: FakeClock, kind: str
) -> None:
    clock.set(START)
    budget = make_budget(per_minute_user_limit="1")
    charge = await _charge_kinds(budget, kind)
    # 0.1 every 0.6 s: 10 per minute, ten times the cap of 1 per minute.
    admitted: list[tuple[datetime, Decimal]] = []
    refusals: list[BudgetExceededError] = []
    for _ in range(300):  # three minutes
        try:
            await charge(Decimal("0.1"))
            admitted.append((clock.now, Decimal("0.1")))
        except BudgetExceededError as exc:
            refusals.append(exc)
        clock.advance(0.6)
    # Refused within the minute: the 11th charge, 6 s in.
    assert [t for t, _ in admitted[:11]][-1] >= START + timedelta(seconds=60)
    assert len([t for t, _ in admitted if t < START + timedelta(seconds=60)]) == 10
    assert refusals and all(r.window == "minute" for r in refusals)
    assert all(r.scope == "user" and r.limit == Decimal(1) for r in refusals)
    # No sliding minute (the 60 whole seconds up to each charge) passed the cap.
    for at, _ in admitted:
        second = to_ms(at) // 1000
        in_minute = [a for t, a in admitted if second - 60 < to_ms(t) // 1000 <= second]
        assert sum(in_minute) <= Decimal(1)
    # Three minutes at the cap's pace: about the cap per minute, not ten times.
    assert 28 <= len(admitted) <= 31
    # Stopped, a minute passes: admitted again, the whole cap.
    clock.advance(60)
    await charge(Decimal(1))
    with pytest.raises(BudgetExceededError):
        await charge(Decimal("0.000001"))


async def test_refusal_names_the_minute_and_when_it_frees_up(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    clock.set(START + timedelta(milliseconds=250))
    budget = make_budget(per_minute_user_limit="1")
    for amount in ("0.4", "0.4", "0.2"):  # at 12:00:00, 12:00:10, 12:00:20
        await budget.record_spend("ada", amount)
        clock.advance(10)
    clock.set(START + timedelta(seconds=30))
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("ada", None, "0.5")
    error = refused.value
    assert (error.window, error.scope, error.scope_id) == ("minute", "user", "ada")
    assert (error.limit, error.spent, error.held) == (Decimal(1), Decimal(1), 0)
    # 0.5 fits once the spend of 12:00:00 and 12:00:10 has left the minute:
    # the second 12:00:10 leaves at 12:01:10.
    assert error.resets_at == START + timedelta(seconds=70)
    assert error.retry_after_seconds(clock.now) == 40
    assert error.to_json(clock.now)["window"] == "minute"
    clock.set(START + timedelta(seconds=70) - timedelta(milliseconds=1))
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("ada", None, "0.5")
    clock.set(START + timedelta(seconds=70))
    assert await budget.remaining("ada", None, "0.5") == Decimal("0.8")
    # A request above the cap never fits: it names when the minute is empty.
    with pytest.raises(BudgetExceededError) as too_big:
        await budget.check_availability("ada", None, "2")
    assert too_big.value.resets_at == START + timedelta(seconds=80)


async def test_the_kill_switch_refuses_for_its_time_and_writes_one_event(
    make_budget: MakeBudget,
    clock: FakeClock,
    redis_client: aioredis.Redis,
    key_prefix: str,
) -> None:
    clock.set(START)
    budget = make_budget(per_minute_project_limit="2", kill_switch_seconds=300)
    events = budget.keys.events
    await budget.record_spend("ada", "1.5", project_id="p1")
    await budget.check_availability("ada", "p1", "0.5")  # 2 would fit exactly
    await budget.record_spend("ada", "0.5", project_id="p1")
    assert await redis_client.exists(events) == 0  # nothing tripped yet
    clock.advance(1)
    with pytest.raises(BudgetExceededError) as tripped:
        await budget.check_availability("ada", "p1", "0.01")
    until = START + timedelta(seconds=301)
    assert tripped.value.window == "minute"
    assert (tripped.value.scope, tripped.value.scope_id) == ("project", "p1")
    assert tripped.value.resets_at == until
    # Refused for the whole time, even once the minute itself is empty, by
    # every admitting call, for every user of the project.
    for seconds in (1, 120, 299):
        clock.set(START + timedelta(seconds=seconds, milliseconds=500))
        for call in (
            budget.check_availability("bob", "p1", "0.01"),
            budget.reserve("ada", "0.01", project_id="p1"),
        ):
            with pytest.raises(BudgetExceededError) as refused:
                await call
            assert (refused.value.window, refused.value.resets_at) == ("minute", until)
    assert await budget.check_availability("ada", None, "1") is True  # no project
    entries = await redis_client.xrange(events)
    assert len(entries) == 1
    _, fields = entries[0]
    event = {k.decode(): v.decode() for k, v in fields.items()}
    assert event == {
        "ty": "credits.cap_reached",
        "t": str(to_ms(START) + 1000),
        "u": "ada",
        "sc": "project",
        "si": "p1",
        "w": "minute",
        "d": event["d"],
    }
    assert json.loads(event["d"]) == {
        "limit": "2",
        "spent": "2",
        "until": to_ms(until),
    }
    usage = await budget.get_usage("ada", "p1")
    assert usage["project"].kill_switch_until == until
    # Over: admitted again. A new trip is a new event, one per trip.
    clock.set(until)
    await budget.check_availability("ada", "p1", "2")
    await budget.record_spend("ada", "2", project_id="p1")
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("ada", "p1", "0")
    assert len(await redis_client.xrange(events)) == 2


async def test_a_request_above_the_cap_does_not_trip_the_kill_switch(
    make_budget: MakeBudget, clock: FakeClock, redis_client: aioredis.Redis
) -> None:
    budget = make_budget(per_minute_user_limit="1", kill_switch_seconds=300)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.reserve("ada", "1.5")
    assert refused.value.window == "minute"
    assert await redis_client.exists(budget.keys.events) == 0
    assert await budget.check_availability("ada", None, "1") is True


async def test_concurrent_reserves_grant_exactly_the_minute(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(per_minute_user_limit="1", kill_switch_seconds=60)
    results = await asyncio.gather(
        *(budget.reserve("ada", "0.1") for _ in range(200)), return_exceptions=True
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(granted) == 10
    assert len(refused) == 190
    assert all(r.window == "minute" for r in refused)
    usage = await budget.get_usage("ada")
    assert usage["user"].minute is not None
    assert usage["user"].minute.spent == Decimal(1)


async def test_a_hold_counts_when_taken_and_settle_counts_only_above_it(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(per_minute_user_limit="10")

    async def minute() -> Decimal:
        usage = (await budget.get_usage("ada"))["user"].minute
        assert usage is not None
        return usage.spent

    lease = await budget.reserve("ada", "2")
    assert await minute() == Decimal(2)
    await budget.settle(lease, "3.5")  # 1.5 above the hold
    assert await minute() == Decimal("3.5")
    cheaper = await budget.reserve("ada", "2")
    await budget.settle(cheaper, "1")  # below the hold: the hold counted
    released = await budget.reserve("ada", "1")
    await budget.release(released)
    assert await minute() == Decimal("6.5")
    # reserve_up_to holds what is left of the minute, and counts it.
    up_to = await budget.reserve_up_to("ada", "100")
    assert up_to.amount == Decimal("3.5")
    assert await minute() == Decimal(10)


async def test_the_global_minute_is_shared_by_every_user(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(per_minute_global_limit="1")
    await budget.record_spend("ada", "0.6")
    await budget.record_spend("bob", "0.4", project_id="p")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("carol", None, "0.01")
    assert (refused.value.scope, refused.value.window) == ("global", "minute")


async def test_per_entity_per_minute_caps(
    make_budget: MakeBudget, redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    budget = make_budget(per_minute_caps=True, daily_user_limit="50")
    limits_key = budget.keys.of("ada").limits("user", "ada")
    limits = await budget.set_limits("user", "ada", per_minute="0.5")
    assert (limits.per_minute, limits.daily, limits.overridden) == (
        Decimal("0.5"),
        Decimal(50),
        frozenset({"per_minute"}),
    )
    assert await redis_client.get(limits_key) == b"||500000"
    await budget.record_spend("ada", "0.5")  # a fact counts in the minute
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("ada", None, "0.01")
    assert refused.value.window == "minute"
    assert await budget.check_availability("bob", None, "5") is True  # no cap
    # A daily override keeps the per-minute part; clearing it drops it.
    await budget.set_limits("user", "ada", daily="20")
    assert await redis_client.get(limits_key) == b"20000000||500000"
    limits = await budget.set_limits("user", "ada", per_minute=None)
    assert (limits.per_minute, limits.daily) == (None, Decimal(20))
    assert await redis_client.get(limits_key) == b"20000000||-1"
    await budget.clear_limits("user", "ada")
    assert await redis_client.exists(limits_key) == 0


async def test_an_override_written_before_still_reads(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget(per_minute_user_limit="1", weekly_user_limit="100")
    # "<daily>|<monthly>", as every override was written before: both parts.
    await redis_client.set(budget.keys.of("ada").limits("user", "ada"), "2000000|")
    limits = await budget.set_limits("user", "ada")
    assert (limits.daily, limits.per_minute, limits.weekly) == (
        Decimal(2),
        Decimal(1),
        Decimal(100),
    )
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("ada", None, "1.5")
    assert refused.value.window == "minute"


async def test_per_minute_caps_are_refused_where_they_are_off(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    for window in ("per_minute", "weekly"):
        with pytest.raises(InvalidArgumentError, match=window.replace("_", "-")):
            await budget.set_limits("user", "ada", **{window: "1"})
    # A per-minute default alone does not allow overrides: facts count by the
    # defaults without reading any override.
    defaults_only = make_budget(per_minute_user_limit="1")
    with pytest.raises(InvalidArgumentError, match="per_minute_caps"):
        await defaults_only.set_limits("user", "ada", per_minute="5", daily="1")
    assert await redis_client.exists(budget.keys.of("ada").limits("user", "ada")) == 0


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


async def test_an_extend_counts_in_the_minute_and_is_refused_with_its_free_time(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    clock.set(START)
    budget = make_budget(per_minute_user_limit="10")
    lease = await budget.reserve("ada", "4")
    await budget.extend(lease, "5")  # 9 of the minute's 10 taken
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, "2")
    assert refused.value.window == "minute"
    assert refused.value.scope == "user"
    # the minute frees up as the reserve's second leaves it, a minute on
    assert refused.value.resets_at == START + timedelta(minutes=1)
    assert lease.amount == Decimal(9)
