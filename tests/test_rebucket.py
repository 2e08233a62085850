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
  the root's; a spend's idempotency record is in its user's bucket alone,
  a credit's in every bucket; retried facts replay and charge nothing; a
  charge made before
  the move is refunded in parts (its record found through the forward),
  then refused; a project's daily cap admits exactly what is left of it;
- 8 → 3 and 3 → 1 keep the same numbers; a run repeated after it finished
  answers ``already`` and writes nothing;
- a dry run writes nothing and counts what the real run then does;
- the old configuration against keys laid out for another count is a
  ``ConfigurationError``;
- going back to one bucket, a project's and the platform's weekly spend
  (kept with ``weekly_caps``, counted per bucket) is the sum of the
  buckets'.

What it refuses, and a run stopped half way: tests/test_rebucket_refusals.py
(the population: tests/rebucket_helpers.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from conftest import FakeClock
from rebucket_helpers import (
    CAP,
    assert_keys_in_their_buckets,
    counts,
    everything,
    move_keys,
    populate,
    project_of,
    snapshot,
    users_of,
)
from spendgate import (
    BudgetExceededError,
    ConfigurationError,
    LeaseStateError,
    RefundExceedsChargeError,
)
from spendgate.core.keys import KEY_PARTS
from spendgate.core.shards import bucket_of
from spendgate.rebucket import mover as mover_module
from spendgate.rebucket import rebucket

# -- 1 → 8 ------------------------------------------------------------------------


async def test_one_bucket_to_eight_keeps_every_balance_counter_and_cap(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    users = users_of(40)
    one = layout(1)
    charges = await populate(one, clock, users)
    await one.set_limits("project", "p", daily=CAP)
    before = await snapshot(one, users)
    assert before["project:p"][0] < CAP  # (room left under the cap)
    assert before["project:p"][1] > before["project:p"][0]  # (two days)

    report = await move_keys(one, 8, redis_client, clock)
    assert not report.already and not report.refusals
    assert report.moved > 0 and report.forwarded > 0 and report.merged > 0

    eight = layout(8)
    assert await snapshot(eight, users) == before
    keys = await everything(redis_client, key_prefix)
    assert_keys_in_their_buckets(keys, key_prefix, users, 8)
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
            project_of(user),
            model="gpt-4o",
            idempotency_key=f"t-{user}",
        )
        assert again.replayed and again.entry_id == charges[user].entry_id
        credit = await eight.add_credits(
            user, Decimal(20 + n), idempotency_key=f"cr-{user}"
        )
        assert credit.replayed
    unspent = await snapshot(eight, users, spend=False)
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
    users = users_of(8)
    one = layout(1)
    charges = await populate(one, clock, users)
    await one.set_limits("project", "p", daily=CAP)
    leases = {u: await one.reserve(u, "1") for u in users[:1]}
    await one.settle(leases[users[0]], "0.4")
    before = await snapshot(one, users)
    await move_keys(one, 8, redis_client, clock)
    eight = layout(8)
    assert await snapshot(eight, users) == before
    # a charge made on eight buckets (its id names one of them)
    late = await eight.record_spend(users[1], "0.5", "q", idempotency_key="late")
    assert late.entry_id.endswith(f"~{bucket_of(users[1], 8)}")
    before = await snapshot(eight, users)

    report = await move_keys(eight, 3, redis_client, clock)
    assert (report.from_buckets, report.to_buckets) == (8, 3)
    assert report.moved > 0 and report.merged > 0 and not report.already
    assert not report.refusals
    three = layout(3)
    assert await snapshot(three, users) == before
    state = await everything(redis_client, key_prefix)
    assert_keys_in_their_buckets(state, key_prefix, users, 3)

    # the same run again, once it finished: nothing to do, nothing written
    await three.aclose()
    again = await rebucket(eight.config, 3, redis=redis_client, clock=clock)
    assert again.already and again.moved == 0 and again.merged == 0
    assert await everything(redis_client, key_prefix) == state

    # both charges, made on one and on eight buckets, refund on three; a
    # lease settled on one bucket, settled again, answers the first record
    three = layout(3)
    settled = await three.settle(leases[users[0]], "0.4")
    assert settled.replayed
    with pytest.raises(LeaseStateError, match="settled"):  # (not "unknown")
        await three.extend(leases[users[0]].id, "0.1")
    assert (await three.refund(late.entry_id)).refunded == Decimal("0.5")
    old = await three.refund(charges[users[2]].entry_id)
    assert old.refunded == charges[users[2]].amount
    before = await snapshot(three, users)

    report = await move_keys(three, 1, redis_client, clock)
    assert report.moved > 0 and not report.already and not report.refusals
    back = layout(1)
    assert await snapshot(back, users) == before
    state = await everything(redis_client, key_prefix)
    assert_keys_in_their_buckets(state, key_prefix, users, 1)
    # nothing of escrow is left on one bucket (no loans, no allowance)
    assert not [k for k in state if f":{KEY_PARTS['ESCROW']}".encode() in k]
    retried = await back.record_spend(users[1], "0.5", "q", idempotency_key="late")
    assert retried.replayed
    assert await snapshot(back, users) == before


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
    users = users_of(6)
    budget = layout(start)
    await populate(budget, clock, users)
    before = await snapshot(budget, users)
    state = await everything(redis_client, key_prefix)

    dry = await move_keys(budget, to, redis_client, clock, dry_run=True)
    assert dry.dry_run and not dry.refusals and not dry.already
    assert await everything(redis_client, key_prefix) == state
    real = await move_keys(budget, to, redis_client, clock)
    assert not real.dry_run
    assert dry.moved > 0 and dry.merged > 0
    assert counts(dry) == counts(real)
    assert await snapshot(layout(to), users) == before


# -- the layout ---------------------------------------------------------------------


async def test_the_old_configuration_on_moved_keys_is_refused(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    users = users_of(4)
    one = layout(1)
    await populate(one, clock, users)
    await move_keys(one, 8, redis_client, clock)
    state = await everything(redis_client, key_prefix)
    with pytest.raises(ConfigurationError, match="laid out for 8"):
        await rebucket(one.config, 4, redis=redis_client, clock=clock)
    with pytest.raises(ConfigurationError, match="laid out for 8"):
        await layout(1).open()
    assert await everything(redis_client, key_prefix) == state


async def test_a_projects_weekly_spend_adds_up_going_back_to_one_bucket(
    layout: Any, redis_client: Any, key_prefix: str, clock: FakeClock
) -> None:
    # weekly counters kept (users' weekly caps are allowed sharded): each
    # bucket counts its own users' part of a project's and the platform's week
    users = users_of(8)
    eight = layout(8, weekly_caps=True)
    for user in users:
        await eight.record_spend(user, "1.25", "p")
    assert len({bucket_of(u, 8) for u in users}) > 2
    usage = await eight.get_usage(users[0], "p")
    week = (usage["project"].weekly, usage["global"].weekly)
    assert [w.spent for w in week if w is not None] == [Decimal(10)] * 2

    await move_keys(eight, 1, redis_client, clock)
    usage = await layout(1, weekly_caps=True).get_usage(users[0], "p")
    assert usage["project"].daily.spent == Decimal(10)
    week = (usage["project"].weekly, usage["global"].weekly)
    assert [w.spent for w in week if w is not None] == [Decimal(10)] * 2
