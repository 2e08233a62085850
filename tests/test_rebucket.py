"""Rebucketing (:func:`spendgate.rebucket.rebucket`): moving a deployment's
keys from one ``cluster_buckets`` count to another (1 → 8, 8 → 3, 3 → 1)
while it is stopped, on the ``make_budget`` fixture's backends (the real
Redis and fakeredis).

Why: a user's keys are where the bucket count puts them, and a project's
and the platform's day and month counters are split over the buckets (with
escrow's loans rebuilt to match). A key left behind, a counter added up
twice or a refund that cannot find its charge's record would lose money or
let spend past a cap without anyone noticing until the bill.

How: a population of users with credits (some expiring), a plan, spend of
two days with and without projects (some sharing ``p``), settled leases and
idempotency keys, recorded on one layout; each layout's managers are closed
before the rebucketing and new ones opened on the target count. Checked:

- after 1 → 8 every balance (grants too) and the user's, the projects' and
  the platform's daily and monthly spend are exactly what they were; every
  key naming a user is in that user's bucket, the root keeps only what is
  the root's; retried facts replay and charge nothing; a charge made before
  the move is refunded in parts (its record found through the forward),
  then refused; a project's daily cap admits exactly what is left of it;
- 8 → 3 and 3 → 1 keep the same numbers; a run repeated after it finished
  answers ``already`` and writes nothing;
- a dry run writes nothing and counts what the real run then does;
- what must not move (a pending hold, a team on a sharded target, a key
  spendgate does not write) is refused with its reason, changing nothing
  (not even the purge's due time); the hold, once expired, is purged and
  the run goes through; settled late after the move, it is charged in its
  user's new bucket;
- a run stopped half way (between two batches of moves, or in the middle
  of a counter's merge), run again, finishes with no counter added up
  twice (yesterday's day counters are read from every home for that);
- the old configuration against keys laid out for another count is a
  ``ConfigurationError``;
- going back to one bucket, a project's and the platform's weekly spend
  (kept with ``weekly_caps``, counted per bucket) is the sum of the
  buckets'.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeClock, MakeBudget, keys_state
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    ConfigurationError,
    RefundExceedsChargeError,
    SpendRecord,
)
from spendgate.core.keys import KEY_PARTS
from spendgate.core.shards import bucket_of
from spendgate.errors import RebucketRefusedError
from spendgate.rebucket import RebucketReport, rebucket
from spendgate.rebucket import mover as mover_module
from spendgate.rebucket.shared import SharedCounters

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


def _users(count: int) -> list[str]:
    # (two digits: no id is a part of another, so a key names one user)
    return [f"member-{n:02d}" for n in range(count)]


def _project(user: str) -> str | None:
    """Every third user spends on ``p``, the next on ``q``, the next on none."""
    return ("p", "q", None)[int(user[-2:]) % 3]


@pytest.fixture
async def layout(make_budget: MakeBudget, tmp_path: Path) -> AsyncIterator[Any]:
    """``layout(buckets)``: a manager on that bucket count (a spool of the
    test's own: a rebucketing refuses while a spool holds facts)."""

    def make(buckets: int, **settings: Any) -> BudgetManager:
        return make_budget(
            cluster_buckets=buckets, spool_path=tmp_path / "spool", **settings
        )

    yield make


async def _everything(redis: Any, prefix: str) -> dict[bytes, Any]:
    """Every key under the test's prefix (each home's), with its value and
    whether it expires: to show that a call changed nothing."""
    return await keys_state(
        redis, [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    )


async def _populate(
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
            user, "1.5", _project(user), idempotency_key=f"y-{user}"
        )
    clock.advance(days=1)
    charges = {}
    for n, user in enumerate(users):
        charges[user] = await budget.record_spend(
            user,
            Decimal("0.25") * (1 + n % 4),
            _project(user),
            model="gpt-4o",
            idempotency_key=f"t-{user}",
        )
        if n % 5 == 0:
            lease = await budget.reserve(user, 1, _project(user))
            await budget.settle(lease, "0.4")
        if n % 7 == 0:
            await budget.release(await budget.reserve(user, 2, _project(user)))
    return charges


async def _snapshot(
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


def _assert_keys_in_their_buckets(
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


def _but_due(state: dict[bytes, Any]) -> dict[bytes, Any]:
    """The state but the root's purge due time, which a refused run rewrites
    (see test_a_refused_run_writes_nothing_not_even_the_purge_due_time)."""
    return {k: v for k, v in state.items() if not k.endswith(b"}:due")}


async def _used(budget: BudgetManager) -> None:
    """A deployment that has been used: credits, a hold taken and let go."""
    await budget.add_credits("solo", "5")
    await budget.release(await budget.reserve("solo", "1"))


def _counts(report: RebucketReport) -> tuple[Any, ...]:
    """What a report counts (not its run id, nor whether it was a dry run)."""
    return tuple(getattr(report, name) for name in COUNTS)


async def _move(
    budget: BudgetManager, to: int, redis: Any, clock: FakeClock, **kwargs: Any
) -> RebucketReport:
    """Stop ``budget`` and rebucket its deployment to ``to`` buckets."""
    await budget.aclose()
    return await rebucket(budget.config, to, redis=redis, clock=clock, **kwargs)


# -- 1 → 8 ------------------------------------------------------------------------


async def test_one_bucket_to_eight_keeps_every_balance_counter_and_cap(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    users = _users(40)
    one = layout(1)
    charges = await _populate(one, clock, users)
    await one.set_limits("project", "p", daily=CAP)
    before = await _snapshot(one, users)
    assert before["project:p"][0] < CAP  # (room left under the cap)
    assert before["project:p"][1] > before["project:p"][0]  # (two days)

    report = await _move(one, 8, redis_client, clock)
    assert not report.already and not report.refusals
    assert report.moved > 0 and report.forwarded > 0 and report.merged > 0

    eight = layout(8)
    assert await _snapshot(eight, users) == before
    keys = await _everything(redis_client, key_prefix)
    _assert_keys_in_their_buckets(keys, key_prefix, users, 8)
    assert len({bucket_of(u, 8) for u in users}) == 8
    assert keys[f"{key_prefix}:{{sg}}:layout".encode()][0] == b"8"
    # a spend's idempotency record goes to its user's bucket alone (its
    # charge names the user); a credit's, which names none, to every bucket
    for user in users:
        spend = [k for k in keys if k.endswith(f":i:c:t-{user}".encode())]
        home = f"{key_prefix}:{{sg:{bucket_of(user, 8)}}}"
        assert spend == [f"{home}:i:c:t-{user}".encode()]
        assert sum(k.endswith(f":i:c:cr-{user}".encode()) for k in keys) == 8

    # retried facts replay in the user's new bucket and charge nothing
    for n, user in enumerate(users):
        again = await eight.record_spend(
            user,
            Decimal("0.25") * (1 + n % 4),
            _project(user),
            model="gpt-4o",
            idempotency_key=f"t-{user}",
        )
        assert again.replayed and again.entry_id == charges[user].entry_id
        credit = await eight.add_credits(
            user, Decimal(20 + n), idempotency_key=f"cr-{user}"
        )
        assert credit.replayed
    unspent = await _snapshot(eight, users, spend=False)
    assert unspent == {**before, **{u: before[u][:4] for u in users}}

    # a charge made before the move: refunded in parts through its forward
    user = users[3]  # (on "p", no plan)
    charge, amount = charges[user], Decimal("0.25") * 4
    assert charge.amount == amount
    first = await eight.refund(charge.entry_id, "0.1")
    tenth = Decimal("0.1")
    assert (first.refunded, first.refundable_left) == (tenth, amount - tenth)
    assert (await eight.get_balance(user)).total == before[user][0] + Decimal("0.1")
    with pytest.raises(RefundExceedsChargeError):
        await eight.refund(charge.entry_id, amount)
    rest = await eight.refund(charge.entry_id)
    assert (rest.refunded, rest.refundable_left) == (amount - Decimal("0.1"), 0)
    assert (await eight.get_balance(user)).total == before[user][0] + amount
    with pytest.raises(RefundExceedsChargeError):
        await eight.refund(charge.entry_id)
    usage = await eight.get_usage(user, "p")
    assert usage["user"].daily.spent == before[user][4] - amount
    assert usage["project"].daily.spent == before["project:p"][0] - amount
    assert usage["global"].monthly.spent == before["global:p"][1] - amount

    # the project's cap admits exactly what is left of it, over every bucket
    left = CAP - usage["project"].daily.spent
    spender = next(u for u in users if bucket_of(u, 8) != bucket_of(user, 8))
    lease = await eight.reserve(spender, left, "p")
    with pytest.raises(BudgetExceededError):
        await eight.check_availability(user, "p", "0.000001")
    with pytest.raises(BudgetExceededError):
        await eight.reserve(user, "0.000001", "p")
    await eight.release(lease)
    clock.advance(seconds=1)  # (past escrow's quiet time after a refusal)
    assert await eight.check_availability(user, "p", left)
    with pytest.raises(BudgetExceededError):
        await eight.check_availability(user, "p", left + Decimal("0.000001"))


# -- 8 → 3 → 1 -----------------------------------------------------------------------


async def test_eight_to_three_to_one_keeps_the_numbers_and_runs_once(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    users = _users(8)
    one = layout(1)
    charges = await _populate(one, clock, users)
    await one.set_limits("project", "p", daily=CAP)
    leases = {u: await one.reserve(u, "1") for u in users[:1]}
    await one.settle(leases[users[0]], "0.4")
    before = await _snapshot(one, users)
    await _move(one, 8, redis_client, clock)
    eight = layout(8)
    assert await _snapshot(eight, users) == before
    # a charge made on eight buckets (its id names one of them)
    late = await eight.record_spend(users[1], "0.5", "q", idempotency_key="late")
    assert late.entry_id.endswith(f"~{bucket_of(users[1], 8)}")
    before = await _snapshot(eight, users)

    report = await _move(eight, 3, redis_client, clock)
    assert (report.from_buckets, report.to_buckets) == (8, 3)
    assert report.moved > 0 and report.merged > 0 and not report.already
    assert not report.refusals
    three = layout(3)
    assert await _snapshot(three, users) == before
    state = await _everything(redis_client, key_prefix)
    _assert_keys_in_their_buckets(state, key_prefix, users, 3)

    # the same run again, once it finished: nothing to do, nothing written
    await three.aclose()
    again = await rebucket(eight.config, 3, redis=redis_client, clock=clock)
    assert again.already and again.moved == 0 and again.merged == 0
    assert await _everything(redis_client, key_prefix) == state

    # both charges, made on one and on eight buckets, refund on three; a
    # lease settled on one bucket, settled again, answers the first record
    three = layout(3)
    settled = await three.settle(leases[users[0]], "0.4")
    assert settled.replayed
    assert (await three.refund(late.entry_id)).refunded == Decimal("0.5")
    old = await three.refund(charges[users[2]].entry_id)
    assert old.refunded == charges[users[2]].amount
    before = await _snapshot(three, users)

    report = await _move(three, 1, redis_client, clock)
    assert report.moved > 0 and not report.already and not report.refusals
    back = layout(1)
    assert await _snapshot(back, users) == before
    state = await _everything(redis_client, key_prefix)
    _assert_keys_in_their_buckets(state, key_prefix, users, 1)
    # nothing of escrow is left on one bucket (no loans, no allowance)
    assert not [k for k in state if f":{KEY_PARTS['ESCROW']}".encode() in k]
    retried = await back.record_spend(users[1], "0.5", "q", idempotency_key="late")
    assert retried.replayed
    assert await _snapshot(back, users) == before


# -- dry run ------------------------------------------------------------------------


@pytest.mark.parametrize("route", [(1, 8), (8, 3)], ids=["1to8", "8to3"])
async def test_a_dry_run_writes_nothing_and_counts_what_the_run_does(
    layout: Any,
    redis_client: Any,
    key_prefix: str,
    clock: FakeClock,
    route: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (batches of 7, not 500: the pass, and the copy of each stream no group
    # reads in a bucket that goes (8 → 3: the ledger, without Postgres),
    # take several batches, as a deployment's thousands of keys and a
    # ledger's thousands of entries do)
    monkeypatch.setattr(mover_module, "BATCH", 7)
    start, to = route
    users = _users(6)
    budget = layout(start)
    await _populate(budget, clock, users)
    before = await _snapshot(budget, users)
    state = await _everything(redis_client, key_prefix)

    dry = await _move(budget, to, redis_client, clock, dry_run=True)
    assert dry.dry_run and not dry.refusals and not dry.already
    assert await _everything(redis_client, key_prefix) == state
    real = await _move(budget, to, redis_client, clock)
    assert not real.dry_run
    assert dry.moved > 0 and dry.merged > 0
    assert _counts(dry) == _counts(real)
    assert await _snapshot(layout(to), users) == before


# -- refusals -------------------------------------------------------------------------


async def test_a_pending_hold_is_refused_until_it_expires(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    users = _users(6)
    one = layout(1)
    await _populate(one, clock, users)
    await one.reserve(users[4], "2", "p", ttl_seconds=60)
    before = await _snapshot(one, users)
    assert before[users[4]][2] == Decimal(2)  # (held)
    state = await _everything(redis_client, key_prefix)

    with pytest.raises(RebucketRefusedError) as refused:
        await _move(one, 8, redis_client, clock)
    assert [r for r in refused.value.reasons if "pending holds" in r]
    assert await _everything(redis_client, key_prefix) == state
    dry = await _move(one, 8, redis_client, clock, dry_run=True)
    assert [r for r in dry.refusals if "pending holds" in r]
    assert await _everything(redis_client, key_prefix) == state

    clock.advance(seconds=61)
    report = await _move(one, 8, redis_client, clock)
    assert not report.refusals
    eight = layout(8)
    after = await _snapshot(eight, users)
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
    await _move(budget, to, redis_client, clock)

    after = layout(to)
    late = await after.settle(lease, half)
    assert late.late and not late.replayed
    assert (await after.get_balance(user)).total == 9 - half
    usage = await after.get_usage(user, "p")
    assert usage["user"].daily.spent == usage["project"].daily.spent == 1 + half
    _assert_keys_in_their_buckets(
        await _everything(redis_client, key_prefix), key_prefix, [user], to
    )


async def test_a_team_is_refused_on_a_sharded_target(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    one = layout(1)
    await _used(one)
    await one.create_team("crew", initial_balance="10")
    state = _but_due(await _everything(redis_client, key_prefix))
    with pytest.raises(RebucketRefusedError) as refused:
        await _move(one, 8, redis_client, clock)
    assert any("teams" in r for r in refused.value.reasons)
    assert _but_due(await _everything(redis_client, key_prefix)) == state
    dry = await _move(one, 8, redis_client, clock, dry_run=True)
    assert any("teams" in r for r in dry.refusals)


async def test_a_key_spendgate_does_not_write_is_refused(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    one = layout(1)
    await _used(one)
    await redis_client.set(f"{key_prefix}:{{sg}}:junk", "x")
    state = _but_due(await _everything(redis_client, key_prefix))
    for to in (8, 2):
        with pytest.raises(RebucketRefusedError) as refused:
            await _move(one, to, redis_client, clock)
        assert any("keys spendgate does not write" in r for r in refused.value.reasons)
        assert _but_due(await _everything(redis_client, key_prefix)) == state


@pytest.mark.parametrize("used", [False, True], ids=["fresh", "used"])
async def test_a_refused_run_writes_nothing_not_even_the_purge_due_time(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock, used: bool
) -> None:
    # A refused run purges expired holds first (documented); with none
    # expired, none ever taken ("fresh") or one let go ("used"), it has
    # nothing to write: "It refuses, changing nothing".
    one = layout(1)
    await (_used(one) if used else one.add_credits("solo", "5"))
    await redis_client.set(f"{key_prefix}:{{sg}}:junk", "x")
    state = await _everything(redis_client, key_prefix)
    with pytest.raises(RebucketRefusedError):
        await _move(one, 8, redis_client, clock)
    assert await _everything(redis_client, key_prefix) == state


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
    users = _users(8)
    budget = layout(start)
    charges = await _populate(budget, clock, users)
    await budget.set_limits("project", "p", daily=CAP)
    before = await _snapshot(budget, users)

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
        await _move(budget, to, redis_client, clock)
    layout_key = f"{key_prefix}:{{sg}}:layout"
    assert (await redis_client.get(layout_key)).startswith(f"{start}>{to}:".encode())
    for buckets in (start, to):
        with pytest.raises(ConfigurationError, match="half way"):
            await layout(buckets).open()

    monkeypatch.undo()
    report = await _move(budget, to, redis_client, clock)
    assert not report.already and not report.refusals
    assert await redis_client.get(layout_key) == str(to).encode()
    after = layout(to)
    assert await _snapshot(after, users) == before
    _assert_keys_in_their_buckets(
        await _everything(redis_client, key_prefix), key_prefix, users, to
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


# -- the layout ---------------------------------------------------------------------


async def test_the_old_configuration_on_moved_keys_is_refused(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    users = _users(4)
    one = layout(1)
    await _populate(one, clock, users)
    await _move(one, 8, redis_client, clock)
    state = await _everything(redis_client, key_prefix)
    with pytest.raises(ConfigurationError, match="laid out for 8"):
        await rebucket(one.config, 4, redis=redis_client, clock=clock)
    with pytest.raises(ConfigurationError, match="laid out for 8"):
        await layout(1).open()
    assert await _everything(redis_client, key_prefix) == state


async def test_a_projects_weekly_spend_adds_up_going_back_to_one_bucket(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    # weekly counters kept (users' weekly caps are allowed sharded): each
    # bucket counts its own users' part of a project's and the platform's week
    users = _users(8)
    eight = layout(8, weekly_caps=True)
    for user in users:
        await eight.record_spend(user, "1.25", "p")
    assert len({bucket_of(u, 8) for u in users}) > 2
    usage = await eight.get_usage(users[0], "p")
    week = (usage["project"].weekly, usage["global"].weekly)
    assert [w.spent for w in week if w is not None] == [Decimal(10)] * 2

    await _move(eight, 1, redis_client, clock)
    usage = await layout(1, weekly_caps=True).get_usage(users[0], "p")
    assert usage["project"].daily.spent == Decimal(10)
    week = (usage["project"].weekly, usage["global"].weekly)
    assert [w.spent for w in week if w is not None] == [Decimal(10)] * 2
