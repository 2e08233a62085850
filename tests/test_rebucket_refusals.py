"""Rebucketing, what it must refuse and what it must survive: a manager of
the deployment still connected (real Redis), a pending
hold (refused until it expires, then purged), a lease expired before the
move and settled late after it (charged in its user's new bucket), a team
on a sharded target, a key spendgate does not write, a refusal that writes
nothing at all, and a run stopped half way (between two batches of moves,
or in the middle of a counter's merge) that finishes exactly when run
again. On the real Redis and fakeredis (tests/rebucket_helpers.py has the
population)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, FakeClock, real_redis_available, service_missing
from rebucket_helpers import (
    CAP,
    assert_keys_in_their_buckets,
    everything,
    move_keys,
    populate,
    snapshot,
    used_once,
    users_of,
)
from spendgate import (
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    ConfigurationError,
)
from spendgate.core.connection import client_name
from spendgate.errors import RebucketRefusedError
from spendgate.rebucket import mover as mover_module
from spendgate.rebucket import rebucket
from spendgate.rebucket.shared import SharedCounters

# -- refusals -------------------------------------------------------------------------


async def test_a_connected_manager_of_the_deployment_is_refused() -> None:
    """An app's manager names its connections for its deployment: while one
    is connected, nothing moves; a manager of another prefix does not count."""
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    prefix = f"rbm{uuid.uuid4().hex[:10]}"
    config = BudgetConfig(redis_url=REDIS_URL, key_prefix=prefix)
    other = BudgetConfig(redis_url=REDIS_URL, key_prefix=f"{prefix}-other")
    client = aioredis.Redis.from_url(REDIS_URL)
    app = BudgetManager(config)
    try:
        async with BudgetManager(other) as elsewhere:
            await elsewhere.add_credits("u", 1)
            await app.add_credits("u", 1)
            before = await everything(client, prefix)
            with pytest.raises(RebucketRefusedError) as refused:
                await rebucket(config, 4)
            assert [
                r
                for r in refused.value.reasons
                if "managers of the deployment are connected" in r
                and f"named {client_name(prefix)}," in r
            ]
            assert await everything(client, prefix) == before
            dry = await rebucket(config, 4, dry_run=True)
            assert [r for r in dry.refusals if "are connected" in r]
            await app.aclose()
            for _ in range(100):  # (until the server has seen the close)
                names = [c["name"] for c in await client.client_list()]
                if client_name(prefix) not in names:
                    break
                await asyncio.sleep(0.02)
            report = await rebucket(config, 4)
            assert not report.refusals and report.moved > 0
        async with BudgetManager(config.model_copy(update={"cluster_buckets": 4})) as b:
            assert (await b.get_balance("u")).total == 1
    finally:
        await app.aclose()
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
        await client.aclose()


async def test_a_pending_hold_is_refused_until_it_expires(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    users = users_of(6)
    one = layout(1)
    await populate(one, clock, users)
    await one.reserve(users[4], "2", "p", ttl_seconds=60)
    before = await snapshot(one, users)
    assert before[users[4]][2] == Decimal(2)  # (held)
    state = await everything(redis_client, key_prefix)

    with pytest.raises(RebucketRefusedError) as refused:
        await move_keys(one, 8, redis_client, clock)
    assert [r for r in refused.value.reasons if "pending holds" in r]
    assert await everything(redis_client, key_prefix) == state
    dry = await move_keys(one, 8, redis_client, clock, dry_run=True)
    assert [r for r in dry.refusals if "pending holds" in r]
    assert await everything(redis_client, key_prefix) == state

    clock.advance(seconds=61)
    report = await move_keys(one, 8, redis_client, clock)
    assert not report.refusals
    eight = layout(8)
    after = await snapshot(eight, users)
    assert after[users[4]][2] == 0
    assert after[users[4]][:2] == (before[users[4]][0],) * 2
    usage = await eight.get_usage(users[4], "p")
    assert usage["user"].held == usage["project"].held == usage["global"].held == 0


@pytest.mark.parametrize(("start", "to"), [(1, 8), (8, 3)], ids=["1to8", "8to3"])
async def test_a_lease_expired_before_the_move_settles_late_in_its_users_bucket(
    layout: Any,
    redis_client: Any,
    key_prefix: str,
    clock: FakeClock,
    start: int,
    to: int,
) -> None:
    # A lease let expire (as the refusal says) is settled late once the
    # deployment runs again on the new count ("a fact, even after expiry").
    # member-04 is in bucket 1 of 8 and 0 of 3: its lease's id names the root
    # (made on one bucket) or bucket 1 (made on eight), not its new bucket.
    user, half = "member-04", Decimal("0.5")
    budget = layout(start)
    await budget.add_credits(user, "10")
    await budget.record_spend(user, "1", "p")
    lease = await budget.reserve(user, "2", "p", ttl_seconds=60)
    clock.advance(seconds=61)
    await move_keys(budget, to, redis_client, clock)

    after = layout(to)
    late = await after.settle(lease, half)
    assert late.late and not late.replayed
    assert (await after.get_balance(user)).total == 9 - half
    usage = await after.get_usage(user, "p")
    assert usage["user"].daily.spent == usage["project"].daily.spent == 1 + half
    assert_keys_in_their_buckets(
        await everything(redis_client, key_prefix), key_prefix, [user], to
    )


async def test_a_team_is_refused_on_a_sharded_target(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    one = layout(1)
    await used_once(one)
    await one.create_team("crew", initial_balance="10")
    state = await everything(redis_client, key_prefix)
    with pytest.raises(RebucketRefusedError) as refused:
        await move_keys(one, 8, redis_client, clock)
    assert any("teams" in r for r in refused.value.reasons)
    assert await everything(redis_client, key_prefix) == state
    dry = await move_keys(one, 8, redis_client, clock, dry_run=True)
    assert any("teams" in r for r in dry.refusals)


async def test_a_key_spendgate_does_not_write_is_refused(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    one = layout(1)
    await used_once(one)
    await redis_client.set(f"{key_prefix}:{{sg}}:junk", "x")
    state = await everything(redis_client, key_prefix)
    for to in (8, 2):
        with pytest.raises(RebucketRefusedError) as refused:
            await move_keys(one, to, redis_client, clock)
        assert any("keys spendgate does not write" in r for r in refused.value.reasons)
        assert await everything(redis_client, key_prefix) == state


@pytest.mark.parametrize("used", [False, True], ids=["fresh", "used"])
async def test_a_refused_run_writes_nothing_not_even_the_purge_due_time(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock, used: bool
) -> None:
    # A refused run writes nothing: not even the purge of expired holds,
    # which a run makes only once its checks passed ("fresh": no hold ever
    # taken; "used": one let go).
    one = layout(1)
    await (used_once(one) if used else one.add_credits("solo", "5"))
    await redis_client.set(f"{key_prefix}:{{sg}}:junk", "x")
    state = await everything(redis_client, key_prefix)
    with pytest.raises(RebucketRefusedError):
        await move_keys(one, 8, redis_client, clock)
    assert await everything(redis_client, key_prefix) == state


# -- a run stopped half way -------------------------------------------------------


class _Stopped(Exception):
    """The run was cut off here (a crash, a kill)."""


class _CutOff:
    """A client that is cut off (:class:`_Stopped`) right after its
    ``sets``-th SET."""

    def __init__(self, redis: Any, sets: int) -> None:
        self._redis, self._left = redis, sets

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def set(self, *args: Any, **kwargs: Any) -> Any:
        await self._redis.set(*args, **kwargs)
        self._left -= 1
        if not self._left:
            raise _Stopped


@pytest.mark.parametrize(
    ("start", "to", "stop"),
    [(1, 8, "moves"), (8, 3, "merges")],
    ids=["1to8-moves", "8to3-merges"],
)
async def test_a_run_stopped_half_way_finishes_when_run_again(
    layout: Any,
    redis_client: Any,
    key_prefix: str,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    start: int,
    to: int,
    stop: str,
) -> None:
    # (8 users: on 8 → 3, member-06's spend on "p" moves from bucket 5 to 0)
    users = users_of(8)
    budget = layout(start)
    charges = await populate(budget, clock, users)
    await budget.set_limits("project", "p", daily=CAP)
    before = await snapshot(budget, users)

    if stop == "moves":
        # the pass stops after its second batch of keys (each batch's moves
        # all done: a kill between two batches)
        monkeypatch.setattr(mover_module, "BATCH", 20)
        scan = mover_module.scan_keys

        async def two_batches(redis: Any, prefix: str) -> Any:
            seen = 0
            async for batch in scan(redis, prefix):
                if seen == 2:
                    raise _Stopped
                seen += 1
                yield batch

        monkeypatch.setattr(mover_module, "scan_keys", two_batches)
    else:
        # every key moved, one counter merged, the next cut off once its
        # split is written down and the first home has its part
        merge = SharedCounters._merge
        merged: list[str] = []

        async def cut_merges(self: SharedCounters, rest: str) -> None:
            if merged:
                self.redis = _CutOff(self.redis, sets=2)
            merged.append(rest)
            await merge(self, rest)

        monkeypatch.setattr(SharedCounters, "_merge", cut_merges)
    with pytest.raises(_Stopped):
        await move_keys(budget, to, redis_client, clock)
    layout_key = f"{key_prefix}:{{sg}}:layout"
    assert (await redis_client.get(layout_key)).startswith(f"{start}>{to}:".encode())
    for buckets in (start, to):
        with pytest.raises(ConfigurationError, match="half way"):
            await layout(buckets).open()

    monkeypatch.undo()
    report = await move_keys(budget, to, redis_client, clock)
    assert not report.already and not report.refusals
    assert await redis_client.get(layout_key) == str(to).encode()
    after = layout(to)
    assert await snapshot(after, users) == before
    assert_keys_in_their_buckets(
        await everything(redis_client, key_prefix), key_prefix, users, to
    )
    # a charge made before: refunded once, from the counters of its bucket
    user = users[0]  # (on "p")
    refund = await after.refund(charges[user].entry_id)
    assert refund.refunded == charges[user].amount
    usage = await after.get_usage(user, "p")
    assert usage["project"].daily.spent == before["project:p"][0] - refund.refunded
    left = CAP - usage["project"].daily.spent
    lease = await after.reserve(users[1], left, "p")
    with pytest.raises(BudgetExceededError):
        await after.reserve(users[2], "0.000001", "p")
    await after.release(lease)
