"""What the rebucketing tests share (tests/test_rebucket.py,
tests/test_rebucket_refusals.py): a population of users recorded on one
layout, the numbers a move must keep, where each key must end up, and the
``layout`` fixture (a manager on a bucket count, with a spool of the test's
own: a rebucketing refuses while a spool holds facts)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from conftest import FakeClock, keys_state
from spendgate import (
    BudgetManager,
    SpendRecord,
)
from spendgate.core.keys import KEY_PARTS
from spendgate.core.shards import bucket_of
from spendgate.rebucket import RebucketReport, rebucket

YESTERDAY = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
#: a project's daily cap set before the move (above what the population spends)
CAP = Decimal(30)
#: what only the root keeps on a sharded layout (everything else is a bucket's)
ROOT_PARTS = tuple(
    KEY_PARTS[name]
    for name in (
        "LAYOUT",
        "PLANS",  # (and plans:rev)
        "LEDGER",
        "EVENTS",
        "DUE",
        "HOLDS",
        "HOLD",  # (finished holds of ids naming no bucket)
        "FORWARD",
        "MERGED",
        "ESCROW",  # (the root's loans)
        "PRICE_NEXT",
        "PRICE_ACTIVE",
        "PRICE_BOOK",
        "PRICE_META",
    )
)


#: idempotency records: copied to every bucket their user can be in
IDEMPOTENCY = (KEY_PARTS["CALLER_IDEMPOTENCY"], KEY_PARTS["GENERATED_IDEMPOTENCY"])


#: what a report counts
COUNTS = (
    "moved",
    "copied",
    "merged",
    "limits",
    "forwarded",
    "dropped",
    "stream_entries",
    "removed",
    "unchanged",
)


def users_of(count: int) -> list[str]:
    # (two digits: no id is a part of another, so a key names one user)
    return [f"member-{n:02d}" for n in range(count)]


def project_of(user: str) -> str | None:
    """Every third user spends on ``p``, the next on ``q``, the next on none."""
    return ("p", "q", None)[int(user[-2:]) % 3]


async def everything(redis: Any, prefix: str) -> dict[bytes, Any]:
    """Every key under the test's prefix (each home's), with its value and
    whether it expires: to show that a call changed nothing."""
    return await keys_state(
        redis, [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    )


async def populate(
    budget: BudgetManager, clock: FakeClock, users: list[str]
) -> dict[str, SpendRecord]:
    """Credits, a plan, yesterday's and today's spend, settled and released
    leases; today's charge of each user, by user."""
    clock.set(YESTERDAY)
    await budget.set_plan("pro", free_allowance="0.25")
    await budget.assign_plan(users[0], "pro")
    for n, user in enumerate(users):
        await budget.add_credits(user, Decimal(20 + n), idempotency_key=f"cr-{user}")
        if n % 2:
            expiry = clock() + timedelta(days=10)
            await budget.add_credits(user, "5", expires_at=expiry, kind="promo")
        await budget.record_spend(
            user, "1.5", project_of(user), idempotency_key=f"y-{user}"
        )
    clock.advance(days=1)
    charges = {}
    for n, user in enumerate(users):
        charges[user] = await budget.record_spend(
            user,
            Decimal("0.25") * (1 + n % 4),
            project_of(user),
            model="gpt-4o",
            idempotency_key=f"t-{user}",
        )
        if n % 5 == 0:
            lease = await budget.reserve(user, 1, project_of(user))
            await budget.settle(lease, "0.4")
        if n % 7 == 0:
            await budget.release(await budget.reserve(user, 2, project_of(user)))
    return charges


async def snapshot(
    budget: BudgetManager, users: list[str], *, spend: bool = True
) -> dict[str, Any]:
    """Each user's balance (and grants) and (with ``spend``) spend; the
    projects' and the platform's daily and monthly spend and held; the plan
    assigned."""
    state: dict[str, Any] = {}
    for user in users:
        balance = await budget.get_balance(user)
        state[user] = (
            balance.total,
            balance.available,
            balance.held,
            sorted((g.remaining, g.expires_at, g.kind) for g in balance.grants),
        )
        if spend:
            usage = (await budget.get_usage(user))["user"]
            state[user] += (usage.daily.spent, usage.monthly.spent, usage.held)
    for project in ("p", "q"):
        usage = await budget.get_usage(users[0], project)
        for scope in ("project", "global"):
            s = usage[scope]
            state[f"{scope}:{project}"] = (s.daily.spent, s.monthly.spent, s.held)
        state[f"limit:{project}"] = usage["project"].daily.limit
    state["plan"] = await budget.get_user_plan(users[0])
    # (yesterday's day counters, which get_usage does not show: every home's)
    day = YESTERDAY.strftime("%Y%m%d")
    for scope in ("p:p", "p:q", "g:"):
        pattern = f"{budget.config.key_prefix}:{{sg*}}:{KEY_PARTS['DAY']}{day}:{scope}"
        values = [
            await budget.redis.get(k) async for k in budget.redis.scan_iter(pattern)
        ]
        state[f"yesterday:{scope}"] = sum(int(v) for v in values if v is not None)
    return state


def assert_keys_in_their_buckets(
    state: dict[bytes, Any], prefix: str, users: list[str], buckets: int
) -> None:
    """Every key naming a user (but idempotency records, named by the
    caller's key) is in the user's bucket (the root with one bucket); the
    root keeps only the root's keys; the grants-due index of each home
    lists only its own users."""
    home = re.compile(re.escape(prefix.encode()) + rb":\{sg(?::(\d+))?\}:(.*)", re.S)
    for key, (value, _) in state.items():
        found = home.fullmatch(key)
        assert found is not None, key
        number = None if found[1] is None else int(found[1])
        rest = found[2].decode()
        if buckets == 1:
            assert number is None, key
        else:
            assert number is None or number < buckets, key
            if number is None:
                assert rest.startswith(ROOT_PARTS), key
        if rest.startswith(IDEMPOTENCY):
            continue  # (named by the caller's key: in every bucket it may be asked)
        for user in users:
            if user.encode() in key:
                want = None if buckets == 1 else bucket_of(user, buckets)
                assert number == want, (key, user)
        if rest == KEY_PARTS["GRANTS_DUE"]:
            for member, _score in value:
                want = None if buckets == 1 else bucket_of(member.decode(), buckets)
                assert number == want, (key, member)


async def used_once(budget: BudgetManager) -> None:
    """A deployment that has been used: credits, a hold taken and let go."""
    await budget.add_credits("solo", "5")
    await budget.release(await budget.reserve("solo", "1"))


def counts(report: RebucketReport) -> tuple[Any, ...]:
    """What a report counts (not its run id, nor whether it was a dry run)."""
    return tuple(getattr(report, name) for name in COUNTS)


async def move_keys(
    budget: BudgetManager, to: int, redis: Any, clock: FakeClock, **kwargs: Any
) -> RebucketReport:
    """Stop ``budget`` and rebucket its deployment to ``to`` buckets."""
    await budget.aclose()
    return await rebucket(budget.config, to, redis=redis, clock=clock, **kwargs)
