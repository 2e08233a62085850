"""Spend velocity: per-minute caps over a sliding minute, and the kill switch.

How: the injected ``clock`` (a FakeClock) drives time. A loop charging at
ten times a per-minute cap (check + record, reserve + settle, deduct) is
refused within the minute and admitted again once the minute has passed,
and no sliding minute ever holds more than the cap. A refusal names the
window ``"minute"`` and the exact moment the request fits again; the kill
switch refuses for its whole time and writes exactly one
``credits.cap_reached`` event per trip; 200 concurrent reserves against a
per-minute cap grant exactly the cap. A hold counts when taken and a settle
only above it; the global minute is shared by every user; per-entity
per-minute overrides are set, kept beside a daily override and cleared, an
override written before still reads, and overrides are refused where they
are off; an extend counts in the minute. Both backends. What the minute
keeps in Redis is in tests/test_velocity_keys.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    InvalidArgumentError,
)
from spendgate.core.windows import to_ms
from velocity_helpers import START


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
