"""A project's and the platform's caps on a sharded deployment
(``cluster_buckets=8``): each bucket admits against what the root lent it
(:mod:`spendgate.ops.escrow_admission`), on the ``make_budget`` fixture's
backends. Checked:

- sequential calls of users of every bucket admit exactly what fits under
  the cap, whatever the chunk; the next is refused as at the cap;
- what other buckets hold and do not use is taken back for a short one;
- hundreds of concurrent reserves over every bucket never pass the cap;
- a bucket short while the manager's loan to another is on its way there
  waits for it to land and takes it back, rather than being refused;
- check, reserve_up_to, extend and deduct borrow as reserve does;
- a fact past its bucket's allowance is counted by that bucket's next loan;
- ``set_limits`` of a project's daily and monthly caps reaches every bucket;
- an unsharded deployment's scripts carry nothing of escrow.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import BudgetExceededError, BudgetManager, Lease
from spendgate.core import escrow_keys
from spendgate.core.scripts import SCRIPT_CONSTANTS, SCRIPT_NAMES, configured_source
from spendgate.core.shards import bucket_of
from spendgate.ops import escrow
from spendgate.ops.escrow_admission import QUIET_MS
from test_price_books import BOOK, USAGE

BUCKETS = 8
DAY, MONTH = "20260315", "202603"  # the FakeClock's
CALL = Decimal("0.07")
#: escrow's key part as the scripts carry it (spendgate.core.scripts escapes
#: every byte but letters and digits)
_ESCROW = b"'esc\\058'"


def _sharded(make_budget: MakeBudget, **settings: Any) -> BudgetManager:
    caps: dict[str, Any] = {"daily_project_limit": 1, "escrow_chunk": "0.2"}
    return make_budget(cluster_buckets=BUCKETS, **{**caps, **settings})


def _users(count: int) -> list[str]:
    """``count`` users, taking the buckets in turn."""
    per = -(-count // BUCKETS)
    by_bucket: dict[int, list[str]] = {b: [] for b in range(BUCKETS)}
    n = 0
    while any(len(users) < per for users in by_bucket.values()):
        user = f"user-{n}"
        n += 1
        if len(by_bucket[bucket_of(user, BUCKETS)]) < per:
            by_bucket[bucket_of(user, BUCKETS)].append(user)
    return [by_bucket[b][turn] for turn in range(per) for b in range(BUCKETS)][:count]


async def _lent(budget: BudgetManager, scope: str = "project", sid: str = "p") -> int:
    key = escrow_keys.loans(budget.keys, scope, sid, DAY)
    return int(await budget.redis.hget(key, "lent") or 0)


async def _allowances(
    budget: BudgetManager, scope: str = "project", sid: str = "p"
) -> list[int]:
    found = []
    for bucket in budget.keys.buckets():
        key = escrow_keys.loans(bucket, scope, sid, DAY)
        found.append(int(await budget.redis.hget(key, "allowance") or 0))
    return found


async def _reserve_all(
    budget: BudgetManager, users: list[str], amount: Decimal = CALL, **kw: Any
) -> list[Lease]:
    leases = []
    for user in users:
        try:
            leases.append(await budget.reserve(user, amount, **kw))
        except BudgetExceededError:
            pass
    return leases


@pytest.mark.parametrize("chunk", ["0.2", "0.01", "5"])
async def test_sequential_calls_admit_exactly_what_fits(
    make_budget: MakeBudget, chunk: str
) -> None:
    budget = _sharded(make_budget, escrow_chunk=chunk)
    leases = await _reserve_all(budget, _users(20), project_id="p")
    assert len(leases) == 14  # 14 * 0.07 = 0.98 of 1
    assert len({bucket_of(lease.user_id, BUCKETS) for lease in leases}) == BUCKETS
    with pytest.raises(BudgetExceededError) as refused:
        await budget.reserve("late", CALL, project_id="p")
    error = refused.value
    assert (error.scope, error.scope_id, error.window) == ("project", "p", "daily")
    assert error.limit == 1 and error.requested == CALL
    assert await _lent(budget) <= 1_000_000
    assert sum(await _allowances(budget)) == await _lent(budget)
    usage = await budget.get_usage("late", "p")
    assert usage["project"].held == Decimal("0.98")


async def test_what_other_buckets_do_not_use_is_taken_back(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = _sharded(make_budget, escrow_chunk="0.5")
    users = _users(16)
    first = await _reserve_all(budget, users[:2], project_id="p")  # two buckets
    assert await _lent(budget) == 1_000_000  # each borrowed a chunk: all lent
    # a third bucket is short: the two give back what they hold beyond 0.07
    third = await budget.reserve(users[2], "0.8", project_id="p")
    assert third.amount == Decimal("0.8")
    clock.advance(QUIET_MS / 1000)
    with pytest.raises(BudgetExceededError):
        await budget.reserve(users[3], "0.07", project_id="p")
    # released holds free their bucket's allowance for the others, once the
    # refusal's quiet time (QUIET_SECONDS) has passed
    await budget.release(third)
    clock.advance(QUIET_MS / 1000)
    fourth = await budget.reserve(users[3], "0.86", project_id="p")
    assert fourth.amount == Decimal("0.86")
    assert len(first) == 2
    assert sum(await _allowances(budget)) <= 1_000_000


@pytest.mark.parametrize("scope", ["project", "global"])
@pytest.mark.parametrize("chunk", ["0.5", "0.01"])
async def test_200_concurrent_reserves_never_pass_a_shared_cap(
    make_budget: MakeBudget, scope: str, chunk: str
) -> None:
    caps = {"daily_project_limit": None, "daily_global_limit": None}
    caps[f"daily_{scope}_limit"] = 10
    budget = _sharded(make_budget, escrow_chunk=chunk, **caps)
    users = _users(200)

    async def one(user: str) -> bool:
        try:
            await budget.reserve(user, CALL, project_id="p")
        except BudgetExceededError:
            return False
        return True

    admitted = sum(await asyncio.gather(*(one(u) for u in users)))
    sid = "p" if scope == "project" else ""
    held = (await budget.get_usage(users[0], "p"))[scope].held
    assert held == admitted * CALL
    # 142 * 0.07 = 9.94 of 10, exactly: one manager borrows for a bucket
    # once at a time and takes back once at a time, so nothing lent stays
    # unused in a bucket at the end (processes: test_cluster_processes_shards)
    assert admitted == 142
    lent = await _lent(budget, scope, sid)
    assert sum(await _allowances(budget, scope, sid)) <= lent <= 10_000_000


async def test_a_loan_on_its_way_to_another_bucket_is_waited_for_not_refused(
    make_budget: MakeBudget, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one chunk is the whole cap: ada's loan takes all the root has; while
    # it is between the root and ada's bucket, bea's bucket is short, the
    # root empty and no bucket holds anything to take back yet
    budget = _sharded(make_budget, escrow_chunk="1")
    ada, bea = _users(2)
    deposit, on_the_way, land = escrow.deposit, asyncio.Event(), asyncio.Event()

    async def slow_deposit(*args: Any, **kwargs: Any) -> int:
        if not on_the_way.is_set():
            on_the_way.set()
            await land.wait()
        return await deposit(*args, **kwargs)

    monkeypatch.setattr(escrow, "deposit", slow_deposit)
    first = asyncio.create_task(budget.reserve(ada, CALL, project_id="p"))
    await on_the_way.wait()
    second = asyncio.create_task(budget.reserve(bea, CALL, project_id="p"))
    await asyncio.wait({second}, timeout=0.5)  # (its sweep: nothing there yet)
    land.set()
    leases = await asyncio.gather(first, second)
    assert [lease.amount for lease in leases] == [CALL, CALL]
    # (ada's unused 0.93 went back to the root for bea: nothing is stranded)
    assert sum(await _allowances(budget)) == await _lent(budget) <= 1_000_000
    usage = await budget.get_usage(bea, "p")
    assert usage["project"].held == 2 * CALL


async def test_check_reserve_up_to_and_extend_borrow_too(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = _sharded(make_budget, escrow_chunk="0.1")
    ada, bea = _users(2)
    assert await budget.check_availability(ada, "p", "0.3")
    assert await _lent(budget) == 300_000  # checked, so lent; nothing spent
    assert (await budget.get_usage(ada, "p"))["project"].daily.spent == 0
    # the grant: what the bucket holds of the cap (0.3, checked), or when
    # that is short of the floor, what it holds once it borrowed for it
    lease = await budget.reserve_up_to(ada, "2", project_id="p")
    assert lease.amount == Decimal("0.3")
    more = await budget.reserve_up_to(ada, "2", "0.25", project_id="p")
    assert more.amount == Decimal("0.25")  # (borrowed 0.25, above the chunk)
    await budget.release(more)
    taken = lease.amount
    grown = await budget.extend(lease, "0.2")  # (updates the lease)
    assert grown.amount == taken + Decimal("0.2")
    rest = 1 - grown.amount
    assert (await budget.reserve(bea, rest, project_id="p")).amount == rest
    clock.advance(QUIET_MS / 1000)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(grown, "0.01")
    assert (refused.value.scope, refused.value.limit) == ("project", 1)


async def test_deduct_borrows_and_a_fact_past_the_allowance_is_counted_late(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = _sharded(make_budget, escrow_chunk="0.5")
    await budget.publish_pricing(BOOK)
    await budget.activate_pricing(1)
    ada, bea = _users(2)
    await budget.add_credits(ada, 5)
    charged = await budget.deduct(ada, USAGE, project_id="p")
    assert await _lent(budget) == 500_000
    await budget.record_spend(ada, "0.9", project_id="p")  # a fact: never refused
    spent = charged.amount + Decimal("0.9")
    # ada's bucket spent past its allowance: its next loan counts the excess
    # (0.4295 of it, and the 0.01: a chunk of 0.5, all the root had left)
    lease = await budget.reserve(ada, "0.01", project_id="p")
    assert spent > Decimal("0.5")
    assert await _lent(budget) == 1_000_000
    clock.advance(QUIET_MS / 1000)
    room = 1 - spent - lease.amount
    with pytest.raises(BudgetExceededError):
        await budget.reserve(bea, room + Decimal("0.01"), project_id="p")
    clock.advance(QUIET_MS / 1000)
    assert (await budget.reserve(bea, room, project_id="p")).amount == room


async def test_a_projects_caps_set_and_cleared_reach_every_bucket(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = _sharded(make_budget, daily_project_limit=None, monthly_project_limit=5)
    limits = await budget.set_limits("project", "p", daily="0.2")
    assert (limits.daily, limits.monthly) == (Decimal("0.2"), 5)
    leases = await _reserve_all(budget, _users(8), project_id="p")
    assert len(leases) == 2
    cleared = await budget.clear_limits("project", "p")
    assert (cleared.daily, cleared.monthly) == (None, 5)
    clock.advance(QUIET_MS / 1000)
    assert len(await _reserve_all(budget, _users(8), project_id="p")) == 8
    key = escrow_keys.loans(budget.keys, "project", "p", MONTH)
    assert int(await budget.redis.hget(key, "lent") or 0) >= 10 * 70_000


def test_only_a_sharded_deployments_scripts_carry_escrow() -> None:
    constants = {name: "0" for name in SCRIPT_CONSTANTS}
    constants.update(BASE="sg:{sg}:", LOW_BALANCE="-1")
    sharded = {**constants, "BASE": ""}
    carrying = {
        name for name in SCRIPT_NAMES if _ESCROW in configured_source(name, sharded)
    }
    assert {"check", "reserve", "reserve_up_to", "extend", "deduct"} <= carrying
    assert not any(
        _ESCROW in configured_source(name, constants) for name in SCRIPT_NAMES
    )
